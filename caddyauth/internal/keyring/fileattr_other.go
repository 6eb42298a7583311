//go:build !unix

package keyring

import (
	"io/fs"
	"os"
)

// chownLike: no POSIX owner to carry over (on Windows the new file inherits
// the directory's ACL).
func chownLike(*os.File, fs.FileInfo) error { return nil }

// syncDir: directories cannot be synced portably; the rename is atomic.
func syncDir(string) error { return nil }
