// Package updatetwin implements update-module-twin: read a module twin,
// patch (or replace) its desired properties and tags with optimistic
// concurrency, print the twin before and after, and optionally wait until
// the module acknowledges the new desired properties.
package updatetwin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/moduletwin/iothub-module-twin/internal/cli"
	"github.com/moduletwin/iothub-module-twin/internal/cli/servicecmd"
	"github.com/moduletwin/iothub-module-twin/internal/connstr"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
	"github.com/moduletwin/iothub-module-twin/internal/registry"
)

// defaultPollInterval spaces the twin reads of --wait-ack.
const defaultPollInterval = 500 * time.Millisecond

// Options are the command's dependencies and flag values.
type Options struct {
	Env    *cli.Env
	Common cli.Common
	servicecmd.ModuleFlags

	Desired string   // JSON, @FILE or -
	Sets    []string // PATH=VALUE for desired properties
	Tags    string   // JSON, @FILE or -
	SetTags []string // PATH=VALUE for tags
	ETag    string
	Force   bool
	Replace bool
	WaitAck time.Duration
	// RetryTimeout bounds the time spent retrying writes that lost a race
	// with another writer (412); 0 means no retry.
	RetryTimeout time.Duration

	// PollInterval spaces the twin reads while waiting for
	// acknowledgements (defaultPollInterval when zero).
	PollInterval time.Duration

	desiredPatch map[string]json.RawMessage // nil when no desired change
	tagsPatch    map[string]json.RawMessage // nil when no tags change
}

// Command returns the update-module-twin command; cli.Main runs it.
func Command(env *cli.Env) *cobra.Command { return NewCmd(env, nil) }

// NewCmd builds the command. runF, when not nil, replaces the run
// function; it receives options whose patches are already built and
// validated.
func NewCmd(env *cli.Env, runF func(context.Context, *Options) error) *cobra.Command {
	opts := &Options{Env: env}
	cmd := &cobra.Command{
		Use:   "update-module-twin",
		Short: "Update a module twin's desired properties and tags",
		Long: `Read a module twin, update its desired properties and/or tags, and print the
twin before and after the update.

The change is given as a JSON object (--desired, --tags: inline, @FILE, or -
for stdin) and/or as PATH=VALUE pairs (--set, --set-tag; repeatable). PATH
is a dotted path into the document; VALUE is taken as JSON when it parses as
JSON (122, true, "text", {"a":1}) and as a string otherwise; null removes the
member. Everything given is merged into one patch and checked against IoT
Hub's rules before it is sent.

By default the patch is sent with the etag just read (If-Match), and if the
twin changed in between (412) it is read again and the patch retried after a
short random pause that doubles with each retry (50 ms at first, at most
2 s), for up to --retry-timeout (default 1m) in all. With
--etag the write succeeds only if the twin still has that etag. With --force
it succeeds whatever the twin's version. --replace replaces all desired
properties instead of merging (tags are still merged).

--wait-ack waits until the module acknowledges every desired property set by
the update in its reported properties, following IoT Plug and Play's
writable-property convention: {"<name>": {"value": …, "ac": 200, "av": <desired
$version>}} (receive-twin-patch --ack writes this). Removed properties are not
waited for.

The hub is named by a service connection string of a shared access policy
with the ServiceConnect permission (for example iothubowner or service),
taken from $` + cli.EnvConnectionString + ` or --connection-string-file.

` + cli.ExitStatusHelp,
		Example: `  update-module-twin --set telemetryInterval=122
  update-module-twin --desired '{"telemetryInterval": 122, "mode": "eco"}' --set-tag site=lab-1
  update-module-twin --desired @desired.json --replace --output json
  update-module-twin --set mode=null --wait-ack 30s
  echo '{"telemetryInterval":60}' | update-module-twin --desired - --etag AAAAAAAAAAI=`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := opts.prepare(cmd.Context()); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return Run(cmd.Context(), opts)
		},
	}
	servicecmd.AddModuleFlags(cmd, &opts.ModuleFlags)
	f := cmd.Flags()
	f.StringVar(&opts.Desired, "desired", "", "desired properties to merge: a `JSON` object, @FILE, or - for stdin")
	f.StringArrayVar(&opts.Sets, "set", nil, "set the desired property at `PATH=VALUE` (repeatable; VALUE null removes it)")
	f.StringVar(&opts.Tags, "tags", "", "tags to merge: a `JSON` object, @FILE, or - for stdin")
	f.StringArrayVar(&opts.SetTags, "set-tag", nil, "set the tag at `PATH=VALUE` (repeatable; VALUE null removes it)")
	f.StringVar(&opts.ETag, "etag", "", "update only if the twin's etag is still `ETAG` (fail if it changed)")
	f.BoolVar(&opts.Force, "force", false, "update whatever the twin's current version (If-Match: *)")
	f.BoolVar(&opts.Replace, "replace", false, "replace all desired properties instead of merging")
	f.DurationVar(&opts.WaitAck, "wait-ack", 0, "after updating, wait up to `DURATION` (e.g. 30s) for the module to acknowledge")
	f.DurationVar(&opts.RetryTimeout, "retry-timeout", defaultRetryTimeout,
		"keep retrying for up to `DURATION` when another writer changes the twin between read and write (0: no retry)")
	cmd.MarkFlagsMutuallyExclusive("etag", "force")
	cli.AddCommonFlags(cmd, &opts.Common, connstr.Service, cli.EnvConnectionString)
	return cmd
}

