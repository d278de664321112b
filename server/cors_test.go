package server

import (
	"slices"
	"testing"
)

func TestParseOrigins(t *testing.T) {
	for in, want := range map[string][]string{
		"":    nil,
		" , ": nil,
		"*":   {"*"},
		// Browsers send scheme and host in lower case, without a path.
		"HTTPS://App.Example.test/, http://localhost:3000": {"https://app.example.test", "http://localhost:3000"},
		"https://a.test,https://a.test":                    {"https://a.test"},
	} {
		got, err := ParseOrigins(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ParseOrigins(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"app.test", "https://app.test/x", "https://app.test?q", "ws://app.test", "https://*.app.test", "https://u:p@app.test", "null"} {
		if got, err := ParseOrigins(bad); err == nil {
			t.Errorf("ParseOrigins(%q) = %q, want an error", bad, got)
		}
	}
}
