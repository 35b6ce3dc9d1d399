package schema

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"regexp"
	"sync"
)

// Ward kinds: the three kinds of commune-level unit.
const (
	WardKindWard        = "ward"         // phường
	WardKindCommune     = "commune"      // xã
	WardKindSpecialZone = "special_zone" // đặc khu
)

// Ward is one commune-level unit of the city, each with its own office and
// edge node.
type Ward struct {
	Code   string `json:"code"`   // unique, ^[0-9A-Z]{3,10}$
	Name   string `json:"name"`   // Vietnamese name, e.g. "Phường Sài Gòn"
	Kind   string `json:"kind"`   // "ward" | "commune" | "special_zone"
	Backup string `json:"backup"` // code of the default backup office's ward; must exist and differ from Code
}

var wardCodeRe = regexp.MustCompile(`^[0-9A-Z]{3,10}$`)

//go:embed data/wards.json
var wardData []byte

// WardRegistry is the list of the city's wards. It is immutable once parsed
// and safe for concurrent use.
type WardRegistry struct {
	city  string
	wards []Ward
	index map[string]int
}

type wardsFile struct {
	Version *int              `json:"version"`
	City    string            `json:"city"`
	Note    string            `json:"note,omitempty"`
	Wards   []json.RawMessage `json:"wards"`
}

var defaultWards = sync.OnceValue(func() *WardRegistry {
	r, err := ParseWards(wardData)
	if err != nil {
		panic("schema: embedded data/wards.json is broken: " + err.Error())
	}
	return r
})

// DefaultWards returns the ward registry embedded in the binary
// (schema/data/wards.json): the 168 units of Ho Chi Minh City. It is parsed
// once and shared. It panics only if the embedded file is broken, which a
// test guards against.
func DefaultWards() *WardRegistry { return defaultWards() }

// ParseWards parses and validates a ward registry file:
//
//	{"version": 1, "city": "...", "wards": [{"code": "...", "name": "...",
//	  "kind": "ward", "backup": "..."}, ...]}
//
// It requires version 1, a city name, at least one ward, unique codes of 3
// to 10 upper-case letters and digits, unique names of at most 200
// characters, a known kind, and a backup that is another ward of the file.
// Unknown fields are rejected. An error is a *FieldError (wrapping
// ErrInvalid) naming the entry and field.
func ParseWards(data []byte) (*WardRegistry, error) {
	var f wardsFile
	if err := decodeDataFile(data, &f, ""); err != nil {
		return nil, dataErr("wards", err)
	}
	if err := checkDataHeader(f.Version, f.Note); err != nil {
		return nil, dataErr("wards", err)
	}
	if err := ValidateText("city", f.City, MaxNameLen, true); err != nil {
		return nil, dataErr("wards", err)
	}
	if len(f.Wards) == 0 {
		return nil, dataErr("wards", fieldErr("wards", "must list at least one ward"))
	}
	wards, err := decodeEntries[Ward]("wards", f.Wards)
	if err != nil {
		return nil, dataErr("wards", err)
	}
	r := &WardRegistry{
		city:  f.City,
		wards: make([]Ward, len(wards)),
		index: make(map[string]int, len(wards)),
	}
	nameAt := make(map[string]int, len(wards))
	for i, w := range wards {
		at := func(field string) string { return fmt.Sprintf("wards[%d].%s", i, field) }
		if w.Code == "" {
			return nil, dataErr("wards", fieldErr(at("code"), "is required"))
		}
		if !wardCodeRe.MatchString(w.Code) {
			return nil, dataErr("wards", fieldErr(at("code"), "%.40q must be 3 to 10 upper-case letters and digits", w.Code))
		}
		if j, dup := r.index[w.Code]; dup {
			return nil, dataErr("wards", fieldErr(at("code"), "%q duplicates wards[%d].code", w.Code, j))
		}
		if err := ValidateText(at("name"), w.Name, MaxNameLen, true); err != nil {
			return nil, dataErr("wards", err)
		}
		if j, dup := nameAt[w.Name]; dup {
			return nil, dataErr("wards", fieldErr(at("name"), "%q duplicates wards[%d].name", w.Name, j))
		}
		switch w.Kind {
		case WardKindWard, WardKindCommune, WardKindSpecialZone:
		default:
			return nil, dataErr("wards", fieldErr(at("kind"), "%.40q is not one of ward, commune, special_zone", w.Kind))
		}
		r.wards[i] = w
		r.index[w.Code] = i
		nameAt[w.Name] = i
	}
	// Backups refer to codes anywhere in the file, so check them once all
	// codes are known.
	for i, w := range r.wards {
		at := fmt.Sprintf("wards[%d].backup", i)
		switch _, ok := r.index[w.Backup]; {
		case w.Backup == "":
			return nil, dataErr("wards", fieldErr(at, "is required"))
		case w.Backup == w.Code:
			return nil, dataErr("wards", fieldErr(at, "%q is the ward itself; a backup office must be another ward", w.Backup))
		case !ok:
			return nil, dataErr("wards", fieldErr(at, "%.40q is not the code of a ward in this file", w.Backup))
		}
	}
	return r, nil
}

// Lookup returns the ward with the given code.
func (r *WardRegistry) Lookup(code string) (Ward, bool) {
	if r == nil {
		return Ward{}, false
	}
	i, ok := r.index[code]
	if !ok {
		return Ward{}, false
	}
	return r.wards[i], true
}

// All returns every ward in file order. The slice is a copy.
func (r *WardRegistry) All() []Ward {
	if r == nil {
		return nil
	}
	out := make([]Ward, len(r.wards))
	copy(out, r.wards)
	return out
}

// City returns the name of the city the registry is for.
func (r *WardRegistry) City() string {
	if r == nil {
		return ""
	}
	return r.city
}

// ValidWardCode reports whether s has the shape of a ward code.
func ValidWardCode(s string) bool { return wardCodeRe.MatchString(s) }
