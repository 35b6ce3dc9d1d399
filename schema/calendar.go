package schema

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"regexp"
	"sync"
	"time"
)

// CityZone is the city's time zone. Vietnam has no daylight saving time, so
// a fixed offset is exact and needs no tzdata on the node.
var CityZone = time.FixedZone("ICT", 7*3600)

//go:embed data/holidays.json
var holidayData []byte

// Calendar knows the city's working days: Monday to Friday, less public
// holidays, plus weekend days officially declared working days (make-up
// Saturdays). It is immutable once parsed and safe for concurrent use.
type Calendar struct {
	holidays map[civilDate]string
	working  map[civilDate]string
	years    map[int]bool
}

type calendarFile struct {
	Version     *int              `json:"version"`
	Note        string            `json:"note,omitempty"`
	Holidays    []json.RawMessage `json:"holidays"`
	WorkingDays []json.RawMessage `json:"working_days"`
}

type calendarDay struct {
	Date string `json:"date"`
	Name string `json:"name"`
}

// civilDate is a day on the calendar, without a time or zone.
type civilDate struct {
	y int
	m time.Month
	d int
}

func civilDateOf(t time.Time) civilDate {
	y, m, d := t.In(CityZone).Date()
	return civilDate{y, m, d}
}

// noon is the date at noon UTC: a time that is on that date whatever the
// arithmetic, used to normalize and to find the weekday.
func (c civilDate) noon() time.Time { return time.Date(c.y, c.m, c.d, 12, 0, 0, 0, time.UTC) }

func (c civilDate) next() civilDate {
	y, m, d := c.noon().AddDate(0, 0, 1).Date()
	return civilDate{y, m, d}
}

func (c civilDate) weekday() time.Weekday { return c.noon().Weekday() }

// endOfDay is the last millisecond of the date in CityZone.
func (c civilDate) endOfDay() time.Time {
	return time.Date(c.y, c.m, c.d, 23, 59, 59, int(999*time.Millisecond), CityZone)
}

func (c civilDate) String() string { return fmt.Sprintf("%04d-%02d-%02d", c.y, c.m, c.d) }

