package schema

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestSniffType(t *testing.T) {
	cases := []struct {
		name string
		head string
		want string
	}{
		{"pdf", "%PDF-1.7\n%\xe2\xe3", TypePDF},
		{"pdf bare magic", "%PDF-", TypePDF},
		{"jpeg jfif", "\xff\xd8\xff\xe0\x00\x10JFIF", TypeJPEG},
		{"jpeg exif", "\xff\xd8\xff\xe1", TypeJPEG},
		{"png", "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", TypePNG},
		{"tiff little-endian", "II*\x00\x08\x00\x00\x00", TypeTIFF},
		{"tiff big-endian", "MM\x00*\x00\x00\x00\x08", TypeTIFF},
		// An executable renamed scan.pdf is still an executable.
		{"elf", "\x7fELF\x02\x01\x01\x00", ""},
		{"windows exe", "MZ\x90\x00\x03\x00\x00\x00", ""},
		{"zip (docx)", "PK\x03\x04\x14\x00\x06\x00", ""},
		{"html", "<!DOCTYPE html>", ""},
		{"empty", "", ""},
		{"pdf cut short", "%PDF", ""},
		{"png cut short", "\x89PNG\r\n\x1a", ""},
		{"jpeg cut short", "\xff\xd8", ""},
		{"pdf magic not at the start", " %PDF-1.4", ""},
		{"lower-case pdf", "%pdf-1.4", ""},
		{"tiff wrong order", "II\x00*", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := SniffType([]byte(c.head)); got != c.want {
				t.Fatalf("SniffType(%q) = %q, want %q", c.head, got, c.want)
			}
		})
	}
	// SniffLen bytes are enough to recognise every allowed type.
	for _, head := range []string{"%PDF-1.7xxxx", "\xff\xd8\xff\xe0xxxxxx", "\x89PNG\r\n\x1a\nxxxx", "II*\x00xxxxxxxx", "MM\x00*xxxxxxxx"} {
		if SniffType([]byte(head[:SniffLen])) == "" {
			t.Errorf("SniffLen (%d) bytes of %q are not enough", SniffLen, head)
		}
	}
	// Every sniffed type is an allowed one.
	for _, c := range cases {
		if got := SniffType([]byte(c.head)); got != "" && !validType(got) {
			t.Errorf("SniffType gives %q, which is not in AllowedTypes", got)
		}
	}
}

func TestChunkCountAndLen(t *testing.T) {
	cases := []struct {
		size  int64
		count int
		last  int
	}{
		{1, 1, 1},
		{100, 1, 100},
		{ChunkSize - 1, 1, ChunkSize - 1},
		{ChunkSize, 1, ChunkSize},
		{ChunkSize + 1, 2, 1},
		{2 * ChunkSize, 2, ChunkSize},
		{2*ChunkSize + 1, 3, 1},
		{20_000_000, 20, 20_000_000 - 19*ChunkSize},
		{MaxBlobSize, MaxBlobSize / ChunkSize, ChunkSize},
	}
	for _, c := range cases {
		n := ChunkCount(c.size)
		if n != c.count {
			t.Errorf("ChunkCount(%d) = %d, want %d", c.size, n, c.count)
			continue
		}
		var sum int64
		for i := 0; i < n; i++ {
			l := ChunkLen(c.size, i)
			if i < n-1 && l != ChunkSize {
				t.Errorf("ChunkLen(%d, %d) = %d, want %d (only the last chunk is short)", c.size, i, l, ChunkSize)
			}
			if l <= 0 || l > ChunkSize {
				t.Errorf("ChunkLen(%d, %d) = %d, out of (0, ChunkSize]", c.size, i, l)
			}
			sum += int64(l)
		}
		if got := ChunkLen(c.size, n-1); got != c.last {
			t.Errorf("last ChunkLen(%d) = %d, want %d", c.size, got, c.last)
		}
		if sum != c.size {
			t.Errorf("chunk lengths of %d bytes add up to %d", c.size, sum)
		}
	}
	if ChunkCount(0) != 0 {
		t.Errorf("ChunkCount(0) = %d, want 0", ChunkCount(0))
	}
}

// testManifest is a well-formed manifest of size bytes (the hashes are
// made up: Validate checks shape, not content).
func testManifest(size int64, typ string) Manifest {
	m := Manifest{Hash: sha256.Sum256([]byte(fmt.Sprint("blob", size, typ))), Size: size, Type: typ}
	for i := 0; i < ChunkCount(size); i++ {
		m.Chunks = append(m.Chunks, sha256.Sum256([]byte(fmt.Sprint("chunk", size, i))))
	}
	return m
}

