package caddyauth

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	neturl "net/url"
	"os"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/scopegate/scopegate/caddyauth/internal/keyring"
)

// This file is `caddy scoped-key` (SPEC section 4). Identifiers are prefixed
// (scopedKey…, keyEditor, sk…) to stay clear of the handler's names.

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "scoped-key",
		Usage: "new|list|revoke|rotate|deny-cert|allow-cert|denied-certs|audit|explain (--keys FILE | --redis URL) ...",
		Short: "Creates, lists, revokes and rotates scoped API keys",
		Long: `
Manages the keys that the scoped_auth handler accepts, in a keys file
(--keys FILE; the same file as scoped_auth's keys_file) or in the Redis
fleet store (--redis URL; the same URL as scoped_auth's redis, e.g.
redis://:PASSWORD@10.0.0.5:6379/0 or rediss://... for TLS; a placeholder
such as '{env.REDIS_URL}' keeps the password off the command line).

  new     creates a key (or, with --no-secret, a certificate principal) and
          prints the plaintext key once, on stdout
  list    prints every record as one JSON object per line, without hashes
  revoke  disables a key for good (the record stays, as a tombstone)
  rotate  gives a key a new secret; the old one works for --grace
  audit   prints the audit log of changes, one JSON object per line

Edits of a keys file take an exclusive lock on FILE.lock, check the result
with the server's own parser, and replace the file atomically with the
same owner, group and mode (0600 for a new file). A running Caddy picks the
change up within about a second.

Edits in Redis are atomic scripts that check the record's version, bump
it, keep the certificate index consistent and announce the change on
scopegate:keys: every Caddy evicts it from its cache within milliseconds.

Every change is recorded in an append-only audit log (who, when, id, what
changed, new version; never a key or a hash): FILE.audit.jsonl next to a
keys file (--audit-log PATH elsewhere), written and fsynced under the lock
before the file is replaced; the stream scopegate:audit in Redis, appended
by the same atomic script. A change whose entry cannot be written is not
made.

On any error the command exits non-zero with a one-line reason on stderr.
The plaintext key is printed only by new and rotate, and never logged.

Run 'caddy scoped-key <command> --help' for each command's flags.
`,
		CobraFunc: func(cmd *cobra.Command) {
			(&scopedKeyCLI{now: time.Now}).attach(cmd)
		},
	})
}

// RunScopedKey runs `caddy scoped-key ARGS` in-process, writing what the
// command prints to stdout and stderr: for programs that make keys (such as
// examples/genkeys) and for tests, without a caddy binary.
func RunScopedKey(stdout, stderr io.Writer, args ...string) error {
	root := &cobra.Command{Use: "caddy", SilenceUsage: true, SilenceErrors: true}
	sk := &cobra.Command{Use: "scoped-key"}
	(&scopedKeyCLI{now: time.Now}).attach(sk)
	root.AddCommand(sk)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(append([]string{"scoped-key"}, args...))
	return root.Execute()
}

// scopedKeyCLI runs the scoped-key subcommands.
type scopedKeyCLI struct {
	now func() time.Time

	// audit, when set, is called once for every committed change (tests
	// watch changes with it). The audit log itself is written by the
	// editor with the change (audit.go). An event never carries a key or a
	// hash.
	audit func(scopedKeyChange)

	// unaudited collects committed changes whose audit entry could not be
	// written; run turns it into a failure (audit.go).
	unaudited error
}

// scopedKeyChange describes a committed change, for the audit log.
type scopedKeyChange struct {
	Time    time.Time
	Action  string // "new", "revoke", "rotate"
	ID      string
	Version int64
	Store   string // e.g. "file /etc/caddy/keys.json"
}

