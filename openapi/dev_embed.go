package openapi

import _ "embed"

// DevYAML is openapi/dev.yml: the routes serve --dev adds under /_dev.
//
//go:embed dev.yml
var DevYAML []byte
