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
	"go.yaml.in/yaml/v3"

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
	if tok == "" {
		// Read here, never as the flag's default: a default is printed
		// by --help.
		tok = os.Getenv("WASMGATE_TOKEN")
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
			return fmt.Errorf("cannot reach the control plane at %s (is `wasmgate up` or `wasmgate controlplane` running? set --server or WASMGATE_SERVER): %w", server, err)
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
		if strings.Contains(ae.Body.Message, "change at revision") {
			b.WriteString(" ('wasmgate ctl history' lists the revisions of changes)")
		}
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
		return exitConflict
	case http.StatusUnprocessableEntity, http.StatusBadRequest:
		return exitInvalid
	case http.StatusUnauthorized, http.StatusForbidden:
		return exitDenied
	case http.StatusNotFound:
		return exitNotFound
	}
	return exitFailure
}

// invalidInput gives an error reading or decoding a configuration the
// exit status of an invalid configuration.
func invalidInput(err error) error {
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	return &exitError{code: exitInvalid, err: err}
}

func newCtlCmd() *cobra.Command {
	f := &ctlFlags{}
	cmd := &cobra.Command{
		Use:   "ctl",
		Short: "Operate the control plane: apply, get, delete, diff, history, rollback, status, plugins, endpoints",
		Long: `Operate the control plane through its admin API (--server, or
$WASMGATE_SERVER) with a bearer token (--token, --token-file, or
$WASMGATE_TOKEN). 'wasmgate up' and 'wasmgate controlplane' write an admin
token to their folder (.wasmgate/controlplane/admin.token for up).

Revisions: every change is made at one revision, the number that apply
prints, history lists, rollback takes, status and diff show.`,
	}
	server := os.Getenv("WASMGATE_SERVER")
	if server == "" {
		server = "http://127.0.0.1:9900"
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.server, "server", server, "admin API base URL ($WASMGATE_SERVER when set)")
	pf.StringVar(&f.token, "token", "", "API bearer token (default $WASMGATE_TOKEN)")
	pf.StringVar(&f.tokenFile, "token-file", "", "read the API token from this file")
	pf.StringVar(&f.caFile, "ca", "", "CA bundle that signs the API's certificate (PEM)")
	pf.StringVarP(&f.output, "output", "o", "table", "output: table, json or yaml")
	cmd.AddCommand(
		ctlApplyCmd(f), ctlGetCmd(f), ctlDeleteCmd(f), ctlDiffCmd(f), ctlHistoryCmd(f),
		ctlRollbackCmd(f), ctlStatusCmd(f), ctlPluginCmd(f), ctlRegisterCmd(f),
		ctlMeshCmd(f), ctlTokenCmd(f), ctlCACmd(f),
	)
	return cmd
}

// bundle is the configuration that `ctl apply` and `ctl diff` send: a
// file as written, or the files of a directory merged into one document.
type bundle struct {
	// raw is the document to send, and name its name in errors: the
	// file's, or empty for the merged files of a directory.
	raw  []byte
	name string
	// cfg is every file's resources, merged.
	cfg *config.Config
	// problems are each file's decode errors, proxy-local fields and
	// names used twice, with the file's name and line.
	problems config.Errors
	// origin is, for each kind, the file and index in it of each resource
	// of the merged document.
	origin map[resource.Kind][]origin
}

type origin struct {
	doc   *config.Document
	index int
}

