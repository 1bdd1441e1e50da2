package loadgen

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// Protocol is the HTTP version a run speaks.
type Protocol string

// The protocols a run can speak. The zero value picks HTTP/1.1.
const (
	HTTP1 Protocol = "h1" // HTTP/1.1 over TCP or TLS, on fasthttp's codec
	HTTP2 Protocol = "h2" // HTTP/2 over TLS (ALPN h2), or h2c with prior knowledge for http:// URLs
	HTTP3 Protocol = "h3" // HTTP/3 over QUIC; https:// URLs only
)

// Target is one URL the load is sent to.
type Target struct {
	// URL is absolute, http:// or https://.
	URL string `json:"url"`
	// Weight is this target's share of the requests relative to the other
	// targets' weights. Zero means 1.
	Weight int `json:"weight,omitempty"`
}

// Header is one request header field. Headers are sent in order; a key may
// repeat.
type Header struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Config describes one run. It is plain data: Run validates it and never
// modifies it. The zero value of every optional field is documented on the
// field.
type Config struct {
	// Targets receive the requests, interleaved by weight (smooth weighted
	// round robin, per connection). At least one is required.
	Targets []Target

	// Protocol is the HTTP version. Empty means HTTP1.
	Protocol Protocol

	// Method is the request method. Empty means GET, or POST when Body is set.
	Method string
	// Headers are added to every request. A Host header replaces the
	// URL's host in the request (not the address dialled).
	Headers []Header
	// Body is sent with every request. Run does not modify it.
	Body []byte

	// Connections is the number of connections kept open, each driven by
	// its own goroutine (closed loop: one request in flight per stream).
	// Zero means 1.
	Connections int
	// Streams is the number of concurrent requests on each HTTP/2 or
	// HTTP/3 connection. Zero means 1. Must be 1 for HTTP1.
	Streams int

	// Duration bounds the measured part of the run. Zero means no bound
	// by time, in which case Requests must be set.
	Duration time.Duration
	// Requests bounds the measured part of the run by the number of
	// requests sent (split evenly among connections). Zero means no bound
	// by count. When both bounds are set, the first reached ends the run.
	Requests int64
	// Rate, when positive, switches to the open loop: requests are
	// scheduled at this total rate per second at a constant pace, spread
	// over the connections, and each latency is measured from the moment
	// the request was due, not from when it was sent. Zero means the
	// closed loop: each stream sends its next request as soon as the
	// previous response arrived.
	Rate float64
	// Warmup is run before the measured part with the same load; its
	// requests are sent but not recorded. Zero means no warm-up.
	Warmup time.Duration

	// Timeout bounds each request, from dial (when one is needed) to the
	// last byte of the response. Zero means 5s.
	Timeout time.Duration
	// Grace is how long requests in flight when the run ends may take to
	// finish before their connections are closed under them. Zero means
	// the smaller of Timeout and 2s.
	Grace time.Duration
	// DownAfter ends the run early, with an error, when requests have only
	// failed (no response at all) for this long: a target that refuses or
	// died. Zero means 2s. Negative disables the check.
	DownAfter time.Duration

	// NewConnPerRequest dials a new connection for every request (and
	// sends Connection: close on HTTP/1.1) instead of reusing one.
	NewConnPerRequest bool

	// TLS is the client TLS configuration for https:// targets. It is
	// cloned, never modified. Nil means the system roots and the URL's host
	// as server name. NextProtos is set by Run for the protocol.
	TLS *tls.Config

	// Progress, when set, is called about every ProgressInterval from a
	// goroutine of Run's own with a snapshot of the measured part so far.
	// It must return quickly. Nil means no progress.
	Progress func(Progress)
	// ProgressInterval is the pace of Progress. Zero means 1s.
	ProgressInterval time.Duration
}

// TLSFiles names the TLS material of a run as the command line gives it.
type TLSFiles struct {
	ServerName string // SNI and the name verified; empty means the URL's host
	CAFile     string // PEM roots to verify the server with; empty means the system's
	CertFile   string // PEM client certificate; needs KeyFile
	KeyFile    string // PEM key of CertFile
	Insecure   bool   // skip verification of the server's certificate
}

