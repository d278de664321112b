package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestDuplicateName: a member name repeated in one object is found at any
// depth, however it is escaped; the same name in different objects is not a
// duplicate.
func TestDuplicateName(t *testing.T) {
	for body, want := range map[string]string{
		`{"email":"a@x.test","email":"b@x.test"}`:         "email",
		`{"email":"a@x.test","\u0065mail":"b@x.test"}`:    "email", // the same name once unescaped
		`{"email":"a@x.test","EMAIL":"b@x.test"}`:         "email", // the same field to a case-insensitive decoder
		`{"a":{"b":1,"c":[{"d":1,"d":2}]}}`:               "d",
		`{"a":{"b":1},"a":{"b":1}}`:                       "a",
		`{"n":1e400,"n":2}`:                               "n", // a number no float64 holds must not end the walk
		`[{"x":1},{"x":2},{"y":{"x":1,"z":{"x":2}}}]`:     "",
		`{"email":"a@x.test","role":"admin"}`:             "",
		`{"a":"x:y","b":{},"c":[],"d":{"a":1,"b":2}}`:     "",
		`{"email":"a@x.test"}`:                            "",
		`{"s":"\"a\":1,\"a\":2"}`:                         "", // names inside a string value are not names
		`{"a":[{"b":1},{"b":2}],"c":{"a":1},"b":[[],{}]}`: "",
	} {
		if !json.Valid([]byte(body)) {
			t.Fatalf("test body %s is not JSON", body)
		}
		got, dup := duplicateName([]byte(body))
		if got != want || dup != (want != "") {
			t.Errorf("%s: got %q %v, want %q", body, got, dup, want)
		}
	}
}

// BenchmarkDuplicateName is the cost readBody adds per JSON body: an invite
// (one member: a byte count), a body with several members (the walk) and the
// worst case, a 64 KiB body (the default --body-limit) of small members.
func BenchmarkDuplicateName(b *testing.B) {
	large := []byte{'{'}
	for i := 0; len(large) < 64<<10-16; i++ {
		large = append(large, fmt.Sprintf(`"m%d":%d,`, i, i)...)
	}
	large = append(large[:len(large)-1], '}')
	for name, body := range map[string][]byte{
		"invite":      []byte(`{"email":"new.user@example.com"}`),
		"fourMembers": []byte(`{"email":"new.user@example.com","role":"member","a":{"b":1},"c":[1,2]}`),
		"64KiB":       large,
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, dup := duplicateName(body); dup {
					b.Fatal("duplicate reported")
				}
			}
		})
	}
}

// TestReadAtMost: a declared length sizes the buffer; the body read is the
// same as io.ReadAll under the limit would give, and a truncated one fails.
func TestReadAtMost(t *testing.T) {
	for _, c := range []struct {
		body            string
		declared, limit int64
		want            string
		err             bool
	}{
		{"hello", 5, 100, "hello", false},
		{"hello", -1, 100, "hello", false}, // unknown length
		{"hello", 3, 100, "hello", false},  // longer than declared: read on
		{"hel", 5, 100, "", true},          // truncated
		{strings.Repeat("x", 200), 5, 100, strings.Repeat("x", 100), false},
		{"", 0, 100, "", false},
	} {
		got, err := readAtMost(bytes.NewReader([]byte(c.body)), c.declared, c.limit)
		if (err != nil) != c.err || (!c.err && string(got) != c.want) {
			t.Errorf("%q declared %d limit %d: got %q, %v", c.body, c.declared, c.limit, got, err)
		}
	}
}
