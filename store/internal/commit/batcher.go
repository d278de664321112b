package commit

import (
	"context"
	"sync"
)

// Batcher runs jobs in batches on workers of its own: a worker takes the
// first job that comes, adds those already waiting beside it (up to
// maxBatch) and hands them to run. There is no waiting window: a lone job
// is a batch of one, and under load the batches grow by themselves. The
// store's PostgreSQL invites use it, each batch on a connection of its own;
// fewer, larger batches cost the database less per job, which is why the
// workers are few (store.Options.InviteWorkers).
type Batcher[T any] struct {
	jobs     chan T
	closed   chan struct{}
	closing  sync.Once
	workers  sync.WaitGroup
	maxBatch int
	run      func(batch []T)
}

// NewBatcher starts workers that hand batches of at most maxBatch jobs to
// run. run must answer every job of its batch itself (Submit returns once a
// worker has taken the job, not once it is done), and must not keep the
// slice: the worker reuses it.
func NewBatcher[T any](workers, maxBatch int, run func(batch []T)) *Batcher[T] {
	b := &Batcher[T]{jobs: make(chan T), closed: make(chan struct{}), maxBatch: maxBatch, run: run}
	b.workers.Add(workers)
	for range workers {
		go b.work()
	}
	return b
}

// Submit hands job to a worker: it returns nil once one has taken it (the
// job is then run whatever ctx does), ErrClosed after Close, or ctx's error
// if it ends first.
func (b *Batcher[T]) Submit(ctx context.Context, job T) error {
	select {
	case b.jobs <- job:
		return nil
	case <-b.closed:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *Batcher[T]) work() {
	defer b.workers.Done()
	batch := make([]T, 0, b.maxBatch)
	for {
		select {
		case job := <-b.jobs:
			batch = append(batch[:0], job)
		case <-b.closed:
			return
		}
	collect:
		for len(batch) < b.maxBatch {
			select {
			case job := <-b.jobs:
				batch = append(batch, job)
			default:
				break collect
			}
		}
		b.run(batch)
	}
}

// Close stops the workers after their current batch; later jobs get ErrClosed.
func (b *Batcher[T]) Close() {
	b.closing.Do(func() { close(b.closed) })
	b.workers.Wait()
}
