package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/golcn/golcn/txmanager"
)

// ErrUnknownKey is wrapped by the KeyError for a key in the file that no
// setting has (usually a typo).
var ErrUnknownKey = errors.New("unknown key")

// KeyError reports a setting that could not be used: which key, where its
// value came from, and why. The error never contains the value of a secret.
type KeyError struct {
	// Key is the setting's name ("group_timeout", "redis.addr").
	Key string
	// Source is where the value came from: "file PATH", "env LCN_...",
	// "flag --..." or "default"; "" when no source set the key.
	Source string
	Err    error
}

func (e *KeyError) Error() string {
	if e.Source == "" {
		return fmt.Sprintf("config: %s: %v", e.Key, e.Err)
	}
	return fmt.Sprintf("config: %s: %v (from %s)", e.Key, e.Err, e.Source)
}

func (e *KeyError) Unwrap() error { return e.Err }

// subKeyError is a parser's error about one part of a list value: sub is
// appended to the key's name ("[2].role" for auth.tokens[2].role).
type subKeyError struct {
	sub string
	err error
}

func (e *subKeyError) Error() string { return e.sub + ": " + e.err.Error() }

func subErr(sub string, err error) error { return &subKeyError{sub: sub, err: err} }

// keyErrors turns a parser's error into one *KeyError per problem, named
// by the key and, for a problem in a list item, the item's part.
func keyErrors(key, source string, err error) []error {
	var parts []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		parts = j.Unwrap()
	} else {
		parts = []error{err}
	}
	out := make([]error, 0, len(parts))
	for _, e := range parts {
		k := key
		if se, ok := e.(*subKeyError); ok {
			k, e = key+se.sub, se.err
		}
		out = append(out, &KeyError{Key: k, Source: source, Err: e})
	}
	return out
}

const (
	configFlag = "config"
	configEnv  = "LCN_CONFIG"
	envPrefix  = "LCN_"
)

// precedence is printed at the top of --help.
const precedence = `Each setting comes from, in increasing priority: its default, the YAML file
named by --config (or env LCN_CONFIG), its LCN_* environment variable, its flag.`

// rawFlag is a flag value kept as typed, so that every source is parsed by
// the same code and a bad value is reported with its key and source (a
// typed pflag value would reject it in its own words, and viper would
// silently turn a bad int or bool flag into 0 or false).
type rawFlag struct{ typ, val string }

func (r *rawFlag) String() string     { return r.val }
func (r *rawFlag) Set(s string) error { r.val = s; return nil }
func (r *rawFlag) Type() string       { return r.typ }

// viperFlag binds a rawFlag to viper as an untyped string.
type viperFlag struct{ f *pflag.Flag }

func (v viperFlag) HasChanged() bool    { return v.f.Changed }
func (v viperFlag) Name() string        { return v.f.Name }
func (v viperFlag) ValueString() string { return v.f.Value.String() }
func (v viperFlag) ValueType() string   { return "string" }

// sources records where each spec's value came from, by key name.
type sources map[string]string