// readBundle reads a file, or every .yaml, .yml and .json file of a
// directory (in name order), as one document. Each file is decoded by the
// control plane's decoder, so its problems read as the control plane's
// answer would.
func readBundle(path string) (*bundle, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	var files []string
	if st.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, err
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
			return nil, fmt.Errorf("%s holds no .yaml, .yml or .json file", path)
		}
	} else {
		files = []string{path}
	}
	b := &bundle{cfg: &config.Config{}, origin: map[resource.Kind][]origin{}}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		doc, problems := api.DecodeBundleDocument(data, file)
		b.problems = append(b.problems, doc.Report(problems)...)
		b.raw, b.name = data, file
		cfg := doc.Config
		if cfg == nil {
			continue
		}
		b.cfg.Listeners = append(b.cfg.Listeners, cfg.Listeners...)
		b.cfg.VirtualHosts = append(b.cfg.VirtualHosts, cfg.VirtualHosts...)
		b.cfg.Clusters = append(b.cfg.Clusters, cfg.Clusters...)
		b.cfg.Plugins = append(b.cfg.Plugins, cfg.Plugins...)
		b.cfg.Certificates = append(b.cfg.Certificates, cfg.Certificates...)
		for kind, n := range map[resource.Kind]int{resource.Listeners: len(cfg.Listeners), resource.VirtualHosts: len(cfg.VirtualHosts),
			resource.Clusters: len(cfg.Clusters), resource.Plugins: len(cfg.Plugins), resource.Certificates: len(cfg.Certificates)} {
			for i := range n {
				b.origin[kind] = append(b.origin[kind], origin{doc, i})
			}
		}
	}
	if len(files) > 1 {
		b.name = ""
		b.raw, err = json.Marshal(b.cfg)
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

// locate names a field of the merged document of a directory as the field
// of the file it came from, with the file's name and line.
func (b *bundle) locate(fe *api.FieldError) {
	if b.name != "" || fe.DocumentPath == "" {
		return
	}
	open := strings.IndexByte(fe.DocumentPath, '[')
	end := strings.IndexByte(fe.DocumentPath, ']')
	if open < 0 || end < open {
		return
	}
	i, err := strconv.Atoi(fe.DocumentPath[open+1 : end])
	list := b.origin[resource.Kind(fe.DocumentPath[:open])]
	if err != nil || i < 0 || i >= len(list) {
		return
	}
	o := list[i]
	fe.DocumentPath = fmt.Sprintf("%s[%d]%s", fe.DocumentPath[:open], o.index, fe.DocumentPath[end+1:])
	fe.File, fe.Line = o.doc.Name, o.doc.Line(fe.DocumentPath)
}

// invalid prints each problem of a document on a line of its own, as
// `wasmgate validate` does, and returns the exit status of an invalid
// configuration.
func invalid(cmd *cobra.Command, msg string, problems []string) error {
	for _, p := range problems {
		fmt.Fprintln(cmd.ErrOrStderr(), p)
	}
	return &exitError{code: ctlExitCode(http.StatusUnprocessableEntity), err: errors.New("invalid: " + msg)}
}

// checkLocal refuses a directory whose files have problems of their own,
// before anything is sent. A single file is sent as it is: the control
// plane answers with its problems and those of what it would make.
func (b *bundle) checkLocal(cmd *cobra.Command) error {
	if len(b.problems) == 0 {
		return nil
	}
	lines := make([]string, len(b.problems))
	for i, fe := range b.problems {
		lines[i] = fe.Error()
	}
	return invalid(cmd, "the configuration does not decode; nothing was changed", lines)
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
		fmt.Fprintf(out, "unchanged: the configuration is the one of revision %d\n", res.Revision)
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
				return &exitError{code: exitInvalid, err: errors.New("-f FILE|DIR is required")}
			}
			b, err := readBundle(file)
			if err != nil {
				return invalidInput(err)
			}
			if b.name == "" {
				if err := b.checkLocal(cmd); err != nil {
					return err
				}
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			o.Document = b.name
			res, err := c.Apply(cmd.Context(), b.raw, o)
			var ae *api.Error
			if errors.As(err, &ae) && ae.Status == http.StatusUnprocessableEntity {
				lines := make([]string, len(ae.Body.Errors))
				for i := range ae.Body.Errors {
					b.locate(&ae.Body.Errors[i])
					lines[i] = ae.Body.Errors[i].String()
				}
				return invalid(cmd, ae.Body.Message, lines)
			}
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
					fmt.Fprintf(out, "# revision %d (the latest change)\n", doc.ChangeRevision)
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
	case resource.AuthorizationPolicies, resource.PeerAuthentications, resource.OutboundTrafficPolicies, resource.WasmPlugins, resource.ServiceRoutes, resource.ServiceEntries, resource.RequestAuthentications, resource.RateLimitPolicies:
		printMeshHeader(w, kind)
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
		default:
			printMeshRow(w, it.Revision, v)
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
				return &exitError{code: exitInvalid, err: errors.New("-f FILE|DIR is required")}
			}
			b, err := readBundle(file)
			if err != nil {
				return invalidInput(err)
			}
			if err := b.checkLocal(cmd); err != nil {
				return err
			}
			local := b.cfg
			// The live private keys are redacted: certificates are not
			// compared.
			local.Certificates = nil
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
				switch {
				case a == "":
					fmt.Fprintf(out, "--- live %s (none)\n+++ local %s (new)\n", r, r)
				case b == "":
					fmt.Fprintf(out, "--- live %s (revision %d)\n+++ local %s (deleted with --prune)\n", r, doc.Revisions[r.String()], r)
				default:
					fmt.Fprintf(out, "--- live %s (revision %d)\n+++ local %s\n", r, doc.Revisions[r.String()], r)
				}
				for _, l := range hunks(lineDiff(splitLines(a), splitLines(b)), 3) {
					fmt.Fprintln(out, l)
				}
			}
			if differ == 0 {
				fmt.Fprintf(out, "no differences from revision %d\n", doc.ChangeRevision)
				return nil
			}
			return &exitError{code: exitDifferences, err: fmt.Errorf("%d resource(s) differ from revision %d", differ, doc.ChangeRevision)}
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "configuration file or directory")
	cmd.Flags().BoolVar(&prune, "prune", false, "also show live resources that the local configuration does not hold")
	return cmd
}

