package main

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// layerSpec names one layer and says how to fill it. The name is the cache
// key (a layer is built once per compression and shared by every image that
// lists it) and the text of the image history entry.
type layerSpec struct {
	name  string
	build func(b *builder) (*tree, error)
}

// Files shared by the busybox-based images, modelled on the official busybox
// image (users and groups with the same ids).
const (
	etcPasswd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`
	etcGroup = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
`
	etcNsswitch = `passwd: files
group: files
shadow: files
hosts: files dns
networks: files
protocols: files
services: files
`
)

// busyboxLayer is the root filesystem every busybox-based image starts from:
// Debian's busybox with each applet a hard link in /bin (a hard link, not a
// symlink, so masking /bin/ls masks only ls), its C library, util-linux's
// ipcs, and our pgrep and nmeter (applets Debian's build lacks).
var busyboxLayer = layerSpec{name: "busybox", build: func(b *builder) (*tree, error) {
	t := newTree()
	for _, d := range []struct {
		path string
		mode int64
	}{{"bin", 0o755}, {"dev", 0o755}, {"etc", 0o755}, {"home", 0o755}, {"proc", 0o555},
		{"root", 0o700}, {"sys", 0o555}, {"tmp", 0o1777}, {"usr/bin", 0o755}, {"usr/sbin", 0o755},
		{"var/spool/mail", 0o755}, {"var/www", 0o755}} {
		if err := t.Dir(d.path, d.mode, 0, 0); err != nil {
			return nil, err
		}
	}
	if err := t.addProgram("bin/busybox", b.in.busybox, 0o755); err != nil {
		return nil, err
	}
	for _, a := range b.applets {
		if a == "busybox" {
			continue
		}
		if err := t.HostFile("bin/"+a, b.in.busybox, 0o755); err != nil {
			return nil, err
		}
	}
	if err := t.addProgram("usr/bin/ipcs", b.in.ipcs, 0o755); err != nil {
		return nil, err
	}
	files := []struct {
		path string
		mode int64
		data []byte
	}{
		{"usr/bin/pgrep", 0o755, b.in.progs["pgrep"]},
		{"bin/nmeter", 0o755, b.in.progs["nmeter"]},
		{"etc/passwd", 0o644, []byte(etcPasswd)},
		{"etc/group", 0o644, []byte(etcGroup)},
		{"etc/nsswitch.conf", 0o644, []byte(etcNsswitch)},
	}
	for _, f := range files {
		if err := t.File(f.path, f.mode, f.data); err != nil {
			return nil, err
		}
	}
	return t, nil
}}

// nginxLayer turns a busybox image into the nginx stand-in (see c/nginx.c).
var nginxLayer = layerSpec{name: "nginx", build: func(b *builder) (*tree, error) {
	t := newTree()
	return t, firstErr(
		t.File("usr/sbin/nginx", 0o755, b.in.progs["nginx"]),
		t.File("etc/nginx/conf.d/default.conf", 0o644, []byte(nginxConf(80))),
		t.File("usr/share/nginx/html/index.html", 0o644, []byte(welcomePage("nginx"))),
		t.File("usr/share/nginx/html/50x.html", 0o644, []byte("<html><body><h1>An error occurred.</h1></body></html>\n")),
		t.Dir("var/run", 0o755, 0, 0),
		t.Dir("var/log/nginx", 0o755, 0, 0),
		t.Dir("var/cache/nginx", 0o755, 0, 0),
	)
}}

// hostnetNginxLayer is cri-tools' images/hostnet-nginx: nginx listening on
// 12003, for host-network tests.
var hostnetNginxLayer = layerSpec{name: "hostnet-nginx default.conf", build: func(b *builder) (*tree, error) {
	t := newTree()
	return t, t.File("etc/nginx/conf.d/default.conf", 0o644, []byte(nginxConf(12003)))
}}

func nginxConf(port int) string {
	return fmt.Sprintf(`server {
    listen       %d;
    server_name  localhost;

    location / {
        root   /usr/share/nginx/html;
        index  index.html index.htm;
    }
}
`, port)
}

func welcomePage(what string) string {
	return fmt.Sprintf("<!DOCTYPE html>\n<html><head><title>Welcome to %[1]s!</title></head>\n<body><h1>Welcome to %[1]s!</h1><p>shim test image.</p></body></html>\n", what)
}

