package mail

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"net/url"
	"strings"
	texttemplate "text/template"
	"time"
)

// DefaultAcceptURLTemplate is the accept link used when none is configured.
//
// It points at a console page rather than the API because accepting is
// `POST /v0/workspaces/{workspaceName}/join` with the invitee's token, which a
// link in an email cannot do; the page signs the invitee in and makes that
// call.
const DefaultAcceptURLTemplate = "http://localhost:3000/invitations/{workspace}?email={email}"

//go:embed templates/invitation.txt.tmpl templates/invitation.html.tmpl
var templateFS embed.FS

// Two template packages on purpose: html/template escapes for HTML contexts
// (and refuses javascript: URLs in href), text/template leaves the plain part
// readable.
var (
	textTemplates = texttemplate.Must(texttemplate.ParseFS(templateFS, "templates/invitation.txt.tmpl"))
	htmlTemplate  = htmltemplate.Must(htmltemplate.ParseFS(templateFS, "templates/invitation.html.tmpl"))
)

// Invitation is what the invitation email says.
type Invitation struct {
	InviterSub           string // shown when InviterEmail is empty
	InviterEmail         string
	InviteeEmail         string
	WorkspaceName        string
	WorkspaceDisplayName string // shown when set, else WorkspaceName
	Role                 string
	ExpiresAt            time.Time
	AcceptURL            string // from AcceptURL
}

// invitationView is the data the templates see: every value already one line.
type invitationView struct {
	Inviter, Invitee, Workspace, Role, Expires, AcceptURL string
}

// Render returns the subject, plain-text and HTML bodies of the invitation
// email; it fails if the invitee, workspace or accept link is missing.
//
// Every field is flattened to one line first, so a name cannot forge extra
// lines in the text part or headers in the subject.
func Render(inv Invitation) (subject, text, html string, err error) {
	v := invitationView{
		Inviter:   oneLine(inv.InviterEmail),
		Invitee:   oneLine(inv.InviteeEmail),
		Workspace: oneLine(inv.WorkspaceDisplayName),
		Role:      oneLine(inv.Role),
		Expires:   inv.ExpiresAt.UTC().Format(time.RFC1123),
		AcceptURL: oneLine(inv.AcceptURL),
	}
	if v.Inviter == "" {
		v.Inviter = oneLine(inv.InviterSub)
	}
	if v.Workspace == "" {
		v.Workspace = oneLine(inv.WorkspaceName)
	}
	if v.Invitee == "" || v.Workspace == "" || v.AcceptURL == "" {
		return "", "", "", errors.New("mail: invitation needs an invitee, a workspace and an accept link")
	}

	var b strings.Builder
	if err := textTemplates.ExecuteTemplate(&b, "subject", v); err != nil {
		return "", "", "", fmt.Errorf("mail: render subject: %w", err)
	}
	subject = oneLine(b.String())
	b.Reset()
	if err := textTemplates.ExecuteTemplate(&b, "text", v); err != nil {
		return "", "", "", fmt.Errorf("mail: render text: %w", err)
	}
	text = b.String()
	var h bytes.Buffer
	if err := htmlTemplate.Execute(&h, v); err != nil {
		return "", "", "", fmt.Errorf("mail: render HTML: %w", err)
	}
	return subject, text, h.String(), nil
}

// AcceptURL builds the accept link from tmpl by replacing {workspace} and
// {email}; an empty tmpl means DefaultAcceptURLTemplate.
//
// Placeholders before the first '?' are path-escaped, those after it
// query-escaped, so "a+b@x.io" survives as a query value and a "/" cannot add
// a path segment. The result must be an absolute http(s) URL.
func AcceptURL(tmpl string, workspace, email string) (string, error) {
	if tmpl == "" {
		tmpl = DefaultAcceptURLTemplate
	}
	path, query, hasQuery := strings.Cut(tmpl, "?")
	path = strings.NewReplacer("{workspace}", url.PathEscape(workspace), "{email}", url.PathEscape(email)).Replace(path)
	s := path
	if hasQuery {
		s += "?" + strings.NewReplacer("{workspace}", url.QueryEscape(workspace), "{email}", url.QueryEscape(email)).Replace(query)
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("mail: accept URL template %q: %w", tmpl, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("mail: accept URL template %q: want an absolute http or https URL", tmpl)
	}
	return s, nil
}
