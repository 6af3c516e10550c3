package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"

	"github.com/podguard/podguard/deploy/local/broker"
	"github.com/podguard/podguard/deploy/local/runner"
	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/functions/choreographer"
	"github.com/podguard/podguard/shared/openstack/backups"
)

// start runs the runner with an observer Trigger for each result users subscribe to.
func (d *demo) start() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ev, err := cehttp.NewEventFromHTTPRequest(r)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			select {
			case d.results <- *ev:
				w.WriteHeader(http.StatusAccepted)
			case <-r.Context().Done():
			}
		}))
	}()
	for k, v := range map[string]string{"BANK_AUTH": "keystone", "BANK_CONTAINER": bankContainer, "REDRIVE_AFTER": "3s", "LOG_LEVEL": "warn"} {
		if os.Getenv(k) == "" {
			os.Setenv(k, v)
		}
	}
	// The results a user subscribes to, delivered to the demo by observer Triggers.
	var observers []broker.Trigger
	for _, typ := range []string{events.CheckpointFinished, events.RestoreFinished, events.CheckpointDeleted} {
		observers = append(observers, broker.Trigger{Name: "demo-" + strings.TrimPrefix(typ, "dev.podguard."),
			Filter: map[string]string{"type": typ}, Subscriber: broker.Destination{Ref: "demo"}})
	}
	r, err := runner.Start(d.ctx, runner.Options{
		Triggers: "deploy/base", Tick: 2 * time.Second, Access: &runner.Access{Roles: "deploy/roles"}, Identity: &runner.Identity{},
		Observers:    observers,
		ObserverURLs: map[string]string{"demo": "http://" + ln.Addr().String()},
		DeadLetters:  d.deadLetters,
		BankKeys:     runner.StateBankKeys(),
	})
	d.runner = r
	return err
}

// newEvent is a request event as a user's system sends it.
func newEvent(typ string, data any) (event.Event, error) {
	ev := cloudevents.NewEvent()
	ev.SetID(uuid.NewString())
	ev.SetSource("podguard-demo")
	ev.SetType(typ)
	ev.SetTime(time.Now().UTC())
	return ev, ev.SetData(cloudevents.ApplicationJSON, data)
}

// send posts a request to the front door with the runner's admin token, as a user's
// system would; the front door forwards it into the broker.
func (d *demo) send(ev event.Event) error {
	c, err := cloudevents.NewClientHTTP(cehttp.WithHeader("Authorization", "Bearer "+d.runner.Token))
	if err != nil {
		return err
	}
	if res := c.Send(cloudevents.ContextWithTarget(d.ctx, d.runner.FrontDoor), ev); !cloudevents.IsACK(res) {
		return fmt.Errorf("send %s to the front door: %w", ev.Type(), res)
	}
	return nil
}

// await waits, at most timeout, for the result event of a type whose podguardcheckpoint
// extension is id (a checkpoint's id, or a restore's for restore events), and decodes its
// data into out.
func (d *demo) await(typ, id string, timeout time.Duration, out any) error {
	ctx, cancel := context.WithTimeout(d.ctx, timeout)
	defer cancel()
	for {
		select {
		case ev := <-d.results:
			if ev.Type() != typ || ev.Extensions()[events.ExtCheckpoint] != id {
				continue // a duplicate of an earlier result, or another operation's
			}
			if err := ev.DataAs(out); err != nil {
				return fmt.Errorf("decode %s: %w", typ, err)
			}
			return nil
		case <-ctx.Done():
			return fmt.Errorf("no %s for %s within %s (%w); events the broker could not deliver are in %s and at %s/api/deadletters",
				typ, id, timeout, ctx.Err(), d.deadLetters, d.runner.Functions[events.FnFrontDoor])
		}
	}
}

