package chaos

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// The checker, run once every fault has healed and the clients stopped.

// replica is one holder of a ward, as the checker reads it.
type replica struct {
	name     string
	api      *apiClient
	listPath string
	digest   func(context.Context) (digest, error)
}

// replicas are the holders of ward now: its office's node, every member,
// and the backup office if it holds the ward (a backup follows a ward
// only while it holds its lease, and may not read it after the handback).
func (d *driver) replicas(ward string, backupHolds bool) []replica {
	var out []replica
	var offices []*office
	for _, id := range d.order {
		if o := d.offices[id]; o.ward == ward || (o.ward == "" && backupHolds) {
			offices = append(offices, o)
		}
	}
	for _, o := range offices {
		api := d.officeAPI(o, o.token)
		out = append(out, replica{name: o.id, api: api, listPath: "/v1/dossiers?ward=" + ward,
			digest: func(ctx context.Context) (digest, error) {
				var dg digest
				err := api.getJSON(ctx, "/v1/wards/"+ward+"/digest", &dg)
				return dg, err
			}})
	}
	for _, m := range d.currentMembers() {
		api := d.cityAPI(m)
		out = append(out, replica{name: m.id, api: api, listPath: "/v1/wards/" + ward + "/dossiers",
			digest: func(ctx context.Context) (digest, error) {
				var v struct {
					Digest digest `json:"digest"`
				}
				err := api.getJSON(ctx, "/v1/wards/"+ward+"/digest", &v)
				return v.Digest, err
			}})
	}
	return out
}

// check runs every check and records each violation.
func (d *driver) check(ctx context.Context) {
	// Where the backup wards are now: a pending handback is waited out
	// (the backup releases once it has pushed everything).
	holds := map[string]bool{}
	for _, w := range backupWards {
		client := d.lease.client()
		var l leaseJSON
		err := d.eventually(ctx, "the lease of "+w+" settled", d.cfg.Timeout, func() error {
			for _, m := range d.currentMembers() {
				var ok bool
				if l, ok = d.readLease(ctx, w, m, client); ok {
					if l.HandbackTo != "" {
						return fmt.Errorf("a handback to %s is pending (epoch %d, held by %s)", l.HandbackTo, l.Epoch, l.Active)
					}
					return nil
				}
			}
			return fmt.Errorf("no member answered")
		})
		if err != nil {
			d.violation("%v", err)
		}
		holds[w] = l.Epoch > 0 && l.Active == backupID
		// The final reads, through every member.
		for _, m := range d.currentMembers() {
			d.readLease(ctx, w, m, client)
		}
	}
	d.event("final leases: %v (true: the backup office holds it)", holds)

	// 1. Every office has pushed everything it took (ops and scans: an
	// attach op is held at the city, out of every digest, until its scan
	// is uploaded), and every ward's replicas converge to the same digest.
	deadline := time.Now().Add(d.cfg.Timeout)
	d.waitDelivered(ctx, deadline)
	reps := map[string][]replica{}
	for _, w := range wardCodes {
		reps[w] = d.replicas(w, holds[w])
		t0 := time.Now()
		rows, err := d.converge(ctx, reps[w], deadline)
		if err != nil {
			d.violation("ward %s: the replicas did not converge within %s of the heal: %v", w, d.cfg.Timeout, err)
		} else {
			d.event("ward %s: %d replicas agree (%s) after %.1fs", w, len(rows), rows[0], time.Since(t0).Seconds())
		}
	}
	d.say("converged; checking every acknowledged write on every replica")

	// 2. Every acknowledged op on every replica; nothing refused there;
	// nothing twice; no receipt number twice.
	receipts := map[string]string{} // city-wide, from the first member
	for _, w := range wardCodes {
		for _, r := range reps[w] {
			var city map[string]string
			if r.name == d.currentMembers()[0].id {
				city = receipts
			}
			if err := d.checkReplica(ctx, w, r, city); err != nil {
				d.violation("ward %s on %s could not be read: %v", w, r.name, err)
			}
		}
	}
	// 3. The lease history.
	d.checkLeases(ctx)
	// 4. The right office serves each ward, and only it.
	d.checkServing(ctx, holds)

	d.led.mu.Lock()
	errs := fmt.Sprint(d.led.errs)
	d.led.mu.Unlock()
	d.event("writes not acknowledged, by answer: %s", errs)
}

