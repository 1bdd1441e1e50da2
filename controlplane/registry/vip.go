package registry

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmgate/wasmgate/controlplane/resource"
)

// VIPPool is the block that services' virtual addresses are drawn from:
// part of 240.0.0.0/4, reserved, which no host has (Istio's DNS proxy
// draws from the same block), so that a virtual address is never also a
// real one.
var VIPPool = netip.MustParsePrefix("240.240.0.0/16")

// maxProbes bounds the addresses tried for one service before the pool is
// called full.
const maxProbes = 256

// ServiceVIP returns the virtual address of a service, allocating it on
// first use: the address its name hashes to in VIPPool, or the next free
// one. An address, once a service's, stays its own (the keys have no
// lease), so that a name resolves to the same address for as long as the
// mesh lives, and no two services share one: both keys are written in
// one transaction that fails if either exists.
func ServiceVIP(ctx context.Context, cli *clientv3.Client, prefix, service string) (netip.Addr, error) {
	keys := resource.NewKeys(prefix)
	key := keys.ServiceVIP(service)
	h := fnv.New32a()
	h.Write([]byte(service))
	size := uint32(1) << (32 - VIPPool.Bits())
	base := VIPPool.Addr().As4()
	start := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	for probe := uint32(0); probe < maxProbes; probe++ {
		// Host 0 of the block is left out.
		n := start + 1 + (h.Sum32()+probe)%(size-1)
		addr := netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
		owner := keys.VIPOwner(addr.String())
		resp, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0), clientv3.Compare(clientv3.CreateRevision(owner), "=", 0)).
			Then(clientv3.OpPut(key, addr.String()), clientv3.OpPut(owner, service)).
			Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return netip.Addr{}, fmt.Errorf("allocating the virtual address of %s: %w", service, err)
		}
		if resp.Succeeded {
			return addr, nil
		}
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
			return netip.ParseAddr(string(kvs[0].Value))
		}
		// The address is another service's: try the next.
	}
	return netip.Addr{}, errors.New("allocating the virtual address of " + service + ": no free address found in " + VIPPool.String())
}
