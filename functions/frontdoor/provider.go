package frontdoor

import (
	"encoding/json"
	"fmt"

	"github.com/podguard/podguard/events"
	"github.com/podguard/podguard/shared/checkpoint"
	"github.com/podguard/podguard/shared/graph"
)

// Provider describes what this deployment protects, as Karbor's provider-show does: the
// resource types with their options, restore and saved-info schemas (taken from the
// event catalog's schemas, so they cannot drift from what requests are validated
// against).
func Provider() (json.RawMessage, error) {
	raw, err := events.Schema("common")
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	var common struct {
		Defs map[string]json.RawMessage `json:"$defs"`
	}
	if err := json.Unmarshal(raw, &common); err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	type resourceType struct {
		Options   json.RawMessage `json:"options_schema"`
		Restore   json.RawMessage `json:"restore_schema"`
		SavedInfo json.RawMessage `json:"saved_info_schema"`
	}
	types := map[string]resourceType{
		graph.PodType: {Options: common.Defs["podParameters"], Restore: common.Defs["restoreParameters"], SavedInfo: json.RawMessage(podSavedInfo)},
		graph.VolumeType: {Options: common.Defs["volumeParameters"], Restore: json.RawMessage(`{"type":"object","properties":{"restore_name":{"type":"string"}}}`),
			SavedInfo: json.RawMessage(volumeSavedInfo)},
	}
	// The objects pods reference are protected with their pods: no options of their own;
	// a restore creates them in the pods' target namespace, as existing_resources says.
	var params struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	if err := json.Unmarshal(common.Defs["restoreParameters"], &params); err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	restore, err := json.Marshal(map[string]any{"type": "object", "properties": map[string]json.RawMessage{
		"namespace":          json.RawMessage(`{"type":"string","description":"the restore's target namespace: that of the pods referencing it"}`),
		"existing_resources": params.Properties["existing_resources"]}})
	if err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	for typ, field := range map[string]string{graph.ConfigMapType: "configMap", graph.SecretType: "secret", graph.ServiceAccountType: "serviceAccount"} {
		types[typ] = resourceType{Options: json.RawMessage(`{"type":"object","additionalProperties":false}`), Restore: restore,
			SavedInfo: json.RawMessage(`{"type":"object","properties":{"` + field + `":{"description":"the ` + graph.Kind(typ) + `'s definition, server-set fields and owner references removed","type":"object"}}}`)}
	}
	p := map[string]any{
		"id":             checkpoint.ProviderID,
		"name":           "podguard",
		"description":    "Kubernetes pods on OpenStack: pod definitions, and the ConfigMaps, Secrets and ServiceAccounts they reference, in a Swift bank; Cinder volumes as Cinder backups",
		"resource_types": types,
	}
	return json.Marshal(p)
}

const podSavedInfo = `{"type":"object","properties":{"pod":{"description":"the pod's definition, server-set fields removed","type":"object"},` +
	`"claims":{"type":"array","items":{"type":"object"}},"volumes":{"type":"array","items":{"type":"object"}}}}`

const volumeSavedInfo = `{"type":"object","properties":{"volume_id":{"type":"string"},"backup_id":{"type":"string"},` +
	`"backup_mode":{"type":"string","enum":["full","incremental"]},"note":{"type":"string"},"size_gib":{"type":"integer"},` +
	`"backup_status":{"type":"string"},"started_at":{"type":"string","format":"date-time"}}}`
