package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wardsync/wardsync/ops/certs"
	"github.com/wardsync/wardsync/replication/transport"
	"github.com/wardsync/wardsync/replication/wire"
	"github.com/wardsync/wardsync/schema"
)

// rawPusher speaks the push protocol by hand, as a (possibly hostile)
// ward would, with its own certificate and op-signing key.
type rawPusher struct {
	t    *testing.T
	node string
	ward string
	key  ed25519.PrivateKey
	ep   *transport.Endpoint
	seq  uint64
	prev [32]byte
}

func (e *cityEnv) rawPusher(ctx context.Context, node, ward string) *rawPusher {
	e.t.Helper()
	dir := filepath.Join(e.dir, "tls", node)
	runOK(e.t, "ops", "cert", "issue", "--ca", filepath.Join(e.dir, "ca"), "--role", "ward", "--node", node, "--ward", ward, "--out", dir)
	cert, pool, _, err := certs.LoadBundle(dir, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	ep, err := transport.New(transport.Config{Addr: "127.0.0.1:0", Cert: cert, CA: pool})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { ep.Close() })
	go ep.Run(ctx)
	_, key, _ := ed25519.GenerateKey(nil)
	return &rawPusher{t: e.t, node: node, ward: ward, key: key, ep: ep}
}

func (p *rawPusher) op(ward, dossier string, kind schema.Kind, body any) schema.Op {
	p.seq++
	op := schema.Op{ID: schema.OpID{Origin: p.node, Seq: p.seq}, Ward: ward, Dossier: dossier,
		HLC: schema.NewHLC(time.Now().UnixMilli(), 0), Actor: schema.Actor{ID: "admin", Role: schema.RoleHead},
		Kind: kind, Body: schema.MarshalBody(body), Prev: p.prev}
	op.Sign(p.key)
	p.prev = op.Hash()
	return op
}

// session opens a push stream and sends hello and then raw bytes (frames),
// returning every message the city answers until it closes the stream.
func (p *rawPusher) session(ctx context.Context, addr string, hello *wire.Hello, frames ...[]byte) []wire.Msg {
	p.t.Helper()
	conn, err := p.ep.Dial(ctx, addr, transport.ALPNSync, schema.PeerCity)
	if err != nil {
		p.t.Fatal(err)
	}
	defer conn.CloseWithError(0, "done")
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		p.t.Fatal(err)
	}
	s.SetDeadline(time.Now().Add(20 * time.Second))
	if hello == nil {
		pub := p.key.Public().(ed25519.PublicKey)
		hello = &wire.Hello{Proto: wire.ProtoPush, Node: p.node, Ward: p.ward, Versions: []uint8{wire.Version}, Key: pub}
	}
	if err := wire.WriteMsg(s, hello); err != nil {
		p.t.Fatal(err)
	}
	r := wire.NewReader(s, 1<<24)
	var got []wire.Msg
	for _, f := range frames {
		s.Write(f)
	}
	s.Close() // no more frames from us
	for {
		m, err := r.Read()
		if err != nil {
			return got
		}
		got = append(got, m)
		if _, isErr := m.(*wire.Error); isErr {
			return got
		}
	}
}

