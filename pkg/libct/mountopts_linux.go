package libct

import (
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

type flagDef struct {
	clear bool
	flag  uintptr
}

var mountFlagDefs = map[string]flagDef{
	"acl": {false, unix.MS_POSIXACL}, "async": {true, unix.MS_SYNCHRONOUS}, "atime": {true, unix.MS_NOATIME},
	"bind": {false, unix.MS_BIND}, "defaults": {false, 0}, "dev": {true, unix.MS_NODEV},
	"diratime": {true, unix.MS_NODIRATIME}, "dirsync": {false, unix.MS_DIRSYNC}, "exec": {true, unix.MS_NOEXEC},
	"iversion": {false, unix.MS_I_VERSION}, "lazytime": {false, unix.MS_LAZYTIME}, "loud": {true, unix.MS_SILENT},
	"mand": {false, unix.MS_MANDLOCK}, "noacl": {true, unix.MS_POSIXACL}, "noatime": {false, unix.MS_NOATIME},
	"nodev": {false, unix.MS_NODEV}, "nodiratime": {false, unix.MS_NODIRATIME}, "noexec": {false, unix.MS_NOEXEC},
	"noiversion": {true, unix.MS_I_VERSION}, "nolazytime": {true, unix.MS_LAZYTIME}, "nomand": {true, unix.MS_MANDLOCK},
	"norelatime": {true, unix.MS_RELATIME}, "nostrictatime": {true, unix.MS_STRICTATIME}, "nosuid": {false, unix.MS_NOSUID},
	"nosymfollow": {false, unix.MS_NOSYMFOLLOW}, "rbind": {false, unix.MS_BIND | unix.MS_REC},
	"relatime": {false, unix.MS_RELATIME}, "remount": {false, unix.MS_REMOUNT}, "ro": {false, unix.MS_RDONLY},
	"rw": {true, unix.MS_RDONLY}, "silent": {false, unix.MS_SILENT}, "strictatime": {false, unix.MS_STRICTATIME},
	"suid": {true, unix.MS_NOSUID}, "sync": {false, unix.MS_SYNCHRONOUS},
}

var propagationDefs = map[string]uintptr{
	"private": unix.MS_PRIVATE, "rprivate": unix.MS_PRIVATE | unix.MS_REC,
	"shared": unix.MS_SHARED, "rshared": unix.MS_SHARED | unix.MS_REC,
	"slave": unix.MS_SLAVE, "rslave": unix.MS_SLAVE | unix.MS_REC,
	"unbindable": unix.MS_UNBINDABLE, "runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

// recursive mount attributes, applied with mount_setattr(AT_RECURSIVE).
var recAttrDefs = map[string]struct {
	clear bool
	attr  uint64
}{
	"rro": {false, unix.MOUNT_ATTR_RDONLY}, "rrw": {true, unix.MOUNT_ATTR_RDONLY},
	"rnosuid": {false, unix.MOUNT_ATTR_NOSUID}, "rsuid": {true, unix.MOUNT_ATTR_NOSUID},
	"rnodev": {false, unix.MOUNT_ATTR_NODEV}, "rdev": {true, unix.MOUNT_ATTR_NODEV},
	"rnoexec": {false, unix.MOUNT_ATTR_NOEXEC}, "rexec": {true, unix.MOUNT_ATTR_NOEXEC},
	"rnodiratime": {false, unix.MOUNT_ATTR_NODIRATIME}, "rdiratime": {true, unix.MOUNT_ATTR_NODIRATIME},
	"rnosymfollow": {false, unix.MOUNT_ATTR_NOSYMFOLLOW}, "rsymfollow": {true, unix.MOUNT_ATTR_NOSYMFOLLOW},
}

type parsedMount struct {
	flags     uintptr
	propFlags []uintptr
	recSet    uint64
	recClr    uint64
	data      string
	isBind    bool
	recursive bool
	idmap     bool // idmap or ridmap: an idmapped bind mount
	ridmap    bool // the idmapping applies to every mount of the tree
}

func parseMountOptions(opts []string) (parsedMount, error) {
	var pm parsedMount
	var data []string
	for _, o := range opts {
		if d, ok := mountFlagDefs[o]; ok {
			if d.clear {
				pm.flags &^= d.flag
			} else {
				pm.flags |= d.flag
			}
			continue
		}
		if p, ok := propagationDefs[o]; ok {
			pm.propFlags = append(pm.propFlags, p)
			continue
		}
		if r, ok := recAttrDefs[o]; ok {
			if r.clear {
				pm.recClr |= r.attr
			} else {
				pm.recSet |= r.attr
			}
			continue
		}
		switch o {
		case "idmap":
			pm.idmap = true
			continue
		case "ridmap":
			pm.idmap, pm.ridmap = true, true
			continue
		case "tmpcopyup":
			continue
		}
		data = append(data, o)
	}
	pm.data = strings.Join(data, ",")
	pm.isBind = pm.flags&unix.MS_BIND != 0
	pm.recursive = pm.flags&unix.MS_REC != 0
	return pm, nil
}

// parseSpecMount parses a spec mount's options: type "bind" is a bind
// mount whatever the options say, and id mappings make it idmapped.
func parseSpecMount(m specs.Mount) (parsedMount, error) {
	pm, err := parseMountOptions(m.Options)
	if err != nil {
		return pm, err
	}
	if m.Type == "bind" {
		pm.isBind = true
		pm.flags |= unix.MS_BIND
	}
	if len(m.UIDMappings) > 0 || len(m.GIDMappings) > 0 {
		pm.idmap = true
	}
	return pm, nil
}
