package specgen

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shim-cri/shim/pkg/errdefs"
)

func iv(v int64) *runtimeapi.Int64Value { return &runtimeapi.Int64Value{Value: v} }

func TestResolveUser(t *testing.T) {
	root := rootfs(t)
	for _, tc := range []struct {
		name string
		req  userRequest
		want specs.User
	}{
		{"image default is root, with root's groups", userRequest{}, specs.User{UID: 0, GID: 0, AdditionalGids: []uint32{0, 1}}},
		{"image uid", userRequest{imageUser: "33"}, specs.User{UID: 33, GID: 33, AdditionalGids: []uint32{33, 44}}},
		{"image name", userRequest{imageUser: "www-data"}, specs.User{UID: 33, GID: 33, AdditionalGids: []uint32{33, 44}}},
		{"image uid:gid", userRequest{imageUser: "1003:1004"}, specs.User{UID: 1003, GID: 1004, AdditionalGids: []uint32{1004}}},
		{"image name:group", userRequest{imageUser: "www-data:nogroup"}, specs.User{UID: 33, GID: 65534, AdditionalGids: []uint32{65534, 44}}},
		{"image uid:group", userRequest{imageUser: "33:daemon"}, specs.User{UID: 33, GID: 1, AdditionalGids: []uint32{1, 44}}},
		{"image name:gid", userRequest{imageUser: "nobody:7"}, specs.User{UID: 65534, GID: 7, AdditionalGids: []uint32{7}}},
		{"uid without passwd entry: gid 0", userRequest{runAsUser: iv(1001)}, specs.User{UID: 1001, GID: 0, AdditionalGids: []uint32{0}}},
		{"run_as_user overrides image user and its group", userRequest{runAsUser: iv(1000), imageUser: "33:33"},
			specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 50000, 44}}},
		{"run_as_user + run_as_group", userRequest{runAsUser: iv(1001), runAsGroup: iv(1002)}, specs.User{UID: 1001, GID: 1002, AdditionalGids: []uint32{1002}}},
		{"run_as_username", userRequest{username: "nobody"}, specs.User{UID: 65534, GID: 65534, AdditionalGids: []uint32{65534}}},
		{"run_as_username + run_as_group", userRequest{username: "nobody", runAsGroup: iv(5)}, specs.User{UID: 65534, GID: 5, AdditionalGids: []uint32{5}}},
		{"merge: image groups then supplemental groups", userRequest{runAsUser: iv(1000), groups: []int64{1234, 50000}},
			specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 50000, 44, 1234}}},
		{"strict: only supplemental groups", userRequest{runAsUser: iv(1000), groups: []int64{1234}, strict: true},
			specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 1234}}},
		{"largest valid uid", userRequest{imageUser: "4294967294"}, specs.User{UID: 4294967294, GID: 0, AdditionalGids: []uint32{0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolveUser(root, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name  string
		req   userRequest
		class error
	}{
		{"unknown user name", userRequest{username: "nosuchuser"}, errdefs.ErrNotFound},
		{"unknown image user name", userRequest{imageUser: "ghost"}, errdefs.ErrNotFound},
		{"unknown group name", userRequest{imageUser: "33:ghosts"}, errdefs.ErrNotFound},
		{"uid overflowing uint32", userRequest{imageUser: "4294967296"}, errdefs.ErrInvalidArgument},
		{"uid (uid_t)-1", userRequest{imageUser: "4294967295"}, errdefs.ErrInvalidArgument},
		{"huge numeric uid", userRequest{imageUser: "99999999999999999999999"}, errdefs.ErrInvalidArgument},
		{"gid overflowing uint32", userRequest{imageUser: "33:4294967296"}, errdefs.ErrInvalidArgument},
		{"negative run_as_user", userRequest{runAsUser: iv(-1)}, errdefs.ErrInvalidArgument},
		{"run_as_user too large", userRequest{runAsUser: iv(1 << 32)}, errdefs.ErrInvalidArgument},
		{"negative run_as_group", userRequest{runAsUser: iv(1), runAsGroup: iv(-5)}, errdefs.ErrInvalidArgument},
		{"run_as_group alone", userRequest{runAsGroup: iv(5)}, errdefs.ErrInvalidArgument},
		{"negative supplemental group", userRequest{groups: []int64{-1}}, errdefs.ErrInvalidArgument},
		{"name with a newline", userRequest{username: "root\n"}, errdefs.ErrInvalidArgument},
		{"name with a slash", userRequest{username: "../root"}, errdefs.ErrInvalidArgument},
	} {
		t.Run("bad/"+tc.name, func(t *testing.T) {
			_, err := resolveUser(root, tc.req)
			wantClass(t, err, tc.class)
		})
	}
}

func TestResolveUserNoEtcFiles(t *testing.T) {
	root := t.TempDir()
	u, err := resolveUser(root, userRequest{imageUser: "1000"})
	if err != nil {
		t.Fatal(err)
	}
	if u.UID != 1000 || u.GID != 0 || !reflect.DeepEqual(u.AdditionalGids, []uint32{0}) {
		t.Fatalf("got %+v", u)
	}
	_, err = resolveUser(root, userRequest{imageUser: "root"})
	wantClass(t, err, errdefs.ErrNotFound)
}

// A /etc/passwd that is a symlink to a host file must be resolved inside
// the rootfs, never on the host.
func TestResolveUserSymlinkStaysInRoot(t *testing.T) {
	outside := t.TempDir()
	hostPasswd := filepath.Join(outside, "passwd")
	writeFile(t, hostPasswd, "evil:x:4242:4242::/:/bin/sh\n")
	hostGroup := filepath.Join(outside, "group")
	writeFile(t, hostGroup, "evilgroup:x:4343:evil\n")

	for _, target := range []string{hostPasswd, "../../../../../../../../" + strings.TrimPrefix(hostPasswd, "/")} {
		root := t.TempDir()
		if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(root, "etc/passwd")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(hostGroup, filepath.Join(root, "etc/group")); err != nil {
			t.Fatal(err)
		}
		_, err := resolveUser(root, userRequest{imageUser: "evil"})
		wantClass(t, err, errdefs.ErrNotFound)
		_, err = resolveUser(root, userRequest{imageUser: "0:evilgroup"})
		wantClass(t, err, errdefs.ErrNotFound)
		u, err := resolveUser(root, userRequest{imageUser: "4242"})
		if err != nil {
			t.Fatal(err)
		}
		if u.GID != 0 {
			t.Fatalf("uid 4242 got the host file's gid: %+v", u)
		}

		// The same link target inside the rootfs is what counts.
		writeFile(t, filepath.Join(root, hostPasswd), "inside:x:7:8::/:/bin/sh\n")
		u, err = resolveUser(root, userRequest{imageUser: "inside"})
		if err != nil {
			t.Fatal(err)
		}
		if u.UID != 7 || u.GID != 8 {
			t.Fatalf("got %+v", u)
		}
	}
}

// The /etc directory itself being a symlink out of the root is contained
// too.
func TestResolveUserSymlinkedEtcDir(t *testing.T) {
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "passwd"), "evil:x:4242:4242::/:/bin/sh\n")
	root := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(root, "etc")); err != nil {
		t.Fatal(err)
	}
	_, err := resolveUser(root, userRequest{imageUser: "evil"})
	wantClass(t, err, errdefs.ErrNotFound)
}