// keyEditor is a key store as the CLI edits it: the keys file
// (keyFileEditor) or Redis (keyRedisEditor: an atomic script per change and
// an announcement on scopegate:keys, SPEC section 5).
type keyEditor interface {
	// List returns every record, in store order.
	List(ctx context.Context) ([]*keyring.Record, error)
	// Create stores a new record; errDuplicateID if its id is taken.
	Create(ctx context.Context, rec *keyring.Record) error
	// Update applies fn to the record with this id, atomically with
	// respect to other editors, and stores the result unless fn returns
	// keyring.ErrUnchanged (then Update returns nil and stores nothing). An
	// unknown id is an error naming the id.
	Update(ctx context.Context, id string, fn func(*keyring.Record) error) error
	// String names the store in messages and audit events.
	String() string
}

var errDuplicateID = errors.New("key id already taken")

// keyFileEditor edits a keys file through keyring.UpdateFile, with the
// audit log written ahead of each change (updateFile, audit.go).
type keyFileEditor struct {
	path  string
	trail *auditTrail
}

func (e keyFileEditor) String() string { return "file " + e.path }

func (e keyFileEditor) List(context.Context) ([]*keyring.Record, error) {
	f, _, err := keyring.LoadFile(e.path)
	if err != nil {
		return nil, err
	}
	return f.Keys, nil
}

func (e keyFileEditor) Create(ctx context.Context, rec *keyring.Record) error {
	return e.updateFile(ctx, func(f *keyring.File) error {
		for _, r := range f.Keys {
			if r.ID == rec.ID {
				return errDuplicateID
			}
		}
		f.Keys = append(f.Keys, rec)
		return nil
	})
}

func (e keyFileEditor) Update(ctx context.Context, id string, fn func(*keyring.Record) error) error {
	// Changing a key needs an existing file (UpdateFile would take a
	// missing one as empty and report an unknown id instead).
	if _, err := os.Stat(e.path); err != nil {
		return fmt.Errorf("keys file %s: %w", e.path, err)
	}
	return e.updateFile(ctx, func(f *keyring.File) error {
		for _, r := range f.Keys {
			if r.ID != id {
				continue
			}
			if err := fn(r); err != nil {
				return err
			}
			if r.ID != id {
				return errors.New("internal error: a change may not alter the key id")
			}
			return nil
		}
		return fmt.Errorf("unknown key id %s in %s", id, e.path)
	})
}

// keyRedisEditor edits the Redis fleet store through keyring.RedisEditor,
// whose write script also appends the audit entry (audit.go).
type keyRedisEditor struct {
	ed    *keyring.RedisEditor
	trail *auditTrail
}

func (e keyRedisEditor) String() string { return "redis " + e.ed.String() }

func (e keyRedisEditor) Close() error { return e.ed.Close() }

func (e keyRedisEditor) List(ctx context.Context) ([]*keyring.Record, error) { return e.ed.List(ctx) }

func (e keyRedisEditor) Create(ctx context.Context, rec *keyring.Record) error {
	err := e.ed.Create(ctx, rec)
	if errors.Is(err, keyring.ErrExists) {
		return errDuplicateID
	}
	return err
}

func (e keyRedisEditor) Update(ctx context.Context, id string, fn func(*keyring.Record) error) error {
	return e.ed.Update(ctx, id, fn)
}

