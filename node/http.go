package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wardsync/wardsync/node/httpjson"
	"github.com/wardsync/wardsync/node/store"
	"github.com/wardsync/wardsync/schema"
)

// MaxBodyBytes bounds every request body (413 past it).
const MaxBodyBytes = 1 << 20

// HeaderActiveNode names, on every response, the node serving the ward
// now: after a failover, clerks of a read-only office see where to go.
const HeaderActiveNode = "X-Wardsync-Active-Node"

// Handler returns the node's HTTP API.
func (n *Node) Handler() http.Handler {
	mux := http.NewServeMux()
	route := func(pattern string, h http.Handler) { mux.Handle(pattern, n.instrument(pattern, h)) }
	authed := func(pattern string, h func(http.ResponseWriter, *http.Request, store.Official) error) {
		route(pattern, n.withAuth(h))
	}
	route("GET /healthz", http.HandlerFunc(n.handleHealth))
	route("GET /metrics", promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{}))
	authed("POST /v1/dossiers", n.handleCreate)
	authed("GET /v1/dossiers", n.handleList)
	authed("GET /v1/dossiers/{id}", n.handleGet)
	authed("GET /v1/dossiers/{id}/history", n.handleHistory)
	authed("POST /v1/dossiers/{id}/transitions", n.handleTransition)
	authed("POST /v1/dossiers/{id}/assign", n.handleAssign)
	authed("POST /v1/dossiers/{id}/notes", n.handleNote)
	authed("POST /v1/dossiers/{id}/resolve", n.handleResolve)
	authed("POST /v1/dossiers/{id}/attachments", n.handleAttach)
	authed("GET /v1/dossiers/{id}/attachments", n.handleAttachments)
	authed("GET /v1/dossiers/{id}/attachments/{hash}", n.handleDownload)
	authed("GET /v1/procedures", n.handleProcedures)
	authed("GET /v1/officials", n.handleOfficials)
	authed("POST /v1/officials", n.handleAddOfficial)
	authed("GET /v1/me", n.handleMe)
	authed("GET /v1/stats", n.handleStats)
	authed("GET /v1/wards/{code}/digest", n.handleDigest)
	authed("GET /v1/sync/status", n.handleSyncStatus)
	authed("GET /v1/admin/backup", n.handleBackup)
	authed("POST /v1/admin/linktest", n.handleLinkTest)
	// Anything else is a JSON 404, not the mux's text page.
	route("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpjson.WriteError(w, r, fmt.Errorf("%w: no route %s %s", schema.ErrNotFound, r.Method, r.URL.Path), n.log)
	}))
	return n.withActiveNode(mux)
}

// withActiveNode sets HeaderActiveNode on every response.
func (n *Node) withActiveNode(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if name := n.activeNodeFor(r); name != "" {
			w.Header().Set(HeaderActiveNode, name)
		}
		h.ServeHTTP(w, r)
	})
}

// activeNodeFor is the node serving the ward a request is about: a ward
// node's own ward; for a backup the ward in ?ward=, else its only held
// ward. "" when there is no such ward or it is not known who serves it.
func (n *Node) activeNodeFor(r *http.Request) string {
	ward := n.id.Ward
	if n.IsBackup() {
		ward = r.URL.Query().Get("ward")
		if ward == "" {
			held := n.ServedWards()
			if len(held) != 1 {
				return ""
			}
			ward = held[0]
		}
	}
	if _, ok := n.wards.Lookup(ward); !ok {
		return "" // never a key made of whatever a client sent
	}
	l, _, err := n.Lease(ward)
	if err != nil {
		n.log.Warn("reading a ward lease for a response header", "ward", ward, "err", err)
		return ""
	}
	return n.activeName(&l)
}

