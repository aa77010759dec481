package cmdline

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// ran is what the test commands saw.
type ran struct {
	cmd    string
	before []string // the arguments tool's Before saw
	ctx    *Context
}

// testTool is a command tree of each kind of flag, with the action of
// "fail" returning err.
func testTool(r *ran, err error) *Command {
	action := func(c *Context) error {
		r.cmd, r.ctx = c.Command.Name, c
		return nil
	}
	return &Command{
		Name:  "tool",
		Usage: "a test tool",
		Flags: []Flag{
			{Name: "root", Default: "/r", Usage: "state directory"},
			{Name: "debug", Kind: Bool},
			{Name: "hidden", Hidden: true},
		},
		Before: func(c *Context) error {
			r.before = c.Args()
			if c.String("root") == "/before-fails" {
				return Exit("before failed", 5)
			}
			return nil
		},
		Commands: []*Command{
			{
				Name: "exec", Usage: "run something", ArgsUsage: "<id> <cmd>",
				Flags: []Flag{
					{Name: "str", Aliases: []string{"s"}, Default: "def", Usage: "a string"},
					{Name: "bool", Aliases: []string{"b"}, Kind: Bool, Usage: "a bool"},
					{Name: "int", Kind: Int64},
					{Name: "uint", Kind: Uint64, Default: "3"},
					{Name: "dur", Kind: Duration, Default: "5s"},
					{Name: "env", Aliases: []string{"e"}, Kind: Strings, Usage: "VAR=value"},
				},
				Action: action,
			},
			{Name: "list", Aliases: []string{"ls"}, Usage: "list things", Action: action},
			{Name: "secret", Hidden: true, Usage: "not listed", Action: action},
			{Name: "fail", Usage: "fail", Action: func(c *Context) error {
				r.cmd = c.Command.Name
				return err
			}},
		},
	}
}

