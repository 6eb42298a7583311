package caddyauth

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
)

// This file is the audit log of key changes that `caddy scoped-key` writes
// (one JSON object per change: who, when, which id, what changed, the new
// version; never a key, a hash or a fragment of either):
//
//   - keys file: appended to FILE.audit.jsonl next to the keys file (or
//     --audit-log PATH), under the keys file's lock, fsynced, before the new
//     keys file replaces the old one (write-ahead: no change is applied
//     without its entry, and the log's order is the commit order);
//   - Redis: appended to the stream scopegate:audit (XADD, never trimmed) by
//     the same atomic script that makes the change.
//
// There is no switch to turn it off: an entry that cannot be written stops
// the change.

// auditEntry is one entry of the audit log: a line of the file, the
// "entry" field of the Redis stream.
type auditEntry struct {
	Time   time.Time  `json:"time"`
	Actor  auditActor `json:"actor"`
	Action string     `json:"action"`
	ID     string     `json:"id"`
	// Version is the record's version after the change (for an "aborted"
	// entry, the version that was not applied).
	Version int64  `json:"version"`
	Store   string `json:"store"`
	// Changes maps each changed field to auditFieldChange (its old and new
	// values) or, for a secret field (hash, previous_hash) and any field
	// not known to be harmless, to the string "changed".
	Changes map[string]any `json:"changes,omitempty"`
	// Error says why an "aborted" change was not applied.
	Error string `json:"error,omitempty"`
}

// auditFieldChange is a non-secret field's change. From is omitted for a
// new record; a field that is absent on one side is null there.
type auditFieldChange struct {
	From json.RawMessage `json:"from,omitempty"`
	To   json.RawMessage `json:"to"`
}

// auditActor is who ran the command: the OS user (as sudo runs it, the
// user who called sudo too) on which host.
type auditActor struct {
	User     string `json:"user"`
	UID      string `json:"uid"`
	SudoUser string `json:"sudo_user,omitempty"`
	Host     string `json:"host"`
}

// auditChanged stands for the value of a secret field.
const auditChanged = "changed"

// auditAborted is the action of the entry that follows the entry of a
// change that was logged but then could not be applied.
const auditAborted = "aborted"

// auditValueFields are the record fields whose values the log may show;
// every other field that changes (hash, previous_hash, and any field added
// later until it is listed here) shows only "changed": fail closed.
var auditValueFields = map[string]bool{
	"name": true, "scopes": true, "accounts": true, "pii": true, "client_cert": true,
	"not_before": true, "expires_at": true, "disabled": true, "previous_expires_at": true,
}

// testHookAuditWritten, set by tests only, runs after a keys-file change's
// entry was written, before the new keys file replaces the old one.
var testHookAuditWritten func()

type auditActionKey struct{}

// withAuditAction names the action ("revoke", "rotate", …) that the
// editor's audit entries of changes made with ctx record.
func withAuditAction(ctx context.Context, action string) context.Context {
	return context.WithValue(ctx, auditActionKey{}, action)
}

// auditAction is the action for a change made with ctx: the one named by
// withAuditAction, else "new" for a new record and "update" otherwise.
func auditAction(ctx context.Context, before *keyring.Record) string {
	if a, ok := ctx.Value(auditActionKey{}).(string); ok && a != "" {
		return a
	}
	if before == nil {
		return "new"
	}
	return "update"
}

// auditTrail writes the audit log for one editor (one command).
type auditTrail struct {
	now   func() time.Time
	store string // the editor's String()
	path  string // keys file: the log file
	redis *keyring.RedisEditor

	actorOnce sync.Once
	actor     auditActor

	mu     sync.Mutex
	logged map[auditRef]bool // changes whose entry was written with the change
}

type auditRef struct {
	id      string
	version int64
}

// auditLogPath is the default audit log of a keys file: FILE.audit.jsonl
// next to the file, symbolic links resolved (as the lock file is), so that
// every name of the same keys file logs to the same place.
func auditLogPath(keys string) string {
	if resolved, err := filepath.EvalSymlinks(keys); err == nil {
		keys = resolved
	}
	return keys + ".audit.jsonl"
}

