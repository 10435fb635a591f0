//! The service rows (issue 26): `bridge-helper --serve` started as the
//! tests start it (tests/support/service.rs): `setpriv` with the unit's
//! capability bounding set and no new privileges, then systemd's own
//! `systemd-socket-activate` binding `/run/bridge-helper/socket`, in a mount
//! namespace of its own (the bench's, with an empty tmpfs on `/run`: never
//! the host's `/run`) and the bench's network namespace. Clients join that
//! mount namespace, so the compiled-in socket path is the bench's.
//!
//! Four clients at each tap count, every iteration in a fixed-seed shuffled
//! order: our setuid mode and QEMU's helper (setuid, as in the main tables),
//! the forwarder (our binary with no setuid bit and no capability, run as
//! nobody QEMU-style with `--fd`: it forwards to the service) and the direct
//! client (the client crate's `Service::request`, in a forked child already
//! in the namespaces as nobody, timed from the call to its return). Then K of
//! each at once, interleaved by round; then cold starts, apart: a fresh
//! service that is not running yet (systemd-socket-activate holds only the
//! socket), timed over its first request.
//!
//! Beside them, the forwarded floor (benches/floor.c's `--serve` and
//! `--forward`): issue 26's architecture with no checks at all, the
//! floor's tap work reached through a root server on a Unix socket in the
//! bench's directory (bound by the bench and handed over, as socket
//! activation does). Two servers: a fork per connection, and pre-forked
//! spares that accept by themselves. Their clients: the floor's forwarder
//! (exec'd as the forwarder is), the bench connecting in process (as the
//! client crate is timed), and the plain floor (setuid), all in the same
//! shuffle: what the architecture costs on this machine when nothing but
//! the kernel's work is done.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::fs;
use std::io::{IoSlice, Read as _, Write as _};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::drivers::{
    child_die, child_enter, child_execve, concurrent, finish_round, run_once, socketpair, tap_name,
    ConcRound, ExecPlan, Ns, Rng, Run,
};
use crate::setup::{
    check_interrupted, chown_root, cstr, last_err, link_count, linkage, open_ro, pipe, set_mode,
    wait_child, Mode, Prog, Role,
};
use crate::{sys, Res, BRIDGE};

/// The socket, as the service and its clients see it (src/service/mod.rs).
const SOCKET: &str = "/run/bridge-helper/socket";
/// The unit's `CapabilityBoundingSet=` (debian/bridge-helper.service).
const BOUNDING_SET: &str =
    "--bounding-set=-all,+net_admin,+dac_override,+setuid,+setgid,+setpcap,+kill";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Client {
    /// Our binary, setuid root, run as nobody.
    Setuid,
    /// QEMU's helper, setuid root, run as nobody.
    Qemu,
    /// Our binary without privilege, run as nobody: it forwards.
    Forwarder,
    /// The client crate's `Service::request`, as nobody.
    Direct,
    /// benches/floor.c, setuid root, run as nobody: the kernel's work only.
    Floor,
    /// The floor's `--forward`, plain, run as nobody, through its server.
    FloorForward(Serve),
    /// The bench connecting to the floor's server in process, as nobody.
    FloorDirect(Serve),
}

/// How the floor's server (`floor --serve=...`) runs its sessions.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Serve {
    /// Accept, fork the session, reap: as our service does.
    Fork,
    /// Sessions forked ahead, each accepting by itself.
    Spares,
}

impl Serve {
    pub const ALL: [Serve; 2] = [Serve::Fork, Serve::Spares];
    pub fn arg(self) -> &'static str {
        match self {
            Serve::Fork => "fork",
            Serve::Spares => "spares",
        }
    }
}

impl Client {
    pub const ALL: [Client; 9] = [
        Client::Setuid,
        Client::Qemu,
        Client::Forwarder,
        Client::Direct,
        Client::Floor,
        Client::FloorForward(Serve::Fork),
        Client::FloorForward(Serve::Spares),
        Client::FloorDirect(Serve::Fork),
        Client::FloorDirect(Serve::Spares),
    ];
    pub fn label(self) -> &'static str {
        match self {
            Client::Setuid => "bridge-helper, setuid",
            Client::Qemu => "qemu-bridge-helper, setuid",
            Client::Forwarder => "forwarder → service",
            Client::Direct => "client crate → service",
            Client::Floor => "floor, setuid",
            Client::FloorForward(Serve::Fork) => "floor forwarder → floor server (fork)",
            Client::FloorForward(Serve::Spares) => "floor forwarder → floor server (spares)",
            Client::FloorDirect(Serve::Fork) => "floor client → floor server (fork)",
            Client::FloorDirect(Serve::Spares) => "floor client → floor server (spares)",
        }
    }
}