func TestManifestValidate(t *testing.T) {
	for _, typ := range AllowedTypes {
		m := testManifest(3*ChunkSize+5, typ)
		if err := m.Validate(); err != nil {
			t.Errorf("%s: %v", typ, err)
		}
	}
	largest := testManifest(MaxBlobSize, TypePDF)
	if err := largest.Validate(); err != nil {
		t.Errorf("a manifest of exactly MaxBlobSize: %v", err)
	}
	one := testManifest(1, TypePNG)
	if err := one.Validate(); err != nil {
		t.Errorf("a 1-byte manifest: %v", err)
	}

	cases := []struct {
		name   string
		m      func() Manifest
		want   error
		inText string
	}{
		{"empty", func() Manifest { m := testManifest(1, TypePDF); m.Size, m.Chunks = 0, nil; return m }, ErrInvalid, "size"},
		{"negative size", func() Manifest { m := testManifest(1, TypePDF); m.Size = -1; return m }, ErrInvalid, "size"},
		{"over the ceiling", func() Manifest { return testManifest(MaxBlobSize+1, TypePDF) }, ErrTooLarge, fmt.Sprint(MaxBlobSize)},
		{"no type", func() Manifest { return testManifest(10, "") }, ErrInvalid, "type"},
		{"executable", func() Manifest { return testManifest(10, "application/x-msdownload") }, ErrInvalid, "application/pdf"},
		{"type with parameters", func() Manifest { return testManifest(10, "application/pdf; charset=binary") }, ErrInvalid, "type"},
		{"upper-case type", func() Manifest { return testManifest(10, "APPLICATION/PDF") }, ErrInvalid, "type"},
		{"a chunk too few", func() Manifest { m := testManifest(2*ChunkSize+1, TypePDF); m.Chunks = m.Chunks[:2]; return m }, ErrInvalid, "chunks"},
		{"a chunk too many", func() Manifest {
			m := testManifest(2*ChunkSize, TypePDF)
			m.Chunks = append(m.Chunks, [32]byte{})
			return m
		}, ErrInvalid, "chunks"},
		{"no chunks", func() Manifest { m := testManifest(10, TypePDF); m.Chunks = nil; return m }, ErrInvalid, "chunks"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := c.m()
			err := m.Validate()
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.inText) {
				t.Fatalf("Validate = %v, want %v mentioning %q", err, c.want, c.inText)
			}
		})
	}
}

