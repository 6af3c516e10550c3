package schedule

import (
	"strings"
	"testing"
	"time"

	"github.com/podguard/podguard/events"
)

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func times(ts []time.Time) string {
	var out []string
	for _, t := range ts {
		out = append(out, t.UTC().Format(time.RFC3339))
	}
	return strings.Join(out, " ")
}

func TestParseForms(t *testing.T) {
	saved := at("2026-11-16T10:37:12Z") // a Monday
	// Karbor's VEVENT, as its API took it (newlines escaped), a RRULE line and a bare rule
	// are the same schedule; the default start is midnight, so BYHOUR=2 runs at 02:00:00.
	for _, pattern := range []string{
		`BEGIN:VEVENT\nRRULE:FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=2\nEND:VEVENT`,
		"BEGIN:VEVENT\nRRULE:FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=2\nEND:VEVENT\n",
		"RRULE:FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=2",
		"FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=2",
	} {
		r, err := Parse(events.Trigger{Pattern: pattern}, saved)
		if err != nil {
			t.Fatalf("%q: %v", pattern, err)
		}
		got := times(r.Next(saved, 4))
		want := "2026-11-19T02:00:00Z 2026-11-23T02:00:00Z 2026-11-26T02:00:00Z 2026-11-30T02:00:00Z"
		if got != want {
			t.Errorf("%q: next %s, want %s", pattern, got, want)
		}
		if r.Window != 15*time.Minute {
			t.Errorf("default window %s", r.Window)
		}
	}
}

func TestParseStartEndAndZone(t *testing.T) {
	saved := at("2026-03-27T12:00:00Z")
	// 02:30 in Paris: 01:30Z before the change to summer time on 29 March, 00:30Z after.
	r, err := Parse(events.Trigger{Pattern: "FREQ=DAILY;BYHOUR=2;BYMINUTE=30", Timezone: "Europe/Paris",
		StartTime: "2026-03-27 00:00:00", EndTime: "2026-04-01T00:00:00Z", Window: 600}, saved)
	if err != nil {
		t.Fatal(err)
	}
	got := times(r.Next(saved, 10))
	// 29 March 02:30 does not exist in Paris (clocks go from 02:00 to 03:00): it runs at
	// 03:30 summer time, still 01:30Z.
	want := "2026-03-28T01:30:00Z 2026-03-29T01:30:00Z 2026-03-30T00:30:00Z 2026-03-31T00:30:00Z"
	if got != want {
		t.Errorf("next %s\nwant %s", got, want)
	}
	// Karbor's start_time layout gives the minute and second of a rule without them.
	r, err = Parse(events.Trigger{Pattern: "FREQ=HOURLY", StartTime: "2026-03-27 00:17:00"}, saved)
	if err != nil {
		t.Fatal(err)
	}
	if got := times(r.Next(saved, 2)); got != "2026-03-27T12:17:00Z 2026-03-27T13:17:00Z" {
		t.Errorf("hourly from 00:17: %s", got)
	}
}

func TestParseErrors(t *testing.T) {
	saved := at("2026-11-16T10:37:12Z")
	for _, c := range []struct {
		trigger events.Trigger
		want    string
	}{
		{events.Trigger{Pattern: "FREQ=DAILY", Format: "crontab"}, `format "crontab" is not supported`},
		{events.Trigger{Pattern: "FREQ=DAILY", Timezone: "Mars/Olympus"}, `timezone "Mars/Olympus"`},
		{events.Trigger{Pattern: "FREQ=DAILY", Window: 30}, "window 30 s"},
		{events.Trigger{Pattern: "FREQ=DAILY", StartTime: "yesterday"}, "start_time"},
		{events.Trigger{Pattern: "FREQ=DAILY", StartTime: "2026-11-16 00:00:00", EndTime: "2026-11-15 00:00:00"}, "is not after start_time"},
		{events.Trigger{Pattern: "DTSTART:20261116T000000Z\nRRULE:FREQ=DAILY"}, `"DTSTART" is not supported`},
		{events.Trigger{Pattern: "BEGIN:VEVENT\nEND:VEVENT"}, "has no RRULE"},
		{events.Trigger{Pattern: "FREQ=FORTNIGHTLY"}, "RRULE"},
		{events.Trigger{Pattern: "FREQ=MINUTELY;INTERVAL=5"}, "must be at least the window (15m0s) apart"},
		{events.Trigger{Pattern: "FREQ=SECONDLY;INTERVAL=30", Window: 60}, "must be at least the window (1m0s) apart"},
		{events.Trigger{Pattern: "FREQ=DAILY;COUNT=2", StartTime: "2026-01-01 00:00:00"}, "no occurrence after"},
		{events.Trigger{Pattern: "FREQ=DAILY", EndTime: "2026-11-16 05:00:00"}, "no occurrence after"},
	} {
		_, err := Parse(c.trigger, saved)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.trigger, err, c.want)
		}
	}
	if _, err := Parse(events.Trigger{Pattern: "FREQ=MINUTELY;INTERVAL=5", Window: 300}, saved); err != nil {
		t.Errorf("every 5 minutes with a 5-minute window: %v", err)
	}
}