/// What the service rows run: the programs and the service's stderr.
pub struct Clients<'a> {
    pub ns: &'a Ns,
    pub ours: &'a Prog,
    pub qemu: Option<&'a Prog>,
    /// Our binary installed plain (0755, no capability); the service runs
    /// from it too.
    pub fwd: Prog,
    /// stderr of the service and of the direct clients.
    pub log: PathBuf,
    pub log_fd: OwnedFd,
    /// The forwarded floor, where the floor was built.
    pub floor: Option<Floors<'a>>,
}

/// The forwarded floor's programs.
pub struct Floors<'a> {
    /// The plain floor (its setuid copy runs).
    pub floor: &'a Prog,
    /// The floor's forwarder: a plain copy with `--forward=SOCKET`, by
    /// `Serve` (fork, spares).
    pub fwd: [Prog; 2],
    /// The servers' sockets, by `Serve`.
    pub sockets: [PathBuf; 2],
}

impl Floors<'_> {
    /// Both servers, each on its socket, in the bench's namespaces as root.
    fn servers(&self, ns: &Ns, log: RawFd) -> Res<[FloorServer; 2]> {
        // The root copy: 0755, no setuid bit, no capability; run as root.
        let exe = &self.floor.copies[Mode::Root.idx()];
        Ok([
            FloorServer::start(ns, exe, Serve::Fork, &self.sockets[0], log)?,
            FloorServer::start(ns, exe, Serve::Spares, &self.sockets[1], log)?,
        ])
    }
}

impl Clients<'_> {
    /// A service not started yet (see [`Service::start`]); an error names
    /// the last lines of its stderr.
    fn service(&self) -> Res<Service> {
        Service::start(self.ns, &self.fwd.copies[0], self.log_fd.as_raw_fd()).map_err(|e| {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            format!(
                "starting the service: {e} (its stderr: {})",
                tail.join(" / ")
            )
            .into()
        })
    }

    fn list(&self) -> Vec<Client> {
        Client::ALL
            .into_iter()
            .filter(|c| match c {
                Client::Qemu => self.qemu.is_some(),
                Client::Floor | Client::FloorForward(_) | Client::FloorDirect(_) => {
                    self.floor.is_some()
                }
                _ => true,
            })
            .collect()
    }
}

/// Our binary as a service host installs it: root's, 0755, no capability.
pub fn forwarder(dir: &Path, helper: &Path) -> Res<Prog> {
    plain(
        dir,
        Role::Ours,
        "bh-plain",
        Client::Forwarder,
        helper,
        Vec::new(),
    )
}

/// The floor's forwarder for the server of `serve` on `socket`: a plain
/// copy of the floor, as the forwarder is installed.
pub fn floor_forwarder(dir: &Path, floor: &Path, serve: Serve, socket: &Path) -> Res<Prog> {
    let args = vec![format!("--forward={}", socket.display())];
    let client = Client::FloorForward(serve);
    let stem = format!("floor-forward-{}", serve.arg());
    plain(dir, Role::FloorWork, &stem, client, floor, args)
}

/// `source` copied to `dir/bin/STEM`: root's, 0755, no capability.
fn plain(
    dir: &Path,
    role: Role,
    stem: &str,
    client: Client,
    source: &Path,
    args: Vec<String>,
) -> Res<Prog> {
    let path = dir.join("bin").join(stem);
    fs::copy(source, &path)?;
    chown_root(&path)?;
    set_mode(&path, 0o755)?;
    let copy = cstr(path.as_os_str().as_bytes())?;
    let log = dir.join(format!("{stem}.stderr"));
    let log_fd = fs::File::options().create(true).append(true).open(&log)?;
    Ok(Prog {
        role,
        label: client.label().into(),
        source: source.into(),
        args,
        // one plain copy whatever the mode: a mode only picks the uid
        copies: [copy.clone(), copy.clone(), copy],
        size: fs::metadata(&path)?.len(),
        linkage: linkage(&path),
        log,
        log_fd: log_fd.into(),
    })
}

