// Package prometheus runs a real Prometheus server for local runs and tests: Debian's
// /usr/bin/prometheus (the local stack installs it) as a child process listening on a
// free port of 127.0.0.1, with a generated configuration that scrapes the given
// endpoints every second, evaluates the given rule files every second and keeps its
// TSDB in a directory of its own. Start returns once the server answers /-/ready; Query
// runs an instant PromQL query over the HTTP API and returns typed samples; WaitFor polls
// a query until a predicate holds; Close stops the process by its PID and waits for it.
//
// Every target is scraped at http://<host:port>/metrics in the job "podguard", and its
// series carry the label function=<name> beside Prometheus's own job and instance (a
// series that has a function label of its own keeps it: the job honours scraped labels).
// Prometheus applies its targets every 5 s, so the first scrape comes about 5 s after
// Start returns; wait for data with WaitFor:
//
//	srv, err := prometheus.Start(ctx, prometheus.Config{
//		Targets: map[string]string{
//			"choreographer": "127.0.0.1:19090",
//			"list-pods":     "127.0.0.1:19091",
//		},
//		RuleFiles: []string{"deploy/monitoring/podguard.rules.yaml"},
//	})
//	if err != nil {
//		return err
//	}
//	defer srv.Close()
//	samples, err := srv.WaitFor(ctx, `podguard_operations_finished_total{kind="protect"}`,
//		func(s []prometheus.Sample) bool { return len(s) > 0 && s[0].Value >= 1 })
//	if err != nil {
//		return err
//	}
//	fmt.Println(samples[0].Labels["status"], samples[0].Value)
package prometheus
