package server

import (
	"context"
	"net/http"

	"github.com/membership-api/controlplane/gen"
	"github.com/membership-api/controlplane/store"
	"github.com/membership-api/controlplane/webhook"
)

// WebhookConfig holds the webhook endpoints' settings.
type WebhookConfig struct {
	// AllowLoopback accepts http:// endpoints on loopback (development:
	// --webhooks-allow-loopback); the dispatcher must be told the same.
	AllowLoopback bool
	// Queued, if set, is called after a test event was queued, so the
	// in-process dispatcher sends it without waiting for a poll.
	Queued func()
}

// The webhook operations: admins only; the admin checks of the
// changes happen in the store, under the workspace lock.

// ListWebhookEndpoints lists the workspace's endpoints, without secrets.
func (s *Server) ListWebhookEndpoints(ctx context.Context, req gen.ListWebhookEndpointsRequestObject) (gen.ListWebhookEndpointsResponseObject, error) {
	c, err := s.requireAdminCaller(ctx, req.Params.XBlaxelWorkspace)
	if err != nil {
		return nil, err
	}
	endpoints, err := s.webhooks.Webhooks(ctx, c.Workspace.Name)
	if err != nil {
		return nil, err
	}
	out := make(gen.ListWebhookEndpoints200JSONResponse, 0, len(endpoints))
	for _, e := range endpoints {
		out = append(out, toWebhookEndpoint(e, false))
	}
	return out, nil
}

// CreateWebhookEndpoint registers an endpoint and answers its secret, once.
func (s *Server) CreateWebhookEndpoint(ctx context.Context, req gen.CreateWebhookEndpointRequestObject) (gen.CreateWebhookEndpointResponseObject, error) {
	p, name, err := s.workspaceName(ctx, deref(req.Params.XBlaxelWorkspace))
	if err != nil {
		return nil, err
	}
	if err := s.checkWebhookURL(&req.Body.Url); err != nil {
		return nil, err
	}
	e, err := s.webhooks.CreateWebhook(ctx, name, p.Sub, store.WebhookInput{URL: &req.Body.Url,
		Description: req.Body.Description, EventTypes: eventTypes(req.Body.EventTypes)})
	if err != nil {
		return nil, err
	}
	return gen.CreateWebhookEndpoint201JSONResponse(toWebhookEndpoint(e, true)), nil
}

// UpdateWebhookEndpoint changes an endpoint; absent fields stay.
func (s *Server) UpdateWebhookEndpoint(ctx context.Context, req gen.UpdateWebhookEndpointRequestObject) (gen.UpdateWebhookEndpointResponseObject, error) {
	p, name, err := s.workspaceName(ctx, deref(req.Params.XBlaxelWorkspace))
	if err != nil {
		return nil, err
	}
	if err := s.checkWebhookURL(req.Body.Url); err != nil {
		return nil, err
	}
	e, err := s.webhooks.UpdateWebhook(ctx, name, p.Sub, req.WebhookId, store.WebhookInput{URL: req.Body.Url,
		Description: req.Body.Description, EventTypes: eventTypes(req.Body.EventTypes), Enabled: req.Body.Enabled})
	if err != nil {
		return nil, err
	}
	return gen.UpdateWebhookEndpoint200JSONResponse(toWebhookEndpoint(e, false)), nil
}

// DeleteWebhookEndpoint deletes an endpoint, its messages and its log.
func (s *Server) DeleteWebhookEndpoint(ctx context.Context, req gen.DeleteWebhookEndpointRequestObject) (gen.DeleteWebhookEndpointResponseObject, error) {
	p, name, err := s.workspaceName(ctx, deref(req.Params.XBlaxelWorkspace))
	if err != nil {
		return nil, err
	}
	if err := s.webhooks.DeleteWebhook(ctx, name, p.Sub, req.WebhookId); err != nil {
		return nil, err
	}
	return gen.DeleteWebhookEndpoint204Response{}, nil
}