// TestRun: each syntax, default, error and help, with the command run,
// its flags' values and arguments, the exit status and the output.
func TestRun(t *testing.T) {
	type want struct {
		cmd    string // "" when no action ran
		status int
		args   []string
		flags  map[string]any // exec's and tool's flags by name; the rest at their defaults
		set    []string       // the flags IsSet reports
		stdout string         // a part of it ("" = empty)
		stderr string         // all of it
	}
	defaults := map[string]any{"root": "/r", "debug": false, "hidden": "",
		"str": "def", "bool": false, "int": int64(0), "uint": uint64(3), "dur": 5 * time.Second, "env": []string(nil)}
	for _, c := range []struct {
		args []string
		want want
	}{
		// Values and their defaults.
		{[]string{"exec", "id"}, want{cmd: "exec", args: []string{"id"}}},
		{[]string{"exec", "--str", "v", "id"}, want{cmd: "exec", args: []string{"id"}, flags: map[string]any{"str": "v"}, set: []string{"str"}}},
		{[]string{"exec", "--str=v", "id"}, want{cmd: "exec", args: []string{"id"}, flags: map[string]any{"str": "v"}, set: []string{"str"}}},
		{[]string{"exec", "-str", "v", "id"}, want{cmd: "exec", args: []string{"id"}, flags: map[string]any{"str": "v"}, set: []string{"str"}}},
		{[]string{"exec", "-s=v", "id"}, want{cmd: "exec", args: []string{"id"}, flags: map[string]any{"str": "v"}, set: []string{"str"}}},
		{[]string{"exec", "--s", "v", "id"}, want{cmd: "exec", args: []string{"id"}, flags: map[string]any{"str": "v"}, set: []string{"str"}}},
		{[]string{"exec", "--str", "-dash", "id"}, want{cmd: "exec", args: []string{"id"}, flags: map[string]any{"str": "-dash"}, set: []string{"str"}}},
		{[]string{"exec", "--str=", "id"}, want{cmd: "exec", args: []string{"id"}, flags: map[string]any{"str": ""}, set: []string{"str"}}},
		{[]string{"exec", "--str", "a", "-s", "b", "id"}, want{cmd: "exec", args: []string{"id"}, flags: map[string]any{"str": "b"}, set: []string{"str"}}},
		{[]string{"exec", "--bool", "id"}, want{cmd: "exec", args: []string{"id"}, flags: map[string]any{"bool": true}, set: []string{"bool"}}},
		{[]string{"exec", "-b", "id"}, want{cmd: "exec", args: []string{"id"}, flags: map[string]any{"bool": true}, set: []string{"bool"}}},
		{[]string{"exec", "--bool=false", "id"}, want{cmd: "exec", args: []string{"id"}, flags: map[string]any{"bool": false}, set: []string{"bool"}}},
		{[]string{"exec", "-b=1", "id"}, want{cmd: "exec", args: []string{"id"}, flags: map[string]any{"bool": true}, set: []string{"bool"}}},
		// A bool takes no separate value: "false" is the first argument.
		{[]string{"exec", "--bool", "false", "id"}, want{cmd: "exec", args: []string{"false", "id"}, flags: map[string]any{"bool": true}, set: []string{"bool"}}},
		{[]string{"exec", "--int", "-3", "--uint", "0x10", "id"}, want{cmd: "exec", args: []string{"id"}, flags: map[string]any{"int": int64(-3), "uint": uint64(16)}, set: []string{"int", "uint"}}},
		{[]string{"exec", "--dur=150ms", "id"}, want{cmd: "exec", args: []string{"id"}, flags: map[string]any{"dur": 150 * time.Millisecond}, set: []string{"dur"}}},
		// A Strings flag: each use adds a value, commas and all.
		{[]string{"exec", "-e", "A=1", "--env", "B=2,3", "-e=C= x", "--env=", "id"}, want{cmd: "exec", args: []string{"id"}, flags: map[string]any{"env": []string{"A=1", "B=2,3", "C= x", ""}}, set: []string{"env"}}},
		// The first argument ends the flags: the rest are the command's.
		{[]string{"exec", "id", "sh", "-c", "--str", "x", "-h"}, want{cmd: "exec", args: []string{"id", "sh", "-c", "--str", "x", "-h"}}},
		{[]string{"exec", "--bool", "--", "--str", "x"}, want{cmd: "exec", args: []string{"--str", "x"}, flags: map[string]any{"bool": true}, set: []string{"bool"}}},
		{[]string{"exec", "--", "--", "x"}, want{cmd: "exec", args: []string{"--", "x"}}},
		{[]string{"exec", "-", "x"}, want{cmd: "exec", args: []string{"-", "x"}}},
		{[]string{"exec"}, want{cmd: "exec", args: []string{}}},
		// The parent's flags, read in the subcommand.
		{[]string{"--root", "/x", "--debug", "exec", "id"}, want{cmd: "exec", args: []string{"id"}, flags: map[string]any{"root": "/x", "debug": true}, set: []string{"root", "debug"}}},
		{[]string{"-root=/x", "--hidden", "h", "ls", "a"}, want{cmd: "list", args: []string{"a"}, flags: map[string]any{"root": "/x", "hidden": "h"}, set: []string{"root", "hidden"}}},
		{[]string{"secret"}, want{cmd: "secret", args: []string{}}},

		// Usage errors: status 1, nothing run.
		{[]string{"--bogus", "exec"}, want{status: 1, stderr: "tool: flag provided but not defined: -bogus\n"}},
		{[]string{"exec", "--bogus", "id"}, want{status: 1, stderr: "tool exec: flag provided but not defined: -bogus\n"}},
		{[]string{"exec", "-sb", "id"}, want{status: 1, stderr: "tool exec: flag provided but not defined: -sb\n"}},
		{[]string{"exec", "--str"}, want{status: 1, stderr: "tool exec: flag needs an argument: -str\n"}},
		{[]string{"exec", "--int", "abc", "id"}, want{status: 1, stderr: "tool exec: invalid value \"abc\" for flag -int: parse error\n"}},
		{[]string{"exec", "--int", "99999999999999999999", "id"}, want{status: 1, stderr: "tool exec: invalid value \"99999999999999999999\" for flag -int: value out of range\n"}},
		{[]string{"exec", "--uint=-1", "id"}, want{status: 1, stderr: "tool exec: invalid value \"-1\" for flag -uint: parse error\n"}},
		{[]string{"exec", "--dur", "5", "id"}, want{status: 1, stderr: "tool exec: invalid value \"5\" for flag -dur: parse error\n"}},
		{[]string{"exec", "--bool=maybe", "id"}, want{status: 1, stderr: "tool exec: invalid boolean value \"maybe\" for -bool: parse error\n"}},
		{[]string{"exec", "---str", "x"}, want{status: 1, stderr: "tool exec: bad flag syntax: ---str\n"}},
		// Unknown commands: status 3 (urfave/cli's, runc's).
		{[]string{"bogus"}, want{status: 3, stderr: "tool: unknown command \"bogus\" (tool --help lists them)\n"}},
		{[]string{"help", "bogus"}, want{status: 3, stderr: "tool: unknown command \"bogus\" (tool --help lists them)\n"}},

		// Help, on stdout: status 0, nothing run.
		{[]string{}, want{stdout: "NAME:\n   tool - a test tool\n"}},
		{[]string{"--help"}, want{stdout: "NAME:\n   tool - a test tool\n"}},
		{[]string{"-h", "exec"}, want{stdout: "NAME:\n   tool - a test tool\n"}},
		{[]string{"help"}, want{stdout: "NAME:\n   tool - a test tool\n"}},
		{[]string{"h"}, want{stdout: "NAME:\n   tool - a test tool\n"}},
		{[]string{"help", "exec"}, want{stdout: "NAME:\n   tool exec - run something\n"}},
		{[]string{"h", "ls"}, want{stdout: "NAME:\n   tool list - list things\n"}},
		{[]string{"exec", "--help"}, want{stdout: "NAME:\n   tool exec - run something\n"}},
		{[]string{"exec", "-h", "id"}, want{stdout: "NAME:\n   tool exec - run something\n"}},
		{[]string{"exec", "--str", "x", "-help"}, want{stdout: "NAME:\n   tool exec - run something\n"}},
		{[]string{"exec", "help"}, want{stdout: "NAME:\n   tool exec - run something\n"}},

		// Errors of Before and of actions.
		{[]string{"--root", "/before-fails", "exec", "id"}, want{status: 5, stderr: "before failed\n"}},
	} {
		var r ran
		var stdout, stderr bytes.Buffer
		status := Run(testTool(&r, nil), c.args, &stdout, &stderr)
		w := c.want
		if status != w.status || r.cmd != w.cmd || stderr.String() != w.stderr {
			t.Errorf("%q: status %d, ran %q, stderr %q; want %d, %q, %q", c.args, status, r.cmd, stderr.String(), w.status, w.cmd, w.stderr)
			continue
		}
		if !strings.Contains(stdout.String(), w.stdout) || (w.stdout == "") != (stdout.Len() == 0) {
			t.Errorf("%q: stdout %q, want it to have %q", c.args, stdout.String(), w.stdout)
		}
		if r.ctx == nil {
			continue
		}
		if !slices.Equal(r.ctx.Args(), w.args) {
			t.Errorf("%q: args %q, want %q", c.args, r.ctx.Args(), w.args)
		}
		// tool's Before saw the subcommand and what follows it.
		if i := slices.IndexFunc(c.args, func(a string) bool { return slices.Contains([]string{"exec", "ls", "secret"}, a) }); !slices.Equal(r.before, c.args[i:]) {
			t.Errorf("%q: Before saw %q", c.args, r.before)
		}
		if r.cmd != "exec" {
			continue
		}
		for name, def := range defaults {
			v, ok := w.flags[name]
			if !ok {
				v = def
			}
			var got any
			switch v.(type) {
			case string:
				got = r.ctx.String(name)
			case bool:
				got = r.ctx.Bool(name)
			case int64:
				got = r.ctx.Int64(name)
			case uint64:
				got = r.ctx.Uint64(name)
			case time.Duration:
				got = r.ctx.Duration(name)
			case []string:
				got = r.ctx.Strings(name)
			}
			if !reflect.DeepEqual(got, v) {
				t.Errorf("%q: --%s %v, want %v", c.args, name, got, v)
			}
			if r.ctx.IsSet(name) != slices.Contains(w.set, name) {
				t.Errorf("%q: IsSet(%s) %v", c.args, name, r.ctx.IsSet(name))
			}
		}
	}
}

