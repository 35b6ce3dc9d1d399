package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wardsync/wardsync/node"
	"github.com/wardsync/wardsync/node/httpjson"
	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/replication/transport"
	"github.com/wardsync/wardsync/schema"
)

// The city's HTTPS API. TLS is the city CA's: the server presents the
// member's certificate, and clients present theirs (VerifyClientCertIfGiven,
// so /healthz and /metrics work without one). Roles come from the client
// certificate: admin for cluster operations, portal (or admin) for intake.

// MaxBodyBytes bounds request bodies, as on the ward.
const MaxBodyBytes = 1 << 20

// Handler returns the city API.
func (c *Cluster) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", c.handleHealth)
	mux.Handle("GET /metrics", promhttp.HandlerFor(c.cfg.Registry, promhttp.HandlerOpts{}))
	c.route(mux, "GET /v1/cluster", c.handleCluster, schema.PeerAdmin, schema.PeerPortal)
	c.route(mux, "POST /v1/cluster/members", c.handleJoin, schema.PeerAdmin, schema.PeerCity)
	c.route(mux, "DELETE /v1/cluster/members/{id}", c.handleRemove, schema.PeerAdmin)
	c.route(mux, "POST /v1/cluster/leadership", c.handleTransfer, schema.PeerAdmin)
	c.route(mux, "POST /v1/dossiers", c.handlePortal, schema.PeerPortal, schema.PeerAdmin)
	c.route(mux, "GET /v1/dossiers/{id}", c.handleGet, schema.PeerPortal, schema.PeerAdmin)
	c.route(mux, "GET /v1/wards/{code}/dossiers", c.handleWardList, schema.PeerPortal, schema.PeerAdmin)
	c.route(mux, "GET /v1/wards", c.handleWards, schema.PeerAdmin)
	c.route(mux, "GET /v1/wards/{code}/lease", c.handleLease, schema.PeerAdmin)
	c.route(mux, "GET /v1/wards/{code}/lease/history", c.handleLeaseHistory, schema.PeerAdmin)
	c.route(mux, "POST /v1/wards/{code}/lease/failover", c.handleLeaseChange(LeaseFailover), schema.PeerAdmin)
	c.route(mux, "POST /v1/wards/{code}/lease/handback", c.handleLeaseChange(LeaseHandback), schema.PeerAdmin)
	c.route(mux, "GET /v1/wards/{code}/digest", c.handleDigest, schema.PeerAdmin)
	for _, r := range c.routes {
		c.route(mux, r.pattern, r.h, r.roles...)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpjson.WriteError(w, r, fmt.Errorf("%w: no route %s %s", schema.ErrNotFound, r.Method, r.URL.Path), c.log)
	})
	return mux
}

type apiHandler func(w http.ResponseWriter, r *http.Request, who schema.PeerIdentity) error

// APIHandler serves a city API route for a verified client certificate.
type APIHandler = apiHandler

type extraRoute struct {
	pattern string
	h       apiHandler
	roles   []schema.PeerRole
}

// Route adds a route to the city API (for example the blob layer's), open
// to client certificates of roles. Call before Handler.
func (c *Cluster) Route(pattern string, h APIHandler, roles ...schema.PeerRole) {
	c.routes = append(c.routes, extraRoute{pattern, h, roles})
}

// route requires a verified client certificate of one of roles.
func (c *Cluster) route(mux *http.ServeMux, pattern string, h apiHandler, roles ...schema.PeerRole) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				c.log.Error("panic in city handler", "route", pattern, "panic", p)
				httpjson.WriteError(w, r, errors.New("internal error"), c.log)
			}
		}()
		who, err := peerOfRequest(r)
		if err != nil {
			httpjson.WriteError(w, r, err, c.log)
			return
		}
		allowed := false
		for _, role := range roles {
			allowed = allowed || who.Role == role
		}
		if !allowed {
			httpjson.WriteError(w, r, fmt.Errorf("%w: a %s certificate may not call %s", schema.ErrForbidden, who.Role, pattern), c.log)
			return
		}
		if err := h(w, r, who); err != nil {
			httpjson.WriteError(w, r, err, c.log)
		}
	})
}

