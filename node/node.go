package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wardsync/wardsync/node/blobstore"
	"github.com/wardsync/wardsync/node/diskspace"
	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// DefaultMaxAttachmentBytes is the upload limit of one attachment when
// Config.MaxAttachmentBytes is 0.
const DefaultMaxAttachmentBytes = 50 << 20

// Config is everything a ward node needs to open.
type Config struct {
	Dir           string
	EncryptionKey []byte
	Catalog       *schema.Catalog      // nil: the embedded catalog
	Calendar      *schema.Calendar     // nil: the embedded calendar
	Wards         *schema.WardRegistry // nil: the embedded registry
	Logger        *slog.Logger
	// Now is the wall clock (tests move it); nil means time.Now.
	Now func() time.Time
	// MaxDrift bounds how far ahead a remote HLC may be (0: default).
	MaxDrift time.Duration
	// SkipLogCheck is set only by `ward repair`.
	SkipLogCheck bool
	// MaxAttachmentBytes bounds one uploaded attachment (0:
	// DefaultMaxAttachmentBytes; at most schema.MaxBlobSize).
	MaxAttachmentBytes int64
	// MinFreeDisk is the free space below which the node refuses writes
	// (HTTP 503 disk_full) rather than fill its disk (0: never refuse).
	MinFreeDisk uint64
}

// Node is an open ward node.
type Node struct {
	store    *store.Store
	blobs    *blobstore.Store
	space    *diskspace.Guard
	id       store.Identity
	catalog  *schema.Catalog
	calendar *schema.Calendar
	wards    *schema.WardRegistry
	clock    *schema.Clock
	now      func() time.Time
	log      *slog.Logger
	metrics  *metrics

	writes     signal // the node wrote an op of its own
	leases     signal // a ward's known lease changed
	syncStatus func() any
	linkTest   func(ctx context.Context, bytes int64) (any, error)

	maxAttachment int64
	fetchBlob     atomic.Pointer[blobFetcher]

	ulidMu   sync.Mutex
	ulidLast uint64
	entropy  *ulid.MonotonicEntropy
}

func (c *Config) defaults() {
	if c.Catalog == nil {
		c.Catalog = schema.DefaultCatalog()
	}
	if c.Calendar == nil {
		c.Calendar = schema.DefaultCalendar()
	}
	if c.Wards == nil {
		c.Wards = schema.DefaultWards()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.MaxAttachmentBytes == 0 {
		c.MaxAttachmentBytes = DefaultMaxAttachmentBytes
	}
}

var (
	nodeIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
	seriesRe = regexp.MustCompile(`^[A-Z0-9]{1,8}$`)
)

// InitParams are the inputs of `ward init`.
type InitParams struct {
	Ward string // the ward office's ward; empty for a backup office
	// Backup makes a backup office's node: it has no ward of its own and
	// serves, after a failover, the wards whose leases the city gives it.
	Backup    bool
	Node      string
	Series    string // "" derives it from Node
	AdminName string
	// Announce, if set, is called with the result (the admin token) once
	// the node is in place at Dir (synced): a token that was shown always
	// opens a node. If the process dies before Announce returns, the node
	// exists but nobody saw its token: `ward reset-token` issues a new one.
	// (A kill between the two can make only one of them true; a token for
	// a node that does not exist would be the worse.)
	Announce func(InitResult) error
}

// InitResult is what `ward init` prints.
type InitResult struct {
	Node       string          `json:"node"`
	Ward       string          `json:"ward"`
	Role       schema.PeerRole `json:"role"`
	Series     string          `json:"series"`
	AdminID    string          `json:"admin_id"`
	AdminToken string          `json:"admin_token"`
}

// Init creates a node's data dir: its identity (ed25519 key, receipt
// series) and its first admin. It refuses an initialized dir.
func Init(ctx context.Context, cfg Config, p InitParams) (InitResult, error) {
	cfg.defaults()
	role, err := initRole(cfg.Wards, p)
	if err != nil {
		return InitResult{}, err
	}
	if !nodeIDRe.MatchString(p.Node) {
		return InitResult{}, &schema.FieldError{Field: "node", Reason: "must be 1-32 lower-case letters, digits and -, starting with a letter or digit"}
	}
	series := p.Series
	if series == "" {
		series = strings.ToUpper(strings.ReplaceAll(p.Node, "-", ""))
	}
	if !seriesRe.MatchString(series) {
		return InitResult{}, &schema.FieldError{Field: "series", Reason: fmt.Sprintf("%q must be 1-8 upper-case letters or digits (set --series)", series)}
	}
	if series == "CITY" {
		// The city's own series (portal intake): a node using it could
		// print a number the portal also prints.
		return InitResult{}, &schema.FieldError{Field: "series", Reason: `"CITY" is the portal's series; choose another (set --series)`}
	}
	if p.AdminName == "" {
		p.AdminName = "Administrator"
	}
	if err := schema.ValidateText("admin-name", p.AdminName, schema.MaxNameLen, true); err != nil {
		return InitResult{}, err
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, "MANIFEST")); err == nil {
		return InitResult{}, fmt.Errorf("%w: %s is already initialized", schema.ErrConflict, cfg.Dir)
	}
	if entries, err := os.ReadDir(cfg.Dir); err == nil && len(entries) > 0 {
		return InitResult{}, fmt.Errorf("%w: %s is not empty; init wants a new or empty directory", schema.ErrConflict, cfg.Dir)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return InitResult{}, err
	}
	// Build the node beside its final place and rename it in at the end.
	partial := filepath.Clean(cfg.Dir) + ".init-partial"
	if err := os.RemoveAll(partial); err != nil {
		return InitResult{}, err
	}
	st, err := store.Open(store.Options{Dir: partial, EncryptionKey: cfg.EncryptionKey, Logger: cfg.Logger, Create: true})
	if err != nil {
		return InitResult{}, err
	}
	defer st.Close()
	token, hash := newToken()
	admin := store.Official{ID: "admin", Name: p.AdminName, Role: schema.RoleAdmin, TokenHash: hash, CreatedAt: cfg.Now().UTC()}
	id := store.Identity{Node: p.Node, Ward: p.Ward, Role: role, Series: series, PublicKey: pub, PrivateKey: priv, CreatedAt: cfg.Now().UTC()}
	err = st.Write(ctx, func(tx *store.Tx) error {
		if err := tx.PutIdentity(id); err != nil {
			return err
		}
		return tx.PutOfficial(admin)
	})
	if err == nil {
		err = st.Close()
	}
	res := InitResult{Node: p.Node, Ward: p.Ward, Role: role, Series: series, AdminID: admin.ID, AdminToken: token}
	if err == nil {
		err = moveInto(partial, cfg.Dir)
	}
	if err != nil {
		os.RemoveAll(partial)
		return InitResult{}, err
	}
	if p.Announce != nil {
		if err := p.Announce(res); err != nil {
			return InitResult{}, fmt.Errorf("node %s is initialized in %s but its admin token could not be shown (%w): run `wardsync ward reset-token`", p.Node, cfg.Dir, err)
		}
	}
	return res, nil
}

