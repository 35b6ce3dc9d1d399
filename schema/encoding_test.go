package schema

import (
	"bytes"
	"errors"
	"testing"
)

func TestDecodeOpRejects(t *testing.T) {
	good := op("w1", 1, 100, RoleClerk, KindAnnotate, AnnotateBody{Text: "x"})
	enc := good.Encode()
	huge := append([]byte{OpVersion}, bytes.Repeat([]byte{0xff}, 9)...)
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrInvalid},
		{"version 2", append([]byte{2}, enc[1:]...), ErrUnknownVersion},
		{"truncated", enc[:len(enc)-3], ErrInvalid},
		{"trailing", append(append([]byte(nil), enc...), 0), ErrInvalid},
		{"varint overflow", huge, ErrInvalid},
		{"oversized", append([]byte{OpVersion}, make([]byte, maxOpEncoded+1)...), ErrTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := DecodeOp(c.in); !errors.Is(err, c.want) {
				t.Fatalf("DecodeOp = %v, want %v", err, c.want)
			}
		})
	}
}

// FuzzDecodeOp: no input makes the decoder panic, and whatever it accepts
// re-encodes to the same bytes (so a signature over it means one thing).
func FuzzDecodeOp(f *testing.F) {
	o := op("w1", 1, 100, RoleClerk, KindCreate, CreateBody{Procedure: "birth-registration"})
	o.Sig = bytes.Repeat([]byte{1}, 64)
	f.Add(o.Encode())
	f.Add([]byte{OpVersion})
	f.Add([]byte{OpVersion, 0x80, 0x80, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := DecodeOp(b)
		if err != nil {
			return
		}
		if !bytes.Equal(got.Encode(), b) {
			t.Fatalf("decode/encode not canonical:\n%x\n%x", b, got.Encode())
		}
	})
}
