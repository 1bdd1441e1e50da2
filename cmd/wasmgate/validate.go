package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/wasmgate/wasmgate/config"
)

func newValidateCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "validate -c FILE",
		Short: "Check a configuration file and print every problem with its field path",
		Long: `Check a configuration file and print every problem at once, one a line,
with its file, line and field path: fields that do not decode, values that
do not validate, and the files it names (certificates, keys, CA bundles,
plugin modules) that are missing or do not load on this machine.

A problem is printed in the same words as by ` + "`ctl apply`" + ` and the control plane's API.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := config.ValidateFile(file); err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), err)
				return &exitError{code: exitInvalid, err: fmt.Errorf("%s is not valid", file)}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", file)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "configuration file (YAML or JSON)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}
