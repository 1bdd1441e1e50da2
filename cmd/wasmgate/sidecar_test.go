package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestSidecarIptablesDryRun(t *testing.T) {
	out, err := runCLI(t, "sidecar", "iptables", "--uid", "1337", "--inbound-port", "15006", "--outbound-port", "15001",
		"--exclude-inbound-ports", "22,15020", "--ipv6=false", "--dry-run")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"-A WASMGATE_OUTPUT -m owner --uid-owner 1337 -j RETURN", "--dport 15020 -j RETURN", "REDIRECT --to-ports 15001", "COMMIT"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "ip6tables") {
		t.Errorf("--ipv6=false printed IPv6 rules:\n%s", out)
	}
	if out, err := runCLI(t, "sidecar", "iptables", "--dry-run"); err == nil || !strings.Contains(err.Error(), "uid:") {
		t.Errorf("no --uid: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "sidecar", "iptables", "--uid", "1", "--exclude-outbound-ports", "x", "--dry-run"); err == nil || !strings.Contains(err.Error(), "--exclude-outbound-ports") {
		t.Errorf("a bad port list: %v\n%s", err, out)
	}
	// The sidecar's DNS: port 53 to it, the sidecar's own queries left
	// alone.
	out, err = runCLI(t, "sidecar", "iptables", "--uid", "1337", "--dns-port", "15053", "--ipv6=false", "--dry-run")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"-A OUTPUT -p udp --dport 53 -j WASMGATE_DNS", "-A WASMGATE_DNS -m owner --uid-owner 1337 -j RETURN", "-A WASMGATE_DNS -p udp -j REDIRECT --to-ports 15053"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run with --dns-port lacks %q:\n%s", want, out)
		}
	}
	if out, err := runCLI(t, "sidecar", "iptables", "--uid", "1", "--dns-port", "70000", "--dry-run"); err == nil || !strings.Contains(err.Error(), "dns_port") {
		t.Errorf("a bad DNS port: %v\n%s", err, out)
	}
}

// TestSidecarIptablesInNamespace runs the command in a network namespace
// of its own and reads the rules back.
func TestSidecarIptablesInNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	for _, tool := range []string{"ip", "iptables", "iptables-save"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (Debian packages iproute2 and iptables)", tool)
		}
	}
	ns := fmt.Sprintf("wgcli%d", os.Getpid()%100000)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	in := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	out := in(wasmgateBin, "sidecar", "iptables", "--uid", "1337", "--ipv6=false")
	if !strings.Contains(out, "interception on (iptables ") {
		t.Fatalf("apply: %s", out)
	}
	if rules := in("iptables-save", "-t", "nat"); !strings.Contains(rules, "-A WASMGATE_OUTPUT -p tcp -j REDIRECT --to-ports 15001") {
		t.Fatalf("rules after apply:\n%s", rules)
	}
	in(wasmgateBin, "sidecar", "iptables", "--remove", "--ipv6=false")
	if rules := in("iptables-save", "-t", "nat"); strings.Contains(rules, "WASMGATE") {
		t.Fatalf("rules after remove:\n%s", rules)
	}
}
