package prometheus

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestConfigFile(t *testing.T) {
	b, err := configFile(Config{
		Targets:            map[string]string{"list-pods": "http://127.0.0.1:2/metrics", "choreographer": "127.0.0.1:1"},
		RuleFiles:          []string{"rules.yaml"},
		ScrapeInterval:     1500 * time.Millisecond,
		EvaluationInterval: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	var got promConfig
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	abs, _ := filepath.Abs("rules.yaml")
	want := promConfig{
		Global:    promGlobal{ScrapeInterval: "1500ms", ScrapeTimeout: "1500ms", EvaluationInterval: "1000ms"},
		RuleFiles: []string{abs},
		ScrapeConfigs: []scrapeConfig{{JobName: Job, HonorLabels: true, MetricsPath: "/metrics", StaticConfigs: []staticConfig{
			{Targets: []string{"127.0.0.1:1"}, Labels: map[string]string{"function": "choreographer"}},
			{Targets: []string{"127.0.0.1:2"}, Labels: map[string]string{"function": "list-pods"}},
		}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%s", b)
	}
}

func TestConfigFileRefusesBadTargets(t *testing.T) {
	for name, targets := range map[string]map[string]string{
		"no port":      {"choreographer": "127.0.0.1"},
		"https":        {"choreographer": "https://127.0.0.1:1/metrics"},
		"other path":   {"choreographer": "http://127.0.0.1:1/stats"},
		"URL, no port": {"choreographer": "http://127.0.0.1/metrics"},
		"no name":      {"": "127.0.0.1:1"},
	} {
		if _, err := configFile(Config{Targets: targets}.withDefaults()); err == nil {
			t.Errorf("%s: accepted %v", name, targets)
		}
	}
}

func TestDecodeQuery(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       string // Format of the samples, or the error
	}{
		{"vector", `{"status":"success","data":{"resultType":"vector","result":[
			{"metric":{"__name__":"up","job":"podguard"},"value":[1700000000.5,"1"]},
			{"metric":{},"value":[1700000000.5,"NaN"]}]}}`, `up{job="podguard"} 1, {} NaN`},
		{"empty", `{"status":"success","data":{"resultType":"vector","result":[]}}`, `(empty)`},
		{"scalar", `{"status":"success","data":{"resultType":"scalar","result":[1700000000,"+Inf"]}}`, `{} +Inf`},
		{"matrix", `{"status":"success","data":{"resultType":"matrix","result":[]}}`,
			`a matrix result: Query takes expressions of instant vectors and scalars`},
		{"error", `{"status":"error","errorType":"bad_data","error":"parse error"}`, `prometheus answered 400 bad_data: parse error`},
	} {
		samples, err := decodeQuery(400, []byte(tc.body))
		got := Format(samples)
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
	s, err := decodeQuery(200, []byte(`{"status":"success","data":{"resultType":"scalar","result":[1700000000.25,"2"]}}`))
	if err != nil || !s[0].Time.Equal(time.Unix(1700000000, 250e6)) {
		t.Errorf("time: %v, %v", s, err)
	}
}
