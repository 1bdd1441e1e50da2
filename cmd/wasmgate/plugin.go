package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap/zapcore"

	"github.com/wasmgate/wasmgate/plugins"
	"github.com/wasmgate/wasmgate/proxy/filter"
	"github.com/wasmgate/wasmgate/proxy/wasm/wasmtest"
	"github.com/wasmgate/wasmgate/sdk/abi"
)

func newPluginCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "plugin",
		Short: "Build, inspect and try Wasm plugins",
		Long: `Build, inspect and try proxy-wasm plugins written with the Go SDK (sdk/),
or any other module of the proxy-wasm ABI v0.2.`,
	}
	cmd.AddCommand(newPluginBuildCmd(), newPluginInspectCmd(), newPluginTestCmd(), newPluginExtractCmd())
	return cmd
}

// builtinPrefix names a first-party plugin embedded in the binary where a
// module file is expected: builtin:authz.
const builtinPrefix = "builtin:"

// readModule reads a module file, or an embedded plugin named builtin:NAME.
func readModule(file string) ([]byte, error) {
	if name, ok := strings.CutPrefix(file, builtinPrefix); ok {
		return plugins.Module(name)
	}
	return os.ReadFile(file)
}

func newPluginExtractCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "extract NAME",
		Short: "Write a first-party plugin embedded in this binary (" + strings.Join(plugins.Names(), ", ") + ") to a file",
		Example: `  wasmgate plugin extract authz -o /etc/wasmgate/authz.wasm
  wasmgate plugin inspect builtin:telemetry`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := plugins.Module(args[0])
			if err != nil {
				return err
			}
			if out == "" {
				out = args[0] + ".wasm"
			}
			if err := os.WriteFile(out, b, 0o644); err != nil {
				return err
			}
			d := sha256.Sum256(b)
			fmt.Fprintf(cmd.OutOrStdout(), "%s\n  size   %d bytes\n  sha256 %s\n", out, len(b), hex.EncodeToString(d[:]))
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "file to write (default NAME.wasm)")
	return cmd
}

func newPluginBuildCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "build DIR",
		Short: "Build the Go plugin in DIR to a .wasm module, reproducibly",
		Long: `Build the Go main package in DIR with the standard Go toolchain:

  GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 go build -buildmode=c-shared -trimpath -buildvcs=false

The same source and Go version give the same bytes. The module is written to
DIR/<name of DIR>.wasm unless -o says otherwise; its size and sha256 are printed.`,
		Example: `  wasmgate plugin build sdk/examples/hello
  wasmgate plugin build -o /tmp/authz.wasm plugins/authz/module`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			if out == "" {
				out = filepath.Join(dir, filepath.Base(dir)+".wasm")
			}
			out, err = filepath.Abs(out)
			if err != nil {
				return err
			}
			if err := buildPlugin(cmd.Context(), dir, out, cmd.ErrOrStderr()); err != nil {
				return err
			}
			b, err := os.ReadFile(out)
			if err != nil {
				return err
			}
			d := sha256.Sum256(b)
			fmt.Fprintf(cmd.OutOrStdout(), "%s\n  size   %d bytes (%.1f MB)\n  sha256 %s\n",
				out, len(b), float64(len(b))/(1<<20), hex.EncodeToString(d[:]))
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "module file to write (default DIR/<name of DIR>.wasm)")
	return cmd
}

// buildPlugin runs the go tool on the main package in dir.
func buildPlugin(ctx context.Context, dir, out string, stderr io.Writer) error {
	gotool, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("the go toolchain (1.24 or later) is needed to build plugins: %w", err)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	c := exec.CommandContext(ctx, gotool, "build", "-buildmode=c-shared", "-trimpath", "-buildvcs=false", "-o", out, ".")
	c.Dir = dir
	c.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	c.Stdout, c.Stderr = stderr, stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("building %s: %w", dir, err)
	}
	return nil
}

