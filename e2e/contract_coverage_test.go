package e2e_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/membership-api/controlplane/server"
)

// Contract coverage: every operation × status the YAML declares
// must be received by some test through the validating transport
// (checkResponse records each validated answer). TestMain fails a complete
// run of this package that leaves a declared pair unseen, unless the pair is
// in coverageExceptions with its reason. Runs that select tests (-run, -skip,
// -short) or skip PostgreSQL do not check: they cannot see every pair.
//
// CONTRACT_COVERAGE_OUT=file writes the table (operation, status, seen) there.

// coverageExceptions are declared pairs no test can reach, each with why.
var coverageExceptions = map[string]string{
	// Declared as upstream declares it ("no pending invitations"), but this
	// server answers 200 with an empty list (docs/api/invitations.md): SDK
	// clients iterate the answer, and an empty page is how a paged list ends.
	"ListAllPendingInvitations 404": "upstream declares 404 for no pending invitations; this server answers 200 []",
}

var seenPairs sync.Map // "OperationId status" → struct{}

// recordPair notes that a test received status from operationID, validated.
func recordPair(operationID string, status int) {
	seenPairs.Store(operationID+" "+strconv.Itoa(status), struct{}{})
}

// checkCoverage compares the declared pairs with the seen ones.
func checkCoverage() int {
	selective := testing.Short() || os.Getenv("TEST_POSTGRES_DSN") == ""
	for _, name := range []string{"test.run", "test.skip"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			selective = true
		}
	}
	doc, err := server.LoadSpec(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "contract coverage:", err)
		return 1
	}
	var declared, missing []string
	for _, path := range doc.Paths.InMatchingOrder() {
		for _, op := range doc.Paths.Value(path).Operations() {
			for status := range op.Responses.Map() {
				pair := op.OperationID + " " + status
				declared = append(declared, pair)
				if _, seen := seenPairs.Load(pair); !seen {
					if _, excused := coverageExceptions[pair]; !excused {
						missing = append(missing, pair)
					}
				}
			}
		}
	}
	slices.Sort(declared)
	slices.Sort(missing)
	for pair := range coverageExceptions {
		if !slices.Contains(declared, pair) {
			fmt.Fprintf(os.Stderr, "contract coverage: exception %q is not a declared pair: remove it\n", pair)
			return 1
		}
	}
	if out := os.Getenv("CONTRACT_COVERAGE_OUT"); out != "" {
		var b strings.Builder
		for _, pair := range declared {
			_, seen := seenPairs.Load(pair)
			fmt.Fprintf(&b, "%s\t%v\t%s\n", pair, seen, coverageExceptions[pair])
		}
		if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "contract coverage:", err)
		}
	}
	if selective || len(missing) == 0 {
		return 0
	}
	fmt.Fprintf(os.Stderr, "contract coverage: %d of %d declared operation × status pairs were never received by a test:\n  %s\n"+
		"exercise each (or add it to coverageExceptions in contract_coverage_test.go with the reason)\n",
		len(missing), len(declared), strings.Join(missing, "\n  "))
	return 1
}