// ---------------------------------------------------------------------------------------------
// The service

/// A service in its own mount namespace; killed when dropped.
pub struct Service {
    pid: libc::pid_t,
    /// Reaped already (it exited at start): nothing to kill.
    reaped: bool,
    /// The service's mount namespace, the bench's network namespace.
    ns: Ns,
}

impl Service {
    /// Starts `setpriv … systemd-socket-activate -l SOCKET EXE --serve`
    /// and returns once the socket listens: the service itself starts on
    /// the first connection, as systemd starts it.
    pub fn start(ns: &Ns, exe: &CStr, log: RawFd) -> Res<Service> {
        let exe = exe.to_string_lossy().into_owned();
        let args: Vec<String> = [
            BOUNDING_SET,
            "--no-new-privs",
            "--",
            "/usr/bin/systemd-socket-activate",
            "-l",
            SOCKET,
            &exe,
            "--serve",
        ]
        .map(String::from)
        .to_vec();
        let plan = ExecPlan::new(c"/usr/bin/setpriv", &args, None, -1, log)?;
        // SAFETY: the bench is single-threaded; the child makes only
        // async-signal-safe calls and execs or `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(last_err("fork"));
        }
        if pid == 0 {
            child_enter(ns, log, -1, None);
            // SAFETY: raw system calls on static strings.
            unsafe {
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    || libc::mount(
                        c"tmpfs".as_ptr(),
                        c"/run".as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV,
                        c"mode=0755".as_ptr().cast(),
                    ) != 0
                    || libc::mkdir(c"/run/bridge-helper".as_ptr(), 0o755) != 0
                {
                    child_die(b"bench service: its own /run failed\n");
                }
            }
            child_execve(&plan);
        }
        let mut svc = Service {
            pid,
            reaped: false,
            ns: Ns {
                // the bench's until the service's exists (below)
                mnt: ns.mnt.try_clone()?,
                net: ns.net.try_clone()?,
                devnull: ns.devnull.try_clone()?,
            },
        };
        svc.wait_listening()?;
        // What the socket unit's SocketMode=0666 does (the ACL is the gate).
        set_mode(Path::new(&format!("/proc/{pid}/root{SOCKET}")), 0o666)?;
        svc.ns.mnt = open_ro(&format!("/proc/{pid}/ns/mnt"))?;
        Ok(svc)
    }

    /// Until the socket is in the listening state (`/proc/PID/net/unix`,
    /// flag __SO_ACCEPTCON): a connection before `listen` is refused, and
    /// one made to find out would start the service.
    fn wait_listening(&mut self) -> Res<()> {
        let start = Instant::now();
        let table = format!("/proc/{}/net/unix", self.pid);
        loop {
            let listening = fs::read_to_string(&table)?.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() == 8 && f[7] == SOCKET && f[3] == "00010000"
            });
            if listening {
                return Ok(());
            }
            let mut status = 0;
            // SAFETY: our own child; `status` is a valid out-pointer.
            if unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) } != 0 {
                self.reaped = true;
                return Err("the service's socket activation exited at start".into());
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(format!("{SOCKET} not listening after 10 s").into());
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // SAFETY: our own child, killed and reaped once.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// The floor's server (`floor --serve=fork|spares --listen=L`) on a
/// socket the bench binds and hands over, in the bench's namespaces as
/// root, in a process group of its own; the group is killed when dropped
/// (spares also die with the server: `PR_SET_PDEATHSIG`).
pub struct FloorServer {
    pid: libc::pid_t,
}

impl FloorServer {
    fn start(ns: &Ns, exe: &CStr, serve: Serve, socket: &Path, log: RawFd) -> Res<FloorServer> {
        match fs::remove_file(socket) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        // Listening from here on: a connection before the server runs waits
        // in the backlog, as with socket activation.
        let listener = UnixListener::bind(socket)?;
        set_mode(socket, 0o666)?; // the clients run as nobody
        let fd = listener.as_raw_fd();
        let args = [format!("--serve={}", serve.arg()), format!("--listen={fd}")];
        let plan = ExecPlan::new(exe, &args, None, fd, log)?;
        // SAFETY: the bench is single-threaded; the child makes only
        // async-signal-safe calls and execs or `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(last_err("fork"));
        }
        if pid == 0 {
            child_enter(ns, log, fd, None);
            // SAFETY: no preconditions; a failure leaves it in the bench's group.
            unsafe { libc::setpgid(0, 0) };
            child_execve(&plan);
        }
        // Both sides, so the group exists before any kill of it.
        // SAFETY: our own child, not yet exec'd or already in its group.
        unsafe { libc::setpgid(pid, pid) };
        Ok(FloorServer { pid })
    }
}

