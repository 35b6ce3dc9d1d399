package schema

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// ict returns a time in CityZone.
func ict(y int, m time.Month, d, hh, mm int) time.Time {
	return time.Date(y, m, d, hh, mm, 0, 0, CityZone)
}

// endOf returns the last millisecond of a day in CityZone.
func endOf(y int, m time.Month, d int) time.Time {
	return time.Date(y, m, d, 23, 59, 59, 999_000_000, CityZone)
}

func TestDefaultCalendarParses(t *testing.T) {
	if _, err := ParseCalendar(holidayData); err != nil {
		t.Fatalf("embedded data/holidays.json: %v", err)
	}
	if DefaultCalendar() != DefaultCalendar() {
		t.Error("DefaultCalendar returns a new calendar each call; want one shared calendar")
	}
}

func TestDefaultCalendarCovers(t *testing.T) {
	c := DefaultCalendar()
	for y := 2025; y <= 2028; y++ {
		if !c.Covers(ict(y, time.June, 1, 12, 0)) {
			t.Errorf("Covers(%d) = false, want true", y)
		}
	}
	for _, y := range []int{2024, 2029} {
		if c.Covers(ict(y, time.June, 1, 12, 0)) {
			t.Errorf("Covers(%d) = true, want false", y)
		}
	}
	// 2028-12-31 17:30 UTC is already 2029 in the city.
	if c.Covers(time.Date(2028, time.December, 31, 17, 30, 0, 0, time.UTC)) {
		t.Error("Covers uses UTC's year, not the city's")
	}
}

// TestDefaultCalendarEntitlement checks the data against Bộ luật Lao động
// 2019, Điều 112: 11 public holidays a year. Holidays on a weekend are made up
// by a nghỉ bù weekday, and a weekday taken off by hoán đổi is paid back by a
// make-up Saturday, so every year has exactly 11 weekdays off net.
func TestDefaultCalendarEntitlement(t *testing.T) {
	c := DefaultCalendar()
	for y := 2025; y <= 2028; y++ {
		net := 0
		for d := (civilDate{y, time.January, 1}); d.y == y; d = d.next() {
			wd := d.weekday()
			weekend := wd == time.Saturday || wd == time.Sunday
			switch working := c.isWorking(d); {
			case !weekend && !working:
				net++
			case weekend && working:
				net--
			}
		}
		if net != 11 {
			t.Errorf("%d has %d weekdays off net of make-up days, want 11", y, net)
		}
	}
	// The fixed-date holidays and the lunar ones given by the brief.
	for _, s := range []string{
		"2025-01-01", "2025-01-29", "2025-04-07", "2025-04-30", "2025-05-01", "2025-09-02",
		"2026-01-01", "2026-02-17", "2026-04-26", "2026-04-30", "2026-05-01", "2026-09-02",
		"2027-01-01", "2027-02-06", "2027-04-16", "2027-04-30", "2027-05-01", "2027-09-02",
		"2028-01-01", "2028-01-26", "2028-04-04", "2028-04-30", "2028-05-01", "2028-09-02",
	} {
		d, _ := parseCivilDate(s)
		if _, ok := c.holidays[d]; !ok {
			t.Errorf("%s is not a holiday", s)
		}
	}
}

func TestIsWorkingDay(t *testing.T) {
	c := DefaultCalendar()
	tests := []struct {
		name string
		at   time.Time
		want bool
	}{
		{"ordinary Monday", ict(2025, time.March, 10, 9, 0), true},
		{"ordinary Saturday", ict(2025, time.March, 8, 9, 0), false},
		{"ordinary Sunday", ict(2025, time.March, 9, 9, 0), false},
		{"Tết 2026 mùng 1", ict(2026, time.February, 17, 9, 0), false},
		{"Tết 2026 29 tháng Chạp", ict(2026, time.February, 16, 9, 0), false},
		{"Monday after Tết 2026", ict(2026, time.February, 23, 9, 0), true},
		{"make-up Saturday 2025-04-26", ict(2025, time.April, 26, 9, 0), true},
		{"swapped-off Friday 2025-05-02", ict(2025, time.May, 2, 9, 0), false},
		{"make-up Saturday 2026-01-10", ict(2026, time.January, 10, 9, 0), true},
		{"swapped-off Friday 2026-01-02", ict(2026, time.January, 2, 9, 0), false},
		{"nghỉ bù Giỗ Tổ 2026-04-27", ict(2026, time.April, 27, 9, 0), false},
		{"Quốc khánh 2025", ict(2025, time.September, 2, 9, 0), false},
		{"UTC Sunday evening is Tết Monday in the city", time.Date(2026, time.February, 15, 17, 30, 0, 0, time.UTC), false},
		{"UTC Sunday evening is a working Monday in the city", time.Date(2026, time.February, 22, 17, 30, 0, 0, time.UTC), true},
		{"UTC Friday afternoon is Friday night in the city", time.Date(2025, time.March, 7, 16, 59, 0, 0, time.UTC), true},
		{"UTC Friday evening is Saturday in the city", time.Date(2025, time.March, 7, 17, 0, 0, 0, time.UTC), false},
		{"beyond the data: weekdays work", ict(2030, time.January, 1, 9, 0), true},
	}
	for _, tt := range tests {
		if got := c.IsWorkingDay(tt.at); got != tt.want {
			t.Errorf("%s: IsWorkingDay(%s) = %v, want %v", tt.name, tt.at, got, tt.want)
		}
	}
}

