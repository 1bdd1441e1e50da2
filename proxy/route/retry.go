package route

import (
	"bytes"
	"math/rand/v2"
	"time"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/proxy/cluster"
)

// RetryPolicy is a route's retry policy, compiled from its configuration
// (or its virtual host's).
type RetryPolicy struct {
	// NumRetries is how many times a request may be sent again.
	NumRetries int
	// PerTry bounds each attempt; zero leaves only the route's timeout.
	PerTry    time.Duration
	on        retryOn
	statuses  []int
	methods   [][]byte
	base, max time.Duration
}

type retryOn uint8

const (
	retry5xx retryOn = 1 << iota
	retryGateway
	retryReset
	retryConnect
	retryStatus
)

var retryOnNames = map[string]retryOn{
	config.RetryOn5xx: retry5xx, config.RetryOnGatewayError: retryGateway, config.RetryOnReset: retryReset,
	config.RetryOnConnectFailure: retryConnect, config.RetryOnRetriableStatusCodes: retryStatus,
}

func newRetryPolicy(c *config.RetryPolicy) *RetryPolicy {
	if c == nil {
		return nil
	}
	p := &RetryPolicy{
		statuses: c.RetriableStatusCodes, NumRetries: c.NumRetries, PerTry: c.PerTryTimeout.D(),
		base: c.BackOff.BaseInterval.D(), max: c.BackOff.MaxInterval.D(),
	}
	for _, on := range c.RetryOn {
		p.on |= retryOnNames[on]
	}
	for _, m := range c.RetriableMethods {
		p.methods = append(p.methods, []byte(m))
	}
	return p
}

// Retriable reports whether an attempt that ended with status or err is
// sent again under the policy. A 5xx policy takes every failure to get an
// answer, as Envoy's does; gateway-error takes those and 502, 503, 504.
func (p *RetryPolicy) Retriable(status int, err error) bool {
	if err != nil {
		switch cluster.Classify(err) {
		case cluster.FailureConnect:
			return p.on&(retryConnect|retry5xx|retryGateway) != 0
		case cluster.FailureReset, cluster.FailureTimeout:
			return p.on&(retryReset|retry5xx|retryGateway) != 0
		}
		return false // an overflow: the proxy refused it
	}
	switch {
	case status >= 500 && p.on&retry5xx != 0:
		return true
	case (status == 502 || status == 503 || status == 504) && p.on&retryGateway != 0:
		return true
	case p.on&retryStatus != 0:
		for _, s := range p.statuses {
			if s == status {
				return true
			}
		}
	}
	return false
}

// AllowsMethod reports whether requests of method m may be sent again.
func (p *RetryPolicy) AllowsMethod(m []byte) bool {
	for _, allowed := range p.methods {
		if bytes.Equal(m, allowed) {
			return true
		}
	}
	return false
}

// Backoff is the wait before retry n (from 1): a random time up to
// min(base × 2^(n-1), max), Envoy's fully jittered exponential back-off.
func (p *RetryPolicy) Backoff(n int) time.Duration {
	d := p.base << min(n-1, 30)
	if d > p.max || d <= 0 {
		d = p.max
	}
	return rand.N(d + 1)
}