// withAudit gives a new editor its audit trail, from --audit-log (keys
// file only) or the default. Every editor has one, so that every committed
// change is logged, whichever subcommand made it.
func (c *scopedKeyCLI) withAudit(cmd *cobra.Command, ed keyEditor) (keyEditor, error) {
	logPath := ""
	if f := cmd.Flags().Lookup("audit-log"); f != nil {
		logPath = f.Value.String()
	}
	t := &auditTrail{now: c.now, store: ed.String(), logged: map[auditRef]bool{}}
	switch e := ed.(type) {
	case keyFileEditor:
		t.path = logPath
		if t.path == "" {
			t.path = auditLogPath(e.path)
		}
		e.trail = t
		return e, nil
	case keyRedisEditor:
		if logPath != "" {
			closeEditor(ed)
			return nil, fmt.Errorf("--audit-log is for --keys: with --redis the audit log is the stream %s", keyring.RedisAuditStream)
		}
		t.redis = e.ed
		e.ed.Audit = func(ctx context.Context, before, after *keyring.Record) (string, error) {
			entry, err := t.entry(ctx, before, after)
			if err != nil {
				return "", err
			}
			line, err := auditLine(entry)
			if err != nil {
				return "", err
			}
			// The script appends the entry if, and only if, it applies
			// the change; a command reports only changes it applied.
			t.markLogged(entry.ID, entry.Version)
			return string(bytes.TrimSuffix(line, []byte("\n"))), nil
		}
		e.trail = t
		return e, nil
	}
	return ed, nil
}

// editorTrail returns the editor's audit trail, or nil.
func editorTrail(ed keyEditor) *auditTrail {
	switch e := ed.(type) {
	case keyFileEditor:
		return e.trail
	case keyRedisEditor:
		return e.trail
	}
	return nil
}

func (t *auditTrail) markLogged(id string, version int64) {
	t.mu.Lock()
	t.logged[auditRef{id, version}] = true
	t.mu.Unlock()
}

func (t *auditTrail) wasLogged(id string, version int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.logged[auditRef{id, version}]
}

// who returns the actor, looked up once.
func (t *auditTrail) who() auditActor {
	t.actorOnce.Do(func() { t.actor = currentActor() })
	return t.actor
}

// currentActor is the OS user running the command, SUDO_USER (set by sudo
// to the user who called it) and the host name. The user name comes from
// the system's user database; without an entry there, the uid alone.
func currentActor() auditActor {
	a := auditActor{UID: strconv.Itoa(os.Getuid()), SudoUser: os.Getenv("SUDO_USER")}
	if u, err := user.Current(); err == nil {
		a.User, a.UID = u.Username, u.Uid
	}
	a.Host, _ = os.Hostname()
	return a
}

// newEntry starts an entry stamped now.
func (t *auditTrail) newEntry(action, id string, version int64) auditEntry {
	return auditEntry{Time: t.now().UTC(), Actor: t.who(), Action: action, ID: id, Version: version, Store: t.store}
}

// entry describes one record's change (before nil: a new record).
func (t *auditTrail) entry(ctx context.Context, before, after *keyring.Record) (auditEntry, error) {
	changes, err := recordChanges(before, after)
	if err != nil {
		return auditEntry{}, err
	}
	e := t.newEntry(auditAction(ctx, before), after.ID, after.Version)
	e.Changes = changes
	return e, nil
}

// recordChanges lists what differs between two versions of a record
// (before nil: a new record): values for the fields in auditValueFields,
// "changed" for every other (secret or unknown) field. id and version are
// the entry's own fields.
func recordChanges(before, after *keyring.Record) (map[string]any, error) {
	old, err := jsonFields(before)
	if err != nil {
		return nil, err
	}
	cur, err := jsonFields(after)
	if err != nil {
		return nil, err
	}
	delete(old, "id")
	delete(old, "version")
	delete(cur, "id")
	delete(cur, "version")
	return fieldChanges(old, cur, before != nil, auditValueFields), nil
}

// auditDeniedFields are the fields of a certificate denylist entry, all
// public (a fingerprint, an issuer and serial, a reason, a time).
var auditDeniedFields = map[string]bool{"sha256": true, "issuer": true, "serial": true, "reason": true, "added_at": true}

// deniedCertChanges describes a denylist entry being added (before nil),
// removed (after nil) or changed, for the changes of an audit entry.
func deniedCertChanges(before, after *keyring.DeniedCert) map[string]any {
	old, _ := jsonFields(before)
	cur, _ := jsonFields(after)
	return fieldChanges(old, cur, before != nil, auditDeniedFields)
}

