package broker

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ParseDuration parses an ISO-8601 duration as Knative delivery specs write them:
// PT0.5S, PT2S, PT1M, PT1H30M, P1D, P1W, P1DT12H. Weeks, days, hours, minutes and
// seconds are supported, in that order; the last component may have a fraction
// (with '.' or ','). Years and months are refused: they have no fixed length.
func ParseDuration(s string) (time.Duration, error) {
	d, err := parseISODuration(s)
	if err != nil {
		return 0, fmt.Errorf("ISO-8601 duration %q: %w", s, err)
	}
	return d, nil
}

func parseISODuration(s string) (time.Duration, error) {
	rest, ok := strings.CutPrefix(s, "P")
	if !ok {
		return 0, fmt.Errorf("must start with P")
	}
	datePart, timePart, hasTime := strings.Cut(rest, "T")
	if datePart == "" && !hasTime {
		return 0, fmt.Errorf("no component after P")
	}
	if hasTime && timePart == "" {
		return 0, fmt.Errorf("no component after T")
	}
	date := []unit{{'Y', 0}, {'M', 0}, {'W', 7 * 24 * time.Hour}, {'D', 24 * time.Hour}}
	clock := []unit{{'H', time.Hour}, {'M', time.Minute}, {'S', time.Second}}
	total, fraction, err := sumComponents(datePart, date)
	if err != nil {
		return 0, err
	}
	if hasTime {
		if fraction {
			return 0, fmt.Errorf("only the last component may have a fraction")
		}
		t, _, err := sumComponents(timePart, clock)
		if err != nil {
			return 0, err
		}
		if total > math.MaxInt64-t {
			return 0, fmt.Errorf("too long")
		}
		total += t
	}
	return time.Duration(total), nil
}

// unit is one designator of an ISO-8601 duration; a zero length is refused.
type unit struct {
	designator byte
	length     time.Duration
}

// sumComponents adds up components such as "1H30M" whose designators must follow the
// order of units; it reports whether the last one had a fraction.
func sumComponents(s string, units []unit) (int64, bool, error) {
	var total int64
	next := 0 // index in units of the first designator still allowed
	fraction := false
	for s != "" {
		if fraction {
			return 0, false, fmt.Errorf("only the last component may have a fraction")
		}
		i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' && r != ',' })
		if i < 0 {
			return 0, false, fmt.Errorf("number %q has no designator", s)
		}
		if i == 0 {
			return 0, false, fmt.Errorf("designator %q has no number", s[0])
		}
		number, designator := s[:i], s[i]
		s = s[i+1:]
		k := next
		for k < len(units) && units[k].designator != designator {
			k++
		}
		if k == len(units) {
			return 0, false, fmt.Errorf("unexpected designator %q", designator)
		}
		if units[k].length == 0 {
			return 0, false, fmt.Errorf("years and months have no fixed length: use weeks, days, hours, minutes or seconds")
		}
		next = k + 1
		n, frac, err := componentNanos(number, units[k].length)
		if err != nil {
			return 0, false, err
		}
		fraction = frac
		if total > math.MaxInt64-n {
			return 0, false, fmt.Errorf("too long")
		}
		total += n
	}
	return total, fraction, nil
}

// componentNanos converts "12" or "0.5" of a unit of the given length to nanoseconds.
func componentNanos(number string, length time.Duration) (int64, bool, error) {
	whole, frac, hasFrac := strings.Cut(strings.Replace(number, ",", ".", 1), ".")
	if whole == "" || (hasFrac && frac == "") || strings.ContainsAny(frac, ".,") {
		return 0, false, fmt.Errorf("bad number %q", number)
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || w > math.MaxInt64/int64(length) {
		return 0, false, fmt.Errorf("number %q is out of range", number)
	}
	n := w * int64(length)
	if hasFrac {
		f, err := strconv.ParseFloat("0."+frac, 64)
		if err != nil {
			return 0, false, fmt.Errorf("bad fraction in %q", number)
		}
		extra := int64(math.Round(f * float64(length)))
		if n > math.MaxInt64-extra {
			return 0, false, fmt.Errorf("number %q is out of range", number)
		}
		n += extra
	}
	return n, hasFrac, nil
}
