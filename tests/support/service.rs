//! The service (`bridge-helper --serve`) for a test: started through
//! systemd's own `systemd-socket-activate` in the test's network namespace
//! and in a private mount namespace of its own (the sandbox's /etc/qemu,
//! and an empty tmpfs on /run holding only /run/bridge-helper/socket):
//! nothing of the host's /run, and no service or socket of the host.
//! Clients join that mount and network namespace, so the compiled-in
//! socket path is the test's.
#![allow(dead_code)]

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::{self, sys_ok, HelperRun, Jail, Mode, NetNs, Sandbox, HELPER};

pub const SOCKET: &str = "/run/bridge-helper/socket";
/// Debian's python3, by path: a PATH lookup may find a per-user shim
/// that another user cannot run.
pub const PYTHON: &str = "/usr/bin/python3";

/// Python defining `exchange(s)`: on the connected socket `s`, a request
/// for br0 (vnet header, one queue), then everything the service sent,
/// read to the close, on stdout. For test clients that connect in their
/// own way (from user namespaces, through io_uring).
pub const PY_EXCHANGE: &str = "\
def exchange(s):
    s.sendall(b'BHRQ\\x01\\x01\\x00\\x00\\x01\\x03br0'); s.shutdown(socket.SHUT_WR)
    d = b''
    while True:
        c = s.recv(65536)
        if not c: break
        d += c
    sys.stdout.buffer.write(d); sys.stdout.flush()
";

pub struct Service {
    child: Child,
    /// The service's mount namespace, held open for clients to join.
    mnt: fs::File,
    pub netns: PathBuf,
    /// The connector of [`Service::connect_as_nobody`], started on first use.
    connector: Mutex<Option<(Child, OwnedFd)>>,
}

