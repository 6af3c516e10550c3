package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/podguard/podguard/shared/observe"
)

const (
	monitoringDir  = "monitoring"
	rulesFile      = "podguard.rules.yaml"
	rulesTestFile  = "podguard.rules.test.yaml"
	promRuleFile   = "prometheusrule.yaml"
	dashboardFile  = "podguard-dashboard.json"
	dashboardName  = "podguard-dashboard"
	updateMonitors = "PODGUARD_UPDATE_MONITORING"
)

// metricKind is how a metric of podguard is exposed.
type metricKind int

const (
	counter metricKind = iota
	gauge
	histogram
)

// podguardMetrics are the metrics the functions export: the only ones the rules and the
// dashboard may name.
func podguardMetrics() map[string]metricKind {
	return map[string]metricKind{
		"podguard_events_handled_total":                  counter,
		"podguard_event_duration_seconds":                histogram,
		"podguard_operations_started_total":              counter,
		"podguard_operations_finished_total":             counter,
		"podguard_operation_duration_seconds":            histogram,
		"podguard_operations_in_flight":                  gauge,
		"podguard_operation_deadline_used_ratio":         gauge,
		"podguard_resources_total":                       counter,
		"podguard_cinder_duration_seconds":               histogram,
		"podguard_volumes_moved_bytes_total":             counter,
		"podguard_plan_last_available_timestamp_seconds": gauge,
		"podguard_plan_last_failed_timestamp_seconds":    gauge,
		"podguard_plan_available_checkpoints":            gauge,
		"podguard_plan_schedule_interval_seconds":        gauge,
		"podguard_retries_total":                         counter,
		"podguard_dead_letters_total":                    counter,
	}
}

// podguardLabels are the labels of those metrics, with the scrape's job and instance, the
// function target label and the histograms' le.
func podguardLabels() []string {
	return []string{"function", "event_type", "outcome", "kind", "status", "resource_type", "operation", "plan",
		"job", "instance", "le"}
}

// seriesMetric maps the name of a series to the podguard metric it belongs to: a
// histogram's series are <name>_bucket, _sum and _count.
func seriesMetric(series string) (string, bool) {
	metrics := podguardMetrics()
	if k, ok := metrics[series]; ok && k != histogram {
		return series, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(series, suffix); ok && metrics[base] == histogram {
			return base, true
		}
	}
	return "", false
}

// promqlNames returns the metric names and the label names a PromQL expression uses. It is
// a lexer, not a parser (promtool checks the syntax): an identifier is a metric unless it
// is followed by "(" (a function), is a keyword or an aggregation, or stands in a label
// list (by, without, on, ignoring, group_left, group_right) or a selector's braces.
func promqlNames(expr string) (metrics, labels []string) {
	keywords := []string{"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
		"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"}
	grouping := []string{"by", "without", "on", "ignoring", "group_left", "group_right"}
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	skipString := func(i int) int { // expr[i] is a quote; returns the index after the closing one
		q := expr[i]
		for i++; i < len(expr) && expr[i] != q; i++ {
			if expr[i] == '\\' && q != '`' {
				i++
			}
		}
		return i + 1
	}
	ident := func(i int) (string, int) {
		j := i
		for j < len(expr) && isIdent(expr[j]) {
			j++
		}
		return expr[i:j], j
	}
	next := func(i int) byte { // the next character that is not a space
		for ; i < len(expr); i++ {
			if expr[i] != ' ' && expr[i] != '\t' && expr[i] != '\n' {
				return expr[i]
			}
		}
		return 0
	}
	// labelList reads identifiers as labels until the closing character.
	labelList := func(i int, end byte) int {
		for i < len(expr) && expr[i] != end {
			switch c := expr[i]; {
			case c == '"' || c == '\'' || c == '`':
				i = skipString(i)
			case isIdentStart(c):
				var name string
				name, i = ident(i)
				labels = append(labels, name)
			default:
				i++
			}
		}
		return i + 1
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i = skipString(i)
		case c == '#':
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case c == '{':
			i = labelList(i+1, '}')
		case c == '[':
			for i < len(expr) && expr[i] != ']' {
				i++
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '.') {
				i++
			}
		case isIdentStart(c):
			var word string
			word, i = ident(i)
			switch {
			case slices.Contains(grouping, word):
				if j := strings.IndexByte(expr[i:], '('); j >= 0 && next(i) == '(' {
					i = labelList(i+j+1, ')')
				}
			case slices.Contains(keywords, strings.ToLower(word)), next(i) == '(':
			default:
				metrics = append(metrics, word)
			}
		default:
			i++
		}
	}
	return metrics, labels
}

