//go:build unix

package keyring

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestUpdateFilePreservesModeAndOwner(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := appendEditRecord(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		uid, gid = 4321, 8765
		if err := os.Chown(path, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := appendEditRecord(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode = %v, want 0640", fi.Mode().Perm())
	}
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Uid) != uid || int(st.Gid) != gid {
		t.Errorf("owner = %d:%d, want %d:%d", st.Uid, st.Gid, uid, gid)
	}
	if n := len(mustLoad(t, path).Keys); n != 2 {
		t.Errorf("%d records", n)
	}
}