func TestResolveUserCapsAndFileTypes(t *testing.T) {
	root := t.TempDir()
	big := strings.Repeat("x:x:1:1::/:/bin/sh\n", MaxIDFileSize/18+1)
	writeFile(t, filepath.Join(root, "etc/passwd"), big)
	_, err := resolveUser(root, userRequest{imageUser: "root"})
	wantClass(t, err, errdefs.ErrResourceExhausted)

	root = t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc/passwd"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = resolveUser(root, userRequest{imageUser: "root"})
	wantClass(t, err, errdefs.ErrInvalidArgument)

	// A FIFO must not block the daemon.
	root = t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(root, "etc/passwd"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = resolveUser(root, userRequest{imageUser: "root"})
	wantClass(t, err, errdefs.ErrInvalidArgument)
}

func TestParsePasswdGroup(t *testing.T) {
	p := parsePasswd([]byte("a:x:1:2::/:/bin/sh\nb:x:notanumber:2::/:\n:x:3:3::/:\nc:x:4294967296:1::/:\nd:x:5:6\n"))
	want := []passwdEntry{{"a", 1, 2}, {"d", 5, 6}}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("passwd: got %+v", p)
	}
	g := parseGroup([]byte("g:x:10:a,b,,c\nh:x:11\nbad:x:x:a\n"))
	wantG := []groupEntry{{"g", 10, []string{"a", "b", "c"}}, {"h", 11, nil}}
	if !reflect.DeepEqual(g, wantG) {
		t.Fatalf("group: got %+v", g)
	}
}

// The same containment and file-type checks hold on the fallback used on
// kernels without openat2.
func TestResolveUserWithoutOpenat2(t *testing.T) {
	saved := haveOpenat2
	haveOpenat2 = func() bool { return false }
	defer func() { haveOpenat2 = saved }()
	t.Run("symlink", TestResolveUserSymlinkStaysInRoot)
	t.Run("etc dir symlink", TestResolveUserSymlinkedEtcDir)
	t.Run("caps and types", TestResolveUserCapsAndFileTypes)
	t.Run("lookups", TestResolveUser)
}
