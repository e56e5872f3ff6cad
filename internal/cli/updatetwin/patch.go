package updatetwin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/moduletwin/iothub-module-twin/internal/cli"
	"github.com/moduletwin/iothub-module-twin/internal/iothub"
)

// MaxDocInput bounds what --desired and --tags read from a file or stdin:
// twice the hub's largest twin section (32 KB of desired properties), which
// leaves room for indentation and still refuses a wrong file at once.
const MaxDocInput = 64 << 10

// docBuilder assembles one twin section (desired or tags) from a whole
// document flag and path=value flags.
type docBuilder struct {
	section  string // "desired" or "tags"
	docFlag  string // "--desired"
	setFlag  string // "--set"
	maxBytes int
}

var (
	desiredDoc = docBuilder{section: "desired", docFlag: "--desired", setFlag: "--set", maxBytes: iothub.MaxDesiredBytes}
	tagsDoc    = docBuilder{section: "tags", docFlag: "--tags", setFlag: "--set-tag", maxBytes: iothub.MaxTagsBytes}
)

// build returns the section's patch, or nil when neither flag was given.
// readOnly lists the top-level members the hub maintains ($metadata,
// $version); they are dropped and reported in dropped.
func (b docBuilder) build(ctx context.Context, env *cli.Env, doc string, sets []string) (patch map[string]json.RawMessage, dropped []string, err error) {
	if doc == "" && len(sets) == 0 {
		return nil, nil, nil
	}
	tree := map[string]any{}
	if doc != "" {
		if tree, err = b.read(ctx, env, doc); err != nil {
			return nil, nil, err
		}
	}
	for _, s := range sets {
		if err := b.set(tree, s); err != nil {
			return nil, nil, err
		}
	}
	patch = make(map[string]json.RawMessage, len(tree))
	for k, v := range tree {
		if k == "$metadata" || k == "$version" {
			dropped = append(dropped, k)
			continue
		}
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: encode %q: %w", b.section, k, err)
		}
		patch[k] = raw
	}
	if err := iothub.ValidateTwinDoc(b.section, patch, b.maxBytes); err != nil {
		return nil, nil, fmt.Errorf("invalid %s properties: %w", b.section, err)
	}
	return patch, dropped, nil
}

// read parses the document flag: inline JSON, @FILE or - (stdin).
func (b docBuilder) read(ctx context.Context, env *cli.Env, value string) (map[string]any, error) {
	source := b.docFlag
	data := []byte(value)
	if value == "-" || strings.HasPrefix(value, "@") {
		in := cli.Input{Path: "-", What: b.docFlag, Limit: MaxDocInput}
		source += " -"
		if value != "-" {
			in.Path = value[1:]
			source = b.docFlag + " " + value
		}
		var err error
		if data, err = cli.ReadInput(ctx, env, in); err != nil {
			return nil, err
		}
	}
	v, err := decodeJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s: not valid JSON: %w", source, err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: want a JSON object, got %s", source, jsonKind(v))
	}
	return obj, nil
}

// set applies one PATH=VALUE to tree. VALUE is JSON when it parses as
// JSON, otherwise a string; null removes the member.
func (b docBuilder) set(tree map[string]any, expr string) error {
	path, value, ok := strings.Cut(expr, "=")
	if !ok {
		return fmt.Errorf("%s %q: want PATH=VALUE", b.setFlag, expr)
	}
	keys := strings.Split(path, ".")
	for _, k := range keys {
		if k == "" {
			return fmt.Errorf("%s %q: path %q has an empty key", b.setFlag, expr, path)
		}
	}
	var v any = value
	if parsed, err := decodeJSON([]byte(value)); err == nil {
		v = parsed
	}
	node := tree
	for i, k := range keys[:len(keys)-1] {
		switch next := node[k].(type) {
		case map[string]any:
			node = next
		case nil:
			child := map[string]any{}
			node[k] = child
			node = child
		default:
			return fmt.Errorf("%s %q: %q is already set to %s, not an object", b.setFlag, expr, strings.Join(keys[:i+1], "."), jsonKind(next))
		}
	}
	node[keys[len(keys)-1]] = v
	return nil
}

// decodeJSON decodes exactly one JSON value, keeping numbers as written.
func decodeJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty input")
		}
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("unexpected data after the JSON value")
	}
	return v, nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// nullPaths lists the dotted paths of members set to null.
func nullPaths(prefix string, doc map[string]json.RawMessage) []string {
	var out []string
	for k, raw := range doc {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			out = append(out, p)
			continue
		}
		var sub map[string]json.RawMessage
		if json.Unmarshal(raw, &sub) == nil && sub != nil {
			out = append(out, nullPaths(p, sub)...)
		}
	}
	return out
}
