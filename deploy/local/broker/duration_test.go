package broker

import (
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{in: "PT0.5S", want: 500 * time.Millisecond},
		{in: "PT2S", want: 2 * time.Second},
		{in: "PT1M", want: time.Minute},
		{in: "PT0.2S", want: 200 * time.Millisecond},
		{in: "PT0.001S", want: time.Millisecond},
		{in: "PT1,5S", want: 1500 * time.Millisecond},
		{in: "PT0S", want: 0},
		{in: "PT1H30M", want: 90 * time.Minute},
		{in: "PT1H2M3.25S", want: time.Hour + 2*time.Minute + 3250*time.Millisecond},
		{in: "PT1.5M", want: 90 * time.Second},
		{in: "PT36H", want: 36 * time.Hour},
		{in: "P1D", want: 24 * time.Hour},
		{in: "P1W", want: 7 * 24 * time.Hour},
		{in: "P1DT12H", want: 36 * time.Hour},
		{in: "P0.5D", want: 12 * time.Hour},
		{in: "", wantErr: "must start with P"},
		{in: "0.5S", wantErr: "must start with P"},
		{in: "pt1s", wantErr: "must start with P"},
		{in: "-PT1S", wantErr: "must start with P"},
		{in: "P", wantErr: "no component after P"},
		{in: "PT", wantErr: "no component after T"},
		{in: "P1DT", wantErr: "no component after T"},
		{in: "P1M", wantErr: "no fixed length"},
		{in: "P1Y", wantErr: "no fixed length"},
		{in: "P1H", wantErr: `unexpected designator 'H'`},
		{in: "PT1D", wantErr: `unexpected designator 'D'`},
		{in: "PT1H1H", wantErr: `unexpected designator 'H'`},
		{in: "PT1M1H", wantErr: `unexpected designator 'H'`},
		{in: "PT1X", wantErr: `unexpected designator 'X'`},
		{in: "PT1", wantErr: "has no designator"},
		{in: "PTS", wantErr: "has no number"},
		{in: "PT.5S", wantErr: "bad number"},
		{in: "PT1.S", wantErr: "bad number"},
		{in: "PT1.2.3S", wantErr: "bad number"},
		{in: "PT1.5M30S", wantErr: "only the last component"},
		{in: "P1.5DT1H", wantErr: "only the last component"},
		{in: "PT99999999999999999999S", wantErr: "out of range"},
		{in: "PT9223372036S", want: 9223372036 * time.Second},
		{in: "PT9223372037S", wantErr: "out of range"},
		{in: "P106751DT24H", wantErr: "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDuration(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseDuration(%q) = %v, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), `"`+tt.in+`"`) {
					t.Errorf("error %q does not name the input", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		name     string
		delivery Delivery
		want     []time.Duration // after failed attempts 0, 1, 2, ...
	}{
		{"exponential", Delivery{BackoffPolicy: BackoffExponential, BackoffDelay: 500 * time.Millisecond},
			[]time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}},
		{"linear", Delivery{BackoffPolicy: BackoffLinear, BackoffDelay: 2 * time.Second},
			[]time.Duration{0, 2 * time.Second, 4 * time.Second, 6 * time.Second}},
		{"no policy: immediate", Delivery{BackoffDelay: time.Second}, []time.Duration{0, 0, 0}},
		{"no delay: immediate", Delivery{BackoffPolicy: BackoffExponential}, []time.Duration{0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for n, want := range tt.want {
				if got := tt.delivery.Backoff(n); got != want {
					t.Errorf("Backoff(%d) = %v, want %v", n, got, want)
				}
			}
		})
	}
	huge := Delivery{BackoffPolicy: BackoffExponential, BackoffDelay: time.Hour}
	if got := huge.Backoff(200); got <= 0 {
		t.Errorf("Backoff overflowed to %v", got)
	}
}
