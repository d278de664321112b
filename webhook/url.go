// Package webhook delivers the webhook outbox (store.WebhookMessage): each
// message signed as the Standard Webhooks specification says, POSTed to its
// endpoint over a client that refuses private addresses when it connects,
// follows no redirect and bounds every attempt; retried with backoff until
// it is too old; at least once, with a stable webhook-id.
package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrRefusedAddress is a connection refused by the SSRF rule: the endpoint's
// host resolved to a loopback, private, link-local or otherwise
// non-public address.
var ErrRefusedAddress = errors.New("refused: the endpoint's address is not public (private, loopback, link-local or reserved)")

// refusedPrefixes are non-public ranges beyond netip's own predicates
// (IsPrivate, IsLoopback, IsLinkLocal…, IsMulticast, IsUnspecified).
var refusedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),  // carrier-grade NAT (RFC 6598)
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, and the broadcast address
	netip.MustParsePrefix("64:ff9b::/96"),   // NAT64: may embed a private IPv4 address
	netip.MustParsePrefix("64:ff9b:1::/48"), // local NAT64
	netip.MustParsePrefix("2001:db8::/32"),  // documentation
	netip.MustParsePrefix("fec0::/10"),      // deprecated site-local
	netip.MustParsePrefix("100::/64"),       // discard-only
	netip.MustParsePrefix("2002::/16"),      // 6to4: may embed a private IPv4 address
	netip.MustParsePrefix("2001::/32"),      // Teredo: likewise
	// IETF-reserved, all of it: it holds the obsolete IPv4-compatible form
	// (::/96, [::127.0.0.1] = [::7f00:1]) and the SIIT IPv4-translated form
	// (::ffff:0:0:0/96, [::ffff:0:7f00:1]), which embed an IPv4 address
	// that netip's predicates do not look into. Refused outright rather
	// than unwrapped: no public endpoint is reachable only through them,
	// and what a kernel or a translator on the path does with them varies,
	// so judging the embedded address would be a guess. ::1 and the
	// IPv4-mapped form (::ffff:a.b.c.d, how a dual-stack socket reaches an
	// IPv4 address) are in this block too but are judged before it:
	// publicAddr unmaps first and handles loopback first.
	netip.MustParsePrefix("::/8"),
}

// resolveTimeout bounds the look-up of an endpoint's host name at
// registration: hosts-file names answer in microseconds and a DNS answer
// in milliseconds; an admin waits no longer than this for a resolver that
// does not answer (the name is then accepted, and judged when connecting).
const resolveTimeout = 2 * time.Second

// publicAddr tells whether ip may be connected to (loopback: only when
// allowLoopback).
func publicAddr(ip netip.Addr, allowLoopback bool) bool {
	ip = ip.Unmap()
	if ip.IsLoopback() {
		return allowLoopback
	}
	if !ip.IsGlobalUnicast() || ip.IsPrivate() || ip.IsLinkLocalUnicast() {
		return false
	}
	for _, p := range refusedPrefixes {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// dialControl is the net.Dialer Control of the delivery client: it runs
// for every address actually connected to, after DNS resolution, so a
// name that resolves (or is rebound) to a private address is refused
// whatever it looked like at registration.
func dialControl(allowLoopback bool) func(network, address string, _ syscall.RawConn) error {
	return func(_, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return err
		}
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return fmt.Errorf("%w: %s", ErrRefusedAddress, host)
		}
		if !publicAddr(ip, allowLoopback) {
			return fmt.Errorf("%w: %s", ErrRefusedAddress, ip)
		}
		return nil
	}
}

// CheckURL is CheckURLContext for callers without a context: its look-up
// is bounded by resolveTimeout rather than by the caller.
//
//nolint:contextcheck // the look-up ends within resolveTimeout whatever the caller's context; callers with one can use CheckURLContext
func CheckURL(raw string, allowLoopback bool) error {
	return CheckURLContext(context.Background(), raw, allowLoopback)
}

// CheckURLContext tells whether raw may be registered as an endpoint: an
// absolute https URL without credentials or fragment whose host is not a
// non-public address however it is spelt (case, trailing dot, IPv6 forms
// embedding an IPv4 address, short and numeric IPv4 forms) and is not a
// name that resolves to one; http only for a loopback host when
// allowLoopback (development). A name that does not resolve is accepted:
// every connection checks the addresses it resolves to then
// (dialControl), which also covers a name re-pointed after registration.
func CheckURLContext(ctx context.Context, raw string, allowLoopback bool) error {
	return checkURL(ctx, raw, allowLoopback, true)
}

