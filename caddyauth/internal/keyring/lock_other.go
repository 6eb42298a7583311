//go:build !(darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd)

package keyring

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"time"
)

// lockPath is the portable fallback for systems without flock(2): the lock
// is the existence of the lock file, created exclusively and removed on
// unlock. A writer that crashed leaves it behind; after timeout the error
// says which file to remove once no other writer is running.
func lockPath(path string, timeout time.Duration) (unlock func(), err error) {
	deadline := time.Now().Add(timeout)
	wait := 2 * time.Millisecond
	for {
		fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			_, _ = fh.WriteString(strconv.Itoa(os.Getpid()) + "\n")
			_ = fh.Close()
			return func() { _ = os.Remove(path) }, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("lock: %w", err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("lock file %s exists; gave up after %s (if no other writer is running, a crashed one left it: remove it)", path, timeout)
		}
		time.Sleep(wait)
		if wait < 100*time.Millisecond {
			wait *= 2
		}
	}
}
