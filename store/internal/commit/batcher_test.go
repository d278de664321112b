package commit

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// TestBatcher_EveryJobOnceWithinMaxBatch: jobs queued while the only
// worker is busy are each run once, in batches of at most maxBatch.
func TestBatcher_EveryJobOnceWithinMaxBatch(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var sizes []int
	seen := map[int]int{}
	b := NewBatcher(1, 4, func(batch []int) {
		if batch[0] == 0 {
			close(started)
			<-release
		}
		mu.Lock()
		defer mu.Unlock()
		sizes = append(sizes, len(batch))
		for _, job := range batch {
			seen[job]++
		}
	})
	defer b.Close()
	ctx := context.Background()
	if err := b.Submit(ctx, 0); err != nil {
		t.Fatal(err)
	}
	<-started
	var wg sync.WaitGroup
	for job := 1; job <= 6; job++ {
		wg.Go(func() {
			if err := b.Submit(ctx, job); err != nil {
				t.Error(err)
			}
		})
	}
	close(release)
	wg.Wait()
	b.Close()
	if len(seen) != 7 {
		t.Fatalf("jobs run: %v, want 0 to 6 once each", seen)
	}
	for job, n := range seen {
		if n != 1 {
			t.Errorf("job %d run %d times", job, n)
		}
	}
	for _, n := range sizes {
		if n > 4 {
			t.Errorf("a batch of %d, over maxBatch 4", n)
		}
	}
}

// TestBatcher_Closed: after Close a job is refused with ErrClosed, and a
// job whose context has ended is refused with its error.
func TestBatcher_Closed(t *testing.T) {
	b := NewBatcher(1, 4, func([]int) {})
	b.Close()
	if err := b.Submit(context.Background(), 1); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: got %v, want ErrClosed", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	open := NewBatcher(0, 4, func([]int) {}) // no worker: nobody takes the job
	defer open.Close()
	if err := open.Submit(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: got %v, want context.Canceled", err)
	}
}
