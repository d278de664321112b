package store

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"gorm.io/gorm"
)

// The webhook queue: how dispatchers claim messages, record attempts and
// back off failing endpoints. Claims are fair across endpoints and bounded
// per endpoint; an endpoint whose attempts fail is backed off as a whole,
// in the database, so every dispatcher (replicas, webhook-worker) waits
// for its next probe instead of each sending it one timeout per message.
//
// Per endpoint (webhook_endpoints):
//   - consecutive_failures counts the failed probes since its last success
//     (0: healthy, its messages are claimed up to PerEndpoint at a time);
//   - backoff_until is when it may be tried again (nil: now). While it is
//     failing, a claim takes one message (the probe) and holds the endpoint
//     for the claim's lease, so two dispatchers never probe it at once.
//
// Per message (webhook_messages): next_attempt_at, its own retry schedule
// (a message the endpoint refuses does not block the others).

// DefaultWebhooksPerEndpoint bounds the attempts in flight to one endpoint
// across all dispatchers, unless WebhookClaim says otherwise: enough to
// pipeline a healthy endpoint's backlog (four times one attempt at a time)
// and few enough that a slow endpoint holds at most 4 of a dispatcher's
// workers and a receiver sees no more parallel requests than a small web
// server handles.
const DefaultWebhooksPerEndpoint = 4

// MaxPendingTestEvents bounds an endpoint's test events not yet delivered:
// a test event costs a delivery attempt (a timeout against a dead endpoint)
// that nothing else limits but the caller's rate limit.
const MaxPendingTestEvents = 5

// CodeTooManyTestEvents is the kind of the refusal of a test event while
// MaxPendingTestEvents are pending.
const CodeTooManyTestEvents = "too_many_test_events"

// WebhookClaim asks ClaimWebhookQueue for due messages.
type WebhookClaim struct {
	Token string
	Limit int // messages at most
	Lease time.Duration
	// PerEndpoint bounds the claimed, unexpired messages of one endpoint,
	// whoever holds them (0: DefaultWebhooksPerEndpoint).
	PerEndpoint int
	// After is the round-robin cursor: endpoints with a larger id are
	// served first, then the others from the start (WebhookClaimed.Next).
	After int64
	// Busy counts the caller's attempts in flight per workspace id; a
	// workspace with PerWorkspace of them gets nothing more (0: no bound).
	Busy         map[int64]int
	PerWorkspace int
}

// WebhookClaimed is what a claim took.
type WebhookClaimed struct {
	Items []WebhookItem
	// Next is the cursor of the next claim (WebhookClaim.After).
	Next int64
}

// WebhookItem is a claimed message with what delivering it needs.
type WebhookItem struct {
	WebhookMessage
	URL, Secret string
	WorkspaceID int64
	// Probe: the endpoint was failing when this message was claimed, and
	// this attempt tells whether it is back (RecordWebhookAttempt).
	Probe bool
	Event AuditEvent
}

// maxVisitedEndpoints bounds the endpoints one claim looks at, so that a
// claim's cost does not grow with the number of endpoints holding
// messages; the cursor carries the next claim on from where it stopped.
const maxVisitedEndpoints = 256

// webhookEndpointsSQL walks the endpoints that have pending messages,
// from after a cursor up, one index probe each (a loose scan of
// idx_webhook_endpoint_queue): endpoints without pending messages cost
// nothing, however many there are. Its last row is NULL when it ran off
// the end.
const webhookEndpointsSQL = `WITH RECURSIVE eps(id, n) AS (
  SELECT (SELECT endpoint_id FROM webhook_messages WHERE status = 'pending' AND endpoint_id > ? ORDER BY endpoint_id LIMIT 1), 1
  UNION ALL
  SELECT (SELECT m.endpoint_id FROM webhook_messages m WHERE m.status = 'pending' AND m.endpoint_id > eps.id ORDER BY m.endpoint_id LIMIT 1), eps.n + 1
  FROM eps WHERE eps.id IS NOT NULL AND eps.n < ?
)
SELECT id FROM eps`

