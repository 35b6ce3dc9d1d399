package schema

import (
	"errors"
	"strings"
	"testing"
)

func TestDefaultCatalogParses(t *testing.T) {
	if _, err := ParseCatalog(procedureData); err != nil {
		t.Fatalf("embedded data/procedures.json: %v", err)
	}
	c := DefaultCatalog()
	if c != DefaultCatalog() {
		t.Error("DefaultCatalog returns a new catalog each call; want one shared catalog")
	}
	all := c.All()
	if len(all) < 12 {
		t.Errorf("catalog has %d procedures, want at least 12", len(all))
	}
	for i, p := range all {
		got, ok := c.Lookup(p.Code)
		if !ok || got != p {
			t.Errorf("Lookup(%q) = %+v, %v; want All()[%d] = %+v", p.Code, got, ok, i, p)
		}
		if p.LegalBasis == "" {
			t.Errorf("%s has no legal_basis", p.Code)
		}
	}
}

func TestDefaultCatalogRequiredCodes(t *testing.T) {
	c := DefaultCatalog()
	for _, code := range []string{
		"birth-registration",
		"death-registration",
		"marriage-registration",
		"certified-copy",
		"residence-confirmation",
		"judicial-record-certificate",
		"business-household-registration",
		"land-use-right-change",
		"construction-permit",
		"social-insurance-book-reissue",
	} {
		if _, ok := c.Lookup(code); !ok {
			t.Errorf("required procedure %q is missing", code)
		}
	}
	if p, _ := c.Lookup("birth-registration"); p.ProcessingDays != 0 {
		t.Errorf("birth-registration takes %d days, want 0 (same day, Luật Hộ tịch Điều 16)", p.ProcessingDays)
	}
	if _, ok := c.Lookup("no-such-procedure"); ok {
		t.Error("Lookup of an unknown code succeeded")
	}
}