func TestDueAt(t *testing.T) {
	c := DefaultCalendar()
	tests := []struct {
		name     string
		received time.Time
		days     int
		want     time.Time
	}{
		{"same week", ict(2025, time.March, 4, 10, 0), 2, endOf(2025, time.March, 6)},
		{"Friday + 1 crosses the weekend", ict(2025, time.March, 7, 10, 0), 1, endOf(2025, time.March, 10)},
		{"Friday + 3 crosses the weekend", ict(2025, time.March, 7, 10, 0), 3, endOf(2025, time.March, 12)},
		{"Thursday + 15", ict(2025, time.March, 6, 8, 0), 15, endOf(2025, time.March, 27)},
		{"received on Saturday + 1", ict(2025, time.March, 8, 10, 0), 1, endOf(2025, time.March, 10)},
		{"received on Sunday + 2", ict(2025, time.March, 9, 10, 0), 2, endOf(2025, time.March, 11)},
		{"Thursday before Tết 2026 + 2", ict(2026, time.February, 12, 9, 0), 2, endOf(2026, time.February, 23)},
		{"Friday before Tết 2026 + 1", ict(2026, time.February, 13, 9, 0), 1, endOf(2026, time.February, 23)},
		{"Friday before Tết 2026 + 3", ict(2026, time.February, 13, 9, 0), 3, endOf(2026, time.February, 25)},
		{"received during Tết 2026 + 1", ict(2026, time.February, 18, 9, 0), 1, endOf(2026, time.February, 23)},
		{"received during Tết 2026, same day", ict(2026, time.February, 18, 9, 0), 0, endOf(2026, time.February, 23)},
		{"days 0 on a working day", ict(2025, time.March, 5, 16, 0), 0, endOf(2025, time.March, 5)},
		{"days 0 on a Saturday", ict(2025, time.March, 8, 10, 0), 0, endOf(2025, time.March, 10)},
		{"days 0 on a make-up Saturday", ict(2025, time.April, 26, 10, 0), 0, endOf(2025, time.April, 26)},
		{"days 0 on Sunday before nghỉ bù Monday", ict(2026, time.April, 26, 10, 0), 0, endOf(2026, time.April, 28)},
		{"Friday + 1 lands on a make-up Saturday", ict(2025, time.April, 25, 10, 0), 1, endOf(2025, time.April, 26)},
		{"across 30/4-1/5/2025", ict(2025, time.April, 29, 10, 0), 2, endOf(2025, time.May, 6)},
		{"negative days is same day", ict(2025, time.March, 5, 10, 0), -3, endOf(2025, time.March, 5)},
		{"23:30 local Thursday + 1", ict(2025, time.March, 6, 23, 30), 1, endOf(2025, time.March, 7)},
		{"same instant given in UTC", time.Date(2025, time.March, 6, 16, 30, 0, 0, time.UTC), 1, endOf(2025, time.March, 7)},
		{"00:30 local Friday (Thursday in UTC) + 1", time.Date(2025, time.March, 6, 17, 30, 0, 0, time.UTC), 1, endOf(2025, time.March, 10)},
		{"23:30 local Friday, days 0", time.Date(2025, time.March, 7, 16, 30, 0, 0, time.UTC), 0, endOf(2025, time.March, 7)},
		{"00:30 local Saturday (Friday in UTC), days 0", time.Date(2025, time.March, 7, 17, 30, 0, 0, time.UTC), 0, endOf(2025, time.March, 10)},
		{"across a year end", ict(2025, time.December, 31, 10, 0), 1, endOf(2026, time.January, 5)},
	}
	for _, tt := range tests {
		got := c.DueAt(tt.received, tt.days)
		if !got.Equal(tt.want) {
			t.Errorf("%s: DueAt(%s, %d) = %s, want %s", tt.name, tt.received, tt.days, got, tt.want)
		}
		if got.Location() != CityZone {
			t.Errorf("%s: DueAt returned a time in %s, want CityZone", tt.name, got.Location())
		}
		if !c.IsWorkingDay(got) {
			t.Errorf("%s: DueAt returned %s, not a working day", tt.name, got)
		}
	}
}