// httpdForeground stands in for the Apache image's httpd-foreground. The
// shell stays PID 1 with a TERM trap, because busybox httpd as PID 1 would
// ignore SIGTERM and every stop would wait for the kill timeout.
const httpdForeground = `#!/bin/sh
# httpd-foreground: Apache httpd stand-in built from busybox httpd.
echo "httpd-foreground: starting httpd (busybox httpd) on port 80, pid $$"
httpd -f -p 80 -h /usr/local/apache2/htdocs &
child=$!
trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 0' TERM INT QUIT
wait "$child"
status=$?
echo "httpd-foreground: httpd exited with status $status" >&2
exit "$status"
`

var httpdLayer = layerSpec{name: "httpd", build: func(b *builder) (*tree, error) {
	t := newTree()
	return t, firstErr(
		t.File("usr/local/apache2/bin/httpd-foreground", 0o755, []byte(httpdForeground)),
		t.File("usr/local/apache2/htdocs/index.html", 0o644, []byte("<html><body><h1>It works!</h1></body></html>\n")),
		t.Dir("usr/local/apache2/logs", 0o755, 0, 0),
	)
}}

// nonewprivsLayer holds nnp, setuid root: it prints "Effective uid: 0" unless
// no_new_privs keeps the setuid bit from taking effect.
var nonewprivsLayer = layerSpec{name: "nonewprivs", build: func(b *builder) (*tree, error) {
	t := newTree()
	return t, t.File("usr/local/bin/nnp", 0o4755, b.in.progs["nnp"])
}}

var pauseLayer = layerSpec{name: "pause", build: func(b *builder) (*tree, error) {
	t := newTree()
	return t, t.File("pause", 0o755, b.in.progs["pause"])
}}

// predefinedGroupLayer is cri-tools' images/image-predefined-group:
// default-user (uid 1000, primary group 1000) is also a member of
// group-defined-in-image (gid 50000).
var predefinedGroupLayer = layerSpec{name: "predefined-group", build: func(b *builder) (*tree, error) {
	t := newTree()
	return t, firstErr(
		t.File("etc/passwd", 0o644, []byte(etcPasswd+"default-user:x:1000:1000::/home/default-user:/bin/sh\n")),
		t.File("etc/group", 0o644, []byte(etcGroup+"default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n")),
		t.Dir("home/default-user", 0o755, 1000, 1000),
	)
}}

// fileLayer adds one root-owned 0644 file, the way cri-tools' images/image-test
// ADDs an empty file named after the image to tell its images apart.
func fileLayer(path, content string) layerSpec {
	name := "file /" + path
	if content != "" {
		name += fmt.Sprintf(" %q", content)
	}
	return layerSpec{name: name, build: func(b *builder) (*tree, error) {
		t := newTree()
		return t, t.File(path, 0o644, []byte(content))
	}}
}

// placeholderLayer fills the manifests of foreign platforms in a multi-arch
// index: a valid layer, nothing runnable.
func placeholderLayer(platform string) layerSpec {
	l := fileLayer("README", "shim test image placeholder for "+platform+": nothing here runs.\n")
	l.name = "placeholder for " + platform
	return l
}

// benchLayerSize is the payload of one pull-benchmark layer.
const benchLayerSize = 4 << 20

// benchLayer is benchLayerSize bytes of pseudo-random data (ChaCha8 with a
// fixed seed per layer, so every build gives the same bytes, and gzip cannot
// shrink it).
func benchLayer(i int) layerSpec {
	return layerSpec{name: fmt.Sprintf("bench layer %d", i), build: func(b *builder) (*tree, error) {
		var seed [32]byte
		copy(seed[:], fmt.Sprintf("shim bench layer %d", i))
		data := make([]byte, benchLayerSize)
		rng := rand.NewChaCha8(seed)
		if _, err := rng.Read(data); err != nil {
			return nil, err
		}
		t := newTree()
		return t, t.File(fmt.Sprintf("bench/layer-%d.bin", i), 0o644, data)
	}}
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// layerNames is for messages.
func layerNames(specs []layerSpec) string {
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.name
	}
	return strings.Join(names, ", ")
}