// converge reads the replicas' digests until they are equal or deadline
// passes; it returns the last digests.
func (d *driver) converge(ctx context.Context, reps []replica, deadline time.Time) ([]digest, error) {
	var rows []digest
	var last error
	for {
		rows = rows[:0]
		last = nil
		for _, r := range reps {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			dg, err := r.digest(cctx)
			cancel()
			if err != nil {
				last = fmt.Errorf("%s: %w", r.name, err)
				break
			}
			rows = append(rows, dg)
		}
		if last == nil {
			var diff []string
			for i, dg := range rows {
				if dg.Hash != rows[0].Hash || dg.Ops != rows[0].Ops || dg.Dossiers != rows[0].Dossiers || dg.Conflicts != rows[0].Conflicts {
					diff = append(diff, fmt.Sprintf("%s has %s", reps[i].name, dg))
				}
			}
			if len(diff) == 0 {
				return rows, nil
			}
			last = fmt.Errorf("%s; %s has %s", strings.Join(diff, "; "), reps[0].name, rows[0])
		}
		if time.Now().After(deadline) {
			return rows, last
		}
		select {
		case <-ctx.Done():
			return rows, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// findings collects one replica's problems, a few of each kind in full.
type findings struct {
	mu     sync.Mutex
	byKind map[string][]string
}

func (f *findings) add(kind, format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.byKind == nil {
		f.byKind = map[string][]string{}
	}
	f.byKind[kind] = append(f.byKind[kind], fmt.Sprintf(format, args...))
}

// report turns the findings into violations, one per kind.
func (f *findings) report(d *driver, where string) {
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range f.byKind {
			if !yield(k) {
				return
			}
		}
	}) {
		list := f.byKind[k]
		more := ""
		if len(list) > 4 {
			more = fmt.Sprintf("; and %d more", len(list)-4)
			list = list[:4]
		}
		d.violation("%s: %s: %s%s", where, k, strings.Join(list, "; "), more)
	}
}

// checkReplica reads every dossier of ward on r and checks it against the
// ledger. receipts, if not nil, collects receipt numbers city-wide.
func (d *driver) checkReplica(ctx context.Context, ward string, r replica, receipts map[string]string) error {
	items, err := r.api.list(ctx, r.listPath, ward)
	if err != nil {
		return err
	}
	var f findings
	led := d.led
	led.mu.Lock()
	byTag := led.byTag
	var acked []*dossierRec
	for _, rec := range led.dossiers {
		if rec.ward == ward {
			acked = append(acked, rec)
		}
	}
	led.mu.Unlock()

	here := map[string]dossier{}
	seenReceipt := map[string]string{}
	byApplicant := map[string]string{} // every create has its own applicant ID number
	for _, it := range items {
		here[it.ID] = it
		if other, dup := seenReceipt[it.ReceiptNo]; dup {
			f.add("a receipt number given twice", "%s on %s and %s", it.ReceiptNo, other, it.ID)
		}
		seenReceipt[it.ReceiptNo] = it.ID
		if receipts != nil {
			if other, dup := receipts[it.ReceiptNo]; dup && other != it.ID {
				f.add("a receipt number given twice in the city", "%s on %s and %s", it.ReceiptNo, other, it.ID)
			}
			receipts[it.ReceiptNo] = it.ID
		}
		if other, dup := byApplicant[it.Applicant.IDNumber]; dup {
			f.add("a create applied twice", "applicant %s in %s and %s", it.Applicant.IDNumber, other, it.ID)
		}
		byApplicant[it.Applicant.IDNumber] = it.ID
		req := byTag[it.Applicant.IDNumber]
		switch {
		case req == nil:
			f.add("a dossier no client asked for", "%s (%s, applicant %s)", it.ID, it.ReceiptNo, it.Applicant.IDNumber)
		case req.outcome == refused || req.outcome == failed:
			f.add("a refused create is there", "%s (%s), sent to %s, answered %s", it.ID, it.ReceiptNo, req.node, req.outcome)
		}
	}
	for _, rec := range acked {
		it, ok := here[rec.id]
		switch {
		case !ok:
			f.add("an acknowledged dossier is missing", "%s (%s, acknowledged by %s%s)", rec.id, rec.receipt, rec.node, diskNote(rec.ops[0]))
		case it.ReceiptNo != rec.receipt:
			f.add("an acknowledged dossier has another receipt number", "%s is %s, acknowledged as %s", rec.id, it.ReceiptNo, rec.receipt)
		}
	}

	// Every dossier in full: its history against the ledger.
	ids := make(chan string)
	var wg sync.WaitGroup
	var readErr error
	var errMu sync.Mutex
	opOwner := map[string]string{}
	var ownerMu sync.Mutex
	for range 6 {
		wg.Go(func() {
			for id := range ids {
				var full dossier
				if err := r.api.getJSON(ctx, "/v1/dossiers/"+id, &full); err != nil {
					errMu.Lock()
					readErr = err
					errMu.Unlock()
					continue
				}
				d.checkHistory(&f, r.name, &full, byTag)
				ownerMu.Lock()
				for _, ev := range full.History {
					if other, dup := opOwner[ev.Op]; dup && other != id {
						f.add("an op in two dossiers", "%s in %s and %s", ev.Op, other, id)
					}
					opOwner[ev.Op] = id
				}
				ownerMu.Unlock()
			}
		})
	}
	for id := range here {
		ids <- id
	}
	close(ids)
	wg.Wait()
	if readErr != nil {
		return readErr
	}
	f.report(d, fmt.Sprintf("ward %s on %s", ward, r.name))
	d.event("ward %s on %s: %d dossiers checked", ward, r.name, len(items))
	return nil
}

// checkHistory checks one dossier's history on a replica: no op twice, no
// request's op twice, nothing refused, every acknowledged op there.
func (d *driver) checkHistory(f *findings, where string, full *dossier, byTag map[string]*request) {
	seen := map[string]bool{}
	tags := map[string]int{}
	for _, ev := range full.History {
		if seen[ev.Op] {
			f.add("an op applied twice", "%s twice in %s", ev.Op, full.ID)
		}
		seen[ev.Op] = true
		if ev.Conflict || ev.Kind == "create" {
			continue // a conflict's text is its reason, not the tag
		}
		req := byTag[ev.Text]
		if req == nil {
			continue
		}
		tags[ev.Text]++
		if tags[ev.Text] == 2 {
			f.add("a write applied twice", "%s (%s) twice in %s", ev.Text, req.kind, full.ID)
		}
		if req.outcome == refused || req.outcome == failed {
			f.add("a refused write is there", "%s %s (sent to %s, answered %s) in %s as %s", req.kind, ev.Text, req.node, req.outcome, full.ID, ev.Op)
		}
	}
	d.led.mu.Lock()
	rec := d.led.dossiers[full.ID]
	var ops []*request
	if rec != nil {
		ops = slices.Clone(rec.ops)
	}
	d.led.mu.Unlock()
	for _, req := range ops {
		if req.op != "" && !seen[req.op] {
			f.add("an acknowledged op is missing", "%s %s (%s, acknowledged by %s%s) not in %s", req.kind, req.op, req.tag, req.node, diskNote(req), full.ID)
		}
	}
}

func diskNote(req *request) string {
	if req.disk == "" {
		return ""
	}
	return " while the disk of " + req.disk + " was full"
}

// checkServing: after the heal, each ward is served by the office its
// lease names, and by no other: a create there is acknowledged (once it
// has caught up), a create at the other office is refused.
func (d *driver) checkServing(ctx context.Context, holds map[string]bool) {
	d.led.mu.Lock()
	token := func(node string) string { return d.led.officials[node][0].token }
	tokens := map[string]string{backupID: token(backupID)}
	for _, w := range wardCodes {
		tokens[wardNodeID(w)] = token(wardNodeID(w))
	}
	d.led.mu.Unlock()
	n := 0
	probe := func(o *office, ward string) (reply, error) {
		n++
		api := d.officeAPI(o, tokens[o.id])
		return api.do(ctx, "POST", "/v1/dossiers", map[string]any{"procedure": "certified-copy", "ward": ward,
			"applicant": map[string]string{"name": "Kiểm tra sau cùng", "id_number": fmt.Sprintf("09%010d", n)}})
	}
	for _, w := range wardCodes {
		serving, other := d.offices[wardNodeID(w)], (*office)(nil)
		if slices.Contains(backupWards, w) {
			other = d.offices[backupID]
			if holds[w] {
				serving, other = other, serving
			}
		}
		err := d.eventually(ctx, serving.id+" serving "+w, d.cfg.Timeout, func() error {
			r, err := probe(serving, w)
			if err == nil && r.code == 201 {
				return nil
			}
			return fmt.Errorf("a create at %s: %s %.200s", serving.id, errClass(r, err), r.body)
		})
		if err != nil {
			d.violation("after healing, %s does not serve ward %s, whose lease it holds: %v", serving.id, w, err)
		}
		if other != nil {
			r, err := probe(other, w)
			if err == nil && r.code/100 == 2 {
				d.violation("after healing, %s took a write for ward %s, whose lease %s holds: %s %.200s", other.id, w, serving.id, errClass(r, err), r.body)
			}
		}
	}
	d.event("after the checks, each ward is served by the office its lease names, and only by it")
}

// waitDelivered waits (until deadline) for every office to have pushed all
// its ops and uploaded all its scans; one that has not by then is a
// violation.
func (d *driver) waitDelivered(ctx context.Context, deadline time.Time) {
	for _, id := range d.order {
		o := d.offices[id]
		api := d.officeAPI(o, o.token)
		var last string
		for {
			var st struct {
				Connected   bool `json:"connected"`
				OutboxDepth int  `json:"outbox_depth"`
				Blobs       struct {
					PendingUploads int `json:"pending_uploads"`
				} `json:"blobs"`
			}
			err := api.getJSON(ctx, "/v1/sync/status", &st)
			if err == nil && st.OutboxDepth == 0 && st.Blobs.PendingUploads == 0 {
				break
			}
			if err != nil {
				last = err.Error()
			} else {
				last = fmt.Sprintf("%d ops and %d scans still to push (connected %v)", st.OutboxDepth, st.Blobs.PendingUploads, st.Connected)
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				d.violation("%s has not delivered everything to the city within %s of the heal: %s", o.id, d.cfg.Timeout, last)
				break
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	d.event("every office has pushed its ops and uploaded its scans")
}