// checkNames reports metrics and labels of expr that podguard does not export, and
// returns the podguard metrics it names.
func checkNames(t *testing.T, where, expr string) []string {
	t.Helper()
	metrics, labels := promqlNames(expr)
	if len(metrics) == 0 {
		t.Errorf("%s: names no metric: %s", where, expr)
	}
	var used []string
	for _, m := range metrics {
		base, ok := seriesMetric(m)
		if !ok {
			t.Errorf("%s: %s is not a metric of podguard (or not a series of it): %s", where, m, expr)
			continue
		}
		used = append(used, base)
	}
	for _, l := range labels {
		if !slices.Contains(podguardLabels(), l) {
			t.Errorf("%s: label %s is not one of podguard's: %s", where, l, expr)
		}
	}
	return used
}

// TestMetricsContract checks that the functions' telemetry exports exactly the metrics
// the rules and the dashboard are written against, of the same types and with podguard's
// labels: every instrument of shared/observe is used once and its Prometheus exposition
// is read back.
func TestMetricsContract(t *testing.T) {
	ctx := context.Background()
	tel, err := observe.New(ctx, "choreographer", observe.Config{MetricsProtocol: "prometheus", TracingProtocol: "none"})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(ctx)
	m, now := tel.Metrics, time.Now()
	m.EventHandled(ctx, "choreographer", "dev.podguard.tick", http.StatusOK, time.Millisecond)
	m.OperationStarted(ctx, observe.Protect)
	m.OperationFinished(ctx, observe.Protect, "available", time.Minute)
	m.ResourcesSettled(ctx, observe.Protect, "OS::Cinder::Volume", "available", 2)
	m.CinderDone(ctx, observe.CinderBackup, "available", now.Add(-time.Minute), now, 1<<30)
	m.Retried(ctx, "dev.podguard.volume.backup", 1)
	m.DeadLetter(ctx, "dev.podguard.volume.backup")
	m.InFlight(observe.Restore, observe.Flights{Count: 1, DeadlineUsed: 0.5})
	m.UpdatePlan("shop", func(p *observe.Plan) {
		p.LastAvailable, p.LastFailed, p.Available, p.Interval = now, now, 3, time.Hour
	})

	rec := httptest.NewRecorder()
	tel.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics answered %d", rec.Code)
	}
	kinds := map[string]metricKind{"counter": counter, "gauge": gauge, "histogram": histogram}
	got := map[string]metricKind{}
	series := regexp.MustCompile(`^(podguard_\w+)\{([^}]*)\} `)
	label := regexp.MustCompile(`(\w+)="`)
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" && strings.HasPrefix(f[2], "podguard_") {
			k, ok := kinds[f[3]]
			if !ok {
				t.Errorf("%s is a %s", f[2], f[3])
			}
			got[f[2]] = k
		}
		if sm := series.FindStringSubmatch(line); sm != nil {
			for _, l := range label.FindAllStringSubmatch(sm[2], -1) {
				if !slices.Contains(podguardLabels(), l[1]) {
					t.Errorf("%s has the label %s, not one of podguard's", sm[1], l[1])
				}
			}
		}
	}
	if want := podguardMetrics(); !reflect.DeepEqual(got, want) {
		for name, k := range want {
			if g, ok := got[name]; !ok || g != k {
				t.Errorf("%s: exported %v (%v), want kind %d", name, ok, g, k)
			}
		}
		for name := range got {
			if _, ok := want[name]; !ok {
				t.Errorf("%s is exported but neither the rules nor the dashboard know it", name)
			}
		}
	}
}

