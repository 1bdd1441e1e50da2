package deploy_test

import (
	"bytes"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// unit is a systemd unit file: its keys by section, every value kept.
type unit struct {
	rel  string
	keys map[string][]string // "Service.ExecStart" -> values
	// commented holds "# Key=value" lines, alternatives shown to the reader.
	commented map[string][]string
}

func (u *unit) get(key string) string {
	v := u.keys[key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

func units(t *testing.T) []*unit {
	t.Helper()
	var out []*unit
	for _, f := range deployFiles(t) {
		if !strings.HasPrefix(f.rel, "systemd/") || path.Ext(f.rel) != ".service" {
			continue
		}
		u := &unit{rel: f.rel, keys: map[string][]string{}, commented: map[string][]string{}}
		section := ""
		for _, line := range strings.Split(string(f.data), "\n") {
			line = strings.TrimSpace(line)
			switch {
			case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
				section = strings.Trim(line, "[]")
			case strings.HasPrefix(line, "#"):
				kv := strings.TrimSpace(strings.TrimPrefix(line, "#"))
				if k, v, ok := strings.Cut(kv, "="); ok && !strings.Contains(k, " ") && k != "" {
					u.commented[section+"."+k] = append(u.commented[section+"."+k], v)
				}
			case line == "":
			default:
				k, v, ok := strings.Cut(line, "=")
				if !ok {
					t.Errorf("%s: %q is not Key=value", f.rel, line)
					continue
				}
				u.keys[section+"."+k] = append(u.keys[section+"."+k], v)
			}
		}
		out = append(out, u)
	}
	if len(out) < 2 {
		t.Fatalf("found %d systemd units, want the proxy's and the control plane's", len(out))
	}
	return out
}

const unitBinary = "/usr/local/bin/wasmgate"

// unitCommandLines are the wasmgate commands a unit runs (or shows in a
// comment as the alternative), with specifiers expanded.
func unitCommandLines(t *testing.T, u *unit) []commandLine {
	var out []commandLine
	for _, src := range []map[string][]string{u.keys, u.commented} {
		for _, k := range []string{"Service.ExecStart", "Service.ExecStartPre", "Service.ExecReload"} {
			for _, v := range src[k] {
				words, err := shellWords(strings.NewReplacer("%d", "/run/credentials/unit").Replace(v))
				if err != nil {
					t.Errorf("%s: %s: %v", u.rel, k, err)
					continue
				}
				if len(words) == 0 || words[0] != unitBinary {
					continue
				}
				out = append(out, commandLine{where: u.rel + " " + strings.TrimPrefix(k, "Service."), args: words[1:]})
			}
		}
	}
	return out
}

func systemdCommandLines(t *testing.T) []commandLine {
	var out []commandLine
	for _, u := range units(t) {
		out = append(out, unitCommandLines(t, u)...)
	}
	return out
}

func TestSystemdUnits(t *testing.T) {
	for _, u := range units(t) {
		t.Run(path.Base(u.rel), func(t *testing.T) {
			starts := u.keys["Service.ExecStart"]
			if len(starts) != 1 || !strings.HasPrefix(starts[0], unitBinary+" ") {
				t.Fatalf("want one ExecStart of %s, have %q", unitBinary, starts)
			}
			for k, want := range map[string]string{
				"Service.ProtectSystem": "strict", "Service.NoNewPrivileges": "yes", "Service.KillSignal": "SIGTERM",
			} {
				if u.get(k) != want {
					t.Errorf("%s = %q, want %q", k, u.get(k), want)
				}
			}
			if u.get("Service.DynamicUser") != "yes" && u.get("Service.User") == "" {
				t.Error("runs as root: want DynamicUser=yes or User=")
			}
			if u.get("Service.LimitNOFILE") == "" {
				t.Error("no LimitNOFILE")
			}
			for _, c := range unitCommandLines(t, u) {
				role := strings.Fields(c.sub() + " ?")[0]
				// ProtectSystem=strict: writes only in the unit's own
				// directories (or the private /tmp).
				for _, p := range writablePaths(c, role) {
					if !unitWritable(u, p) {
						t.Errorf("%s: writes %s, which ProtectSystem=strict makes read-only (want it under StateDirectory= or CacheDirectory=)", c, p)
					}
				}
				if strings.Contains(strings.Join(c.args, " "), "/run/credentials/unit/") {
					f, _ := c.flagValue("--token-file")
					name := path.Base(f)
					found := false
					for _, lc := range u.keys["Service.LoadCredential"] {
						found = found || strings.HasPrefix(lc, name+":")
					}
					if !found {
						t.Errorf("%s: %%d/%s, but no LoadCredential=%s:...", c, name, name)
					}
				}
			}
			c := unitCommandLines(t, u)[0]
			switch c.sub() {
			case "run":
				checkProxyUnit(t, u, c)
			case "controlplane":
				if len(u.keys["Service.ExecReload"]) > 0 {
					t.Error("the control plane has no reload, but the unit defines ExecReload")
				}
			default:
				t.Errorf("ExecStart runs %q", c.sub())
			}
		})
	}
}

func checkProxyUnit(t *testing.T, u *unit, c commandLine) {
	file, ok := c.flagValue("-c", "--config")
	if !ok {
		t.Errorf("%s: want the file mode (-c)", c)
		return
	}
	// The example config is installed at the path the unit reads.
	if !strings.HasPrefix(file, "/etc/wasmgate/") {
		t.Errorf("%s: reads %s, outside /etc/wasmgate", c, file)
	}
	example := configAt(t, path.Join(path.Dir(u.rel), path.Base(file)))
	if example.cfg == nil {
		return
	}
	// Reload: validate, then SIGHUP, which run -c reloads on.
	reloads := u.keys["Service.ExecReload"]
	if len(reloads) != 2 || !strings.Contains(reloads[0], "validate -c "+file) || reloads[1] != "/bin/kill -HUP $MAINPID" {
		t.Errorf("ExecReload = %q, want validate -c %s then /bin/kill -HUP $MAINPID", reloads, file)
	}
	// Stop covers the drain.
	stop, err := time.ParseDuration(u.get("Service.TimeoutStopSec") + "s")
	if err != nil {
		t.Errorf("TimeoutStopSec %q: %v", u.get("Service.TimeoutStopSec"), err)
	}
	if drain := example.cfg.DrainTimeout.Or(15 * time.Second); stop < drain+5*time.Second {
		t.Errorf("TimeoutStopSec %s does not cover drain_timeout %s", stop, drain)
	}
	// CAP_NET_BIND_SERVICE only when a port below 1024 is bound.
	low := false
	for _, l := range example.cfg.Listeners {
		low = low || portOf(t, example.where, l.Address) < 1024
	}
	caps := u.get("Service.AmbientCapabilities")
	if low != strings.Contains(caps, "CAP_NET_BIND_SERVICE") || (caps != "" && caps != "CAP_NET_BIND_SERVICE") {
		t.Errorf("AmbientCapabilities=%q with ports below 1024: %v", caps, low)
	}
	if strings.Contains(u.get("Service.MemoryDenyWriteExecute"), "yes") {
		t.Error("MemoryDenyWriteExecute=yes stops the Wasm compiler")
	}
}

func unitWritable(u *unit, p string) bool {
	var dirs []string
	for _, d := range strings.Fields(u.get("Service.StateDirectory")) {
		dirs = append(dirs, "/var/lib/"+d)
	}
	for _, d := range strings.Fields(u.get("Service.CacheDirectory")) {
		dirs = append(dirs, "/var/cache/"+d)
	}
	if u.get("Service.PrivateTmp") == "yes" {
		dirs = append(dirs, "/tmp")
	}
	for _, d := range dirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// TestSystemdAnalyze runs systemd-analyze verify on the units, the binary
// path pointed at the one built here, when systemd-analyze is installed.
func TestSystemdAnalyze(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed: the units are checked by TestSystemdUnits only")
	}
	if testing.Short() {
		t.Skip("-short: needs the built binary")
	}
	bin := wasmgateBin(t)
	dir := t.TempDir()
	var paths []string
	for _, u := range units(t) {
		data := bytes.ReplaceAll(fileData(t, u.rel), []byte(unitBinary), []byte(bin))
		p := filepath.Join(dir, path.Base(u.rel))
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	cmd := exec.Command(sa, append([]string{"verify"}, paths...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s%s", err, out, stderr.String())
	}
}
