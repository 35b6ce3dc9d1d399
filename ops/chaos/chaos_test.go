package chaos

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// TestChaosSchedules runs real schedules: WARDSYNC_CHAOS_RUNS of them
// (seeds from WARDSYNC_CHAOS_SEED, default random), each with
// WARDSYNC_CHAOS_DURATION of faults (default 20s). It is skipped unless
// WARDSYNC_CHAOS_RUNS is set: CI runs the schedules through scripts/chaos
// (a line of scripts/test), on their own after the rest of the suite, with
// a driver built without the race detector.
func TestChaosSchedules(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	runs, _ := strconv.Atoi(os.Getenv("WARDSYNC_CHAOS_RUNS"))
	if runs <= 0 {
		t.Skip("set WARDSYNC_CHAOS_RUNS=N to run N schedules here; scripts/chaos --runs N does the same from the shell")
	}
	seed, _ := strconv.ParseUint(os.Getenv("WARDSYNC_CHAOS_SEED"), 10, 64)
	if seed == 0 {
		seed = uint64(time.Now().UnixNano()) & (1<<40 - 1)
	}
	dur := 20 * time.Second
	if s := os.Getenv("WARDSYNC_CHAOS_DURATION"); s != "" {
		var err error
		if dur, err = time.ParseDuration(s); err != nil {
			t.Fatalf("WARDSYNC_CHAOS_DURATION=%q: %v", s, err)
		}
	}
	bin := filepath.Join(t.TempDir(), "wardsync")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/wardsync/wardsync/cmd/wardsync").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var c Campaign
	for i := range runs {
		s := seed + uint64(i)
		dir, err := os.MkdirTemp("", "wardsync-chaos-test-")
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), dur+5*time.Minute)
		sum, err := Run(ctx, Config{Bin: bin, Dir: dir, Seed: s, Duration: dur, Out: &out})
		cancel()
		c.Add(sum)
		t.Logf("seed %d:\n%s", s, out.String())
		if err != nil {
			t.Errorf("seed %d: %v (work dir kept: %s)", s, err, dir)
			continue
		}
		os.RemoveAll(dir)
	}
	var table bytes.Buffer
	c.WriteTable(&table)
	t.Logf("\n%s", table.String())
}

func TestScheduleIsTheSeeds(t *testing.T) {
	a, b := makeSchedule(42, 30*time.Second), makeSchedule(42, 30*time.Second)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same seed gave two schedules")
	}
	if reflect.DeepEqual(a, makeSchedule(43, 30*time.Second)) {
		t.Fatal("seeds 42 and 43 gave the same schedule")
	}
	seen := map[string]int{}
	for seed := range uint64(200) {
		s := makeSchedule(seed, 30*time.Second)
		if len(s) < 8 {
			t.Fatalf("seed %d: only %d faults in 30s", seed, len(s))
		}
		replaces := 0
		for i, ev := range s {
			seen[ev.Kind]++
			if ev.At < time.Second || ev.At >= 30*time.Second || ev.Dur < 0 || ev.Dur > 8*time.Second {
				t.Fatalf("seed %d: fault %d: %+v", seed, i, ev)
			}
			if i > 0 && ev.At <= s[i-1].At {
				t.Fatalf("seed %d: faults out of order", seed)
			}
			if ev.Kind == KindMemberReplace {
				replaces++
			}
		}
		if replaces > spareMembers {
			t.Fatalf("seed %d: %d member replacements, there are %d spare certificates", seed, replaces, spareMembers)
		}
	}
	for _, k := range kinds {
		if seen[k.kind] == 0 {
			t.Errorf("no schedule of 200 has a %s", k.kind)
		}
	}
}

func TestClockOffsets(t *testing.T) {
	var ahead, behind bool
	for i := range uint64(100) {
		off := clockOffset(rand.New(rand.NewPCG(i, 1)))
		if a := off.Abs(); a < 2*time.Second || a > 10*time.Minute {
			t.Fatalf("offset %s", off)
		}
		ahead, behind = ahead || off > 0, behind || off < 0
	}
	if !ahead || !behind {
		t.Fatal("clock offsets go only one way")
	}
}

