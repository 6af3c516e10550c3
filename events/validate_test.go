package events

import (
	"strings"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
)

func newEvent(t *testing.T, typ string, data string) cloudevents.Event {
	t.Helper()
	e := cloudevents.New()
	e.SetID("1")
	e.SetSource("test")
	e.SetType(typ)
	if data != "" {
		if err := e.SetData(cloudevents.ApplicationJSON, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func TestValidate(t *testing.T) {
	v, err := NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, typ, data string
		wantErr         string // substring; empty means valid
	}{
		{"all namespaces", PodsList, `{"scope":{"allNamespaces":true}}`, ""},
		{"namespaces and selector", PodsList, `{"scope":{"namespaces":["a","b-2"],"labelSelector":"app=web"}}`, ""},
		{"explicit pods", PodsList, `{"scope":{"pods":["default:busybox-test","c88b92a8-e8b4-504c-bad4-343d92061871"]}}`, ""},
		{"missing scope", PodsList, `{}`, "/: missing property 'scope'"},
		{"empty scope", PodsList, `{"scope":{}}`, "/scope"},
		{"bad namespace", PodsList, `{"scope":{"namespaces":["Not_A_NS"]}}`, "/scope/namespaces/0"},
		{"bad pod ref", PodsList, `{"scope":{"pods":["nocolon"]}}`, "/scope/pods/0"},
		{"unknown field", PodsList, `{"scope":{"allNamespaces":true},"extra":1}`, "extra"},
		{"wrong type", PodsList, `{"scope":{"allNamespaces":"yes"}}`, "/scope/allNamespaces"},
		{"not json", PodsList, `{"scope":`, "not valid JSON"},
		{"no data", PodsList, ``, "data: missing"},
		{"show by name", PodShow, `{"pod":"default:busybox-test"}`, ""},
		{"show empty", PodShow, `{"pod":""}`, "/pod"},
		{"unknown type", "dev.example.other", `{}`, "not in the podguard catalog"},
		{"dead letters of a type", DeadLettersList, `{"type":"dev.podguard.volume.backup","limit":5,"marker":"m"}`, ""},
		{"dead letters, no filter", DeadLettersList, `{}`, ""},
		{"dead letters, bad limit", DeadLettersList, `{"limit":0}`, "/limit"},
		{"replay", DeadLetterReplay, `{"deadletter":"0b8f3c1e-2d4a-5b6c-8d7e-9f0a1b2c3d4e"}`, ""},
		{"replay without id", DeadLetterReplay, `{}`, "missing property 'deadletter'"},
		{"replay of a bad id", DeadLetterReplay, `{"deadletter":"../x"}`, "/deadletter"},
		{"retention", ProtectRequested, `{"plan":{"id":"shop","scope":{"allNamespaces":true},"retention":{"max_backups":7,"retention_duration":30}}}`, ""},
		{"retention without limits", ProtectRequested, `{"plan":{"id":"shop","scope":{"allNamespaces":true},"retention":{"max_backups":0}}}`, ""},
		{"negative max_backups", ProtectRequested, `{"plan":{"id":"shop","scope":{"allNamespaces":true},"retention":{"max_backups":-1}}}`, "/plan/retention/max_backups"},
		{"fractional retention_duration", ProtectRequested, `{"plan":{"id":"shop","scope":{"allNamespaces":true},"retention":{"retention_duration":1.5}}}`, "/plan/retention/retention_duration"},
		{"a batch of secrets", MetadataSnapshot, `{"checkpoint":"cp-1","batch":"secrets-0000","deadline":"2026-03-01T12:00:00Z","resources":[{"type":"OS::Kubernetes::Secret","id":"bc2ac010-b1ad-539b-9181-e574b01942f5","name":"shop:db"}]}`, ""},
		{"a batch of service accounts", PodRecreate, `{"restore":"r-1","checkpoint":"cp-1","batch":"serviceaccounts-0001","deadline":"2026-03-01T12:00:00Z","resources":[{"type":"OS::Kubernetes::ServiceAccount","id":"x","name":"shop:app"}],"parameters":{"namespace":"dr","existing_resources":"fail"}}`, ""},
		{"a batch of another kind", MetadataSnapshot, `{"checkpoint":"cp-1","batch":"services-0000","deadline":"2026-03-01T12:00:00Z","resources":[{"type":"OS::Kubernetes::Pod","id":"x","name":"shop:db"}]}`, "/batch"},
		{"an existing_resources policy that is not one", RestoreRequested, `{"checkpoint":"cp-1","parameters":{"existing_resources":"overwrite"}}`, "/parameters/existing_resources"},
		{"a missing object among the listing's problems", PodsListed, `{"scope":{"namespaces":["shop"]},"pods":1,"volumes":0,"graph":{"nodes":[{"type":"OS::Kubernetes::Pod","id":"x","name":"shop:web"}],"problems":[{"pod":"shop:web","object":"Secret/db","reason":"not found"}]}}`, ""},
		{"who asked for a checkpoint", CheckpointFinished, `{"checkpoint":"cp-1","status":"available","resources":2,"requested_by":"schedule shop-hourly"}`, ""},
		{"who asked for a restore", RestoreFinished, `{"restore":"r-1","checkpoint":"cp-1","status":"success","requested_by":"system:serviceaccount:team-a:ci"}`, ""},
		{"who asked for a deletion", CheckpointDeleted, `{"checkpoint":"cp-1","status":"deleted","requested_by":"retention of plan shop"}`, ""},
		{"nobody named", CheckpointDeleted, `{"checkpoint":"cp-1","status":"deleted","requested_by":""}`, "/requested_by"},
		{"unknown retention field", ProtectRequested, `{"plan":{"id":"shop","scope":{"allNamespaces":true},"retention":{"max_checkpoints":3}}}`, "max_checkpoints"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := v.Validate(newEvent(t, tt.typ, tt.data))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("want error containing %q, got none", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestValidateRejectsNonJSONContentType(t *testing.T) {
	v, err := NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	e := newEvent(t, PodsList, "")
	_ = e.SetData("text/plain", []byte(`{"scope":{"allNamespaces":true}}`))
	if err := v.Validate(e); err == nil || !strings.Contains(err.Error(), "datacontenttype") {
		t.Fatalf("want datacontenttype error, got %v", err)
	}
}

func TestScopeCheck(t *testing.T) {
	for _, tt := range []struct {
		s       Scope
		wantErr string
	}{
		{Scope{AllNamespaces: true}, ""},
		{Scope{Namespaces: []string{"a"}, LabelSelector: "x=y"}, ""},
		{Scope{}, "name one of"},
		{Scope{AllNamespaces: true, Namespaces: []string{"a"}}, "exclusive"},
		{Scope{Pods: []string{"a:b"}, LabelSelector: "x"}, "labelSelector"},
	} {
		err := tt.s.Check()
		if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("Check(%+v) = %v, want %q", tt.s, err, tt.wantErr)
		}
	}
}

func TestEveryCatalogTypeHasSchema(t *testing.T) {
	for _, ty := range Catalog() {
		if _, err := Schema(ty.Name); err != nil {
			t.Errorf("%s: %v", ty.Name, err)
		}
		if len(ty.Producers) == 0 || len(ty.Consumers) == 0 {
			t.Errorf("%s: producers and consumers must be named", ty.Name)
		}
	}
}

func TestCheckCaller(t *testing.T) {
	for _, tt := range []struct {
		caller  string
		wantErr string
	}{
		{"system:serviceaccount:team-a:ci", ""},
		{"oidc:alice@example.com", ""},
		{"https://issuer.example.com#Zoë Müller", ""},
		{strings.Repeat("a", MaxCallerLength), ""},
		{"", "is empty"},
		{strings.Repeat("a", MaxCallerLength+1), "more than 512"},
		{"alice\tbob", "unprintable character U+0009 at byte 5"},
		{"alice\u200b", "unprintable character U+200B"},
		{"alice\xff", "is not UTF-8"},
	} {
		err := CheckCaller(tt.caller)
		if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("CheckCaller(%q) = %v, want %q", tt.caller, err, tt.wantErr)
		}
	}
}