// TestExitStatus: an action's ExitError gives the status and its message
// (none when empty); another error is status 1 after the command's name.
func TestExitStatus(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
		stderr string
	}{
		{nil, 0, ""},
		{Exit("", 42), 42, ""},
		{Exit("no log", 1), 1, "no log\n"},
		{errors.New("boom"), 1, "tool: boom\n"},
	} {
		var r ran
		var stdout, stderr bytes.Buffer
		if status := Run(testTool(&r, c.err), []string{"fail"}, &stdout, &stderr); status != c.status || stderr.String() != c.stderr || stdout.Len() != 0 {
			t.Errorf("%v: status %d, stderr %q, stdout %q; want %d, %q", c.err, status, stderr.String(), stdout.String(), c.status, c.stderr)
		}
	}
}

// TestHelp: the whole help of a command with subcommands and of one
// without; hidden flags and commands are not in it.
func TestHelp(t *testing.T) {
	for _, c := range []struct {
		args []string
		help string
	}{
		{[]string{"--help"}, `NAME:
   tool - a test tool

USAGE:
   tool [global options] command [command options] [arguments...]

COMMANDS:
   exec      run something
   list, ls  list things
   fail      fail
   help, h   show the commands, or one's help

OPTIONS:
   --root value  state directory (default: "/r")
   --debug
   --help, -h    show help
`},
		{[]string{"exec", "-h"}, `NAME:
   tool exec - run something

USAGE:
   tool exec [command options] <id> <cmd>

OPTIONS:
   --str value, -s value  a string (default: "def")
   --bool, -b             a bool
   --int value
   --uint value           (default: 3)
   --dur value            (default: 5s)
   --env value, -e value  VAR=value (repeatable)
   --help, -h             show help
`},
	} {
		var r ran
		var stdout, stderr bytes.Buffer
		if status := Run(testTool(&r, nil), c.args, &stdout, &stderr); status != 0 || stdout.String() != c.help || stderr.Len() != 0 {
			t.Errorf("%q: status %d, stderr %q, help:\n%s\nwant:\n%s", c.args, status, stderr.String(), stdout.String(), c.help)
		}
	}
}