func TestPromQLNames(t *testing.T) {
	m, l := promqlNames(`histogram_quantile(0.9, sum by (kind, le) (rate(podguard_operation_duration_seconds_bucket{job=~"a{b}", kind!="x"}[1h] offset 5m)))
		/ on (kind) group_left (status) max(podguard_operations_in_flight) > bool 1e3 # a comment naming nothing_here
		or vector(0) and up`)
	if want := []string{"podguard_operation_duration_seconds_bucket", "podguard_operations_in_flight", "up"}; !slices.Equal(m, want) {
		t.Errorf("metrics %v, want %v", m, want)
	}
	if want := []string{"kind", "le", "job", "kind", "kind", "status"}; !slices.Equal(l, want) {
		t.Errorf("labels %v, want %v", l, want)
	}
}

// promtool is Prometheus's promtool (the local stack installs Debian's prometheus, which
// brings it). Without it the test skips, unless PODGUARD_REQUIRE_STACK=1.
func promtool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	if os.Getenv("PODGUARD_REQUIRE_STACK") == "1" {
		t.Fatal("no promtool: run `make stack-install` (Debian's prometheus package)")
	}
	t.Skip("no promtool (run `make stack-install`: Debian's prometheus package)")
	return ""
}

func runPromtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), bytes.TrimSpace(out))
}

// ruleGroups is a Prometheus rule file.
type ruleGroups struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Record      string            `json:"record"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

func readYAML(t *testing.T, path string, v any) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

// TestAlertRules checks the alerting rules with promtool (check rules, then their unit
// tests), and that every alert has a severity, a summary and a description naming what
// it is about, names only podguard's metrics, and is tested both firing and silent.
func TestAlertRules(t *testing.T) {
	var rules ruleGroups
	readYAML(t, filepath.Join(monitoringDir, rulesFile), &rules)
	var tests struct {
		RuleFiles []string `json:"rule_files"`
		Tests     []struct {
			Name          string `json:"name"`
			AlertRuleTest []struct {
				EvalTime  string           `json:"eval_time"`
				Alertname string           `json:"alertname"`
				ExpAlerts []map[string]any `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	readYAML(t, filepath.Join(monitoringDir, rulesTestFile), &tests)
	if !slices.Equal(tests.RuleFiles, []string{rulesFile}) {
		t.Errorf("%s tests %v, want [%s]", rulesTestFile, tests.RuleFiles, rulesFile)
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				silent[a.Alertname] = true
			}
		}
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
			}
			for _, a := range []string{"summary", "description"} {
				if !strings.Contains(r.Annotations[a], "{{ $labels.") {
					t.Errorf("%s: its %s names nothing it is about ({{ $labels.<plan, kind, ...> }}): %q", r.Alert, a, r.Annotations[a])
				}
			}
			checkNames(t, r.Alert, r.Expr)
			if !fires[r.Alert] || !silent[r.Alert] {
				t.Errorf("%s: %s has no case where it fires (%v) or none where it must not (%v)", r.Alert, rulesTestFile, fires[r.Alert], silent[r.Alert])
			}
		}
	}
	if len(alerts) == 0 {
		t.Fatalf("%s: no alert", rulesFile)
	}
	t.Logf("alerts: %s", strings.Join(alerts, ", "))
	runPromtool(t, monitoringDir, "check", "rules", rulesFile)
	runPromtool(t, monitoringDir, "test", "rules", rulesTestFile)
}

// prometheusRule is the PrometheusRule manifest for the groups of the rule file rules:
// its text from `groups:` on, indented under spec, so that comments and layout stay.
func prometheusRule(rules []byte) ([]byte, error) {
	i := bytes.Index(rules, []byte("\ngroups:\n"))
	if i < 0 {
		return nil, fmt.Errorf("%s: no top-level groups", rulesFile)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `# podguard's alerting rules for the Prometheus Operator: the groups of %[1]s,
# unchanged. Generated from %[1]s: do not edit; after changing that file, run
#   %[2]s=1 go test ./deploy -run TestPrometheusRule
# The Prometheus Operator loads the PrometheusRules its ruleSelector selects: add the
# labels it selects on (kube-prometheus-stack: release: <its release name>) in your
# kustomization.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: podguard
  labels:
    app.kubernetes.io/name: podguard
    app.kubernetes.io/component: monitoring
spec:
`, rulesFile, updateMonitors)
	for _, line := range strings.SplitAfter(string(rules[i+1:]), "\n") {
		if strings.TrimSpace(line) != "" {
			b.WriteString("  ")
		}
		b.WriteString(line)
	}
	return b.Bytes(), nil
}

