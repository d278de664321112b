// Package gen holds the code oapi-codegen generates from openapi/controlplane.yml:
// models, the strict Echo server interface, the embedded spec and a client.
// Never edit it by hand; run `make generate`.
package gen

//go:generate go run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen -config ../openapi/oapi-codegen.yml ../openapi/controlplane.yml
//go:generate go run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen -config ../openapi/oapi-codegen-client.yml ../openapi/controlplane.yml
