package schema

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// Procedure is one one-stop-shop administrative procedure.
type Procedure struct {
	Code           string `json:"code"`            // stable slug, ^[a-z0-9]+(-[a-z0-9]+)*$, e.g. "birth-registration"
	NameVI         string `json:"name_vi"`         // name in Vietnamese
	NameEN         string `json:"name_en"`         // name in English
	ProcessingDays int    `json:"processing_days"` // legal processing time in working days; 0 = same working day
	LegalBasis     string `json:"legal_basis,omitempty"`
}

// Limits of the embedded data files.
const (
	maxProcedureCodeLen  = 64
	maxProcessingDays    = 365
	maxLegalBasisLen     = 500
	maxDataNoteLen       = 2000
	supportedDataVersion = 1
)

var slugRe = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)

//go:embed data/procedures.json
var procedureData []byte

// Catalog is the list of procedures a ward office handles. It is immutable
// once parsed and safe for concurrent use.
type Catalog struct {
	procs []Procedure
	index map[string]int
}

type catalogFile struct {
	Version    *int              `json:"version"`
	Note       string            `json:"note,omitempty"`
	Procedures []json.RawMessage `json:"procedures"`
}

// procedureEntry is a Procedure as the file spells it: processing_days must
// be given, because a forgotten one would silently make a procedure same-day.
type procedureEntry struct {
	Code           string `json:"code"`
	NameVI         string `json:"name_vi"`
	NameEN         string `json:"name_en"`
	ProcessingDays *int   `json:"processing_days"`
	LegalBasis     string `json:"legal_basis,omitempty"`
}

var defaultCatalog = sync.OnceValue(func() *Catalog {
	c, err := ParseCatalog(procedureData)
	if err != nil {
		panic("schema: embedded data/procedures.json is broken: " + err.Error())
	}
	return c
})

// DefaultCatalog returns the catalog embedded in the binary
// (schema/data/procedures.json). It is parsed once and shared. It panics only
// if the embedded file is broken, which a test guards against.
func DefaultCatalog() *Catalog { return defaultCatalog() }

// ParseCatalog parses and validates a catalog file:
//
//	{"version": 1, "procedures": [{"code": "...", "name_vi": "...", "name_en": "...",
//	  "processing_days": 0, "legal_basis": "..."}, ...]}
//
// It requires version 1, at least one procedure, unique slug codes, names
// that are present and at most 200 characters, and processing_days given and
// in 0..365. Unknown fields are rejected. An error is a *FieldError (wrapping
// ErrInvalid) naming the entry and field, e.g.
// `catalog: procedures[3].code: "Birth Reg" is not a slug`.
func ParseCatalog(data []byte) (*Catalog, error) {
	var f catalogFile
	if err := decodeDataFile(data, &f, ""); err != nil {
		return nil, dataErr("catalog", err)
	}
	if err := checkDataHeader(f.Version, f.Note); err != nil {
		return nil, dataErr("catalog", err)
	}
	if len(f.Procedures) == 0 {
		return nil, dataErr("catalog", fieldErr("procedures", "must list at least one procedure"))
	}
	entries, err := decodeEntries[procedureEntry]("procedures", f.Procedures)
	if err != nil {
		return nil, dataErr("catalog", err)
	}
	c := &Catalog{
		procs: make([]Procedure, len(entries)),
		index: make(map[string]int, len(entries)),
	}
	for i, p := range entries {
		at := func(field string) string { return fmt.Sprintf("procedures[%d].%s", i, field) }
		if p.Code == "" {
			return nil, dataErr("catalog", fieldErr(at("code"), "is required"))
		}
		if len(p.Code) > maxProcedureCodeLen {
			return nil, dataErr("catalog", fieldErr(at("code"), "%.70q is longer than %d bytes", p.Code, maxProcedureCodeLen))
		}
		if !slugRe.MatchString(p.Code) {
			return nil, dataErr("catalog", fieldErr(at("code"), "%q is not a slug (lower-case letters and digits, joined by single hyphens)", p.Code))
		}
		if j, dup := c.index[p.Code]; dup {
			return nil, dataErr("catalog", fieldErr(at("code"), "%q duplicates procedures[%d].code", p.Code, j))
		}
		if err := ValidateText(at("name_vi"), p.NameVI, MaxNameLen, true); err != nil {
			return nil, dataErr("catalog", err)
		}
		if err := ValidateText(at("name_en"), p.NameEN, MaxNameLen, true); err != nil {
			return nil, dataErr("catalog", err)
		}
		if p.ProcessingDays == nil {
			return nil, dataErr("catalog", fieldErr(at("processing_days"), "is required (0 means the same working day)"))
		}
		if days := *p.ProcessingDays; days < 0 || days > maxProcessingDays {
			return nil, dataErr("catalog", fieldErr(at("processing_days"), "%d is out of range 0..%d", days, maxProcessingDays))
		}
		if err := ValidateText(at("legal_basis"), p.LegalBasis, maxLegalBasisLen, false); err != nil {
			return nil, dataErr("catalog", err)
		}
		c.procs[i] = Procedure{
			Code:           p.Code,
			NameVI:         p.NameVI,
			NameEN:         p.NameEN,
			ProcessingDays: *p.ProcessingDays,
			LegalBasis:     p.LegalBasis,
		}
		c.index[p.Code] = i
	}
	return c, nil
}

