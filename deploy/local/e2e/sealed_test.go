package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
	"github.com/podguard/podguard/shared/openstack/volumes"
)

// TestNothingSecretInTheBank protects a pod holding a password in a literal env value and
// a token in an annotation, then reads every object of the test's bank container in Swift:
// neither value is in any of them, in clear or in base64. The checkpoint names the key its
// envelopes are sealed with. Restored into a new namespace, the pod has both values back,
// as the apiserver shows it; the restore's records hold neither.
func TestNothingSecretInTheBank(t *testing.T) {
	e := newEnv(t, envOptions{})
	ns := e.st.Namespace(t, e.kube, "sealed")
	password, token := "s3cr3t-"+rand.Text(), "t0ken-"+rand.Text()
	const annotation = "example.com/api-token"
	v := e.cinderVolume(ns+"-app", nil)
	e.podWith(ns, "app", []*volumes.Volume{v}, []bool{true}, func(p *corev1.Pod) {
		p.Annotations = map[string]string{annotation: token}
		p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "DB_PASSWORD", Value: password}}
	})
	start := time.Now()
	cp, _ := e.protect(ns)
	t.Logf("protected in %s", time.Since(start).Round(100*time.Millisecond))

	n := e.assertNotInBank(password, token)
	t.Logf("after the protect: %d objects of the bank read, neither value in any", n)

	// What was saved is there, sealed: it opens with the runner's keyring, whose primary
	// key the checkpoint names.
	ctx := context.Background()
	b, keys := e.readBank(), e.keys()
	info, err := checkpoint.SavedPod(ctx, b, keys, cp, graph.PodResource(ns, "app").Key())
	if err != nil || info.Pod.Spec.Containers[0].Env[0].Value != password || info.Pod.Annotations[annotation] != token {
		t.Fatalf("saved pod: %+v %v", info, err)
	}
	if used, err := b.CheckpointKeys(ctx, cp); err != nil || !slices.Equal(used, []string{keys.Primary()}) {
		t.Fatalf("keys of checkpoint %s: %v %v, want the primary %s", cp, used, err, keys.Primary())
	}
	if cps, err := b.SealedWith(ctx, keys.Primary()); err != nil || !slices.Contains(cps, cp) {
		t.Fatalf("checkpoints sealed with %s: %v %v", keys.Primary(), cps, err)
	}

	target := ns + "-back"
	start = time.Now()
	rid := e.restore(events.RestoreRequest{Checkpoint: cp, Parameters: events.RestoreParameters{Namespace: target, CreateNamespace: true}}, 1)
	if res := e.restoreFinished(rid, 5*time.Minute); res.Status != events.RestoreSuccess || len(res.Failed) != 0 {
		t.Fatalf("restore finished %+v", res)
	}
	t.Logf("restored in %s", time.Since(start).Round(100*time.Millisecond))
	pods := e.restoredPods(target, rid)
	if len(pods) != 1 {
		t.Fatalf("restored pods %v", pods)
	}
	for name, p := range pods {
		env := p.Spec.Containers[0].Env
		if p.Status.Phase != corev1.PodRunning || len(env) != 1 || env[0].Name != "DB_PASSWORD" || env[0].Value != password || p.Annotations[annotation] != token {
			t.Fatalf("restored pod %s/%s: %s, env %+v, annotations %v", target, name, p.Status.Phase, env, p.Annotations)
		}
	}
	n = e.assertNotInBank(password, token)
	t.Logf("after the restore: %d objects of the bank read, neither value in any", n)
}

// assertNotInBank lists and reads every object of the test's bank container, straight
// from Swift, and fails the test if one holds any of the values, in its name or its
// bytes, in clear or base64-encoded (standard or URL alphabet, at any alignment). It
// returns how many objects it read.
func (e *env) assertNotInBank(values ...string) int {
	e.t.Helper()
	ctx := context.Background()
	conn, err := e.st.Bank(e.bankAuth, e.bank).Connection(e.st.OpenStack())
	if err != nil {
		e.t.Fatal(err)
	}
	names, err := conn.ObjectNamesAll(ctx, e.bank, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if !slices.ContainsFunc(names, func(n string) bool { return strings.Contains(n, "/records/") }) {
		e.t.Fatalf("the bank holds no record: %v", names)
	}
	var forms [][]byte
	for _, v := range values {
		forms = append(forms, []byte(v))
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			forms = append(forms, []byte(enc.EncodeToString([]byte(v))))
			for lead := 1; lead <= 2; lead++ {
				// Within a longer encoded text, the characters that encode only v's bytes.
				s := enc.EncodeToString(append(make([]byte, lead), v...))
				forms = append(forms, []byte(s[4:len(s)-4]))
			}
		}
	}
	for _, name := range names {
		data, err := conn.ObjectGetBytes(ctx, e.bank, name)
		if err != nil {
			e.t.Fatalf("read %s: %v", name, err)
		}
		for _, f := range forms {
			if bytes.Contains(data, f) || strings.Contains(name, string(f)) {
				e.t.Errorf("object %s holds %q", name, f)
			}
		}
	}
	return len(names)
}