// load fills a T from the defaults in specs, the config file, environ and
// args, in that order of priority. title heads --help. It returns the sources of the values so
// that callers can name them in their own checks. --help is written to
// help and returned as pflag.ErrHelp.
func load[T any](prog, title string, specs []spec[T], args, environ []string, help io.Writer) (*T, sources, error) {
	fs := pflag.NewFlagSet(prog, pflag.ContinueOnError)
	fs.SortFlags = false
	fs.SetOutput(help)
	fs.String(configFlag, "", "YAML file to read settings from; a named file must exist [env "+configEnv+"]")
	for _, s := range specs {
		typ := typeName(s.field(new(T)))
		f := fs.VarPF(&rawFlag{typ: typ}, s.Flag, "", usage(s.Key, typ))
		if typ == "bool" {
			f.NoOptDefVal = "true"
		}
	}
	fs.Usage = func() {
		fmt.Fprintf(help, "%s\n\n%s\n\nFlags:\n%s", title, precedence, fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, nil, pflag.ErrHelp
		}
		return nil, nil, fmt.Errorf("config: %w (see --help)", err)
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("config: unexpected argument %q (see --help)", fs.Arg(0))
	}
	env := parseEnviron(environ)

	// The file.
	var path, pathFrom string
	if f := fs.Lookup(configFlag); f.Changed {
		path, pathFrom = f.Value.String(), "flag --"+configFlag
	} else if p := env[configEnv]; p != "" {
		path, pathFrom = p, "env "+configEnv
	}
	fileVals := map[string]any{}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, fmt.Errorf("config: config file (from %s): %w", pathFrom, err)
		}
		if fileVals, err = readFile(path, b, specs); err != nil {
			return nil, nil, err
		}
	}

	// Layer the sources in viper: defaults, then file and environment in
	// its config layer (environment on top), then flags.
	v := viper.New()
	layer := map[string]any{}
	src := sources{}
	for _, s := range specs {
		v.SetDefault(s.Name, s.Default)
		src[s.Name] = "default"
		if val, ok := fileVals[s.Name]; ok {
			setNested(layer, s.Name, val)
			src[s.Name] = "file " + path
		}
		if val := env[s.Env]; val != "" {
			setNested(layer, s.Name, val)
			src[s.Name] = "env " + s.Env
		}
		f := fs.Lookup(s.Flag)
		if err := v.BindFlagValue(s.Name, viperFlag{f}); err != nil {
			return nil, nil, fmt.Errorf("config: %w", err)
		}
		if f.Changed {
			src[s.Name] = "flag --" + s.Flag
		}
	}
	if err := v.MergeConfigMap(layer); err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}

	out := new(T)
	var errs []error
	for _, s := range specs {
		if err := s.parseInto(out, v.Get(s.Name)); err != nil {
			from := src[s.Name]
			if from == "default" && s.Default == "" {
				from = "" // nobody set it
			}
			errs = append(errs, keyErrors(s.Name, from, err)...)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return out, src, nil
}

// usage is a flag's line in --help.
func usage(k Key, typ string) string {
	u := k.Doc + " [env " + k.Env + "]"
	switch {
	case k.Default == "":
	case typ == "string":
		u += fmt.Sprintf(" (default %q)", k.Default)
	default:
		u += " (default " + k.Default + ")"
	}
	return u
}

// parseEnviron keeps the LCN_* variables of environ. As with os.Getenv,
// the first of duplicate entries wins.
func parseEnviron(environ []string) map[string]string {
	env := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, envPrefix) {
			continue
		}
		if _, dup := env[k]; !dup {
			env[k] = v
		}
	}
	return env
}

// backquoted matches the document excerpts the YAML decoder quotes in its
// errors; they are cut so that a malformed line holding a secret is not
// echoed.
var backquoted = regexp.MustCompile("`[^`]*`")

// readFile parses a YAML file and returns its values by key name. Unknown
// keys are errors.
func readFile[T any](path string, b []byte, specs []spec[T]) (map[string]any, error) {
	fv := viper.New()
	fv.SetConfigType("yaml")
	if err := fv.ReadConfig(bytes.NewReader(b)); err != nil {
		var pe viper.ConfigParseError
		if errors.As(err, &pe) && pe.Unwrap() != nil {
			err = pe.Unwrap()
		}
		return nil, fmt.Errorf("config: file %s: invalid YAML: %s", path, backquoted.ReplaceAllString(err.Error(), "`...`"))
	}
	known := map[string]bool{}
	sections := map[string]bool{}
	for _, s := range specs {
		known[s.Name] = true
		parts := strings.Split(s.Name, ".")
		for i := 1; i < len(parts); i++ {
			sections[strings.Join(parts[:i], ".")] = true
		}
	}
	vals := map[string]any{}
	reported := map[string]bool{}
	var errs []error
	keys := fv.AllKeys()
	slices.Sort(keys)
	for _, key := range keys {
		val := fv.Get(key)
		switch {
		case known[key]:
			if val != nil { // "key:" with no value leaves the default
				vals[key] = val
			}
		case sections[key]:
			if val != nil { // an empty section is fine
				errs = append(errs, &KeyError{Key: key, Source: "file " + path,
					Err: fmt.Errorf("want a mapping of %s.* keys, got %s", key, describe(val))})
			}
		case leafOf(key, known) != "":
			// A mapping where a value was wanted. Report the known key,
			// not the path below it, which may hold a secret.
			leaf := leafOf(key, known)
			if !reported[leaf] {
				reported[leaf] = true
				errs = append(errs, &KeyError{Key: leaf, Source: "file " + path, Err: errors.New("got a mapping, want a single value")})
			}
		default:
			err := ErrUnknownKey
			if near := nearest(key, known); near != "" {
				err = fmt.Errorf("%w; did you mean %s?", ErrUnknownKey, near)
			}
			errs = append(errs, &KeyError{Key: key, Source: "file " + path, Err: err})
		}
	}
	return vals, errors.Join(errs...)
}

// leafOf returns the known key that key lies below, if any.
func leafOf(key string, known map[string]bool) string {
	for k := range known {
		if strings.HasPrefix(key, k+".") {
			return k
		}
	}
	return ""
}

