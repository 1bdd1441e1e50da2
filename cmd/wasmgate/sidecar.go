package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/wasmgate/wasmgate/mesh/intercept"
)

func newSidecarCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sidecar",
		Short: "Set up a host or pod for a sidecar: traffic interception",
	}
	cmd.AddCommand(sidecarIptablesCmd())
	return cmd
}

func sidecarIptablesCmd() *cobra.Command {
	var (
		o                     intercept.Options
		excludeIn, excludeOut string
		backend               string
		dryRun, remove        bool
	)
	cmd := &cobra.Command{
		Use:   "iptables --uid U --inbound-port P --outbound-port Q",
		Short: "Redirect the app's outbound TCP and the peers' inbound TCP to the sidecar",
		Long: `Write iptables REDIRECT rules in the nat table of the current network
namespace (run it in the pod's or host's namespace, as root or with
CAP_NET_ADMIN, before the app starts):

  - every inbound TCP connection goes to --inbound-port, except to the ports
    in --exclude-inbound-ports;
  - every outbound TCP connection goes to --outbound-port, except those of
    the sidecar's own user (--uid), to loopback, and to the ports in
    --exclude-outbound-ports;
  - with --dns-port, every DNS query (UDP and TCP to port 53, loopback's
    resolver too) goes to that port, the sidecar's DNS (run --sidecar
    --dns 127.0.0.1:PORT), except the sidecar's own.

The same rules are written for IPv6 with ip6tables when the namespace has
IPv6 (--ipv6). The sidecar reads each connection's original destination
(SO_ORIGINAL_DST).
The rules live in the chains WASMGATE_INBOUND and WASMGATE_OUTPUT; running the
command again replaces them, and --remove takes them out. The iptables
implementation (nft or legacy) is the one the host already uses, unless
--backend names one. --dry-run prints the rules as iptables-restore input.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if o.ExcludeInboundPorts, err = intercept.Ports(excludeIn); err != nil {
				return fmt.Errorf("--exclude-inbound-ports: %w", err)
			}
			if o.ExcludeOutboundPorts, err = intercept.Ports(excludeOut); err != nil {
				return fmt.Errorf("--exclude-outbound-ports: %w", err)
			}
			if !remove {
				if err := o.Validate(); err != nil {
					return err
				}
			}
			if dryRun && !remove {
				out := cmd.OutOrStdout()
				fmt.Fprintln(out, "# iptables-restore --noflush")
				fmt.Fprint(out, intercept.Script(o, false))
				if o.IPv6 {
					fmt.Fprintln(out, "# ip6tables-restore --noflush")
					fmt.Fprint(out, intercept.Script(o, true))
				}
				return nil
			}
			var b intercept.Backend
			switch backend {
			case "", "auto":
				if b, err = intercept.Detect(cmd.Context()); err != nil {
					return err
				}
			case "nft":
				b = intercept.NFT
			case "legacy":
				b = intercept.Legacy
			default:
				return fmt.Errorf("--backend: want auto, nft or legacy, not %q", backend)
			}
			if dryRun {
				fmt.Fprintf(cmd.OutOrStdout(), "would remove the chains %s and %s with %s\n", intercept.InboundChain, intercept.OutboundChain, b.Iptables)
				return nil
			}
			if remove {
				if err := intercept.Remove(cmd.Context(), b, o.IPv6); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed the interception rules (iptables %s)\n", b.Name)
				return nil
			}
			if err := intercept.Apply(cmd.Context(), b, o); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "interception on (iptables %s): inbound to :%d, outbound to :%d, uid %d excluded\n", b.Name, o.InboundPort, o.OutboundPort, o.UID)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&o.UID, "uid", -1, "user id the sidecar runs as; its connections are not redirected")
	fl.IntVar(&o.InboundPort, "inbound-port", 15006, "port of the sidecar's inbound listener")
	fl.IntVar(&o.OutboundPort, "outbound-port", 15001, "port of the sidecar's outbound listener")
	fl.StringVar(&excludeIn, "exclude-inbound-ports", "", "comma-separated ports peers reach directly (admin, ssh)")
	fl.StringVar(&excludeOut, "exclude-outbound-ports", "", "comma-separated ports the app reaches directly (the control plane)")
	fl.StringVar(&backend, "backend", "auto", "iptables implementation: auto, nft or legacy")
	fl.BoolVar(&dryRun, "dry-run", false, "print the rules and change nothing")
	fl.BoolVar(&remove, "remove", false, "remove the rules")
	fl.IntVar(&o.DNSPort, "dns-port", 0, "send the app's DNS queries to this port, the sidecar's DNS (0: leave DNS alone)")
	fl.BoolVar(&o.IPv6, "ipv6", intercept.HostHasIPv6(), "write the rules for IPv6 too (default: when the namespace has IPv6)")
	return cmd
}
