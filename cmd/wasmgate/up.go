package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/internal/demo"
)

func newUpCmd() *cobra.Command {
	var (
		dir    string
		listen string
		admin  string
		logs   logFlags
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start everything on embedded defaults: a proxy in front of a demo backend",
		Long: `up starts a demo backend (two instances) and a proxy in front of it on an
embedded configuration, written to DIR/wasmgate.yaml. Edit that file and the
proxy reloads it; a bad edit is rejected and the running config keeps serving.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logs.build()
			if err != nil {
				return err
			}
			defer log.Sync() //nolint:errcheck
			var backends []string
			for _, name := range []string{"demo-a", "demo-b"} {
				b, err := demo.Start(name, "127.0.0.1:0")
				if err != nil {
					return fmt.Errorf("starting the demo backend: %w", err)
				}
				defer b.Close()
				backends = append(backends, b.Addr())
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			file := filepath.Join(dir, "wasmgate.yaml")
			if err := os.WriteFile(file, []byte(demoConfig(listen, admin, backends)), 0o644); err != nil {
				return err
			}
			cfg, err := config.LoadFile(file)
			if err != nil {
				return fmt.Errorf("the embedded configuration is invalid (a bug): %w", err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			r, err := startProxy(ctx, cfg, log, runOptions{cacheDir: filepath.Join(dir, "wasm-cache")})
			if err != nil {
				return err
			}
			go r.watchFile(ctx, file)
			out := cmd.OutOrStdout()
			base := "http://" + r.srv.Addr("public").String()
			fmt.Fprintf(out, `
wasmgate is up.

  proxy        %[1]s
  admin        http://%[2]s   (/ready /metrics /config /clusters)
  config       %[3]s   (edit it: the proxy reloads on save)

Try:
  curl %[1]s/                      balanced over two demo instances
  curl %[1]s/api/hello             prefix rewrite /api -> /
  curl -H 'x-canary: 1' %[1]s/     header match: always instance demo-b
  curl %[1]s/healthz               a direct response
  curl -i %[1]s/old/page           a redirect
  curl %[2]s/metrics

Ctrl-C drains and stops.
`, base, r.adminA, file)
			return r.wait(ctx)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".wasmgate", "directory for the configuration and state")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "address of the proxy's listener")
	cmd.Flags().StringVar(&admin, "admin", "127.0.0.1:9901", "address of the admin endpoints")
	logs.register(cmd)
	return cmd
}

// demoConfig is the embedded configuration of `wasmgate up`.
func demoConfig(listen, admin string, backends []string) string {
	return fmt.Sprintf(`# The configuration of 'wasmgate up'. Edit it: the proxy reloads on save.
admin:
  address: %[2]s
access_log:
  path: stdout
listeners:
  - name: public
    address: %[1]s
clusters:
  - name: demo
    lb_policy: round_robin
    endpoints:
      - address: %[3]s
      - address: %[4]s
  - name: demo-b
    endpoints:
      - address: %[4]s
virtual_hosts:
  - name: default
    domains: ["*"]
    response_headers:
      set:
        - name: x-served-by
          value: wasmgate
    routes:
      - name: healthz
        match: {path: /healthz}
        direct_response: {status: 200, body: "ok\n"}
      - name: old
        match: {prefix: /old/}
        redirect: {prefix_rewrite: /new/, status: 302}
      - name: canary
        match:
          prefix: /
          headers:
            - {name: x-canary, present: true}
        cluster: demo-b
      - name: api
        match: {prefix: /api/}
        prefix_rewrite: /
        cluster: demo
      - name: default
        match: {prefix: /}
        cluster: demo
`, listen, admin, backends[0], backends[1])
}
