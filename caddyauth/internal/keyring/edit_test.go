package keyring

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// newEditRecord is a valid record with a fresh id and secret.
func newEditRecord() (*Record, error) {
	id, err := NewID()
	if err != nil {
		return nil, err
	}
	key, err := NewKey(id)
	if err != nil {
		return nil, err
	}
	return &Record{ID: id, Hash: FormatHash(HashKey(key)), Scopes: []string{"gifts:read"}, Accounts: []string{"*"}, Version: 1}, nil
}

func editTestRecord(t *testing.T) *Record {
	t.Helper()
	rec, err := newEditRecord()
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// appendEditRecord adds a fresh record to the keys file at path.
func appendEditRecord(path string) error {
	rec, err := newEditRecord()
	if err != nil {
		return err
	}
	return UpdateFile(path, func(f *File) error {
		f.Keys = append(f.Keys, rec)
		return nil
	})
}

func mustLoad(t *testing.T, path string) *File {
	t.Helper()
	f, _, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestUpdateFileCreatesNewFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	a, b := editTestRecord(t), editTestRecord(t)
	b.Name = "A&B <ops>"
	err := UpdateFile(path, func(f *File) error {
		if len(f.Keys) != 0 || f.Keys == nil {
			t.Errorf("missing file should read as an empty key list, got %#v", f.Keys)
		}
		f.Keys = append(f.Keys, a, b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("new file mode = %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	want := "{\n  \"keys\": [\n    {\n      \"id\": \"" + a.ID + "\",\n      \"hash\": \"" + a.Hash + "\",\n"
	if !strings.HasPrefix(string(data), want) || !strings.HasSuffix(string(data), "}\n") {
		t.Errorf("unexpected layout:\n%s", data)
	}
	if !strings.Contains(string(data), `"name": "A&B <ops>"`) {
		t.Errorf("name was HTML-escaped:\n%s", data)
	}
	f := mustLoad(t, path)
	if len(f.Keys) != 2 || f.Keys[0].ID != a.ID || f.Keys[1].ID != b.ID {
		t.Errorf("records not kept in order: %+v", f.Keys)
	}
}

func TestUpdateFileNilKeysWritesEmptyList(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := UpdateFile(path, func(f *File) error { f.Keys = nil; return nil }); err != nil {
		t.Fatal(err)
	}
	if f := mustLoad(t, path); f.Keys == nil || len(f.Keys) != 0 {
		t.Errorf("got %#v", f.Keys)
	}
}

func TestUpdateFileConcurrentGoroutines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	const workers, each = 8, 15
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				errs <- appendEditRecord(path)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := len(mustLoad(t, path).Keys); n != workers*each {
		t.Fatalf("%d records, want %d: updates were lost", n, workers*each)
	}
}

// TestEditHelperProcess is not a test: run by editHelperCmd in a child
// process, it runs UpdateFile there (concurrent appends, or a writer killed
// just before its rename).
func TestEditHelperProcess(t *testing.T) {
	if mode := os.Getenv(editHelperEnv); mode != "" {
		os.Exit(editHelper(mode))
	}
}

const editHelperEnv = "KEYRING_EDIT_HELPER"

func editHelper(mode string) int {
	kind, path, _ := strings.Cut(mode, ":")
	switch kind {
	case "append":
		n, path, _ := strings.Cut(path, ":")
		count, _ := strconv.Atoi(n)
		for range count {
			if err := appendEditRecord(path); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		return 0
	case "hang":
		testHookBeforeRename = func(tmp string) error {
			fmt.Println("ready " + tmp)
			select {} // wait to be killed
		}
		if err := appendEditRecord(path); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		return 1
	}
	return 2
}

func editHelperCmd(t *testing.T, mode string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		t.Skip("no test executable:", err)
	}
	cmd := exec.Command(exe, "-test.run=^TestEditHelperProcess$")
	cmd.Env = append(os.Environ(), editHelperEnv+"="+mode)
	cmd.Stderr = os.Stderr
	return cmd
}

func TestUpdateFileConcurrentProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	path := filepath.Join(t.TempDir(), "keys.json")
	const procs, each, local = 3, 20, 20
	var cmds []*exec.Cmd
	for range procs {
		cmd := editHelperCmd(t, fmt.Sprintf("append:%d:%s", each, path))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for range local {
		if err := appendEditRecord(path); err != nil {
			t.Fatal(err)
		}
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatal("helper:", err)
		}
	}
	if n := len(mustLoad(t, path).Keys); n != procs*each+local {
		t.Fatalf("%d records, want %d: updates were lost", n, procs*each+local)
	}
}

func TestUpdateFileKilledBeforeRename(t *testing.T) {
	if testing.Short() || runtime.GOOS == "windows" {
		t.Skip("kills a process")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.json")
	if err := appendEditRecord(path); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)

	cmd := editHelperCmd(t, "hang:"+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal("helper did not reach the rename:", err)
	}
	tmp := strings.TrimSpace(strings.TrimPrefix(line, "ready "))
	if _, err := os.Stat(tmp); err != nil {
		t.Fatalf("helper's temporary file: %v", err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()

	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("keys file changed by a writer that died before its rename")
	}
	// The dead writer's lock is gone, and its temporary file is cleaned up.
	lockTimeout = 2 * time.Second
	defer func() { lockTimeout = 30 * time.Second }()
	if err := appendEditRecord(path); err != nil {
		t.Fatal("update after a crashed writer:", err)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temporary file %s not removed (%v)", tmp, err)
	}
	if n := len(mustLoad(t, path).Keys); n != 2 {
		t.Errorf("%d records, want 2", n)
	}
}

func TestUpdateFileFailureBeforeRenameKeepsOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys.json")
	if err := appendEditRecord(path); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	testHookBeforeRename = func(string) error { return errors.New("simulated crash") }
	err := appendEditRecord(path)
	testHookBeforeRename = nil
	if err == nil || !strings.Contains(err.Error(), "simulated crash") {
		t.Fatalf("err = %v", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("keys file changed")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != "keys.json" && e.Name() != "keys.json.lock" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func TestUpdateFilePanicReleasesLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	func() {
		defer func() { _ = recover() }()
		_ = UpdateFile(path, func(*File) error { panic("boom") })
	}()
	lockTimeout = time.Second
	defer func() { lockTimeout = 30 * time.Second }()
	if err := appendEditRecord(path); err != nil {
		t.Fatal(err)
	}
}

func TestUpdateFileLockTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	unlock, err := lockPath(path+".lock", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	lockTimeout = 150 * time.Millisecond
	defer func() { lockTimeout = 30 * time.Second }()
	err = appendEditRecord(path)
	if err == nil || !strings.Contains(err.Error(), "gave up") {
		t.Fatalf("err = %v, want a lock timeout", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Error("file written without the lock")
	}
}

func TestUpdateFileFollowsSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "real.json")
	link := filepath.Join(dir, "keys.json")
	if err := appendEditRecord(target); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Skip("no symlinks:", err)
	}
	if err := appendEditRecord(link); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Fatal("symbolic link replaced by a file")
	}
	if n := len(mustLoad(t, target).Keys); n != 2 {
		t.Errorf("%d records in the target, want 2", n)
	}
	if err := os.Symlink(filepath.Join(dir, "missing.json"), filepath.Join(dir, "dangling.json")); err != nil {
		t.Fatal(err)
	}
	if err := appendEditRecord(filepath.Join(dir, "dangling.json")); err == nil || !strings.Contains(err.Error(), "dangling") {
		t.Errorf("dangling link: err = %v", err)
	}
}

func TestUpdateFileInvalidResultNotWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	first := editTestRecord(t)
	if err := UpdateFile(path, func(f *File) error { f.Keys = append(f.Keys, first); return nil }); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	cases := map[string]func(*File){
		"bad scope":     func(f *File) { r := editTestRecord(t); r.Scopes = []string{"Gifts:Read"}; f.Keys = append(f.Keys, r) },
		"preset stored": func(f *File) { r := editTestRecord(t); r.Scopes = []string{"read_only"}; f.Keys = append(f.Keys, r) },
		"duplicate id":  func(f *File) { r := editTestRecord(t); r.ID = first.ID; f.Keys = append(f.Keys, r) },
		"no hash, no binding": func(f *File) {
			f.Keys[0].Hash = ""
		},
		"bad account": func(f *File) { f.Keys[0].Accounts = []string{"a b"} },
		"nil record":  func(f *File) { f.Keys = append(f.Keys, nil) },
	}
	for name, mutate := range cases {
		err := UpdateFile(path, func(f *File) error { mutate(f); return nil })
		if err == nil || !strings.Contains(err.Error(), "not written") {
			t.Errorf("%s: err = %v", name, err)
		}
		after, _ := os.ReadFile(path)
		if !bytes.Equal(before, after) {
			t.Fatalf("%s: invalid file written", name)
		}
	}
}

func TestUpdateFileRefusesInvalidExistingFile(t *testing.T) {
	for name, content := range map[string]string{
		"empty":          "",
		"garbage":        "{not json",
		"unknown field":  `{"keys":[],"extra":1}`,
		"no keys":        `{}`,
		"invalid record": `{"keys":[{"id":"nope","scopes":[],"accounts":null,"pii":false,"disabled":false,"version":1}]}`,
	} {
		path := filepath.Join(t.TempDir(), "keys.json")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		called := false
		err := UpdateFile(path, func(*File) error { called = true; return nil })
		if err == nil || called {
			t.Errorf("%s: err = %v, called = %v", name, err, called)
		}
		if data, _ := os.ReadFile(path); string(data) != content {
			t.Errorf("%s: file changed", name)
		}
	}
}

func TestUpdateFileUnchangedAndErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := appendEditRecord(path); err != nil {
		t.Fatal(err)
	}
	fi1, _ := os.Stat(path)
	time.Sleep(20 * time.Millisecond)
	if err := UpdateFile(path, func(f *File) error {
		f.Keys = nil // discarded
		return ErrUnchanged
	}); err != nil {
		t.Fatal(err)
	}
	fi2, _ := os.Stat(path)
	if !os.SameFile(fi1, fi2) || !fi1.ModTime().Equal(fi2.ModTime()) {
		t.Error("ErrUnchanged rewrote the file")
	}
	mine := errors.New("mine")
	if err := UpdateFile(path, func(f *File) error { f.Keys = nil; return mine }); !errors.Is(err, mine) {
		t.Errorf("err = %v, want the callback's error", err)
	}
	if n := len(mustLoad(t, path).Keys); n != 1 {
		t.Errorf("%d records", n)
	}
	// A missing directory is reported, not created.
	if err := appendEditRecord(filepath.Join(t.TempDir(), "nodir", "keys.json")); err == nil {
		t.Error("missing directory: no error")
	}
}
