package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/resource"
)

// ctlFlags are the flags every ctl command shares.
type ctlFlags struct {
	server    string
	token     string
	tokenFile string
	caFile    string
	output    string
}

func (f *ctlFlags) client() (*api.Client, error) {
	tok := f.token
	if tok == "" && f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	c := &api.Client{Server: f.server, Token: tok, HTTP: &http.Client{Timeout: 60 * time.Second}}
	if f.caFile != "" {
		pem, err := os.ReadFile(f.caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca: no certificate in %s", f.caFile)
		}
		c.HTTP.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	return c, nil
}

// print writes v as JSON or YAML when -o asks for it and reports whether
// it did; otherwise the command prints a table.
func (f *ctlFlags) print(w io.Writer, v any) (bool, error) {
	switch f.output {
	case "", "table":
		return false, nil
	case "json":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return true, err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return true, err
	case "yaml":
		b, err := json.Marshal(v)
		if err != nil {
			return true, err
		}
		y, err := api.JSONToYAML(b)
		if err != nil {
			return true, err
		}
		_, err = w.Write(y)
		return true, err
	}
	return true, fmt.Errorf("-o: want table, json or yaml, not %q", f.output)
}

// explain turns an API error into a message for a person.
func explain(err error, server string) error {
	var ae *api.Error
	if !errors.As(err, &ae) {
		if strings.Contains(err.Error(), "connection refused") {
			return fmt.Errorf("cannot reach the control plane at %s (is `wasmgate controlplane` running? set --server or WASMGATE_SERVER): %w", server, err)
		}
		return err
	}
	var b strings.Builder
	switch ae.Status {
	case http.StatusUnauthorized:
		b.WriteString("not authenticated: pass an API token with --token, --token-file or WASMGATE_TOKEN")
		if ae.Body.Message != "" {
			b.WriteString(" (" + ae.Body.Message + ")")
		}
	case http.StatusForbidden:
		b.WriteString("not allowed: " + ae.Body.Message)
	case http.StatusConflict:
		if ae.Body.Code == "referenced" {
			b.WriteString("refused: still in use, nothing was changed")
			for _, r := range ae.Body.Referenced {
				fmt.Fprintf(&b, "\n  %s is referenced by:", r.Resource)
				for _, by := range r.By {
					b.WriteString("\n    " + by)
				}
			}
		} else {
			b.WriteString("conflict: the configuration changed since the revision this change was made from; nothing was changed (read it again and retry)")
			for _, c := range ae.Body.Conflicts {
				fmt.Fprintf(&b, "\n  %s: %s", c.Resource, c.Reason)
			}
		}
	case http.StatusUnprocessableEntity:
		b.WriteString("invalid: " + ae.Body.Message)
		for _, fe := range ae.Body.Errors {
			b.WriteString("\n  " + fe.String())
		}
	case http.StatusNotFound:
		b.WriteString("not found: " + ae.Body.Message)
	case http.StatusServiceUnavailable:
		b.WriteString("the control plane cannot reach etcd: " + ae.Body.Message)
	default:
		b.WriteString(ae.Error())
	}
	return &exitError{code: ctlExitCode(ae.Status), err: errors.New(b.String())}
}

func ctlExitCode(status int) int {
	switch status {
	case http.StatusConflict:
		return 3
	case http.StatusUnprocessableEntity:
		return 4
	case http.StatusUnauthorized, http.StatusForbidden:
		return 5
	}
	return 1
}

func newCtlCmd() *cobra.Command {
	f := &ctlFlags{}
	cmd := &cobra.Command{
		Use:   "ctl",
		Short: "Operate the control plane: apply, get, delete, diff, history, rollback, status, plugins, endpoints",
		Long: `Operate the control plane through its admin API.

Exit status: 0 success, 1 error, 2 differences (diff), 3 conflict, 4 invalid
configuration, 5 not authenticated or not allowed.`,
	}
	server := os.Getenv("WASMGATE_SERVER")
	if server == "" {
		server = "http://127.0.0.1:9900"
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.server, "server", server, "admin API base URL (or $WASMGATE_SERVER)")
	pf.StringVar(&f.token, "token", os.Getenv("WASMGATE_TOKEN"), "API bearer token (or $WASMGATE_TOKEN)")
	pf.StringVar(&f.tokenFile, "token-file", "", "read the API token from this file")
	pf.StringVar(&f.caFile, "ca", "", "CA bundle that signs the API's certificate (PEM)")
	pf.StringVarP(&f.output, "output", "o", "table", "output: table, json or yaml")
	cmd.AddCommand(
		ctlApplyCmd(f), ctlGetCmd(f), ctlDeleteCmd(f), ctlDiffCmd(f), ctlHistoryCmd(f),
		ctlRollbackCmd(f), ctlStatusCmd(f), ctlPluginCmd(f), ctlRegisterCmd(f),
	)
	return cmd
}

// readBundle reads a file, or every .yaml, .yml and .json file of a
// directory (in name order), as one document. It returns the bytes to
// send: a single file as written (so errors name its lines), several
// merged.
func readBundle(path string) ([]byte, *config.Config, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	var files []string
	if st.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, nil, err
		}
		for _, e := range entries {
			switch strings.ToLower(filepath.Ext(e.Name())) {
			case ".yaml", ".yml", ".json":
				if !e.IsDir() {
					files = append(files, filepath.Join(path, e.Name()))
				}
			}
		}
		if len(files) == 0 {
			return nil, nil, fmt.Errorf("%s holds no .yaml, .yml or .json file", path)
		}
	} else {
		files = []string{path}
	}
	merged := &config.Config{}
	var raw []byte
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, nil, err
		}
		cfg, err := api.DecodeBundle(data)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", file, explain(err, ""))
		}
		merged.Listeners = append(merged.Listeners, cfg.Listeners...)
		merged.VirtualHosts = append(merged.VirtualHosts, cfg.VirtualHosts...)
		merged.Clusters = append(merged.Clusters, cfg.Clusters...)
		merged.Plugins = append(merged.Plugins, cfg.Plugins...)
		raw = data
	}
	if len(files) > 1 {
		raw, err = json.Marshal(merged)
		if err != nil {
			return nil, nil, err
		}
	}
	return raw, merged, nil
}

