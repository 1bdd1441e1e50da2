package proxy_test

import (
	"fmt"
	"testing"
)

func TestBalancing(t *testing.T) {
	_, v := startEchoes(t, "a", "b", "c")
	e := newEnv(t, `
admin: {address: "off"}
listeners: [{name: main, address: "127.0.0.1:0"}]
clusters:
  - name: rr
    lb_policy: round_robin
    endpoints: [{address: "{{a}}"}, {address: "{{b}}"}, {address: "{{c}}"}]
  - name: weighted
    lb_policy: round_robin
    endpoints: [{address: "{{a}}", weight: 1}, {address: "{{b}}", weight: 2}, {address: "{{c}}", weight: 3}]
  - name: hash
    lb_policy: ring_hash
    hash_policy: {header: X-User}
    endpoints: [{address: "{{a}}"}, {address: "{{b}}"}, {address: "{{c}}"}]
virtual_hosts:
  - name: lb
    domains: ["*"]
    routes:
      - {match: {prefix: /rr}, cluster: rr}
      - {match: {prefix: /weighted}, cluster: weighted}
      - {match: {prefix: /hash}, cluster: hash}
`, v)

	t.Run("round robin", func(t *testing.T) {
		counts := map[string]int{}
		for i := 0; i < 300; i++ {
			counts[e.get(t, "", "/rr").echo(t).Instance]++
		}
		for _, name := range []string{"a", "b", "c"} {
			if counts[name] != 100 {
				t.Errorf("round robin over 3 endpoints, 300 requests: %v", counts)
				break
			}
		}
	})

	t.Run("weighted round robin", func(t *testing.T) {
		counts := map[string]int{}
		for i := 0; i < 600; i++ {
			counts[e.get(t, "", "/weighted").echo(t).Instance]++
		}
		for name, want := range map[string]int{"a": 100, "b": 200, "c": 300} {
			if d := counts[name] - want; d < -2 || d > 2 {
				t.Errorf("weights 1:2:3, 600 requests: %v", counts)
				break
			}
		}
	})

	t.Run("ring hash on a header", func(t *testing.T) {
		owner := map[string]string{}
		used := map[string]bool{}
		for round := 0; round < 4; round++ {
			for k := 0; k < 30; k++ {
				key := fmt.Sprintf("user-%d", k)
				got := e.get(t, "", "/hash", "X-User", key).echo(t).Instance
				if prev, ok := owner[key]; ok && prev != got {
					t.Fatalf("key %s went to %s, then to %s", key, prev, got)
				}
				owner[key] = got
				used[got] = true
			}
		}
		if len(used) < 2 {
			t.Errorf("30 keys all went to %v", used)
		}
	})
}