func peerOfRequest(r *http.Request) (schema.PeerIdentity, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return schema.PeerIdentity{}, fmt.Errorf("%w: present a client certificate issued by the city CA", schema.ErrUnauthorized)
	}
	p, err := transport.PeerOf(r.TLS.VerifiedChains[0][0])
	if err != nil {
		return schema.PeerIdentity{}, fmt.Errorf("%w: %v", schema.ErrUnauthorized, err)
	}
	return p, nil
}

func (c *Cluster) handleHealth(w http.ResponseWriter, r *http.Request) {
	leader, _ := c.Leader()
	body := map[string]any{"status": "ok", "member": c.cfg.NodeID, "state": c.raft.State().String(), "leader": leader}
	status := http.StatusOK
	if leader == "" {
		body["status"] = "no_leader"
		status = http.StatusServiceUnavailable
	}
	if err := c.DiskLow(); err != nil {
		body["status"], body["error"] = "disk_full", err.Error()
		status = http.StatusServiceUnavailable
	}
	if err := c.st.Err(); err != nil {
		body["status"], body["error"] = "storage_failed", err.Error()
		status = http.StatusServiceUnavailable
	}
	httpjson.WriteJSON(w, status, body)
}

type memberJSON struct {
	ID           string  `json:"id"`
	Address      string  `json:"address"`
	Suffrage     string  `json:"suffrage"`
	State        string  `json:"state,omitempty"`
	AppliedIndex *uint64 `json:"applied_index"`
	Error        string  `json:"error,omitempty"`
}

func (c *Cluster) handleCluster(w http.ResponseWriter, r *http.Request, _ schema.PeerIdentity) error {
	cf := c.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return err
	}
	leader, _ := c.Leader()
	members := []memberJSON{}
	for _, s := range cf.Configuration().Servers {
		m := memberJSON{ID: string(s.ID), Address: string(s.Address), Suffrage: s.Suffrage.String()}
		var st MemberStatus
		var err error
		if string(s.ID) == c.cfg.NodeID {
			st = c.Status()
		} else {
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			st, err = c.MemberStatusOf(ctx, string(s.Address))
			cancel()
		}
		if err != nil {
			m.Error = "unreachable: " + err.Error()
		} else {
			idx := st.AppliedIndex
			m.AppliedIndex, m.State = &idx, st.State
		}
		members = append(members, m)
	}
	httpjson.WriteJSON(w, http.StatusOK, map[string]any{
		"leader": leader, "members": members, "answered_by": c.cfg.NodeID,
		"commit_index": c.raft.CommitIndex(), "applied_index": c.raft.AppliedIndex(),
	})
	return nil
}

func (c *Cluster) handleJoin(w http.ResponseWriter, r *http.Request, who schema.PeerIdentity) error {
	var in struct {
		ID      string `json:"id"`
		Address string `json:"address"`
	}
	if err := httpjson.DecodeBody(w, r, MaxBodyBytes, &in); err != nil {
		return err
	}
	if err := (schema.PeerIdentity{Role: schema.PeerCity, Node: in.ID}).Validate(); err != nil {
		return &schema.FieldError{Field: "id", Reason: err.Error()}
	}
	if _, err := resolveUDP(in.Address); err != nil {
		return &schema.FieldError{Field: "address", Reason: err.Error()}
	}
	// A member may ask to join itself; anyone else needs an admin.
	if who.Role == schema.PeerCity && who.Node != in.ID {
		return fmt.Errorf("%w: a city member may only join itself", schema.ErrForbidden)
	}
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	if err := c.AddVoter(ctx, in.ID, in.Address); err != nil {
		return unavailable(err)
	}
	c.log.Info("member added", "id", in.ID, "address", in.Address, "by", who.Node)
	httpjson.WriteJSON(w, http.StatusOK, map[string]string{"added": in.ID})
	return nil
}

func (c *Cluster) handleRemove(w http.ResponseWriter, r *http.Request, who schema.PeerIdentity) error {
	id := r.PathValue("id")
	if !c.isMember(id) {
		return fmt.Errorf("%w: no member %q", schema.ErrNotFound, id)
	}
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	if err := c.RemoveServer(ctx, id); err != nil {
		return unavailable(err)
	}
	c.log.Info("member removed", "id", id, "by", who.Node)
	httpjson.WriteJSON(w, http.StatusOK, map[string]string{"removed": id})
	return nil
}

