package store_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/store/storetest"
)

// BenchmarkStore_Invite measures the store write of one invite (invitation
// and outbox rows committed), with many concurrent callers as under load.
func BenchmarkStore_Invite(b *testing.B) {
	for _, dialect := range storetest.Dialects {
		b.Run(dialect, func(b *testing.B) {
			st := storetest.Open(b, dialect, store.Options{})
			if _, err := st.CreateWorkspace(context.Background(), store.NewWorkspace{Name: "bench", AdminSub: "admin", AdminEmail: "admin@bench.test"}); err != nil {
				b.Fatal(err)
			}
			var seq atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					email := "u" + strconv.FormatInt(seq.Add(1), 10) + "@bench.test"
					if _, err := st.Invite(context.Background(), store.InviteParams{Workspace: "bench", Caller: "admin", Email: email, TTL: time.Hour}); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
