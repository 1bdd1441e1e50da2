// Package deploy_test checks that what deploy/ ships works with the binary
// of this commit: every wasmgate configuration in it (files and ConfigMap
// keys) validates, every manifest decodes into the fields its kind has,
// every wasmgate command line names subcommands and flags that exist, every
// probe asks for a path the admin server serves, and the ports line up from
// the Service to the container to the listener of the configuration.
//
// The tests need no network. Those that need a tool this machine may not
// have (systemd-analyze, kubectl, a Docker daemon) skip with the reason.
package deploy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/mesh/policy"
	"github.com/wasmgate/wasmgate/plugins"
	"github.com/wasmgate/wasmgate/proxy"
)

// pluginDir is where deploy/Dockerfile puts the first-party plugins.
const pluginDir = "/usr/lib/wasmgate/plugins"

// deployFile is one file of deploy/, its path relative to deploy/.
type deployFile struct {
	rel  string
	data []byte
}

var (
	filesOnce sync.Once
	files     []deployFile
	filesErr  error
)

// deployFiles lists every file of deploy/ but the tests' own Go code.
func deployFiles(t *testing.T) []deployFile {
	t.Helper()
	filesOnce.Do(func() {
		filesErr = filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || strings.HasSuffix(p, ".go") {
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			files = append(files, deployFile{rel: filepath.ToSlash(p), data: data})
			return nil
		})
	})
	if filesErr != nil {
		t.Fatal(filesErr)
	}
	return files
}

func fileData(t *testing.T, rel string) []byte {
	t.Helper()
	for _, f := range deployFiles(t) {
		if f.rel == rel {
			return f.data
		}
	}
	t.Fatalf("deploy/%s does not exist", rel)
	return nil
}

// yamlDocs decodes every document of a YAML stream; an empty document
// (a trailing ---) is skipped.
func yamlDocs(data []byte) ([]*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(n.Content) == 0 || (len(n.Content) == 1 && n.Content[0].Tag == "!!null") {
			continue
		}
		docs = append(docs, &n)
	}
}

// strict decodes one YAML document into v, refusing fields v does not have:
// a key indented one level too deep or too shallow lands in a mapping that
// has no such field, and fails here.
func strict(doc *yaml.Node, v any) error {
	b, err := yaml.Marshal(doc)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// topKeys returns the keys of a document's top-level mapping.
func topKeys(doc *yaml.Node) map[string]bool {
	keys := map[string]bool{}
	root := doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		return keys
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		keys[root.Content[i].Value] = true
	}
	return keys
}

// isWasmgateConfig tells a wasmgate configuration from other YAML.
func isWasmgateConfig(keys map[string]bool) bool {
	return keys["listeners"] || keys["virtual_hosts"] || keys["clusters"]
}

// wgConfig is one wasmgate configuration found in deploy/.
type wgConfig struct {
	where string // file, or file#key for a ConfigMap
	data  []byte
	cfg   *config.Config
	// fleet marks a document applied through the control plane
	// (wasmgate ctl apply), not read by a proxy.
	fleet bool
}

var (
	configsOnce sync.Once
	configsList []*wgConfig
	configsErrs []error
)