// TestPrometheusRule checks that prometheusrule.yaml holds exactly the groups of the rule
// file; with PODGUARD_UPDATE_MONITORING=1 it writes it.
func TestPrometheusRule(t *testing.T) {
	rules, err := os.ReadFile(filepath.Join(monitoringDir, rulesFile))
	if err != nil {
		t.Fatal(err)
	}
	want, err := prometheusRule(rules)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(monitoringDir, promRuleFile)
	if os.Getenv(updateMonitors) == "1" {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not %s wrapped in a PrometheusRule: run %s=1 go test ./deploy -run TestPrometheusRule", path, rulesFile, updateMonitors)
	}
	var plain, wrapped struct {
		Kind   string          `json:"kind"`
		Groups json.RawMessage `json:"groups"`
		Spec   struct {
			Groups json.RawMessage `json:"groups"`
		} `json:"spec"`
	}
	readYAML(t, filepath.Join(monitoringDir, rulesFile), &plain)
	readYAML(t, path, &wrapped)
	if wrapped.Kind != "PrometheusRule" || !jsonEqual(t, plain.Groups, wrapped.Spec.Groups) {
		t.Errorf("%s: kind %s, or its groups differ from %s's", path, wrapped.Kind, rulesFile)
	}
}

func jsonEqual(t *testing.T, a, b json.RawMessage) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}