// nearest returns the known key closest to key, if it is close enough to
// be a typo.
func nearest(key string, known map[string]bool) string {
	best, bestD := "", 3
	for k := range known {
		if d := editDistance(key, k); d < bestD || (d == bestD && best != "" && k < best) {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func setNested(m map[string]any, name string, val any) {
	parts := strings.Split(name, ".")
	for _, p := range parts[:len(parts)-1] {
		sub, ok := m[p].(map[string]any)
		if !ok {
			sub = map[string]any{}
			m[p] = sub
		}
		m = sub
	}
	m[parts[len(parts)-1]] = val
}

// typeName is the type shown in --help for a field.
func typeName(field any) string {
	switch field.(type) {
	case *string:
		return "string"
	case *time.Duration:
		return "duration"
	case *int, *int64:
		return "int"
	case *float64:
		return "float"
	case *bool:
		return "bool"
	case *[]string:
		return "list"
	case *[]txmanager.Credential:
		return "tokens"
	}
	panic(fmt.Sprintf("config: unsupported field type %T", field))
}

// describe names the kind of a decoded YAML value, without the value.
func describe(v any) string {
	switch v.(type) {
	case nil:
		return "nothing"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int, int64, uint64, int32, uint32, uint, float32, float64:
		return "a number"
	case []any:
		return "a list"
	case map[string]any, map[any]any:
		return "a mapping"
	case time.Time:
		return "a timestamp"
	}
	return fmt.Sprintf("a %T", v)
}

// parseInto parses raw (a string from a default, the environment or a
// flag, or any YAML value from the file) and stores it in out.
func (s spec[T]) parseInto(out *T, raw any) error {
	switch p := s.field(out).(type) {
	case *string:
		str, ok := raw.(string)
		if !ok {
			return fmt.Errorf("want a string, got %s (quote it)", describe(raw))
		}
		if s.enum != nil {
			l := strings.ToLower(str)
			if !slices.Contains(s.enum, l) {
				return fmt.Errorf("invalid value %q (want %s)", str, strings.Join(s.enum, ", "))
			}
			str = l
		}
		if str == "" {
			if s.required {
				return fmt.Errorf("required; set it in the file, with env %s or with flag --%s", s.Env, s.Flag)
			}
		} else if s.check != nil {
			if err := s.check(str); err != nil {
				return err
			}
		}
		*p = str
	case *time.Duration:
		d, err := parseDuration(raw)
		if err != nil {
			return err
		}
		if d < 0 {
			return fmt.Errorf("must not be negative, got %s", d)
		}
		if d == 0 && !s.zeroOK {
			return errors.New("must be positive, got 0")
		}
		*p = d
	case *int:
		n, err := parseInt(raw)
		if err != nil {
			return err
		}
		if err := s.checkSign(n < 0, n == 0, n); err != nil {
			return err
		}
		*p = n
	case *int64:
		n, err := parseInt64(raw)
		if err != nil {
			return err
		}
		if err := s.checkSign(n < 0, n == 0, n); err != nil {
			return err
		}
		*p = n
	case *float64:
		f, err := parseFloat(raw)
		if err != nil {
			return err
		}
		if err := s.checkSign(f < 0, f == 0, f); err != nil {
			return err
		}
		*p = f
	case *[]string:
		items, err := parseList(raw)
		if err != nil {
			return err
		}
		if s.check != nil {
			var errs []error
			for i, it := range items {
				if err := s.check(it); err != nil {
					errs = append(errs, subErr(fmt.Sprintf("[%d]", i), err))
				}
			}
			if err := errors.Join(errs...); err != nil {
				return err
			}
		}
		*p = items
	case *[]txmanager.Credential:
		creds, err := parseCredentials(raw)
		if err != nil {
			return err
		}
		*p = creds
	case *bool:
		switch v := raw.(type) {
		case bool:
			*p = v
		case string:
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("invalid boolean %q (want true or false)", v)
			}
			*p = b
		default:
			return fmt.Errorf("want true or false, got %s", describe(raw))
		}
	default:
		panic(fmt.Sprintf("config: unsupported field type %T", p))
	}
	return nil
}

// checkSign rejects a negative number, and 0 when s.positive.
func (s spec[T]) checkSign(negative, zero bool, n any) error {
	switch {
	case negative:
		return fmt.Errorf("must not be negative, got %v", n)
	case zero && s.positive:
		return errors.New("must be positive, got 0")
	}
	return nil
}

func parseDuration(raw any) (time.Duration, error) {
	switch v := raw.(type) {
	case string:
		d, err := time.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", v)
		}
		return d, nil
	case int, int64, uint64, float64:
		// YAML gives a bare number. A duration needs a unit: reading 30
		// as 30ns (what viper's cast would do) is never what was meant.
		if v == 0 || v == int64(0) || v == uint64(0) || v == 0.0 {
			return 0, nil
		}
		return 0, fmt.Errorf("invalid duration %v: a number needs a unit, for example \"%vs\"", v, v)
	}
	return 0, fmt.Errorf("want a duration such as \"30s\", got %s", describe(raw))
}

func parseInt(raw any) (int, error) {
	switch v := raw.(type) {
	case int:
		return v, nil
	case int64:
		if int64(int(v)) == v {
			return int(v), nil
		}
	case uint64:
		if v <= uint64(^uint(0)>>1) {
			return int(v), nil
		}
	case string:
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, fmt.Errorf("invalid integer %q", v)
		}
		return n, nil
	default:
		return 0, fmt.Errorf("want an integer, got %s", describe(raw))
	}
	return 0, fmt.Errorf("integer %v out of range", raw)
}

