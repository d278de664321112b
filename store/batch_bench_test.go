package store

import (
	"context"
	"syscall"
	"testing"
	"time"

	"gorm.io/gorm"
)

// BenchmarkSQLiteInviteBatch measures the SQLite writer's work per invite
// (the batch statements of 64 fresh invites, committed and fsynced one batch
// at a time); cpu-ns/invite is what bounds how many invites one writer can
// take per second.
func BenchmarkSQLiteInviteBatch(b *testing.B) {
	ctx := context.Background()
	st, _ := openSQLiteWithWorkspace(b, "bench")
	const batchSize = 64
	g := st.committer
	fresh := freshInvites("bench")
	b.ReportAllocs()
	cpu0 := processCPU()
	b.ResetTimer()
	for b.Loop() {
		jobs := fresh(batchSize)
		err := g.Do(ctx, func(tx *gorm.DB) error { return runSQLiteBatch(ctx, tx, nil, st.now(), jobs) })
		if err != nil {
			b.Fatal(err)
		}
		for _, job := range jobs {
			if !job.found {
				b.Fatalf("invite %s not settled by the batch", job.p.Email)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batchSize), "ns/invite")
	b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N*batchSize), "cpu-ns/invite")
}

// processCPU is the user+system CPU time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru) //nolint:errcheck // RUSAGE_SELF and a valid pointer: it fails only on EINVAL/EFAULT
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
