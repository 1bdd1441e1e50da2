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
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := config.LoadFile(file); err != nil {
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
