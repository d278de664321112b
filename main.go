// Command controlplane serves the Blaxel control plane's workspace-membership
// API (openapi/controlplane.yml) and administers its data. The commands live
// in internal/cli; `go run .` and `go run github.com/membership-api/controlplane@version`
// both start here.
package main

import "github.com/membership-api/controlplane/internal/cli"

func main() { cli.Main() }
