# Targets a newcomer can guess. `make run` serves on the embedded SQLite
# default; `make test` runs every test (SQLite and PostgreSQL).
GO ?= go
# PostgreSQL used by the tests; each test creates and drops its own database.
# Set it empty (TEST_POSTGRES_DSN=) to skip the PostgreSQL tests, which say so.
TEST_POSTGRES_DSN ?= postgres://postgres@127.0.0.1:5432/test?sslmode=disable
export TEST_POSTGRES_DSN
# Redis for the shared rate-limit tests; TEST_REDIS_URL= skips them.
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
export TEST_REDIS_URL

.PHONY: run build test generate check-generated check-contract lint bench bench-ab bench-micro

run:
	$(GO) run . serve

build:
	$(GO) build -o bin/controlplane .

test:
	$(GO) vet ./...
	cd client && $(GO) vet ./...
	$(GO) test -count=1 -race -timeout 20m ./...

generate:
	cd gen && $(GO) generate ./...

# Fails when gen/ or client/ does not match openapi/ (someone edited one
# without the other).
check-generated: generate
	git diff --exit-code -- gen/ client/ || (echo "gen/ or client/ is stale: run 'make generate' and commit the result" >&2; exit 1)
	test -z "$$(git status --porcelain -- gen/ client/)" || (git status --porcelain -- gen/ client/; echo "gen/ or client/ has untracked generated files: commit them" >&2; exit 1)

# The contract guard (run by .ci/run): no breaking change against the seed or
# upstream (oasdiff, pinned; ERR and WARN both fail, the output names the
# change), and Redocly's lint with every warning an error (openapi/redocly.yaml).
# Upstream's whole document is compared on the paths we serve only: the rest
# is upstream's, not ours to break. The tools run at pinned versions from the
# Go module proxy and the npm registry (nothing added to go.mod).
OASDIFF := $(GO) run github.com/oasdiff/oasdiff@v1.37.0
REDOCLY := npx --yes @redocly/cli@2.77.0
CONTRACT_PATHS := ^/(users|users/\{subOrEmail\}|profile/invitations|workspaces|workspaces/availability|workspaces/\{workspaceName\}|workspaces/\{workspaceName\}/(join|decline|leave))$$
check-contract:
	$(OASDIFF) breaking --fail-on WARN openapi/upstream/seed-controlplane.yml openapi/controlplane.yml
	$(OASDIFF) breaking --fail-on WARN openapi/upstream/blaxel-membership-ops.yml openapi/controlplane.yml
	$(OASDIFF) breaking --fail-on WARN --match-path '$(CONTRACT_PATHS)' openapi/upstream/upstream-controlplane.yml openapi/controlplane.yml
	$(REDOCLY) lint --config openapi/redocly.yaml openapi/controlplane.yml

# golangci-lint v2 with .golangci.yml (its gofmt formatter replaces the
# former gofmt check; go vet itself runs in `make test`), pinned and run from
# the module proxy (nothing added to go.mod). client/ is generated code only,
# so it is not linted; its go vet also runs in `make test`.
GOLANGCI_LINT := $(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0
lint:
	$(GOLANGCI_LINT) run ./...

# Load benchmark of the invite path against the spec-first floor (bench/floor)
# and a bare-Echo baseline (bench/run.sh: wrk, SQLite and PostgreSQL, SQLite
# with rate limits in memory and through Redis, interleaved rounds, one
# table), then the scale cases on data seeded by bench/seed (invites into a
# 20,000-member workspace, paged and unpaged lists, my invitations; a second
# table with their goals). Knobs: BENCH_DURATION (10s), BENCH_CONNECTIONS
# (64), BENCH_ROUNDS (3), BENCH_POSTGRES_DSN (admin DSN; empty skips
# PostgreSQL), BENCH_SERVE_FLAGS, BENCH_LIMITS (1; 0 skips the rate-limited
# rows), BENCH_REDIS_URL, BENCH_SCALE (1; 0 skips the scale cases),
# BENCH_SCALE_DURATION (5s), BENCH_SCALE_WARMUP (1s). About 9 minutes with
# the defaults.
bench:
	GO=$(GO) bash bench/run.sh

# A/B load benchmark of the invite path (bench/ab.sh): builds BASE (a commit;
# HEAD by default, so the uncommitted work tree is compared with the last
# commit; BASE=HEAD~1 with a clean tree compares the last commit with its
# parent) and the work tree, starts both at once on fresh SQLite data and
# fresh PostgreSQL databases, and runs pairs of wrk runs alternating which
# goes first. Prints per database each build's medians (req/s, p99, CPU
# per request), the per-pair ratios head/base with their spread and the
# verdict against the goal of 0.97 (informational: the exit status says
# only whether the benchmark ran). Knobs: BASE (HEAD), BENCH_AB_PAIRS (6),
# BENCH_DURATION (6s), BENCH_CONNECTIONS (64), BENCH_POSTGRES_DSN (admin
# DSN; empty skips PostgreSQL), BENCH_SERVE_FLAGS. About 4 minutes with the
# defaults (2 databases x 6 pairs x 2 runs x 8 s with warm-up, plus builds).
bench-ab:
	GO=$(GO) bash bench/ab.sh '$(BASE)'

# Go microbenchmarks of the hot pieces (benchstat-friendly).
bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem ./...
