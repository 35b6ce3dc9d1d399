package schema

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
)

// Attachments are scanned documents (ID cards, forms, certificates). Their
// bytes are content-addressed blobs split into chunks of ChunkSize, each
// named by its SHA-256; an attach op carries the blob's manifest, so any
// replica can tell which chunks it lacks and verify each one it receives.

// ChunkSize is the size of every chunk of a blob but the last.
const ChunkSize = 1 << 20

// MaxBlobSize is the hard ceiling on one attachment, whatever a node's
// configured upload limit: it bounds a manifest (and so an attach op) to
// MaxBlobSize/ChunkSize chunk hashes.
const MaxBlobSize = 1 << 30

// Content types an attachment may have. They are sniffed from the bytes,
// never taken from the client.
const (
	TypePDF  = "application/pdf"
	TypeJPEG = "image/jpeg"
	TypePNG  = "image/png"
	TypeTIFF = "image/tiff"
)

// AllowedTypes lists the attachment types, in the order error messages name them.
var AllowedTypes = []string{TypePDF, TypeJPEG, TypePNG, TypeTIFF}

// SniffLen is how many leading bytes SniffType needs.
const SniffLen = 8

// SniffType returns the attachment type of a file from its first bytes,
// or "" if it is none of AllowedTypes. Only magic numbers count: an
// executable renamed scan.pdf starts with MZ or \x7fELF and is refused.
func SniffType(head []byte) string {
	switch {
	case bytes.HasPrefix(head, []byte("%PDF-")):
		return TypePDF
	case bytes.HasPrefix(head, []byte{0xFF, 0xD8, 0xFF}):
		return TypeJPEG
	case bytes.HasPrefix(head, []byte("\x89PNG\r\n\x1a\n")):
		return TypePNG
	case bytes.HasPrefix(head, []byte("II*\x00")), bytes.HasPrefix(head, []byte("MM\x00*")):
		return TypeTIFF
	}
	return ""
}

// Manifest describes one blob: the SHA-256 of the whole, its size and
// type, and the SHA-256 of each chunk in order.
type Manifest struct {
	Hash   [32]byte
	Size   int64
	Type   string
	Chunks [][32]byte
}

// Equal reports whether two manifests describe the same blob the same way.
func (m *Manifest) Equal(o *Manifest) bool {
	return m.Hash == o.Hash && m.Size == o.Size && m.Type == o.Type && slices.Equal(m.Chunks, o.Chunks)
}

// ChunkCount is how many chunks a blob of size bytes has.
func ChunkCount(size int64) int { return int((size + ChunkSize - 1) / ChunkSize) }

// ChunkLen is the length of chunk i of a blob of size bytes.
func ChunkLen(size int64, i int) int {
	if last := ChunkCount(size) - 1; i == last {
		return int(size - int64(last)*ChunkSize)
	}
	return ChunkSize
}

// Validate checks a manifest's shape: a size within the ceiling, an
// allowed type, and exactly the chunk count the size implies.
func (m *Manifest) Validate() error {
	switch {
	case m.Size <= 0:
		return fieldErr("size", "an attachment must not be empty")
	case m.Size > MaxBlobSize:
		return fmt.Errorf("%w: attachment of %d bytes, limit %d", ErrTooLarge, m.Size, MaxBlobSize)
	case !validType(m.Type):
		return fieldErr("type", "%q is not an allowed type (%s)", m.Type, strings.Join(AllowedTypes, ", "))
	case len(m.Chunks) != ChunkCount(m.Size):
		return fieldErr("chunks", "%d chunk hashes for %d bytes, want %d", len(m.Chunks), m.Size, ChunkCount(m.Size))
	}
	return nil
}

func validType(t string) bool {
	for _, a := range AllowedTypes {
		if t == a {
			return true
		}
	}
	return false
}

// HashHex is the manifest's blob hash in hex, the form APIs and URLs use.
func (m *Manifest) HashHex() string { return hex.EncodeToString(m.Hash[:]) }

// ParseHash parses a hex SHA-256.
func ParseHash(s string) ([32]byte, error) {
	var h [32]byte
	if len(s) != 64 {
		return h, fieldErr("hash", "must be 64 lower-case hex digits")
	}
	// Lower case only: one blob has one spelling, so comparing hashes as
	// strings (the fold's dedupe, URLs, logs) is comparing blobs.
	if _, err := hex.Decode(h[:], []byte(s)); err != nil || hex.EncodeToString(h[:]) != s {
		return h, fieldErr("hash", "must be 64 lower-case hex digits")
	}
	return h, nil
}

// MaxAttachmentName bounds an attachment's file name.
const MaxAttachmentName = 255

// AttachBody adds an attachment to a dossier. Hashes are hex.
type AttachBody struct {
	Name   string   `json:"name"`
	Hash   string   `json:"hash"`
	Size   int64    `json:"size"`
	Type   string   `json:"type"`
	Chunks []string `json:"chunks"`
}

// NewAttachBody builds the body of an attach op from a manifest.
func NewAttachBody(name string, m *Manifest) AttachBody {
	b := AttachBody{Name: name, Hash: m.HashHex(), Size: m.Size, Type: m.Type, Chunks: make([]string, len(m.Chunks))}
	for i, c := range m.Chunks {
		b.Chunks[i] = hex.EncodeToString(c[:])
	}
	return b
}

// Manifest parses and validates the manifest an attach body carries.
func (b *AttachBody) Manifest() (Manifest, error) {
	if err := ValidateAttachmentName(b.Name); err != nil {
		return Manifest{}, err
	}
	m := Manifest{Size: b.Size, Type: b.Type}
	var err error
	if m.Hash, err = ParseHash(b.Hash); err != nil {
		return Manifest{}, err
	}
	if len(b.Chunks) > MaxBlobSize/ChunkSize {
		return Manifest{}, fieldErr("chunks", "%d chunks, limit %d", len(b.Chunks), MaxBlobSize/ChunkSize)
	}
	m.Chunks = make([][32]byte, len(b.Chunks))
	for i, c := range b.Chunks {
		if m.Chunks[i], err = ParseHash(c); err != nil {
			return Manifest{}, fieldErr("chunks", "chunk %d: must be 64 hex digits", i)
		}
	}
	return m, m.Validate()
}

// ValidateAttachmentName checks a file name a clerk gave: printable, not
// empty, no path separators (it ends up in Content-Disposition headers).
func ValidateAttachmentName(name string) error {
	if err := ValidateText("name", name, MaxAttachmentName, true); err != nil {
		return err
	}
	if strings.ContainsAny(name, "/\\\"\n\t") || name == "." || name == ".." {
		return fieldErr("name", "must be a plain file name (no / \\ \" or line breaks)")
	}
	return nil
}

// Attachment is a document attached to a dossier, as its state shows it.
type Attachment struct {
	Op   string `json:"op"`
	Name string `json:"name"`
	Hash string `json:"hash"`
	Size int64  `json:"size"`
	Type string `json:"type"`
	By   Actor  `json:"by"`
	At   int64  `json:"at"`
}
