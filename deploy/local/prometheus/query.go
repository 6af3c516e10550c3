package prometheus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Sample is one element of an instant query's result: a series' labels (with __name__
// when the expression keeps it) and its value at the query's time. A scalar result is
// one Sample without labels.
type Sample struct {
	Labels map[string]string
	Value  float64
	Time   time.Time
}

// APIError is an error answered by the HTTP API: Type is Prometheus's errorType
// ("bad_data" for an expression that does not parse, "execution", "timeout", ...).
type APIError struct {
	Status int
	Type   string
	Msg    string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("prometheus answered %d %s: %s", e.Status, e.Type, e.Msg)
}

// apiResponse is the envelope of every answer of /api/v1.
type apiResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
}

type queryData struct {
	ResultType string          `json:"resultType"`
	Result     json.RawMessage `json:"result"`
}

// point is [unix seconds, "value"].
type point [2]json.RawMessage

func (p point) sample(labels map[string]string) (Sample, error) {
	var ts float64
	if err := json.Unmarshal(p[0], &ts); err != nil {
		return Sample{}, fmt.Errorf("sample time %s: %w", p[0], err)
	}
	var text string
	if err := json.Unmarshal(p[1], &text); err != nil {
		return Sample{}, fmt.Errorf("sample value %s: %w", p[1], err)
	}
	v, err := strconv.ParseFloat(text, 64) // also "NaN", "+Inf", "-Inf"
	if err != nil {
		return Sample{}, fmt.Errorf("sample value %q: %w", text, err)
	}
	sec, frac := math.Modf(ts)
	return Sample{Labels: labels, Value: v, Time: time.Unix(int64(sec), int64(math.Round(frac*1e3))*int64(time.Millisecond))}, nil
}

// Query runs the instant query promql at the server's current time. A vector result
// gives one Sample per series (none when nothing matches), a scalar one Sample without
// labels; a range vector or a string is an error. An answer of the API that is an error
// is an *APIError.
func (s *Server) Query(ctx context.Context, promql string) ([]Sample, error) {
	samples, err := s.query(ctx, promql)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", promql, err)
	}
	return samples, nil
}

func (s *Server) query(ctx context.Context, promql string) ([]Sample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/api/v1/query?"+url.Values{"query": {promql}}.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	return decodeQuery(resp.StatusCode, body)
}

// decodeQuery decodes an answer of /api/v1/query.
func decodeQuery(status int, body []byte) ([]Sample, error) {
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("answer %d %.200q: %w", status, body, err)
	}
	if r.Status != "success" {
		return nil, &APIError{Status: status, Type: r.ErrorType, Msg: r.Error}
	}
	var d queryData
	if err := json.Unmarshal(r.Data, &d); err != nil {
		return nil, fmt.Errorf("query data: %w", err)
	}
	switch d.ResultType {
	case "vector":
		var series []struct {
			Metric map[string]string `json:"metric"`
			Value  point             `json:"value"`
		}
		if err := json.Unmarshal(d.Result, &series); err != nil {
			return nil, fmt.Errorf("vector: %w", err)
		}
		samples := make([]Sample, 0, len(series))
		for _, e := range series {
			labels := e.Metric
			if labels == nil {
				labels = map[string]string{}
			}
			smp, err := e.Value.sample(labels)
			if err != nil {
				return nil, err
			}
			samples = append(samples, smp)
		}
		return samples, nil
	case "scalar":
		var p point
		if err := json.Unmarshal(d.Result, &p); err != nil {
			return nil, fmt.Errorf("scalar: %w", err)
		}
		smp, err := p.sample(map[string]string{})
		if err != nil {
			return nil, err
		}
		return []Sample{smp}, nil
	default:
		return nil, fmt.Errorf("a %s result: Query takes expressions of instant vectors and scalars", d.ResultType)
	}
}

// WaitPoll is how often WaitFor runs its query.
const WaitPoll = 200 * time.Millisecond

// WaitFor runs the instant query promql every WaitPoll until holds is true of its result,
// and returns that result. An expression the server refuses (an *APIError of type
// bad_data) ends the wait at once; other errors (a scrape or evaluation still to come, a
// slow answer) are retried. When ctx ends first, the error wraps ctx's and says what the
// query returned last.
func (s *Server) WaitFor(ctx context.Context, promql string, holds func([]Sample) bool) ([]Sample, error) {
	tick := time.NewTicker(WaitPoll)
	defer tick.Stop()
	var (
		last    []Sample
		lastErr error
	)
	for {
		samples, err := s.query(ctx, promql)
		var apiErr *APIError
		switch {
		case err == nil && holds(samples):
			return samples, nil
		case err == nil:
			last, lastErr = samples, nil
		case errors.As(err, &apiErr) && apiErr.Type == "bad_data":
			return nil, fmt.Errorf("query %s: %w", promql, err)
		case ctx.Err() == nil:
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return last, fmt.Errorf("wait for %s (last error: %v): %w", promql, lastErr, ctx.Err())
			}
			return last, fmt.Errorf("wait for %s (last result: %s): %w", promql, Format(last), ctx.Err())
		case <-s.exited:
			return last, fmt.Errorf("wait for %s: prometheus exited (%v)", promql, s.waitErr)
		case <-tick.C:
		}
	}
}

// Format writes samples as PromQL's console does, one `{labels} value` per sample.
func Format(samples []Sample) string {
	if len(samples) == 0 {
		return "(empty)"
	}
	var b []byte
	for i, smp := range samples {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, labelString(smp.Labels)...)
		b = append(b, ' ')
		b = strconv.AppendFloat(b, smp.Value, 'g', -1, 64)
	}
	return string(b)
}

// labelString writes labels as Prometheus does: name{a="1", b="2"}, names sorted.
func labelString(labels map[string]string) string {
	names := make([]string, 0, len(labels))
	for n := range labels {
		if n != "__name__" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(labels["__name__"])
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(n)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(labels[n]))
	}
	b.WriteByte('}')
	return b.String()
}