// webhookCandidatesSQL keeps the visited endpoints that may be tried now;
// on PostgreSQL it locks them for this claim (dispatchers claiming at once
// take different endpoints, so the in-flight bound and the single probe
// hold). NO KEY UPDATE: queueing a message (a foreign key's KEY SHARE lock)
// does not wait for it.
const webhookCandidatesSQL = `SELECT id, workspace_id, consecutive_failures, url, secret FROM webhook_endpoints
WHERE id IN ? AND disabled_at IS NULL AND (backoff_until IS NULL OR backoff_until <= ?)`

// webhookInFlightSQL counts the claimed, unexpired messages of endpoints,
// through idx_webhook_claimed (claimed messages only).
const webhookInFlightSQL = `SELECT endpoint_id, COUNT(*) AS n FROM webhook_messages
WHERE status = 'pending' AND claim_token <> '' AND endpoint_id IN ? AND claimed_until >= ?
GROUP BY endpoint_id`

// The picks: each endpoint's oldest due messages, up to its bound (%d, a
// literal: the claim keeps each endpoint's takes in Go), found by walking
// idx_webhook_endpoint_queue from the start of its range (the claimed
// messages it skips are at most the bound). The endpoints are one
// parameter, a list joined to a subquery per endpoint, so the text never
// changes. A UNION with each endpoint's id bound in a place of its own made
// SQLite re-prepare the whole statement whenever an id moved (nearly every
// claim, as the round robin turns), and gave every number of endpoints a
// text of its own.
//
// SQLite: the endpoints are a JSON array (json_each). An endpoint's picks
// come in id order, not due order: of its oldest due messages, those with
// the lowest ids are taken first.
const webhookPickSQLite = `SELECT m.id, m.endpoint_id FROM json_each(?) e, webhook_messages m
WHERE m.id IN (SELECT id FROM webhook_messages
  WHERE status = 'pending' AND endpoint_id = e.value AND next_attempt_at <= ? AND (claimed_until IS NULL OR claimed_until < ?)
  ORDER BY next_attempt_at, id LIMIT %d)`

// webhookPickPostgres: the endpoints are an array, each joined LATERAL to
// its picks, which it locks (FOR UPDATE SKIP LOCKED; the few rows beyond
// an endpoint's take stay locked until the claim commits, under its
// endpoint's lock anyway).
const webhookPickPostgres = `SELECT m.id, m.endpoint_id FROM unnest(CAST(? AS bigint[])) e(id) CROSS JOIN LATERAL (SELECT id, endpoint_id FROM webhook_messages
  WHERE status = 'pending' AND endpoint_id = e.id AND next_attempt_at <= ? AND (claimed_until IS NULL OR claimed_until < ?)
  ORDER BY next_attempt_at, id LIMIT %d FOR UPDATE SKIP LOCKED) m`

// webhookClaimSQL claims the picked messages and returns what delivering
// them needs of their rows (the endpoints' come from lockCandidates, the
// events are read after the commit); %s is idsIn's condition.
const webhookClaimSQL = `UPDATE webhook_messages SET claimed_until = ?, claim_token = ?, attempts = attempts + 1, updated_at = ?
WHERE %s
RETURNING id, webhook_id, endpoint_id, event_id, event_type, payload, status, attempts, next_attempt_at, claimed_until, last_error, created_at`

// candidate is an endpoint a claim may take messages of.
type candidate struct {
	ID                  int64
	WorkspaceID         int64
	ConsecutiveFailures int
	URL                 string
	Secret              string // sealed (openWebhookSecret)
}