impl Drop for FloorServer {
    fn drop(&mut self) {
        // SAFETY: our own child's process group (and the child), killed
        // and the child reaped once.
        unsafe {
            libc::kill(-self.pid, libc::SIGKILL);
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The direct client

/// Where a direct request goes.
#[derive(Clone, Copy)]
enum To<'a> {
    /// Our service, by the client crate.
    Service,
    /// The floor's server on this socket, by [`floor_request`].
    Floor(&'a Path),
}

/// Runs in a forked child: into the namespaces `ns` as nobody, wait for
/// `go` (EOF on a pipe) if given, request a tap, send it back on `back`
/// (one zero byte with the fds, then the request's µs as 8 bytes) or an
/// error (`E` and its text).
fn direct_child(
    ns: &Ns,
    to: To,
    back: &OwnedFd,
    go: Option<(&OwnedFd, &OwnedFd)>,
    log: RawFd,
) -> ! {
    // A panic must not unwind into the bench's guards (which would delete
    // its network namespace and directory) from a forked copy.
    let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        direct_request(ns, to, back, go, log)
    }));
    // SAFETY: _exit ends the forked child without running the bench's
    // destructors.
    unsafe { libc::_exit(if sent.unwrap_or(false) { 0 } else { 1 }) }
}

fn direct_request(
    ns: &Ns,
    to: To,
    back: &OwnedFd,
    go: Option<(&OwnedFd, &OwnedFd)>,
    log: RawFd,
) -> bool {
    child_enter(ns, log, -1, Some(sys::NOBODY));
    // Dumpable again, as a process the user started is (the drop above
    // cleared it): the service examines its peer as the peer's own user
    // and refuses one that user may not examine.
    if nix::sys::prctl::set_dumpable(true).is_err() {
        return false;
    }
    if let Some((ready, go)) = go {
        let _ = nix::unistd::write(ready, b"r");
        let _ = nix::unistd::read(go.as_raw_fd(), &mut [0u8; 1]);
    }
    let t0 = Instant::now();
    let res = match to {
        To::Service => bridge_helper_client::Service::new()
            .bridge(BRIDGE)
            .vnet_hdr(true)
            .request()
            .map(bridge_helper_client::Tap::into_fds)
            .map_err(|e| e.to_string()),
        To::Floor(socket) => floor_request(socket),
    };
    let us = t0.elapsed().as_secs_f64() * 1e6;
    let sock = back.as_raw_fd();
    match res {
        Ok(tap) => {
            let fds: Vec<RawFd> = tap.iter().map(AsRawFd::as_raw_fd).collect();
            let rights = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
            nix::sys::socket::sendmsg::<()>(
                sock,
                &[IoSlice::new(b"\0")],
                &rights,
                nix::sys::socket::MsgFlags::empty(),
                None,
            )
            .is_ok()
                && nix::unistd::write(back, &us.to_ne_bytes()).is_ok()
        }
        Err(e) => {
            let _ = nix::unistd::write(back, format!("E{e}").as_bytes());
            false
        }
    }
}

/// The floor's client, the least a direct request can do: connect, send
/// the bridge's name, receive one byte and the fd. No checks.
fn floor_request(socket: &Path) -> Result<Vec<OwnedFd>, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    s.write_all(BRIDGE.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let got = sys::recv_with_fds(s.as_raw_fd(), &mut [0u8; 1], false)
        .map_err(|e| format!("recvmsg: {e}"))?;
    if got.bytes != 1 || got.fds.is_empty() {
        return Err("no tap".into());
    }
    Ok(got.fds)
}

fn fork() -> Res<libc::pid_t> {
    // SAFETY: the bench is single-threaded, so the child may allocate; it
    // only runs `direct_child`, which never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(last_err("fork"));
    }
    Ok(pid)
}

