package keyring

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ErrUnchanged, returned by an UpdateFile callback, ends the update without
// writing: the keys file keeps its content, inode and modification time, so
// a running Caddy does not even reload it.
var ErrUnchanged = errors.New("keys file unchanged")

// lockTimeout bounds the wait for another writer of the same keys file.
var lockTimeout = 30 * time.Second

// testHookBeforeRename, set by tests only, runs once the temporary file is
// written and synced, just before it replaces the keys file: a failure (or a
// process killed) here must leave the old file intact.
var testHookBeforeRename func(tmp string) error

// UpdateFile changes the keys file at path under an exclusive lock, so that
// concurrent writers (several `caddy scoped-key` runs) never lose an update:
//
//  1. lock FILE.lock (flock where the system has it, an exclusive lock file
//     elsewhere), FILE being path with symbolic links resolved;
//  2. read and strictly parse the file; a missing file is an empty
//     {"keys": []} (a file that exists but is empty or invalid is an error:
//     it is never silently replaced);
//  3. call fn, which edits the records in place (returning ErrUnchanged
//     stops here and writes nothing; any other error is returned as is);
//  4. marshal (2-space indent, records in their order) and validate the
//     result with ParseFile, the parser the server uses, so an invalid file
//     is never written;
//  5. write a temporary file in the same directory with the original owner,
//     group and mode (0600 for a new file), fsync it, rename it over the
//     keys file and fsync the directory.
//
// A crash at any point leaves either the old file or the new one, never a
// mix; a temporary file left by a crash is removed by the next update.
func UpdateFile(path string, fn func(*File) error) error {
	return UpdateFileLogged(path, fn, nil, nil)
}

// UpdateFileLogged is UpdateFile with a write-ahead log (the CLI's audit
// log): prepare runs under the lock once the new content is written to the
// temporary file and synced, just before it replaces the keys file, and
// only when fn changed something. An error from prepare stops the update
// and leaves the keys file as it was. If the replace then fails, abort runs
// with its error, still under the lock. So the log's order is the commit
// order, and no change is applied unless its entry was written first.
func UpdateFileLogged(path string, fn func(*File) error, prepare func() error, abort func(error)) error {
	target, err := resolveKeysPath(path)
	if err != nil {
		return err
	}
	unlock, err := lockPath(target+".lock", lockTimeout)
	if err != nil {
		return fmt.Errorf("keys file %s: %w", path, err)
	}
	defer unlock()

	f, info, err := readForUpdate(target)
	if err != nil {
		return fmt.Errorf("keys file %s: %w", path, err)
	}
	removeStaleTemps(target)

	if err := fn(f); err != nil {
		if errors.Is(err, ErrUnchanged) {
			return nil
		}
		return err
	}
	if f.Keys == nil {
		f.Keys = []*Record{}
	}
	for i, r := range f.Keys {
		if r == nil {
			return fmt.Errorf("keys file %s: not written, the result would be invalid: keys[%d] is null", path, i)
		}
	}
	data, err := marshalFile(f)
	if err != nil {
		return fmt.Errorf("keys file %s: %w", path, err)
	}
	if _, _, err := ParseFile(data); err != nil {
		return fmt.Errorf("keys file %s: not written, the result would be invalid: %w", path, err)
	}
	if err := writeReplace(target, data, info, prepare, abort); err != nil {
		return fmt.Errorf("keys file %s: %w", path, err)
	}
	return nil
}

// marshalFile renders a keys file: 2-space indent, records and fields in
// their order, no HTML escaping (a subject such as "O=A&B" stays readable),
// and a final newline.
func marshalFile(f *File) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(f); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// resolveKeysPath follows symbolic links, so that the file they point to is
// replaced (not the link) and every writer locks the same FILE.lock whatever
// name it was given. A path that does not exist yet is used as given.
func resolveKeysPath(path string) (string, error) {
	resolved, err := filepath.EvalSymlinks(path)
	if err == nil {
		return resolved, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("keys file %s: %w", path, err)
	}
	if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
		return "", fmt.Errorf("keys file %s: dangling symbolic link", path)
	}
	return path, nil
}

// readForUpdate reads and parses the keys file. info is nil when the file
// does not exist yet.
func readForUpdate(path string) (*File, fs.FileInfo, error) {
	fh, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &File{Keys: []*Record{}}, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	defer fh.Close()
	info, err := fh.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, nil, errors.New("not a regular file")
	}
	data, err := io.ReadAll(fh)
	if err != nil {
		return nil, nil, err
	}
	f, _, err := ParseFile(data)
	if err != nil {
		return nil, nil, fmt.Errorf("refusing to edit an invalid file: %w", err)
	}
	return f, info, nil
}

// tempPrefix names the temporary files of one keys file: hidden, in the same
// directory (so the rename is atomic), recognisable for clean-up.
func tempPrefix(target string) string { return "." + filepath.Base(target) + ".tmp-" }

// removeStaleTemps deletes temporary files a crashed writer left behind. It
// runs under the lock, so no other writer is using one.
func removeStaleTemps(target string) {
	dir, prefix := filepath.Dir(target), tempPrefix(target)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) && e.Type().IsRegular() {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// writeReplace atomically replaces target with data. info describes the old
// file (nil for a new one): its owner, group and mode are carried over.
// prepare and abort (both may be nil) are UpdateFileLogged's.
func writeReplace(target string, data []byte, info fs.FileInfo, prepare func() error, abort func(error)) (err error) {
	dir := filepath.Dir(target)
	tmp, err := os.CreateTemp(dir, tempPrefix(target)+"*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(name)
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	mode := fs.FileMode(0o600)
	if info != nil {
		mode = info.Mode().Perm()
		if err = chownLike(tmp, info); err != nil {
			return err
		}
	}
	// After chown, which may clear mode bits.
	if err = tmp.Chmod(mode); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if testHookBeforeRename != nil {
		if err = testHookBeforeRename(name); err != nil {
			return err
		}
	}
	if prepare != nil {
		if err = prepare(); err != nil {
			return err
		}
	}
	if err = os.Rename(name, target); err != nil {
		if prepare != nil && abort != nil {
			abort(err)
		}
		return err
	}
	// The new file is in place; a failing directory sync only weakens
	// durability across a power loss, but report it.
	if serr := syncDir(dir); serr != nil {
		return fmt.Errorf("written, but syncing directory %s failed: %w", dir, serr)
	}
	return nil
}