impl Service {
    /// Starts the service and waits until its socket is there.
    pub fn start(sb: &Sandbox, ns: &NetNs) -> Service {
        let tool = "/usr/bin/systemd-socket-activate";
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: apt-get install systemd (scripts/install-test-deps)"
        );
        // As the unit runs it (debian/bridge-helper.service): only the
        // capabilities in its CapabilityBoundingSet=, NoNewPrivileges=yes.
        let mut cmd = sb.command(ns, "setpriv", Jail::root());
        cmd.args([
            "--bounding-set=-all,+net_admin,+dac_override,+setuid,+setgid,+setpcap,+kill",
            "--no-new-privs",
            "--",
            tool,
        ])
        .args(["-l", SOCKET, HELPER, "--serve"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: raw system calls on static strings between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                empty_run(0)?;
                sys_ok(libc::mkdir(c"/run/bridge-helper".as_ptr(), 0o755))
            });
        }
        let child = common::spawn(&mut cmd);
        let root = wait_for_socket(&child);
        // What the socket unit's SocketMode=0666 does (the ACL is the
        // gate); systemd-socket-activate binds with 0644.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&root, fs::Permissions::from_mode(0o666)).expect("chmod socket");
        Service::answering(child, ns)
    }

    /// The service as started without systemd: `bridge-helper --serve`
    /// as root binds the socket itself, in a /run where
    /// /run/bridge-helper does not exist yet, with `umask` in force.
    pub fn binding_itself(sb: &Sandbox, ns: &NetNs, umask: libc::mode_t) -> Service {
        let mut cmd = sb.command(ns, HELPER, Jail::root());
        cmd.arg("--serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: raw system calls on static strings between fork and exec.
        unsafe {
            cmd.pre_exec(move || empty_run(umask));
        }
        let child = common::spawn(&mut cmd);
        // The path is there from the bind, before the listen.
        let root = wait_for_socket(&child);
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&root).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the service never listened"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Service::answering(child, ns)
    }

    /// Holds the started service's mount namespace and waits until the
    /// service itself answers.
    fn answering(child: Child, ns: &NetNs) -> Service {
        let mnt = fs::File::open(format!("/proc/{}/ns/mnt", child.id())).expect("service mnt ns");
        let svc = Service {
            child,
            mnt,
            netns: ns.netns_path(),
            connector: Mutex::new(None),
        };
        // Answered once: the service itself (not only the tool that bound
        // its socket) is up, and has set itself up.
        assert_eq!(svc.ask(b"X").status, 2);
        svc.wait_idle(Duration::from_secs(5));
        svc
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `path` in the service's mount namespace, from outside it.
    pub fn path(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.pid()))
    }

    /// A Command for `program` in the service's namespaces, as `jail`'s user.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>, jail: Jail) -> Command {
        let mut cmd = Command::new(program);
        let netns = fs::File::open(&self.netns).expect("open netns");
        let mnt = self.mnt.try_clone().expect("dup mnt ns");
        let groups: Vec<libc::gid_t> = jail.groups.clone();
        // SAFETY: raw system calls on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                sys_ok(libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET))?;
                sys_ok(libc::setns(mnt.as_raw_fd(), libc::CLONE_NEWNS))?;
                if let Some(uid) = jail.uid {
                    let gid = jail.gid.unwrap_or(uid);
                    sys_ok(libc::setgroups(groups.len(), groups.as_ptr()))?;
                    sys_ok(libc::setresgid(gid, gid, gid))?;
                    sys_ok(libc::setresuid(uid, uid, uid))?;
                }
                Ok(())
            });
        }
        cmd
    }

    /// The binary installed without privilege (the forwarder), run as
    /// `jail`'s user with `args` and a socketpair as `--fd`.
    pub fn forward(&self, sb: &Sandbox, jail: Jail, args: &[&str]) -> HelperRun {
        let program = sb.install(HELPER, Mode::Unprivileged);
        let mut cmd = self.command(&program, jail);
        cmd.args(args);
        let (child, ours) = common::spawn_with_socket(&mut cmd, true);
        let out = child.wait_with_output().expect("wait");
        HelperRun::collect(out, ours)
    }

    /// The service's open descriptors, by number.
    pub fn open_fds(&self) -> Vec<String> {
        let mut fds: Vec<String> = fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("service fds")
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        fds.sort();
        fds
    }

    /// The service's children (its sessions) right now.
    pub fn children(&self) -> Vec<String> {
        let path = format!("/proc/{0}/task/{0}/children", self.pid());
        fs::read_to_string(path)
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// Waits until the service has no session left.
    pub fn wait_idle(&self, limit: Duration) {
        let start = Instant::now();
        while !self.children().is_empty() {
            assert!(
                start.elapsed() < limit,
                "sessions still running: {:?}",
                self.children()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The service's threads: 1, or its sessions' forks would not be safe.
    pub fn threads(&self) -> u32 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Resident memory of the service, in kB.
    pub fn rss_kb(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Connects to the socket as `jail`'s user, from a helper process
    /// (python3) in the service's namespaces, sends `bytes` and returns
    /// what came back (status byte and line decoded by the test). The
    /// client shuts its sending side down after `bytes`.
    pub fn raw_exchange(&self, jail: Jail, bytes: &[u8]) -> Vec<u8> {
        let script = format!(
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect('{SOCKET}')\ns.sendall(bytes.fromhex('{}'))\ns.shutdown(socket.SHUT_WR)\nd=b''\nwhile True:\n  c=s.recv(65536)\n  if not c: break\n  d+=c\nsys.stdout.buffer.write(d)\n",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        self.python(jail, &script)
    }

    /// Runs the python3 `script` as `jail`'s user in the service's
    /// namespaces; fails unless it exits 0; returns its stdout.
    pub fn python(&self, jail: Jail, script: &str) -> Vec<u8> {
        let out = common::output(self.command(PYTHON, jail).args(["-c", script]));
        assert!(
            out.status.success(),
            "python3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

/// Between fork and exec, in the service's own mount namespace: `umask`,
/// and an empty tmpfs on /run, so that nothing of the host's /run shows.
fn empty_run(umask: libc::mode_t) -> std::io::Result<()> {
    // SAFETY: umask and mount with NUL-terminated static strings.
    unsafe {
        libc::umask(umask);
        sys_ok(libc::mount(
            c"tmpfs".as_ptr(),
            c"/run".as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=0755".as_ptr().cast(),
        ))
    }
}

/// Waits until the socket is there in `child`'s mount namespace; its
/// path from outside.
fn wait_for_socket(child: &Child) -> PathBuf {
    let root = PathBuf::from(format!("/proc/{}/root{SOCKET}", child.id()));
    let start = Instant::now();
    while !root.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the service's socket never appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    root
}

/// A request for `bridge`, as the wire format spells it.
pub fn request(bridge: &[u8]) -> Vec<u8> {
    let mut r = b"BHRQ\x01\x01\x00\x00\x01".to_vec();
    r.push(u8::try_from(bridge.len()).unwrap());
    r.extend_from_slice(bridge);
    r
}

/// What the service sent on one connection until it closed.
#[derive(Debug)]
pub struct Reply {
    pub fds: Vec<std::os::fd::OwnedFd>,
    pub tap: bool,
    pub status: u8,
    pub line: String,
}

impl Service {
    /// A connection from this (root) process, through the service's root
    /// directory: the compiled-in path as seen in its mount namespace. A
    /// request on it that reaches the peer's examination is refused (see
    /// [`Service::connect_as_nobody`]).
    pub fn connect(&self) -> std::os::unix::net::UnixStream {
        std::os::unix::net::UnixStream::connect(format!("/proc/{}/root{SOCKET}", self.pid()))
            .expect("connect to the service")
    }

    /// A connection made by a process of uid 65534 (nobody), for requests
    /// the service must examine the peer of: this test process, root with
    /// every capability, is a peer the service may not examine (it holds
    /// no CAP_SYS_PTRACE) and refuses. A python3 connector in the
    /// service's namespaces, started once, connects for each byte it is
    /// sent and sends the connection back; it lives as long as the
    /// service, so it is alive when the session looks at it.
    pub fn connect_as_nobody(&self) -> std::os::unix::net::UnixStream {
        let mut connector = self.connector.lock().unwrap();
        let (_, control) = connector.get_or_insert_with(|| {
            let script = format!(
                "import socket,sys\nc=socket.socket(fileno=int(sys.argv[1].split('=')[1]))\nwhile c.recv(1):\n  s=socket.socket(socket.AF_UNIX)\n  s.connect('{SOCKET}')\n  socket.send_fds(c,[b'x'],[s.fileno()])\n  s.close()\n"
            );
            let mut cmd = self.command(PYTHON, Jail::user(common::NOBODY));
            cmd.args(["-c", &script]);
            common::spawn_with_socket(&mut cmd, true)
        });
        let sent = nix::unistd::write(&*control, b"c").expect("asking the connector");
        assert_eq!(sent, 1);
        let mut byte = [0u8; 1];
        let got = common::sys::recv_with_fds(control.as_raw_fd(), &mut byte, false)
            .expect("the connector's connection");
        let fd = got
            .fds
            .into_iter()
            .next()
            .expect("a connection from the connector");
        std::os::unix::net::UnixStream::from(fd)
    }

    /// [`Service::ask`] on a connection of [`Service::connect_as_nobody`].
    pub fn ask_as_nobody(&self, bytes: &[u8]) -> Reply {
        use std::io::Write;
        let mut conn = self.connect_as_nobody();
        conn.write_all(bytes).expect("sending");
        conn.shutdown(std::net::Shutdown::Write).expect("shutdown");
        read_reply(&conn)
    }

    /// Sends `bytes` (then shuts down the sending side) and reads the
    /// reply to the end. The service may answer and hang up before it
    /// has read anything (a connection turned away as busy): the write
    /// then fails with EPIPE, and the answer is still there to read.
    pub fn ask(&self, bytes: &[u8]) -> Reply {
        use std::io::Write;
        let mut conn = self.connect();
        let sent = conn
            .write_all(bytes)
            .and_then(|()| conn.shutdown(std::net::Shutdown::Write));
        match sent {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("sending: {e}"),
            _ => read_reply(&conn),
        }
    }
}

/// Reads what the service sends until it closes; panics on a malformed
/// answer.
pub fn read_reply(conn: &std::os::unix::net::UnixStream) -> Reply {
    let mut data = Vec::new();
    let mut fds = Vec::new();
    loop {
        let mut buf = [0u8; 8192];
        let got = match common::sys::recv_with_fds(conn.as_raw_fd(), &mut buf, false) {
            Ok(got) => got,
            // The service closed with bytes of ours unread (it answered
            // before reading them all: busy, say): the end, as EOF is.
            Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => break,
            Err(e) => panic!("recvmsg: {e}"),
        };
        fds.extend(got.fds);
        if got.bytes == 0 {
            break;
        }
        data.extend_from_slice(&buf[..got.bytes]);
    }
    let (tap, status, line) = answer(&data);
    Reply {
        fds,
        tap,
        status,
        line,
    }
}

/// (tap sent, status, line) of the bytes a client received: the tap's
/// one byte first if a tap came, then the answer frame; panics on
/// anything else.
pub fn answer(data: &[u8]) -> (bool, u8, String) {
    let (tap, frame) = match data.split_first() {
        Some((0, rest)) => (true, rest),
        _ => (false, data),
    };
    assert!(
        frame.len() >= 8 && &frame[..5] == b"BHAN\x01",
        "not an answer: {data:?}"
    );
    (
        tap,
        frame[5],
        String::from_utf8_lossy(&frame[8..]).into_owned(),
    )
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some((mut connector, _)) = self.connector.lock().unwrap().take() {
            let _ = connector.kill();
            let _ = connector.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails unless `path` (as this process sees it) is neither setuid nor
/// setgid and carries no file capability.
pub fn assert_no_privilege(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let mode = fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode();
    assert_eq!(
        mode & 0o6000,
        0,
        "{} is setuid or setgid (mode {mode:o})",
        path.display()
    );
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path and name; a null buffer of size 0
    // asks only for the value's size.
    let size = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    let err = std::io::Error::last_os_error();
    assert!(
        size < 0 && err.raw_os_error() == Some(libc::ENODATA),
        "{} carries a file capability (security.capability: {size} bytes, {err})",
        path.display()
    );
    let getcap = common::sh("/usr/sbin/getcap", &[&path.display().to_string()]);
    assert_eq!(getcap.trim(), "", "getcap {}", path.display());
}