// ClaimWebhookQueue claims due messages fairly: endpoints in turn from the
// cursor (each endpoint's oldest due messages first), at most PerEndpoint
// in flight per endpoint and one (the probe) for a failing endpoint, none
// of an endpoint backed off, disabled, or held by another claim. One
// transaction that commits the claim: nothing stays locked while sending.
func (s *Store) ClaimWebhookQueue(ctx context.Context, c WebhookClaim) (WebhookClaimed, error) {
	now := s.now()
	perEndpoint := cmp.Or(c.PerEndpoint, DefaultWebhooksPerEndpoint)
	// Which endpoints have pending messages is read on a reader, outside
	// the write transaction: an idle poll writes nothing, and the walk
	// costs the writer nothing (an endpoint it finds is checked again
	// under the claim's lock).
	order, wrapped, err := visitEndpoints(s.read.WithContext(ctx), c.After)
	if err != nil || len(order) == 0 {
		return WebhookClaimed{Next: c.After}, err
	}
	var out WebhookClaimed
	var claimed []WebhookMessage
	var cands map[int64]candidate
	probes := map[int64]bool{}
	err = s.inTx(ctx, func(tx *gorm.DB) error {
		claimed, probes = nil, map[int64]bool{} // a retried transaction starts over
		out = WebhookClaimed{Next: c.After}
		if !wrapped {
			out.Next = order[len(order)-1] // the walk stopped at its bound: go on from there
		}
		var err error
		cands, err = s.lockCandidates(tx, order, now)
		if err != nil || len(cands) == 0 {
			return err
		}
		inFlight, err := webhooksInFlight(tx, cands, now)
		if err != nil {
			return err
		}
		busy := map[int64]int{}
		for ws, n := range c.Busy {
			busy[ws] = n
		}
		takes := map[int64]int{}
		var picked []int64 // endpoints in turn
		total := 0
		for _, id := range order {
			e, ok := cands[id]
			if !ok || total >= c.Limit {
				continue
			}
			take := perEndpoint - inFlight[id]
			if e.ConsecutiveFailures > 0 {
				take = min(take, 1-inFlight[id]) // one probe at a time
			}
			if c.PerWorkspace > 0 {
				take = min(take, c.PerWorkspace-busy[e.WorkspaceID])
			}
			take = min(take, c.Limit-total)
			if take <= 0 {
				continue
			}
			// Counted as taken although the endpoint may have fewer due:
			// a claim may come back short, the next one goes on.
			takes[id], total, busy[e.WorkspaceID] = take, total+take, busy[e.WorkspaceID]+take
			picked = append(picked, id)
		}
		if len(picked) == 0 {
			return nil
		}
		claimed, err = s.claimEndpoints(tx, c, picked, takes, now)
		if err != nil || len(claimed) == 0 {
			return err
		}
		for _, m := range claimed {
			if cands[m.EndpointID].ConsecutiveFailures > 0 {
				probes[m.EndpointID] = true
			}
		}
		out.Next = picked[len(picked)-1]
		return holdProbedEndpoints(tx, probes, now.Add(c.Lease))
	})
	if err != nil || len(claimed) == 0 {
		return out, err
	}
	// The events are read once the claim is committed, on a reader: the
	// messages are ours until their lease ends, and the single SQLite
	// writer (or a PostgreSQL transaction holding the endpoints' locks)
	// does not wait for the read.
	out.Items, err = s.webhookItems(ctx, s.read.WithContext(ctx), claimed, cands, probes)
	return out, err
}

// visitEndpoints returns the endpoints holding pending messages in
// round-robin order (after the cursor, then from the start up to it), at
// most maxVisitedEndpoints, and whether the walk came round to the cursor.
func visitEndpoints(tx *gorm.DB, after int64) ([]int64, bool, error) {
	walk := func(from int64, limit int) ([]int64, bool, error) {
		var rows []sql.NullInt64
		if err := tx.Raw(webhookEndpointsSQL, from, limit).Scan(&rows).Error; err != nil {
			return nil, false, err
		}
		var ids []int64
		for _, r := range rows {
			if !r.Valid {
				return ids, true, nil
			}
			ids = append(ids, r.Int64)
		}
		return ids, false, nil
	}
	ids, ended, err := walk(after, maxVisitedEndpoints)
	if err != nil || !ended || after == 0 || len(ids) >= maxVisitedEndpoints {
		return ids, ended, err
	}
	more, _, err := walk(0, maxVisitedEndpoints-len(ids))
	for _, id := range more {
		if id > after {
			break
		}
		ids = append(ids, id)
	}
	return ids, true, err
}

// lockCandidates returns the endpoints of ids that may be tried now, locked
// for this claim on PostgreSQL (SKIP LOCKED: another claim holds them).
func (s *Store) lockCandidates(tx *gorm.DB, ids []int64, now time.Time) (map[int64]candidate, error) {
	q := webhookCandidatesSQL
	if s.dialect == Postgres {
		q += " FOR NO KEY UPDATE SKIP LOCKED"
	}
	var rows []candidate
	if err := tx.Raw(q, ids, now).Scan(&rows).Error; err != nil {
		return nil, err
	}
	out := make(map[int64]candidate, len(rows))
	for _, r := range rows {
		out[r.ID] = r
	}
	return out, nil
}

