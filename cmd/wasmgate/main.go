// Command wasmgate is the one binary of the project: the proxy, the control
// plane, their operator CLI, the plugin tool chain and the load generator.
package main

import (
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
		Use:           "wasmgate",
		Short:         "A WebAssembly-extensible programmable proxy",
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
	return root
}

// exitError carries a process exit status through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	if e, ok := err.(*exitError); ok {
		return e.code
	}
	return 1
}
