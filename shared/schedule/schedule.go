// Package schedule evaluates Karbor's calendar triggers: an iCal RRULE, a start and an
// optional end, a time zone, and a window. An occurrence runs if it is noticed within its
// window; one noticed later is skipped and reported, never run late (Karbor's time
// trigger semantics). The choreographer's tick notices occurrences.
//
//	r, err := schedule.Parse(trigger, savedAt)
//	due := r.Due(lastHandled, now) // due.Run: the occurrence to run now, if any
package schedule

import (
	"errors"
	"fmt"
	"strings"
	"time"
	// Triggers name IANA zones, and the functions' images carry no zone database.
	_ "time/tzdata"

	"github.com/teambition/rrule-go"

	"github.com/podguard/podguard/events"
)

// Window bounds, in seconds. The tick runs every minute, so a shorter window could miss
// occurrences it should run.
const (
	DefaultWindow = 900
	MinWindow     = 60
	MaxWindow     = 86400
)

// karborTime is the layout of Karbor's start_time and end_time.
const karborTime = "2006-01-02 15:04:05"

// checkedOccurrences is how many occurrences Parse inspects for their spacing.
const checkedOccurrences = 100

// maxIterations bounds one evaluation: a rule is walked from its start.
const maxIterations = 1_000_000

// Rule is a parsed trigger.
type Rule struct {
	set    *rrule.Set
	Start  time.Time
	End    time.Time // zero: no end
	Window time.Duration
	Loc    *time.Location
}

// Parse checks a trigger and builds its rule. saved is when the schedule is saved: the
// default start is the midnight before it, in the trigger's zone. The error, if any, is
// the user's to fix.
func Parse(t events.Trigger, saved time.Time) (*Rule, error) {
	if t.Format != "" && t.Format != events.FormatCalendar {
		return nil, fmt.Errorf("trigger format %q is not supported: use %q (an iCal RRULE), or a PingSource for cron", t.Format, events.FormatCalendar)
	}
	loc := time.UTC
	if t.Timezone != "" {
		l, err := time.LoadLocation(t.Timezone)
		if err != nil {
			return nil, fmt.Errorf("trigger timezone %q: not a known IANA time zone", t.Timezone)
		}
		loc = l
	}
	window := t.Window
	if window == 0 {
		window = DefaultWindow
	}
	if window < MinWindow || window > MaxWindow {
		return nil, fmt.Errorf("trigger window %d s: want %d to %d seconds", window, MinWindow, MaxWindow)
	}
	r := &Rule{Window: time.Duration(window) * time.Second, Loc: loc}
	var err error
	if t.StartTime == "" {
		s := saved.In(loc)
		r.Start = time.Date(s.Year(), s.Month(), s.Day(), 0, 0, 0, 0, loc)
	} else if r.Start, err = parseTime(t.StartTime, loc); err != nil {
		return nil, fmt.Errorf("trigger start_time: %w", err)
	}
	if t.EndTime != "" {
		if r.End, err = parseTime(t.EndTime, loc); err != nil {
			return nil, fmt.Errorf("trigger end_time: %w", err)
		}
		if !r.End.After(r.Start) {
			return nil, fmt.Errorf("trigger end_time %s is not after start_time %s", r.End.Format(time.RFC3339), r.Start.Format(time.RFC3339))
		}
	}
	rules, err := ruleLines(t.Pattern)
	if err != nil {
		return nil, err
	}
	r.set = &rrule.Set{}
	for _, line := range rules {
		opt, err := rrule.StrToROptionInLocation(line, loc)
		if err != nil {
			return nil, fmt.Errorf("trigger pattern: RRULE %q: %w", line, err)
		}
		opt.Dtstart = r.Start
		rule, err := rrule.NewRRule(*opt)
		if err != nil {
			return nil, fmt.Errorf("trigger pattern: RRULE %q: %w", line, err)
		}
		r.set.RRule(rule)
	}
	r.set.DTStart(r.Start)
	if err := r.checkSpacing(saved); err != nil {
		return nil, err
	}
	return r, nil
}