func printChange(cmd *cobra.Command, f *ctlFlags, res *api.ChangeResult) error {
	if done, err := f.print(cmd.OutOrStdout(), res); done {
		return err
	}
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	for _, op := range res.Ops {
		fmt.Fprintf(w, "%s\t%s\n", op.Action, op.Resource)
	}
	w.Flush()
	out := cmd.OutOrStdout()
	switch {
	case res.DryRun:
		fmt.Fprintf(out, "valid: %d change(s) checked against revision %d, nothing written (dry run)\n", len(res.Ops), res.Revision)
	case res.Unchanged:
		fmt.Fprintf(out, "unchanged at revision %d\n", res.Revision)
	default:
		fmt.Fprintf(out, "applied at revision %d (change #%d)\n", res.Revision, res.Seq)
	}
	return nil
}

func ctlApplyCmd(f *ctlFlags) *cobra.Command {
	var (
		file string
		o    api.Options
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR",
		Short: "Apply a whole or partial configuration (listeners, virtual_hosts, clusters, plugins)",
		Long: `Apply a configuration document, or every .yaml/.yml/.json file of a directory
as one. Resources in it are created or replaced; with --prune, resources not
in it are deleted. The whole resulting configuration is validated first, and
written in one transaction or not at all.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("-f FILE|DIR is required")
			}
			doc, _, err := readBundle(file)
			if err != nil {
				return err
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			res, err := c.Apply(cmd.Context(), doc, o)
			if err != nil {
				return explain(err, f.server)
			}
			return printChange(cmd, f, res)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&file, "file", "f", "", "configuration file or directory")
	fl.BoolVar(&o.DryRun, "dry-run", false, "validate only")
	fl.BoolVar(&o.Prune, "prune", false, "delete resources that the document does not hold")
	fl.Int64Var(&o.ExpectedRevision, "expected-revision", 0, "fail with a conflict if a resource changed after this revision")
	fl.StringVarP(&o.Message, "message", "m", "", "note recorded in the history")
	return cmd
}

func ctlGetCmd(f *ctlFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "Show resources: listeners, virtual_hosts, clusters, plugins, endpoints, blobs, or config for everything",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			ctx, out := cmd.Context(), cmd.OutOrStdout()
			switch args[0] {
			case "config", "all":
				doc, err := c.Config(ctx)
				if err != nil {
					return explain(err, f.server)
				}
				if f.output == "table" || f.output == "" {
					f2 := *f
					f2.output = "yaml"
					fmt.Fprintf(out, "# revision %d, last change at revision %d\n", doc.Revision, doc.ChangeRevision)
					_, err := f2.print(out, struct {
						Listeners    []config.Listener    `json:"listeners"`
						VirtualHosts []config.VirtualHost `json:"virtual_hosts"`
						Clusters     []config.Cluster     `json:"clusters"`
						Plugins      []config.Plugin      `json:"plugins,omitempty"`
					}{doc.Config.Listeners, doc.Config.VirtualHosts, doc.Config.Clusters, doc.Config.Plugins})
					return err
				}
				_, err = f.print(out, doc)
				return err
			case "endpoints", "endpoint", "ep":
				cluster := ""
				if len(args) == 2 {
					cluster = args[1]
				}
				list, err := c.Endpoints(ctx, cluster)
				if err != nil {
					return explain(err, f.server)
				}
				if done, err := f.print(out, list); done {
					return err
				}
				w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "CLUSTER\tID\tADDRESS\tWEIGHT\tTTL")
				for _, e := range list.Items {
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%ds\n", e.Cluster, e.ID, e.Address, max(e.Weight, 1), e.TTL)
				}
				return w.Flush()
			case "blobs", "blob":
				var list api.BlobList
				if err := c.Do(ctx, http.MethodGet, "/v1/blobs", nil, nil, &list); err != nil {
					return explain(err, f.server)
				}
				if done, err := f.print(out, list); done {
					return err
				}
				w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "SHA256\tSIZE\tCHUNKS\tCREATED")
				for _, b := range list.Items {
					fmt.Fprintf(w, "%s\t%d\t%d\t%s\n", b.SHA256, b.Size, b.Chunks, b.Created.Format(time.RFC3339))
				}
				return w.Flush()
			}
			kind, err := resource.ParseKind(args[0])
			if err != nil {
				return err
			}
			if len(args) == 2 {
				item, err := c.Get(ctx, resource.Ref{Kind: kind, Name: args[1]})
				if err != nil {
					return explain(err, f.server)
				}
				if f.output == "table" || f.output == "" {
					return printItems(out, kind, []api.Item{*item})
				}
				_, err = f.print(out, item.Value)
				return err
			}
			list, err := c.List(ctx, kind)
			if err != nil {
				return explain(err, f.server)
			}
			if f.output == "table" || f.output == "" {
				return printItems(out, kind, list.Items)
			}
			// A document of the kind, ready to apply again.
			values := make([]json.RawMessage, len(list.Items))
			for i, it := range list.Items {
				values[i] = it.Value
			}
			_, err = f.print(out, map[string]any{string(kind): values})
			return err
		},
	}
}

// printItems prints a table of resources with a summary of each.
func printItems(out io.Writer, kind resource.Kind, items []api.Item) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	switch kind {
	case resource.Listeners:
		fmt.Fprintln(w, "NAME\tREVISION\tADDRESS")
	case resource.VirtualHosts:
		fmt.Fprintln(w, "NAME\tREVISION\tDOMAINS\tROUTES")
	case resource.Clusters:
		fmt.Fprintln(w, "NAME\tREVISION\tDISCOVERY\tLB\tENDPOINTS")
	case resource.Plugins:
		fmt.Fprintln(w, "NAME\tREVISION\tMODULE\tFAILURE POLICY")
	}
	for _, it := range items {
		v, err := resource.Decode(resource.Ref{Kind: kind, Name: it.Name}, it.Value)
		if err != nil {
			fmt.Fprintf(w, "%s\t%d\t(invalid: %v)\n", it.Name, it.Revision, err)
			continue
		}
		switch x := v.(type) {
		case *config.Listener:
			fmt.Fprintf(w, "%s\t%d\t%s\n", x.Name, it.Revision, x.Address)
		case *config.VirtualHost:
			fmt.Fprintf(w, "%s\t%d\t%s\t%d\n", x.Name, it.Revision, strings.Join(x.Domains, ","), len(x.Routes))
		case *config.Cluster:
			d := x.Discovery
			if d == "" {
				d = config.DiscoveryStatic
			}
			lb := x.LBPolicy
			if lb == "" {
				lb = config.LBRoundRobin
			}
			eps := make([]string, len(x.Endpoints))
			for i, e := range x.Endpoints {
				eps[i] = e.Address
			}
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", x.Name, it.Revision, d, lb, strings.Join(eps, ","))
		case *config.Plugin:
			mod := x.File
			if x.SHA256 != "" {
				mod = "sha256:" + x.SHA256[:12]
			}
			fp := x.FailurePolicy
			if fp == "" {
				fp = config.FailClosed
			}
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", x.Name, it.Revision, mod, fp)
		}
	}
	return w.Flush()
}

func ctlDeleteCmd(f *ctlFlags) *cobra.Command {
	var o api.Options
	cmd := &cobra.Command{
		Use:   "delete KIND NAME",
		Short: "Delete a resource (refused while another resource references it)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := resource.ParseKind(args[0])
			if err != nil {
				return err
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			res, err := c.Delete(cmd.Context(), resource.Ref{Kind: kind, Name: args[1]}, o)
			if err != nil {
				return explain(err, f.server)
			}
			return printChange(cmd, f, res)
		},
	}
	cmd.Flags().Int64Var(&o.IfMatch, "if-match", 0, "fail with a conflict unless the resource is at this revision")
	cmd.Flags().BoolVar(&o.DryRun, "dry-run", false, "check only")
	cmd.Flags().StringVarP(&o.Message, "message", "m", "", "note recorded in the history")
	return cmd
}

func ctlDiffCmd(f *ctlFlags) *cobra.Command {
	var (
		file  string
		prune bool
	)
	cmd := &cobra.Command{
		Use:   "diff -f FILE|DIR",
		Short: "Show how a local configuration differs from the live one (exit status 2 when it does)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("-f FILE|DIR is required")
			}
			_, local, err := readBundle(file)
			if err != nil {
				return err
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			doc, err := c.Config(cmd.Context())
			if err != nil {
				return explain(err, f.server)
			}
			// Compared with their defaults filled in, as the control
			// plane stores them: leaving a default out is no difference.
			doc.Config.Normalize()
			local.Normalize()
			live := resource.Split(doc.Config)
			want := resource.Split(local)
			refs := want.Refs()
			if prune {
				for _, r := range live.Refs() {
					if _, ok := want[r]; !ok {
						refs = append(refs, r)
					}
				}
				resource.SortRefs(refs)
			}
			out := cmd.OutOrStdout()
			differ := 0
			for _, r := range refs {
				a, b := yamlOf(live[r]), yamlOf(want[r])
				if a == b {
					continue
				}
				differ++
				fmt.Fprintf(out, "--- live %s (revision %d)\n+++ local %s\n", r, doc.Revisions[r.String()], r)
				for _, l := range lineDiff(splitLines(a), splitLines(b)) {
					fmt.Fprintln(out, l)
				}
			}
			if differ == 0 {
				fmt.Fprintf(out, "no differences (live revision %d)\n", doc.Revision)
				return nil
			}
			return &exitError{code: 2, err: fmt.Errorf("%d resource(s) differ from revision %d", differ, doc.Revision)}
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "configuration file or directory")
	cmd.Flags().BoolVar(&prune, "prune", false, "also show live resources that the local configuration does not hold")
	return cmd
}

func yamlOf(v any) string {
	if v == nil {
		return ""
	}
	b, err := resource.Encode(v)
	if err != nil {
		return err.Error()
	}
	y, err := api.JSONToYAML(b)
	if err != nil {
		return string(b)
	}
	return string(y)
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimRight(s, "\n"), "\n")
}

// lineDiff returns a and b's lines marked " ", "-" or "+", by the longest
// common subsequence.
func lineDiff(a, b []string) []string {
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []string
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			out = append(out, "  "+a[i])
			i++
			j++
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			out = append(out, "+ "+b[j])
			j++
		default:
			out = append(out, "- "+a[i])
			i++
		}
	}
	return out
}

func ctlHistoryCmd(f *ctlFlags) *cobra.Command {
	var (
		limit  int
		values bool
	)
	cmd := &cobra.Command{
		Use:   "history",
		Short: "List the latest configuration changes, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			h, err := c.History(cmd.Context(), limit, values)
			if err != nil {
				return explain(err, f.server)
			}
			if done, err := f.print(cmd.OutOrStdout(), h); done {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "REVISION\tCHANGE\tTIME\tAUTHOR\tACTION\tRESOURCES\tMESSAGE")
			for _, e := range h.Items {
				res := make([]string, len(e.Ops))
				for i, op := range e.Ops {
					res[i] = map[string]string{"create": "+", "update": "~", "delete": "-"}[op.Action] + op.Resource
				}
				if len(res) > 4 {
					res = append(res[:4], fmt.Sprintf("(%d more)", len(e.Ops)-4))
				}
				fmt.Fprintf(w, "%d\t#%d\t%s\t%s\t%s\t%s\t%s\n", e.Revision, e.Seq, e.Time.Local().Format("2006-01-02 15:04:05"), e.Author, e.Action, strings.Join(res, " "), e.Message)
			}
			return w.Flush()
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 20, "number of changes (0: all kept)")
	cmd.Flags().BoolVar(&values, "values", false, "with -o json|yaml, include each resource before and after")
	return cmd
}

func ctlRollbackCmd(f *ctlFlags) *cobra.Command {
	var req api.RollbackRequest
	cmd := &cobra.Command{
		Use:   "rollback REVISION",
		Short: "Return the configuration to what it was at a revision, as a new change",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rev, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || rev <= 0 {
				return fmt.Errorf("%q is not a revision (see wasmgate ctl history)", args[0])
			}
			req.Revision = rev
			c, err := f.client()
			if err != nil {
				return err
			}
			res, err := c.Rollback(cmd.Context(), req)
			if err != nil {
				return explain(err, f.server)
			}
			return printChange(cmd, f, res)
		},
	}
	cmd.Flags().BoolVar(&req.DryRun, "dry-run", false, "check only")
	cmd.Flags().StringVarP(&req.Message, "message", "m", "", "note recorded in the history")
	return cmd
}

func ctlStatusCmd(f *ctlFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show which proxy runs which revision, and whether the fleet converged",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			st, err := c.Status(cmd.Context())
			if err != nil {
				return explain(err, f.server)
			}
			out := cmd.OutOrStdout()
			if done, err := f.print(out, st); done {
				return err
			}
			at := 0
			for _, p := range st.Proxies {
				if p.Revision >= st.ChangeRevision && p.LastError == "" && !p.FromCache {
					at++
				}
			}
			conv := "no"
			if st.Converged {
				conv = "yes"
			}
			fmt.Fprintf(out, "configuration revision %d; converged: %s (%d of %d proxies run it)\n\n", st.ChangeRevision, conv, at, len(st.Proxies))
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NODE\tADDRESS\tVERSION\tREVISION\tSTATE\tREQ/S\t5XX\tDROPPED\tUPDATED\tLAST ERROR")
			for _, p := range st.Proxies {
				state := "current"
				switch {
				case p.FromCache:
					state = "from-cache"
				case p.LastError != "":
					state = "error"
				case p.Revision < st.ChangeRevision:
					state = "behind"
				}
				// The last minute's traffic, as the proxy's heartbeat reports it.
				rate, ratio, dropped := "-", "-", "-"
				if t := p.Traffic; t != nil {
					rate = strconv.FormatFloat(t.RequestRate, 'f', 1, 64)
					ratio = strconv.FormatFloat(t.Ratio5xx*100, 'f', 1, 64) + "%"
					dropped = strconv.FormatUint(t.TelemetryDropped, 10)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", p.NodeID, p.Address, p.Version, p.Revision, state,
					rate, ratio, dropped, time.Since(p.Updated).Round(time.Second).String()+" ago", p.LastError)
			}
			return w.Flush()
		},
	}
}

func ctlPluginCmd(f *ctlFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "plugin", Short: "Manage plugin modules held by the control plane"}
	cmd.AddCommand(&cobra.Command{
		Use:   "push FILE",
		Short: "Upload a .wasm module and print its sha256 (name it in a plugin's sha256 field)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			if !bytes.HasPrefix(data, []byte("\x00asm")) {
				return fmt.Errorf("%s is not a WebAssembly module (no \\0asm header)", args[0])
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			meta, err := c.PushBlob(cmd.Context(), data)
			if err != nil {
				return explain(err, f.server)
			}
			if done, err := f.print(cmd.OutOrStdout(), meta); done {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), meta.SHA256)
			fmt.Fprintf(cmd.ErrOrStderr(), "stored %s: %d bytes in %d chunk(s)\n", args[0], meta.Size, meta.Chunks)
			return nil
		},
	})
	return cmd
}

func ctlRegisterCmd(f *ctlFlags) *cobra.Command {
	var (
		cluster, id, address string
		weight               int
		ttl                  time.Duration
		once                 bool
	)
	cmd := &cobra.Command{
		Use:   "register --cluster NAME --address HOST:PORT",
		Short: "Register a service endpoint under a lease, and keep it registered until interrupted",
		Long: `Register an endpoint of a cluster with discovery: registry. The registration
lives under a lease of --ttl: the command renews it every ttl/3 until it is
interrupted, then deregisters. With --once it registers and exits, and the
endpoint disappears when the lease expires.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cluster == "" || address == "" {
				return errors.New("--cluster and --address are required")
			}
			if id == "" {
				id = address
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			req := api.EndpointRequest{Address: address, Weight: weight, TTL: config.Duration(ttl)}
			ep, err := c.RegisterEndpoint(cmd.Context(), cluster, id, req)
			if err != nil {
				return explain(err, f.server)
			}
			out := cmd.OutOrStdout()
			if done, err := f.print(out, ep); !done {
				fmt.Fprintf(out, "registered %s/%s at %s (lease %x, ttl %ds)\n", cluster, id, address, ep.Lease, ep.TTL)
			} else if err != nil {
				return err
			}
			if once {
				return nil
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			tick := time.NewTicker(max(ttl/3, 500*time.Millisecond))
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					if err := c.DeregisterEndpoint(dctx, cluster, id); err != nil {
						return explain(err, f.server)
					}
					fmt.Fprintf(out, "deregistered %s/%s\n", cluster, id)
					return nil
				case <-tick.C:
					if _, err := c.RegisterEndpoint(ctx, cluster, id, req); err != nil && ctx.Err() == nil {
						fmt.Fprintf(cmd.ErrOrStderr(), "renewing %s/%s: %v\n", cluster, id, explain(err, f.server))
					}
				}
			}
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cluster, "cluster", "", "cluster name")
	fl.StringVar(&address, "address", "", "endpoint host:port")
	fl.StringVar(&id, "id", "", "registration id (default: the address)")
	fl.IntVar(&weight, "weight", 0, "weight, 1 to 10000 (default 1)")
	fl.DurationVar(&ttl, "ttl", 10*time.Second, "lease time to live")
	fl.BoolVar(&once, "once", false, "register once and exit")
	return cmd
}
