package diskspace

import (
	"errors"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	statfsFails := errors.New("statfs: no such file")
	for _, tc := range []struct {
		name    string
		min     uint64
		free    uint64
		err     error
		refused bool
	}{
		{"plenty", 64 << 20, 1 << 30, nil, false},
		{"exactly the reserve", 64 << 20, 64 << 20, nil, false},
		{"one byte short", 64 << 20, 64<<20 - 1, nil, true},
		{"full", 64 << 20, 0, nil, true},
		{"no reserve set", 0, 0, nil, false},
		// A guard that cannot ask the file system does not stop an office.
		{"statfs fails", 64 << 20, 0, statfsFails, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := New("/data", tc.min).WithFree(func(string) (uint64, error) { return tc.free, tc.err })
			err := g.Check()
			if refused := err != nil; refused != tc.refused {
				t.Fatalf("Check() = %v, refused %v, want %v", err, refused, tc.refused)
			}
			if err != nil && !errors.Is(err, ErrLow) {
				t.Errorf("%v does not wrap ErrLow", err)
			}
		})
	}
	var nilGuard *Guard
	if err := nilGuard.Check(); err != nil {
		t.Errorf("nil guard refused: %v", err)
	}
}

func TestLowErrorSaysWhatToDo(t *testing.T) {
	msg := (&LowError{Dir: "/var/lib/wardsync", Free: 3 << 20, Min: 256 << 20}).Error()
	for _, want := range []string{"/var/lib/wardsync", "3.0 MiB free", "256.0 MiB", "--min-free-disk", "nothing was saved"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
}

func TestFreeOfARealDir(t *testing.T) {
	free, err := Free(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if free == 0 {
		t.Error("the test's temporary directory has no free space?")
	}
	if _, err := Free("/no/such/dir"); err == nil {
		t.Error("Free of a missing directory: no error")
	}
	// A reserve above any real disk refuses; the real statfs is used.
	if err := New(t.TempDir(), 1<<62).Check(); !errors.Is(err, ErrLow) {
		t.Errorf("4 EiB reserve: Check() = %v", err)
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 64 << 20: "64.0 MiB", 3 << 29: "1.5 GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// BenchmarkCheck is the guard's cost: one statfs, paid once per group
// commit (next to an fsync of a millisecond or more) and per blob chunk.
func BenchmarkCheck(b *testing.B) {
	g := New(b.TempDir(), 256<<20)
	for b.Loop() {
		if err := g.Check(); err != nil {
			b.Fatal(err)
		}
	}
}
