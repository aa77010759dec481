package specjson

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/shim-cri/shim/pkg/libct/testbundle"
)

// full is a spec with every field of every type set (two elements in each
// slice and map), so a field the generated code does not know (the
// runtime-spec module moved on without `go generate`) shows.
func full(t *testing.T) *specs.Spec {
	var s specs.Spec
	n := 0
	var fill func(v reflect.Value)
	fill = func(v reflect.Value) {
		n++
		switch v.Kind() {
		case reflect.String:
			v.SetString("s" + strconv.Itoa(n) + "<&>")
		case reflect.Bool:
			v.SetBool(true)
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			v.SetInt(int64(n))
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			v.SetUint(uint64(n))
		case reflect.Float32, reflect.Float64:
			v.SetFloat(float64(n) + 0.5)
		case reflect.Pointer:
			v.Set(reflect.New(v.Type().Elem()))
			fill(v.Elem())
		case reflect.Struct:
			for i := 0; i < v.NumField(); i++ {
				if v.Type().Field(i).IsExported() {
					fill(v.Field(i))
				}
			}
		case reflect.Slice:
			v.Set(reflect.MakeSlice(v.Type(), 2, 2))
			fill(v.Index(0))
			fill(v.Index(1))
		case reflect.Map:
			v.Set(reflect.MakeMap(v.Type()))
			for i := 0; i < 2; i++ {
				k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
				fill(k)
				fill(e)
				v.SetMapIndex(k, e)
			}
		case reflect.Interface: // Windows' credentialSpec: what encoding/json makes of an object
			v.Set(reflect.ValueOf(map[string]any{"k" + strconv.Itoa(n): []any{"v", 1.5, true, nil}}))
		default:
			t.Fatalf("spec field of kind %s: teach full()", v.Kind())
		}
	}
	fill(reflect.ValueOf(&s).Elem())
	return &s
}

func std(t *testing.T, b []byte) (*specs.Spec, error) {
	var s specs.Spec
	err := json.NewDecoder(bytes.NewReader(b)).Decode(&s)
	return &s, err
}

// TestDecodeFast: the generated decoder reads a spec with every field set,
// and the specs the tests and kubelet's runtime use, as encoding/json does.
func TestDecodeFast(t *testing.T) {
	docs := map[string]*specs.Spec{"full": full(t), "testbundle": testbundle.Spec("/bin/sh", "-c", "echo a && echo b")}
	for name, s := range docs {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var got specs.Spec
		if !decodeFast(b, &got) {
			t.Fatalf("%s: the generated decoder refused it: run go generate ./pkg/libct/specjson", name)
		}
		want, err := std(t, b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&got, want) {
			t.Errorf("%s: generated decoder differs from encoding/json:\n got %+v\nwant %+v", name, got, want)
		}
	}
}

// TestDecodeLeftToStd: documents the generated decoder does not read as
// encoding/json does go to encoding/json, with its result or its error.
func TestDecodeLeftToStd(t *testing.T) {
	docs := map[string]string{
		"key in another case": `{"OCIVersion":"1.0.2","Process":{"Args":["/bin/true"],"cwd":"/"}}`,
		"unknown field":       `{"ociVersion":"1.0.2","process":{"args":["x"],"cwd":"/","fromTheFuture":1}}`,
		"invalid UTF-8":       "{\"ociVersion\":\"1.0.2\",\"hostname\":\"a\xffb\"}",
		"lone surrogate":      `{"ociVersion":"1.0.2","hostname":"a\ud800b"}`,
		"wrong type":          `{"ociVersion":"1.0.2","process":{"user":{"uid":"0"}}}`,
		"float for an int":    `{"ociVersion":"1.0.2","process":{"user":{"uid":1.5}}}`,
		"trailing garbage":    `{"ociVersion":"1.0.2"} x`,
		"not an object":       `[1]`,
		"surrogate pair":      `{"ociVersion":"1.0.2","hostname":"\ud83d\ude00"}`,
		"leading zero":        `{"ociVersion":"1.0.2","process":{"user":{"umask":0022}}}`,
		"control character":   "{\"ociVersion\":\"1.0.2\",\"hostname\":\"a\tb\"}",
		"empty map":           `{"ociVersion":"1.0.2","annotations":{ },"linux":{"resources":{"unified":{}}}}`,
	}
	for name, doc := range docs {
		want, wantErr := std(t, []byte(doc))
		var got specs.Spec
		err := Decode([]byte(doc), &got)
		if (err == nil) != (wantErr == nil) {
			t.Errorf("%s: error %v, encoding/json's %v", name, err, wantErr)
			continue
		}
		if err == nil && !reflect.DeepEqual(&got, want) {
			t.Errorf("%s: got %+v, encoding/json %+v", name, got, want)
		}
	}
	// A fast-path document with an escape that is not a surrogate.
	var got specs.Spec
	if !decodeFast([]byte(`{"hostname":"a\u0026b"}`), &got) || got.Hostname != "a&b" {
		t.Errorf("escaped & : %q", got.Hostname)
	}
}

// TestEncode: what Encode writes decodes (with encoding/json) to the same
// spec, and escapes HTML characters as encoding/json does.
func TestEncode(t *testing.T) {
	s := full(t)
	b, err := Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := std(t, b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Errorf("round trip differs:\n got %+v\nwant %+v", got, s)
	}
	if bytes.ContainsAny(b, "<>&") {
		t.Errorf("HTML characters not escaped: %.200s", b)
	}
}
