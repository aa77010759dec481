// Package cmdline is the command-line layer of `shim oci`
// (pkg/libct/ocicli): commands with subcommands, and flags with aliases,
// defaults and usage, in the syntax runc's callers use. That is the syntax
// of Go's flag package, which parses them here as it did under urfave/cli
// (what runc and `shim oci` used before):
//
//	--name value, --name=value, -name value, -name=value
//	--bool, --bool=false (not "--bool false": "false" is an argument)
//	--name v1 --name v2 for a Strings flag: each use adds a value
//	--         ends the flags
//	the first argument that is not a flag ends them too, so in
//	`exec <id> <cmd> -x` the -x is <cmd>'s
//	--help, -h, or help (or h) as the first argument, print the usage
//
// urfave/cli's text/template, regexp and reflection cost about 1 ms of
// each start of the lean runtime binary (cmd/shim-runtime), whose start
// is each `shim oci` command's.
package cmdline

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Kind is what a flag's value is.
type Kind int

const (
	String Kind = iota
	Bool
	// Int64 and Uint64 take decimal, 0x hexadecimal and 0 octal.
	Int64
	Uint64
	// Duration takes time.ParseDuration's "5s", "100ms".
	Duration
	// Strings is a list: each use of the flag adds one value (commas
	// are part of it, as with runc: --env A=b,c is one variable).
	Strings
)

// Flag is one flag of a command.
type Flag struct {
	Name string // without dashes
	// Aliases are its other names, such as a one-letter one.
	Aliases []string
	Kind    Kind
	// Default is its value when the command line does not give it, as
	// a command line would; "" is the kind's zero value. A Strings
	// flag starts empty.
	Default string
	Usage   string
	// Hidden flags are accepted and not listed in the help.
	Hidden bool
}

// Names are the flag's name and aliases.
func (f *Flag) Names() []string { return append([]string{f.Name}, f.Aliases...) }

// Command is a command: one with Commands runs the one its first argument
// names, the others their Action.
type Command struct {
	Name    string
	Aliases []string
	Usage   string // one line, for the help
	// ArgsUsage names its arguments in the help: "<id> [signal]".
	ArgsUsage string
	Hidden    bool
	Flags     []Flag
	// Before runs once its flags are parsed, before its subcommand's
	// are; an error ends the command.
	Before   func(*Context) error
	Action   func(*Context) error
	Commands []*Command
}

func (c *Command) find(name string) *Command {
	for _, sub := range c.Commands {
		if sub.Name == name {
			return sub
		}
		for _, a := range sub.Aliases {
			if a == name {
				return sub
			}
		}
	}
	return nil
}

// ExitError ends Run with exit status Code, once Msg, when there is one,
// is printed to stderr.
type ExitError struct {
	Code int
	Msg  string
}

func (e *ExitError) Error() string { return e.Msg }

// Exit returns an ExitError.
func Exit(msg string, code int) error { return &ExitError{Code: code, Msg: msg} }

// Exit statuses of Run's own errors: those of urfave/cli, and runc.
const (
	// StatusUsage is that of an unknown flag or a bad flag value.
	StatusUsage = 1
	// StatusUnknownCommand is that of a command that is not there
	// (urfave/cli's "No help topic").
	StatusUnknownCommand = 3
)

// Run runs cmd with args (the arguments after its name) and returns the
// exit status: 0, an ExitError's Code, or 1 for any other error, which it
// prints to stderr after cmd's name. The help goes to stdout.
func Run(cmd *Command, args []string, stdout, stderr io.Writer) int {
	err := run(&Context{Command: cmd, path: cmd.Name}, args, stdout)
	var exit *ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		if exit.Msg != "" {
			fmt.Fprintln(stderr, exit.Msg)
		}
		return exit.Code
	default:
		fmt.Fprintf(stderr, "%s: %v\n", cmd.Name, err)
		return 1
	}
}

