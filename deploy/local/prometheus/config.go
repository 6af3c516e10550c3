package prometheus

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Job is the scrape job of every target.
const Job = "podguard"

// FunctionLabel is the target label naming the function whose endpoint is scraped.
//
// The functions' own series of events carry a function label too. The job honours the
// labels it scrapes (honor_labels), so such a series keeps its function label as it is
// instead of having it renamed exported_function, and every other series gets the
// target's.
const FunctionLabel = "function"

// promConfig is the part of Prometheus's configuration file that Start writes. JSON is
// YAML, so the file is written with encoding/json.
type promConfig struct {
	Global        promGlobal     `json:"global"`
	RuleFiles     []string       `json:"rule_files,omitempty"`
	ScrapeConfigs []scrapeConfig `json:"scrape_configs"`
}

type promGlobal struct {
	ScrapeInterval     string `json:"scrape_interval"`
	ScrapeTimeout      string `json:"scrape_timeout"`
	EvaluationInterval string `json:"evaluation_interval"`
}

type scrapeConfig struct {
	JobName       string         `json:"job_name"`
	HonorLabels   bool           `json:"honor_labels"`
	MetricsPath   string         `json:"metrics_path"`
	StaticConfigs []staticConfig `json:"static_configs"`
}

type staticConfig struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// configFile renders the configuration of cfg (whose defaults are set) as the contents
// of prometheus.yml. Rule files are made absolute: Prometheus resolves relative ones
// against the configuration file's directory.
func configFile(cfg Config) ([]byte, error) {
	names := make([]string, 0, len(cfg.Targets))
	for name := range cfg.Targets {
		names = append(names, name)
	}
	sort.Strings(names)
	static := make([]staticConfig, 0, len(names))
	for _, name := range names {
		addr, err := targetAddr(cfg.Targets[name])
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", name, err)
		}
		if name == "" {
			return nil, fmt.Errorf("target %q: no function name", addr)
		}
		static = append(static, staticConfig{Targets: []string{addr}, Labels: map[string]string{FunctionLabel: name}})
	}
	rules := make([]string, 0, len(cfg.RuleFiles))
	for _, f := range cfg.RuleFiles {
		abs, err := filepath.Abs(f)
		if err != nil {
			return nil, fmt.Errorf("rule file %s: %w", f, err)
		}
		rules = append(rules, abs)
	}
	c := promConfig{
		Global: promGlobal{
			ScrapeInterval:     promDuration(cfg.ScrapeInterval),
			ScrapeTimeout:      promDuration(cfg.ScrapeInterval),
			EvaluationInterval: promDuration(cfg.EvaluationInterval),
		},
		RuleFiles:     rules,
		ScrapeConfigs: []scrapeConfig{{JobName: Job, HonorLabels: true, MetricsPath: "/metrics", StaticConfigs: static}},
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("prometheus configuration: %w", err)
	}
	return append(b, '\n'), nil
}

// targetAddr is the host:port of a target given as host:port or as the http URL of its
// /metrics endpoint (as the local runner lists them).
func targetAddr(target string) (string, error) {
	addr := target
	if strings.Contains(target, "://") {
		u, err := url.Parse(target)
		if err != nil {
			return "", fmt.Errorf("%q: %w", target, err)
		}
		if u.Scheme != "http" || (u.Path != "/metrics" && u.Path != "") || u.RawQuery != "" || u.User != nil {
			return "", fmt.Errorf("%q: want host:port or http://host:port/metrics", target)
		}
		addr = u.Host
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", fmt.Errorf("%q is not host:port: %w", target, err)
	}
	return addr, nil
}

// promDuration writes d as Prometheus reads durations ("1500ms"; Go's "1.5s" is not one).
func promDuration(d time.Duration) string {
	return fmt.Sprintf("%dms", d.Milliseconds())
}
