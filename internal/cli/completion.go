package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

// addCompletionCommand adds "completion SHELL", which prints a completion
// script for bash, zsh, fish or powershell.
func addCompletionCommand(root *cobra.Command) {
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			return
		}
	}
	root.CompletionOptions.DisableDefaultCmd = true
	name := root.Name()
	root.AddCommand(&cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print a shell completion script",
		Long: fmt.Sprintf(`Print a script that makes the shell complete %[1]s's flags.

  bash:        source <(%[1]s completion bash)
  zsh:         %[1]s completion zsh > "${fpath[1]}/_%[1]s"
  fish:        %[1]s completion fish > ~/.config/fish/completions/%[1]s.fish
  powershell:  %[1]s completion powershell | Out-String | Invoke-Expression`, name),
		ValidArgs:             []string{"bash", "zsh", "fish", "powershell"},
		Args:                  cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			case "fish":
				return root.GenFishCompletion(out, true)
			default:
				return root.GenPowerShellCompletionWithDesc(out)
			}
		},
	})
}