// TestLookupBug: reading a flag no command has, or as another kind, is
// the caller's bug: it panics rather than read as unset.
func TestLookupBug(t *testing.T) {
	var r ran
	var stdout, stderr bytes.Buffer
	Run(testTool(&r, nil), []string{"exec", "id"}, &stdout, &stderr)
	for name, read := range map[string]func(){
		"unknown":       func() { r.ctx.String("bundle") },
		"unknown IsSet": func() { r.ctx.IsSet("bundle") },
		"kind":          func() { r.ctx.Bool("str") },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			read()
		}()
	}
}

// FuzzRun: any command line runs a command, prints help, or is refused
// with status 1 or 3 and a message; nothing panics.
func FuzzRun(f *testing.F) {
	for _, s := range []string{"exec\x00--str\x00v\x00id", "--root=/x\x00ls", "exec\x00-e\x00a,b\x00--\x00-x", "help\x00exec", "--bogus", "exec\x00--int\x000x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var r ran
		var stdout, stderr bytes.Buffer
		args := strings.Split(s, "\x00")
		switch status := Run(testTool(&r, nil), args, &stdout, &stderr); status {
		case 0:
			if r.cmd == "" && stdout.Len() == 0 {
				t.Errorf("%q: status 0, nothing run, no help", args)
			}
		case 1, 3:
			if r.cmd != "" || stderr.Len() == 0 {
				t.Errorf("%q: status %d, ran %q, stderr %q", args, status, r.cmd, stderr.String())
			}
		case 5:
		default:
			t.Errorf("%q: status %d", args, status)
		}
	})
}