// SendWebhookTestEvent queues a webhook.test event for one endpoint.
func (s *Server) SendWebhookTestEvent(ctx context.Context, req gen.SendWebhookTestEventRequestObject) (gen.SendWebhookTestEventResponseObject, error) {
	p, name, err := s.workspaceName(ctx, deref(req.Params.XBlaxelWorkspace))
	if err != nil {
		return nil, err
	}
	msg, ev, err := s.webhooks.SendWebhookTest(ctx, name, p.Sub, req.WebhookId)
	if err != nil {
		return nil, err
	}
	if s.cfg.Webhooks.Queued != nil {
		s.cfg.Webhooks.Queued()
	}
	id := store.MessageWebhookID(msg.WebhookID, msg.ID)
	return gen.SendWebhookTestEvent202JSONResponse{Body: webhook.Event(ev, msg.ID),
		Headers: gen.SendWebhookTestEvent202ResponseHeaders{WebhookId: &id}}, nil
}

// ListWebhookDeliveries answers an endpoint's latest attempts.
func (s *Server) ListWebhookDeliveries(ctx context.Context, req gen.ListWebhookDeliveriesRequestObject) (gen.ListWebhookDeliveriesResponseObject, error) {
	c, err := s.requireAdminCaller(ctx, req.Params.XBlaxelWorkspace)
	if err != nil {
		return nil, err
	}
	e, err := s.webhooks.Webhook(ctx, c.Workspace.Name, req.WebhookId)
	if err != nil {
		return nil, err
	}
	limit := defaultAuditLimit
	if req.Params.Limit != nil {
		limit = *req.Params.Limit
	}
	attempts, err := s.webhooks.WebhookAttempts(ctx, e.ID, limit)
	if err != nil {
		return nil, err
	}
	out := make(gen.ListWebhookDeliveries200JSONResponse, 0, len(attempts))
	for _, a := range attempts {
		d := gen.WebhookDelivery{MessageId: store.MessageWebhookID(a.WebhookID, a.MessageID), EventType: gen.WebhookEventType(a.EventType),
			Attempt: a.Attempt, Time: a.At.UTC(), Status: a.StatusCode, LatencyMs: a.LatencyMS, Outcome: gen.WebhookDeliveryOutcome(a.Outcome)}
		if a.Error != "" {
			d.Error = &a.Error
		}
		out = append(out, d)
	}
	return out, nil
}

// checkWebhookURL refuses a URL webhook.CheckURL refuses (nil: unchanged).
func (s *Server) checkWebhookURL(u *string) error {
	if u == nil {
		return nil
	}
	if err := webhook.CheckURL(*u, s.cfg.Webhooks.AllowLoopback); err != nil {
		return newError(http.StatusBadRequest, store.CodeInvalidWebhookURL, err.Error())
	}
	return nil
}

func eventTypes(in *[]gen.WebhookEventType) *[]string {
	if in == nil {
		return nil
	}
	out := make([]string, len(*in))
	for i, t := range *in {
		out[i] = string(t)
	}
	return &out
}

func toWebhookEndpoint(e store.WebhookEndpoint, withSecret bool) gen.WebhookEndpoint {
	types := make([]gen.WebhookEventType, 0, len(e.Types()))
	for _, t := range e.Types() {
		types = append(types, gen.WebhookEventType(t))
	}
	out := gen.WebhookEndpoint{Id: e.ID, Url: e.URL, Description: &e.Description, EventTypes: types,
		Enabled: e.DisabledAt == nil, FailingSince: e.FailingSince, CreatedAt: e.CreatedAt.UTC(), UpdatedAt: e.UpdatedAt.UTC(),
		CreatedBy: &e.CreatedBy, UpdatedBy: &e.UpdatedBy}
	if e.DisabledReason != "" {
		out.DisabledReason = &e.DisabledReason
	}
	if withSecret {
		out.Secret = &e.Secret
	}
	return out
}