func (c *Cluster) handleTransfer(w http.ResponseWriter, r *http.Request, who schema.PeerIdentity) error {
	var in struct {
		To string `json:"to"`
	}
	if err := httpjson.DecodeBody(w, r, MaxBodyBytes, &in); err != nil {
		return err
	}
	if in.To != "" && !c.isMember(in.To) {
		return &schema.FieldError{Field: "to", Reason: fmt.Sprintf("no member %q", in.To)}
	}
	if in.To == "" {
		// Raft would refuse ("cannot find peer"), and a 503 would tell the
		// caller to retry what can never work.
		if n, err := c.Voters(); err == nil && n < 2 {
			return fmt.Errorf("%w: the cluster has no other voting member to hand the leadership to", schema.ErrConflict)
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	if err := c.TransferLeadership(ctx, in.To); err != nil {
		return unavailable(err)
	}
	leader, _ := c.Leader()
	httpjson.WriteJSON(w, http.StatusOK, map[string]string{"leader": leader})
	return nil
}

func (c *Cluster) isMember(id string) bool {
	cf := c.raft.GetConfiguration()
	if cf.Error() != nil {
		return false
	}
	for _, s := range cf.Configuration().Servers {
		if s.ID == raft.ServerID(id) {
			return true
		}
	}
	return false
}

// handlePortal takes a dossier submitted online. The member that receives
// it fixes the ID, clock and due date; the FSM (through Raft) assigns the
// city-origin seq and receipt number.
func (c *Cluster) handlePortal(w http.ResponseWriter, r *http.Request, who schema.PeerIdentity) error {
	var in schema.NewDossier
	if err := httpjson.DecodeBody(w, r, MaxBodyBytes, &in); err != nil {
		return err
	}
	in.Normalize()
	if in.Ward == "" {
		return &schema.FieldError{Field: "ward", Reason: "is required for a portal submission"}
	}
	if err := in.Validate(c.cfg.Catalog, c.cfg.Wards); err != nil {
		return err
	}
	proc, _ := c.cfg.Catalog.Lookup(in.Procedure)
	// Bytes bound an op: a form within the character limits can still
	// encode too large to sync (see schema.Op.CheckShape).
	if n := len(schema.MarshalBody(schema.CreateBody{Procedure: in.Procedure, Applicant: in.Applicant, Fields: in.Fields})); n > schema.MaxOpBody-1024 {
		return fmt.Errorf("%w: the dossier encodes to %d bytes, limit %d", schema.ErrTooLarge, n, schema.MaxOpBody-1024)
	}
	hlc := c.clock.Now()
	received := hlc.Time().In(schema.CityZone)
	cmd := Command{Kind: KindPortal, Portal: &PortalCmd{
		Dossier: c.NewDossierID(), Ward: in.Ward, Procedure: in.Procedure, Applicant: in.Applicant, Fields: in.Fields,
		HLC: hlc, ReceivedAt: received.UnixMilli(), DueAt: c.cfg.Calendar.DueAt(received, proc.ProcessingDays).UnixMilli(),
		Actor: schema.Actor{ID: who.Node, Name: who.Node, Role: schema.RoleSystem},
	}}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	res, err := c.Propose(ctx, cmd)
	// Right after the first election the new leader is still giving the
	// city origin its key; wait for it rather than fail the citizen.
	for err == nil && res.Code == "not_initialized" && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
		res, err = c.Propose(ctx, cmd)
	}
	if errors.Is(err, schema.ErrOutcomeUnknown) {
		// The dossier's ID is how the portal finds out.
		return fmt.Errorf("dossier %s (look it up on the leader: GET /v1/dossiers/%[1]s): %w", cmd.Portal.Dossier, err)
	}
	if err != nil {
		return unavailable(err)
	}
	if err := resultErr(res); err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/dossiers/"+res.Dossier.ID)
	httpjson.WriteJSON(w, http.StatusCreated, node.ViewDossier(res.Dossier, c.cfg.Now().UnixMilli(), true))
	return nil
}

func resultErr(res Result) error {
	switch res.Code {
	case "":
		if res.Err != "" {
			return errors.New(res.Err)
		}
		return nil
	case "not_initialized":
		return fmt.Errorf("%w: %s", schema.ErrUnavailable, res.Err)
	case "conflict":
		return fmt.Errorf("%w: %s", schema.ErrConflict, res.Err)
	case "forbidden", "epoch":
		return fmt.Errorf("%w: %s", schema.ErrForbidden, res.Err)
	case "not_found":
		return fmt.Errorf("%w: %s", schema.ErrNotFound, res.Err)
	}
	return fmt.Errorf("%w: %s", schema.ErrInvalid, res.Err)
}

// unavailable marks cluster-state errors (no leader, no quorum) so the
// client sees 503 and retries, rather than a 500.
func unavailable(err error) error {
	if errors.Is(err, schema.ErrInvalid) || errors.Is(err, schema.ErrNotFound) || errors.Is(err, schema.ErrConflict) || errors.Is(err, schema.ErrForbidden) ||
		errors.Is(err, schema.ErrOutcomeUnknown) {
		return err
	}
	return fmt.Errorf("%w: %v", schema.ErrUnavailable, err)
}

func (c *Cluster) handleGet(w http.ResponseWriter, r *http.Request, _ schema.PeerIdentity) error {
	id := r.PathValue("id")
	if !node.ValidDossierID(id) {
		return fmt.Errorf("%w: no such dossier", schema.ErrNotFound)
	}
	var d schema.Dossier
	var ok bool
	err := c.st.View(func(tx *store.Tx) error {
		var err error
		d, ok, err = tx.Dossier(id)
		return err
	})
	if err != nil {
		return err
	}
	if !ok || !d.Created() {
		return fmt.Errorf("%w: no such dossier on member %s", schema.ErrNotFound, c.cfg.NodeID)
	}
	httpjson.WriteJSON(w, http.StatusOK, node.ViewDossier(&d, c.cfg.Now().UnixMilli(), true))
	return nil
}

func (c *Cluster) handleWardList(w http.ResponseWriter, r *http.Request, _ schema.PeerIdentity) error {
	ward := r.PathValue("code")
	if _, ok := c.cfg.Wards.Lookup(ward); !ok {
		return fmt.Errorf("%w: no ward %q", schema.ErrNotFound, ward)
	}
	q := r.URL.Query()
	lq := store.ListQuery{Ward: ward, Status: schema.Status(q.Get("status")), Cursor: q.Get("cursor"), Limit: 50}
	if lq.Status != "" && !lq.Status.Valid() {
		return &schema.FieldError{Field: "status", Reason: fmt.Sprintf("unknown status %q", lq.Status)}
	}
	if s := q.Get("conflict"); s != "" {
		v, err := strconv.ParseBool(s)
		if err != nil {
			return &schema.FieldError{Field: "conflict", Reason: "must be true or false"}
		}
		lq.Conflict = v
	}
	if s := q.Get("limit"); s != "" {
		l, err := strconv.Atoi(s)
		if err != nil || l < 1 || l > 500 {
			return &schema.FieldError{Field: "limit", Reason: "must be a number from 1 to 500"}
		}
		lq.Limit = l
	}
	var items []schema.Dossier
	var next string
	err := c.st.View(func(tx *store.Tx) error {
		var err error
		items, next, err = tx.ListDossiers(lq)
		return err
	})
	if err != nil {
		if errors.Is(err, store.ErrBadCursor) {
			return &schema.FieldError{Field: "cursor", Reason: err.Error()}
		}
		return err
	}
	now := c.cfg.Now().UnixMilli()
	views := make([]node.DossierView, 0, len(items))
	for i := range items {
		views = append(views, node.ViewDossier(&items[i], now, false))
	}
	var nc *string
	if next != "" {
		nc = &next
	}
	httpjson.WriteJSON(w, http.StatusOK, map[string]any{"items": views, "next_cursor": nc})
	return nil
}

func (c *Cluster) handleWards(w http.ResponseWriter, r *http.Request, _ schema.PeerIdentity) error {
	if c.wards == nil {
		return fmt.Errorf("%w: sync is not running on this member", schema.ErrNotFound)
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	v, err := c.wards(ctx)
	if err != nil {
		return err
	}
	httpjson.WriteJSON(w, http.StatusOK, v)
	return nil
}
