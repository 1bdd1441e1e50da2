package deploy_test

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

type composeFile struct {
	Name     string                     `yaml:"name"`
	Services map[string]*composeService `yaml:"services"`
	Configs  map[string]struct {
		File string `yaml:"file"`
	} `yaml:"configs"`
	Volumes map[string]*struct{} `yaml:"volumes"`
	// Extension fields (x-...), which hold the anchors.
	Ext map[string]any `yaml:",inline"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Restart     string            `yaml:"restart"`
	ReadOnly    bool              `yaml:"read_only"`
	CapDrop     []string          `yaml:"cap_drop"`
	SecurityOpt []string          `yaml:"security_opt"`
	Tmpfs       []string          `yaml:"tmpfs"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	Configs     []struct {
		Source string `yaml:"source"`
		Target string `yaml:"target"`
	} `yaml:"configs"`
	Healthcheck *struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		Retries     int      `yaml:"retries"`
		StartPeriod string   `yaml:"start_period"`
		Disable     bool     `yaml:"disable"`
	} `yaml:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	StopGracePeriod string `yaml:"stop_grace_period"`
}

const composePath = "compose/compose.yaml"

// composeEnv is the environment the compose file is read with.
var composeEnv = map[string]string{"WASMGATE_TOKEN": "0123456789abcdef0123456789abcdef"}

var interpolation = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}`)

// interpolate substitutes ${VAR}, ${VAR:-default} and ${VAR:?error} as
// compose does.
func interpolate(s string, env map[string]string) (string, error) {
	var err error
	out := interpolation.ReplaceAllStringFunc(s, func(m string) string {
		g := interpolation.FindStringSubmatch(m)
		v, set := env[g[1]]
		switch {
		case set && (v != "" || !strings.HasPrefix(g[2], ":")):
			return v
		case strings.HasSuffix(g[2], "-"):
			return g[3]
		case strings.HasSuffix(g[2], "?"):
			err = fmt.Errorf("%s is required: %s", g[1], g[3])
		}
		return ""
	})
	return out, err
}

func loadCompose(t *testing.T) *composeFile {
	t.Helper()
	raw, err := interpolate(string(fileData(t, composePath)), composeEnv)
	if err != nil {
		t.Fatalf("%s: %v", composePath, err)
	}
	docs, err := yamlDocs([]byte(raw))
	if err != nil || len(docs) != 1 {
		t.Fatalf("%s: %d documents, %v", composePath, len(docs), err)
	}
	var cf composeFile
	if err := strict(docs[0], &cf); err != nil {
		t.Fatalf("%s: %v", composePath, err)
	}
	for k := range cf.Ext {
		if !strings.HasPrefix(k, "x-") {
			t.Errorf("%s: unknown top-level key %q", composePath, k)
		}
	}
	return &cf
}

func composeCommandLines(t *testing.T) []commandLine {
	cf := loadCompose(t)
	var out []commandLine
	for _, name := range sortedKeys(cf.Services) {
		s := cf.Services[name]
		if isWasmgateImage(s.Image) {
			out = append(out, commandLine{where: fmt.Sprintf("%s service %s", composePath, name), args: s.Command})
		}
	}
	return out
}