func run(c *Context, args []string, stdout io.Writer) error {
	err := c.parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return writeHelp(stdout, c.path, c.Command)
	}
	if err != nil {
		return Exit(c.path+": "+err.Error(), StatusUsage)
	}
	if first := c.Arg(0); first == "help" || first == "h" {
		return c.help(stdout)
	}
	if c.Command.Before != nil {
		if err := c.Command.Before(c); err != nil {
			return err
		}
	}
	if len(c.Command.Commands) == 0 {
		return c.Command.Action(c)
	}
	if len(c.args) == 0 {
		return writeHelp(stdout, c.path, c.Command)
	}
	sub := c.Command.find(c.args[0])
	if sub == nil {
		return c.unknown(c.args[0])
	}
	return run(&Context{Command: sub, parent: c, path: c.path + " " + sub.Name}, c.args[1:], stdout)
}

// help is `<command> help [subcommand]`.
func (c *Context) help(w io.Writer) error {
	if len(c.Command.Commands) == 0 || len(c.args) < 2 {
		return writeHelp(w, c.path, c.Command)
	}
	sub := c.Command.find(c.args[1])
	if sub == nil {
		return c.unknown(c.args[1])
	}
	return writeHelp(w, c.path+" "+sub.Name, sub)
}

func (c *Context) unknown(name string) error {
	return Exit(fmt.Sprintf("%s: unknown command %q (%s --help lists them)", c.path, name, c.path), StatusUnknownCommand)
}

// Context is a command being run: the values of its flags and its
// arguments.
type Context struct {
	Command *Command
	parent  *Context          // the parent command's, nil for Run's
	path    string            // "shim oci create", for help and errors
	values  map[string]*value // by each name of each flag
	args    []string
}