// TestMonitoringKustomization renders deploy/monitoring: the PrometheusRule and the
// dashboard's ConfigMap for Grafana's sidecar.
func TestMonitoringKustomization(t *testing.T) {
	m := render(t, monitoringDir)
	t.Logf("%s: %s", monitoringDir, m.counts())
	if len(m.objects) != 2 {
		t.Errorf("want the PrometheusRule and the dashboard's ConfigMap, got %s", m.counts())
	}
	pr, ok := m.get("monitoring.coreos.com", "PrometheusRule", "", "podguard")
	if !ok {
		t.Fatal("no PrometheusRule podguard")
	}
	var wrapped struct {
		Spec struct {
			Groups json.RawMessage `json:"groups"`
		} `json:"spec"`
	}
	pr.decode(t, &wrapped)
	var plain struct {
		Groups json.RawMessage `json:"groups"`
	}
	readYAML(t, filepath.Join(monitoringDir, rulesFile), &plain)
	if !jsonEqual(t, plain.Groups, wrapped.Spec.Groups) {
		t.Errorf("the rendered PrometheusRule's groups differ from %s's", rulesFile)
	}
	cm, ok := m.get("", "ConfigMap", "", dashboardName)
	if !ok {
		t.Fatalf("no ConfigMap %s", dashboardName)
	}
	var data struct {
		Data map[string]string `json:"data"`
	}
	cm.decode(t, &data)
	dash, err := os.ReadFile(filepath.Join(monitoringDir, dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	if data.Data[dashboardFile] != string(dash) || cm.Metadata.Labels["grafana_dashboard"] != "1" {
		t.Errorf("ConfigMap %s: want %s as is, labelled grafana_dashboard=1; got labels %v", dashboardName, dashboardFile, cm.Metadata.Labels)
	}
}

// dashPanel is a Grafana panel, reduced to what the tests read.
type dashPanel struct {
	ID          int    `json:"id"`
	Type        string `json:"type"`
	Title       string `json:"title"`
	Description string `json:"description"`
	GridPos     struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Datasource *dashDatasource `json:"datasource"`
	Targets    []struct {
		RefID        string          `json:"refId"`
		Expr         string          `json:"expr"`
		LegendFormat string          `json:"legendFormat"`
		Datasource   *dashDatasource `json:"datasource"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"` // a collapsed row's
}

type dashDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// grafanaVars are Grafana's variables in an expression: $name or ${name}.
var grafanaVars = regexp.MustCompile(`\$\{?(\w+)\}?`)

// substituteVars replaces Grafana's variables in expr: the intervals by 5m, the
// dashboard's own variables by ".*", which stand only as the regular expression of a =~
// matcher.
func substituteVars(t *testing.T, where, expr string, vars map[string]bool) string {
	t.Helper()
	var b strings.Builder
	last := 0
	for _, m := range grafanaVars.FindAllStringSubmatchIndex(expr, -1) {
		b.WriteString(expr[last:m[0]])
		last = m[1]
		switch name := expr[m[2]:m[3]]; {
		case name == "__rate_interval" || name == "__interval" || name == "__range":
			b.WriteString("5m")
		case !vars[name]:
			t.Errorf("%s: unknown variable %s", where, expr[m[0]:m[1]])
		case !strings.HasSuffix(expr[:m[0]], `=~"`) || !strings.HasPrefix(expr[m[1]:], `"`):
			t.Errorf("%s: variable %s is not the whole regular expression of a =~ matcher", where, expr[m[0]:m[1]])
		default:
			b.WriteString(".*")
		}
	}
	b.WriteString(expr[last:])
	return b.String()
}

// TestDashboard checks the Grafana dashboard: it parses, its panels are laid out on the
// grid without overlapping, every panel queries the dashboard's Prometheus data source,
// every expression is PromQL (promtool checks them as recording rules, once Grafana's
// variables are replaced), names only podguard's metrics and labels, and every metric is
// shown.
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(monitoringDir, dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID           string      `json:"uid"`
		Title         string      `json:"title"`
		SchemaVersion int         `json:"schemaVersion"`
		Panels        []dashPanel `json:"panels"`
		Templating    struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Query      any    `json:"query"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion == 0 {
		t.Errorf("uid %q, title %q, schemaVersion %d", d.UID, d.Title, d.SchemaVersion)
	}
	vars := map[string]bool{}
	shown := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type == "query" {
			m := regexp.MustCompile(`^label_values\((\w+)`).FindStringSubmatch(v.Definition)
			if m == nil {
				t.Errorf("variable %s: %q is not label_values(<metric>...)", v.Name, v.Definition)
				continue
			}
			if _, ok := seriesMetric(m[1]); !ok {
				t.Errorf("variable %s: %s is not a metric of podguard", v.Name, m[1])
			}
		}
	}
	if !vars["datasource"] {
		t.Error("no datasource variable")
	}

	var panels []dashPanel
	for _, p := range d.Panels {
		panels = append(panels, p)
		panels = append(panels, p.Panels...)
	}
	type record struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var records []record
	ids := map[int]string{}
	for i, p := range panels {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if prev, ok := ids[p.ID]; ok || p.ID == 0 {
			t.Errorf("%s: id already used by %q (or 0)", where, prev)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v is off the 24-column grid", where, g)
		}
		for _, q := range panels[:i] {
			h := q.GridPos
			if g.X < h.X+h.W && h.X < g.X+g.W && g.Y < h.Y+h.H && h.Y < g.Y+g.H {
				t.Errorf("%s overlaps panel %d %q", where, q.ID, q.Title)
			}
		}
		if p.Title == "" {
			t.Errorf("%s: no title", where)
		}
		if p.Type == "row" {
			continue
		}
		if p.Description == "" {
			t.Errorf("%s: no description", where)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no query", where)
		}
		if ds := p.Datasource; ds == nil || ds.Type != "prometheus" || ds.UID != "${datasource}" {
			t.Errorf("%s: data source %+v, want the dashboard's ${datasource}", where, ds)
		}
		for _, tg := range p.Targets {
			where := fmt.Sprintf("%s query %s", where, tg.RefID)
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("%s: data source %+v, want the dashboard's ${datasource}", where, tg.Datasource)
			}
			expr := substituteVars(t, where, tg.Expr, vars)
			for _, m := range checkNames(t, where, expr) {
				shown[m] = true
			}
			records = append(records, record{Record: fmt.Sprintf("podguard_dashboard:panel_%d_%s", p.ID, tg.RefID), Expr: expr})
		}
	}
	for m := range podguardMetrics() {
		if !shown[m] {
			t.Errorf("the dashboard does not show %s", m)
		}
	}
	if len(records) == 0 {
		t.Fatal("no queries")
	}
	type group struct {
		Name  string   `json:"name"`
		Rules []record `json:"rules"`
	}
	file, err := json.MarshalIndent(struct {
		Groups []group `json:"groups"`
	}{[]group{{Name: "dashboard", Rules: records}}}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard.rules.json"), file, 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, dir, "check", "rules", "dashboard.rules.json")
}