func newPluginInspectCmd() *cobra.Command {
	var cfg string
	cmd := &cobra.Command{
		Use:   "inspect FILE|builtin:NAME",
		Short: "Show a module's ABI version, imports and exports, and whether the host would load it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			problem, err := inspectPlugin(cmd.Context(), cmd.OutOrStdout(), args[0], []byte(cfg))
			if err != nil {
				return err
			}
			if problem != nil {
				return &exitError{code: exitInvalid, err: problem}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cfg, "config", "", "plugin configuration for the load check")
	return cmd
}

// inspectPlugin prints what a module imports and exports, then loads it
// in the host as the proxy would. It returns the reason the host would
// refuse the module, or nil.
func inspectPlugin(ctx context.Context, w io.Writer, file string, cfg []byte) (problem, err error) {
	code, err := readModule(file)
	if err != nil {
		return nil, err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	d := sha256.Sum256(code)
	fmt.Fprintf(w, "%s\n  size     %d bytes\n  sha256   %s\n", file, len(code), hex.EncodeToString(d[:]))
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)
	mod, err := rt.CompileModule(ctx, code)
	if err != nil {
		fmt.Fprintf(w, "  problem  not a valid WebAssembly module: %v\n", err)
		return errors.New("not a valid WebAssembly module"), nil
	}
	exports := mod.ExportedFunctions()
	abiVersion := "none"
	for _, v := range []string{abi.MarkerV021, abi.MarkerV020, "proxy_abi_version_0_1_0"} {
		if _, ok := exports[v]; ok {
			abiVersion = strings.ReplaceAll(strings.TrimPrefix(v, "proxy_abi_version_"), "_", ".")
			break
		}
	}
	fmt.Fprintf(w, "  abi      proxy-wasm %s\n", abiVersion)
	if _, ok := exports["_initialize"]; ok {
		fmt.Fprintln(w, "  start    _initialize (reactor)")
	} else if _, ok := exports["_start"]; ok {
		fmt.Fprintln(w, "  start    _start (command)")
	}

	byModule := map[string][]string{}
	for _, f := range mod.ImportedFunctions() {
		m, name, _ := f.Import()
		byModule[m] = append(byModule[m], name+signature(f))
	}
	mods := make([]string, 0, len(byModule))
	for m := range byModule {
		mods = append(mods, m)
	}
	sort.Strings(mods)
	fmt.Fprintln(w, "imports")
	for _, m := range mods {
		names := byModule[m]
		sort.Strings(names)
		fmt.Fprintf(w, "  %s (%d)\n", m, len(names))
		for _, n := range names {
			fmt.Fprintf(w, "    %s\n", n)
		}
	}
	names := make([]string, 0, len(exports))
	for n, f := range exports {
		names = append(names, n+signature(f))
	}
	sort.Strings(names)
	fmt.Fprintf(w, "exports (%d)\n", len(names))
	for _, n := range names {
		fmt.Fprintf(w, "  %s\n", n)
	}

	// The host's own checks: the same loader, verification and start-up as
	// the proxy's.
	h, err := wasmtest.New(code, wasmtest.Options{Config: cfg, LogLevel: zapcore.ErrorLevel})
	if err != nil {
		msg := err.Error()
		hint := ""
		if strings.Contains(msg, "proxy_on_configure") {
			hint = " (the module loads, but rejected the configuration: pass one with --config)"
		}
		fmt.Fprintf(w, "load     FAILS: %s%s\n", msg, hint)
		return fmt.Errorf("%s would not load: %s", file, msg), nil
	}
	defer h.Close()
	fmt.Fprintln(w, "load     ok: the host compiles, instantiates and configures it")
	return nil, nil
}

func signature(f api.FunctionDefinition) string {
	ts := func(vs []api.ValueType) string {
		s := make([]string, len(vs))
		for i, v := range vs {
			s[i] = api.ValueTypeName(v)
		}
		return strings.Join(s, ", ")
	}
	sig := "(" + ts(f.ParamTypes()) + ")"
	if r := f.ResultTypes(); len(r) > 0 {
		sig += " " + ts(r)
	}
	return sig
}

func newPluginTestCmd() *cobra.Command {
	var (
		request, cfg, vmCfg, body string
		headers, clusters         []string
		tlsVersion, peer          string
		debug                     bool
		tcpDown, tcpUp            []string
	)
	cmd := &cobra.Command{
		Use:   "test FILE|builtin:NAME",
		Short: "Run one request through a plugin in the real host and print what the proxy would send",
		Long: `Run one request through the plugin in FILE, inside the same host the proxy
runs, and print the request as it would reach the upstream (which answers 200
"upstream"), the response the client would get, the plugin's logs and metrics.`,
		Example: `  wasmgate plugin test hello.wasm --request 'GET /hello' --config '{"greeting":"hi"}'
  wasmgate plugin test authz.wasm --request 'GET /admin' -H 'authorization: Bearer eyJ...' \
      --config "$(cat authz.json)" --cluster jwks=http://127.0.0.1:9000
  wasmgate plugin test linefilter.wasm --config '{"deny":["FLUSHALL"]}' \
      --tcp 'GET a\r\n' --tcp 'FLUSH' --tcp 'ALL\r\n'      # a network (L4) filter`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := wasmtest.Options{Config: []byte(cfg), VMConfig: []byte(vmCfg)}
			if debug {
				opts.LogLevel = zapcore.DebugLevel
			}
			if len(clusters) > 0 {
				opts.Clusters = map[string]fasthttp.RequestHandler{}
				for _, c := range clusters {
					name, target, ok := strings.Cut(c, "=")
					if !ok {
						return fmt.Errorf("--cluster %q: want NAME=http://HOST:PORT", c)
					}
					opts.Clusters[name] = proxyTo(target)
				}
			}
			code, err := readModule(args[0])
			if err != nil {
				return err
			}
			h, err := wasmtest.New(code, opts)
			if err != nil {
				return &exitError{code: exitInvalid, err: err}
			}
			defer h.Close()
			if len(tcpDown) > 0 || len(tcpUp) > 0 {
				return testConnection(cmd.OutOrStdout(), h, tcpDown, tcpUp, tlsVersion, peer)
			}
			req := wasmtest.NewRequest(request)
			for _, hv := range headers {
				k, v, ok := strings.Cut(hv, ":")
				if !ok {
					return fmt.Errorf("-H %q: want 'name: value'", hv)
				}
				req.Header = append(req.Header, [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
			}
			req.Body = []byte(body)
			if tlsVersion != "" || peer != "" {
				if tlsVersion == "" {
					tlsVersion = "TLSv1.3"
				}
				req.TLS = &filter.TLSInfo{Version: tlsVersion}
				if peer != "" {
					req.TLS.PeerPresented, req.TLS.PeerVerified = true, true
					req.TLS.PeerURISANs = []string{peer}
				}
			}
			res, err := h.Do(req)
			if err != nil {
				return err
			}
			printResult(cmd.OutOrStdout(), req, res, h)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&request, "request", "GET /", "request line: METHOD PATH")
	f.StringArrayVarP(&headers, "header", "H", nil, "request header 'name: value' (repeatable)")
	f.StringVar(&body, "body", "", "request body")
	f.StringVar(&cfg, "config", "", "plugin configuration (JSON or raw)")
	f.StringVar(&vmCfg, "vm-config", "", "VM configuration")
	f.StringArrayVar(&clusters, "cluster", nil, "NAME=http://HOST:PORT: a cluster the plugin may call (repeatable)")
	f.StringVar(&tlsVersion, "tls", "", "pretend the client connected with TLS of this version (TLSv1.2, TLSv1.3)")
	f.StringVar(&peer, "peer", "", "pretend the client presented a verified certificate with this URI SAN (implies --tls)")
	f.BoolVar(&debug, "debug", false, "show the plugin's debug logs")
	f.StringArrayVar(&tcpDown, "tcp", nil, "run the plugin as a network (L4) filter: bytes the client sends, one read each (repeatable; Go escapes such as \\r\\n)")
	f.StringArrayVar(&tcpUp, "tcp-upstream", nil, "bytes the upstream sends back, after the client's (repeatable; with --tcp)")
	return cmd
}

// testConnection runs one connection through the plugin as a network
// filter: the client's reads, then the upstream's, then the client's
// close, and prints what each direction passed on.
func testConnection(w io.Writer, h *wasmtest.Harness, down, up []string, tlsVersion, peer string) error {
	var o wasmtest.ConnOptions
	if tlsVersion != "" || peer != "" {
		o.TLS = &filter.TLSInfo{Version: cmp.Or(tlsVersion, "TLSv1.3")}
		if peer != "" {
			o.TLS.PeerPresented, o.TLS.PeerVerified = true, true
			o.TLS.PeerURISANs = []string{peer}
		}
	}
	fmt.Fprintln(w, "connection (network filter)")
	logStart := len(h.Logs())
	c, err := h.Connect(o)
	switch {
	case errors.Is(err, wasmtest.ErrClosed):
		fmt.Fprintln(w, "  closed by the plugin when it opened")
	case errors.Is(err, wasmtest.ErrNotResumed):
		fmt.Fprintln(w, "  held by the plugin when it opened, never let go")
	case err != nil:
		return err
	}
	step := func(label string, raw string, send func([]byte, bool) ([]byte, error)) bool {
		b := unescape(raw)
		out, err := send(b, false)
		fmt.Fprintf(w, "  %s %q: ", label, b)
		switch {
		case errors.Is(err, wasmtest.ErrClosed):
			fmt.Fprintln(w, "the plugin closed the connection")
			return false
		case err != nil:
			fmt.Fprintln(w, err)
			return false
		case out == nil:
			fmt.Fprintln(w, "held")
		default:
			fmt.Fprintf(w, "passed on %q\n", out)
		}
		return true
	}
	if err == nil {
		ok := true
		for _, s := range down {
			if ok = step("client sent", s, c.Downstream); !ok {
				break
			}
		}
		for _, s := range up {
			if !ok {
				break
			}
			ok = step("upstream sent", s, c.Upstream)
		}
		c.Close()
	}
	if logs := h.Logs()[logStart:]; len(logs) > 0 {
		fmt.Fprintln(w, "logs")
		for _, l := range logs {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	if m, err := h.Metrics(); err == nil && len(m) > 0 {
		fmt.Fprintln(w, "metrics")
		for _, n := range slices.Sorted(maps.Keys(m)) {
			fmt.Fprintf(w, "  %s = %g\n", n, m[n])
		}
	}
	return nil
}

// unescape reads Go escapes (\r, \n, \x00, ...) in s; s as it is when
// it has none that parse.
func unescape(s string) []byte {
	if u, err := strconv.Unquote(`"` + strings.ReplaceAll(s, `"`, `\"`) + `"`); err == nil {
		return []byte(u)
	}
	return []byte(s)
}

// proxyTo answers a cluster's calls by forwarding them to target.
func proxyTo(target string) fasthttp.RequestHandler {
	addr := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(target, "http://"), "https://"), "/")
	c := &fasthttp.HostClient{Addr: addr, IsTLS: strings.HasPrefix(target, "https://")}
	return func(ctx *fasthttp.RequestCtx) {
		if err := c.DoTimeout(&ctx.Request, &ctx.Response, 10*time.Second); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusBadGateway)
		}
	}
}

func printResult(w io.Writer, req *wasmtest.Request, res *wasmtest.Result, h *wasmtest.Harness) {
	fmt.Fprintf(w, "request\n  %s %s\n", req.Method, req.Path)
	for _, kv := range req.Header {
		fmt.Fprintf(w, "  %s: %s\n", kv[0], kv[1])
	}
	if u := res.Upstream; u != nil {
		fmt.Fprintf(w, "upstream received\n  %s %s\n  host: %s\n", u.Method, u.Path, u.Host)
		// The host is printed once, above, whether or not the header
		// map carries it too.
		printHeader(w, u.Header, "host")
		if len(u.Body) > 0 {
			fmt.Fprintf(w, "\n  %s\n", u.Body)
		}
	} else {
		fmt.Fprintln(w, "upstream received nothing")
	}
	who := "from upstream"
	if res.Local {
		who = "from the plugin: " + res.Details
	}
	fmt.Fprintf(w, "response (%s)\n  %d\n", who, res.Status)
	printHeader(w, res.Header)
	if len(res.Body) > 0 {
		fmt.Fprintf(w, "\n  %s\n", strings.TrimRight(string(res.Body), "\n"))
	}
	if len(res.FilterState) > 0 {
		fmt.Fprintln(w, "filter state")
		keys := make([]string, 0, len(res.FilterState))
		for k := range res.FilterState {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  %s = %s\n", k, res.FilterState[k])
		}
	}
	if len(res.Logs) > 0 {
		fmt.Fprintln(w, "logs")
		for _, l := range res.Logs {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	if m, err := h.Metrics(); err == nil && len(m) > 0 {
		fmt.Fprintln(w, "metrics")
		names := make([]string, 0, len(m))
		for n := range m {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(w, "  %s = %g\n", n, m[n])
		}
	}
}

// printHeader prints h sorted by name, leaving out the names in skip.
func printHeader(w io.Writer, h map[string][]string, skip ...string) {
	keys := make([]string, 0, len(h))
	for k := range h {
		if !slices.Contains(skip, strings.ToLower(k)) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			fmt.Fprintf(w, "  %s: %s\n", strings.ToLower(k), v)
		}
	}
}
