package cli

import "testing"

func TestCheckDB(t *testing.T) {
	for db, refused := range map[string]bool{
		"":                             false,
		"./data/controlplane.db":       false,
		"/var/lib/cp/controlplane.db":  false,
		"sqlite:/tmp/cp.db":            false,
		"file:cp.db?_txlock=immediate": false,
		"file::memory:":                false,
		"postgres.db":                  false,
		"data/postgres/cp.db":          false,
		"postgres://u@h:5432/db":       false, // a URL: the store checks it
		"postgres//127.0.0.1/test":     true,
		"postgresql:/127.0.0.1/test":   true,
		"postgres:u@h/db":              true,
		"127.0.0.1:5432/test":          true,
		"mysql/localhost/db":           true,
		"postgres":                     true,
		"./data//cp.db":                true,
	} {
		if err := checkDB(db); (err != nil) != refused {
			t.Errorf("checkDB(%q) = %v, want refused %v", db, err, refused)
		}
	}
}