func batchFrame(t *testing.T, ops ...schema.Op) []byte {
	b, err := wire.AppendFrame(nil, &wire.OpBatch{Ops: ops})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func lastError(msgs []wire.Msg) *wire.Error {
	if len(msgs) == 0 {
		return nil
	}
	e, _ := msgs[len(msgs)-1].(*wire.Error)
	return e
}

// TestSyncRefusesForeignWardOps is invariant 4 for push, and invariant 5
// for the sync protocol: a ward certificate cannot write another ward's
// dossier (whatever ward the op claims), an unknown protocol version and a
// batch with a malformed op get clear errors, and none of it is committed.
func TestSyncRefusesForeignWardOps(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	e := newCityEnv(t, "c1")
	e.start("c1", "--bootstrap", e.bootstrapSpec("c1"))
	e.waitLeader("c1", "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	wards := schema.DefaultWards().All()
	wa, wb := wards[0].Code, wards[1].Code
	addr := e.quic["c1"]

	// B creates a dossier in its own ward: accepted.
	b := e.rawPusher(ctx, "wb", wb)
	dossier := "01M845RJX5TY05VRQ5B5H4WB01"
	got := b.session(ctx, addr, nil, batchFrame(t, b.op(wb, dossier, schema.KindCreate, schema.CreateBody{Procedure: "certified-copy", ReceiptNo: "X"})))
	if ack, ok := got[len(got)-1].(*wire.Ack); !ok || ack.Seq != 1 {
		t.Fatalf("B's own create: %#v", got)
	}

	// A tries to move B's dossier, first honestly naming B's ward, then
	// lying that it is A's own.
	a := e.rawPusher(ctx, "wa", wa)
	for _, claimed := range []string{wb, wa} {
		a.seq, a.prev = 0, [32]byte{}
		op := a.op(claimed, dossier, schema.KindTransition, schema.TransitionBody{To: schema.StatusInReview})
		got := a.session(ctx, addr, nil, batchFrame(t, op))
		if em := lastError(got); em == nil || em.Code != wire.CodeForbidden || !strings.Contains(em.Message, dossier) {
			t.Fatalf("A moving B's dossier (claiming ward %s): %#v", claimed, got)
		}
	}
	// A pushing an op that claims another origin.
	a.seq, a.prev = 0, [32]byte{}
	forged := a.op(wa, "01M845RJX5TY05VRQ5B5H4WA01", schema.KindCreate, schema.CreateBody{Procedure: "certified-copy"})
	forged.ID.Origin = "wb"
	forged.Sign(a.key)
	if em := lastError(a.session(ctx, addr, nil, batchFrame(t, forged))); em == nil || em.Code != wire.CodeForbidden {
		t.Fatal("an op of another origin was not refused")
	}
	// Unknown protocol version.
	pub := a.key.Public().(ed25519.PublicKey)
	if em := lastError(a.session(ctx, addr, &wire.Hello{Proto: wire.ProtoPush, Node: "wa", Ward: wa, Versions: []uint8{9}, Key: pub})); em == nil || em.Code != wire.CodeUnknownVersion {
		t.Fatal("hello with version 9 was not refused with unknown_version")
	}
	// A batch whose op is corrupted in transit.
	a.seq, a.prev = 0, [32]byte{}
	frame := batchFrame(t, a.op(wa, "01M845RJX5TY05VRQ5B5H4WA02", schema.KindCreate, schema.CreateBody{Procedure: "certified-copy"}))
	frame[len(frame)-40] ^= 0xff // inside the signature or the prev hash
	if em := lastError(a.session(ctx, addr, nil, frame)); em == nil || (em.Code != wire.CodeBadSignature && em.Code != wire.CodeBadFrame && em.Code != wire.CodeInvalid) {
		t.Fatalf("corrupted op: %#v", em)
	}
	// A malformed op (cut short) inside a well-formed frame.
	cut := batchFrame(t, a.op(wa, "01M845RJX5TY05VRQ5B5H4WA03", schema.KindCreate, schema.CreateBody{Procedure: "certified-copy"}))
	cut = append(cut[:wire.HeaderSize+3], cut[wire.HeaderSize+3:len(cut)-10]...)
	fixLen(cut)
	if em := lastError(a.session(ctx, addr, nil, cut)); em == nil {
		t.Fatal("a malformed op got no error")
	}

	// Nothing of A's was committed, and B's dossier is as B left it.
	code, body := e.call(e.admin, "GET", e.members["c1"].url+"/v1/wards", nil)
	if code != 200 {
		t.Fatalf("wards: %d %s", code, body)
	}
	var page struct {
		Items []struct {
			Ward      string            `json:"ward"`
			HighWater map[string]uint64 `json:"high_water"`
		} `json:"items"`
	}
	json.Unmarshal(body, &page)
	for _, w := range page.Items {
		if hw := w.HighWater["wa"]; hw != 0 {
			t.Fatalf("the city committed %d of A's refused ops", hw)
		}
	}
	d, ok := e.cityDossier("c1", dossier)
	if !ok || d.Status != "received" {
		t.Fatalf("B's dossier after A's attempts: %+v", d)
	}
}

// fixLen rewrites a frame's length field after the payload was edited.
func fixLen(frame []byte) {
	n := len(frame) - wire.HeaderSize
	frame[2], frame[3], frame[4], frame[5] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
}
