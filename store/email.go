package store

import (
	"errors"
	"strings"
)

// EmailOptions relax CheckEmail for development. The zero value is the
// production rule.
type EmailOptions struct {
	// AllowLocalDomains also accepts domains that only mean something on a
	// developer's machine or a private network: a single label (localhost,
	// mailhog), *.localhost, and all-numeric domains such as 127.0.0.1.
	AllowLocalDomains bool
}

// Limits from RFC 5321 §4.5.3.1: a path is at most 256 octets including its
// angle brackets, a local part at most 64, a domain label at most 63.
const (
	maxEmailLength     = 254
	maxLocalPartLength = 64
	maxLabelLength     = 63
)

var (
	errEmailShape = errors.New("not a valid email address (expected name@example.com: ASCII letters, digits and .!#$%&'*+/=?^_`{|}~- before the @, no spaces, quotes or display name)")
	errEmailLong  = errors.New("email address longer than 254 characters (RFC 5321)")
	errLocalLong  = errors.New("the part of the email address before the @ is longer than 64 characters (RFC 5321)")
	errLocalDots  = errors.New("the part of the email address before the @ must not start or end with a dot or have two dots in a row")
	errDomainDots = errors.New("the email domain must be a name with a dot, such as example.com: local names (localhost, single labels) are refused (for development, start serve with --allow-local-email-domains)")
	errDomainIP   = errors.New("the email domain must be a name such as example.com: IP addresses and all-numeric domains are refused (for development, start serve with --allow-local-email-domains)")
)

// CheckEmail is the one email rule of the API (the spec's `format: email`)
// and of the CLI and store. Addresses must be what SMTP delivers and a mail
// client accepts without quoting, and nothing in them can add a header:
//   - plain ASCII name@domain, the WHATWG <input type=email> character set,
//     no display name, quotes, spaces or CR/LF;
//   - the local part a dot-atom of at most 64 characters: no leading, trailing
//     or doubled dot (net/mail, which the mailer uses, refuses those, so such
//     an invitation could never be sent);
//   - the domain dot-separated labels of letters, digits and inner hyphens
//     with at least one dot and a top-level label that is not all digits nor
//     "localhost": user@localhost, user@127.0.0.1 or user@intranet would have
//     the server mail itself or a private network (RFC 6761 reserves
//     .localhost for loopback). Domain literals ([127.0.0.1]) are never
//     accepted. opts.AllowLocalDomains lifts the domain rule for development.
func CheckEmail(email string, opts EmailOptions) error {
	local, domain, ok := strings.Cut(email, "@")
	switch {
	case len(email) > maxEmailLength:
		return errEmailLong
	case !ok || local == "" || domain == "" || !isAtomText(local) || !isDomain(domain):
		return errEmailShape
	case len(local) > maxLocalPartLength:
		return errLocalLong
	case local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, ".."):
		return errLocalDots
	case opts.AllowLocalDomains:
		return nil
	}
	dot := strings.LastIndexByte(domain, '.')
	if dot < 0 {
		return errDomainDots
	}
	switch tld := domain[dot+1:]; {
	case strings.EqualFold(tld, "localhost"):
		return errDomainDots
	case strings.Trim(tld, "0123456789") == "":
		return errDomainIP
	}
	return nil
}

// isAtomText tells whether s has only the characters the WHATWG rule allows
// before the @ (RFC 5322 atext and the dot).
func isAtomText(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && !strings.ContainsRune(".!#$%&'*+/=?^_`{|}~-", rune(c)) {
			return false
		}
	}
	return true
}

// isDomain tells whether s is dot-separated labels of 1-63 letters, digits
// and hyphens, no label starting or ending with a hyphen.
func isDomain(s string) bool {
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > maxLabelLength || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if !isAlnum(label[i]) && label[i] != '-' {
				return false
			}
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// NormalizeEmail is the one canonical form emails are stored and compared in.
func NormalizeEmail(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

// checkMemberEmail applies CheckEmail to a member's normalised email. Empty is
// allowed: a member may be a service account without one (see Member).
func checkMemberEmail(email string, opts []EmailOptions) error {
	if email == "" {
		return nil
	}
	var o EmailOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	if err := CheckEmail(email, o); err != nil {
		return codedf(ErrInvalid, CodeInvalidEmail, "email %q: %s", email, err)
	}
	return nil
}