// Config loads the files and returns a client TLS configuration.
func (f TLSFiles) Config() (*tls.Config, error) {
	cfg := &tls.Config{ServerName: f.ServerName, InsecureSkipVerify: f.Insecure} //nolint:gosec // the user asked for it
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate found", f.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		return nil, errors.New("client certificate: both a certificate file and a key file are needed")
	}
	if f.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Validate checks the whole configuration. Its errors name the field.
func (c *Config) Validate() error {
	if len(c.Targets) == 0 {
		return errors.New("targets: at least one URL is required")
	}
	for i, t := range c.Targets {
		if _, err := parseTarget(t.URL, c.protocol()); err != nil {
			return fmt.Errorf("targets[%d].url: %w", i, err)
		}
		if t.Weight < 0 {
			return fmt.Errorf("targets[%d].weight: must not be negative", i)
		}
	}
	switch c.protocol() {
	case HTTP1, HTTP2, HTTP3:
	default:
		return fmt.Errorf("protocol: unknown %q (want h1, h2 or h3)", c.Protocol)
	}
	if strings.ContainsAny(c.Method, " \t\r\n") {
		return fmt.Errorf("method: invalid %q", c.Method)
	}
	for i, h := range c.Headers {
		if h.Key == "" || strings.ContainsAny(h.Key, " \t\r\n:") || strings.ContainsAny(h.Value, "\r\n") {
			return fmt.Errorf("headers[%d]: invalid header %q", i, h.Key+": "+h.Value)
		}
	}
	switch {
	case c.Connections < 0:
		return errors.New("connections: must not be negative")
	case c.Streams < 0:
		return errors.New("streams: must not be negative")
	case c.Streams > 1 && c.protocol() == HTTP1:
		return errors.New("streams: HTTP/1.1 carries one request at a time per connection")
	case c.Duration < 0:
		return errors.New("duration: must not be negative")
	case c.Requests < 0:
		return errors.New("requests: must not be negative")
	case c.Duration == 0 && c.Requests == 0:
		return errors.New("duration: a duration or a number of requests is required")
	case c.Rate < 0:
		return errors.New("rate: must not be negative")
	case c.Warmup < 0:
		return errors.New("warmup: must not be negative")
	case c.Timeout < 0:
		return errors.New("timeout: must not be negative")
	case c.Grace < 0:
		return errors.New("grace: must not be negative")
	}
	return nil
}

func (c *Config) protocol() Protocol {
	if c.Protocol == "" {
		return HTTP1
	}
	return c.Protocol
}

func (c *Config) method() string {
	switch {
	case c.Method != "":
		return c.Method
	case len(c.Body) > 0:
		return "POST"
	default:
		return "GET"
	}
}

func (c *Config) connections() int { return max(c.Connections, 1) }
func (c *Config) streams() int     { return max(c.Streams, 1) }

func (c *Config) timeout() time.Duration {
	if c.Timeout == 0 {
		return 5 * time.Second
	}
	return c.Timeout
}

func (c *Config) grace() time.Duration {
	if c.Grace == 0 {
		return min(c.timeout(), 2*time.Second)
	}
	return c.Grace
}

func (c *Config) downAfter() time.Duration {
	if c.DownAfter == 0 {
		return 2 * time.Second
	}
	return c.DownAfter
}

// parseTarget checks one URL and returns it parsed.
func parseTarget(raw string, p Protocol) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("parsing: %w", err)
	}
	switch u.Scheme {
	case "http", "https":
	default:
		return nil, fmt.Errorf("scheme %q: want http or https", u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%q has no host", raw)
	}
	if p == HTTP3 && u.Scheme != "https" {
		return nil, errors.New("HTTP/3 needs an https:// URL")
	}
	return u, nil
}

// hostPort returns u's host with the scheme's default port added when the
// URL has none.
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}