func TestCatalogAllIsACopyInFileOrder(t *testing.T) {
	c, err := ParseCatalog([]byte(`{"version":1,"procedures":[
		{"code":"b","name_vi":"B","name_en":"B","processing_days":2},
		{"code":"a","name_vi":"A","name_en":"A","processing_days":0,"legal_basis":"x"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	all := c.All()
	if len(all) != 2 || all[0].Code != "b" || all[1].Code != "a" {
		t.Fatalf("All() = %+v, want b then a", all)
	}
	all[0].Code = "changed"
	if c.All()[0].Code != "b" {
		t.Error("changing the slice All returned changed the catalog")
	}
	var nilCat *Catalog
	if _, ok := nilCat.Lookup("a"); ok || nilCat.All() != nil {
		t.Error("a nil catalog is not empty")
	}
}

func TestParseCatalogErrors(t *testing.T) {
	const good = `{"code":"ok","name_vi":"Tên","name_en":"Name","processing_days":1}`
	proc := func(fields string) string {
		return `{"version":1,"procedures":[` + good + `,` + fields + `]}`
	}
	tests := []struct {
		name string
		data string
		want string // substring of the error
	}{
		{"empty input", ``, "document: is not valid JSON"},
		{"not JSON", `{"version":1,`, "document: is not valid JSON"},
		{"array", `[]`, "document: must be a JSON object, not array"},
		{"trailing data", `{"version":1,"procedures":[` + good + `]} {}`, "document: has data after the JSON value"},
		{"unknown top-level field", `{"version":1,"procedures":[` + good + `],"extra":1}`, "extra: is not a known field"},
		{"unknown entry field", proc(`{"code":"x","name_vi":"a","name_en":"b","processing_days":1,"fee":0}`), "procedures[1].fee: is not a known field"},
		{"missing version", `{"procedures":[` + good + `]}`, "version: is missing"},
		{"version 2", `{"version":2,"procedures":[` + good + `]}`, "version: 2 is not supported"},
		{"version as string", `{"version":"1","procedures":[` + good + `]}`, "version: must be a JSON integer, not string"},
		{"no procedures", `{"version":1,"procedures":[]}`, "procedures: must list at least one"},
		{"procedures missing", `{"version":1}`, "procedures: must list at least one"},
		{"procedures an object", `{"version":1,"procedures":{}}`, "procedures: must be a JSON array, not object"},
		{"entry a string", `{"version":1,"procedures":["birth-registration"]}`, "procedures[0]: must be a JSON object, not string"},
		{"entry null", `{"version":1,"procedures":[null]}`, "procedures[0].code: is required"},
		{"entry empty", `{"version":1,"procedures":[{}]}`, "procedures[0].code: is required"},
		{"code missing", proc(`{"name_vi":"a","name_en":"b","processing_days":1}`), "procedures[1].code: is required"},
		{"code not a slug", proc(`{"code":"Birth Reg","name_vi":"a","name_en":"b","processing_days":1}`), `procedures[1].code: "Birth Reg" is not a slug`},
		{"code with double hyphen", proc(`{"code":"a--b","name_vi":"a","name_en":"b","processing_days":1}`), `procedures[1].code: "a--b" is not a slug`},
		{"code with trailing hyphen", proc(`{"code":"a-","name_vi":"a","name_en":"b","processing_days":1}`), `procedures[1].code: "a-" is not a slug`},
		{"code too long", proc(`{"code":"` + strings.Repeat("a", 65) + `","name_vi":"a","name_en":"b","processing_days":1}`), "procedures[1].code: \"aaaa"},
		{"duplicate code", proc(`{"code":"ok","name_vi":"a","name_en":"b","processing_days":1}`), `procedures[1].code: "ok" duplicates procedures[0].code`},
		{"name_vi missing", proc(`{"code":"x","name_en":"b","processing_days":1}`), "procedures[1].name_vi: is required"},
		{"name_vi blank", proc(`{"code":"x","name_vi":"  ","name_en":"b","processing_days":1}`), "procedures[1].name_vi: is required"},
		{"name_en missing", proc(`{"code":"x","name_vi":"a","processing_days":1}`), "procedures[1].name_en: is required"},
		{"name_vi too long", proc(`{"code":"x","name_vi":"` + strings.Repeat("ệ", 201) + `","name_en":"b","processing_days":1}`), "procedures[1].name_vi: is 201 characters"},
		{"name_en control char", proc(`{"code":"x","name_vi":"a","name_en":"b\u0007","processing_days":1}`), "procedures[1].name_en: contains a control character"},
		{"days missing", proc(`{"code":"x","name_vi":"a","name_en":"b"}`), "procedures[1].processing_days: is required"},
		{"days null", proc(`{"code":"x","name_vi":"a","name_en":"b","processing_days":null}`), "procedures[1].processing_days: is required"},
		{"days negative", proc(`{"code":"x","name_vi":"a","name_en":"b","processing_days":-1}`), "procedures[1].processing_days: -1 is out of range"},
		{"days too many", proc(`{"code":"x","name_vi":"a","name_en":"b","processing_days":366}`), "procedures[1].processing_days: 366 is out of range"},
		{"days fractional", proc(`{"code":"x","name_vi":"a","name_en":"b","processing_days":1.5}`), "procedures[1].processing_days: must be a JSON integer, not number 1.5"},
		{"days as string", proc(`{"code":"x","name_vi":"a","name_en":"b","processing_days":"1"}`), "procedures[1].processing_days: must be a JSON integer, not string"},
		{"legal_basis too long", proc(`{"code":"x","name_vi":"a","name_en":"b","processing_days":1,"legal_basis":"` + strings.Repeat("x", 501) + `"}`), "procedures[1].legal_basis: is 501 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCatalog([]byte(tt.data))
			if err == nil {
				t.Fatalf("ParseCatalog succeeded (%d procedures), want an error containing %q", len(c.All()), tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "catalog: ") {
				t.Errorf("error %q does not say it is about the catalog", err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) {
				t.Errorf("error %q is not a *FieldError wrapping ErrInvalid", err)
			}
		})
	}
}

func TestParseCatalogAcceptsBoundaries(t *testing.T) {
	data := `{"version":1,"note":"n","procedures":[
		{"code":"a1-b2-c3","name_vi":"` + strings.Repeat("ệ", 200) + `","name_en":"x","processing_days":0},
		{"code":"z","name_vi":"a","name_en":"b","processing_days":365}]}`
	c, err := ParseCatalog([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := c.Lookup("z"); !ok || p.ProcessingDays != 365 {
		t.Errorf("Lookup(z) = %+v, %v", p, ok)
	}
}

func FuzzParseCatalog(f *testing.F) {
	f.Add(procedureData)
	f.Add([]byte(`{"version":1,"procedures":[{"code":"a","name_vi":"A","name_en":"A","processing_days":3}]}`))
	f.Add([]byte(`{"version":1,"procedures":[{"code":"a","name_vi":"A","name_en":"A","processing_days":3},{"code":"a"}]}`))
	f.Add([]byte(`{"version":1,"procedures":null}`))
	f.Add([]byte(`{"version":null}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"version":1,"procedures":[{"code":"a","name_vi":"\xff","name_en":"A","processing_days":1e400}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCatalog(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %q does not wrap ErrInvalid", err)
			}
			return
		}
		all := c.All()
		if len(all) == 0 {
			t.Fatal("a valid catalog has no procedures")
		}
		for _, p := range all {
			if got, ok := c.Lookup(p.Code); !ok || got != p {
				t.Fatalf("Lookup(%q) = %+v, %v", p.Code, got, ok)
			}
			if !slugRe.MatchString(p.Code) || p.ProcessingDays < 0 || p.ProcessingDays > maxProcessingDays {
				t.Fatalf("accepted an invalid procedure %+v", p)
			}
		}
	})
}