// attach adds the subcommands to the scoped-key command.
func (c *scopedKeyCLI) attach(cmd *cobra.Command) {
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("unknown command %q for %q (want new, list, revoke, rotate, deny-cert, allow-cert, denied-certs, audit or explain)", skShort(args[0]), cmd.CommandPath())
		}
		return cmd.Help()
	}
	cmd.SilenceUsage = true

	newCmd := &cobra.Command{
		Use:   "new (--keys FILE | --redis URL) --scope SCOPE [--scope SCOPE]... [flags]",
		Short: "Creates a key and prints it, once, on stdout",
		Long: `
Creates a key record (version 1) and prints only the plaintext key on
stdout, one line. Store it now: it is not kept anywhere and cannot be shown
again (rotate issues a new one).

Scopes are resource:action in lower case, either part may be *; the
presets read_only (= *:read) and full_access (= *:*) are expanded before
they are stored. Several scopes: repeat --scope or separate with commas.

Without --account the key may act on every account (stored as ["*"]).

Certificate binding (any pin makes mutual TLS mandatory for the key; any
listed pin may match, so several allow rotation):
  --cert PEM     the leaf certificate's SHA-256 (first certificate in PEM)
  --spki PEM     the SPKI SHA-256 of a certificate or a PUBLIC KEY in PEM
  --spiffe URI   the URI SAN (SPIFFE ID), matched exactly
  --subject DN   the exact subject as Go's pkix.Name.String() writes it
                 (CN=svc,OU=ops,O=Acme: no spaces after commas)
  --issuer PEM   narrows the pins to certificates issued by this CA (its
                 SPKI; every certificate in the file is pinned); it never
                 binds alone. Recommended with --spiffe and --subject.

--no-secret creates a certificate principal instead: no key, the verified
client certificate alone authenticates (needs a pin); it prints the id.

Times: --not-before and --expires take an RFC 3339 time
(2027-06-01T00:00:00Z) or a duration from now (90d, 720h, 1h30m).
`,
		Example: `  caddy scoped-key new --keys /etc/caddy/keys.json --scope read_only
  caddy scoped-key new --keys keys.json --name "HRIS sync" --scope employees:read,gifts:read \
      --account acme-us --account acme-eu --expires 90d
  caddy scoped-key new --keys keys.json --scope gifts:send --no-secret \
      --spiffe spiffe://acme.test/hris --issuer ca.pem`,
		Args: skNoArgs,
		RunE: c.run(c.runNew),
	}
	fl := newCmd.Flags()
	skStoreFlags(newCmd)
	fl.StringArray("scope", nil, "scope `S` (resource:action, read_only, full_access); repeatable, comma-separated")
	fl.String("name", "", "a human-readable `NAME` for the key")
	fl.StringArray("account", nil, "an `ACCOUNT` the key may act on; repeatable (default: all)")
	fl.Bool("pii", false, "allow this key to see unmasked PII")
	fl.StringArray("cert", nil, "pin the leaf SHA-256 of the certificate in `PEM`; repeatable")
	fl.StringArray("spki", nil, "pin the SPKI SHA-256 of the certificate or public key in `PEM`; repeatable")
	fl.StringArray("spiffe", nil, "pin the client certificate's `URI` SAN; repeatable")
	fl.String("subject", "", "pin the exact client certificate subject `DN` (pkix.Name.String() form)")
	fl.StringArray("issuer", nil, "require the client certificate to be issued by the CA in `PEM`; repeatable")
	fl.String("not-before", "", "the key is not valid before `T` (RFC 3339 or a duration from now)")
	fl.String("expires", "", "the key expires at `T` (RFC 3339 or a duration from now, e.g. 90d)")
	fl.Bool("no-secret", false, "create a certificate principal (no key; prints the id)")

	listCmd := &cobra.Command{
		Use:   "list (--keys FILE | --redis URL)",
		Short: "Prints every record, one JSON object per line, without hashes",
		Long: `
Prints every record of the store, one JSON object per line: the record as
stored without hash and previous_hash. A keys file is listed in file
order; Redis in id order (walked with SCAN, which never blocks Redis).
`,
		Args: skNoArgs,
		RunE: c.run(c.runList),
	}
	skStoreFlags(listCmd)

	revokeCmd := &cobra.Command{
		Use:   "revoke (--keys FILE | --redis URL) ID",
		Short: "Disables a key or principal for good",
		Long: `
Disables the record with this id and increases its version. The record
stays in the store as a tombstone, so no cache can bring the key back.
Revoking an already revoked key changes nothing and succeeds.
`,
		Args: skOneID,
		RunE: c.run(c.runRevoke),
	}
	skStoreFlags(revokeCmd)

	rotateCmd := &cobra.Command{
		Use:   "rotate (--keys FILE | --redis URL) ID [--grace DURATION]",
		Short: "Gives a key a new secret and prints it, once, on stdout",
		Long: `
Issues a new secret for the key with this id (same id, scopes, accounts and
binding), increases its version and prints only the new key on stdout.

With --grace (e.g. 10m, 7d) the old secret keeps working for that long;
by default it stops working at once. Only the secret being replaced is kept:
rotating again during a grace period ends the earlier one.
`,
		Args: skOneID,
		RunE: c.run(c.runRotate),
	}
	skStoreFlags(rotateCmd)
	rotateCmd.Flags().String("grace", "0", "keep the old secret working for `DURATION` (e.g. 10m, 7d)")

	for _, sub := range []*cobra.Command{newCmd, listCmd, revokeCmd, rotateCmd, c.explainCommand(), c.auditCommand()} {
		sub.SilenceUsage = true
		cmd.AddCommand(sub)
	}
	c.attachDenylist(cmd) // deny-cert, allow-cert, denied-certs (command_denylist.go)
}