/// One direct request: the run (fd and exit both the request's time, as
/// the child measured it: `request` returns once the tap has arrived and
/// is verified) and the tap.
fn direct_once(ns: &Ns, to: To, log: RawFd) -> Res<(Run, Option<OwnedFd>)> {
    let (mine, theirs) = socketpair()?;
    let pid = fork()?;
    if pid == 0 {
        direct_child(ns, to, &theirs, None, log);
    }
    drop(theirs);
    let mut first = [0u8; 1];
    let got = sys::recv_with_fds(mine.as_raw_fd(), &mut first, false)?;
    let mut rest = Vec::new();
    let _ = fs::File::from(mine).read_to_end(&mut rest);
    let exit = wait_child(pid)?;
    let mut run = Run {
        cpu_us: exit.cpu_us,
        maxrss_kb: exit.maxrss_kb,
        ..Run::default()
    };
    let tap = got.fds.into_iter().next();
    match (&tap, rest.try_into().map(f64::from_ne_bytes)) {
        (Some(fd), Ok(us)) if got.bytes == 1 && first[0] == 0 => {
            run.fd_us = Some(us);
            run.exit_us = us;
            run.ok = exit.ok;
            if let Err(e) = tap_name(fd.as_raw_fd()) {
                run.ok = false;
                run.err = Some(e);
            } else if !exit.ok {
                run.err = Some(exit.status);
            }
        }
        (_, Err(text)) => run.err = Some(String::from_utf8_lossy(&text).into_owned()),
        _ => run.err = Some("no tap".into()),
    }
    Ok((run, tap))
}

