// Command podguard-local runs every podguard function and the embedded broker on
// 127.0.0.1, routing by the Triggers of deploy/base, against the cluster and the cloud
// named by the environment (KUBECONFIG, OS_CLOUD or OS_*, BANK_*).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"knative.dev/pkg/logging"

	"github.com/podguard/podguard/deploy/local/runner"
	"github.com/podguard/podguard/functions/backupvolume"
	"github.com/podguard/podguard/functions/restorevolume"
)

func main() {
	triggers := flag.String("triggers", "deploy/base", "folder of the Knative manifests to route by")
	addr := flag.String("addr", "127.0.0.1:18500", "broker ingress address (loopback only)")
	tick := flag.Duration("tick", 5*time.Second, "progress tick interval (the PingSource's stand-in); 0 disables it")
	deadLetters := flag.String("dead-letters", "", "JSON-lines file of events that could not be delivered")
	level := flag.String("log-level", "info", "debug, info, warn or error")
	instant := flag.Bool("instant-cinder", false, "back up and restore volumes with in-process Cinder doubles whose backups and volumes are available at once (benchmarks)")
	flag.Parse()

	logger, _ := logging.NewLogger("", *level)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	o := runner.Options{Triggers: *triggers, Addr: *addr, Tick: *tick, DeadLetters: *deadLetters, Logger: logger}
	if *instant {
		o.Cinder = backupvolume.NewInstantCinder()
		o.Volumes = restorevolume.NewInstantVolumes()
	}
	r, err := runner.Start(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "podguard-local:", err)
		os.Exit(1)
	}
	fmt.Printf("broker ingress %s\n", r.IngressURL)
	for _, n := range r.Names() {
		fmt.Printf("  %-18s %s\n", n, r.Functions[n])
	}
	fmt.Printf("checkpoints: GET %s/api/checkpoints\n", r.Functions["checkpoints"])
	fmt.Printf("restores:    GET %s/api/restores\n", r.Functions["checkpoints"])
	fmt.Printf("dead letters: GET %s/api/deadletters\n", r.Functions["checkpoints"])
	<-ctx.Done()
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Close(cctx); err != nil {
		fmt.Fprintln(os.Stderr, "podguard-local: close:", err)
		os.Exit(1)
	}
	st := r.Broker.Stats()
	fmt.Printf("events ingested=%d delivered=%d retried=%d dead-lettered=%d unrouted=%d\n", st.Ingested, st.Delivered, st.Retried, st.DeadLettered, st.Unrouted)
}