// Serve runs the API on addr until ctx ends, then shuts down gracefully.
// ready, if not nil, receives the bound address (useful with port 0).
func (n *Node) Serve(ctx context.Context, addr string, ready func(net.Addr)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	gcCtx, stopGC := context.WithCancel(ctx)
	defer stopGC()
	go n.gcBlobs(gcCtx, blobGCInterval, blobGCGrace)
	srv := &http.Server{
		Handler:           n.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
	}
	if ready != nil {
		ready(ln.Addr())
	}
	n.log.Info("http api listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Let in-flight requests (and their fsyncs) finish before the store closes.
	if err := srv.Shutdown(shutCtx); err != nil {
		return err
	}
	return nil
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (a download
// that waits for the city moves its write deadline).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// instrument counts and times requests and turns a panic into a 500, so no
// panic reaches a user or takes the node down.
func (n *Node) instrument(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p) // deliberate abort of a streamed response
				}
				n.log.Error("panic in handler", "route", route, "panic", p, "stack", string(debug.Stack()))
				httpjson.WriteError(rec, r, fmt.Errorf("internal error"), n.log)
			}
			n.metrics.requests.WithLabelValues(route, strconv.Itoa(rec.code)).Inc()
			n.metrics.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
		}()
		h.ServeHTTP(rec, r)
	})
}

func (n *Node) withAuth(h func(http.ResponseWriter, *http.Request, store.Official) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The auth scheme is case-insensitive (RFC 9110 11.1).
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="wardsync"`)
			httpjson.WriteError(w, r, fmt.Errorf("%w: send Authorization: Bearer TOKEN", schema.ErrUnauthorized), n.log)
			return
		}
		who, err := n.Authenticate(strings.TrimSpace(token))
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="wardsync", error="invalid_token"`)
			httpjson.WriteError(w, r, err, n.log)
			return
		}
		if err := h(w, r, who); err != nil {
			httpjson.WriteError(w, r, err, n.log)
		}
	})
}

// leaseView is one ward's lease as /healthz shows it.
type leaseView struct {
	Ward       string   `json:"ward"`
	ActiveNode string   `json:"active_node"`
	Epoch      uint64   `json:"epoch"`
	Mode       WardMode `json:"mode"`
	Since      string   `json:"since,omitempty"`
	Reason     string   `json:"reason,omitempty"`
	HandbackTo string   `json:"handback_to,omitempty"`
}

// leaseViews are the leases of the wards this node serves, for /healthz.
func (n *Node) leaseViews() ([]leaseView, error) {
	out := []leaseView{}
	wards := n.ServedWards()
	if n.IsBackup() {
		// A backup also shows the wards it knows of but does not hold (a
		// ward handed back: mode not_held, and who serves it now).
		var known []schema.Lease
		err := n.store.View(func(tx *store.Tx) error { var err error; known, err = tx.KnownLeases(); return err })
		if err != nil {
			return nil, err
		}
		for _, l := range known {
			if !slices.Contains(wards, l.Ward) {
				wards = append(wards, l.Ward)
			}
		}
	}
	for _, ward := range wards {
		mode, l, err := n.Mode(ward)
		if err != nil {
			return nil, err
		}
		v := leaseView{Ward: ward, ActiveNode: n.activeName(&l), Epoch: l.Epoch, Mode: mode, Reason: l.Reason, HandbackTo: l.HandbackTo}
		if l.Since != 0 {
			v.Since = localTime(l.Since)
		}
		out = append(out, v)
	}
	return out, nil
}