// The lease model accepts what the FSM does and refuses what it does not.
func TestLeaseModel(t *testing.T) {
	const home = "w1"
	read := func(c int, call, ret int64, epoch uint64, active, handback string) porcupine.Operation {
		return porcupine.Operation{ClientId: c, Input: leaseIn{Ward: "HCM001", Op: "read"}, Call: call, Return: ret,
			Output: leaseOut{Result: leaseOK, Epoch: epoch, Active: active, HandbackTo: handback}}
	}
	change := func(c int, call, ret int64, op string, expect uint64, force bool, res int, epoch uint64, active, handback string) porcupine.Operation {
		in := leaseIn{Ward: "HCM001", Op: op, Expect: expect, Force: force}
		if op == "failover" {
			in.To = backupID
		}
		return porcupine.Operation{ClientId: c, Input: in, Call: call, Return: ret,
			Output: leaseOut{Result: res, Epoch: epoch, Active: active, HandbackTo: handback}}
	}
	cases := []struct {
		name string
		ops  []porcupine.Operation
		want porcupine.CheckResult
	}{
		{"failover, handback, release", []porcupine.Operation{
			read(0, 0, 1, 0, "", ""),
			change(0, 2, 3, "failover", 0, false, leaseOK, 1, backupID, ""),
			read(0, 4, 5, 1, backupID, ""),
			change(0, 6, 7, "handback", 1, false, leaseOK, 1, backupID, home),
			read(0, 8, 9, 1, backupID, home),
			read(0, 10, 11, 2, home, ""), // the backup released it meanwhile
			change(0, 12, 13, "failover", 2, false, leaseOK, 3, backupID, ""),
		}, porcupine.Ok},
		{"a read goes back in time", []porcupine.Operation{
			change(0, 0, 1, "failover", 0, false, leaseOK, 1, backupID, ""),
			read(1, 2, 3, 0, "", ""),
		}, porcupine.Illegal},
		{"two failovers from the same epoch both win", []porcupine.Operation{
			change(0, 0, 10, "failover", 0, false, leaseOK, 1, backupID, ""),
			change(1, 0, 10, "failover", 0, false, leaseOK, 1, backupID, ""),
		}, porcupine.Illegal},
		{"a failover while a handback is pending", []porcupine.Operation{
			change(0, 0, 1, "failover", 0, false, leaseOK, 1, backupID, ""),
			change(0, 2, 3, "handback", 1, false, leaseOK, 1, backupID, home),
			change(0, 4, 5, "failover", 1, false, leaseOK, 2, backupID, ""),
		}, porcupine.Illegal},
		{"a refused failover that could have won", []porcupine.Operation{
			change(0, 0, 1, "failover", 0, false, leaseConflict, 0, "", ""),
			read(0, 2, 3, 0, "", ""),
		}, porcupine.Illegal},
		{"an unknown failover, seen or not", []porcupine.Operation{
			change(0, 0, 100, "failover", 0, false, leaseUnknown, 0, "", ""),
			read(1, 1, 2, 0, "", ""),
			read(1, 3, 4, 1, backupID, ""),
		}, porcupine.Ok},
		{"a forced handback while pending", []porcupine.Operation{
			change(0, 0, 1, "failover", 0, false, leaseOK, 1, backupID, ""),
			change(0, 2, 3, "handback", 1, false, leaseOK, 1, backupID, home),
			change(1, 4, 5, "handback", 1, true, leaseOK, 2, home, ""),
			read(1, 6, 7, 2, home, ""),
		}, porcupine.Ok},
		{"a release nobody asked for", []porcupine.Operation{
			change(0, 0, 1, "failover", 0, false, leaseOK, 1, backupID, ""),
			read(0, 2, 3, 2, home, ""),
		}, porcupine.Illegal},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := porcupine.CheckOperationsTimeout(leaseModel(home), c.ops, 10*time.Second); got != c.want {
				t.Fatalf("porcupine says %s, want %s", got, c.want)
			}
		})
	}
}

// The mesh drops datagrams by directed member pair, both ways or one.
func TestMeshCuts(t *testing.T) {
	m := newMesh()
	// Member b: an echo server that counts what it gets.
	b, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got := make(chan struct{}, 100)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := b.ReadFromUDP(buf)
			if err != nil {
				return
			}
			got <- struct{}{}
			b.WriteToUDP(buf[:n], from)
		}
	}()
	a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := m.register("a", a.LocalAddr().String()); err != nil {
		t.Fatal(err)
	}
	if err := m.register("b", b.LocalAddr().String()); err != nil {
		t.Fatal(err)
	}
	p, err := newMeshProxy(m, "b", "127.0.0.1:0", b.LocalAddr().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pa, _ := net.ResolveUDPAddr("udp", p.Addr())
	// ping sends one datagram from a through the proxy and reports whether
	// b got it and whether a got the echo.
	ping := func() (reached, echoed bool) {
		for len(got) > 0 {
			<-got
		}
		if _, err := a.WriteToUDP([]byte("ping"), pa); err != nil {
			t.Fatal(err)
		}
		select {
		case <-got:
			reached = true
		case <-time.After(300 * time.Millisecond):
		}
		a.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		buf := make([]byte, 16)
		_, _, err := a.ReadFromUDP(buf)
		return reached, err == nil
	}
	for _, c := range []struct {
		name               string
		cut                func()
		heal               func()
		reached, echoedToo bool
	}{
		{"no cut", func() {}, func() {}, true, true},
		{"both ways", func() { m.cutBoth("a", "b") }, func() { m.uncutBoth("a", "b") }, false, false},
		{"a → b", func() { m.cut("a", "b") }, func() { m.uncut("a", "b") }, false, false},
		{"b → a", func() { m.cut("b", "a") }, func() { m.uncut("b", "a") }, true, false},
		{"another pair", func() { m.cutBoth("a", "c") }, func() { m.uncutBoth("a", "c") }, true, true},
		{"healed", func() {}, func() {}, true, true},
	} {
		c.cut()
		reached, echoed := ping()
		c.heal()
		if reached != c.reached || echoed != c.echoedToo {
			t.Errorf("%s: reached b %v, echoed %v; want %v, %v", c.name, reached, echoed, c.reached, c.echoedToo)
		}
	}
	if m.cuts() != 0 {
		t.Fatalf("%d cuts left after healing", m.cuts())
	}
}

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		r    reply
		err  error
		want outcome
	}{
		{reply{code: 201}, nil, acked},
		{reply{code: 409}, nil, refused},
		{reply{code: 503}, nil, failed},
		{reply{code: 500}, nil, unknown},
		{reply{code: 504}, nil, unknown}, // outcome_unknown: the city may have saved it
		{reply{}, context.DeadlineExceeded, unknown},
	} {
		if got := classify(c.r, c.err); got != c.want {
			t.Errorf("classify(%d, %v) = %s, want %s", c.r.code, c.err, got, c.want)
		}
	}
}

func TestReplayCommand(t *testing.T) {
	if got := ReplayCommand(17, DefaultDuration); got != "scripts/chaos --seed 17 --runs 1" {
		t.Fatal(got)
	}
	if got := ReplayCommand(17, 45*time.Second); got != "scripts/chaos --seed 17 --runs 1 --duration 45s" {
		t.Fatal(got)
	}
}
