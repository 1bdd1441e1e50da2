package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrLeaseExpired is what KeepLease reports when a lease has ended.
var ErrLeaseExpired = errors.New("the lease expired")

// KeepLease keeps the lease id of ttl seconds alive until ctx ends, and
// reports on the returned channel, once, when the lease has ended: when
// etcd says so, or when no keep-alive has been answered for ttl by this
// process's clock and etcd does not answer a question about the lease
// either (or says it is gone). The second is the usual case when etcd is
// away, and the etcd client alone would say it late: before its first
// answer it waits its dial timeout plus a second, longer than a short
// lease lives. The question keeps a keep-alive answered late, on a loaded
// machine, from being taken for a loss. granted is when the grant was
// answered, which is no earlier than the lease began.
func KeepLease(ctx context.Context, cli *clientv3.Client, id clientv3.LeaseID, ttl int64, granted time.Time) (<-chan error, error) {
	ka, err := cli.KeepAlive(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("keeping the lease alive: %w", err)
	}
	lost := make(chan error, 1)
	life := time.Duration(ttl) * time.Second
	go func() {
		timer := time.NewTimer(time.Until(granted.Add(life)))
		defer timer.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case resp, ok := <-ka:
				if !ok {
					lost <- ErrLeaseExpired
					return
				}
				timer.Reset(time.Duration(resp.TTL) * time.Second)
			case <-timer.C:
				left, err := timeToLive(ctx, cli, id, life)
				if err == nil && left > 0 {
					timer.Reset(left)
					continue
				}
				if ctx.Err() != nil {
					return
				}
				if err == nil {
					err = errors.New("etcd says it is gone")
				}
				lost <- fmt.Errorf("%w: no keep-alive answered in %v, and %w", ErrLeaseExpired, life, err)
				return
			}
		}
	}()
	return lost, nil
}

// timeToLive asks etcd how long the lease has left, waiting at most a
// second (half of a shorter life).
func timeToLive(ctx context.Context, cli *clientv3.Client, id clientv3.LeaseID, life time.Duration) (time.Duration, error) {
	tctx, cancel := context.WithTimeout(ctx, min(time.Second, life/2))
	defer cancel()
	resp, err := cli.TimeToLive(tctx, id)
	if err != nil {
		return 0, fmt.Errorf("asking etcd about the lease: %w", err)
	}
	return time.Duration(resp.TTL) * time.Second, nil
}