func parseInt64(raw any) (int64, error) {
	switch v := raw.(type) {
	case int:
		return int64(v), nil
	case int64:
		return v, nil
	case uint64:
		if v <= math.MaxInt64 {
			return int64(v), nil
		}
		return 0, fmt.Errorf("integer %v out of range", v)
	case string:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("invalid integer %q", v)
		}
		return n, nil
	}
	return 0, fmt.Errorf("want an integer, got %s", describe(raw))
}

func parseFloat(raw any) (float64, error) {
	var f float64
	switch v := raw.(type) {
	case int:
		f = float64(v)
	case int64:
		f = float64(v)
	case uint64:
		f = float64(v)
	case float64:
		f = v
	case string:
		var err error
		if f, err = strconv.ParseFloat(v, 64); err != nil {
			return 0, fmt.Errorf("invalid number %q", v)
		}
	default:
		return 0, fmt.Errorf("want a number, got %s", describe(raw))
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("want a finite number, got %v", f)
	}
	return f, nil
}

// parseList reads a list of strings: a YAML list, or a comma-separated
// string (the environment, a flag, or the file). Items are trimmed and
// must not be empty; "" is the empty list.
func parseList(raw any) ([]string, error) {
	var items []string
	switch v := raw.(type) {
	case string:
		if strings.TrimSpace(v) == "" {
			return nil, nil
		}
		items = strings.Split(v, ",")
	case []any:
		var errs []error
		for i, it := range v {
			s, ok := it.(string)
			if !ok {
				errs = append(errs, subErr(fmt.Sprintf("[%d]", i), fmt.Errorf("want a string, got %s (quote it)", describe(it))))
			}
			items = append(items, s)
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("want a list of strings, got %s", describe(raw))
	}
	var errs []error
	for i := range items {
		items[i] = strings.TrimSpace(items[i])
		if items[i] == "" {
			errs = append(errs, subErr(fmt.Sprintf("[%d]", i), errors.New("empty item")))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return nil, nil
	}
	return items, nil
}

// attrs renders the settings of v for String and LogValue, with secrets
// redacted.
func attrs[T any](specs []spec[T], v *T) []slog.Attr {
	as := make([]slog.Attr, 0, len(specs))
	for _, s := range specs {
		switch p := s.field(v).(type) {
		case *string:
			val := *p
			switch {
			case s.Secret:
				val = redact(val)
			case s.show != nil:
				val = s.show(val)
			}
			as = append(as, slog.String(s.Name, val))
		case *time.Duration:
			as = append(as, slog.Duration(s.Name, *p))
		case *int:
			as = append(as, slog.Int(s.Name, *p))
		case *int64:
			as = append(as, slog.Int64(s.Name, *p))
		case *float64:
			as = append(as, slog.Float64(s.Name, *p))
		case *bool:
			as = append(as, slog.Bool(s.Name, *p))
		case *[]string:
			as = append(as, slog.String(s.Name, strings.Join(*p, ",")))
		case *[]txmanager.Credential:
			as = append(as, slog.String(s.Name, showCredentials(*p)))
		}
	}
	return as
}

// redact hides a secret's value but not whether it is set.
func redact(s string) string {
	if s == "" {
		return ""
	}
	return "***"
}

// format renders attrs as "{k=v k=v}", quoting values as slog's text
// handler does.
func format(as []slog.Attr) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, a := range as {
		if i > 0 {
			b.WriteByte(' ')
		}
		val := a.Value.String()
		if val == "" || strings.ContainsAny(val, " =\"\\{}") || strconv.Quote(val) != `"`+val+`"` {
			val = strconv.Quote(val)
		}
		b.WriteString(a.Key + "=" + val)
	}
	b.WriteByte('}')
	return b.String()
}
