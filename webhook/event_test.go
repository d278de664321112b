package webhook

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
)

// TestDeliveryBody_IsEvent: the body a dispatcher sends says what Event
// says (the YAML's WebhookEvent), field for field, whatever the changed
// fields hold: the fast encoding copies them as stored.
func TestDeliveryBody_IsEvent(t *testing.T) {
	at := time.Date(2026, 12, 6, 12, 0, 0, 123456789, time.UTC)
	events := map[string]store.AuditEvent{
		"invite": {ID: 42, WorkspaceID: 1, Workspace: "acme", At: at, ActorKind: "user", ActorSub: "admin-acme",
			Action: "invitation.created", TargetType: "invitation", TargetID: "7",
			After: `{"email":"a<b>&c@acme.test","expiresAt":"2026-12-13T12:00:00Z","role":"member"}`, RequestID: "req-1"},
		"change": {ID: 43, Workspace: "acme", At: at, ActorKind: "system", Action: "webhook.disabled", TargetType: "webhook", TargetID: "3",
			Before: `{"enabled":true,"n":1234567,"nested":{"a":[1,2.5,null]}}`, After: `{"enabled":false}`},
		"no fields": {ID: 44, Workspace: "acme", At: at, ActorKind: "apiKey", ActorSub: "key_1", Action: "member.removed",
			TargetType: "member", TargetID: "9"},
		"test event": {Workspace: "acme", At: at, ActorKind: "user", Action: "webhook.test", TargetType: "webhook", TargetID: "3"},
		"not JSON":   {ID: 45, Workspace: "acme", At: at, Action: "member.updated", Before: `{"role":`, After: `{"role":"admin"}`},
	}
	for name, e := range events {
		t.Run(name, func(t *testing.T) {
			got, err := deliveryJSON(e, 99)
			if err != nil {
				t.Fatal(err)
			}
			want, err := json.Marshal(Event(e, 99))
			if err != nil {
				t.Fatal(err)
			}
			var g, w any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatalf("body %s: %v", got, err)
			}
			if err := json.Unmarshal(want, &w); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(g, w) {
				t.Errorf("body:\n%s\nEvent:\n%s", got, want)
			}
		})
	}
}

// BenchmarkDeliveryBody: the body of an invitation's delivery, encoded as
// sent (deliveryJSON) and through Event's maps.
func BenchmarkDeliveryBody(b *testing.B) {
	e := store.AuditEvent{ID: 42, WorkspaceID: 1, Workspace: "acme", At: time.Now(), ActorKind: "user", ActorSub: "admin-acme",
		Action: "invitation.created", TargetType: "invitation", TargetID: "7",
		After: `{"email":"someone@acme.test","expiresAt":"2026-12-13T12:00:00Z","role":"member"}`, RequestID: "req-1"}
	b.Run("as sent", func(b *testing.B) {
		for b.Loop() {
			if _, err := deliveryJSON(e, 99); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("through maps", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.Marshal(Event(e, 99)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
