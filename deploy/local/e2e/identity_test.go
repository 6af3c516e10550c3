package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/graph"
)

// postWith posts ev in structured mode to url with token as its bearer token (none when
// empty) and returns the answer's status and body.
func postWith(t *testing.T, url string, ev event.Event, token string) (int, string) {
	t.Helper()
	body, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/cloudevents+json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, strings.TrimSpace(string(msg))
}

// TestOnlyPodguardSpeaks: inside the broker only podguard speaks. Events posted straight
// to the broker's ingress or to a function, as any pod in the cluster can, without a
// token, with a token for another audience, with the token of another part of podguard
// or of a stranger, are refused (401 or 403) and change nothing in the bank, in Cinder or
// in the cluster; the normal cycle, with every send and delivery carrying its token, runs
// around them.
func TestOnlyPodguardSpeaks(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	ns := e.st.Namespace(t, e.kube, "speaks")
	v := e.cinderVolume(ns+"-data", []byte("data"))
	e.podWithVolume(ns, "web", v, true)
	cp, _ := e.protect(ns) // available, with every send and delivery carrying its token

	// A stranger: a service account of podguard's namespace that no EventPolicy names, as
	// a compromised pod there would hold.
	pns := e.runner.Namespace()
	stranger := "podguard-e2e-stranger"
	if _, err := e.kube.CoreV1().ServiceAccounts(pns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: stranger}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	brokerAud := events.BrokerAudience(pns)
	vol := graph.Resource{Type: graph.VolumeType, ID: v.ID, Name: ns + "/web-data"}
	del := newEvent(events.DeleteRequested, events.DeleteRequest{Checkpoint: cp})
	backupDelete := newEvent(events.BackupDelete, events.StepRequest{Checkpoint: cp, Batch: "volumes-0000", Resources: []graph.Resource{vol}})
	backedUp := newEvent(events.VolumeBackedUp, events.StepResult{Checkpoint: cp, Batch: "volumes-0000",
		Results: []events.ResourceResult{{Key: vol.Key(), Status: events.StatusError, Reason: "forged"}}})
	ingress := e.runner.IngressURL
	deleteBackup := e.runner.Functions[events.FnDeleteBackup]
	choreographer := e.runner.Functions[events.FnChoreographer]
	trigger := func(fn, typ string) string { return events.TriggerServiceAccount(events.TriggerName(fn, typ)) }
	cases := []struct {
		name  string
		url   string
		ev    event.Event
		token string
		want  int
	}{
		{"a delete request to the broker without a token", ingress, del, "", http.StatusUnauthorized},
		{"a delete request to the broker with a token that is not one", ingress, del, "not-a-token", http.StatusUnauthorized},
		{"a delete request with the front door's token for another audience", ingress, del,
			e.issue(events.ServiceAccount(events.FnFrontDoor), "podguard"), http.StatusUnauthorized},
		{"a delete request from a stranger", ingress, del, e.issue(stranger, brokerAud), http.StatusForbidden},
		{"a delete request from a step", ingress, del, e.issue(events.ServiceAccount(events.FnBackupVolume), brokerAud), http.StatusForbidden},
		{"a backup deletion from the front door", ingress, backupDelete, e.issue(events.ServiceAccount(events.FnFrontDoor), brokerAud), http.StatusForbidden},
		{"a volume result from the choreographer", ingress, backedUp, e.issue(events.ServiceAccount(events.FnChoreographer), brokerAud), http.StatusForbidden},
		{"a backup deletion to delete-backup without a token", deleteBackup, backupDelete, "", http.StatusUnauthorized},
		{"a backup deletion to delete-backup with the choreographer's own token", deleteBackup, backupDelete,
			e.issue(events.ServiceAccount(events.FnChoreographer), brokerAud), http.StatusUnauthorized},
		{"a backup deletion to delete-backup with its Trigger's token for another function", deleteBackup, backupDelete,
			e.issue(trigger(events.FnDeleteBackup, events.BackupDelete), events.FunctionAudience(events.FnBackupVolume)), http.StatusUnauthorized},
		{"a backup deletion to delete-backup with another Trigger's token", deleteBackup, backupDelete,
			e.issue(trigger(events.FnChoreographer, events.DeleteRequested), events.FunctionAudience(events.FnDeleteBackup)), http.StatusForbidden},
		{"a volume result to the choreographer from a stranger", choreographer, backedUp,
			e.issue(stranger, events.FunctionAudience(events.FnChoreographer)), http.StatusForbidden},
		{"a volume result to the choreographer through the Trigger of another type", choreographer, backedUp,
			e.issue(trigger(events.FnChoreographer, events.ProtectRequested), events.FunctionAudience(events.FnChoreographer)), http.StatusForbidden},
	}

	namespaces := []string{ns}
	before := e.world(cp, []string{v.ID}, namespaces)
	for _, c := range cases {
		status, msg := postWith(t, c.url, c.ev, c.token)
		if status != c.want {
			t.Errorf("%s: answered %d %q, want %d", c.name, status, msg, c.want)
			continue
		}
		t.Logf("%s: %d %s", c.name, status, msg)
	}
	if after := e.world(cp, []string{v.ID}, namespaces); !reflect.DeepEqual(before, after) {
		t.Fatalf("refused events changed the world:\nbefore %+v\nafter  %+v", before, after)
	}
	if got := e.show(cp); got.Status != events.StatusAvailable {
		t.Fatalf("checkpoint after the refusals: %s", got.Status)
	}

	// The same deletion, asked of the front door, goes through the broker with every
	// token in place.
	if code, _, text := e.ask(del, ""); code >= 300 {
		t.Fatalf("delete through the front door: %s", text)
	}
	if d := e.deleted(cp, 2*time.Minute); d.Status != events.StatusDeleted {
		t.Fatalf("delete through the front door: %+v", d)
	}
}