// yamlOf is a resource as YAML for a diff, without its empty fields
// (request_headers: {} and the like), which say nothing.
func yamlOf(v any) string {
	if v == nil {
		return ""
	}
	b, err := resource.Encode(v)
	if err != nil {
		return err.Error()
	}
	var n yaml.Node
	if err := yaml.Unmarshal(b, &n); err == nil {
		dropEmpty(&n)
		if b2, err := yaml.Marshal(&n); err == nil {
			b = b2
		}
	}
	y, err := api.JSONToYAML(b)
	if err != nil {
		return string(b)
	}
	return string(y)
}

// dropEmpty removes, at any depth, the fields of a mapping whose value is
// null, an empty mapping or an empty list, keeping the others in order.
func dropEmpty(n *yaml.Node) {
	for _, c := range n.Content {
		dropEmpty(c)
	}
	if n.Kind != yaml.MappingNode {
		return
	}
	kept := n.Content[:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		v := n.Content[i+1]
		empty := (v.Kind == yaml.MappingNode || v.Kind == yaml.SequenceNode) && len(v.Content) == 0 ||
			v.Kind == yaml.ScalarNode && v.Tag == "!!null"
		if !empty {
			kept = append(kept, n.Content[i], v)
		}
	}
	n.Content = kept
}

// hunks keeps the changed lines of a line diff and up to ctx unchanged
// lines around each. Each hunk that does not start the resource opens with
// "@@" and the name of the list item it is in ("@@ name: r5"), as diff -F
// names a function.
func hunks(lines []string, ctx int) []string {
	keep := make([]bool, len(lines))
	for i, l := range lines {
		if strings.HasPrefix(l, "  ") {
			continue
		}
		for j := max(0, i-ctx); j <= min(len(lines)-1, i+ctx); j++ {
			keep[j] = true
		}
	}
	var out []string
	for i, l := range lines {
		if !keep[i] {
			continue
		}
		if i > 0 && !keep[i-1] {
			out = append(out, strings.TrimSpace("@@ "+enclosingName(lines, i)))
		}
		out = append(out, l)
	}
	return out
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
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			out = append(out, "- "+a[i])
			i++
		default:
			out = append(out, "+ "+b[j])
			j++
		}
	}
	return out
}

// enclosingName finds the "name: X" of the list item that holds lines[i],
// or "".
func enclosingName(lines []string, i int) string {
	indent := func(l string) int { return len(l) - len(strings.TrimLeft(l[2:], " -")) - 2 }
	limit := indent(lines[i])
	for j := i - 1; j >= 0; j-- {
		// A list item's fields start where its "- name" does; the name of
		// an enclosing item is further left.
		l := lines[j]
		if indent(l) > limit {
			continue
		}
		if t := strings.TrimLeft(l[2:], " -"); strings.HasPrefix(t, "name: ") {
			return t
		}
		limit = min(limit, indent(l))
	}
	return ""
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
		Long: `Return the configuration to what it was right after the change made at
REVISION, as a new change recorded in the history. REVISION is one that
'wasmgate ctl history' lists; any other is not found (exit status 6).`,
		Args: cobra.ExactArgs(1),
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
			runs, err := changeRevisions(cmd.Context(), c, st)
			if err != nil {
				return explain(err, f.server)
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
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.NodeID, p.Address, p.Version, runs(p.Revision), state,
					rate, ratio, dropped, time.Since(p.Updated).Round(time.Second).String()+" ago", p.LastError)
			}
			return w.Flush()
		},
	}
}

// changeRevisions returns how to show the configuration a proxy runs: a
// proxy reports the etcd revision it read, which registrations and other
// writes move past the revision of the latest change; it runs the
// configuration of the latest change made at or before it.
func changeRevisions(ctx context.Context, c *api.Client, st *api.Status) (func(int64) string, error) {
	var h *api.HistoryList
	for _, p := range st.Proxies {
		if p.Revision > 0 && p.Revision < st.ChangeRevision && h == nil {
			var err error
			if h, err = c.History(ctx, 0, false); err != nil {
				return nil, err
			}
		}
	}
	return func(rev int64) string {
		switch {
		case rev <= 0:
			return "-"
		case rev >= st.ChangeRevision:
			return strconv.FormatInt(st.ChangeRevision, 10)
		}
		if h != nil {
			for _, e := range h.Items { // newest first
				if e.Revision <= rev {
					return strconv.FormatInt(e.Revision, 10)
				}
			}
		}
		return "older than the history"
	}, nil
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
