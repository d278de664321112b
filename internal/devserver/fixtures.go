package devserver

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/membership-api/controlplane/store"
)

// The YAML form of fixtures (docs/api/testing.md shows one):
//
//	workspaces:
//	  - name: acme
//	    displayName: Acme Inc
//	    admin: {sub: alice, email: alice@acme.test}
//	    members: [{sub: bob, email: bob@acme.test, role: member}]
//	    invitations: [{email: carol@example.com, role: member, invitedBy: alice, expiresIn: 7d}]
//	    serviceAccounts:
//	      - {name: ci, role: admin, clientId: sa_ci_fixture_01, clientSecret: bls_ci_fixture_secret_01,
//	         apiKeys: [{name: ci, key: bl_ci_fixture_key_0001, expiresIn: 30d}]}
//	    apiKeys: [{sub: alice, key: bl_alice_fixture_key_01}]
//
// It is read through yaml.v3's node API, so every refusal names its line.

// LoadFixtures reads and checks the fixtures file at path.
func LoadFixtures(path string, emails store.EmailOptions) (*store.Fixtures, error) {
	raw, err := os.ReadFile(path) //nolint:gosec // G304: the file the developer names with --fixtures
	if err != nil {
		return nil, fmt.Errorf("--fixtures: %w", err)
	}
	f, err := ParseFixtures(raw, emails)
	if err != nil {
		return nil, fmt.Errorf("--fixtures %s: %w", path, err)
	}
	return f, nil
}

// ParseFixtures parses fixtures in their YAML form and checks them
// (store.Fixtures.Validate): every refusal is returned, each with its line.
func ParseFixtures(raw []byte, emails store.EmailOptions) (*store.Fixtures, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	p := &fixtureParser{}
	var f store.Fixtures
	if len(doc.Content) > 0 {
		root := doc.Content[0]
		p.fields(root, map[string]func(*yaml.Node){
			"workspaces": func(n *yaml.Node) {
				p.each(n, func(item *yaml.Node) { f.Workspaces = append(f.Workspaces, p.workspace(item)) })
			},
		})
	}
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	if err := f.Validate(emails); err != nil {
		return nil, err
	}
	return &f, nil
}

type fixtureParser struct{ errs []error }

func (p *fixtureParser) fail(n *yaml.Node, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("line %d: %s", n.Line, fmt.Sprintf(format, args...)))
}

// fields calls each key's function with its value, refusing unknown keys.
func (p *fixtureParser) fields(n *yaml.Node, keys map[string]func(*yaml.Node)) {
	if n.Kind != yaml.MappingNode {
		p.fail(n, "expected a mapping")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		fn, ok := keys[k.Value]
		if !ok {
			known := make([]string, 0, len(keys))
			for name := range keys {
				known = append(known, name)
			}
			slices.Sort(known)
			p.fail(k, "unknown key %q (expected %s)", k.Value, strings.Join(known, ", "))
			continue
		}
		fn(v)
	}
}

func (p *fixtureParser) each(n *yaml.Node, fn func(*yaml.Node)) {
	if n.Kind != yaml.SequenceNode {
		p.fail(n, "expected a list")
		return
	}
	for _, item := range n.Content {
		fn(item)
	}
}

// str stores a scalar's text in *dst.
func (p *fixtureParser) str(dst *string) func(*yaml.Node) {
	return func(n *yaml.Node) {
		if n.Kind != yaml.ScalarNode {
			p.fail(n, "expected a string")
			return
		}
		*dst = n.Value
	}
}

func (p *fixtureParser) workspace(n *yaml.Node) store.FixtureWorkspace {
	w := store.FixtureWorkspace{Line: n.Line}
	p.fields(n, map[string]func(*yaml.Node){
		"name":        p.str(&w.Name),
		"displayName": p.str(&w.DisplayName),
		"admin":       func(v *yaml.Node) { w.Admin = p.member(v) },
		"members":     func(v *yaml.Node) { p.each(v, func(m *yaml.Node) { w.Members = append(w.Members, p.member(m)) }) },
		"invitations": func(v *yaml.Node) {
			p.each(v, func(m *yaml.Node) { w.Invitations = append(w.Invitations, p.invitation(m)) })
		},
		"serviceAccounts": func(v *yaml.Node) {
			p.each(v, func(m *yaml.Node) { w.ServiceAccounts = append(w.ServiceAccounts, p.serviceAccount(m)) })
		},
		"apiKeys": func(v *yaml.Node) { p.each(v, func(m *yaml.Node) { w.APIKeys = append(w.APIKeys, p.apiKey(m, true)) }) },
	})
	if w.Admin.Line == 0 && w.Admin.Sub == "" {
		p.fail(n, "workspace %q needs an admin: {sub, email}", w.Name)
	}
	return w
}

func (p *fixtureParser) member(n *yaml.Node) store.FixtureMember {
	m := store.FixtureMember{Line: n.Line}
	p.fields(n, map[string]func(*yaml.Node){"sub": p.str(&m.Sub), "email": p.str(&m.Email), "role": p.str(&m.Role)})
	return m
}

func (p *fixtureParser) invitation(n *yaml.Node) store.FixtureInvitation {
	inv := store.FixtureInvitation{Line: n.Line}
	var expiresIn string
	p.fields(n, map[string]func(*yaml.Node){"email": p.str(&inv.Email), "role": p.str(&inv.Role),
		"invitedBy": p.str(&inv.InvitedBy), "expiresIn": p.str(&expiresIn)})
	if expiresIn != "" {
		d, err := store.ParseExpiresIn(expiresIn)
		if err != nil {
			p.fail(n, "%s", err)
		}
		inv.TTL = d
	}
	return inv
}

func (p *fixtureParser) serviceAccount(n *yaml.Node) store.FixtureServiceAccount {
	sa := store.FixtureServiceAccount{Line: n.Line}
	p.fields(n, map[string]func(*yaml.Node){"name": p.str(&sa.Name), "description": p.str(&sa.Description), "role": p.str(&sa.Role),
		"clientId": p.str(&sa.ClientID), "clientSecret": p.str(&sa.ClientSecret),
		"apiKeys": func(v *yaml.Node) {
			p.each(v, func(m *yaml.Node) { sa.APIKeys = append(sa.APIKeys, p.apiKey(m, false)) })
		},
	})
	return sa
}

func (p *fixtureParser) apiKey(n *yaml.Node, withSub bool) store.FixtureAPIKey {
	k := store.FixtureAPIKey{Line: n.Line}
	keys := map[string]func(*yaml.Node){"name": p.str(&k.Name), "key": p.str(&k.Key), "expiresIn": p.str(&k.ExpiresIn)}
	if withSub {
		keys["sub"] = p.str(&k.Sub)
	}
	p.fields(n, keys)
	return k
}
