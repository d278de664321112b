// Command baseline is the bare-Echo reference for `make bench`: it serves
// POST /v0/users, decodes {"email": "..."} with encoding/json and answers 200
// with a fixed PendingInvitation. No middleware, no logging, no storage: the
// ceiling the real invite path is compared against.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"log"
	"net/http"

	"github.com/labstack/echo/v4"
)

type inviteRequest struct {
	Email string `json:"email"`
}

type pendingInvitation struct {
	CreatedAt string `json:"createdAt"`
	CreatedBy string `json:"createdBy"`
	Email     string `json:"email"`
	ExpiresAt string `json:"expiresAt"`
	InvitedBy string `json:"invitedBy"`
	Role      string `json:"role"`
	UpdatedAt string `json:"updatedAt"`
	UpdatedBy string `json:"updatedBy"`
	Workspace string `json:"workspace"`
}

var fixed = pendingInvitation{
	CreatedAt: "2025-01-01T00:00:00Z",
	CreatedBy: "bench-admin",
	Email:     "user@bench.test",
	ExpiresAt: "2025-01-08T00:00:00Z",
	InvitedBy: "bench-admin",
	Role:      "member",
	UpdatedAt: "2025-01-01T00:00:00Z",
	UpdatedBy: "bench-admin",
	Workspace: "bench",
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address")
	flag.Parse()

	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.POST("/v0/users", func(c echo.Context) error {
		var req inviteRequest
		if err := json.NewDecoder(c.Request().Body).Decode(&req); err != nil || req.Email == "" {
			return c.JSON(http.StatusBadRequest, map[string]string{"error": "bad request"})
		}
		return c.JSON(http.StatusOK, fixed)
	})
	if err := e.Start(*addr); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