// wasmgateConfigs finds every wasmgate configuration of deploy/: YAML and
// JSON files whose top level is a configuration, and ConfigMap keys that
// hold one. Each is loaded as `wasmgate validate` loads it.
func wasmgateConfigs(t *testing.T) []*wgConfig {
	t.Helper()
	fl := deployFiles(t)
	configsOnce.Do(func() {
		add := func(where string, data []byte, fleet bool) {
			cfg, err := config.Parse(data, where)
			if err != nil {
				configsErrs = append(configsErrs, fmt.Errorf("%s: not a valid wasmgate configuration:\n%w", where, err))
			}
			configsList = append(configsList, &wgConfig{where: where, data: data, cfg: cfg, fleet: fleet})
		}
		for _, f := range fl {
			ext := path.Ext(f.rel)
			if ext != ".yaml" && ext != ".yml" && ext != ".json" {
				continue
			}
			docs, err := yamlDocs(f.data)
			if err != nil {
				configsErrs = append(configsErrs, fmt.Errorf("%s: %w", f.rel, err))
				continue
			}
			for _, d := range docs {
				keys := topKeys(d)
				if isWasmgateConfig(keys) {
					add(f.rel, f.data, path.Base(f.rel) == "fleet.yaml")
					break
				}
				if keys["kind"] {
					var cm struct {
						Kind string            `yaml:"kind"`
						Data map[string]string `yaml:"data"`
					}
					if err := d.Decode(&cm); err != nil || cm.Kind != "ConfigMap" {
						continue
					}
					for _, k := range sortedKeys(cm.Data) {
						add(f.rel+"#"+k, []byte(cm.Data[k]), false)
					}
				}
			}
		}
	})
	for _, err := range configsErrs {
		t.Error(err)
	}
	return configsList
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// configAt returns the configuration of a file or ConfigMap key.
func configAt(t *testing.T, where string) *wgConfig {
	t.Helper()
	for _, c := range wasmgateConfigs(t) {
		if c.where == where {
			return c
		}
	}
	t.Fatalf("no wasmgate configuration at deploy/%s", where)
	return nil
}

func TestConfigsValidate(t *testing.T) {
	cs := wasmgateConfigs(t)
	// Every configuration deploy/ is known to hold: a new one is found by
	// the walk, a lost one fails here.
	want := []string{
		"compose/backend-a.yaml", "compose/backend-b.yaml", "compose/fleet.yaml",
		"kubernetes/edge/configmap.yaml#config.yaml", "kubernetes/fleet/fleet.yaml",
		"kubernetes/sidecar/configmap.yaml#config.yaml",
		"local/backend-a.yaml", "local/backend-b.yaml", "local/fleet.yaml",
		"systemd/config.yaml",
	}
	var got []string
	for _, c := range cs {
		got = append(got, c.where)
	}
	for _, w := range want {
		if !contains(got, w) {
			t.Errorf("deploy/%s: no wasmgate configuration found there", w)
		}
	}
	for _, c := range cs {
		if c.cfg == nil {
			continue // reported by wasmgateConfigs
		}
		if c.fleet {
			// What the control plane's API would refuse: the fields
			// that are each proxy's own.
			if _, err := api.DecodeBundle(c.data); err != nil {
				t.Errorf("%s: wasmgate ctl apply would refuse it: %v", c.where, err)
			}
		}
	}
}

// TestPluginsLoad checks that every plugin a configuration names is one
// the image ships, and that the host loads it with that configuration
// (wasmgate plugin inspect runs proxy_on_configure).
func TestPluginsLoad(t *testing.T) {
	n := 0
	for _, c := range wasmgateConfigs(t) {
		if c.cfg == nil {
			continue
		}
		for _, p := range c.cfg.Plugins {
			n++
			name, ok := strings.CutPrefix(p.File, pluginDir+"/")
			name, ok2 := strings.CutSuffix(name, ".wasm")
			if !ok || !ok2 || !contains(plugins.Names(), name) {
				t.Errorf("%s: plugins[%s].file %q: the image holds %s/{%s}.wasm", c.where, p.Name, p.File, pluginDir, strings.Join(plugins.Names(), ","))
				continue
			}
			if testing.Short() {
				continue
			}
			args := []string{"plugin", "inspect", "builtin:" + name, "--config", string(p.Config)}
			if len(p.VMConfig) > 0 {
				t.Errorf("%s: plugins[%s]: vm_config is not checked here", c.where, p.Name)
			}
			out, err := exec.Command(wasmgateBin(t), args...).CombinedOutput()
			if err != nil {
				t.Errorf("%s: plugins[%s] would not load: %v\n%s", c.where, p.Name, err, lastLines(out, 3))
			}
		}
	}
	if n == 0 {
		t.Error("no configuration names a plugin: the image's plugin directory goes unchecked")
	}
}

// TestYAMLDecodes decodes every YAML file: a tab, a broken indentation or
// a duplicate key fails here before any other test reads it.
func TestYAMLDecodes(t *testing.T) {
	for _, f := range deployFiles(t) {
		switch path.Ext(f.rel) {
		case ".yaml", ".yml":
		default:
			continue
		}
		docs, err := yamlDocs(f.data)
		if err != nil {
			t.Errorf("%s: %v", f.rel, err)
			continue
		}
		if len(docs) == 0 {
			t.Errorf("%s: empty", f.rel)
		}
		for i, d := range docs {
			keys := topKeys(d)
			switch {
			case isWasmgateConfig(keys):
			case keys["apiVersion"] && keys["kind"]:
			case path.Base(f.rel) == "compose.yaml":
			case keys["authorization_policies"] || keys["peer_authentications"]:
				if _, err := policy.Parse(f.data); err != nil {
					t.Errorf("%s: not a valid mesh policy file:\n%v", f.rel, err)
				}
			case keys["groups"] || keys["rule_files"]: // Prometheus rules and their unit tests
			default:
				t.Errorf("%s: document %d is neither a wasmgate configuration, a Kubernetes object, a compose file, a mesh policy file nor Prometheus rules", f.rel, i+1)
			}
		}
	}
}

// --- the built binary and its command lines ---

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

// wasmgateBin builds ./cmd/wasmgate once for the whole run.
func wasmgateBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "wasmgate-deploy-test-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "wasmgate")
		cmd := exec.Command(goTool(), "build", "-o", binPath, "./cmd/wasmgate")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build ./cmd/wasmgate: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// commandLine is a wasmgate invocation found in deploy/: the arguments
// after the program name.
type commandLine struct {
	where string
	args  []string
}

func (c commandLine) String() string { return c.where + ": wasmgate " + strings.Join(c.args, " ") }

// flagValue returns the value of a flag given as --name=v, --name v or
// -n v, and whether it was given.
func (c commandLine) flagValue(names ...string) (string, bool) {
	for i, a := range c.args {
		for _, n := range names {
			if v, ok := strings.CutPrefix(a, n+"="); ok {
				return v, true
			}
			if a == n && i+1 < len(c.args) {
				return c.args[i+1], true
			}
		}
	}
	return "", false
}

// sub returns the leading words that are not flags: the subcommand path.
func (c commandLine) sub() string {
	var words []string
	for _, a := range c.args {
		if strings.HasPrefix(a, "-") {
			break
		}
		words = append(words, a)
	}
	return strings.Join(words, " ")
}

// TestCommandLines runs every wasmgate command line of deploy/ through
// the binary's own parser, with --help appended: an unknown subcommand,
// an unknown flag or a value that does not parse fails, and nothing runs.
func TestCommandLines(t *testing.T) {
	lines := allCommandLines(t)
	if len(lines) < 15 {
		t.Fatalf("found only %d wasmgate command lines in deploy/", len(lines))
	}
	bin := wasmgateBin(t)
	usage := regexp.MustCompile(`(?m)^Usage:\n\s+(wasmgate(?: [a-z][a-z-]*)*)`)
	for _, c := range lines {
		out, err := exec.Command(bin, append(append([]string{}, c.args...), "--help")...).CombinedOutput()
		if err != nil {
			t.Errorf("%s\n  the binary refuses it: %v\n%s", c, err, lastLines(out, 3))
			continue
		}
		// cobra prints a parent's help for an unknown word under a
		// command that has subcommands: compare the command it chose.
		m := usage.FindSubmatch(out)
		if m == nil {
			t.Errorf("%s\n  no Usage in its help:\n%s", c, out)
			continue
		}
		chosen := strings.TrimSpace(strings.TrimPrefix(string(m[1]), "wasmgate"))
		if !strings.HasPrefix(c.sub()+" ", chosen+" ") || (bytes.Contains(out, []byte("Available Commands:")) && c.sub() != chosen) {
			t.Errorf("%s\n  runs %q, not a subcommand %q", c, "wasmgate "+chosen, c.sub())
		}
	}
}

var (
	linesOnce sync.Once
	linesAll  []commandLine
)

// allCommandLines gathers the command lines of every kind of file.
func allCommandLines(t *testing.T) []commandLine {
	t.Helper()
	linesOnce.Do(func() {
		for _, s := range k8sSets(t) {
			for _, w := range s.wasmgateContainers() {
				linesAll = append(linesAll, w.line)
			}
		}
		linesAll = append(linesAll, composeCommandLines(t)...)
		linesAll = append(linesAll, systemdCommandLines(t)...)
		linesAll = append(linesAll, dockerfileCommandLines(t)...)
		linesAll = append(linesAll, markdownCommandLines(t)...)
	})
	return linesAll
}

// markdownCommandLines takes the lines of fenced blocks in deploy's
// READMEs that start with "wasmgate".
func markdownCommandLines(t *testing.T) []commandLine {
	var out []commandLine
	for _, f := range deployFiles(t) {
		if path.Ext(f.rel) != ".md" {
			continue
		}
		fenced := false
		for i, line := range strings.Split(string(f.data), "\n") {
			trimmed := strings.TrimSpace(line)
			if strings.HasPrefix(trimmed, "```") {
				fenced = !fenced
				continue
			}
			if !fenced {
				continue
			}
			// A comment after the command is not part of it.
			if j := strings.Index(trimmed, " #"); j >= 0 {
				trimmed = strings.TrimSpace(trimmed[:j])
			}
			rest, ok := strings.CutPrefix(trimmed, "wasmgate ")
			if !ok {
				continue
			}
			words, err := shellWords(rest)
			if err != nil {
				t.Errorf("%s:%d: %v", f.rel, i+1, err)
				continue
			}
			out = append(out, commandLine{where: fmt.Sprintf("%s:%d", f.rel, i+1), args: words})
		}
	}
	return out
}

// shellWords splits a command line as a shell would, for the quoting this
// directory uses: single and double quotes, no expansions.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; {
		case ch == ' ' || ch == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case ch == '\'' || ch == '"':
			j := strings.IndexByte(s[i+1:], ch)
			if j < 0 {
				return nil, fmt.Errorf("unbalanced %c in %q", ch, s)
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// --- what the binary listens on and serves ---

// portOf returns the port of a host:port.
func portOf(t *testing.T, where, hostport string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Errorf("%s: %q is not host:port", where, hostport)
		return -1
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Errorf("%s: %q has no numeric port", where, hostport)
		return -1
	}
	return n
}

var (
	adminOnce    sync.Once
	adminHandler http.Handler
	apiHandler   http.Handler
)

// served reports whether the proxy's admin server (or the control plane's
// API, for controlplane) routes GET path to a handler, rather than 404.
func served(role, p string) bool {
	adminOnce.Do(func() {
		srv := proxy.NewServer(proxy.Options{})
		adminHandler = proxy.NewAdmin(srv).Handler()
		apiHandler = api.NewHandler(nil, nil, nil)
	})
	h := adminHandler
	if role == "controlplane" {
		h = apiHandler
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, p, nil)
	// As a probe on the same host asks: the admin endpoints answer only
	// local Host names (any other gets 403, which is not "not served").
	req.Host = "127.0.0.1:9901"
	h.ServeHTTP(rec, req)
	return rec.Code != http.StatusNotFound && rec.Code != http.StatusForbidden
}

// TestServed keeps served honest: it must tell a known path from a typo.
func TestServed(t *testing.T) {
	for _, tc := range []struct {
		role, path string
		want       bool
	}{
		{"run", "/ready", true}, {"run", "/healthz", true}, {"run", "/metrics", true},
		{"run", "/readyz", false}, {"controlplane", "/healthz", true}, {"controlplane", "/ready", false},
	} {
		if got := served(tc.role, tc.path); got != tc.want {
			t.Errorf("served(%s, %s) = %v, want %v", tc.role, tc.path, got, tc.want)
		}
	}
}

// drainOf returns how long a proxy command line drains on SIGTERM.
func drainOf(t *testing.T, c commandLine, cfg *config.Config) time.Duration {
	if cfg != nil {
		return cfg.DrainTimeout.Or(15 * time.Second)
	}
	if v, ok := c.flagValue("--drain-timeout"); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Errorf("%s: --drain-timeout %q: %v", c, v, err)
		}
		return d
	}
	return 15 * time.Second
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
