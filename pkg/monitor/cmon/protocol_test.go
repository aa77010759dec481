package cmon

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/shim-cri/shim/pkg/monitor"
)

// TestRequestFieldsHandled sends every field of monitor.Request, one at a
// time, to the monitor's request parser: each must be read (not skipped
// as unknown). It fails when the Go side gains or renames a field the C
// parser does not handle.
func TestRequestFieldsHandled(t *testing.T) {
	rt := reflect.TypeOf(monitor.Request{})
	for i := 0; i < rt.NumField(); i++ {
		f := rt.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			t.Fatalf("field %s has no JSON name", f.Name)
		}
		var req monitor.Request
		req.Op = monitor.OpState
		setNonZero(t, reflect.ValueOf(&req).Elem().Field(i))
		line, err := json.Marshal(&req)
		if err != nil {
			t.Fatal(err)
		}
		if fieldID(name) < 0 {
			t.Errorf("field %q has no id in protocol.h (go generate ./pkg/monitor)", name)
			continue
		}
		got, ok := requestFields(line)
		if !ok {
			t.Errorf("the monitor refuses %s", line)
			continue
		}
		if !slices.Contains(got, name) {
			t.Errorf("field %q (%s) is not handled by the C parser: it read %v", name, line, got)
		}
	}
}

func setNonZero(t *testing.T, v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int32, reflect.Int64:
		v.SetInt(7)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
	default:
		t.Fatalf("no test value for a %s field", v.Kind())
	}
}

// TestOpsServed checks that the C dispatcher serves every op of the Go
// protocol, and no op it does not know.
func TestOpsServed(t *testing.T) {
	for _, op := range monitor.Ops {
		if !opKnown(op) {
			t.Errorf("op %q is not served by the C monitor", op)
		}
	}
	if opKnown("no_such_op") {
		t.Error("an unknown op is served")
	}
}