// fieldChanges compares two objects' fields: for a field in values, its
// old and new values (no "from" when the object is new; null for a side
// where the field is absent); for any other field, "changed".
func fieldChanges(old, cur map[string]json.RawMessage, existed bool, values map[string]bool) map[string]any {
	null := json.RawMessage("null")
	changes := map[string]any{}
	for name := range cur {
		if _, ok := old[name]; !ok {
			old[name] = nil
		}
	}
	for name, was := range old {
		now, has := cur[name]
		if has && bytes.Equal(was, now) {
			continue
		}
		if !values[name] {
			changes[name] = auditChanged
			continue
		}
		c := auditFieldChange{From: was, To: now}
		if !has {
			c.To = null
		}
		if existed && was == nil {
			c.From = null
		}
		changes[name] = c
	}
	return changes
}

// jsonFields is v's JSON object as fields (empty for a nil pointer).
func jsonFields(v any) (map[string]json.RawMessage, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(buf.Bytes(), &fields); err != nil {
		return nil, err
	}
	if fields == nil {
		fields = map[string]json.RawMessage{}
	}
	return fields, nil
}

// auditLine renders an entry as one line of JSON (no HTML escaping, so a
// subject such as O=A&B stays readable).
func auditLine(e auditEntry) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// updateFile is keyring.UpdateFileLogged with this editor's audit log: fn's
// changes to the records are diffed, and one entry per changed record is
// appended to the log (and fsynced) under the keys file's lock, after the
// new file is written and before it replaces the old one.
//
// Why before: an entry written after the rename could be lost by a crash
// or a full disk between the two, leaving an applied change unaudited. This
// way a change is applied only once its entry is on disk. The price is the
// rare entry of a change that was not applied: if the rename fails, an
// "aborted" entry follows it; if the process dies in between, the entry's
// version is above the store's, and the next change of that record logs
// the same version again.
func (e keyFileEditor) updateFile(ctx context.Context, fn func(*keyring.File) error) error {
	if e.trail == nil {
		return keyring.UpdateFile(e.path, fn)
	}
	t := e.trail
	var entries []auditEntry
	var lines []byte
	change := func(f *keyring.File) error {
		before, denied, err := snapshotFile(f)
		if err != nil {
			return err
		}
		if err := fn(f); err != nil {
			return err
		}
		if entries, err = t.fileEntries(ctx, before, denied, f); err != nil {
			return err
		}
		lines = nil
		for _, entry := range entries {
			line, err := auditLine(entry)
			if err != nil {
				return err
			}
			lines = append(lines, line...)
		}
		return nil
	}
	prepare := func() error {
		if len(lines) == 0 {
			return nil
		}
		if err := appendAuditLine(t.path, lines); err != nil {
			return fmt.Errorf("not applied: audit log %s: %w (no change is made without its audit entry: make the log writable, or give --audit-log another file)", t.path, err)
		}
		if testHookAuditWritten != nil {
			testHookAuditWritten()
		}
		return nil
	}
	var aborted, abortFailed error
	abort := func(err error) {
		aborted = err
		var lines []byte
		for _, entry := range entries {
			a := t.newEntry(auditAborted, entry.ID, entry.Version)
			a.Error = err.Error()
			line, lerr := auditLine(a)
			if lerr != nil {
				abortFailed = lerr
				return
			}
			lines = append(lines, line...)
		}
		abortFailed = appendAuditLine(t.path, lines)
	}
	err := keyring.UpdateFileLogged(e.path, change, prepare, abort)
	switch {
	case aborted != nil && abortFailed != nil:
		return fmt.Errorf("%w (not applied; the audit log %s has an entry for this change that did not happen, and the \"aborted\" entry that should follow it could not be written: %v)", err, t.path, abortFailed)
	case aborted != nil:
		return fmt.Errorf("%w (not applied; in the audit log %s, the change's entry is followed by an \"aborted\" entry)", err, t.path)
	case err != nil:
		return err
	}
	for _, entry := range entries {
		t.markLogged(entry.ID, entry.Version)
	}
	return nil
}

// fileSnapshot is a keys file's content before a change, for the diff.
type fileSnapshot struct {
	ids     []string                   // record ids, in file order
	records map[string]*keyring.Record // deep copies
}