// Lookup returns the procedure with the given code.
func (c *Catalog) Lookup(code string) (Procedure, bool) {
	if c == nil {
		return Procedure{}, false
	}
	i, ok := c.index[code]
	if !ok {
		return Procedure{}, false
	}
	return c.procs[i], true
}

// All returns every procedure in file order. The slice is a copy.
func (c *Catalog) All() []Procedure {
	if c == nil {
		return nil
	}
	out := make([]Procedure, len(c.procs))
	copy(out, c.procs)
	return out
}

// decodeDataFile decodes one JSON document into v, rejecting unknown fields
// and anything after the document. path names v in errors ("" for the whole
// document, "procedures[3]" for an entry).
func decodeDataFile(data []byte, v any, path string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonFieldErr(path, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fieldErr(joinPath(path, ""), "has data after the JSON value")
	}
	return nil
}

// decodeEntries decodes each raw entry of the list called name, so that an
// error names the entry's index.
func decodeEntries[T any](name string, raws []json.RawMessage) ([]T, error) {
	out := make([]T, len(raws))
	for i, raw := range raws {
		if err := decodeDataFile(raw, &out[i], fmt.Sprintf("%s[%d]", name, i)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// jsonFieldErr turns an encoding/json error into a *FieldError naming the
// field it is about.
func jsonFieldErr(path string, err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fieldErr(joinPath(path, te.Field), "must be a JSON %s, not %s", jsonKind(te.Type), te.Value)
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if n, uerr := strconv.Unquote(name); uerr == nil {
			name = n
		}
		return fieldErr(joinPath(path, name), "is not a known field")
	}
	return fieldErr(joinPath(path, ""), "is not valid JSON: %v", err)
}

func joinPath(path, field string) string {
	switch {
	case path == "" && field == "":
		return "document"
	case path == "":
		return field
	case field == "":
		return path
	}
	return path + "." + field
}

// jsonKind names a Go type the way a JSON author thinks of it.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "value"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Bool:
		return "boolean"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Struct, reflect.Map:
		return "object"
	}
	return "value"
}

// checkDataHeader checks the fields every data file shares.
func checkDataHeader(version *int, note string) error {
	if version == nil {
		return fieldErr("version", "is missing (want %d)", supportedDataVersion)
	}
	if *version != supportedDataVersion {
		return fieldErr("version", "%d is not supported (want %d)", *version, supportedDataVersion)
	}
	return ValidateText("note", note, maxDataNoteLen, false)
}

// dataErr prefixes err with the kind of data file it is about. The result
// still unwraps to the *FieldError and to ErrInvalid.
func dataErr(kind string, err error) error {
	return fmt.Errorf("%s: %w", kind, err)
}