// prepare validates the flags and builds the patches; every error is a
// usage error and nothing has been sent yet.
func (o *Options) prepare(ctx context.Context) error {
	if err := o.ModuleFlags.Validate(); err != nil {
		return err
	}
	if o.Desired == "" && len(o.Sets) == 0 && o.Tags == "" && len(o.SetTags) == 0 {
		return cli.Usagef("nothing to update: give --desired, --set, --tags or --set-tag")
	}
	stdinUsers := 0
	for _, v := range []string{o.Desired, o.Tags, o.Common.ConnectionStringFile} {
		if v == "-" {
			stdinUsers++
		}
	}
	if stdinUsers > 1 {
		return cli.Usagef("only one of --desired, --tags and --connection-string-file can read stdin (-)")
	}
	if o.WaitAck < 0 {
		return cli.Usagef("--wait-ack: duration must be positive")
	}
	if o.RetryTimeout < 0 {
		return cli.Usagef("--retry-timeout: duration must not be negative")
	}
	if o.Replace && o.Desired == "" && len(o.Sets) == 0 {
		return cli.Usagef("--replace needs the new desired properties (--desired or --set)")
	}

	var err error
	var dropped []string
	if o.desiredPatch, dropped, err = desiredDoc.build(ctx, o.Env, o.Desired, o.Sets); err != nil {
		return cli.Usage(err)
	}
	for _, k := range dropped {
		fmt.Fprintf(o.Env.Stderr, "note: ignoring %q in --desired: the hub maintains it\n", k)
	}
	if o.tagsPatch, dropped, err = tagsDoc.build(ctx, o.Env, o.Tags, o.SetTags); err != nil {
		return cli.Usage(err)
	}
	for _, k := range dropped {
		fmt.Fprintf(o.Env.Stderr, "note: ignoring %q in --tags: the hub maintains it\n", k)
	}
	if o.Replace {
		if nulls := nullPaths("", o.desiredPatch); len(nulls) > 0 {
			return cli.Usagef("--replace: desired property %q is null; leave it out to remove it", slices.Min(nulls))
		}
	}
	if o.WaitAck > 0 && len(ackKeys(o.desiredPatch)) == 0 {
		return cli.Usagef("--wait-ack: the update sets no desired property to wait for")
	}
	return nil
}

// Report is what --output json prints.
type Report struct {
	Before       iothub.Twin                `json:"before"`
	After        iothub.Twin                `json:"after"`
	Acknowledged map[string]json.RawMessage `json:"acknowledged,omitempty"`
}