// checkURL is CheckURLContext; resolve false skips the look-up of a host
// name, for the dispatcher, whose dialer checks every address it resolves
// when connecting (dialControl): a delivery pays no second look-up.
func checkURL(ctx context.Context, raw string, allowLoopback, resolve bool) error {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" {
		return errors.New("url must be an absolute https URL")
	}
	if u.User != nil {
		return errors.New("url must not carry credentials: the signature authenticates the sender")
	}
	if u.Fragment != "" {
		return errors.New("url must not have a fragment")
	}
	loopback, err := checkHost(ctx, u.Hostname(), allowLoopback, resolve)
	if err != nil {
		return err
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && loopback && allowLoopback:
	default:
		return errors.New("url must use https (http only for loopback under --webhooks-allow-loopback)")
	}
	return nil
}

// errLoopbackNeedsFlag is the refusal of a loopback host without
// --webhooks-allow-loopback.
var errLoopbackNeedsFlag = fmt.Errorf("url: %w (loopback endpoints need --webhooks-allow-loopback, for development)", ErrRefusedAddress)

// checkHost refuses a host that is, or resolves to, a non-public address,
// and tells whether it is a loopback literal or a localhost name (which
// may use http under allowLoopback). A host name that merely resolves to
// loopback is accepted with the flag, as before, but over https only.
func checkHost(ctx context.Context, host string, allowLoopback, resolve bool) (loopback bool, err error) {
	// Names are case-insensitive and "localhost." is the fully qualified
	// "localhost": both spellings must meet the rules the plain one does.
	host = strings.TrimRight(strings.ToLower(host), ".")
	if ip, err := netip.ParseAddr(host); err == nil {
		return checkAddr(ip, allowLoopback)
	}
	if endsInNumber(host) {
		return false, numericHostError(host)
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		if !allowLoopback {
			return false, errLoopbackNeedsFlag
		}
		return true, nil
	}
	if !resolve {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		// Accepted as before resolution was checked here: a name not (yet)
		// in DNS is judged when connecting (dialControl).
		return false, nil
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		if _, err := checkAddr(ip, allowLoopback); err != nil {
			return false, fmt.Errorf("%w (the name resolves to %s)", err, ip.Unmap())
		}
	}
	return false, nil
}

// checkAddr refuses a non-public address literal and tells whether it is
// loopback (refused without allowLoopback, with the flag's name).
func checkAddr(ip netip.Addr, allowLoopback bool) (loopback bool, err error) {
	loopback = ip.Unmap().IsLoopback()
	if loopback && !allowLoopback {
		return false, errLoopbackNeedsFlag
	}
	if !publicAddr(ip, allowLoopback) {
		return false, fmt.Errorf("url: %w", ErrRefusedAddress)
	}
	return loopback, nil
}

// endsInNumber tells whether host's last label is a number (decimal, or
// hex with 0x), which makes the whole host an IPv4 address to the WHATWG
// URL parser, browsers, curl and the C resolver's inet_aton, not a name.
func endsInNumber(host string) bool {
	last := host[strings.LastIndexByte(host, '.')+1:]
	if last == "" {
		return false
	}
	digits := "0123456789"
	if rest, ok := strings.CutPrefix(last, "0x"); ok {
		last, digits = rest, "0123456789abcdef"
	}
	return strings.Trim(last, digits) == ""
}

// numericHostError refuses a host that ends in a number but is not a
// dotted-quad address netip accepts: "127.1", "2130706433", "0x7f000001",
// "0177.0.0.1", "0". Other software reads these as IPv4 addresses while
// Go's resolver would look them up as names, so they are refused whatever
// address they stand for; a non-public one is named as such.
func numericHostError(host string) error {
	ip, ok := parseIPv4Numeric(host)
	if !ok {
		return fmt.Errorf("url: the host %q ends in a number but is not an IPv4 address", host)
	}
	if !publicAddr(ip, false) {
		return fmt.Errorf("url: %w (the host %q is %s)", ErrRefusedAddress, host, ip)
	}
	return fmt.Errorf("url: the host %q is the IPv4 address %s in a short or numeric form: write it as a dotted quad", host, ip)
}

// parseIPv4Numeric reads host as inet_aton does: one to four parts, each
// decimal, octal (leading 0) or hex (0x); the last part fills the bytes
// the others leave ("127.1" is 127.0.0.1, "2130706433" is 127.0.0.1).
func parseIPv4Numeric(host string) (netip.Addr, bool) {
	parts := strings.Split(host, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	var addr uint64
	for i, p := range parts {
		base := 10
		switch {
		case strings.HasPrefix(p, "0x"):
			p, base = p[2:], 16
			if p == "" {
				p = "0"
			}
		case len(p) > 1 && p[0] == '0':
			p, base = p[1:], 8
		}
		n, err := strconv.ParseUint(p, base, 32)
		if err != nil {
			return netip.Addr{}, false
		}
		if i < len(parts)-1 {
			if n > 0xff {
				return netip.Addr{}, false
			}
			addr |= n << (8 * (3 - i))
			continue
		}
		if n >= 1<<(8*(4-i)) {
			return netip.Addr{}, false
		}
		addr |= n
	}
	return netip.AddrFrom4([4]byte{byte(addr >> 24), byte(addr >> 16), byte(addr >> 8), byte(addr)}), true
}
