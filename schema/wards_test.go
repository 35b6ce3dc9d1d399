package schema

import (
	"errors"
	"strings"
	"testing"
)

func TestDefaultWardsParses(t *testing.T) {
	if _, err := ParseWards(wardData); err != nil {
		t.Fatalf("embedded data/wards.json: %v", err)
	}
	r := DefaultWards()
	if r != DefaultWards() {
		t.Error("DefaultWards returns a new registry each call; want one shared registry")
	}
	if got, want := r.City(), "Thành phố Hồ Chí Minh"; got != want {
		t.Errorf("City() = %q, want %q", got, want)
	}
	all := r.All()
	if len(all) != 168 {
		t.Fatalf("registry has %d units, want 168", len(all))
	}
	kinds := map[string]int{}
	prefix := map[string]string{
		WardKindWard:        "Phường ",
		WardKindCommune:     "Xã ",
		WardKindSpecialZone: "Đặc khu ",
	}
	for i, w := range all {
		kinds[w.Kind]++
		if !strings.HasPrefix(w.Name, prefix[w.Kind]) {
			t.Errorf("wards[%d] %s %q: a %s's name starts with %q", i, w.Code, w.Name, w.Kind, prefix[w.Kind])
		}
		got, ok := r.Lookup(w.Code)
		if !ok || got != w {
			t.Errorf("Lookup(%q) = %+v, %v; want %+v", w.Code, got, ok, w)
		}
		if b, ok := r.Lookup(w.Backup); !ok || b.Code == w.Code {
			t.Errorf("%s's backup %q is not another ward", w.Code, w.Backup)
		}
	}
	if kinds[WardKindWard] != 113 || kinds[WardKindCommune] != 54 || kinds[WardKindSpecialZone] != 1 {
		t.Errorf("kinds = %v, want 113 ward, 54 commune, 1 special_zone", kinds)
	}
	for code, name := range map[string]string{
		"HCM001": "Phường Sài Gòn",
		"HCM168": "Đặc khu Côn Đảo",
	} {
		if w, ok := r.Lookup(code); !ok || w.Name != name {
			t.Errorf("Lookup(%s) = %+v, %v; want %s", code, w, ok, name)
		}
	}
}

func TestWardRegistryAllIsACopy(t *testing.T) {
	r := DefaultWards()
	all := r.All()
	all[0].Name = "changed"
	if r.All()[0].Name == "changed" {
		t.Error("changing the slice All returned changed the registry")
	}
	if _, ok := r.Lookup("NOPE"); ok {
		t.Error("Lookup of an unknown code succeeded")
	}
	var nilReg *WardRegistry
	if _, ok := nilReg.Lookup("HCM001"); ok || nilReg.All() != nil || nilReg.City() != "" {
		t.Error("a nil registry is not empty")
	}
}

