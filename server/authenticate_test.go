package server

import (
	"context"
	"testing"

	"github.com/membership-api/controlplane/auth"
	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// BenchmarkServiceAccountCheck measures the per-request check of a
// service-account token (ActiveServiceAccount: one read by the unique
// client_id index, its workspace preloaded), which has no cache so that a
// deletion is seen at once.
func BenchmarkServiceAccountCheck(b *testing.B) {
	for _, dialect := range storetest.Dialects {
		b.Run(dialect, func(b *testing.B) {
			st := storetest.Open(b, dialect, store.Options{})
			ctx := context.Background()
			if _, err := st.CreateWorkspace(ctx, store.NewWorkspace{Name: "acme", AdminSub: "u-admin", AdminEmail: "admin@acme.test"}); err != nil {
				b.Fatal(err)
			}
			_, sa, err := st.CreateServiceAccount(ctx, "acme", "u-admin", store.NewServiceAccount{Name: "deployer", Role: store.RoleAdmin})
			if err != nil {
				b.Fatal(err)
			}
			a := &authenticator{credentials: st}
			p := &auth.Principal{Sub: sa.ClientID, BoundWorkspace: "acme", ServiceAccount: true, Scopes: []string{"admin"}}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, aerr := a.activeServiceAccount(ctx, p); aerr != nil {
					b.Fatal(aerr)
				}
			}
		})
	}
}