// initRole checks the ward of a new node against its kind: a ward office
// names a ward of the registry, a backup office none.
func initRole(wards *schema.WardRegistry, p InitParams) (schema.PeerRole, error) {
	if p.Backup {
		if p.Ward != "" {
			return "", &schema.FieldError{Field: "ward", Reason: fmt.Sprintf("a backup office has no ward of its own (got %q): leave it empty; it serves the wards whose leases the city gives it", p.Ward)}
		}
		return schema.PeerBackup, nil
	}
	if _, ok := wards.Lookup(p.Ward); !ok {
		return "", &schema.FieldError{Field: "ward", Reason: fmt.Sprintf("unknown ward %q (see the ward registry)", p.Ward)}
	}
	return schema.PeerWard, nil
}

// checkIdentity checks a stored identity against this build's ward
// registry: a ward node's ward must be in it; a backup has no ward.
func checkIdentity(wards *schema.WardRegistry, id *store.Identity) error {
	switch id.Role {
	case "", schema.PeerWard:
		if _, ok := wards.Lookup(id.Ward); !ok {
			return fmt.Errorf("node: ward %s of this node is not in the ward registry", id.Ward)
		}
	case schema.PeerBackup:
		if id.Ward != "" {
			return fmt.Errorf("node: this backup office's identity names ward %s; a backup has no ward of its own", id.Ward)
		}
	default:
		return fmt.Errorf("node: unknown node role %q in this node's identity", id.Role)
	}
	return nil
}

// moveInto renames dir src to dst (replacing an empty dst) and fsyncs the
// parent so the rename itself survives a power cut.
func moveInto(src, dst string) error {
	if err := os.Remove(dst); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("init: %w", err)
	}
	if err := os.Rename(src, dst); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	parent, err := os.Open(filepath.Dir(filepath.Clean(dst)))
	if err != nil {
		return err
	}
	defer parent.Close()
	return parent.Sync()
}