func TestCompose(t *testing.T) {
	cf := loadCompose(t)
	dir := path.Dir(composePath)
	lines := map[string]commandLine{}
	for _, c := range composeCommandLines(t) {
		name := c.where[strings.LastIndex(c.where, " ")+1:]
		lines[name] = c
	}
	if len(lines) < 5 {
		t.Fatalf("%s: %d wasmgate services, want a control plane, a seed, two proxies and backends", composePath, len(lines))
	}
	// The file a service reads at a path, through its configs.
	configFile := func(name, target string) (string, bool) {
		for _, c := range cf.Services[name].Configs {
			if c.Target == target {
				src, ok := cf.Configs[c.Source]
				if !ok {
					t.Errorf("service %s: config %s is not declared", name, c.Source)
					return "", false
				}
				return path.Join(dir, src.File), true
			}
		}
		t.Errorf("service %s reads %s, which none of its configs puts there", name, target)
		return "", false
	}
	// What each service listens on, and what it is.
	type svc struct {
		role  string
		ports map[int]bool
		admin int
		etcd  int
	}
	svcs := map[string]*svc{}
	var fleet string
	for name, c := range lines {
		s := &svc{role: c.sub(), ports: map[int]bool{}}
		svcs[name] = s
		switch {
		case s.role == "controlplane":
			l, _ := c.flagValue("--listen")
			e, _ := c.flagValue("--etcd-listen-client")
			s.admin, s.etcd = portOf(t, c.where, l), portOf(t, c.where, e)
			s.ports[s.admin], s.ports[s.etcd] = true, true
		case s.role == "ctl apply":
			f, _ := c.flagValue("-f", "--file")
			if src, ok := configFile(name, f); ok {
				fleet = src
				if !configAt(t, src).fleet {
					t.Errorf("%s: applies %s, which is not a fleet document", c, src)
				}
			}
			if cf.Services[name].Restart != "no" {
				t.Errorf("service %s runs once: want restart \"no\", have %q", name, cf.Services[name].Restart)
			}
		}
	}
	if fleet == "" {
		t.Fatalf("%s: no service applies a fleet configuration", composePath)
	}
	fleetCfg := configAt(t, fleet).cfg
	for name, c := range lines {
		s := svcs[name]
		if s.role != "run" {
			continue
		}
		admin := "127.0.0.1:9901"
		if f, ok := c.flagValue("-c", "--config"); ok {
			src, ok := configFile(name, f)
			if !ok {
				continue
			}
			cfg := configAt(t, src).cfg
			if cfg == nil {
				continue
			}
			admin = cfg.Admin.Address
			for _, l := range cfg.Listeners {
				s.ports[portOf(t, src, l.Address)] = true
			}
		} else {
			if a, ok := c.flagValue("--admin"); ok {
				admin = a
			}
			if fleetCfg != nil {
				for _, l := range fleetCfg.Listeners {
					s.ports[portOf(t, fleet, l.Address)] = true
				}
			}
		}
		s.admin = portOf(t, c.where, admin)
		s.ports[s.admin] = true
	}
	// References between services.
	for name, c := range lines {
		if eps, ok := c.flagValue("--etcd-endpoints"); ok {
			for _, ep := range strings.Split(eps, ",") {
				host, port, _ := strings.Cut(strings.TrimPrefix(ep, "http://"), ":")
				cp, ok := svcs[host]
				if !ok || cp.role != "controlplane" || strconv.Itoa(cp.etcd) != port {
					t.Errorf("%s: --etcd-endpoints %s is no control plane's --etcd-listen-client", c, ep)
				}
			}
		}
		if server, ok := c.flagValue("--server"); ok {
			host, port, _ := strings.Cut(strings.TrimPrefix(server, "http://"), ":")
			cp, ok := svcs[host]
			if !ok || cp.role != "controlplane" || strconv.Itoa(cp.admin) != port {
				t.Errorf("%s: --server %s is no control plane's --listen", c, server)
			}
			if cf.Services[name].Environment["WASMGATE_TOKEN"] == "" {
				if _, ok := c.flagValue("--token", "--token-file"); !ok {
					t.Errorf("%s: talks to the API with no token", c)
				}
			}
		}
	}
	// The fleet's upstreams are services, on ports they listen on.
	if fleetCfg != nil {
		for _, cl := range fleetCfg.Clusters {
			for _, ep := range cl.Endpoints {
				host, port, _ := strings.Cut(ep.Address, ":")
				s, ok := svcs[host]
				p, _ := strconv.Atoi(port)
				if !ok || !s.ports[p] {
					t.Errorf("%s: cluster %s endpoint %s: no service %s listening on %s", fleet, cl.Name, ep.Address, host, port)
				}
			}
		}
	}
	for _, name := range sortedKeys(cf.Services) {
		s := cf.Services[name]
		where := "service " + name
		if s.Build != nil {
			if _, err := os.Stat(filepath.Join(dir, s.Build.Context, s.Build.Dockerfile)); err != nil {
				t.Errorf("%s: build: %v", where, err)
			}
		}
		for dep, d := range s.DependsOn {
			other, ok := cf.Services[dep]
			if !ok {
				t.Errorf("%s depends on %s, which does not exist", where, dep)
				continue
			}
			if d.Condition == "service_healthy" && (other.Healthcheck == nil || other.Healthcheck.Disable) {
				t.Errorf("%s waits for %s to be healthy, which has no healthcheck", where, dep)
			}
		}
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if _, ok := cf.Volumes[src]; !ok && !strings.HasPrefix(src, ".") && !strings.HasPrefix(src, "/") {
				t.Errorf("%s: volume %s is not declared", where, src)
			}
		}
		sv, ok := svcs[name]
		if !ok {
			continue
		}
		c := lines[name]
		// Published ports reach something the process listens on.
		for _, p := range s.Ports {
			parts := strings.Split(p, ":")
			n, err := strconv.Atoi(parts[len(parts)-1])
			if err != nil || !sv.ports[n] {
				t.Errorf("%s: publishes %s, but listens on %v", where, p, sv.ports)
			}
		}
		// Healthchecks: the image's probe, on the admin or API port.
		if hc := s.Healthcheck; sv.role == "run" || sv.role == "controlplane" {
			if hc == nil || hc.Disable || len(hc.Test) != 3 || hc.Test[0] != "CMD" || hc.Test[1] != "/usr/local/bin/httpprobe" {
				t.Errorf("%s: want healthcheck [CMD, /usr/local/bin/httpprobe, URL], have %+v", where, hc)
			} else {
				checkProbeURL(t, where, sv.role, hc.Test[2], sv.admin)
			}
		}
		// A read-only root needs a volume or a tmpfs where wasmgate writes.
		if s.ReadOnly {
			for _, p := range writablePaths(c, strings.Fields(sv.role + " ?")[0]) {
				if !composeWritable(s, p) {
					t.Errorf("%s: writes %s, which is on no volume or tmpfs (read_only)", where, p)
				}
			}
		}
		if sv.role == "run" {
			drain := drainOf(t, c, nil)
			if f, ok := c.flagValue("-c"); ok {
				if src, ok := configFile(name, f); ok && configAt(t, src).cfg != nil {
					drain = drainOf(t, c, configAt(t, src).cfg)
				}
			}
			grace := 10 * time.Second
			if s.StopGracePeriod != "" {
				grace, _ = time.ParseDuration(s.StopGracePeriod)
			}
			if _, ok := c.flagValue("--etcd-endpoints"); ok && grace <= drain {
				t.Errorf("%s: stop_grace_period %s does not cover the drain of %s", where, grace, drain)
			}
		}
	}
}