// snapshotFile copies what a change may edit in place: the records, and
// the denylist entries, by entry id.
func snapshotFile(f *keyring.File) (fileSnapshot, map[string]*keyring.DeniedCert, error) {
	snap := fileSnapshot{records: make(map[string]*keyring.Record, len(f.Keys))}
	for _, r := range f.Keys {
		if r == nil {
			continue
		}
		c, err := keyring.CloneRecord(r)
		if err != nil {
			return snap, nil, err
		}
		snap.ids = append(snap.ids, r.ID)
		snap.records[r.ID] = c
	}
	denied := make(map[string]*keyring.DeniedCert, len(f.DeniedCerts))
	for _, d := range f.DeniedCerts {
		if d != nil {
			c := *d // fields are strings and an immutable time
			denied[d.ID()] = &c
		}
	}
	return snap, denied, nil
}

// fileEntries are the audit entries of a keys file change: one per record
// added, changed or removed (action from withAuditAction, else new, update
// or delete), then one per denylist entry added (deny-cert), removed
// (allow-cert) or changed; denylist entries have no version in a keys
// file (0).
func (t *auditTrail) fileEntries(ctx context.Context, before fileSnapshot, denied map[string]*keyring.DeniedCert, f *keyring.File) ([]auditEntry, error) {
	named, _ := ctx.Value(auditActionKey{}).(string)
	pick := func(def string) string {
		if named != "" {
			return named
		}
		return def
	}
	var entries []auditEntry
	seen := map[string]bool{}
	for _, r := range f.Keys {
		if r == nil {
			continue // UpdateFile refuses the result
		}
		seen[r.ID] = true
		old := before.records[r.ID]
		changes, err := recordChanges(old, r)
		if err != nil {
			return nil, err
		}
		if old != nil && len(changes) == 0 && old.Version == r.Version {
			continue
		}
		action := "update"
		if old == nil {
			action = "new"
		}
		e := t.newEntry(pick(action), r.ID, r.Version)
		e.Changes = changes
		entries = append(entries, e)
	}
	for _, id := range before.ids {
		if !seen[id] {
			entries = append(entries, t.newEntry(pick("delete"), id, before.records[id].Version))
		}
	}
	kept := map[string]bool{}
	for _, d := range f.DeniedCerts {
		if d == nil {
			continue
		}
		id := d.ID()
		kept[id] = true
		changes := deniedCertChanges(denied[id], d)
		if len(changes) == 0 {
			continue
		}
		e := t.newEntry(pick("deny-cert"), id, 0)
		e.Changes = changes
		entries = append(entries, e)
	}
	for _, id := range slices.Sorted(maps.Keys(denied)) {
		if !kept[id] {
			e := t.newEntry(pick("allow-cert"), id, 0)
			e.Changes = deniedCertChanges(denied[id], nil)
			entries = append(entries, e)
		}
	}
	return entries, nil
}

// appendAuditLine appends data (whole lines) to the audit log at path in
// one write, and fsyncs it: opened with O_APPEND (created with mode 0600),
// so nothing already in the log is ever rewritten. Only a regular file
// will do: /dev/null or a pipe would make the log a switch to turn auditing
// off.
func appendAuditLine(path string, data []byte) error {
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return errors.New("not a regular file")
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	created := false
	if errors.Is(err, fs.ErrNotExist) {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
		created = err == nil
		if errors.Is(err, fs.ErrExist) {
			f, err = os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
		}
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return errors.New("not a regular file")
	}
	// A line torn by a crash (no final newline) must not swallow this
	// entry: start on a line of its own.
	if n := fi.Size(); n > 0 {
		var last [1]byte
		if _, err := f.ReadAt(last[:], n-1); err != nil {
			return err
		}
		if last[0] != '\n' {
			data = append([]byte{'\n'}, data...)
		}
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if created {
		// Make the new file's directory entry durable too. Best effort:
		// not every system can sync a directory, and the entry itself is
		// already on disk.
		if d, err := os.Open(filepath.Dir(path)); err == nil {
			_ = d.Sync()
			_ = d.Close()
		}
	}
	return nil
}

// appendLate logs a committed change whose entry the editor did not write
// with the change (a change made without updateFile or the Redis editor's
// write script). It comes after the change, so it can fail after the fact.
func (t *auditTrail) appendLate(action, id string, version int64, changes map[string]any) error {
	entry := t.newEntry(action, id, version)
	if len(changes) > 0 {
		entry.Changes = changes
	}
	line, err := auditLine(entry)
	if err != nil {
		return err
	}
	if t.redis != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return t.redis.AppendAudit(ctx, string(bytes.TrimSuffix(line, []byte("\n"))))
	}
	if err := appendAuditLine(t.path, line); err != nil {
		return fmt.Errorf("audit log %s: %w", t.path, err)
	}
	return nil
}

