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
// process's clock. The second is the usual case when etcd is away, and
// the etcd client alone would say it late: before its first answer it
// waits its dial timeout plus a second, longer than a short lease lives.
// granted is when the grant was answered, which is no earlier than the
// lease began, so the loss is never reported before etcd would see it.
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
				lost <- fmt.Errorf("%w: no keep-alive answered in %v", ErrLeaseExpired, life)
				return
			}
		}
	}()
	return lost, nil
}
