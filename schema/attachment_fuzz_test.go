package schema

import (
	"crypto/sha256"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// FuzzAttachBody: an attach op's body comes from another node, so any JSON
// may arrive. Decoding it and taking its manifest never panics; whatever
// validates rebuilds (through NewAttachBody) into a body that yields the
// same manifest. (Whether a non-canonical body, upper-case hex, should
// validate at all is TestFoldAttachHashIsCanonical's question.)
func FuzzAttachBody(f *testing.F) {
	for _, size := range []int64{1, ChunkSize, 3*ChunkSize + 1} {
		m := testManifest(size, TypePDF)
		b, _ := json.Marshal(NewAttachBody("scan.pdf", &m))
		f.Add(b)
	}
	h := sha256.Sum256(nil)
	hx := Manifest{Hash: h}
	f.Add([]byte(`{"name":"a.png","hash":"` + hx.HashHex() + `","size":1,"type":"image/png","chunks":["` + hx.HashHex() + `"]}`))
	f.Add([]byte(`{"name":"a.png","hash":"` + strings.ToUpper(hx.HashHex()) + `","size":1,"type":"image/png","chunks":["` + hx.HashHex() + `"]}`))
	f.Add([]byte(`{"name":"","hash":"","size":0,"type":"","chunks":null}`))
	f.Add([]byte(`{"size":-1}`))
	f.Add([]byte(`{"size":9223372036854775807,"chunks":[]}`))
	f.Add([]byte(`{"name":"..","chunks":["x"]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var b AttachBody
		if json.Unmarshal(data, &b) != nil {
			return
		}
		m, err := b.Manifest()
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("Manifest returned a manifest that does not validate: %v", err)
		}
		again := NewAttachBody(b.Name, &m)
		m2, err := again.Manifest()
		if err != nil {
			t.Fatalf("NewAttachBody of a valid manifest does not parse: %v\n%+v", err, again)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("manifest round trip differs:\n%+v\n%+v", m, m2)
		}
		if again2 := NewAttachBody(b.Name, &m2); !reflect.DeepEqual(again, again2) {
			t.Fatalf("NewAttachBody is not deterministic:\n%+v\n%+v", again, again2)
		}
		if again.Name != b.Name || again.Size != b.Size || again.Type != b.Type {
			t.Fatalf("body round trip changed name, size or type:\n%+v\n%+v", b, again)
		}
		// Through JSON, as the op carries it.
		enc, err := json.Marshal(again)
		if err != nil {
			t.Fatal(err)
		}
		var back AttachBody
		if err := json.Unmarshal(enc, &back); err != nil || !reflect.DeepEqual(back, again) {
			t.Fatalf("JSON round trip of a canonical body: %v\n%+v\n%+v", err, again, back)
		}
	})
}