/// K direct clients at once: all in their namespaces and ready first, then
/// released together; timed from the release.
fn direct_concurrent(ns: &Ns, to: To, k: usize, log: RawFd) -> Res<ConcRound> {
    let (go_r, go_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;
    let mut socks = Vec::with_capacity(k);
    let mut pids = Vec::with_capacity(k);
    for _ in 0..k {
        let (mine, theirs) = socketpair()?;
        let pid = fork()?;
        if pid == 0 {
            drop(go_w); // or the release never comes
            direct_child(ns, to, &theirs, Some((&ready_w, &go_r)), log);
        }
        socks.push(mine);
        pids.push(pid);
    }
    drop((go_r, ready_w));
    // One byte from each child once in its namespaces: a child that died
    // on the way never sends one, so 10 s of silence is an error.
    let mut got = 0;
    let mut ready = fs::File::from(ready_r);
    while got < k {
        let mut pfd = [libc::pollfd {
            fd: ready.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: a live array of one pollfd.
        if unsafe { libc::poll(pfd.as_mut_ptr(), 1, 10_000) } == 0 {
            return Err(format!("{} direct clients not ready after 10 s", k - got).into());
        }
        match ready.read(&mut vec![0u8; k - got]) {
            Ok(0) => return Err("a direct client died before it was ready".into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let t0 = Instant::now();
    drop(go_w);
    let raw: Vec<RawFd> = socks.iter().map(AsRawFd::as_raw_fd).collect();
    finish_round(t0, &raw, &pids)
}

// ---------------------------------------------------------------------------------------------
// The phases

/// One tap count's service rows.
pub struct Level {
    pub taps: usize,
    pub k: usize,
    pub seq: BTreeMap<Client, Vec<Run>>,
    pub conc: BTreeMap<Client, Vec<ConcRound>>,
    /// First requests to a service not yet running (forwarder, direct).
    pub cold: BTreeMap<Client, Vec<Run>>,
}

fn floors<'a>(c: &'a Clients) -> Res<&'a Floors<'a>> {
    Ok(c.floor.as_ref().ok_or("no floor")?)
}

fn one(c: &Clients, svc: &Service, client: Client) -> Res<(Run, Option<OwnedFd>)> {
    let log = c.log_fd.as_raw_fd();
    match client {
        Client::Setuid => run_once(c.ns, c.ours, Mode::Setuid),
        Client::Qemu => run_once(c.ns, c.qemu.ok_or("no QEMU helper")?, Mode::Setuid),
        // Mode::Setuid for its uid (nobody): the copy is plain.
        Client::Forwarder => run_once(&svc.ns, &c.fwd, Mode::Setuid),
        Client::Direct => direct_once(&svc.ns, To::Service, log),
        Client::Floor => run_once(c.ns, floors(c)?.floor, Mode::Setuid),
        Client::FloorForward(s) => run_once(c.ns, &floors(c)?.fwd[s as usize], Mode::Setuid),
        Client::FloorDirect(s) => {
            direct_once(c.ns, To::Floor(&floors(c)?.sockets[s as usize]), log)
        }
    }
}

fn at_once(c: &Clients, svc: &Service, client: Client, k: usize) -> Res<ConcRound> {
    let log = c.log_fd.as_raw_fd();
    match client {
        Client::Setuid => concurrent(c.ns, c.ours, Mode::Setuid, k),
        Client::Qemu => concurrent(c.ns, c.qemu.ok_or("no QEMU helper")?, Mode::Setuid, k),
        Client::Forwarder => concurrent(&svc.ns, &c.fwd, Mode::Setuid, k),
        Client::Direct => direct_concurrent(&svc.ns, To::Service, k, log),
        Client::Floor => concurrent(c.ns, floors(c)?.floor, Mode::Setuid, k),
        Client::FloorForward(s) => concurrent(c.ns, &floors(c)?.fwd[s as usize], Mode::Setuid, k),
        Client::FloorDirect(s) => {
            direct_concurrent(c.ns, To::Floor(&floors(c)?.sockets[s as usize]), k, log)
        }
    }
}

/// Parameters of one tap count's service rows.
pub struct Plan<'a> {
    pub taps: usize,
    pub n: usize,
    pub warmup: usize,
    pub rounds: usize,
    pub k: usize,
    pub cold: usize,
    pub net: &'a str,
}

/// The service rows at one tap count: N interleaved runs of each client,
/// K at once `rounds` times, `cold` cold starts each of the forwarder and
/// the direct client.
pub fn measure(c: &Clients, p: &Plan) -> Res<Level> {
    let before = link_count(p.net)?;
    let check_links = |after: Res<usize>, what: &str| -> Res<()> {
        let after = after?;
        if after != before {
            return Err(format!("{} links left behind after {what}", after - before).into());
        }
        Ok(())
    };
    let mut out = Level {
        taps: p.taps,
        k: p.k,
        seq: BTreeMap::new(),
        conc: BTreeMap::new(),
        cold: BTreeMap::new(),
    };
    let mut failed = 0;
    let mut note = |client: Client, run: &Run| {
        if let Some(e) = &run.err {
            failed += 1;
            if failed <= 5 {
                eprintln!("  {} failed: {e}", client.label());
            }
        }
    };
    let svc = c.service()?;
    let floor_servers = match &c.floor {
        Some(f) => Some(f.servers(c.ns, c.log_fd.as_raw_fd())?),
        None => None,
    };
    let mut order = c.list();
    let mut rng = Rng(0x6a09_e667_f3bc_c908);
    for i in 0..p.warmup.max(1) + p.n {
        check_interrupted()?;
        rng.shuffle(&mut order);
        for &client in &order {
            let (run, tap) = one(c, &svc, client)?;
            drop(tap); // closing the only fd destroys the tap
            note(client, &run);
            if i >= p.warmup.max(1) {
                out.seq.entry(client).or_default().push(run);
            }
        }
    }
    check_links(link_count(p.net), "the service's sequential runs")?;
    eprintln!("bench:   {} at once through the service", p.k);
    for _ in 0..p.rounds {
        rng.shuffle(&mut order);
        for &client in &order {
            check_interrupted()?;
            let round = at_once(c, &svc, client, p.k)?;
            out.conc.entry(client).or_default().push(round);
            check_links(link_count(p.net), "a concurrent round")?;
        }
    }
    drop(svc);
    drop(floor_servers);
    eprintln!("bench:   cold starts");
    let mut order = [Client::Forwarder, Client::Direct];
    for _ in 0..p.cold {
        rng.shuffle(&mut order);
        for &client in &order {
            check_interrupted()?;
            let svc = c.service()?;
            let (run, tap) = one(c, &svc, client)?;
            drop(tap);
            note(client, &run);
            out.cold.entry(client).or_default().push(run);
        }
    }
    check_links(link_count(p.net), "the cold starts")?;
    Ok(out)
}
