package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/resource"
	"github.com/wasmgate/wasmgate/mesh/policy"
)

// ctlMeshCmd holds the mesh policy commands of ctl.
func ctlMeshCmd(f *ctlFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mesh",
		Short: "Mesh policy: apply authorization policies and peer authentications, check who may call whom",
	}
	cmd.AddCommand(ctlMeshCheckCmd(f), ctlMeshApplyCmd(f), ctlMeshStatusCmd(f))
	return cmd
}

func ctlMeshStatusCmd(f *ctlFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the sidecars that follow the control plane, and whether each holds its latest policies and endpoints",
		Long: `Show every sidecar whose discovery stream the control plane serves: its
workload identity and address, the service whose policies it follows and
the services it calls, the revision of the policies it holds, when it was
last sent an update, the configuration its proxy runs, and SYNCED, STALE
with what waits for it, or REJECTED with why its proxy refused the last
configuration (as istioctl proxy-status).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			st, err := c.MeshStatus(cmd.Context())
			if err != nil {
				return explain(err, f.server)
			}
			out := cmd.OutOrStdout()
			if done, err := f.print(out, st); done {
				return err
			}
			synced := 0
			for _, s := range st.Sidecars {
				if s.Synced {
					synced++
				}
			}
			fmt.Fprintf(out, "policy revision %d; %d of %d sidecars synced\n\n", st.PolicyRevision, synced, len(st.Sidecars))
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "IDENTITY\tADDRESS\tSERVICE\tCALLS\tPOLICY REV\tLAST UPDATE\tCONFIG\tSTATUS")
			for _, s := range st.Sidecars {
				id, svc, last, state, conf := s.Identity, "-", "never", "SYNCED", "-"
				if id == "" {
					id = "(token)"
				}
				if s.Namespace != "" {
					svc = s.Service + "." + s.Namespace
				}
				if !s.LastUpdate.IsZero() {
					last = time.Since(s.LastUpdate).Round(time.Second).String() + " ago"
				}
				if r := s.Report; r != nil {
					conf = r.Version
				}
				switch {
				case len(s.Stale) > 0:
					state = "STALE: " + strings.Join(s.Stale, ",")
				case s.Report != nil && s.Report.Error != "":
					state = "REJECTED: " + s.Report.Error
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", id, s.Remote, svc, strings.Join(s.Services, ","), s.PolicyRevision, last, conf, state)
			}
			return w.Flush()
		},
	}
}

// meshCheck is the answer of `ctl mesh check`.
type meshCheck struct {
	From        string   `json:"from"`
	To          string   `json:"to"`
	Method      string   `json:"method"`
	Path        string   `json:"path"`
	Allowed     bool     `json:"allowed"`
	Reason      string   `json:"reason"`
	Policy      string   `json:"policy,omitempty"`
	Rule        int      `json:"rule"`
	AuditPolicy string   `json:"audit_policy,omitempty"`
	Mode        string   `json:"mtls_mode"`
	ModeSource  string   `json:"mtls_mode_source,omitempty"`
	Considered  []string `json:"policies_considered"`
	Revision    int64    `json:"revision"`
}

func ctlMeshCheckCmd(f *ctlFlags) *cobra.Command {
	var (
		trustDomain string
		port        int
		host        string
		headers     []string
		sourceIP    string
		file        string
		tcp         bool
		jwtClaims   string
	)
	cmd := &cobra.Command{
		Use:   "check FROM TO [METHOD PATH]",
		Short: "Say whether a call would be allowed, and by which rule, from the live policy",
		Long: `Evaluate the authorization policies and peer authentications stored in the
control plane for one call, as the destination's sidecar would.

FROM is the caller: a SPIFFE ID, NAMESPACE/SERVICE-ACCOUNT, or
SERVICE-ACCOUNT.NAMESPACE (in --trust-domain), or "none" for a plain-text
caller with no identity. TO is the destination service, SERVICE.NAMESPACE or
NAMESPACE/SERVICE. METHOD and PATH default to GET /.

With -f FILE it evaluates a policy file instead, to try a change before
applying it.

Exit status: 0 allowed, 2 denied, other values as for every ctl command.`,
		Example: `  wasmgate ctl mesh check shop/web payments.payments POST /pay
  wasmgate ctl mesh check spiffe://wasmgate.local/ns/shop/sa/orders payments/payments POST /pay
  wasmgate ctl mesh check shop/web orders.shop GET /admin --jwt-claims '{"iss": "https://idp.example", "sub": "alice", "groups": ["admins"]}'`,
		Args: cobra.RangeArgs(2, 4),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 3 {
				return errors.New("give both METHOD and PATH, or neither")
			}
			principal, err := parseCaller(args[0], trustDomain)
			if err != nil {
				return fmt.Errorf("FROM: %w", err)
			}
			ns, svc, err := parseService(args[1])
			if err != nil {
				return fmt.Errorf("TO: %w", err)
			}
			req := policy.Request{Principal: principal, Method: "GET", Path: "/", Port: port, Host: host}
			if len(args) == 4 {
				req.Method, req.Path = args[2], args[3]
			}
			if req.Host == "" {
				req.Host = svc + "." + ns
			}
			if tcp {
				if len(args) == 4 || host != "" || len(headers) > 0 {
					return errors.New("--tcp: a connection has no METHOD, PATH, --host or --header")
				}
				req = policy.Request{Principal: principal, Port: port, Connection: true}
			}
			if sourceIP != "" {
				if req.SourceIP, err = netip.ParseAddr(sourceIP); err != nil {
					return fmt.Errorf("--source-ip: %w", err)
				}
			}
			hs := headerList{}
			for _, h := range headers {
				k, v, ok := strings.Cut(h, ":")
				if !ok {
					return fmt.Errorf("--header %q: want NAME:VALUE", h)
				}
				hs = append(hs, [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
			}
			req.Headers = hs
			if jwtClaims != "" {
				if tcp {
					return errors.New("--tcp: a connection carries no token")
				}
				if req.Auth, err = authOf(jwtClaims); err != nil {
					return fmt.Errorf("--jwt-claims: %w", err)
				}
			}

			var (
				aps []policy.AuthorizationPolicy
				pas []policy.PeerAuthentication
				rev int64
			)
			if file != "" {
				data, err := os.ReadFile(file)
				if err != nil {
					return err
				}
				doc, err := policy.Parse(data)
				if err != nil {
					return &exitError{code: 4, err: fmt.Errorf("invalid: %s\n  %s", file, strings.ReplaceAll(err.Error(), "\n", "\n  "))}
				}
				aps, pas = doc.AuthorizationPolicies, doc.PeerAuthentications
			} else {
				c, err := f.client()
				if err != nil {
					return err
				}
				if aps, pas, rev, err = livePolicies(cmd.Context(), c); err != nil {
					return explain(err, f.server)
				}
			}
			set, err := policy.Compile(aps)
			if err != nil {
				return fmt.Errorf("the stored policies do not compile: %w", err)
			}
			modes, err := policy.CompileModes(pas)
			if err != nil {
				return fmt.Errorf("the stored peer authentications do not compile: %w", err)
			}
			table := set.For(ns, svc)
			d := table.Evaluate(&req)
			mode := modes.For(ns, svc, port)
			res := meshCheck{
				From: args[0], To: svc + "." + ns, Method: req.Method, Path: req.Path,
				Allowed: d.Allowed, Reason: d.Reason.String(), Policy: d.Policy, Rule: d.Rule, AuditPolicy: d.AuditPolicy,
				Mode: string(mode.Mode), ModeSource: mode.Source, Considered: table.Policies(), Revision: rev,
			}
			if principal == "" && mode.Mode == policy.Strict {
				res.Allowed, res.Policy, res.Rule = false, "", -1
				res.Reason = "plain text refused: mutual TLS is strict"
			}
			if res.Considered == nil {
				res.Considered = []string{}
			}
			out := cmd.OutOrStdout()
			if done, err := f.print(out, res); done {
				if err == nil && !res.Allowed {
					err = &exitError{code: 2, err: errors.New("denied")}
				}
				return err
			}
			verdict := "ALLOW"
			if !res.Allowed {
				verdict = "DENY"
			}
			fmt.Fprintf(out, "%s  %s -> %s  %s %s\n", verdict, args[0], res.To, req.Method, req.Path)
			fmt.Fprintf(out, "  reason: %s", res.Reason)
			if res.Policy != "" {
				fmt.Fprintf(out, " (authorization_policies/%s rules[%d])", res.Policy, res.Rule)
			}
			fmt.Fprintln(out)
			if res.AuditPolicy != "" {
				fmt.Fprintf(out, "  audited by: authorization_policies/%s rules[%d]\n", res.AuditPolicy, d.AuditRule)
			}
			src := "default"
			if res.ModeSource != "" {
				src = "peer_authentications/" + res.ModeSource
			}
			fmt.Fprintf(out, "  mtls: %s (%s)\n", res.Mode, src)
			from := fmt.Sprintf("revision %d", rev)
			if file != "" {
				from = file
			}
			fmt.Fprintf(out, "  policies considered: %s (%s)\n", listOrNone(res.Considered), from)
			if !res.Allowed {
				return &exitError{code: 2, err: errors.New("denied")}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&trustDomain, "trust-domain", "wasmgate.local", "trust domain of a FROM that is not a SPIFFE ID")
	fl.IntVar(&port, "port", 0, "the destination's inbound port, for port rules and port-level mTLS")
	fl.StringVar(&host, "host", "", "Host header (default SERVICE.NAMESPACE)")
	fl.StringArrayVarP(&headers, "header", "H", nil, "request header NAME:VALUE (repeatable)")
	fl.StringVar(&sourceIP, "source-ip", "", "the caller's address, for ip_blocks rules")
	fl.StringVarP(&file, "file", "f", "", "evaluate the policies of this file instead of the live ones (no control plane needed)")
	fl.StringVar(&jwtClaims, "jwt-claims", "", `the claims of the end user's token, as a JSON object, as if a request authentication verified it: iss and sub make the request principal ("ISS/SUB"), aud the audiences, azp the presenter, every claim a request.auth.claims[...] value`)
	fl.BoolVar(&tcp, "tcp", false, "a connection to a service of protocol tcp, not an HTTP request: rules that need HTTP attributes apply as Istio applies them to TCP")
	return cmd
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

// authOf is the end user of a check: the claims of a token, as the
// request authentication hands them to the authorization policy.
func authOf(claims string) (*policy.Auth, error) {
	a := &policy.Auth{}
	if err := json.Unmarshal([]byte(claims), &a.Claims); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	iss, _ := a.Claims["iss"].(string)
	sub, _ := a.Claims["sub"].(string)
	if iss == "" || sub == "" {
		return nil, errors.New("give iss and sub: they are the request principal")
	}
	a.Principal = iss + "/" + sub
	a.Presenter, _ = a.Claims["azp"].(string)
	switch aud := a.Claims["aud"].(type) {
	case string:
		a.Audiences = []string{aud}
	case []any:
		for _, v := range aud {
			if s, ok := v.(string); ok {
				a.Audiences = append(a.Audiences, s)
			}
		}
	}
	return a, nil
}

// headerList is request headers for a check.
type headerList [][2]string

func (h headerList) Get(name string) (string, bool) {
	for _, kv := range h {
		if strings.EqualFold(kv[0], name) {
			return kv[1], true
		}
	}
	return "", false
}

// parseCaller turns FROM into a SPIFFE ID ("" for none).
func parseCaller(s, trustDomain string) (string, error) {
	switch {
	case s == "none" || s == "-":
		return "", nil
	case strings.HasPrefix(s, "spiffe://"):
		if _, _, _, ok := policy.ParseSPIFFE(s); !ok {
			return "", fmt.Errorf("%q is not a workload SPIFFE ID (spiffe://TD/ns/NS/sa/SA)", s)
		}
		return s, nil
	}
	ns, sa, ok := strings.Cut(s, "/")
	if !ok {
		sa, ns, ok = strings.Cut(s, ".")
	}
	if !ok || ns == "" || sa == "" || strings.ContainsAny(ns+sa, "/.") {
		return "", fmt.Errorf("%q is not a SPIFFE ID, NAMESPACE/SERVICE-ACCOUNT, SERVICE-ACCOUNT.NAMESPACE or none", s)
	}
	return policy.SPIFFEID(trustDomain, ns, sa), nil
}

// parseService turns TO into a namespace and a service.
func parseService(s string) (namespace, service string, err error) {
	if ns, svc, ok := strings.Cut(s, "/"); ok && ns != "" && svc != "" && !strings.Contains(svc, "/") {
		return ns, svc, nil
	}
	svc, ns, ok := strings.Cut(strings.TrimSuffix(s, ".svc"), ".")
	if !ok || svc == "" || ns == "" || strings.Contains(ns, ".") {
		return "", "", fmt.Errorf("%q is not SERVICE.NAMESPACE or NAMESPACE/SERVICE", s)
	}
	return ns, svc, nil
}

// livePolicies reads every authorization policy and peer authentication
// from the control plane.
func livePolicies(ctx context.Context, c *api.Client) ([]policy.AuthorizationPolicy, []policy.PeerAuthentication, int64, error) {
	aList, err := c.List(ctx, resource.AuthorizationPolicies)
	if err != nil {
		return nil, nil, 0, err
	}
	pList, err := c.List(ctx, resource.PeerAuthentications)
	if err != nil {
		return nil, nil, 0, err
	}
	set := resource.Set{}
	for _, l := range []*api.ItemList{aList, pList} {
		for _, it := range l.Items {
			ref, err := resource.ParseRef(it.Resource)
			if err != nil {
				return nil, nil, 0, err
			}
			v, err := resource.Decode(ref, it.Value)
			if err != nil {
				return nil, nil, 0, err
			}
			set[ref] = v
		}
	}
	aps, pas := resource.Policies(set)
	return aps, pas, max(aList.Revision, pList.Revision), nil
}

func ctlMeshApplyCmd(f *ctlFlags) *cobra.Command {
	var (
		file string
		o    api.Options
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or replace the authorization policies, peer authentications, outbound traffic policies and Wasm plugins of a file",
		Long: `Apply a policy file: a YAML or JSON document with authorization_policies,
peer_authentications, outbound_traffic_policies and wasm_plugins lists
(see docs/mesh-policy.md and docs/mesh.md). The whole file is
validated first, locally, and nothing is written if any policy is invalid;
then each policy is written as one change, in the order of the file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("-f FILE is required")
			}
			data, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			doc, err := policy.Parse(data)
			if err != nil {
				return &exitError{code: 4, err: fmt.Errorf("invalid: %s: nothing was changed\n  %s", file, strings.ReplaceAll(err.Error(), "\n", "\n  "))}
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			put := func(ref resource.Ref, v any) error {
				b, err := json.Marshal(v)
				if err != nil {
					return err
				}
				res, err := c.Put(cmd.Context(), ref, b, o)
				if err != nil {
					return explain(err, f.server)
				}
				return printChange(cmd, f, res)
			}
			for _, err := range []func() error{
				func() error { return putEach(resource.AuthorizationPolicies, doc.AuthorizationPolicies, put) },
				func() error { return putEach(resource.PeerAuthentications, doc.PeerAuthentications, put) },
				func() error { return putEach(resource.OutboundTrafficPolicies, doc.OutboundTrafficPolicies, put) },
				func() error { return putEach(resource.WasmPlugins, doc.WasmPlugins, put) },
				func() error { return putEach(resource.ServiceRoutes, doc.ServiceRoutes, put) },
				func() error { return putEach(resource.ServiceEntries, doc.ServiceEntries, put) },
				func() error { return putEach(resource.RequestAuthentications, doc.RequestAuthentications, put) },
				func() error { return putEach(resource.RateLimitPolicies, doc.RateLimitPolicies, put) },
			} {
				if err := err(); err != nil {
					return err
				}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&file, "file", "f", "", "policy file (YAML or JSON)")
	fl.BoolVar(&o.DryRun, "dry-run", false, "validate against the control plane only")
	fl.StringVarP(&o.Message, "message", "m", "", "note recorded in the history")
	return cmd
}

// putEach writes every policy of list, a kind's, in order, and stops at
// the first error.
func putEach[T any](kind resource.Kind, list []T, put func(resource.Ref, any) error) error {
	for i := range list {
		p := &list[i]
		if err := put(resource.Ref{Kind: kind, Name: resource.NameOf(p)}, p); err != nil {
			return err
		}
	}
	return nil
}

// printMeshHeader and printMeshRow are the table of `ctl get` for the mesh
// kinds.
func printMeshHeader(w io.Writer, kind resource.Kind) {
	switch kind {
	case resource.AuthorizationPolicies:
		fmt.Fprintln(w, "NAME\tREVISION\tNAMESPACE\tSERVICE\tACTION\tRULES")
		return
	case resource.OutboundTrafficPolicies:
		fmt.Fprintln(w, "NAME\tREVISION\tNAMESPACE\tSERVICE\tMODE")
		return
	case resource.WasmPlugins:
		fmt.Fprintln(w, "NAME\tREVISION\tNAMESPACE\tSERVICE\tMODE\tTYPE\tPRIORITY\tMODULE")
		return
	case resource.ServiceRoutes:
		fmt.Fprintln(w, "NAME\tREVISION\tNAMESPACE\tSERVICE\tRULES\tVERSIONS")
		return
	case resource.ServiceEntries:
		fmt.Fprintln(w, "NAME\tREVISION\tNAMESPACE\tSERVICE\tHOSTS\tPORTS")
		return
	case resource.RequestAuthentications:
		fmt.Fprintln(w, "NAME\tREVISION\tNAMESPACE\tSERVICE\tISSUERS")
		return
	case resource.RateLimitPolicies:
		fmt.Fprintln(w, "NAME\tREVISION\tNAMESPACE\tSERVICE\tTOTAL\tIDENTITY\tOVERRIDES")
		return
	}
	fmt.Fprintln(w, "NAME\tREVISION\tNAMESPACE\tSERVICE\tMODE\tPORTS")
}

func printMeshRow(w io.Writer, rev int64, v any) {
	orAll := func(s string) string {
		if s == "" {
			return "*"
		}
		return s
	}
	switch x := v.(type) {
	case *policy.AuthorizationPolicy:
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%d\n", x.Name, rev, x.Namespace, orAll(x.Service), x.Action, len(x.Rules))
	case *policy.PeerAuthentication:
		mode := string(x.Mode)
		if mode == "" {
			mode = "(inherit)"
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%d\n", x.Name, rev, x.Namespace, orAll(x.Service), mode, len(x.PortLevel))
	case *policy.OutboundTrafficPolicy:
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", x.Name, rev, x.Namespace, orAll(x.Service), x.Mode)
	case *policy.RateLimitPolicy:
		rate := func(r *policy.Rate) string {
			if r == nil {
				return "-"
			}
			return fmt.Sprintf("%d/s", r.RequestsPerSecond)
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%d\n", x.Name, rev, x.Namespace, x.Service, rate(x.Total), rate(x.Identity), len(x.Overrides))
	case *policy.RequestAuthentication:
		var issuers []string
		for _, r := range x.JWTRules {
			issuers = append(issuers, r.Issuer)
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", x.Name, rev, x.Namespace, orAll(x.Service), strings.Join(issuers, ","))
	case *policy.ServiceEntry:
		ports := "*"
		if len(x.Ports) > 0 {
			ports = strings.Trim(strings.Join(strings.Fields(fmt.Sprint(x.Ports)), ","), "[]")
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\n", x.Name, rev, x.Namespace, orAll(x.Service), strings.Join(x.Hosts, ","), ports)
	case *policy.ServiceRoute:
		var versions []string
		for _, r := range x.Rules {
			for _, b := range r.Backends {
				if v := orAll(b.Version); !slices.Contains(versions, v) {
					versions = append(versions, v)
				}
			}
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%d\t%s\n", x.Name, rev, x.Namespace, x.Service, len(x.Rules), strings.Join(versions, ","))
	case *policy.WasmPlugin:
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%d\t%.12s\n", x.Name, rev, x.Namespace, orAll(x.Service), x.Mode, x.Type, x.Priority, x.SHA256)
	}
}