func composeWritable(s *composeService, p string) bool {
	var mounts []string
	mounts = append(mounts, s.Tmpfs...)
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && (len(parts) < 3 || !strings.Contains(parts[2], "ro")) {
			mounts = append(mounts, parts[1])
		}
	}
	for _, m := range mounts {
		if p == m || strings.HasPrefix(p, strings.TrimSuffix(m, "/")+"/") {
			return true
		}
	}
	return false
}

// checkProbeURL checks a health check URL: loopback, the admin port, a
// path the server serves.
func checkProbeURL(t *testing.T, where, role, url string, admin int) {
	t.Helper()
	rest, ok := strings.CutPrefix(url, "http://")
	if !ok {
		t.Errorf("%s: probe %s is not http://", where, url)
		return
	}
	hostport, p, _ := strings.Cut(rest, "/")
	if port := portOf(t, where, hostport); port != admin {
		t.Errorf("%s: probe %s on port %d, the admin/API port is %d", where, url, port, admin)
	}
	if !served(strings.Fields(role + " ?")[0], "/"+p) {
		t.Errorf("%s: probe %s: the server answers 404 on /%s", where, url, p)
	}
	want := "/ready"
	if role == "controlplane" {
		want = "/healthz"
	}
	if "/"+p != want {
		t.Errorf("%s: probe %s, want the path %s", where, url, want)
	}
}

func TestInterpolate(t *testing.T) {
	env := map[string]string{"A": "a", "E": ""}
	for in, want := range map[string]string{
		"${A}": "a", "${B:-dflt}": "dflt", "${E:-dflt}": "dflt", "${E-dflt}": "", "${A:?no}": "a", "x${B}y": "xy",
	} {
		if got, err := interpolate(in, env); err != nil || got != want {
			t.Errorf("interpolate(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := interpolate("${B:?set B}", env); err == nil {
		t.Error("${B:?...} with B unset did not fail")
	}
}
