package webhook

import (
	"encoding/json"
	"strconv"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
)

// AuditEvent maps a stored event to the YAML's AuditEvent (also the data
// of a webhook event). A test event, never stored, is named after its
// message (testMessage).
func AuditEvent(e store.AuditEvent, testMessage int64) gen.AuditEvent {
	out := gen.AuditEvent{
		Id:        "evt_" + strconv.FormatInt(e.ID, 10),
		Time:      e.At.UTC(),
		Workspace: e.Workspace,
		Action:    gen.WebhookEventType(e.Action),
		Actor:     gen.AuditActor{Kind: gen.AuditActorKind(e.ActorKind), Sub: e.ActorSub},
		Target:    gen.AuditTarget{Type: e.TargetType, Id: e.TargetID},
		Before:    object(e.Before),
		After:     object(e.After),
	}
	if e.ID == 0 {
		out.Id = "evt_test_" + strconv.FormatInt(testMessage, 10)
	}
	if e.RequestID != "" {
		out.RequestId = &e.RequestID
	}
	return out
}

// object decodes a stored JSON object of changed fields ("": none).
func object(s string) *map[string]any {
	if s == "" {
		return nil
	}
	var m map[string]any
	if json.Unmarshal([]byte(s), &m) != nil {
		return nil // written by appendAudit from a map: cannot happen
	}
	return &m
}

// Event is the body of a delivery (the YAML's WebhookEvent).
func Event(e store.AuditEvent, message int64) gen.WebhookEvent {
	return gen.WebhookEvent{Type: gen.WebhookEventType(e.Action), Timestamp: e.At.UTC(), Data: AuditEvent(e, message)}
}