// Run reads the twin, writes the update and prints the result.
func Run(ctx context.Context, o *Options) error {
	client, cs, err := servicecmd.NewClient(ctx, o.Env, &o.Common)
	if err != nil {
		return err
	}
	target := servicecmd.Target{Host: cs.HostName, Permission: servicecmd.ServiceConnect,
		DeviceID: o.DeviceID, ModuleID: o.ModuleID, SuggestCreate: true}
	name := fmt.Sprintf("module twin %s/%s", o.DeviceID, o.ModuleID)

	before, err := client.GetModuleTwin(ctx, o.DeviceID, o.ModuleID)
	if err != nil {
		return fmt.Errorf("read %s: %w", name, target.Explain(err))
	}
	var after iothub.Twin
	started := time.Now()
	deadline := started.Add(o.RetryTimeout)
	var pauses backoff
	for attempt := 1; ; attempt++ {
		etag := before.ETag
		switch {
		case o.Force:
			etag = "*"
		case o.ETag != "":
			etag = o.ETag
		}
		after, err = o.write(ctx, client, before, etag)
		if err == nil {
			break
		}
		if registry.StatusCode(err) != http.StatusPreconditionFailed || o.Force {
			return fmt.Errorf("update %s: %w", name, target.Explain(err))
		}
		if o.ETag != "" {
			return cli.WithHint(
				fmt.Errorf("update %s: the twin changed: its etag is no longer %s (it was %s when read)", name, o.ETag, before.ETag),
				"run again without --etag to update the current version, or with --force to overwrite whatever is there")
		}
		pause := pauses.next()
		if time.Now().Add(pause).After(deadline) {
			return cli.WithHint(
				fmt.Errorf("update %s: the twin kept changing while it was updated; gave up after %d %s in %s (--retry-timeout %s)",
					name, attempt, plural(attempt, "attempt", "attempts"), time.Since(started).Round(time.Millisecond), o.RetryTimeout),
				"other writers keep changing this twin; run again, or allow more time with --retry-timeout")
		}
		fmt.Fprintf(o.Env.Stderr, "note: the twin changed after it was read (412 Precondition Failed); reading it again and retrying in %s (retry %d)\n",
			pause.Round(time.Millisecond), attempt)
		if !sleep(ctx, pause) {
			return ctx.Err()
		}
		if before, err = client.GetModuleTwin(ctx, o.DeviceID, o.ModuleID); err != nil {
			return fmt.Errorf("read %s again: %w", name, target.Explain(err))
		}
	}

	report := Report{Before: before, After: after}
	if !o.Common.JSON() {
		printTwin(o.Env.Stdout, "before", before)
		printTwin(o.Env.Stdout, "after", after)
	}
	var waitErr error
	if o.WaitAck > 0 {
		report.Acknowledged, waitErr = o.waitForAcks(ctx, client, target, after)
	}
	if o.Common.JSON() {
		if err := cli.WriteJSON(o.Env.Stdout, report); err != nil {
			return err
		}
	} else if len(report.Acknowledged) > 0 && waitErr == nil {
		printAcks(o.Env.Stdout, report.Acknowledged, iothub.DocVersion(after.Properties.Desired))
	}
	return waitErr
}

// write sends the update: a PATCH of the patches, or with --replace a PUT
// of the new desired properties and the current tags merged with --tags.
func (o *Options) write(ctx context.Context, client *registry.Client, current iothub.Twin, etag string) (iothub.Twin, error) {
	if o.Replace {
		tags := current.Tags
		if o.tagsPatch != nil {
			var err error
			if tags, err = iothub.MergeTwinJSON(current.Tags, o.tagsPatch); err != nil {
				return iothub.Twin{}, fmt.Errorf("merge --tags into the twin's tags: %w", err)
			}
		}
		desired := o.desiredPatch
		if desired == nil {
			desired = map[string]json.RawMessage{}
		}
		body := iothub.Twin{Tags: tags, Properties: &iothub.TwinProperties{Desired: desired}}
		return client.ReplaceModuleTwin(ctx, o.DeviceID, o.ModuleID, body, etag)
	}
	patch := iothub.Twin{Tags: o.tagsPatch}
	if o.desiredPatch != nil {
		patch.Properties = &iothub.TwinProperties{Desired: o.desiredPatch}
	}
	return client.UpdateModuleTwin(ctx, o.DeviceID, o.ModuleID, patch, etag)
}

// printTwin prints the twin's etag, tags and properties, one compact JSON
// line each, leaving out the hub's $metadata.
func printTwin(w io.Writer, label string, t iothub.Twin) {
	var desired, reported map[string]json.RawMessage
	if t.Properties != nil {
		desired, reported = t.Properties.Desired, t.Properties.Reported
	}
	fmt.Fprintf(w, "%s: etag %s, desired $version %d, reported $version %d\n",
		label, t.ETag, iothub.DocVersion(desired), iothub.DocVersion(reported))
	fmt.Fprintf(w, "  tags:     %s\n", compactDoc(t.Tags))
	fmt.Fprintf(w, "  desired:  %s\n", compactDoc(desired))
	fmt.Fprintf(w, "  reported: %s\n", compactDoc(reported))
}

// compactDoc renders a document without $metadata, keys sorted.
func compactDoc(doc map[string]json.RawMessage) string {
	shown := make(map[string]json.RawMessage, len(doc))
	for k, v := range doc {
		if k != "$metadata" {
			shown[k] = v
		}
	}
	b, err := json.Marshal(shown)
	if err != nil {
		return "(unprintable)"
	}
	return string(b)
}

func printAcks(w io.Writer, acks map[string]json.RawMessage, version int64) {
	fmt.Fprintf(w, "acknowledged by the module (desired $version %d):\n", version)
	for _, k := range slices.Sorted(maps.Keys(acks)) {
		fmt.Fprintf(w, "  %s: %s\n", k, cli.CompactJSON(acks[k]))
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