func skStoreFlags(cmd *cobra.Command) {
	usage := "the keys `FILE` (scoped_auth's keys_file)"
	if cmd.Name() == "new" {
		usage = "the keys `FILE` (scoped_auth's keys_file; created with mode 0600 if missing)"
	}
	cmd.Flags().String("keys", "", usage)
	cmd.Flags().String("redis", "", "the Redis fleet store `URL` (scoped_auth's redis; redis:// or rediss://, placeholders such as {env.REDIS_URL} expanded)")
	if skWriters[cmd.Name()] {
		verb := "append the audit log of a keys file to"
		if cmd.Name() == "audit" {
			verb = "read the audit log of a keys file from"
		}
		cmd.Flags().String("audit-log", "", verb+" `PATH` (default FILE.audit.jsonl next to it; Redis: the stream scopegate:audit)")
	}
}

// skWriters are the subcommands that take --audit-log: those that change a
// store, and audit, which reads the log. (A command that changes a store
// without it still logs, to the default place.)
var skWriters = map[string]bool{"new": true, "revoke": true, "rotate": true, "deny-cert": true, "allow-cert": true, "audit": true}

func skNoArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%s takes no arguments, got %q", cmd.Name(), skShort(args[0]))
	}
	return nil
}

func skOneID(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("%s takes exactly one key id, got %d arguments", cmd.Name(), len(args))
	}
	return nil
}

// skShort quotes at most a few characters of an argument, and nothing of
// one that looks like a key: an error message must never echo a key.
func skShort(arg string) string {
	if strings.HasPrefix(arg, "sg_") {
		return "sg_…"
	}
	if len(arg) > 24 {
		return arg[:24] + "…"
	}
	return arg
}

// run adapts a subcommand to cobra: errors become one line (cobra prints
// "Error: <reason>" on stderr and caddy exits with status 1).
func (c *scopedKeyCLI) run(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c.unaudited = nil
		err := f(cmd, args)
		if c.unaudited != nil {
			err = errors.Join(err, c.unaudited)
		}
		if err == nil {
			return nil
		}
		msg := strings.Join(strings.Fields(err.Error()), " ")
		return errors.New(msg)
	}
}

// openEditor returns the store named by exactly one of --keys and --redis.
func (c *scopedKeyCLI) openEditor(cmd *cobra.Command) (keyEditor, error) {
	keys, _ := cmd.Flags().GetString("keys")
	redis, _ := cmd.Flags().GetString("redis")
	switch {
	case keys != "" && redis != "":
		return nil, errors.New("give either --keys or --redis, not both")
	case redis != "":
		ed, err := keyring.OpenRedisEditor(caddy.NewReplacer().ReplaceKnown(redis, ""))
		if err != nil {
			return nil, fmt.Errorf("--redis: %w", err)
		}
		return c.withAudit(cmd, keyRedisEditor{ed: ed})
	case keys != "":
		return c.withAudit(cmd, keyFileEditor{path: keys})
	}
	return nil, errors.New("no store: give --keys FILE or --redis URL")
}