func TestParseCalendarErrors(t *testing.T) {
	cal := func(holidays, working string) string {
		return `{"version":1,"holidays":[` + holidays + `],"working_days":[` + working + `]}`
	}
	const h = `{"date":"2026-02-17","name":"Tết"}`
	tests := []struct {
		name string
		data string
		want string
	}{
		{"empty input", ``, "document: is not valid JSON"},
		{"not JSON", `{"version":1,"holidays":[`, "document: is not valid JSON"},
		{"trailing data", cal(h, ``) + `x`, "document: has data after the JSON value"},
		{"unknown field", `{"version":1,"holidays":[],"weekends":[]}`, "weekends: is not a known field"},
		{"unknown entry field", cal(`{"date":"2026-02-17","name":"Tết","paid":true}`, ``), "holidays[0].paid: is not a known field"},
		{"missing version", `{"holidays":[` + h + `]}`, "version: is missing"},
		{"version 0", `{"version":0,"holidays":[` + h + `]}`, "version: 0 is not supported"},
		{"holiday date missing", cal(`{"name":"Tết"}`, ``), `holidays[0].date: "" is not a date`},
		{"holiday date not padded", cal(h+`,{"date":"2026-2-18","name":"Tết"}`, ``), `holidays[1].date: "2026-2-18" is not a date`},
		{"holiday date impossible", cal(`{"date":"2026-02-30","name":"x"}`, ``), `holidays[0].date: "2026-02-30" is not a date`},
		{"holiday date in another format", cal(`{"date":"17/02/2026","name":"x"}`, ``), `holidays[0].date: "17/02/2026"`},
		{"holiday date with time", cal(`{"date":"2026-02-17T00:00:00Z","name":"x"}`, ``), `holidays[0].date: "2026-02-17T00:00:00Z" is not a date`},
		{"holiday date as number", cal(`{"date":20260217,"name":"x"}`, ``), "holidays[0].date: must be a JSON string, not number"},
		{"holiday name missing", cal(`{"date":"2026-02-17"}`, ``), "holidays[0].name: is required"},
		{"holiday name too long", cal(`{"date":"2026-02-17","name":"`+strings.Repeat("T", 201)+`"}`, ``), "holidays[0].name: is 201 characters"},
		{"duplicate holiday", cal(h+`,{"date":"2026-02-18","name":"x"},{"date":"2026-02-17","name":"again"}`, ``), "holidays[2].date: 2026-02-17 duplicates holidays[0].date"},
		{"working day date bad", cal(h, `{"date":"2025-04-31","name":"x"}`), `working_days[0].date: "2025-04-31" is not a date`},
		{"working day name missing", cal(h, `{"date":"2025-04-26"}`), "working_days[0].name: is required"},
		{"duplicate working day", cal(h, `{"date":"2025-04-26","name":"x"},{"date":"2025-04-26","name":"y"}`), "working_days[1].date: 2025-04-26 duplicates working_days[0].date"},
		{"both holiday and working day", cal(`{"date":"2025-04-26","name":"x"}`, `{"date":"2025-04-26","name":"y"}`), "working_days[0].date: 2025-04-26 is also holidays[0]"},
		{"working day on a weekday", cal(h, `{"date":"2025-04-23","name":"x"}`), "working_days[0].date: 2025-04-23 is a Wednesday"},
		{"note too long", `{"version":1,"note":"` + strings.Repeat("n", 2001) + `"}`, "note: is 2001 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCalendar([]byte(tt.data))
			if err == nil {
				t.Fatalf("ParseCalendar succeeded, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "calendar: ") {
				t.Errorf("error %q does not say it is about the calendar", err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) {
				t.Errorf("error %q is not a *FieldError wrapping ErrInvalid", err)
			}
		})
	}
}

func TestParseCalendarMinimal(t *testing.T) {
	c, err := ParseCalendar([]byte(`{"version":1,"holidays":[],"working_days":[{"date":"2030-01-05","name":"make-up working Saturday"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Covers(ict(2030, time.January, 5, 9, 0)) {
		t.Error("a calendar without holidays covers 2030")
	}
	if !c.IsWorkingDay(ict(2030, time.January, 5, 9, 0)) {
		t.Error("the declared Saturday is not a working day")
	}
	if got, want := c.DueAt(ict(2030, time.January, 4, 9, 0), 1), endOf(2030, time.January, 5); !got.Equal(want) {
		t.Errorf("DueAt = %s, want %s", got, want)
	}
}

func FuzzParseCalendar(f *testing.F) {
	f.Add(holidayData)
	f.Add([]byte(`{"version":1,"holidays":[{"date":"2026-02-17","name":"Tết"}],"working_days":[{"date":"2025-04-26","name":"x"}]}`))
	f.Add([]byte(`{"version":1,"holidays":[{"date":"0000-01-01","name":"a"},{"date":"9999-12-31","name":"b"}]}`))
	f.Add([]byte(`{"version":1,"working_days":[{"date":"2025-04-26","name":"x"},{"date":"2025-04-26","name":"x"}]}`))
	f.Add([]byte(`{"version":1,"holidays":null,"working_days":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCalendar(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %q does not wrap ErrInvalid", err)
			}
			return
		}
		at := ict(2026, time.February, 13, 9, 0)
		c.IsWorkingDay(at)
		c.Covers(at)
		due := c.DueAt(at, 3)
		if !due.After(at) || !c.IsWorkingDay(due) {
			t.Fatalf("DueAt(%s, 3) = %s", at, due)
		}
	})
}
