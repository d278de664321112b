package ratelimit

import "time"

// RoundTrips is how many budgets r asked Redis for.
func RoundTrips(r *Redis) int64 { return r.roundTrips.Load() }

// SetBudgetWindow replaces r's budget window (budgetWindow), so a test can
// use large budgets on a quota that refills slowly enough not to move its
// count while the test runs.
func SetBudgetWindow(r *Redis, d time.Duration) { r.budgets.window = d }

// MaxBudget is maxBudget, for the table test of the tolerance.
func MaxBudget(q Quota, window time.Duration) int { return maxBudget(q, window) }

// Prefix is r's key prefix, for a second replica of the same deployment.
func Prefix(r *Redis) string { return r.prefix }
