package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wasmgate/wasmgate/config"
	"github.com/wasmgate/wasmgate/controlplane/api"
	"github.com/wasmgate/wasmgate/controlplane/ca"
)

// ctlTokenCmd manages the join tokens that proxies get their first
// workload certificate with.
func ctlTokenCmd(f *ctlFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage join tokens: a proxy's credential for its first workload certificate"}
	var (
		ns, sa string
		ttl    time.Duration
		uses   int
	)
	create := &cobra.Command{
		Use:   "create",
		Short: "Make a join token for one identity (spiffe://<trust-domain>/ns/N/sa/S)",
		Long: `Make a join token for one identity. The token is printed once: the control
plane keeps only its hash. Pass it to the proxy with
wasmgate run --join-token TOKEN (or --join-token-file FILE).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			tc, err := c.CreateToken(cmd.Context(), api.TokenRequest{Namespace: ns, ServiceAccount: sa, TTL: durationFlag(ttl), Uses: uses})
			if err != nil {
				return explain(err, f.server)
			}
			out := cmd.OutOrStdout()
			if done, err := f.print(out, tc); done {
				return err
			}
			fmt.Fprintln(out, tc.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "join token %s for %s: %d use(s), expires %s\n", tc.Info.ID, tc.Info.SPIFFEID,
				tc.Info.Uses, tc.Info.ExpiresAt.Local().Format(time.RFC3339))
			return nil
		},
	}
	create.Flags().StringVar(&ns, "namespace", "", "namespace of the identity (required)")
	create.Flags().StringVar(&sa, "service-account", "", "service account of the identity (required)")
	create.Flags().DurationVar(&ttl, "ttl", ca.DefaultTokenTTL, "how long the token may be used")
	create.Flags().IntVar(&uses, "uses", 1, "how many certificates the token may get")
	_ = create.MarkFlagRequired("namespace")
	_ = create.MarkFlagRequired("service-account")

	revoke := &cobra.Command{
		Use:   "revoke ID|TOKEN...",
		Short: "Revoke join tokens, by ID or by the token itself",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			for _, a := range args {
				if err := c.RevokeToken(cmd.Context(), a); err != nil {
					return explain(err, f.server)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "revoked %s\n", ca.TokenID(a))
			}
			return nil
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List join tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			items, err := c.Tokens(cmd.Context())
			if err != nil {
				return explain(err, f.server)
			}
			out := cmd.OutOrStdout()
			if done, err := f.print(out, api.TokenList{Items: items}); done {
				return err
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tIDENTITY\tUSED\tEXPIRES\tCREATED BY")
			for _, t := range items {
				exp := t.ExpiresAt.Local().Format(time.RFC3339)
				if time.Now().After(t.ExpiresAt) {
					exp += " (expired)"
				}
				fmt.Fprintf(w, "%s\t%s\t%d/%d\t%s\t%s\n", t.ID, t.SPIFFEID, t.Used, t.Uses, exp, t.CreatedBy)
			}
			return w.Flush()
		},
	}
	cmd.AddCommand(create, revoke, list)
	return cmd
}

func durationFlag(d time.Duration) config.Duration { return config.Duration(d) }

// ctlCACmd shows and rotates the mesh's certificate authority.
func ctlCACmd(f *ctlFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "The mesh's certificate authority: status and root rotation"}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the CA, the trust bundle, the rotation's phase and every proxy's certificate",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			st, err := c.CAStatus(cmd.Context())
			if err != nil {
				return explain(err, f.server)
			}
			if done, err := f.print(cmd.OutOrStdout(), st); done {
				return err
			}
			return printCAStatus(cmd.OutOrStdout(), st)
		},
	}
	var (
		force, all bool
		timeout    time.Duration
	)
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Take the next step of a root rotation (add the new root, activate it, remove the old one)",
		Long: `Rotate the mesh's root in three steps, none of which fails a request:

  1. add       a new root joins the trust bundle; the old root still signs
  2. activate  the new root signs; every proxy renews its certificate from it
  3. remove    the old root leaves the trust bundle

Each call takes one step, once every proxy has caught up with the step
before (see ctl ca status); --all takes every step, waiting for the proxies
in between, up to --timeout. --force takes a step without waiting.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			st, err := c.Rotate(ctx, force)
			if err != nil {
				return explain(err, f.server)
			}
			fmt.Fprintf(out, "rotation: phase %s\n", st.Phase)
			for all && st.Phase != ca.PhaseStable {
				if st, err = rotateWhenReady(ctx, c, out); err != nil {
					return explain(err, f.server)
				}
				fmt.Fprintf(out, "rotation: phase %s\n", st.Phase)
			}
			if done, err := f.print(out, st); done {
				return err
			}
			return printCAStatus(out, st)
		},
	}
	rotate.Flags().BoolVar(&force, "force", false, "take the step even though proxies have not caught up")
	rotate.Flags().BoolVar(&all, "all", false, "take every step, waiting for the proxies in between")
	rotate.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "with --all, how long to wait for the proxies in all")
	cmd.AddCommand(status, rotate)
	return cmd
}

// rotateWhenReady waits until no proxy is pending, then takes the next
// step.
func rotateWhenReady(ctx context.Context, c *api.Client, out io.Writer) (ca.Status, error) {
	last := ""
	for {
		st, err := c.CAStatus(ctx)
		if err != nil {
			return st, err
		}
		if len(st.Pending) == 0 {
			st, err = c.Rotate(ctx, false)
			var ae *api.Error
			if errors.As(err, &ae) && ae.Body.Code == "pending" {
				continue
			}
			return st, err
		}
		if msg := strings.Join(st.Pending, ", "); msg != last {
			fmt.Fprintf(out, "waiting for %d proxies: %s\n", len(st.Pending), msg)
			last = msg
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("proxies still pending when the timeout passed: %s", strings.Join(st.Pending, ", "))
		case <-time.After(time.Second):
		}
	}
}

func printCAStatus(out io.Writer, st ca.Status) error {
	fmt.Fprintf(out, "trust domain %s; rotation phase %s; bundle revision %d; certificate lifetime %s\n", st.TrustDomain, st.Phase, st.BundleRevision, st.Lifetime)
	fmt.Fprintf(out, "next `ctl ca rotate`: %s\n\n", st.Next)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "AUTHORITY\tSIGNING\tSUBJECT\tROOT\tEXPIRES")
	for _, a := range st.Authorities {
		signing := "no"
		if a.Signing {
			signing = "yes"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", a.ID, signing, a.Subject, a.Root, a.NotAfter.Local().Format("2006-01-02"))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "PROXY\tIDENTITY\tSERIAL\tEXPIRES IN\tAUTHORITY\tBUNDLE\tSTATE")
	pending := map[string]bool{}
	for _, p := range st.Pending {
		pending[p] = true
	}
	for _, p := range st.Proxies {
		state := "current"
		switch {
		case time.Now().After(p.NotAfter):
			state = "expired"
		case pending[p.Proxy]:
			state = "pending"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", p.Proxy, p.ID, p.Serial, time.Until(p.NotAfter).Round(time.Second), p.Authority, p.BundleRevision, state)
	}
	return w.Flush()
}
