package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"sync"
	"time"
)

// What the clients do, and what they were told.
//
// Every write carries a tag unique in the run: a create's applicant ID
// number, the text of a note, the note of a transition or a resolve, the
// name of an attachment. A replica's history event is matched back to the
// request that made it by its tag, so the checker knows, for every op it
// finds, whether the client was told it was saved (acknowledged), told it
// was not (refused: it must not be there), or never told (unknown: it may
// be there, once).

type official struct{ id, role, token string }

// request is one write a client sent.
type request struct {
	node    string // where it was sent (a member ID for portal submissions)
	ward    string
	kind    string // create, transition, note, attach, resolve
	tag     string
	dossier string // the dossier (a create's, once acknowledged)
	outcome outcome
	op      string    // the op ID, when acknowledged
	at      time.Time // when the answer came
	disk    string    // the node whose disk was full when it was acknowledged
}

// dossierRec is one acknowledged dossier.
type dossierRec struct {
	id, ward, receipt, node string
	ops                     []*request // acknowledged ops on it, its create first
}

type ledger struct {
	mu        sync.Mutex
	officials map[string][]official
	byTag     map[string]*request // a write's tag → the write
	dossiers  map[string]*dossierRec
	pool      map[string][]string // ward → acknowledged dossiers (for the clients to pick from)
	status    map[string]string   // dossier → status last seen
	acks      map[string]int      // by kind
	errs      map[string]int      // by answer
	outcomes  [4]int
	diskAcks  int
	diskErrs  int
}

func newLedger() *ledger {
	return &ledger{officials: map[string][]official{}, byTag: map[string]*request{}, dossiers: map[string]*dossierRec{},
		pool: map[string][]string{}, status: map[string]string{}, acks: map[string]int{}, errs: map[string]int{}}
}

func (l *ledger) addOfficial(node string, o official) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.officials[node] = append(l.officials[node], o)
}

// record files a write's outcome. d is the answer's dossier when it has
// one. It returns the write's op ID ("" if not acknowledged or not found).
func (l *ledger) record(req *request, o outcome, class string, d *dossier, opID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	req.outcome = o
	req.at = time.Now()
	l.byTag[req.tag] = req
	l.outcomes[o]++
	if o != acked {
		l.errs[class]++
		if req.disk != "" {
			l.diskErrs++
		}
		return
	}
	l.acks[req.kind]++
	if req.disk != "" {
		l.diskAcks++
	}
	if d != nil && opID == "" {
		for _, ev := range d.History {
			if (req.kind == "create" && ev.Kind == "create") || (req.kind != "create" && ev.Text == req.tag) {
				opID = ev.Op
			}
		}
	}
	req.op = opID
	if d != nil && d.Status != "" {
		l.status[d.ID] = d.Status
	}
	if req.kind == "create" && d != nil {
		req.dossier = d.ID
		l.dossiers[d.ID] = &dossierRec{id: d.ID, ward: req.ward, receipt: d.ReceiptNo, node: req.node, ops: []*request{req}}
		l.pool[req.ward] = append(l.pool[req.ward], d.ID)
		return
	}
	if rec := l.dossiers[req.dossier]; rec != nil {
		rec.ops = append(rec.ops, req)
	}
}

// pick returns one of the ward's recent acknowledged dossiers and its
// last seen status.
func (l *ledger) pick(rng *rand.Rand, ward string) (string, string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.pool[ward]
	if len(p) == 0 {
		return "", "", false
	}
	recent := p[max(0, len(p)-40):]
	id := recent[rng.IntN(len(recent))]
	return id, l.status[id], true
}

// fill copies the counts into s.
func (l *ledger) fill(s *Summary) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s.Acked = l.outcomes[acked]
	s.Refused = l.outcomes[refused]
	s.Failed = l.outcomes[failed]
	s.Unknown = l.outcomes[unknown]
	s.AckedByKind = map[string]int{}
	for k, n := range l.acks {
		s.AckedByKind[k] = n
	}
	s.Errors = map[string]int{}
	for k, n := range l.errs {
		s.Errors[k] = n
	}
	s.Dossiers = len(l.dossiers)
	s.DiskFullAcks, s.DiskFullErrors = l.diskAcks, l.diskErrs
}