// parseTime reads RFC 3339, or Karbor's layout in loc.
func parseTime(s string, loc *time.Location) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.In(loc), nil
	}
	t, err := time.ParseInLocation(karborTime, s, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither RFC 3339 nor %q", s, karborTime)
	}
	return t, nil
}

// ruleLines extracts the recurrence rules of a pattern: Karbor's VEVENT (whose newlines
// may arrive escaped as \n), RRULE lines, or a bare rule.
func ruleLines(pattern string) ([]string, error) {
	p := strings.ReplaceAll(pattern, `\n`, "\n")
	var out []string
	for _, line := range strings.Split(p, "\n") {
		line = strings.TrimSpace(line)
		upper := strings.ToUpper(line)
		switch {
		case line == "", upper == "BEGIN:VEVENT", upper == "END:VEVENT", upper == "BEGIN:VCALENDAR", upper == "END:VCALENDAR":
		case strings.HasPrefix(upper, "RRULE:"):
			out = append(out, line[len("RRULE:"):])
		case strings.HasPrefix(upper, "FREQ=") || strings.Contains(upper, ";FREQ="):
			out = append(out, line)
		default:
			name, _, _ := strings.Cut(line, ":")
			return nil, fmt.Errorf("trigger pattern: %q is not supported: only RRULE lines (start, end and zone are the trigger's start_time, end_time and timezone)", name)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("trigger pattern has no RRULE")
	}
	return out, nil
}

// checkSpacing requires occurrences after saved, at least a window (and a minute) apart,
// so that one tick never has two occurrences to run.
func (r *Rule) checkSpacing(saved time.Time) error {
	next := r.Next(saved, checkedOccurrences)
	if len(next) == 0 {
		return fmt.Errorf("the trigger has no occurrence after %s", saved.UTC().Format(time.RFC3339))
	}
	minGap := max(r.Window, time.Duration(MinWindow)*time.Second)
	for i := 1; i < len(next); i++ {
		if gap := next[i].Sub(next[i-1]); gap < minGap {
			return fmt.Errorf("occurrences %s and %s are %s apart: they must be at least the window (%s) apart",
				next[i-1].Format(time.RFC3339), next[i].Format(time.RFC3339), gap, minGap)
		}
	}
	return nil
}

// Next returns up to n occurrences after t.
func (r *Rule) Next(t time.Time, n int) []time.Time {
	var out []time.Time
	it := r.set.Iterator()
	for i := 0; i < maxIterations && len(out) < n; i++ {
		o, ok := it()
		if !ok || r.ended(o) {
			break
		}
		if o.After(t) {
			out = append(out, o)
		}
	}
	return out
}

func (r *Rule) ended(o time.Time) bool { return !r.End.IsZero() && o.After(r.End) }

// Due is what an evaluation found in (after, now].
type Due struct {
	// Run is the occurrence to run now: the latest one, if now is within its window.
	Run time.Time
	// Skipped are the other occurrences, oldest first, at most events.MaxReportedSkips;
	// More counts those left out.
	Skipped []time.Time
	More    int
	// Latest is the latest occurrence found, run or skipped: the next evaluation starts
	// after it. Zero when there was none.
	Latest time.Time
}

// Due evaluates the occurrences after after, up to now. The latest runs if now is less
// than the window after it; every other one is skipped.
func (r *Rule) Due(after, now time.Time) Due {
	var d Due
	var found []time.Time
	it := r.set.Iterator()
	for i := 0; i < maxIterations; i++ {
		o, ok := it()
		if !ok || o.After(now) || r.ended(o) {
			break
		}
		if o.After(after) {
			found = append(found, o)
		}
	}
	if len(found) == 0 {
		return d
	}
	d.Latest = found[len(found)-1]
	missed := found[:len(found)-1]
	if now.Sub(d.Latest) < r.Window {
		d.Run = d.Latest
	} else {
		missed = found
	}
	if len(missed) > events.MaxReportedSkips {
		d.More = len(missed) - events.MaxReportedSkips
		missed = missed[:events.MaxReportedSkips]
	}
	d.Skipped = missed
	return d
}