var isoDateRe = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}$`)

func parseCivilDate(s string) (civilDate, bool) {
	if !isoDateRe.MatchString(s) {
		return civilDate{}, false
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return civilDate{}, false
	}
	y, m, d := t.Date()
	return civilDate{y, m, d}, true
}

var defaultCalendar = sync.OnceValue(func() *Calendar {
	c, err := ParseCalendar(holidayData)
	if err != nil {
		panic("schema: embedded data/holidays.json is broken: " + err.Error())
	}
	return c
})

// DefaultCalendar returns the calendar embedded in the binary
// (schema/data/holidays.json). It is parsed once and shared. It panics only
// if the embedded file is broken, which a test guards against.
func DefaultCalendar() *Calendar { return defaultCalendar() }

// ParseCalendar parses and validates a calendar file:
//
//	{"version": 1,
//	 "holidays":     [{"date": "2026-02-17", "name": "Tết Nguyên đán"}, ...],
//	 "working_days": [{"date": "2025-04-26", "name": "make-up working Saturday"}, ...]}
//
// Dates are YYYY-MM-DD. working_days lists weekend days that are officially
// declared working days, so each must be a Saturday or Sunday. A date may
// appear once per list and not in both lists; every entry needs a name.
// Unknown fields are rejected. An error is a *FieldError (wrapping
// ErrInvalid) naming the entry and field.
func ParseCalendar(data []byte) (*Calendar, error) {
	var f calendarFile
	if err := decodeDataFile(data, &f, ""); err != nil {
		return nil, dataErr("calendar", err)
	}
	if err := checkDataHeader(f.Version, f.Note); err != nil {
		return nil, dataErr("calendar", err)
	}
	holidays, err := decodeEntries[calendarDay]("holidays", f.Holidays)
	if err != nil {
		return nil, dataErr("calendar", err)
	}
	workingDays, err := decodeEntries[calendarDay]("working_days", f.WorkingDays)
	if err != nil {
		return nil, dataErr("calendar", err)
	}
	c := &Calendar{
		holidays: make(map[civilDate]string, len(holidays)),
		working:  make(map[civilDate]string, len(workingDays)),
		years:    make(map[int]bool),
	}
	holidayAt := make(map[civilDate]int, len(holidays))
	for i, h := range holidays {
		at := func(field string) string { return fmt.Sprintf("holidays[%d].%s", i, field) }
		d, ok := parseCivilDate(h.Date)
		if !ok {
			return nil, dataErr("calendar", fieldErr(at("date"), "%.40q is not a date of the form YYYY-MM-DD", h.Date))
		}
		if j, dup := holidayAt[d]; dup {
			return nil, dataErr("calendar", fieldErr(at("date"), "%s duplicates holidays[%d].date", d, j))
		}
		if err := ValidateText(at("name"), h.Name, MaxNameLen, true); err != nil {
			return nil, dataErr("calendar", err)
		}
		holidayAt[d] = i
		c.holidays[d] = h.Name
		c.years[d.y] = true
	}
	workingAt := make(map[civilDate]int, len(workingDays))
	for i, w := range workingDays {
		at := func(field string) string { return fmt.Sprintf("working_days[%d].%s", i, field) }
		d, ok := parseCivilDate(w.Date)
		if !ok {
			return nil, dataErr("calendar", fieldErr(at("date"), "%.40q is not a date of the form YYYY-MM-DD", w.Date))
		}
		if j, dup := workingAt[d]; dup {
			return nil, dataErr("calendar", fieldErr(at("date"), "%s duplicates working_days[%d].date", d, j))
		}
		if j, both := holidayAt[d]; both {
			return nil, dataErr("calendar", fieldErr(at("date"), "%s is also holidays[%d]: a date cannot be both", d, j))
		}
		if wd := d.weekday(); wd != time.Saturday && wd != time.Sunday {
			return nil, dataErr("calendar", fieldErr(at("date"), "%s is a %s; only a weekend day can be declared a working day", d, wd))
		}
		if err := ValidateText(at("name"), w.Name, MaxNameLen, true); err != nil {
			return nil, dataErr("calendar", err)
		}
		workingAt[d] = i
		c.working[d] = w.Name
	}
	return c, nil
}

func (c *Calendar) isWorking(d civilDate) bool {
	if _, ok := c.working[d]; ok {
		return true
	}
	if _, ok := c.holidays[d]; ok {
		return false
	}
	wd := d.weekday()
	return wd != time.Saturday && wd != time.Sunday
}

// IsWorkingDay reports whether the day t falls on, in CityZone, is a working
// day: Monday to Friday and not a holiday, or a weekend day listed in
// working_days. Past the years the data covers (see Covers) only weekends
// count as days off.
func (c *Calendar) IsWorkingDay(t time.Time) bool { return c.isWorking(civilDateOf(t)) }

// DueAt returns the deadline for a dossier received at received with a legal
// processing time of days working days. The result is in CityZone.
//
// The rule: the receipt day itself is not counted. Counting starts on the
// first working day strictly after the receipt day (in CityZone), and the
// dossier is due at the end (23:59:59.999 CityZone) of the days-th such
// working day. So a dossier received on Friday with days == 1 is due at the
// end of Monday, whatever the hour it was received.
//
// days == 0 (same-day procedures) means the end of the receipt day if it is
// a working day, otherwise the end of the next working day. A negative days
// is treated as 0.
func (c *Calendar) DueAt(received time.Time, days int) time.Time {
	d := civilDateOf(received)
	if days <= 0 {
		for !c.isWorking(d) {
			d = d.next()
		}
		return d.endOfDay()
	}
	for n := 0; n < days; {
		d = d.next()
		if c.isWorking(d) {
			n++
		}
	}
	return d.endOfDay()
}

// Covers reports whether the holiday data covers the year of t (in
// CityZone): whether the file lists any holiday in that year. Callers warn
// when it does not, because the file is then out of date and deadlines
// ignore that year's holidays.
func (c *Calendar) Covers(t time.Time) bool { return c.years[civilDateOf(t).y] }