// handleHealth is GET /healthz. A ward office that is read-only because a
// backup serves its ward is healthy: it says so in its lease's mode.
func (n *Node) handleHealth(w http.ResponseWriter, r *http.Request) {
	body := map[string]any{"status": "ok", "node": n.id.Node, "ward": n.id.Ward, "role": n.role()}
	leases, err := n.leaseViews()
	if err == nil {
		body["leases"] = leases
	}
	if err == nil {
		err = n.Healthy()
	}
	if err != nil {
		body["status"], body["error"] = "storage_failed", err.Error()
		httpjson.WriteJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	if low := n.DiskLow(); low != nil {
		// Not failed: it takes writes again by itself once space is freed.
		body["status"], body["error"] = "disk_full", low.Error()
		httpjson.WriteJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	httpjson.WriteJSON(w, http.StatusOK, body)
}

func (n *Node) handleCreate(w http.ResponseWriter, r *http.Request, who store.Official) error {
	var in schema.NewDossier
	if err := httpjson.DecodeBody(w, r, MaxBodyBytes, &in); err != nil {
		return err
	}
	d, err := n.CreateDossier(r.Context(), who, in)
	if err != nil {
		return err
	}
	v, err := n.viewDossier(&d)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/dossiers/"+d.ID)
	httpjson.WriteJSON(w, http.StatusCreated, v)
	return nil
}

func (n *Node) handleGet(w http.ResponseWriter, r *http.Request, _ store.Official) error {
	d, err := n.Dossier(r.PathValue("id"))
	return n.respondDossier(w, d, err)
}

func (n *Node) handleHistory(w http.ResponseWriter, r *http.Request, _ store.Official) error {
	d, err := n.Dossier(r.PathValue("id"))
	if err != nil {
		return err
	}
	httpjson.WriteJSON(w, http.StatusOK, map[string]any{"id": d.ID, "items": viewHistory(&d)})
	return nil
}

func (n *Node) handleList(w http.ResponseWriter, r *http.Request, _ store.Official) error {
	q := r.URL.Query()
	lq := store.ListQuery{Ward: q.Get("ward"), Status: schema.Status(q.Get("status")), Procedure: q.Get("procedure"),
		Assignee: q.Get("assignee"), Cursor: q.Get("cursor")}
	if lq.Ward != "" {
		if _, ok := n.wards.Lookup(lq.Ward); !ok {
			return &schema.FieldError{Field: "ward", Reason: fmt.Sprintf("unknown ward %q", lq.Ward)}
		}
	}
	if lq.Status != "" && !lq.Status.Valid() {
		return &schema.FieldError{Field: "status", Reason: fmt.Sprintf("unknown status %q", lq.Status)}
	}
	if lq.Procedure != "" {
		if _, ok := n.catalog.Lookup(lq.Procedure); !ok {
			return &schema.FieldError{Field: "procedure", Reason: fmt.Sprintf("unknown procedure %q", lq.Procedure)}
		}
	}
	overdue, err := boolParam(q, "overdue")
	if err != nil {
		return err
	}
	if overdue {
		lq.OverdueAt = n.now().UnixMilli()
	}
	if lq.Conflict, err = boolParam(q, "conflict"); err != nil {
		return err
	}
	if s := q.Get("limit"); s != "" {
		l, err := strconv.Atoi(s)
		if err != nil || l < 1 || l > 500 {
			return &schema.FieldError{Field: "limit", Reason: "must be a number from 1 to 500"}
		}
		lq.Limit = l
	}
	items, next, err := n.List(lq)
	if errors.Is(err, store.ErrBadCursor) {
		return &schema.FieldError{Field: "cursor", Reason: "is not a cursor of this listing (start again without it)"}
	}
	if err != nil {
		return err
	}
	now := n.now().UnixMilli()
	views := make([]DossierView, 0, len(items))
	for i := range items {
		views = append(views, ViewDossier(&items[i], now, false))
	}
	var nc *string
	if next != "" {
		nc = &next
	}
	httpjson.WriteJSON(w, http.StatusOK, map[string]any{"items": views, "next_cursor": nc})
	return nil
}

// boolParam reads an optional true/false query parameter.
func boolParam(q url.Values, name string) (bool, error) {
	switch q.Get(name) {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, &schema.FieldError{Field: name, Reason: "must be true or false"}
}

func (n *Node) handleTransition(w http.ResponseWriter, r *http.Request, who store.Official) error {
	var in struct {
		To   schema.Status `json:"to"`
		Note string        `json:"note"`
	}
	if err := httpjson.DecodeBody(w, r, MaxBodyBytes, &in); err != nil {
		return err
	}
	if in.To == "" {
		return &schema.FieldError{Field: "to", Reason: "is required"}
	}
	d, err := n.Transition(r.Context(), who, r.PathValue("id"), in.To, in.Note)
	return n.respondDossier(w, d, err)
}

func (n *Node) handleAssign(w http.ResponseWriter, r *http.Request, who store.Official) error {
	var in struct {
		Official string `json:"official"`
	}
	if err := httpjson.DecodeBody(w, r, MaxBodyBytes, &in); err != nil {
		return err
	}
	d, err := n.Assign(r.Context(), who, r.PathValue("id"), in.Official)
	return n.respondDossier(w, d, err)
}

func (n *Node) handleNote(w http.ResponseWriter, r *http.Request, who store.Official) error {
	var in struct {
		Text string `json:"text"`
	}
	if err := httpjson.DecodeBody(w, r, MaxBodyBytes, &in); err != nil {
		return err
	}
	d, err := n.Annotate(r.Context(), who, r.PathValue("id"), in.Text)
	return n.respondDossier(w, d, err)
}

func (n *Node) handleResolve(w http.ResponseWriter, r *http.Request, who store.Official) error {
	var in struct {
		Conflict string        `json:"conflict"`
		To       schema.Status `json:"to"`
		Note     string        `json:"note"`
	}
	if err := httpjson.DecodeBody(w, r, MaxBodyBytes, &in); err != nil {
		return err
	}
	d, err := n.Resolve(r.Context(), who, r.PathValue("id"), in.Conflict, in.To, in.Note)
	return n.respondDossier(w, d, err)
}

func (n *Node) respondDossier(w http.ResponseWriter, d schema.Dossier, err error) error {
	if err != nil {
		return err
	}
	v, err := n.viewDossier(&d)
	if err != nil {
		return err
	}
	httpjson.WriteJSON(w, http.StatusOK, v)
	return nil
}

// viewDossier is the full view of a dossier on this node: ViewDossier
// plus, for each attachment, whether it is here and uploaded.
func (n *Node) viewDossier(d *schema.Dossier) (DossierView, error) {
	v := ViewDossier(d, n.now().UnixMilli(), true)
	if len(d.Attachments) > 0 {
		var err error
		if v.Attachments, err = n.attachmentViews(d.Attachments); err != nil {
			return DossierView{}, err
		}
	}
	return v, nil
}

func (n *Node) handleProcedures(w http.ResponseWriter, r *http.Request, _ store.Official) error {
	type item struct {
		Code           string `json:"code"`
		NameVI         string `json:"name_vi"`
		NameEN         string `json:"name_en"`
		ProcessingDays int    `json:"processing_days"`
	}
	items := []item{}
	for _, p := range n.catalog.All() {
		items = append(items, item{p.Code, p.NameVI, p.NameEN, p.ProcessingDays})
	}
	httpjson.WriteJSON(w, http.StatusOK, map[string]any{"items": items})
	return nil
}

func (n *Node) handleOfficials(w http.ResponseWriter, r *http.Request, who store.Official) error {
	if who.Role != schema.RoleAdmin {
		return fmt.Errorf("%w: only an admin lists officials", schema.ErrForbidden)
	}
	all, err := n.Officials()
	if err != nil {
		return err
	}
	items := make([]officialView, 0, len(all))
	for _, o := range all {
		items = append(items, viewOfficial(o, ""))
	}
	httpjson.WriteJSON(w, http.StatusOK, map[string]any{"items": items})
	return nil
}

func (n *Node) handleAddOfficial(w http.ResponseWriter, r *http.Request, who store.Official) error {
	if who.Role != schema.RoleAdmin {
		// Checked before the body is read, so a clerk learns nothing else.
		return fmt.Errorf("%w: only an admin adds officials", schema.ErrForbidden)
	}
	var in struct {
		ID   string      `json:"id"`
		Name string      `json:"name"`
		Role schema.Role `json:"role"`
	}
	if err := httpjson.DecodeBody(w, r, MaxBodyBytes, &in); err != nil {
		return err
	}
	o, token, err := n.AddOfficial(r.Context(), who, in.ID, in.Name, in.Role)
	if err != nil {
		return err
	}
	httpjson.WriteJSON(w, http.StatusCreated, viewOfficial(o, token))
	return nil
}

func (n *Node) handleMe(w http.ResponseWriter, r *http.Request, who store.Official) error {
	httpjson.WriteJSON(w, http.StatusOK, map[string]any{"official": viewOfficial(who, ""), "node": n.id.Node, "ward": n.id.Ward, "role": n.role()})
	return nil
}

func (n *Node) handleStats(w http.ResponseWriter, r *http.Request, _ store.Official) error {
	ward := r.URL.Query().Get("ward")
	if ward != "" {
		if _, ok := n.wards.Lookup(ward); !ok {
			return &schema.FieldError{Field: "ward", Reason: fmt.Sprintf("unknown ward %q", ward)}
		}
	} else {
		var err error
		if ward, err = n.defaultWard("?ward=CODE"); err != nil {
			return err
		}
	}
	st, overdue, err := n.Stats(ward)
	if err != nil {
		return err
	}
	type procStat struct {
		Code       string   `json:"code"`
		Decided    int64    `json:"decided"`
		OnTime     int64    `json:"on_time"`
		OnTimeRate *float64 `json:"on_time_rate"`
	}
	procs := []procStat{}
	for _, p := range n.catalog.All() {
		ps := st.ByProcedure[p.Code]
		s := procStat{Code: p.Code, Decided: ps.Decided, OnTime: ps.OnTime}
		if ps.Decided > 0 {
			rate := float64(ps.OnTime) / float64(ps.Decided)
			s.OnTimeRate = &rate
		}
		procs = append(procs, s)
	}
	var total int64
	for _, c := range st.ByStatus {
		total += c
	}
	httpjson.WriteJSON(w, http.StatusOK, map[string]any{
		"ward": ward, "total": total, "by_status": st.ByStatus, "overdue": overdue, "procedures": procs,
	})
	return nil
}

// handleDigest is GET /v1/wards/{code}/digest: the ward's partition as
// this node holds it (counts and a state hash), so a failover drill can
// compare replicas.
func (n *Node) handleDigest(w http.ResponseWriter, r *http.Request, _ store.Official) error {
	ward := r.PathValue("code")
	if _, ok := n.wards.Lookup(ward); !ok {
		return fmt.Errorf("%w: no ward %q in the ward registry", schema.ErrNotFound, ward)
	}
	var dg store.Digest
	err := n.store.View(func(tx *store.Tx) error {
		var err error
		dg, err = tx.WardDigest(ward)
		return err
	})
	if err != nil {
		return err
	}
	httpjson.WriteJSON(w, http.StatusOK, dg)
	return nil
}

// handleBackup streams a full backup of the node's store (admin only).
func (n *Node) handleBackup(w http.ResponseWriter, r *http.Request, who store.Official) error {
	if who.Role != schema.RoleAdmin {
		return fmt.Errorf("%w: only an admin takes backups", schema.ErrForbidden)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-%s.wsbak"`, n.id.Node, n.now().UTC().Format("20060102T150405Z")))
	if _, err := n.store.Backup(w); err != nil {
		// Headers are gone; the client sees a truncated stream and must
		// not keep it (the CLI checks by restoring into a temp dir).
		n.log.Error("backup failed mid-stream", "err", err)
		panic(http.ErrAbortHandler)
	}
	n.log.Info("backup taken", "by", who.ID)
	return nil
}