// closeEditor releases what an editor holds (Redis connections).
func closeEditor(ed keyEditor) {
	if c, ok := ed.(io.Closer); ok {
		_ = c.Close()
	}
}

// committed is called once for every change a command applied. The editor
// normally wrote its audit entry with the change; if not (a change made
// another way), the entry is appended now, with changes (non-secret values
// only) if given, and a failure makes the command fail saying the change
// was applied but not audited.
func (c *scopedKeyCLI) committed(ed keyEditor, action, id string, version int64, changes ...map[string]any) {
	c.auditCommitted(ed, action, id, version, changes)
	if c.audit != nil {
		c.audit(scopedKeyChange{Time: c.now().UTC(), Action: action, ID: id, Version: version, Store: ed.String()})
	}
}

func (c *scopedKeyCLI) warn(cmd *cobra.Command, format string, args ...any) {
	fmt.Fprintf(cmd.ErrOrStderr(), "warning: "+format+"\n", args...)
}

// runNew is `caddy scoped-key new`.
func (c *scopedKeyCLI) runNew(cmd *cobra.Command, _ []string) error {
	ed, err := c.openEditor(cmd)
	if err != nil {
		return err
	}
	defer closeEditor(ed)
	fl := cmd.Flags()
	str := func(name string) string { v, _ := fl.GetString(name); return v }
	// Not GetStringArray: it round-trips through CSV and loses an empty value.
	arr := func(name string) []string { return fl.Lookup(name).Value.(pflag.SliceValue).GetSlice() }
	boolean := func(name string) bool { v, _ := fl.GetBool(name); return v }
	now := c.now()

	rec := &keyring.Record{Name: str("name"), PII: boolean("pii"), Version: 1}
	if err := skCheckName(rec.Name); err != nil {
		return err
	}
	if rec.Scopes, err = skScopes(arr("scope")); err != nil {
		return err
	}
	if rec.Accounts, err = skAccounts(arr("account")); err != nil {
		return err
	}
	binding, err := skBinding(cmd, arr("cert"), arr("spki"), arr("spiffe"), str("subject"), arr("issuer"))
	if err != nil {
		return err
	}
	if !binding.Empty() {
		rec.ClientCert = binding
	}
	if v := str("not-before"); v != "" {
		t, err := skParseTime("--not-before", v, now)
		if err != nil {
			return err
		}
		rec.NotBefore = &t
	}
	if v := str("expires"); v != "" {
		t, err := skParseTime("--expires", v, now)
		if err != nil {
			return err
		}
		if !t.After(now) {
			return fmt.Errorf("--expires %s: already in the past", v)
		}
		rec.ExpiresAt = &t
	}
	if rec.NotBefore != nil && rec.ExpiresAt != nil && !rec.ExpiresAt.After(*rec.NotBefore) {
		return errors.New("--expires must be later than --not-before")
	}
	noSecret := boolean("no-secret")
	if noSecret && rec.ClientCert == nil {
		return errors.New("--no-secret makes a certificate principal: give a pin (--cert, --spki, --spiffe or --subject)")
	}
	if b := rec.ClientCert; b != nil && len(b.IssuerSPKISHA256) == 0 {
		if len(b.URI) > 0 {
			c.warn(cmd, "--spiffe without --issuer: any CA the server trusts can issue a certificate with this URI")
		}
		if b.Subject != "" {
			c.warn(cmd, "--subject without --issuer: any CA the server trusts can issue a certificate with this subject")
		}
	}

	// A fresh id cannot realistically collide (80 random bits), but a
	// collision must never overwrite a record: retry with another id.
	var key string
	for attempt := 0; ; attempt++ {
		if rec.ID, err = keyring.NewID(); err != nil {
			return err
		}
		if !noSecret {
			if key, err = keyring.NewKey(rec.ID); err != nil {
				return err
			}
			rec.Hash = keyring.FormatHash(keyring.HashKey(key))
		}
		if _, err := keyring.Compile(rec); err != nil {
			return err
		}
		err = ed.Create(withAuditAction(cmd.Context(), "new"), rec)
		if errors.Is(err, errDuplicateID) && attempt < 3 {
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	c.committed(ed, "new", rec.ID, rec.Version)
	out := key
	if noSecret {
		out = rec.ID
	}
	if _, err := fmt.Fprintln(cmd.OutOrStdout(), out); err != nil {
		return fmt.Errorf("key %s was stored but could not be printed (rotate or revoke it): %v", rec.ID, err)
	}
	return nil
}

// runList is `caddy scoped-key list`.
func (c *scopedKeyCLI) runList(cmd *cobra.Command, _ []string) error {
	ed, err := c.openEditor(cmd)
	if err != nil {
		return err
	}
	defer closeEditor(ed)
	recs, err := ed.List(cmd.Context())
	if err != nil {
		return err
	}
	w := bufio.NewWriter(cmd.OutOrStdout())
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, r := range recs {
		shown := *r
		shown.Hash, shown.PreviousHash = "", ""
		if err := enc.Encode(&shown); err != nil {
			return err
		}
	}
	return w.Flush()
}

// skID reads the id argument of revoke and rotate.
func skID(arg string) (string, error) {
	if _, isKey := keyring.ParseKey(arg); isKey || strings.HasPrefix(arg, "sg_") {
		return "", errors.New("give the key id (the 16 characters after sg_), not the key itself")
	}
	if !keyring.ValidID(arg) {
		return "", fmt.Errorf("invalid key id %q: want 16 characters of lower-case base32 (a-z, 2-7)", skShort(arg))
	}
	return arg, nil
}

// runRevoke is `caddy scoped-key revoke ID`.
func (c *scopedKeyCLI) runRevoke(cmd *cobra.Command, args []string) error {
	id, err := skID(args[0])
	if err != nil {
		return err
	}
	ed, err := c.openEditor(cmd)
	if err != nil {
		return err
	}
	defer closeEditor(ed)
	var version int64
	changed := false
	err = ed.Update(withAuditAction(cmd.Context(), "revoke"), id, func(r *keyring.Record) error {
		if r.Disabled {
			return keyring.ErrUnchanged
		}
		r.Disabled = true
		r.Version++
		version, changed = r.Version, true
		return nil
	})
	if err != nil {
		return err
	}
	if !changed {
		fmt.Fprintf(cmd.ErrOrStderr(), "key %s was already revoked\n", id)
		return nil
	}
	c.committed(ed, "revoke", id, version)
	return nil
}

// runRotate is `caddy scoped-key rotate ID [--grace DURATION]`.
func (c *scopedKeyCLI) runRotate(cmd *cobra.Command, args []string) error {
	id, err := skID(args[0])
	if err != nil {
		return err
	}
	graceStr, _ := cmd.Flags().GetString("grace")
	grace, err := skParseDuration(graceStr)
	if err != nil || grace < 0 {
		return fmt.Errorf("--grace %q: want a duration that is not negative, such as 10m or 7d", skShort(graceStr))
	}
	ed, err := c.openEditor(cmd)
	if err != nil {
		return err
	}
	defer closeEditor(ed)
	now := c.now()
	var key string
	var version int64
	droppedPrevious := false
	err = ed.Update(withAuditAction(cmd.Context(), "rotate"), id, func(r *keyring.Record) error {
		switch {
		case r.Disabled:
			return fmt.Errorf("key %s is revoked: create a new key instead", id)
		case r.Hash == "":
			return fmt.Errorf("%s is a certificate principal: it has no secret to rotate", id)
		}
		newKey, err := keyring.NewKey(id)
		if err != nil {
			return err
		}
		droppedPrevious = r.PreviousHash != "" && r.PreviousExpiresAt != nil && now.Before(*r.PreviousExpiresAt)
		if grace > 0 {
			until := skCeilSecond(now.Add(grace))
			r.PreviousHash, r.PreviousExpiresAt = r.Hash, &until
		} else {
			r.PreviousHash, r.PreviousExpiresAt = "", nil
		}
		r.Hash = keyring.FormatHash(keyring.HashKey(newKey))
		r.Version++
		key, version = newKey, r.Version
		return nil
	})
	if err != nil {
		return err
	}
	c.committed(ed, "rotate", id, version)
	if droppedPrevious {
		c.warn(cmd, "key %s was still in a rotation grace period: the secret before the current one stops working now", id)
	}
	if _, err := fmt.Fprintln(cmd.OutOrStdout(), key); err != nil {
		return fmt.Errorf("key %s was rotated but the new key could not be printed (rotate it again): %v", id, err)
	}
	return nil
}

// skScopes expands presets, validates and de-duplicates the --scope values.
func skScopes(values []string) ([]string, error) {
	var scopes []string
	for _, v := range skSplit(values) {
		if p, ok := keyring.Presets[v]; ok {
			v = p
		}
		if _, err := keyring.ParseScope(v); err != nil {
			return nil, fmt.Errorf("--scope: %v", err)
		}
		if !slices.Contains(scopes, v) {
			scopes = append(scopes, v)
		}
	}
	if len(scopes) == 0 {
		return nil, errors.New("give at least one --scope (resource:action, read_only or full_access)")
	}
	return scopes, nil
}

// skAccounts validates the --account values: none means every account,
// stored explicitly as ["*"].
func skAccounts(values []string) ([]string, error) {
	var accounts []string
	split := skSplit(values)
	for _, v := range split {
		if v == "*" && len(split) > 1 {
			return nil, errors.New(`--account "*" means all accounts: give it alone`)
		}
		if v == "" || strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return nil, fmt.Errorf("--account %q: an account is an exact id without whitespace, commas or control characters (no --account means all)", skShort(v))
		}
		if !slices.Contains(accounts, v) {
			accounts = append(accounts, v)
		}
	}
	if len(accounts) == 0 {
		return []string{"*"}, nil
	}
	return accounts, nil
}

// skSplit splits repeated, comma-separated flag values. Empty items are
// kept, so that the validation reports them.
func skSplit(values []string) []string {
	var out []string
	for _, v := range values {
		out = append(out, strings.Split(v, ",")...)
	}
	return out
}

// skCheckName refuses control characters and invalid UTF-8 in a name: it
// becomes {http.auth.key.name}, which may be sent upstream in a header.
func skCheckName(name string) error {
	if !utf8.ValidString(name) || strings.ContainsFunc(name, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return errors.New("--name: control characters and invalid UTF-8 are not allowed")
	}
	return nil
}

// skBinding builds the client_cert binding from the pin flags.
func skBinding(cmd *cobra.Command, certs, spkis, uris []string, subject string, issuers []string) (*keyring.CertBinding, error) {
	b := &keyring.CertBinding{}
	add := func(list *[]string, v string) {
		if !slices.Contains(*list, v) {
			*list = append(*list, v)
		}
	}
	for _, file := range certs {
		cs, err := skReadCerts("--cert", file)
		if err != nil {
			return nil, err
		}
		add(&b.SHA256, keyring.HexDigest(keyring.LeafSHA256(cs[0])))
	}
	for _, file := range spkis {
		spki, err := skReadSPKI(file)
		if err != nil {
			return nil, err
		}
		add(&b.SPKISHA256, spki)
	}
	for _, u := range uris {
		parsed, err := neturl.Parse(u)
		if err != nil || parsed.Scheme == "" || parsed.String() != u {
			return nil, fmt.Errorf("--spiffe %q: want an absolute URI as it appears in the certificate, such as spiffe://acme.test/hris", u)
		}
		add(&b.URI, u)
	}
	if subject != "" {
		if err := skCheckSubject(subject); err != nil {
			return nil, err
		}
		b.Subject = subject
	}
	for _, file := range issuers {
		cs, err := skReadCerts("--issuer", file)
		if err != nil {
			return nil, err
		}
		for _, ca := range cs {
			if !ca.BasicConstraintsValid || !ca.IsCA {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: --issuer %s: %q is not a CA certificate\n", file, ca.Subject.String())
			}
			add(&b.IssuerSPKISHA256, keyring.HexDigest(keyring.SPKISHA256(ca)))
		}
	}
	if len(b.IssuerSPKISHA256) > 0 && len(b.SHA256) == 0 && len(b.SPKISHA256) == 0 && len(b.URI) == 0 && b.Subject == "" {
		return nil, errors.New("--issuer only narrows the other pins and never binds alone: add --cert, --spki, --spiffe or --subject")
	}
	return b, nil
}

// skCheckSubject catches the usual ways of writing a subject that Go's
// pkix.Name.String() never produces (so the binding would never match).
func skCheckSubject(dn string) error {
	if err := keyring.CheckDN(dn); err != nil {
		return fmt.Errorf("--subject: %w", err)
	}
	return nil
}

// skReadCerts reads the certificates of a PEM file (other blocks, such as a
// private key in the same file, are skipped unread).
func skReadCerts(flag, file string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", flag, err)
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %v", flag, file, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s %s: no PEM CERTIFICATE in the file", flag, file)
	}
	return certs, nil
}