// parse sets c's flags and arguments from args.
func (c *Context) parse(args []string) error {
	fs := flag.NewFlagSet(c.path, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	c.values = make(map[string]*value)
	for i := range c.Command.Flags {
		f := &c.Command.Flags[i]
		v := &value{kind: f.Kind}
		if f.Default != "" && f.Kind != Strings {
			if err := v.parse(f.Default); err != nil {
				panic(fmt.Sprintf("cmdline: %s --%s: default %q: %v", c.path, f.Name, f.Default, err))
			}
		}
		for _, n := range f.Names() {
			fs.Var(v, n, f.Usage)
			c.values[n] = v
		}
	}
	err := fs.Parse(args)
	c.args = fs.Args()
	return err
}

// Args are the arguments after the flags.
func (c *Context) Args() []string { return c.args }

// Arg is argument i, "" if there are fewer.
func (c *Context) Arg(i int) string {
	if i < len(c.args) {
		return c.args[i]
	}
	return ""
}

// String, Bool, Int64, Uint64, Duration and Strings are the value of the
// flag of that name and kind (see lookup).
func (c *Context) String(name string) string          { return c.lookup(name, String).s }
func (c *Context) Bool(name string) bool              { return c.lookup(name, Bool).b }
func (c *Context) Int64(name string) int64            { return c.lookup(name, Int64).i }
func (c *Context) Uint64(name string) uint64          { return c.lookup(name, Uint64).u }
func (c *Context) Duration(name string) time.Duration { return c.lookup(name, Duration).d }
func (c *Context) Strings(name string) []string       { return c.lookup(name, Strings).list }

// IsSet tells whether the command line gave the flag (by any name).
func (c *Context) IsSet(name string) bool {
	for ; c != nil; c = c.parent {
		if v, ok := c.values[name]; ok {
			return v.set
		}
	}
	panic("cmdline: no flag " + name)
}

// lookup finds the flag in c's command or, when it has none of that name,
// in its parents' (as the state directory of `shim oci` is read in its
// subcommands). A name or kind no command has is the caller's bug.
func (c *Context) lookup(name string, k Kind) *value {
	for ; c != nil; c = c.parent {
		if v, ok := c.values[name]; ok {
			if v.kind != k {
				panic(fmt.Sprintf("cmdline: flag %s is not of kind %d", name, k))
			}
			return v
		}
	}
	panic("cmdline: no flag " + name)
}

// value is a flag's value, for package flag.
type value struct {
	kind Kind
	set  bool // by the command line
	s    string
	b    bool
	i    int64
	u    uint64
	d    time.Duration
	list []string
}

func (v *value) Set(s string) error {
	if err := v.parse(s); err != nil {
		return err
	}
	v.set = true
	return nil
}

// parse errors read as package flag's own: `invalid value "x" for flag
// -preserve-fds: parse error`.
var (
	errParse = errors.New("parse error")
	errRange = errors.New("value out of range")
)

func (v *value) parse(s string) error {
	var err error
	switch v.kind {
	case String:
		v.s = s
	case Bool:
		v.b, err = strconv.ParseBool(s)
	case Int64:
		v.i, err = strconv.ParseInt(s, 0, 64)
	case Uint64:
		v.u, err = strconv.ParseUint(s, 0, 64)
	case Duration:
		v.d, err = time.ParseDuration(s)
	case Strings:
		v.list = append(v.list, s)
	}
	if errors.Is(err, strconv.ErrRange) {
		return errRange
	}
	if err != nil {
		return errParse
	}
	return nil
}

func (v *value) String() string {
	switch v.kind {
	case Bool:
		return strconv.FormatBool(v.b)
	case Int64:
		return strconv.FormatInt(v.i, 10)
	case Uint64:
		return strconv.FormatUint(v.u, 10)
	case Duration:
		return v.d.String()
	case Strings:
		return strings.Join(v.list, ",")
	}
	return v.s
}

// IsBoolFlag has package flag take --bool without a value.
func (v *value) IsBoolFlag() bool { return v.kind == Bool }

func writeHelp(w io.Writer, path string, cmd *Command) error {
	_, err := io.WriteString(w, Help(path, cmd))
	return err
}

// Help is cmd's usage, which --help prints; path is its full name ("shim
// oci create").
func Help(path string, cmd *Command) string {
	var b strings.Builder
	fmt.Fprintf(&b, "NAME:\n   %s - %s\n\nUSAGE:\n   %s", path, cmd.Usage, path)
	var flags []*Flag
	for i := range cmd.Flags {
		if !cmd.Flags[i].Hidden {
			flags = append(flags, &cmd.Flags[i])
		}
	}
	switch {
	case len(cmd.Commands) > 0:
		if len(flags) > 0 {
			b.WriteString(" [global options]")
		}
		b.WriteString(" command [command options] [arguments...]")
	case len(flags) > 0:
		b.WriteString(" [command options]")
	}
	if cmd.ArgsUsage != "" {
		b.WriteString(" " + cmd.ArgsUsage)
	}
	b.WriteString("\n")
	if len(cmd.Commands) > 0 {
		var rows [][2]string
		for _, sub := range cmd.Commands {
			if !sub.Hidden {
				rows = append(rows, [2]string{strings.Join(append([]string{sub.Name}, sub.Aliases...), ", "), sub.Usage})
			}
		}
		rows = append(rows, [2]string{"help, h", "show the commands, or one's help"})
		writeRows(&b, "COMMANDS", rows)
	}
	var rows [][2]string
	for _, f := range flags {
		rows = append(rows, [2]string{flagNames(f), flagUsage(f)})
	}
	rows = append(rows, [2]string{"--help, -h", "show help"})
	writeRows(&b, "OPTIONS", rows)
	return b.String()
}

// writeRows writes a section of the help: names, then what they are in
// a column.
func writeRows(b *strings.Builder, title string, rows [][2]string) {
	width := 0
	for _, r := range rows {
		width = max(width, len(r[0]))
	}
	fmt.Fprintf(b, "\n%s:\n", title)
	for _, r := range rows {
		if r[1] == "" {
			fmt.Fprintf(b, "   %s\n", r[0])
		} else {
			fmt.Fprintf(b, "   %-*s  %s\n", width, r[0], r[1])
		}
	}
}

// flagNames is "--bundle value, -b value".
func flagNames(f *Flag) string {
	var names []string
	for _, n := range f.Names() {
		if len(n) == 1 {
			n = "-" + n
		} else {
			n = "--" + n
		}
		if f.Kind != Bool {
			n += " value"
		}
		names = append(names, n)
	}
	return strings.Join(names, ", ")
}

func flagUsage(f *Flag) string {
	u := f.Usage
	switch {
	case f.Kind == Strings:
		u += " (repeatable)"
	case f.Kind == String && f.Default != "":
		u += fmt.Sprintf(" (default: %q)", f.Default)
	case f.Default != "":
		u += " (default: " + f.Default + ")"
	}
	return strings.TrimSpace(u)
}
