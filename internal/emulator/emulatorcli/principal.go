package emulatorcli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/moduletwin/iothub-module-twin/internal/emulator"
	"github.com/moduletwin/iothub-module-twin/internal/emulator/entra"
)

const principalLong = `principal manages the emulator's local Microsoft Entra ID tenant: app
registrations (service principals) with a client secret and IoT Hub role
assignments. It works on --data-dir whether or not an emulator is serving it,
and a running emulator applies every change at once, to tokens already issued
too (roles are looked up on each request, as IoT Hub does).

Built-in roles (as in Azure):
  "IoT Hub Data Contributor"      every service API operation
  "IoT Hub Data Reader"           read devices, modules and twins
  "IoT Hub Registry Contributor"  read, create, update, delete devices and modules
  "IoT Hub Twin Contributor"      read and write device and module twins`

func newPrincipalCommand(stdout io.Writer, o *options, dirErr error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "principal",
		Short: "Manage the local Microsoft Entra ID tenant's principals and their IoT Hub roles",
		Long:  principalLong,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("principal needs a subcommand: add, list, remove or set-roles")
		},
	}
	dataDir := func() (string, error) {
		if o.dataDir == "" {
			if dirErr != nil {
				return "", usage(dirErr)
			}
			return "", usagef("--data-dir is empty")
		}
		return o.dataDir, nil
	}
	var roles []string
	add := &cobra.Command{
		Use:   "add NAME --role ROLE...",
		Short: "Register a principal and print its AZURE_* settings for eval",
		Long: `add registers an app with a new client secret and the given roles, and prints
shell-ready lines for azidentity's environment credential and for the tools:

  export AZURE_TENANT_ID=…
  export AZURE_CLIENT_ID=…
  export AZURE_CLIENT_SECRET='…'
  export AZURE_AUTHORITY_HOST=https://localhost:8443/
  export IOTHUB_HOSTNAME=localhost:8443
  export IOTHUB_CA_FILE=/path/to/ca.pem

The client secret is printed only here: it is kept as a hash and cannot be
shown again. Use it as: eval "$(iothub-emulator principal add ci --role "IoT Hub Data Contributor")"`,
		Args: exactlyOneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := dataDir()
			if err != nil {
				return err
			}
			host, port, _, err := envEndpoint(cmd, o)
			if err != nil {
				return err
			}
			if _, err := entra.CanonicalRoles(roles); err != nil {
				return usage(err)
			}
			lines, err := emulator.PrincipalLines(dir, host, port, args[0], roles)
			if err != nil {
				return err
			}
			_, err = io.WriteString(stdout, lines)
			return err
		},
	}
	add.Flags().StringArrayVar(&roles, "role", nil, "assign built-in `ROLE` (repeatable)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the principals and their roles (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := dataDir()
			if err != nil {
				return err
			}
			tenant, ps, err := entra.List(dir)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "tenant %s\n", tenant)
			fmt.Fprintln(tw, "NAME\tCLIENT ID\tOBJECT ID\tROLES")
			for _, p := range ps {
				r := strings.Join(p.Roles, ", ")
				if r == "" {
					r = "(none)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, p.ClientID, p.ObjectID, r)
			}
			return tw.Flush()
		},
	}
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a principal: no new tokens, and its tokens lose every role",
		Args:  exactlyOneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := dataDir()
			if err != nil {
				return err
			}
			return entra.Remove(dir, args[0])
		},
	}
	var setRoles []string
	set := &cobra.Command{
		Use:   "set-roles NAME [--role ROLE...]",
		Short: "Replace a principal's roles (none given: no roles)",
		Args:  exactlyOneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := dataDir()
			if err != nil {
				return err
			}
			if _, err := entra.CanonicalRoles(setRoles); err != nil {
				return usage(err)
			}
			_, err = entra.SetRoles(dir, args[0], setRoles)
			return err
		},
	}
	set.Flags().StringArrayVar(&setRoles, "role", nil, "assign built-in `ROLE` (repeatable)")
	cmd.AddCommand(add, list, remove, set)
	return cmd
}

func exactlyOneName(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return usagef("%s takes one principal NAME, got %d arguments", cmd.Name(), len(args))
	}
	return nil
}