// webhooksInFlight counts the claimed, unexpired messages per endpoint. On
// PostgreSQL it runs after the endpoints are locked, so it sees every
// claim committed before (READ COMMITTED: a new snapshot per statement).
func webhooksInFlight(tx *gorm.DB, cands map[int64]candidate, now time.Time) (map[int64]int, error) {
	ids := make([]int64, 0, len(cands))
	for id := range cands {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var rows []struct {
		EndpointID int64
		N          int
	}
	if err := tx.Raw(webhookInFlightSQL, ids, now).Scan(&rows).Error; err != nil {
		return nil, err
	}
	out := make(map[int64]int, len(rows))
	for _, r := range rows {
		out[r.EndpointID] = r.N
	}
	return out, nil
}

// claimEndpoints claims up to takes[id] due messages of each endpoint of
// ids, oldest first, in two statements of constant texts: the picks, and
// the claim of each endpoint's takes.
func (s *Store) claimEndpoints(tx *gorm.DB, c WebhookClaim, ids []int64, takes map[int64]int, now time.Time) ([]WebhookMessage, error) {
	bound := cmp.Or(c.PerEndpoint, DefaultWebhooksPerEndpoint)
	q, endpoints := webhookPickSQLite, idList('[', ids, ']')
	if s.dialect == Postgres {
		q, endpoints = webhookPickPostgres, idList('{', ids, '}')
	}
	rows, err := tx.Raw(fmt.Sprintf(q, bound), endpoints, now, now).Rows()
	if err != nil {
		return nil, err
	}
	var pick []int64
	left := maps.Clone(takes)
	for rows.Next() {
		var id, endpoint int64
		if err := rows.Scan(&id, &endpoint); err != nil {
			return nil, errors.Join(err, rows.Close())
		}
		if left[endpoint] > 0 {
			left[endpoint]--
			pick = append(pick, id)
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil || len(pick) == 0 {
		return nil, err
	}
	in, list := s.idsIn("id", pick)
	rows, err = tx.Raw(fmt.Sprintf(webhookClaimSQL, in), now.Add(c.Lease), c.Token, now, list).Rows()
	if err != nil {
		return nil, err
	}
	defer rows.Close() //nolint:errcheck // rows.Err says what went wrong
	out := make([]WebhookMessage, 0, len(pick))
	for rows.Next() {
		m := WebhookMessage{ClaimToken: c.Token, UpdatedAt: now}
		if err := rows.Scan(&m.ID, &m.WebhookID, &m.EndpointID, &m.EventID, &m.EventType, &m.Payload, &m.Status,
			&m.Attempts, &m.NextAttemptAt, &m.ClaimedUntil, &m.LastError, &m.CreatedAt); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// idsIn is a condition "column is one of ids" and its parameter. On
// SQLite the ids are one JSON array (json_each), so the statement's text is
// the same whatever their number: "IN ?" gave every count a statement of
// its own to prepare, which cost SQLite's single writer more than running
// it. On PostgreSQL they are a list ("IN ?"): an array parameter left its
// planner guessing how many there are, and its generic plan then walked a
// partial index rather than looking the ids up.
func (s *Store) idsIn(column string, ids []int64) (string, any) {
	if s.dialect == Postgres {
		return column + " IN ?", ids
	}
	return column + " IN (SELECT value FROM json_each(?))", idList('[', ids, ']')
}

// idList writes ids between open and end, separated by commas: a JSON
// array, or a PostgreSQL array literal.
func idList(open byte, ids []int64, end byte) string {
	b := make([]byte, 0, 8*len(ids)+2)
	b = append(b, open)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, id, 10)
	}
	return string(append(b, end))
}

// holdProbedEndpoints keeps the failing endpoints a probe was claimed for
// from being claimed again until the probe's outcome is recorded (which
// sets the next step of their backoff, or clears it) or its lease ends.
func holdProbedEndpoints(tx *gorm.DB, probes map[int64]bool, until time.Time) error {
	if len(probes) == 0 {
		return nil
	}
	ids := make([]int64, 0, len(probes))
	for id := range probes {
		ids = append(ids, id)
	}
	return tx.Model(&WebhookEndpoint{}).Where("id IN ?", ids).Update("backoff_until", until).Error
}

// webhookItems completes claimed messages with their endpoints (cands)
// and events (read on tx).
func (s *Store) webhookItems(ctx context.Context, tx *gorm.DB, claimed []WebhookMessage, cands map[int64]candidate, probes map[int64]bool) ([]WebhookItem, error) {
	var eventIDs []int64
	for _, m := range claimed {
		if m.EventID != nil {
			eventIDs = append(eventIDs, *m.EventID)
		}
	}
	events := map[int64]AuditEvent{}
	if len(eventIDs) > 0 {
		in, list := s.idsIn("id", eventIDs)
		var evs []AuditEvent
		if err := tx.Where(in, list).Find(&evs).Error; err != nil {
			return nil, err
		}
		for _, e := range evs {
			events[e.ID] = e
		}
	}
	secrets := map[int64]string{}
	items := make([]WebhookItem, 0, len(claimed))
	for _, m := range claimed {
		e := cands[m.EndpointID]
		secret, opened := secrets[e.ID]
		if !opened {
			// A secret that does not decrypt (serve checks the keys at
			// start) leaves its messages out: they stay claimed until their
			// lease ends, and every other endpoint keeps delivering.
			var ok bool
			if secret, ok = s.claimedWebhookSecret(ctx, m.ID, e.ID, e.Secret); !ok {
				continue
			}
			secrets[e.ID] = secret
		}
		item := WebhookItem{WebhookMessage: m, URL: e.URL, Secret: secret, WorkspaceID: e.WorkspaceID, Probe: probes[e.ID]}
		if m.EventID != nil {
			item.Event = events[*m.EventID]
		} else if err := parseJSON(m.Payload, &item.Event); err != nil {
			return nil, fmt.Errorf("webhook message %d: %w", m.ID, err)
		}
		items = append(items, item)
	}
	slices.SortFunc(items, func(a, b WebhookItem) int { return cmp.Compare(a.ID, b.ID) })
	return items, nil
}

// ClaimWebhooks claims up to limit due messages for lease under token:
// ClaimWebhookQueue from the first endpoint, with the default bound per
// endpoint (tests and tools; dispatchers keep a cursor).
func (s *Store) ClaimWebhooks(ctx context.Context, token string, limit int, lease time.Duration) ([]WebhookItem, error) {
	res, err := s.ClaimWebhookQueue(ctx, WebhookClaim{Token: token, Limit: limit, Lease: lease})
	return res.Items, err
}

// WebhookResult is the outcome of one delivery attempt.
type WebhookResult struct {
	Outcome    string    // Attempt…
	Started    time.Time // when the attempt began
	StatusCode int       // 0: no answer
	Latency    time.Duration
	Error      string
	Next       time.Time // AttemptRetry: when to try the message again
	// EndpointBackoff is how long a failing endpoint waits after its n-th
	// failed probe in a row (nil: no endpoint backoff).
	EndpointBackoff func(n int) time.Duration
}

// WebhookOutcome is one attempt to record (RecordWebhookAttempts).
type WebhookOutcome struct {
	Item   WebhookItem
	Result WebhookResult
}

// RecordWebhookAttempt records one attempt: RecordWebhookAttempts of one.
func (s *Store) RecordWebhookAttempt(ctx context.Context, item WebhookItem, token string, r WebhookResult, disableAfter time.Duration) (disabled bool, err error) {
	got, err := s.RecordWebhookAttempts(ctx, token, []WebhookOutcome{{item, r}}, disableAfter)
	if err != nil {
		return false, err
	}
	return got[0], nil
}

// RecordWebhookAttempts records attempts of messages this dispatcher holds,
// in one transaction: for each, the delivery log line, the message's new
// state, and the endpoint's health. A success clears the endpoint's
// failure run and backoff. A failure of a probe, or the first failure of a
// healthy endpoint, is one more step of the endpoint's backoff; failures
// of attempts already in flight when it started failing are not (they say
// nothing new). An endpoint failing since at least disableAfter is
// disabled, its pending messages cancelled, and an audit event (actor:
// system) says so; disabled[i] tells for outcomes[i]. A claim lost to
// lease expiry leaves the message to its new holder.
//
// The deliveries, which under load are nearly all of them, are recorded
// together: one statement each for the messages, the log lines and the
// endpoints, whatever their number, where one transaction per attempt cost
// the single SQLite writer (and PostgreSQL's round trips) most of a
// dispatcher's time.
func (s *Store) RecordWebhookAttempts(ctx context.Context, token string, outcomes []WebhookOutcome, disableAfter time.Duration) (disabled []bool, err error) {
	now := s.now()
	err = s.inTx(ctx, func(tx *gorm.DB) error {
		disabled = make([]bool, len(outcomes))
		failing, err := s.lockOutcomeEndpoints(tx, outcomes)
		if err != nil {
			return err
		}
		var delivered []WebhookOutcome
		for i, o := range outcomes {
			if o.Result.Outcome == AttemptDelivered {
				delivered = append(delivered, o)
				continue
			}
			d, err := recordFailedAttempt(tx, o.Item, token, o.Result, disableAfter, now)
			if err != nil {
				return err
			}
			disabled[i] = d
		}
		return s.recordDeliveries(tx, token, delivered, failing, now)
	})
	return disabled, err
}

// endpointFailingSQL is the condition of an endpoint with failures to
// clear (a delivery ends its failure run).
const endpointFailingSQL = "(failing_since IS NOT NULL OR consecutive_failures <> 0 OR backoff_until IS NOT NULL)"

// lockOutcomeEndpoints locks, on PostgreSQL, the endpoints a batch of
// outcomes will change, in id order before any is changed, so that two
// dispatchers' batches touching the same endpoints cannot deadlock: those
// of failed attempts, and those failing now (a delivery clears their
// failures), which it returns. The others, nearly all under load, stay
// unlocked: a claim skips a locked endpoint, and every endpoint of a batch
// locked for the record's transaction left claims short. nil on SQLite
// (one writer: recordDeliveries finds the failing endpoints itself).
func (s *Store) lockOutcomeEndpoints(tx *gorm.DB, outcomes []WebhookOutcome) ([]int64, error) {
	if s.dialect != Postgres {
		return nil, nil
	}
	seen := map[int64]bool{}
	var ids, failed []int64
	for _, o := range outcomes {
		if !seen[o.Item.EndpointID] {
			seen[o.Item.EndpointID] = true
			ids = append(ids, o.Item.EndpointID)
		}
		if o.Result.Outcome != AttemptDelivered {
			failed = append(failed, o.Item.EndpointID)
		}
	}
	all, allList := s.idsIn("id", ids)
	fail, failList := s.idsIn("id", failed)
	var locked []int64
	err := tx.Raw("SELECT id FROM webhook_endpoints WHERE "+all+" AND ("+fail+" OR "+endpointFailingSQL+") ORDER BY id FOR NO KEY UPDATE",
		allList, failList).Scan(&locked).Error
	return locked, err
}

// recordDeliveredSQL marks delivered messages that are still ours (%s:
// idsIn).
const recordDeliveredSQL = `UPDATE webhook_messages SET status = ?, delivered_at = ?, claimed_until = NULL, claim_token = '', updated_at = ?, last_error = ''
WHERE %s AND claim_token = ? AND status = 'pending' RETURNING id`

// recordDeliveries marks delivered messages (those still ours), logs their
// attempts and clears the failures of their endpoints that have any (on
// PostgreSQL, of those lockOutcomeEndpoints locked: locked), in three
// statements.
func (s *Store) recordDeliveries(tx *gorm.DB, token string, delivered []WebhookOutcome, locked []int64, now time.Time) error {
	if len(delivered) == 0 {
		return nil
	}
	ids := make([]int64, len(delivered))
	for i, o := range delivered {
		ids[i] = o.Item.ID
	}
	in, list := s.idsIn("id", ids)
	var ours []int64
	err := tx.Raw(fmt.Sprintf(recordDeliveredSQL, in), WebhookDelivered, now, now, list, token).Scan(&ours).Error
	if err != nil || len(ours) == 0 {
		return err // none: deleted, cancelled, or claimed again, not ours to record
	}
	mine := make(map[int64]bool, len(ours))
	for _, id := range ours {
		mine[id] = true
	}
	var lines []WebhookAttempt
	endpoints := map[int64]bool{}
	for _, o := range delivered {
		if mine[o.Item.ID] {
			lines = append(lines, attemptLine(o.Item, o.Result))
			endpoints[o.Item.EndpointID] = true
		}
	}
	if err := tx.Omit("Endpoint").Create(&lines).Error; err != nil {
		return err
	}
	if err := pruneAttempts(tx, lines); err != nil {
		return err
	}
	var eps []int64
	if s.dialect == Postgres {
		for _, id := range locked {
			if endpoints[id] {
				eps = append(eps, id)
			}
		}
	} else {
		for id := range endpoints {
			eps = append(eps, id)
		}
		slices.Sort(eps)
	}
	if len(eps) == 0 {
		return nil
	}
	in, list = s.idsIn("id", eps)
	return tx.Model(&WebhookEndpoint{}).Where(in+" AND "+endpointFailingSQL, list).
		Updates(map[string]any{"failing_since": nil, "consecutive_failures": 0, "backoff_until": nil}).Error
}

// recordFailedAttempt records an attempt that failed (to be retried, or
// for good).
func recordFailedAttempt(tx *gorm.DB, item WebhookItem, token string, r WebhookResult, disableAfter time.Duration, now time.Time) (bool, error) {
	updates := map[string]any{"claimed_until": nil, "claim_token": "", "updated_at": now, "last_error": r.Error}
	if r.Outcome == AttemptFailed {
		updates["status"] = WebhookFailed
	} else {
		updates["next_attempt_at"] = r.Next
	}
	res := tx.Model(&WebhookMessage{}).Where("id = ? AND claim_token = ? AND status = ?", item.ID, token, WebhookPending).Updates(updates)
	if res.Error != nil || res.RowsAffected == 0 {
		return false, res.Error // none: deleted, cancelled, or claimed again, not ours to record
	}
	lines := []WebhookAttempt{attemptLine(item, r)}
	if err := tx.Omit("Endpoint").Create(&lines).Error; err != nil {
		return false, err
	}
	if err := pruneAttempts(tx, lines); err != nil {
		return false, err
	}
	// Two lookups by primary key: joined, PostgreSQL's generic plan for a
	// small endpoints table walked every workspace.
	var e WebhookEndpoint
	if err := tx.Where("id = ?", item.EndpointID).Take(&e).Error; err != nil {
		return false, err
	}
	if err := tx.Where("id = ?", e.WorkspaceID).Take(&e.Workspace).Error; err != nil {
		return false, err
	}
	if err := backOffEndpoint(tx, &e, item, r, now); err != nil {
		return false, err
	}
	if e.DisabledAt != nil || now.Sub(*e.FailingSince) < disableAfter {
		return false, nil
	}
	return true, disableFailingEndpoint(tx, e, r, now)
}

// attemptLine is the delivery log line of an attempt.
func attemptLine(item WebhookItem, r WebhookResult) WebhookAttempt {
	return WebhookAttempt{EndpointID: item.EndpointID, MessageID: item.ID, WebhookID: item.WebhookID, EventType: item.EventType,
		Attempt: item.Attempts, At: r.Started.UTC(), StatusCode: r.StatusCode, LatencyMS: r.Latency.Milliseconds(),
		Outcome: r.Outcome, Error: r.Error}
}

// pruneEvery spaces out the pruning of an endpoint's delivery log: it is
// pruned when one of its new lines has an id divisible by it, about every
// pruneEvery attempts of the endpoint, so a log holds about
// maxWebhookAttempts + pruneEvery lines at most, and a delivery rarely
// pays for a DELETE.
const pruneEvery = 8

// pruneAttempts keeps the latest maxWebhookAttempts lines of the endpoints
// of lines (just inserted, with their ids) that are due for pruning.
func pruneAttempts(tx *gorm.DB, lines []WebhookAttempt) error {
	due := map[int64]bool{}
	for _, l := range lines {
		if l.ID%pruneEvery == 0 {
			due[l.EndpointID] = true
		}
	}
	for id := range due {
		if err := tx.Exec(`DELETE FROM webhook_attempts WHERE endpoint_id = ? AND id <= (
  SELECT id FROM webhook_attempts WHERE endpoint_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)`,
			id, id, maxWebhookAttempts).Error; err != nil {
			return err
		}
	}
	return nil
}

// backOffEndpoint records a failed attempt on endpoint e: the start of its
// failure run, and the next step of its backoff when the attempt was a
// probe or the endpoint was healthy.
func backOffEndpoint(tx *gorm.DB, e *WebhookEndpoint, item WebhookItem, r WebhookResult, now time.Time) error {
	updates := map[string]any{}
	if e.FailingSince == nil {
		started := r.Started.UTC()
		e.FailingSince = &started
		updates["failing_since"] = e.FailingSince
	}
	if (item.Probe || e.ConsecutiveFailures == 0) && r.EndpointBackoff != nil {
		e.ConsecutiveFailures++
		until := now.Add(r.EndpointBackoff(e.ConsecutiveFailures))
		e.BackoffUntil = &until
		updates["consecutive_failures"], updates["backoff_until"] = e.ConsecutiveFailures, e.BackoffUntil
	}
	if len(updates) == 0 {
		return nil
	}
	return tx.Model(&WebhookEndpoint{}).Where("id = ?", e.ID).Updates(updates).Error
}

// disableFailingEndpoint disables e, failing since too long, cancels its
// messages and audits it (actor: system).
func disableFailingEndpoint(tx *gorm.DB, e WebhookEndpoint, r WebhookResult, now time.Time) error {
	before := webhookFields(e)
	reason := fmt.Sprintf("every delivery failed since %s (last: %s)", e.FailingSince.Format(time.RFC3339), r.Error)
	if err := tx.Model(&WebhookEndpoint{}).Where("id = ?", e.ID).
		Updates(map[string]any{"disabled_at": &now, "disabled_reason": reason, "updated_at": now, "updated_by": ""}).Error; err != nil {
		return err
	}
	if err := cancelWebhookMessages(tx, e.ID, now); err != nil {
		return err
	}
	ev := auditOf(e.Workspace, ActionWebhookDisabled, TargetWebhook, strconv.FormatInt(e.ID, 10),
		fields{"enabled": before["enabled"]}, fields{"enabled": false, "disabledReason": reason})
	ev.ActorKind = ActorSystem
	return appendAudit(tx, ev)
}

// ReleaseWebhooks hands back every message claimed under token without
// counting the attempt (graceful shutdown).
func (s *Store) ReleaseWebhooks(ctx context.Context, token string) error {
	return s.inTx(ctx, func(tx *gorm.DB) error {
		return tx.Model(&WebhookMessage{}).Where("claim_token = ? AND status = ?", token, WebhookPending).
			Updates(map[string]any{"claimed_until": nil, "claim_token": "", "attempts": gorm.Expr("attempts - 1"), "updated_at": s.now()}).Error
	})
}

// pendingTestEventsSQL counts an endpoint's pending test events (those
// without an audit event) up to the bound, through
// idx_webhook_pending_tests, which holds them alone.
const pendingTestEventsSQL = `SELECT COUNT(*) FROM (SELECT id FROM webhook_messages
WHERE status = 'pending' AND event_id IS NULL AND endpoint_id = ? LIMIT ?) pending_tests`

// admitTestEvent refuses a test event for endpoint e while
// MaxPendingTestEvents of its test events are pending (ErrConflict: they
// are delivered first, or given up), and otherwise lets a backed-off
// endpoint be probed now: an admin sending a test event has usually just
// fixed the receiver. The caller holds the workspace's lock (adminTx), so
// two requests cannot both pass the count.
func admitTestEvent(tx *gorm.DB, e WebhookEndpoint, now time.Time) error {
	var n int64
	if err := tx.Raw(pendingTestEventsSQL, e.ID, MaxPendingTestEvents).Row().Scan(&n); err != nil {
		return err
	}
	if n >= MaxPendingTestEvents {
		return codedf(ErrConflict, CodeTooManyTestEvents,
			"webhook endpoint %d already has %d test events not yet delivered: see its deliveries, and send another once they are delivered or given up",
			e.ID, n)
	}
	if e.BackoffUntil == nil || !e.BackoffUntil.After(now) {
		return nil
	}
	return tx.Model(&WebhookEndpoint{}).Where("id = ?", e.ID).Update("backoff_until", now).Error
}

// resetEndpointBackoff adds to an endpoint's updates the end of its backoff
// (it was enabled again, or its URL changed: try it now).
func resetEndpointBackoff(updates map[string]any) {
	updates["consecutive_failures"], updates["backoff_until"] = 0, nil
}
