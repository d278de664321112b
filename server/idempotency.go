package server

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"time"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
)

// DefaultIdempotencyTTL is how long an Idempotency-Key is remembered.
const DefaultIdempotencyTTL = 24 * time.Hour

// IdempotencyReplayedHeader marks an answer replayed for an Idempotency-Key.
const IdempotencyReplayedHeader = "Idempotency-Replayed"

// replayed is the first answer given to an Idempotency-Key, answered again.
// It is the response object of every operation that takes the key.
type replayed struct {
	status int
	body   []byte
}

func (r replayed) VisitInviteWorkspaceUserResponse(w http.ResponseWriter) error { return r.write(w) }
func (r replayed) VisitBulkInviteWorkspaceUsersResponse(w http.ResponseWriter) error {
	return r.write(w)
}

func (r replayed) write(w http.ResponseWriter) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(IdempotencyReplayedHeader, "true")
	w.WriteHeader(r.status)
	_, err := w.Write(r.body)
	return err
}

// idempotent runs an operation under the request's Idempotency-Key
// (draft-ietf-httpapi-idempotency-key-header): the first request with a key
// runs and its answer is kept; a later one with the same operation and body
// gets that answer again (replay non-nil: answer it), with another body a
// 422, and while the first still runs a 409. The key is the caller's in the
// workspace. Answers not worth replaying (5xx: the server failed; 429: the
// client should wait, then really retry) free the key instead.
//
// Requests without a key never come here: they cost nothing more.
func (s *Server) idempotent(ctx context.Context, key, workspace, caller, operation string, body any,
	run func() (any, error)) (answer any, replay *replayed, err error) {
	requestBody, err := json.Marshal(body)
	if err != nil {
		return nil, nil, err
	}
	fingerprint := sha256.New()
	fingerprint.Write([]byte(operation + "\x00"))
	fingerprint.Write(requestBody)
	claim, err := s.idempotency.BeginIdempotent(ctx, store.IdempotencyScope{Workspace: workspace, Caller: caller, Key: key},
		fingerprint.Sum(nil), s.cfg.IdempotencyTTL)
	if err != nil {
		return nil, nil, err
	}
	switch claim.Outcome {
	case store.IdempotencyMismatch:
		return nil, nil, newError(http.StatusUnprocessableEntity, KindIdempotencyKeyReused,
			"this Idempotency-Key was already used for a different request (another body or operation): use a new key for a new request")
	case store.IdempotencyInUse:
		return nil, nil, newError(http.StatusConflict, KindIdempotencyKeyInUse,
			"a request with this Idempotency-Key is still being processed: retry once it has been answered")
	case store.IdempotencyReplay:
		return nil, replayOf(ctx, claim), nil
	}
	// Claimed: whatever happens next, the key's row must be finished or
	// freed, also when the client has gone (the write ran to its end).
	done := context.WithoutCancel(ctx)
	answer, runErr := run()
	status, stored := http.StatusOK, []byte(nil)
	if runErr == nil {
		stored, err = marshalAnswer(answer)
	} else {
		apiErr := toAPIError(runErr)
		status = apiErr.Status
		if status >= http.StatusInternalServerError || status == http.StatusTooManyRequests {
			s.releaseKey(done, claim)
			return nil, nil, runErr
		}
		errBody := errorBody(done, apiErr)
		errBody.RequestId = nil // a replay names its own request (replayOf)
		stored, err = marshalAnswer(errBody)
	}
	if err == nil {
		err = s.idempotency.FinishIdempotent(done, claim, status, stored)
	}
	if err != nil {
		// The operation's answer stands; only its replay is lost. The key
		// stays busy until its lease ends, then a retry runs again.
		s.log.ErrorContext(ctx, "idempotency key: the answer could not be recorded for replay", "operation", operation, "err", err)
	}
	return answer, nil, runErr
}

// releaseKey frees a claimed key; a failure leaves it busy until its lease
// ends.
func (s *Server) releaseKey(ctx context.Context, claim store.IdempotencyClaim) {
	if err := s.idempotency.ReleaseIdempotent(ctx, claim); err != nil {
		if store.Unavailable(err) != nil {
			// The request's own 503 says the database is down (once per
			// outage): not a line per request.
			return
		}
		s.log.ErrorContext(ctx, "idempotency key: could not be freed after a failed request", "err", err)
	}
}

// replayOf is the kept answer; an error body gets this request's ID, which
// the X-Request-Id header of the replay carries too.
func replayOf(ctx context.Context, claim store.IdempotencyClaim) *replayed {
	r := &replayed{status: claim.Status, body: claim.Body}
	if claim.Status < http.StatusBadRequest {
		return r
	}
	var e gen.Error
	if json.Unmarshal(claim.Body, &e) != nil {
		return r
	}
	if st := stateFrom(ctx); st != nil && st.id != "" {
		e.RequestId = &st.id
	}
	if b, err := marshalAnswer(e); err == nil {
		r.body = b
	}
	return r
}

// marshalAnswer writes a body as the strict handlers and Echo do
// (json.Encoder: a newline after the value), so a replay is byte for byte
// the first answer.
func marshalAnswer(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	return append(b, '\n'), err
}

// sweepIdempotencyKeys deletes expired keys every interval until ctx ends.
func (s *Server) sweepIdempotencyKeys(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := s.idempotency.SweepIdempotencyKeys(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "idempotency keys: sweep failed", "err", err)
		} else if n > 0 {
			s.log.DebugContext(ctx, "idempotency keys: expired ones swept", "deleted", n)
		}
	}
}

// sweepInterval is how often expired keys are swept: a tenth of their
// lifetime, between a second and ten minutes (rows outliving their expiry
// by that much are never replayed: BeginIdempotent checks the expiry).
func sweepInterval(ttl time.Duration) time.Duration {
	return min(max(ttl/10, time.Second), 10*time.Minute)
}