// Open opens an initialized node: its state store and, beside it in
// Dir/blobs, the blob store of its attachments.
func Open(cfg Config) (*Node, error) {
	cfg.defaults()
	if cfg.MaxAttachmentBytes < 0 || cfg.MaxAttachmentBytes > schema.MaxBlobSize {
		return nil, &schema.FieldError{Field: "max-attachment",
			Reason: fmt.Sprintf("%d bytes: must be from 1 to %d", cfg.MaxAttachmentBytes, int64(schema.MaxBlobSize))}
	}
	space := diskspace.New(cfg.Dir, cfg.MinFreeDisk)
	st, err := store.Open(store.Options{Dir: cfg.Dir, EncryptionKey: cfg.EncryptionKey, Logger: cfg.Logger, SkipLogCheck: cfg.SkipLogCheck, Space: space})
	if err != nil {
		return nil, err
	}
	var id store.Identity
	var floor schema.HLC
	err = st.View(func(tx *store.Tx) error {
		var err error
		if id, err = tx.Identity(); err != nil {
			return err
		}
		floor, err = tx.HLCFloor()
		return err
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	if err := checkIdentity(cfg.Wards, &id); err != nil {
		st.Close()
		return nil, err
	}
	log := cfg.Logger.With("node", id.Node, "ward", id.Ward)
	if id.Role == schema.PeerBackup {
		log = cfg.Logger.With("node", id.Node, "role", id.Role)
	}
	blobs, err := blobstore.Open(blobstore.Options{Dir: filepath.Join(cfg.Dir, "blobs"), EncryptionKey: cfg.EncryptionKey, Logger: log, Now: cfg.Now, Space: space})
	if err != nil {
		st.Close()
		return nil, err
	}
	n := &Node{
		store: st, blobs: blobs, space: space, id: id, catalog: cfg.Catalog, calendar: cfg.Calendar, wards: cfg.Wards,
		clock: schema.NewClock(cfg.Now, floor, cfg.MaxDrift), now: cfg.Now,
		log:           log,
		entropy:       ulid.Monotonic(rand.Reader, 0),
		maxAttachment: cfg.MaxAttachmentBytes,
	}
	n.metrics = newMetrics(n)
	st.OnCommit(n.metrics.observeCommit)
	if !n.calendar.Covers(n.now()) {
		n.log.Warn("holiday calendar does not cover this year; due dates count weekends only (pass --holidays FILE)")
	}
	return n, nil
}

// Close closes the state store and the blob store. It is idempotent.
func (n *Node) Close() error {
	err := n.store.Close()
	return errors.Join(err, n.blobs.Close())
}

// Identity returns the node's identity without its private key.
func (n *Node) Identity() store.Identity {
	id := n.id
	id.PrivateKey = nil
	return id
}

// IsBackup reports whether this is a backup office's node: it has no ward
// of its own and serves only the wards whose leases it holds.
func (n *Node) IsBackup() bool { return n.id.Role == schema.PeerBackup }

// role is the node's certificate role as the lease rules see it (nodes
// initialized before roles existed are ward nodes).
func (n *Node) role() schema.PeerRole {
	if n.id.Role == "" {
		return schema.PeerWard
	}
	return n.id.Role
}

// Store exposes the store to the layers above (replication, benchmarks).
func (n *Node) Store() *store.Store { return n.store }

// Blobs exposes the blob store of attachments to the layers above
// (replication/blob). It decides nothing about who may read a blob.
func (n *Node) Blobs() *blobstore.Store { return n.blobs }

// MaxAttachmentBytes is the upload limit of one attachment.
func (n *Node) MaxAttachmentBytes() int64 { return n.maxAttachment }

// Registry returns the node's Prometheus registry.
func (n *Node) Registry() *prometheus.Registry { return n.metrics.reg }

// Catalog returns the procedure catalog in use.
func (n *Node) Catalog() *schema.Catalog { return n.catalog }

// Healthy returns the store's sticky failure, if any.
func (n *Node) Healthy() error { return n.store.Err() }

// DiskLow is the *diskspace.LowError the node's writes get now, or nil.
func (n *Node) DiskLow() error { return n.space.Check() }

// newDossierID mints a ULID from the create op's HLC with monotonic
// entropy. It runs inside the write, on the committer, so IDs increase in
// commit order (the order of receipt numbers) and listing newest first is a
// reverse key scan. The mutex only guards the entropy source.
func (n *Node) newDossierID(h schema.HLC) string {
	n.ulidMu.Lock()
	defer n.ulidMu.Unlock()
	ms := uint64(h.Wall())
	if ms < n.ulidLast {
		// HLC wall time never goes back, but be safe: monotonic entropy
		// needs a non-decreasing timestamp.
		ms = n.ulidLast
	}
	n.ulidLast = ms
	return ulid.MustNew(ms, n.entropy).String()
}

// ValidDossierID reports whether s is a well-formed dossier ID, checked
// before it is used in a key.
func ValidDossierID(s string) bool {
	_, err := ulid.ParseStrict(s)
	return err == nil
}

var errNoDossier = fmt.Errorf("%w: no such dossier", schema.ErrNotFound)

func actorOf(o store.Official) schema.Actor {
	return schema.Actor{ID: o.ID, Name: o.Name, Role: o.Role}
}

// ResetToken issues a new token for an official of a stopped node (for a
// lost admin token: whoever holds the data dir already holds everything in
// it). The old token stops working.
func ResetToken(ctx context.Context, cfg Config, official string) (string, error) {
	cfg.defaults()
	st, err := store.Open(store.Options{Dir: cfg.Dir, EncryptionKey: cfg.EncryptionKey, Logger: cfg.Logger})
	if err != nil {
		return "", err
	}
	defer st.Close()
	token, hash := newToken()
	if err := st.Write(ctx, func(tx *store.Tx) error { return tx.ReplaceToken(official, hash) }); err != nil {
		return "", err
	}
	return token, st.Close()
}