func TestDue(t *testing.T) {
	saved := at("2026-11-16T10:37:12Z")
	r, err := Parse(events.Trigger{Pattern: "FREQ=HOURLY", Window: 900}, saved)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name        string
		after, now  string
		run, latest string
		skipped     string
	}{
		{"nothing yet", "2026-11-16T10:37:12Z", "2026-11-16T10:59:59Z", "", "", ""},
		{"on time", "2026-11-16T10:37:12Z", "2026-11-16T11:00:30Z", "2026-11-16T11:00:00Z", "2026-11-16T11:00:00Z", ""},
		{"late but within the window", "2026-11-16T10:37:12Z", "2026-11-16T11:14:59Z", "2026-11-16T11:00:00Z", "2026-11-16T11:00:00Z", ""},
		{"out of window: skipped, not run late", "2026-11-16T10:37:12Z", "2026-11-16T11:15:00Z", "", "2026-11-16T11:00:00Z", "2026-11-16T11:00:00Z"},
		{"already handled", "2026-11-16T11:00:00Z", "2026-11-16T11:10:00Z", "", "", ""},
		{"after an outage: the latest runs, the missed ones are reported", "2026-11-16T11:00:00Z", "2026-11-16T14:05:00Z",
			"2026-11-16T14:00:00Z", "2026-11-16T14:00:00Z", "2026-11-16T12:00:00Z 2026-11-16T13:00:00Z"},
	} {
		d := r.Due(at(c.after), at(c.now))
		if got := fmtTime(d.Run); got != c.run {
			t.Errorf("%s: run %q, want %q", c.name, got, c.run)
		}
		if got := fmtTime(d.Latest); got != c.latest {
			t.Errorf("%s: latest %q, want %q", c.name, got, c.latest)
		}
		if got := times(d.Skipped); got != c.skipped || d.More != 0 {
			t.Errorf("%s: skipped %q (+%d), want %q", c.name, got, d.More, c.skipped)
		}
	}
	// A long outage reports the first missed occurrences and counts the others.
	d := r.Due(at("2026-11-16T11:00:00Z"), at("2026-11-18T11:30:00Z"))
	if len(d.Skipped) != events.MaxReportedSkips || d.More != 48-events.MaxReportedSkips || !d.Run.IsZero() {
		t.Errorf("two days out: %d skipped listed, %d more, run %v", len(d.Skipped), d.More, d.Run)
	}
}

func TestDueStopsAtTheEnd(t *testing.T) {
	saved := at("2026-11-16T10:37:12Z")
	r, err := Parse(events.Trigger{Pattern: "FREQ=HOURLY", EndTime: "2026-11-16T12:00:00Z"}, saved)
	if err != nil {
		t.Fatal(err)
	}
	d := r.Due(at("2026-11-16T12:00:00Z"), at("2026-11-16T13:05:00Z"))
	if !d.Latest.IsZero() {
		t.Errorf("after the end: %+v", d)
	}
	if next := r.Next(saved, 5); times(next) != "2026-11-16T11:00:00Z 2026-11-16T12:00:00Z" {
		t.Errorf("next %s", times(next))
	}
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