var procedures = []string{"certified-copy", "birth-registration", "residence-confirmation", "signature-certification", "business-household-registration"}

// nextStatus picks a move from status for an official of role (or "" to
// skip): mostly forward through the workflow, sometimes a withdrawal.
func nextStatus(rng *rand.Rand, status, role string) string {
	var to []string
	switch status {
	case "received":
		to = []string{"in_review", "in_review", "in_review", "withdrawn"}
	case "in_review":
		to = []string{"supplement_requested"}
		if role == "head" {
			to = append(to, "approved", "approved", "rejected")
		}
	case "supplement_requested":
		to = []string{"in_review", "in_review", "withdrawn"}
	case "approved", "rejected":
		to = []string{"returned"}
	default:
		return ""
	}
	return to[rng.IntN(len(to))]
}

// startClients starts the clients: at each ward office, its officials;
// at the backup office, a head for each ward it may take (working on the
// ward whenever it holds it); at the city, one portal client.
func (d *driver) startClients(ctx context.Context, wg *sync.WaitGroup) {
	n := 0
	for _, id := range d.order {
		o := d.offices[id]
		d.led.mu.Lock()
		offs := slices.Clone(d.led.officials[id])
		d.led.mu.Unlock()
		for i, off := range offs {
			ward := o.ward
			if ward == "" {
				ward = backupWards[i%len(backupWards)]
			}
			idx := n
			n++
			wg.Go(func() { d.officeClient(ctx, o, ward, off, idx) })
		}
	}
	wg.Go(func() { d.portalClient(ctx, n) })
}

// officeClient works at office o on ward until ctx ends.
func (d *driver) officeClient(ctx context.Context, o *office, ward string, off official, idx int) {
	rng := rand.New(rand.NewPCG(d.cfg.Seed, uint64(idx)+1000))
	api := d.officeAPI(o, off.token)
	name := fmt.Sprintf("%s-%s-%s", o.id, off.id, ward)
	// Requests are not cancelled with ctx: a write cut short by the
	// driver would count as unknown for no reason.
	rctx := context.WithoutCancel(ctx)
	for n := 0; ctx.Err() == nil; n++ {
		tag := fmt.Sprintf("%s-%d", name, n)
		id, status, have := d.led.pick(rng, ward)
		p := rng.IntN(100)
		switch {
		case !have || p < 28:
			d.create(rctx, api, o.id, ward, fmt.Sprintf("0%02d%09d", idx, n), rng)
		case p < 58:
			to := nextStatus(rng, status, off.role)
			if to == "" {
				to = "in_review" // refused if it is not a move from where the dossier is
			}
			d.write(rctx, api, o.id, ward, "transition", id, tag, "/v1/dossiers/"+id+"/transitions", map[string]string{"to": to, "note": tag})
		case p < 76:
			d.write(rctx, api, o.id, ward, "note", id, tag, "/v1/dossiers/"+id+"/notes", map[string]string{"text": tag})
		case p < 88:
			pdf := make([]byte, 1024+rng.IntN(6<<10))
			for i := range pdf {
				pdf[i] = byte(rng.Uint32())
			}
			copy(pdf, "%PDF-1.7\n")
			name := tag + ".pdf"
			d.write(rctx, api, o.id, ward, "attach", id, name, "/v1/dossiers/"+id+"/attachments?name="+url.QueryEscape(name), pdf)
		case off.role == "head":
			d.resolve(rctx, api, o.id, ward, tag)
		default:
			d.write(rctx, api, o.id, ward, "note", id, tag, "/v1/dossiers/"+id+"/notes", map[string]string{"text": tag})
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(30+rng.IntN(70)) * time.Millisecond):
		}
	}
}

