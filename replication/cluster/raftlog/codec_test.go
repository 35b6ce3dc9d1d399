package raftlog

import (
	"bytes"
	"encoding/hex"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestCodecRoundTrip(t *testing.T) {
	cases := []*raft.Log{
		{},
		{Index: 1},
		{Index: 1<<64 - 1, Term: 1<<64 - 1, Type: raft.LogConfiguration},
		{Index: 7, Term: 3, Type: raft.LogCommand, Data: []byte("x"), Extensions: []byte("ext")},
		{Index: 8, Term: 3, AppendedAt: time.Unix(1_790_000_000, 999_999_999)},
		{Index: 9, AppendedAt: time.Unix(-5, 1)}, // before 1970
		{Index: 10, Data: bytes.Repeat([]byte{0xab}, 70_000)},
	}
	for i := uint64(1); i < 50; i++ {
		cases = append(cases, richLog(i))
	}
	for _, l := range cases {
		enc := encodeLog(l)
		if len(enc) > encodedSize(l) {
			t.Fatalf("encodedSize %d < actual %d", encodedSize(l), len(enc))
		}
		if !bytes.Equal(enc, encodeLog(l)) {
			t.Fatal("encoding is not deterministic")
		}
		var got raft.Log
		if err := decodeLog(enc, &got); err != nil {
			t.Fatalf("decode %+v: %v", l, err)
		}
		if !sameLog(&got, l) {
			t.Fatalf("round trip: got %+v want %+v", got, *l)
		}
		// Decoded slices must not let an append run into the next field.
		if len(got.Data) > 0 {
			_ = append(got.Data, 'Z')
			if len(got.Extensions) > 0 && !bytes.Equal(got.Extensions, l.Extensions) {
				t.Fatal("append to Data overwrote Extensions")
			}
		}
	}
}

// TestCodecGolden pins the on-disk format: changing it needs a new
// codecVersion and a migration, not a silent edit.
func TestCodecGolden(t *testing.T) {
	l := &raft.Log{
		Index: 300, Term: 2, Type: raft.LogCommand,
		Data: []byte("ab"), Extensions: []byte{9},
		AppendedAt: time.Unix(1, 5),
	}
	const want = "01" + "ac02" + "02" + "00" + "02" + "6162" + "01" + "09" + "01" + "02" + "05"
	if got := hex.EncodeToString(encodeLog(l)); got != want {
		t.Fatalf("encoding = %s, want %s", got, want)
	}
	// Zero time: one byte.
	if got := hex.EncodeToString(encodeLog(&raft.Log{Index: 1})); got != "01010000000000" {
		t.Fatalf("minimal encoding = %s", got)
	}
}

func TestCodecRejectsCorruption(t *testing.T) {
	enc := encodeLog(richLog(42))
	var l raft.Log
	for n := range len(enc) {
		if err := decodeLog(enc[:n], &l); err == nil {
			t.Fatalf("truncated to %d bytes: decoded", n)
		}
	}
	if err := decodeLog(append(append([]byte{}, enc...), 0), &l); err == nil {
		t.Fatal("trailing byte accepted")
	}
	bad := append([]byte{}, enc...)
	bad[0] = 2
	if err := decodeLog(bad, &l); err == nil {
		t.Fatal("unknown version accepted")
	}
	// Nanoseconds out of range.
	if err := decodeLog([]byte{1, 1, 0, 0, 0, 0, 1, 0, 0x80, 0x94, 0xeb, 0xdc, 0x03}, &l); err == nil {
		t.Fatal("nanoseconds >= 1e9 accepted")
	}
}

func FuzzDecodeLog(f *testing.F) {
	f.Add(encodeLog(richLog(2)))
	f.Add(encodeLog(richLog(3)))
	f.Add(encodeLog(&raft.Log{}))
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		var l raft.Log
		if err := decodeLog(b, &l); err != nil {
			return
		}
		// Whatever decodes re-encodes to something that decodes the same.
		var again raft.Log
		if err := decodeLog(encodeLog(&l), &again); err != nil || !sameLog(&l, &again) {
			t.Fatalf("re-decode: %v %+v %+v", err, l, again)
		}
	})
}