// protect protects a namespace and returns the checkpoint once available.
func (d *demo) protect(ns string) (string, error) {
	req := events.ProtectRequest{Plan: events.Plan{ID: "demo", Name: "demo namespace", Scope: events.Scope{Namespaces: []string{ns}},
		Parameters: events.Parameters{Volume: events.VolumeParameters{Description: "podguard demo", Force: true}}}}
	ev, err := newEvent(events.ProtectRequested, req)
	if err != nil {
		return "", err
	}
	if err := d.send(ev); err != nil {
		return "", err
	}
	id := choreographer.CheckpointID(req, ev)
	fmt.Printf("    checkpoint %s is protecting; waiting for %s (Cinder backups take a while)\n", id, events.CheckpointFinished)
	var fin events.CheckpointFinishedResult
	if err := d.await(events.CheckpointFinished, id, 10*time.Minute, &fin); err != nil {
		return "", err
	}
	fmt.Printf("    checkpoint %s: %s, %d resources\n", fin.Checkpoint, strings.ToUpper(fin.Status), fin.Resources)
	if fin.Status != events.StatusAvailable {
		return "", fmt.Errorf("checkpoint %s ended %s, not %s: %s", id, fin.Status, events.StatusAvailable, failures(fin.Failed))
	}
	return id, nil
}

// restore restores a checkpoint into a namespace and returns the restore's id and how it
// ended.
func (d *demo) restore(cp, namespace string) (string, events.RestoreFinishedResult, error) {
	var fin events.RestoreFinishedResult
	req := events.RestoreRequest{Checkpoint: cp, Parameters: events.RestoreParameters{
		RestoreName: "demo-restore", RestoreDescription: "podguard demo", Namespace: namespace, CreateNamespace: true}}
	ev, err := newEvent(events.RestoreRequested, req)
	if err != nil {
		return "", fin, err
	}
	if err := d.send(ev); err != nil {
		return "", fin, err
	}
	id := choreographer.RestoreID(ev)
	fmt.Printf("    restore %s is in progress; waiting for %s\n", id, events.RestoreFinished)
	if err := d.await(events.RestoreFinished, id, 10*time.Minute, &fin); err != nil {
		return id, fin, err
	}
	fmt.Printf("    restore %s: %s\n", id, strings.ToUpper(fin.Status))
	for _, f := range fin.Failed {
		fmt.Printf("    failed %s %s: %s\n", f.Key, f.Name, f.Reason)
	}
	return id, fin, nil
}

// deleteCheckpoint deletes a checkpoint, then shows that the backups of the original
// volumes are gone and that the checkpoint no longer shows.
func (d *demo) deleteCheckpoint(cp string, originals []original) error {
	ev, err := newEvent(events.DeleteRequested, events.DeleteRequest{Checkpoint: cp})
	if err != nil {
		return err
	}
	if err := d.send(ev); err != nil {
		return err
	}
	fmt.Printf("    checkpoint %s is deleting; waiting for %s\n", cp, events.CheckpointDeleted)
	var del events.CheckpointDeletedResult
	if err := d.await(events.CheckpointDeleted, cp, 5*time.Minute, &del); err != nil {
		return err
	}
	fmt.Printf("    checkpoint %s: %s\n", cp, strings.ToUpper(del.Status))
	if del.Status != events.StatusDeleted {
		return fmt.Errorf("checkpoint %s ended %s, not %s: %s", cp, del.Status, events.StatusDeleted, failures(del.Failed))
	}
	var left []string
	for _, o := range originals {
		bs, err := d.backups.List(d.ctx, o.volume.ID)
		if err != nil {
			return fmt.Errorf("list the backups of volume %s: %w", o.volume.ID, err)
		}
		var deleting int
		for _, b := range bs {
			switch b.Status {
			case backups.StatusDeleting, backups.StatusDeleted:
				deleting++
			default:
				left = append(left, fmt.Sprintf("backup %s of volume %s is %s", b.ID, o.volume.ID, b.Status))
			}
		}
		switch {
		case len(bs) == 0:
			fmt.Printf("    Cinder backups of volume %s (%s): none left\n", o.volume.ID, o.volume.Name)
		case deleting == len(bs):
			fmt.Printf("    Cinder backups of volume %s (%s): %d, being deleted by Cinder\n", o.volume.ID, o.volume.Name, deleting)
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("checkpoint %s is deleted but backups are left: %s", cp, strings.Join(left, "; "))
	}
	url := d.runner.FrontDoor + "/api/checkpoints/" + cp
	resp, err := d.runner.Read(d.ctx, "/api/checkpoints/"+cp)
	if err != nil {
		return err
	}
	resp.Body.Close()
	fmt.Printf("    GET %s -> %s\n", url, resp.Status)
	if resp.StatusCode != http.StatusNotFound {
		return fmt.Errorf("the deleted checkpoint %s still shows: GET %s answered %s", cp, url, resp.Status)
	}
	return nil
}
