//go:build tools

// Package main pins build tools in go.mod so `make generate` uses the same
// generator version on every machine.
package main

import (
	_ "github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen"
)