func TestParseWardsErrors(t *testing.T) {
	const a = `{"code":"AAA","name":"Phường A","kind":"ward","backup":"BBB"}`
	const b = `{"code":"BBB","name":"Xã B","kind":"commune","backup":"AAA"}`
	reg := func(extra string) string {
		return `{"version":1,"city":"Thành phố","wards":[` + a + `,` + b + `,` + extra + `]}`
	}
	tests := []struct {
		name string
		data string
		want string
	}{
		{"empty input", ``, "document: is not valid JSON"},
		{"not JSON", `{"version":1,"city":`, "document: is not valid JSON"},
		{"trailing data", `{"version":1,"city":"C","wards":[` + a + `,` + b + `]}]`, "document: has data after the JSON value"},
		{"unknown field", `{"version":1,"city":"C","wards":[` + a + `,` + b + `],"province":"x"}`, "province: is not a known field"},
		{"unknown entry field", reg(`{"code":"CCC","name":"C","kind":"ward","backup":"AAA","lat":10.7}`), "wards[2].lat: is not a known field"},
		{"missing version", `{"city":"C","wards":[` + a + `,` + b + `]}`, "version: is missing"},
		{"version 2", `{"version":2,"city":"C","wards":[` + a + `,` + b + `]}`, "version: 2 is not supported"},
		{"city missing", `{"version":1,"wards":[` + a + `,` + b + `]}`, "city: is required"},
		{"city too long", `{"version":1,"city":"` + strings.Repeat("c", 201) + `","wards":[` + a + `,` + b + `]}`, "city: is 201 characters"},
		{"no wards", `{"version":1,"city":"C","wards":[]}`, "wards: must list at least one"},
		{"code missing", reg(`{"name":"C","kind":"ward","backup":"AAA"}`), "wards[2].code: is required"},
		{"code lower case", reg(`{"code":"hcm001","name":"C","kind":"ward","backup":"AAA"}`), `wards[2].code: "hcm001" must be 3 to 10`},
		{"code too short", reg(`{"code":"AB","name":"C","kind":"ward","backup":"AAA"}`), `wards[2].code: "AB"`},
		{"code too long", reg(`{"code":"ABCDEFGHIJK","name":"C","kind":"ward","backup":"AAA"}`), `wards[2].code: "ABCDEFGHIJK"`},
		{"code with a hyphen", reg(`{"code":"HCM-1","name":"C","kind":"ward","backup":"AAA"}`), `wards[2].code: "HCM-1" must be 3 to 10`},
		{"wards an object", `{"version":1,"city":"C","wards":{"AAA":{}}}`, "wards: must be a JSON array, not object"},
		{"entry a number", reg(`7`), "wards[2]: must be a JSON object, not number"},
		{"kind a number", reg(`{"code":"CCC","name":"C","kind":1,"backup":"AAA"}`), "wards[2].kind: must be a JSON string, not number"},
		{"duplicate code", reg(`{"code":"AAA","name":"C","kind":"ward","backup":"BBB"}`), `wards[2].code: "AAA" duplicates wards[0].code`},
		{"name missing", reg(`{"code":"CCC","kind":"ward","backup":"AAA"}`), "wards[2].name: is required"},
		{"name too long", reg(`{"code":"CCC","name":"` + strings.Repeat("ư", 201) + `","kind":"ward","backup":"AAA"}`), "wards[2].name: is 201 characters"},
		{"name with control character", reg(`{"code":"CCC","name":"C\u0000","kind":"ward","backup":"AAA"}`), "wards[2].name: contains a control character"},
		{"duplicate name", reg(`{"code":"CCC","name":"Xã B","kind":"commune","backup":"AAA"}`), `wards[2].name: "Xã B" duplicates wards[1].name`},
		{"kind missing", reg(`{"code":"CCC","name":"C","backup":"AAA"}`), `wards[2].kind: "" is not one of`},
		{"kind unknown", reg(`{"code":"CCC","name":"C","kind":"district","backup":"AAA"}`), `wards[2].kind: "district" is not one of`},
		{"backup missing", reg(`{"code":"CCC","name":"C","kind":"ward"}`), "wards[2].backup: is required"},
		{"backup is itself", reg(`{"code":"CCC","name":"C","kind":"ward","backup":"CCC"}`), `wards[2].backup: "CCC" is the ward itself`},
		{"backup unknown", reg(`{"code":"CCC","name":"C","kind":"ward","backup":"ZZZ"}`), `wards[2].backup: "ZZZ" is not the code of a ward`},
		{"single ward cannot have a backup", `{"version":1,"city":"C","wards":[{"code":"AAA","name":"A","kind":"ward","backup":"AAA"}]}`, `wards[0].backup: "AAA" is the ward itself`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseWards([]byte(tt.data))
			if err == nil {
				t.Fatalf("ParseWards succeeded, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "wards: ") {
				t.Errorf("error %q does not say it is about the wards", err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) {
				t.Errorf("error %q is not a *FieldError wrapping ErrInvalid", err)
			}
		})
	}
}

func TestParseWardsBackupMayPointForward(t *testing.T) {
	r, err := ParseWards([]byte(`{"version":1,"city":"C","wards":[
		{"code":"001","name":"Phường Một","kind":"ward","backup":"ZONE9"},
		{"code":"ZONE9","name":"Đặc khu Chín","kind":"special_zone","backup":"001"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if w, ok := r.Lookup("001"); !ok || w.Backup != "ZONE9" {
		t.Errorf("Lookup(001) = %+v, %v", w, ok)
	}
}

func FuzzParseWards(f *testing.F) {
	f.Add(wardData)
	f.Add([]byte(`{"version":1,"city":"C","wards":[{"code":"AAA","name":"A","kind":"ward","backup":"BBB"},{"code":"BBB","name":"B","kind":"commune","backup":"AAA"}]}`))
	f.Add([]byte(`{"version":1,"city":"C","wards":[{"code":"AAA","name":"A","kind":"ward","backup":"AAA"}]}`))
	f.Add([]byte(`{"version":1,"city":"C","wards":null}`))
	f.Add([]byte(`{"version":1,"city":"\xed\xa0\x80","wards":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseWards(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %q does not wrap ErrInvalid", err)
			}
			return
		}
		all := r.All()
		if len(all) < 2 || r.City() == "" {
			t.Fatalf("accepted a registry of %d wards for city %q", len(all), r.City())
		}
		for _, w := range all {
			if got, ok := r.Lookup(w.Code); !ok || got != w {
				t.Fatalf("Lookup(%q) = %+v, %v", w.Code, got, ok)
			}
			if b, ok := r.Lookup(w.Backup); !ok || b.Code == w.Code {
				t.Fatalf("accepted ward %+v with a bad backup", w)
			}
		}
	})
}