func TestParseHash(t *testing.T) {
	sum := sha256.Sum256([]byte("x"))
	hexSum := fmt.Sprintf("%x", sum)
	got, err := ParseHash(hexSum)
	if err != nil || got != sum {
		t.Fatalf("ParseHash(%s) = %x, %v", hexSum, got, err)
	}
	m := Manifest{Hash: sum}
	if m.HashHex() != hexSum {
		t.Fatalf("HashHex = %s, want %s", m.HashHex(), hexSum)
	}
	for _, bad := range []string{
		"",
		hexSum[:63],
		hexSum + "0",
		hexSum[:62],
		"g" + hexSum[1:],
		" " + hexSum[1:],
		hexSum[:32] + "-" + hexSum[33:],
		strings.Repeat("é", 32),
		"0x" + hexSum[:62],
	} {
		if _, err := ParseHash(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseHash(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestValidateAttachmentName(t *testing.T) {
	for _, ok := range []string{
		"scan.pdf",
		"Giấy khai sinh - Nguyễn Văn A.pdf",
		"CCCD mặt trước.jpg",
		"a",
		".hidden.png",
		"report..pdf",
		strings.Repeat("é", MaxAttachmentName),
	} {
		if err := ValidateAttachmentName(ok); err != nil {
			t.Errorf("ValidateAttachmentName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{
		"",
		"   ",
		"../etc/passwd",
		"dir/scan.pdf",
		`C:\scans\a.pdf`,
		`a"b.pdf`,
		"a\nb.pdf",
		"a\tb.pdf",
		"a\rb.pdf",
		"a\x00b.pdf",
		"a\x7fb.pdf",
		".",
		"..",
		"\xff\xfe.pdf",
		strings.Repeat("a", MaxAttachmentName+1),
	} {
		err := ValidateAttachmentName(bad)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "name" || !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateAttachmentName(%q) = %v, want a FieldError on name", bad, err)
		}
	}
}

func TestAttachBodyRoundTrip(t *testing.T) {
	for _, size := range []int64{1, ChunkSize, ChunkSize + 1, 5*ChunkSize - 3} {
		m := testManifest(size, TypeTIFF)
		b := NewAttachBody("scan.tif", &m)
		if b.Name != "scan.tif" || b.Size != size || b.Type != TypeTIFF || b.Hash != m.HashHex() || len(b.Chunks) != len(m.Chunks) {
			t.Fatalf("NewAttachBody = %+v", b)
		}
		for i, c := range b.Chunks {
			if c != fmt.Sprintf("%x", m.Chunks[i]) {
				t.Fatalf("chunk %d = %s, want lower-case hex of %x", i, c, m.Chunks[i])
			}
		}
		// Through JSON, as in an op body.
		var back AttachBody
		if err := jsonRoundTrip(b, &back); err != nil {
			t.Fatal(err)
		}
		got, err := back.Manifest()
		if err != nil {
			t.Fatalf("size %d: Manifest: %v", size, err)
		}
		if got.Hash != m.Hash || got.Size != m.Size || got.Type != m.Type || len(got.Chunks) != len(m.Chunks) {
			t.Fatalf("size %d: round trip %+v, want %+v", size, got, m)
		}
		for i := range got.Chunks {
			if got.Chunks[i] != m.Chunks[i] {
				t.Fatalf("size %d: chunk %d differs", size, i)
			}
		}
	}
}

func TestAttachBodyManifestRefuses(t *testing.T) {
	good := func() AttachBody { m := testManifest(2*ChunkSize+7, TypeJPEG); return NewAttachBody("id.jpg", &m) }
	if _, err := (func() *AttachBody { b := good(); return &b }()).Manifest(); err != nil {
		t.Fatalf("good body: %v", err)
	}
	cases := []struct {
		name  string
		edit  func(b *AttachBody)
		field string
		want  error
	}{
		{"no name", func(b *AttachBody) { b.Name = "" }, "name", ErrInvalid},
		{"path in name", func(b *AttachBody) { b.Name = "../../x.jpg" }, "name", ErrInvalid},
		{"no hash", func(b *AttachBody) { b.Hash = "" }, "hash", ErrInvalid},
		{"short hash", func(b *AttachBody) { b.Hash = b.Hash[:40] }, "hash", ErrInvalid},
		{"non-hex hash", func(b *AttachBody) { b.Hash = "z" + b.Hash[1:] }, "hash", ErrInvalid},
		{"bad chunk hash", func(b *AttachBody) { b.Chunks[1] = "nothex" }, "chunks", ErrInvalid},
		{"missing chunk", func(b *AttachBody) { b.Chunks = b.Chunks[:2] }, "chunks", ErrInvalid},
		{"extra chunk", func(b *AttachBody) { b.Chunks = append(b.Chunks, b.Chunks[0]) }, "chunks", ErrInvalid},
		{"no chunks", func(b *AttachBody) { b.Chunks = nil }, "chunks", ErrInvalid},
		{"zero size", func(b *AttachBody) { b.Size, b.Chunks = 0, nil }, "size", ErrInvalid},
		{"negative size", func(b *AttachBody) { b.Size = -5 }, "size", ErrInvalid},
		{"disallowed type", func(b *AttachBody) { b.Type = "application/x-executable" }, "type", ErrInvalid},
		{"over the ceiling", func(b *AttachBody) { b.Size = MaxBlobSize + 1 }, "", ErrTooLarge},
		// More chunk hashes than any blob can have: refused before each
		// is parsed.
		{"too many chunks", func(b *AttachBody) {
			b.Chunks = make([]string, MaxBlobSize/ChunkSize+1)
			for i := range b.Chunks {
				b.Chunks[i] = b.Hash
			}
		}, "chunks", ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := good()
			c.edit(&b)
			_, err := b.Manifest()
			if !errors.Is(err, c.want) {
				t.Fatalf("Manifest = %v, want %v", err, c.want)
			}
			var fe *FieldError
			if c.field != "" && (!errors.As(err, &fe) || fe.Field != c.field) {
				t.Fatalf("Manifest = %v, want a FieldError on %q", err, c.field)
			}
		})
	}
}

func jsonRoundTrip(in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}
