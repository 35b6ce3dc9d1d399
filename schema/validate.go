package schema

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Input limits. They keep one dossier small enough to sync over a slow link
// and to render on a clerk's screen.
const (
	MaxNameLen       = 200
	MaxFields        = 50
	MaxFieldKeyLen   = 64
	MaxFieldValueLen = 2000
	MaxNoteLen       = 4000
)

// Applicant is the citizen a dossier is for.
type Applicant struct {
	Name     string `json:"name"`
	IDNumber string `json:"id_number"`
	Phone    string `json:"phone,omitempty"`
}

// NewDossier is what a clerk (or the portal) submits to open a dossier.
type NewDossier struct {
	Procedure string            `json:"procedure"`
	Applicant Applicant         `json:"applicant"`
	Fields    map[string]string `json:"fields"`
	Ward      string            `json:"ward"`
}

var (
	citizenIDRe = regexp.MustCompile(`^[0-9]{12}$`)
	phoneRe     = regexp.MustCompile(`^\+?[0-9]{9,15}$`)
	fieldKeyRe  = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
)

// Normalize trims surrounding space from the text a person typed, so the
// same citizen typed twice is the same data.
func (d *NewDossier) Normalize() {
	d.Procedure = strings.TrimSpace(d.Procedure)
	d.Ward = strings.TrimSpace(d.Ward)
	d.Applicant.Name = strings.Join(strings.Fields(d.Applicant.Name), " ")
	d.Applicant.IDNumber = strings.TrimSpace(d.Applicant.IDNumber)
	d.Applicant.Phone = strings.Map(func(r rune) rune {
		if r == ' ' || r == '.' || r == '-' {
			return -1
		}
		return r
	}, strings.TrimSpace(d.Applicant.Phone))
}

// Validate checks a normalized NewDossier against the catalog and the ward
// registry. The error is a *FieldError naming the first bad field.
func (d *NewDossier) Validate(cat *Catalog, wards *WardRegistry) error {
	if d.Procedure == "" {
		return fieldErr("procedure", "is required")
	}
	if _, ok := cat.Lookup(d.Procedure); !ok {
		return fieldErr("procedure", "unknown procedure %q (see GET /v1/procedures)", d.Procedure)
	}
	if d.Ward != "" {
		if _, ok := wards.Lookup(d.Ward); !ok {
			return fieldErr("ward", "unknown ward %q", d.Ward)
		}
	}
	if err := ValidateText("applicant.name", d.Applicant.Name, MaxNameLen, true); err != nil {
		return err
	}
	if !citizenIDRe.MatchString(d.Applicant.IDNumber) {
		return fieldErr("applicant.id_number", "must be a 12-digit citizen ID number")
	}
	if d.Applicant.Phone != "" && !phoneRe.MatchString(d.Applicant.Phone) {
		return fieldErr("applicant.phone", "must be 9 to 15 digits, optionally starting with +")
	}
	if len(d.Fields) > MaxFields {
		return fieldErr("fields", "has %d entries, at most %d allowed", len(d.Fields), MaxFields)
	}
	for k, v := range d.Fields {
		if len(k) > MaxFieldKeyLen || !fieldKeyRe.MatchString(k) {
			return fieldErr("fields", "key %.70q must be lower-case letters, digits and _ (at most %d)", k, MaxFieldKeyLen)
		}
		if err := ValidateText("fields."+k, v, MaxFieldValueLen, false); err != nil {
			return err
		}
	}
	return nil
}

// ValidateText checks free text: valid UTF-8, no control characters except
// newline and tab, at most max characters, and present if required.
func ValidateText(field, s string, max int, required bool) error {
	if !utf8.ValidString(s) {
		return fieldErr(field, "is not valid UTF-8")
	}
	if required && strings.TrimSpace(s) == "" {
		return fieldErr(field, "is required")
	}
	if n := utf8.RuneCountInString(s); n > max {
		return fieldErr(field, "is %d characters, at most %d allowed", n, max)
	}
	for _, r := range s {
		if unicode.IsControl(r) && r != '\n' && r != '\t' {
			return fieldErr(field, "contains a control character")
		}
	}
	return nil
}
