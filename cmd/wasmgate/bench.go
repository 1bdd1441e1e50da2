package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/wasmgate/wasmgate/benchmarks/loadgen"
)

func newBenchCmd() *cobra.Command {
	var (
		cfg        loadgen.Config
		protocol   string
		headers    []string
		bodyFile   string
		weights    []int
		tlsFiles   loadgen.TLSFiles
		output     string
		htmlFile   string
		noProgress bool
	)
	cmd := &cobra.Command{
		Use:   "bench [flags] URL...",
		Short: "Generate HTTP load and report throughput and latency",
		Long: `Generate HTTP/1.1, HTTP/2 or HTTP/3 load against one or more URLs and
report throughput, latency percentiles (HDR histogram), status codes,
errors by kind and bytes on the wire.

Without --rate the load is a closed loop: each connection sends its next
request as soon as the previous response arrived. With --rate it is an open
loop at that many requests per second, and each latency is measured from
when the request was due, so a stalled target shows in the percentiles.

A live progress line is drawn on stderr when it is a terminal.`,
		Example: `  wasmgate bench -c 64 -d 30s http://127.0.0.1:8080/
  wasmgate bench --rate 20000 -c 64 -d 1m --warmup 5s http://127.0.0.1:8080/
  wasmgate bench -p h2 -k -c 8 --streams 16 -n 100000 https://127.0.0.1:8443/
  wasmgate bench --weights 9,1 http://127.0.0.1:8080/a http://127.0.0.1:8080/b
  wasmgate bench -o json -d 10s http://127.0.0.1:8080/ > a.json
  wasmgate bench compare a.json b.json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(weights) > 0 && len(weights) != len(args) {
				return fmt.Errorf("--weights: %d weights for %d URLs", len(weights), len(args))
			}
			for i, u := range args {
				t := loadgen.Target{URL: u}
				if len(weights) > 0 {
					t.Weight = weights[i]
				}
				cfg.Targets = append(cfg.Targets, t)
			}
			cfg.Protocol = loadgen.Protocol(protocol)
			for _, h := range headers {
				k, v, ok := strings.Cut(h, ":")
				if !ok {
					return fmt.Errorf("-H %q: want \"Name: value\"", h)
				}
				cfg.Headers = append(cfg.Headers, loadgen.Header{Key: strings.TrimSpace(k), Value: strings.TrimSpace(v)})
			}
			if bodyFile != "" {
				b, err := os.ReadFile(bodyFile)
				if err != nil {
					return fmt.Errorf("--body: %w", err)
				}
				cfg.Body = b
			}
			if cfg.Duration == 0 && cfg.Requests == 0 {
				cfg.Duration = 10 * time.Second
			}
			switch output {
			case "text", "json":
			default:
				return fmt.Errorf("-o %q: want text or json", output)
			}
			tc, err := tlsFiles.Config()
			if err != nil {
				return err
			}
			cfg.TLS = tc

			stderr := cmd.ErrOrStderr()
			live := !noProgress && benchIsTerminal(stderr)
			if live {
				cfg.Progress = func(p loadgen.Progress) { benchDrawProgress(stderr, p) }
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, runErr := loadgen.Run(ctx, cfg)
			if live {
				fmt.Fprint(stderr, "\r\033[K")
			}
			if rep == nil {
				return runErr
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				err = rep.WriteJSON(out)
			} else {
				err = rep.WriteText(out)
			}
			if err != nil {
				return err
			}
			if htmlFile != "" {
				if err := benchWriteHTML(htmlFile, rep); err != nil {
					return err
				}
			}
			if runErr != nil && errors.Is(runErr, context.Canceled) {
				return nil // interrupted by the user: the partial report is the answer
			}
			return runErr
		},
	}
	f := cmd.Flags()
	f.SortFlags = false
	f.IntVarP(&cfg.Connections, "connections", "c", 10, "connections to keep open")
	f.DurationVarP(&cfg.Duration, "duration", "d", 0, "length of the measured run (default 10s unless -n is given)")
	f.Int64VarP(&cfg.Requests, "requests", "n", 0, "number of measured requests (0: bounded by -d only)")
	f.Float64Var(&cfg.Rate, "rate", 0, "open loop: total requests per second at a constant pace (0: closed loop)")
	f.DurationVar(&cfg.Warmup, "warmup", 0, "load sent, but not recorded, before the measured run")
	f.StringVarP(&protocol, "protocol", "p", "h1", "HTTP version: h1, h2 (by TLS for https:// URLs; h2c for http:// URLs, which the listener must accept) or h3")
	f.IntVar(&cfg.Streams, "streams", 1, "concurrent requests per HTTP/2 or HTTP/3 connection")
	f.StringVarP(&cfg.Method, "method", "X", "", "request method (default GET, or POST with --body)")
	f.StringArrayVarP(&headers, "header", "H", nil, `request header "Name: value" (repeatable)`)
	f.StringVar(&bodyFile, "body", "", "file whose content is the request body")
	f.IntSliceVar(&weights, "weights", nil, "relative weight of each URL, in order (default all 1)")
	f.BoolVar(&cfg.NewConnPerRequest, "new-conn", false, "open a new connection for every request instead of reusing one")
	f.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "timeout of each request, dial included")
	f.DurationVar(&cfg.Grace, "grace", 0, "time requests in flight at the end may take to finish (default min(timeout, 2s))")
	f.DurationVar(&cfg.DownAfter, "down-after", 2*time.Second, "end the run when every request has failed for this long (negative: never)")
	f.StringVar(&tlsFiles.ServerName, "sni", "", "TLS server name to send and verify (default the URL's host)")
	f.StringVar(&tlsFiles.CAFile, "cacert", "", "PEM file of the CA certificates to verify the server with")
	f.StringVar(&tlsFiles.CertFile, "cert", "", "PEM client certificate")
	f.StringVar(&tlsFiles.KeyFile, "key", "", "PEM key of the client certificate")
	f.BoolVarP(&tlsFiles.Insecure, "insecure", "k", false, "do not verify the server's certificate")
	f.StringVarP(&output, "output", "o", "text", "report format: text or json")
	f.StringVar(&htmlFile, "html", "", "also write a self-contained HTML report (percentile plot, throughput over time) to this file")
	f.BoolVarP(&noProgress, "quiet", "q", false, "no live progress line")
	cmd.AddCommand(newBenchCompareCmd())
	return cmd
}

func newBenchCompareCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "compare A.json B.json",
		Short: "Show two runs saved with -o json side by side, with ratios B/A",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := loadgen.ReadReport(args[0])
			if err != nil {
				return err
			}
			b, err := loadgen.ReadReport(args[1])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch output {
			case "text":
				return loadgen.WriteComparison(out, args[0], a, args[1], b)
			case "json":
				return benchWriteJSON(out, loadgen.Compare(a, b))
			}
			return fmt.Errorf("-o %q: want text or json", output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "format: text or json")
	return cmd
}

func benchWriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func benchWriteHTML(path string, rep *loadgen.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--html: %w", err)
	}
	if err := rep.WriteHTML(f); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--html: %w", err)
	}
	return nil
}

func benchIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func benchDrawProgress(w io.Writer, p loadgen.Progress) {
	if p.Elapsed < 0 {
		fmt.Fprintf(w, "\r\033[K  warm-up, %s left", (-p.Elapsed).Round(time.Second))
		return
	}
	fmt.Fprintf(w, "\r\033[K  %6s  %9s req/s  p50 %-9s p99 %-9s errors %d",
		p.Elapsed.Round(time.Second), strconv.FormatFloat(p.RPS, 'f', 0, 64), benchMS(p.P50), benchMS(p.P99), p.Errors)
}

func benchMS(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64) + "ms"
}