// auditCommitted makes sure a committed change is in the audit log: the
// editor normally wrote its entry with the change; otherwise it is appended
// now, and if that fails the command must fail saying the change was
// applied but not audited (c.unaudited, reported by run).
func (c *scopedKeyCLI) auditCommitted(ed keyEditor, action, id string, version int64, changes []map[string]any) {
	t := editorTrail(ed)
	if t == nil || t.wasLogged(id, version) {
		return
	}
	merged := map[string]any{}
	for _, m := range changes {
		maps.Copy(merged, m)
	}
	if err := t.appendLate(action, id, version, merged); err != nil {
		c.unaudited = errors.Join(c.unaudited, fmt.Errorf("%s %s (version %d) WAS APPLIED to %s but NOT AUDITED: %v; record it by hand", action, id, version, ed, err))
	}
}

// auditCommand is `caddy scoped-key audit`.
func (c *scopedKeyCLI) auditCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit (--keys FILE [--audit-log PATH] | --redis URL) [--id ID]",
		Short: "Prints the audit log of key changes, one JSON object per line",
		Long: `
Prints the audit log that new, revoke and rotate (and every other command
that changes a store) append to, oldest first, one JSON object per line:

  {"time":"2026-11-29T09:30:00.123Z","actor":{"user":"alice","uid":"1000",
   "host":"gw1"},"action":"rotate","id":"k7q2m4x5w3p5z6c2","version":3,
   "store":"file /etc/caddy/keys.json","changes":{"hash":"changed",
   "previous_hash":"changed","previous_expires_at":{"from":null,"to":"…"}}}

A keys file's log is FILE.audit.jsonl next to it (or --audit-log PATH, as
given to the commands that wrote it); Redis's is the stream scopegate:audit.
Secret fields (hash, previous_hash) only ever show "changed".
`,
		Args: skNoArgs,
		RunE: c.run(c.runAudit),
	}
	skStoreFlags(cmd)
	cmd.Flags().String("id", "", "print only the entries of key `ID`")
	return cmd
}

// runAudit prints the audit log.
func (c *scopedKeyCLI) runAudit(cmd *cobra.Command, _ []string) error {
	id, _ := cmd.Flags().GetString("id")
	if id != "" {
		if _, isKey := keyring.ParseKey(id); isKey || strings.HasPrefix(id, "sg_") {
			return errors.New("--id: give the key id (the 16 characters after sg_), not the key itself")
		}
	}
	ed, err := c.openEditor(cmd)
	if err != nil {
		return err
	}
	defer closeEditor(ed)
	t := editorTrail(ed)
	if t == nil {
		return errors.New("this store has no audit log")
	}
	w := bufio.NewWriter(cmd.OutOrStdout())
	show := func(where string, entry []byte) error {
		var e struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(entry, &e); err != nil {
			c.warn(cmd, "%s: not a JSON entry (a write torn by a crash?); skipped", where)
			return nil
		}
		if id != "" && e.ID != id {
			return nil
		}
		if _, err := w.Write(entry); err != nil {
			return err
		}
		return w.WriteByte('\n')
	}
	if t.redis != nil {
		err = t.redis.AuditEntries(cmd.Context(), func(streamID, entry string) error {
			return show(keyring.RedisAuditStream+" "+streamID, []byte(entry))
		})
	} else {
		err = readAuditFile(t.path, show)
	}
	if err != nil {
		return err
	}
	return w.Flush()
}

// readAuditFile calls fn with each non-empty line of the log at path.
func readAuditFile(path string, fn func(where string, line []byte) error) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no audit log at %s (nothing was changed with scoped-key yet, or it was written with --audit-log elsewhere)", path)
	}
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	for n := 1; ; n++ {
		line, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			if ferr := fn(path+":"+strconv.Itoa(n), bytes.TrimSuffix(line, []byte("\n"))); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("audit log %s: %w", path, err)
		}
	}
}
