//go:build darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd

package keyring

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// lockPath takes an exclusive flock(2) on the lock file at path (created
// with mode 0600 if missing, never removed: removing a lock file races with
// a writer that just opened it). The kernel releases the lock when the
// process dies, so a crashed writer never blocks the next one. It waits up
// to timeout for another holder.
func lockPath(path string, timeout time.Duration) (unlock func(), err error) {
	fh, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if errors.Is(err, os.ErrPermission) {
		// A lock file created by another user: flock needs no write access.
		fh, err = os.Open(path)
	}
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	deadline := time.Now().Add(timeout)
	wait := 2 * time.Millisecond
	for {
		err = syscall.Flock(int(fh.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(fh.Fd()), syscall.LOCK_UN)
				_ = fh.Close()
			}, nil
		}
		if err == syscall.EINTR {
			continue
		}
		if err != syscall.EWOULDBLOCK {
			_ = fh.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			_ = fh.Close()
			return nil, fmt.Errorf("another process holds the lock %s; gave up after %s", path, timeout)
		}
		time.Sleep(wait)
		if wait < 100*time.Millisecond {
			wait *= 2
		}
	}
}
