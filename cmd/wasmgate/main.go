// Command wasmgate is the one binary of the project: the proxy, the control
// plane, their operator CLI, the plugin tool chain and the load generator.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "wasmgate:", err)
		os.Exit(exitCode(err))
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "wasmgate",
		Short: "A WebAssembly-extensible programmable proxy",
		Long: `wasmgate is a WebAssembly-extensible programmable proxy: a fasthttp data
plane, proxy-wasm filters, and configuration kept in etcd by a control plane.

Start with 'wasmgate up': everything on embedded defaults, with a demo.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// The order here is the order of `wasmgate help`.
	root.AddCommand(
		newUpCmd(),
		newRunCmd(),
		newControlPlaneCmd(),
		newCtlCmd(),
		newValidateCmd(),
		newBenchCmd(),
		newPluginCmd(),
		newSidecarCmd(),
		newVersionCmd(),
	)
	addExitCodes(root)
	rejectUnknownSubcommands(root)
	return root
}

// rejectUnknownSubcommands makes every command that only groups others
// (ctl, plugin, ...) fail on a word that is none of them, as the root
// does, instead of printing its help and succeeding.
func rejectUnknownSubcommands(cmd *cobra.Command) {
	if cmd.HasSubCommands() && cmd.Run == nil && cmd.RunE == nil {
		cmd.Args = cobra.ArbitraryArgs
		cmd.RunE = func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unknown command %q for %q (see '%s --help')", args[0], c.CommandPath(), c.CommandPath())
			}
			return c.Help()
		}
	}
	for _, c := range cmd.Commands() {
		rejectUnknownSubcommands(c)
	}
}

// Exit statuses, the same for every command.
const (
	exitOK          = 0
	exitFailure     = 1
	exitDifferences = 2
	exitConflict    = 3
	exitInvalid     = 4
	exitDenied      = 5
	exitNotFound    = 6
)

// exitCodesHelp is the table of exit statuses, in every command's help
// and in docs/exit-codes.md.
const exitCodesHelp = `Exit status (the same for every command):
  0  success; for 'ctl diff', no differences
  1  any other error: a mistyped command or flag, a server that cannot be
     reached, an address in use, another 'up' running in the folder, a
     'bench' run that ended early
  2  'ctl diff': the local configuration differs from the live one;
     'ctl mesh check': the call would be denied
  3  'ctl': conflict, the configuration changed since the revision given
  4  invalid input: a configuration that does not validate or cannot be
     read (validate, run -c, run --sidecar, ctl apply/diff/delete/rollback), a plugin
     module the host would not load (plugin inspect/test)
  5  'ctl': not authenticated or not allowed
  6  'ctl': not found, such as a resource, or a revision at which no
     change was made (ctl rollback)`

// addExitCodes appends the table of exit statuses to the help of cmd and
// of every command below it.
func addExitCodes(cmd *cobra.Command) {
	long := cmd.Long
	if long == "" {
		long = cmd.Short
	}
	cmd.Long = long + "\n\n" + exitCodesHelp
	for _, c := range cmd.Commands() {
		addExitCodes(c)
	}
}

// exitError carries a process exit status through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return exitFailure
}
