// Package webhook delivers the webhook outbox (store.WebhookMessage): each
// message signed as the Standard Webhooks specification says, POSTed to its
// endpoint over a client that refuses private addresses when it connects,
// follows no redirect and bounds every attempt; retried with backoff until
// it is too old; at least once, with a stable webhook-id.
package webhook

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
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
}

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

// CheckURL tells whether raw may be registered as an endpoint: an absolute
// https URL without credentials, fragment or a literal non-public address;
// http only for a loopback host when allowLoopback (development). Host
// names are checked again, resolved, at every connection (dialControl).
func CheckURL(raw string, allowLoopback bool) error {
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
	host := u.Hostname()
	loopback := host == "localhost" || strings.HasSuffix(host, ".localhost")
	if ip, err := netip.ParseAddr(host); err == nil {
		loopback = ip.Unmap().IsLoopback()
		// A loopback address is refused below, with the flag that allows it.
		if !publicAddr(ip, allowLoopback) && (!loopback || allowLoopback) {
			return fmt.Errorf("url: %w", ErrRefusedAddress)
		}
	}
	if loopback && !allowLoopback {
		return fmt.Errorf("url: %w (loopback endpoints need --webhooks-allow-loopback, for development)", ErrRefusedAddress)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && loopback && allowLoopback:
	default:
		return errors.New("url must use https (http only for loopback under --webhooks-allow-loopback)")
	}
	return nil
}