// diskFull names the node among nodes whose disk is full right now ("").
func (d *driver) diskFull(nodes ...string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range d.windows {
		if w.to.IsZero() && slices.Contains(nodes, w.node) {
			return w.node
		}
	}
	return ""
}

func (d *driver) create(ctx context.Context, api *apiClient, node, ward, idNumber string, rng *rand.Rand) {
	body := map[string]any{"procedure": procedures[rng.IntN(len(procedures))], "ward": ward,
		"applicant": map[string]string{"name": "Công dân " + idNumber[len(idNumber)-6:], "id_number": idNumber}}
	req := &request{node: node, ward: ward, kind: "create", tag: idNumber}
	r, err := api.do(ctx, "POST", "/v1/dossiers", body)
	d.file(req, r, err)
}

// write sends one change to a dossier and files its outcome.
func (d *driver) write(ctx context.Context, api *apiClient, node, ward, kind, id, tag, path string, body any) {
	req := &request{node: node, ward: ward, kind: kind, tag: tag, dossier: id}
	r, err := api.do(ctx, "POST", path, body)
	d.file(req, r, err)
}

// file records the answer to req.
func (d *driver) file(req *request, r reply, err error) {
	o := classify(r, err)
	req.disk = d.diskFull(req.node)
	if o != acked {
		d.led.record(req, o, errClass(r, err), nil, "")
		return
	}
	if req.kind == "attach" {
		var a struct {
			Op string `json:"op"`
		}
		_ = json.Unmarshal(r.body, &a)
		d.led.record(req, o, "", nil, a.Op)
		if a.Op == "" {
			d.note("attach %s acknowledged without an op: %.200s", req.tag, r.body)
		}
		return
	}
	var dd dossier
	if jerr := json.Unmarshal(r.body, &dd); jerr != nil || dd.ID == "" {
		d.note("%s %s acknowledged with an unreadable answer: %.200s", req.kind, req.tag, r.body)
	}
	d.led.record(req, o, "", &dd, "")
	if req.op == "" {
		d.note("%s %s acknowledged, but its op is not in the answer's history", req.kind, req.tag)
	}
}

// resolve settles the first open conflict of ward it finds at the office.
func (d *driver) resolve(ctx context.Context, api *apiClient, node, ward, tag string) {
	var page struct {
		Items []dossier `json:"items"`
	}
	if api.getJSON(ctx, "/v1/dossiers?conflict=true&limit=5&ward="+ward, &page) != nil || len(page.Items) == 0 {
		return
	}
	var full dossier
	id := page.Items[0].ID
	if api.getJSON(ctx, "/v1/dossiers/"+id, &full) != nil || len(full.Conflicts) == 0 {
		return
	}
	d.write(ctx, api, node, ward, "resolve", id, tag, "/v1/dossiers/"+id+"/resolve",
		map[string]string{"conflict": full.Conflicts[0].Op, "note": tag})
}

// portalClient submits dossiers for every ward at random members (the
// city's own acknowledgements) until ctx ends.
func (d *driver) portalClient(ctx context.Context, idx int) {
	rng := rand.New(rand.NewPCG(d.cfg.Seed, uint64(idx)+1000))
	rctx := context.WithoutCancel(ctx)
	for n := 0; ctx.Err() == nil; n++ {
		ms := d.currentMembers()
		m := ms[rng.IntN(len(ms))]
		ward := wardCodes[rng.IntN(len(wardCodes))]
		idNumber := fmt.Sprintf("0%02d%09d", idx, n)
		body := map[string]any{"procedure": procedures[rng.IntN(len(procedures))], "ward": ward,
			"applicant": map[string]string{"name": "Công dân cổng " + idNumber[len(idNumber)-6:], "id_number": idNumber}}
		req := &request{node: m.id, ward: ward, kind: "create", tag: idNumber}
		api := &apiClient{base: func() string { return m.p.url }, hc: d.portal}
		r, err := api.do(rctx, "POST", "/v1/dossiers", body)
		d.file(req, r, err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(150+rng.IntN(250)) * time.Millisecond):
		}
	}
}
