// Command podguard-local runs every podguard function and the embedded broker on
// 127.0.0.1, routing by the Triggers of deploy/base, against the cluster and the cloud
// named by the environment (KUBECONFIG, OS_CLOUD or OS_*, BANK_*).
//
// With -broker knative the functions sit behind Knative Eventing's own broker instead,
// as deploy/local/eventing.sh runs it (`make eventing-up`): podguard-local installs the
// Broker and Triggers of deploy/overlays/local-eventing into -namespace, listens where
// they deliver (PODGUARD_FUNCTION_ADDRS of the eventing env file), waits until the broker
// routes, and prints the broker's ingress.
//
// Saved pod definitions are sealed with the keyring of -bank-keys (BANK_KEYS_DIR, else
// bank-keys in the stack's state directory), which is created with a random key on the
// first run and kept, so that later runs restore what earlier ones protected.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"go.uber.org/zap"
	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/deploy/local/eventing"
	"github.com/podguard/podguard/deploy/local/prometheus"
	"github.com/podguard/podguard/deploy/local/runner"
	"github.com/podguard/podguard/functions/backupvolume"
	"github.com/podguard/podguard/functions/restorevolume"
	"github.com/podguard/podguard/shared/kube"
)

func main() {
	triggers := flag.String("triggers", "deploy/base", "folder of the Knative manifests to route by")
	addr := flag.String("addr", "127.0.0.1:18500", "broker ingress address (loopback only)")
	tick := flag.Duration("tick", 5*time.Second, "progress tick interval (the PingSource's stand-in); 0 disables it")
	deadLetters := flag.String("dead-letters", "", "JSON-lines file of events that could not be delivered")
	level := flag.String("log-level", "info", "debug, info, warn or error")
	instant := flag.Bool("instant-cinder", false, "back up and restore volumes with in-process Cinder doubles whose backups and volumes are available at once (benchmarks)")
	brokerKind := flag.String("broker", "embedded", "embedded (the local broker) or knative (Knative Eventing's broker, make eventing-up)")
	namespace := flag.String("namespace", "podguard", "with -broker knative: the namespace of the Broker and its Triggers")
	overlay := flag.String("overlay", "deploy/overlays/local-eventing", "with -broker knative: the kustomization whose Broker and Triggers are installed")
	kubectl := flag.String("kubectl", os.Getenv("PODGUARD_KUBECTL"), "with -broker knative: the kubectl that renders the overlay")
	prom := flag.Bool("prometheus", false, "start Debian's prometheus (make stack-install installs it) scraping every function, with deploy/monitoring's alert rules; it stops with the runner")
	promDir := flag.String("prometheus-dir", "", "with -prometheus: where its configuration, data and log stay (default: a temporary directory removed at exit)")
	bankKeys := flag.String("bank-keys", runner.StateBankKeys(), "keyring directory of snapshot-metadata and recreate-pod (one file per key, and primary); created with a random key when empty")
	identity := flag.Bool("identity", true, "sender identity inside the broker, as authentication-oidc in a cluster: every send and delivery carries a token of the local apiserver's, checked against the EventPolicies and by each function (always on with -broker knative, which runs with authentication-oidc)")
	flag.Parse()

	logger, _ := logging.NewLogger("", *level)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	o := runner.Options{Triggers: *triggers, Addr: *addr, Tick: *tick, DeadLetters: *deadLetters, Logger: logger, BankKeys: *bankKeys,
		Access: &runner.Access{Roles: filepath.Join(filepath.Dir(filepath.Clean(*triggers)), "roles")}}
	if *identity || *brokerKind == "knative" {
		o.Identity = &runner.Identity{}
	}
	if *instant {
		o.Cinder = backupvolume.NewInstantCinder()
		o.Volumes = restorevolume.NewInstantVolumes()
	}
	switch *brokerKind {
	case "embedded":
	case "knative":
		k, err := knative(ctx, *namespace, *overlay, *kubectl, logger)
		if err != nil {
			fmt.Fprintln(os.Stderr, "podguard-local:", err)
			os.Exit(1)
		}
		o.Knative = k
	default:
		fmt.Fprintf(os.Stderr, "podguard-local: -broker %q: want embedded or knative\n", *brokerKind)
		os.Exit(2)
	}
	r, err := runner.Start(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "podguard-local:", err)
		os.Exit(1)
	}
	fmt.Printf("broker ingress %s\n", r.IngressURL)
	for _, n := range r.Names() {
		fmt.Printf("  %-18s %-28s metrics %s\n", n, r.Functions[n], r.Metrics[n])
	}
	if *prom {
		srv, err := prometheus.Start(ctx, prometheus.Config{Targets: r.Metrics, ScrapeInterval: 5 * time.Second, EvaluationInterval: 5 * time.Second,
			RuleFiles: []string{filepath.Join(filepath.Dir(*triggers), "monitoring", "podguard.rules.yaml")}, Dir: *promDir})
		if err != nil {
			fmt.Fprintln(os.Stderr, "podguard-local: prometheus:", err)
			_ = r.Close(context.Background())
			os.Exit(1)
		}
		defer srv.Close()
		fmt.Printf("prometheus %s (pid %d, log %s): alerts at %s/alerts\n", srv.URL(), srv.PID(), srv.LogPath(), srv.URL())
	}
	fmt.Printf("front door:  %s (requests; GET /api/checkpoints, /api/restores, /api/deadletters)\n", r.FrontDoor)
	fmt.Printf("token:       kubectl -n podguard create token podguard-local-admin --audience podguard   (podguard-admin)\n")
	fmt.Printf("bank keyring: %s\n", r.BankKeys)
	<-ctx.Done()
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Close(cctx); err != nil {
		fmt.Fprintln(os.Stderr, "podguard-local: close:", err)
		os.Exit(1)
	}
	if r.Broker != nil {
		st := r.Broker.Stats()
		fmt.Printf("events ingested=%d delivered=%d retried=%d dead-lettered=%d unrouted=%d\n", st.Ingested, st.Delivered, st.Retried, st.DeadLettered, st.Unrouted)
	}
}

// knative installs the overlay's Broker and Triggers into the namespace and returns the
// runner's options for that broker.
func knative(ctx context.Context, ns, overlay, kubectl string, logger *zap.SugaredLogger) (*runner.Knative, error) {
	env, err := eventing.LoadEnv(eventing.EnvFile())
	if err != nil {
		return nil, err
	}
	if kubectl == "" {
		return nil, fmt.Errorf("no kubectl to render %s: set -kubectl or PODGUARD_KUBECTL (the stack's env file sets it)", overlay)
	}
	cfg, err := kube.Config{Kubeconfig: os.Getenv("KUBECONFIG"), QPS: 50, Burst: 100}.RESTConfig(nil)
	if err != nil {
		return nil, err
	}
	c, err := eventing.NewClient(cfg, ns, logger.Named("eventing"))
	if err != nil {
		return nil, err
	}
	ictx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	broker, err := c.Install(ictx, kubectl, overlay)
	if err != nil {
		return nil, err
	}
	return &runner.Knative{BrokerURL: env.BrokerURL(ns, broker), Namespace: ns, Broker: broker, Addrs: env.Functions, Triggers: c}, nil
}
