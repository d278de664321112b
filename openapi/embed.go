// Package openapi holds the contract, openapi/controlplane.yml, as written:
// gen/ embeds it as JSON for validation, this package embeds its text so
// the server can serve the document its authors read (order, comments).
package openapi

import _ "embed"

// ControlPlaneYAML is openapi/controlplane.yml, byte for byte.
//
//go:embed controlplane.yml
var ControlPlaneYAML []byte