// skReadSPKI returns the SPKI SHA-256 (hex) of the first certificate or
// public key (PUBLIC KEY, or RSA PUBLIC KEY) in a PEM file.
func skReadSPKI(file string) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--spki: %v", err)
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return "", fmt.Errorf("--spki %s: no PEM CERTIFICATE or PUBLIC KEY in the file", file)
		}
		var spki []byte
		switch block.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return "", fmt.Errorf("--spki %s: %v", file, err)
			}
			spki = c.RawSubjectPublicKeyInfo
		case "PUBLIC KEY":
			if _, err := x509.ParsePKIXPublicKey(block.Bytes); err != nil {
				return "", fmt.Errorf("--spki %s: %v", file, err)
			}
			spki = block.Bytes
		case "RSA PUBLIC KEY":
			pub, err := x509.ParsePKCS1PublicKey(block.Bytes)
			if err != nil {
				return "", fmt.Errorf("--spki %s: %v", file, err)
			}
			if spki, err = x509.MarshalPKIXPublicKey(pub); err != nil {
				return "", fmt.Errorf("--spki %s: %v", file, err)
			}
		default:
			continue
		}
		return keyring.HexDigest(sha256.Sum256(spki)), nil
	}
}

// skParseTime reads an RFC 3339 time or a positive duration from now; the
// result is in UTC, whole seconds.
func skParseTime(flag, v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t.UTC(), nil
	}
	d, err := skParseDuration(v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q: want an RFC 3339 time (2027-06-01T00:00:00Z) or a duration from now (90d, 720h)", flag, skShort(v))
	}
	if d <= 0 {
		return time.Time{}, fmt.Errorf("%s %q: a duration from now must be positive", flag, skShort(v))
	}
	return skCeilSecond(now.Add(d)), nil
}

// skParseDuration accepts Go durations and caddy's "d" (24h) unit.
func skParseDuration(v string) (time.Duration, error) {
	if v == "" {
		return 0, errors.New("empty duration")
	}
	return caddy.ParseDuration(v)
}

// skCeilSecond rounds up to a whole second (so a grace or lifetime is never
// shorter than asked) and drops the monotonic clock and location.
func skCeilSecond(t time.Time) time.Time {
	t = t.UTC().Round(0)
	if u := t.Truncate(time.Second); !u.Equal(t) {
		return u.Add(time.Second)
	}
	return t
}
