//! Red team of the service's user-namespace rule: `SO_PEERCRED` and
//! `SO_PEERGROUPS` are the credentials `connect()` ran with, which need not
//! be the connecting process's own. An io_uring personality
//! (`IORING_REGISTER_PERSONALITY`) lets any process holding the ring submit
//! a `connect` with the credentials of the process that registered it, from
//! another user namespace. The service reads the namespace of the *pid*,
//! so credentials made where `setgroups` is allowed (a group shed) must
//! not pass for a host process's, nor for a sandbox's whose first level
//! denies setgroups.
mod common;
#[path = "support/service.rs"]
mod service;

use common::*;
use service::{answer, Service};

/// The group that may read the include that denies br0.
const ACL_GROUP: u32 = 4242;

/// uid 65534 with group `ACL_GROUP` (denied br0 by the include) asks for
/// br0 with credentials made in a user namespace that allows setgroups
/// (the test, as root, maps it as newuidmap/newgidmap would for a user
/// with subordinate ids) where it dropped that group: a child there
/// registers them as an io_uring personality of the ring it inherited
/// (io_uring descriptors cannot be sent) from its parent, a process of the
/// same user with its full groups in the test's namespace, which connects
/// through the ring with that personality. `sandboxed`: the connecting
/// process first enters a user namespace of its own with setgroups "deny"
/// (as bubblewrap makes). Without `personality`, the same process connects
/// through the ring with its own credentials (the control: refused by the
/// include). Returns the raw answer.
fn ask_through_io_uring(svc: &Service, sandboxed: bool, personality: bool) -> Vec<u8> {
    let script = format!(
        r#"
import ctypes, mmap, os, socket, struct, sys
{exchange}
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NEWUSER = 0x10000000
SETUP, ENTER, REGISTER = 425, 426, 427
def check(rc, what):
    if rc < 0:
        e = ctypes.get_errno(); sys.stderr.write('%s: %s\n' % (what, os.strerror(e))); os._exit(20)
    return rc
r, w = os.pipe(); r2, w2 = os.pipe()
connector = os.fork()
if connector == 0:
    os.setgroups([{group}]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)
    libc.prctl(4, 1)  # PR_SET_DUMPABLE: its own /proc/self files are its own
    params = ctypes.create_string_buffer(120)
    ring = check(libc.syscall(SETUP, 4, params), 'io_uring_setup')
    shed = os.fork()
    if shed == 0:
        # The ring is inherited: io_uring descriptors cannot be sent.
        check(libc.unshare(NEWUSER), 'unshare')
        os.write(w, b'%d\n' % os.getpid()); os.read(r2, 1)
        os.setresgid(0, 0, 0); os.setgroups([]); os.setresuid(0, 0, 0)
        personality = check(libc.syscall(REGISTER, ring, 9, None, 0), 'register personality')
        os._exit(personality)
    status = os.waitpid(shed, 0)[1]
    assert os.WIFEXITED(status), status
    personality = os.WEXITSTATUS(status)
    assert 0 < personality < 20, personality
    if not {personality}: personality = 0
    assert os.getgroups() == [{group}], os.getgroups()
    if {sandboxed}:
        check(libc.unshare(NEWUSER), 'unshare')
        open('/proc/self/setgroups', 'w').write('deny')
        open('/proc/self/uid_map', 'w').write('65534 65534 1')
        open('/proc/self/gid_map', 'w').write('65534 65534 1')
        assert open('/proc/self/setgroups').read() == 'deny\n'
    sq_entries, cq_entries = struct.unpack_from('II', params, 0)
    sq = struct.unpack_from('IIIIIIII', params, 40)
    cq = struct.unpack_from('IIIIIIII', params, 80)
    sq_ring = mmap.mmap(ring, sq[6] + sq_entries * 4, offset=0)
    cq_ring = mmap.mmap(ring, cq[5] + cq_entries * 16, offset=0x8000000)
    sqes = mmap.mmap(ring, sq_entries * 64, offset=0x10000000)
    s = socket.socket(socket.AF_UNIX)
    path = b'{sock}'
    addr = ctypes.create_string_buffer(struct.pack('H', socket.AF_UNIX) + path + b'\0', 110)
    # IORING_OP_CONNECT: fd, addr, addrlen in off; the personality.
    struct.pack_into('BBHiQQIIQHHiQQ', sqes, 0, 16, 0, 0, s.fileno(), 2 + len(path) + 1,
                     ctypes.addressof(addr), 0, 0, 7, 0, personality, 0, 0, 0)
    tail = struct.unpack_from('I', sq_ring, sq[1])[0]
    mask = struct.unpack_from('I', sq_ring, sq[2])[0]
    struct.pack_into('I', sq_ring, sq[6] + 4 * (tail & mask), 0)
    struct.pack_into('I', sq_ring, sq[1], tail + 1)
    check(libc.syscall(ENTER, ring, 1, 1, 1, None, 0), 'io_uring_enter')
    head = struct.unpack_from('I', cq_ring, cq[0])[0]
    user_data, res, flags = struct.unpack_from('QiI', cq_ring, cq[5] + 16 * (head & cq_entries - 1))
    if res < 0:
        sys.stderr.write('connect: %s\n' % os.strerror(-res)); os._exit(21)
    exchange(s); os._exit(0)
shed = int(os.read(r, 16))
open('/proc/%d/uid_map' % shed, 'w').write('0 65534 1')
open('/proc/%d/setgroups' % shed, 'w').write('allow')
open('/proc/%d/gid_map' % shed, 'w').write('0 65534 1')
os.write(w2, b'x')
sys.exit(os.waitstatus_to_exitcode(os.waitpid(connector, 0)[1]))
"#,
        group = ACL_GROUP,
        sock = service::SOCKET,
        sandboxed = if sandboxed { "True" } else { "False" },
        personality = if personality { "True" } else { "False" },
        exchange = service::PY_EXCHANGE,
    );
    svc.python(Jail::root(), &script)
}

fn service_denying_br0_to_the_group(ns: &NetNs, sb: &Sandbox) -> Service {
    sb.acl("allow br0\ninclude /etc/qemu/staff.conf\n");
    sb.etc_file("staff.conf", "deny br0\n", 0o640);
    sb.etc_chown("staff.conf", 0, ACL_GROUP);
    Service::start(sb, ns)
}

/// With its own credentials the connecting process is denied br0 by the
/// include; with the personality's, it is refused for using them.
fn assert_refused_either_way(sandboxed: bool) {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    let svc = service_denying_br0_to_the_group(&ns, &sb);
    for personality in [false, true] {
        let (tap, status, line) = answer(&ask_through_io_uring(&svc, sandboxed, personality));
        let what = format!("personality {personality}: {line}");
        assert_eq!((tap, status), (false, 4), "{what}");
        let why = if personality {
            "connected with ids or groups that are not its process's own"
        } else {
            "denied by /etc/qemu/staff.conf"
        };
        assert!(line.contains(why), "{what}");
    }
    assert_no_taps(&ns);
}

#[test]
fn credentials_from_a_namespace_that_allows_setgroups_do_not_pass_for_a_host_process() {
    assert_refused_either_way(false);
}

#[test]
fn credentials_from_a_namespace_that_allows_setgroups_do_not_pass_for_a_sandboxs() {
    assert_refused_either_way(true);
}
