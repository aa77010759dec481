package specgen

import (
	"reflect"
	"slices"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
)

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.SortFunc(s, func(a, b string) int { return capIndex[a] - capIndex[b] })
	return s
}

func without(s []string, drop ...string) []string {
	return slices.DeleteFunc(slices.Clone(s), func(c string) bool { return slices.Contains(drop, c) })
}

func TestCapabilities(t *testing.T) {
	def := sorted(DefaultCapabilities)
	hostNoRes := without(AllCapabilities, "CAP_SYS_RESOURCE")
	for _, tc := range []struct {
		name       string
		c          *runtimeapi.Capability
		privileged bool
		o          Options
		want       []string
		ambient    []string
	}{
		{"defaults", nil, false, Options{}, def, nil},
		{"add NET_ADMIN", &runtimeapi.Capability{AddCapabilities: []string{"NET_ADMIN"}}, false, Options{},
			sorted(append(slices.Clone(def), "CAP_NET_ADMIN")), nil},
		{"add CAP_ spelling, lower case", &runtimeapi.Capability{AddCapabilities: []string{"cap_sys_admin"}}, false, Options{},
			sorted(append(slices.Clone(def), "CAP_SYS_ADMIN")), nil},
		{"drop NET_RAW", &runtimeapi.Capability{DropCapabilities: []string{"NET_RAW"}}, false, Options{},
			without(def, "CAP_NET_RAW"), nil},
		{"add ALL", &runtimeapi.Capability{AddCapabilities: []string{"ALL"}}, false, Options{}, AllCapabilities, nil},
		{"add ALL, drop CHOWN", &runtimeapi.Capability{AddCapabilities: []string{"ALL"}, DropCapabilities: []string{"CHOWN"}}, false, Options{},
			without(AllCapabilities, "CAP_CHOWN"), nil},
		{"drop ALL", &runtimeapi.Capability{DropCapabilities: []string{"ALL"}}, false, Options{}, []string{}, nil},
		// kubelet passes the pod spec's names: a capability this host does
		// not know cannot be held, so dropping it changes nothing.
		{"drop an unknown capability", &runtimeapi.Capability{DropCapabilities: []string{"CAP_", "FUTURE_CAP", "NET_RAW"}}, false, Options{},
			without(def, "CAP_NET_RAW"), nil},
		{"drop ALL, add KILL", &runtimeapi.Capability{DropCapabilities: []string{"all"}, AddCapabilities: []string{"KILL"}}, false, Options{},
			[]string{"CAP_KILL"}, nil},
		{"add and drop ALL", &runtimeapi.Capability{AddCapabilities: []string{"ALL"}, DropCapabilities: []string{"ALL"}}, false, Options{}, []string{}, nil},
		{"ambient goes to every set", &runtimeapi.Capability{DropCapabilities: []string{"ALL"}, AddAmbientCapabilities: []string{"NET_BIND_SERVICE"}}, false, Options{},
			[]string{"CAP_NET_BIND_SERVICE"}, []string{"CAP_NET_BIND_SERVICE"}},
		{"drop wins over ambient", &runtimeapi.Capability{DropCapabilities: []string{"NET_BIND_SERVICE"}, AddAmbientCapabilities: []string{"NET_BIND_SERVICE"}}, false, Options{},
			without(def, "CAP_NET_BIND_SERVICE"), []string{}},
		{"privileged gets all", &runtimeapi.Capability{DropCapabilities: []string{"ALL"}}, true, Options{}, AllCapabilities, nil},
		{"privileged gets what the runtime holds", nil, true, Options{Capabilities: hostNoRes}, hostNoRes, nil},
		{"add ALL limited to the runtime's", &runtimeapi.Capability{AddCapabilities: []string{"ALL"}}, false, Options{Capabilities: hostNoRes}, hostNoRes, nil},
		{"adding a capability the runtime lacks leaves it out", &runtimeapi.Capability{AddCapabilities: []string{"SYS_RESOURCE"}}, false,
			Options{Capabilities: hostNoRes}, def, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := capabilities(bg, tc.c, tc.privileged, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			for set, v := range map[string][]string{"bounding": got.Bounding, "effective": got.Effective, "permitted": got.Permitted} {
				if !reflect.DeepEqual(v, tc.want) {
					t.Errorf("%s: got %v, want %v", set, v, tc.want)
				}
			}
			amb := tc.ambient
			if amb == nil {
				amb = []string{}
			}
			if !reflect.DeepEqual(got.Ambient, amb) || !reflect.DeepEqual(got.Inheritable, amb) {
				t.Errorf("ambient %v inheritable %v, want %v", got.Ambient, got.Inheritable, amb)
			}
		})
	}
	for _, tc := range []struct {
		name string
		c    *runtimeapi.Capability
	}{
		{"unknown add", &runtimeapi.Capability{AddCapabilities: []string{"NET_ADMINN"}}},
		{"drop with a newline", &runtimeapi.Capability{DropCapabilities: []string{"NET_RAW\nCAP_X"}}},
		{"empty name", &runtimeapi.Capability{AddCapabilities: []string{""}}},
		{"ambient ALL", &runtimeapi.Capability{AddAmbientCapabilities: []string{"ALL"}}},
		{"newline", &runtimeapi.Capability{AddCapabilities: []string{"NET_ADMIN\nCAP_SYS_ADMIN"}}},
	} {
		t.Run("bad/"+tc.name, func(t *testing.T) {
			_, err := capabilities(bg, tc.c, false, Options{})
			wantClass(t, err, errdefs.ErrInvalidArgument)
		})
	}
}
