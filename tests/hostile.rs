//! Issue 4: hostile input, class by class, and the privileges a run keeps.
//!
//! Every refusal is checked for its exit status, one escaped stderr line
//! naming the bad input, no fd sent and no tap left behind; every run has a
//! hang limit. Signals, fault injection, concurrency and fuzzing are in
//! tests/faults.rs and fuzz/.
mod common;
use common::*;

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

// ---------------------------------------------------------------------------
// Local plumbing
// ---------------------------------------------------------------------------

/// The helper installed as `mode`, jailed the way `mode` runs it, stdin /dev/null.
fn helper(sb: &Sandbox, ns: &NetNs, mode: Mode) -> Command {
    let program = sb.install(HELPER, mode);
    let mut cmd = sb.command(ns, program, Jail::for_mode(mode));
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `cmd` (hang limit), then collects what arrived on `ours`.
fn finish(cmd: &mut Command, ours: OwnedFd) -> HelperRun {
    HelperRun::collect(output_within(cmd, HANG_LIMIT), ours)
}

/// Runs the helper with raw-byte `args` and, if `with_fd`, a fresh
/// connected socket appended as `--fd=N`.
fn run_raw(sb: &Sandbox, ns: &NetNs, mode: Mode, args: &[&[u8]], with_fd: bool) -> HelperRun {
    let (ours, theirs) = socketpair();
    clear_cloexec(theirs.as_raw_fd());
    let mut cmd = helper(sb, ns, mode);
    cmd.args(args.iter().map(|a| OsStr::from_bytes(a)));
    if with_fd {
        cmd.arg(format!("--fd={}", theirs.as_raw_fd()));
    }
    let run = finish(&mut cmd, ours);
    drop(theirs);
    run
}

fn run(sb: &Sandbox, ns: &NetNs, mode: Mode, args: &[&str]) -> HelperRun {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    run_raw(sb, ns, mode, &args, true)
}

/// `--br=br0 --fd=N` with whatever `fd` is in the helper (set up by `setup`).
fn run_fd(
    sb: &Sandbox,
    ns: &NetNs,
    mode: Mode,
    fd: RawFd,
    setup: impl FnOnce(&mut Command),
) -> HelperRun {
    let mut cmd = helper(sb, ns, mode);
    cmd.args(["--br=br0", &format!("--fd={fd}")]);
    setup(&mut cmd);
    finish(&mut cmd, socketpair().0)
}

/// A refusal as issue 4 defines it: status, one clean line containing
/// `text`, no fd, no tap.
fn refused(ns: &NetNs, run: &HelperRun, status: i32, text: &str) {
    run.expect_refusal(status, text);
    assert_one_clean_line(&run.stderr);
    assert!(run.stdout.is_empty(), "stdout: {:?}", run.stdout);
    assert_no_taps(ns);
}

/// A success: one fd that is a tap on br0; nothing printed. The tap goes
/// away with the fd.
fn attached(ns: &NetNs, run: HelperRun) {
    attached_to(ns, run, "br0");
}

/// Everything readable right now on `fd` (non-blocking): what a helper
/// might have written into something that is not its socket.
fn pending(fd: &OwnedFd) -> Vec<u8> {
    nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let mut got = Vec::new();
    let mut file = fs::File::from(fd.try_clone().unwrap());
    let mut buf = [0u8; 4096];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // A pty master whose slave is closed reports EIO: nothing there.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    got
}

/// Adds a pre_exec step (after the harness's jail set-up).
fn in_child(cmd: &mut Command, f: impl FnMut() -> io::Result<()> + Send + Sync + 'static) {
    // SAFETY: every closure passed here makes only async-signal-safe raw
    // system calls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(f);
    }
}

fn os(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(target_env = "musl")]
type Resource = libc::c_int;
#[cfg(not(target_env = "musl"))]
type Resource = libc::__rlimit_resource_t;

fn set_rlimit(resource: Resource, value: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads one struct rlimit.
    os(unsafe { libc::setrlimit(resource, &lim) })
}

// ---------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------

#[test]
fn arguments_missing_repeated_unknown_positional() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow all\n");
    let m = Mode::Setuid;
    let cases: &[(&[&[u8]], bool, &str)] = &[
        (&[], false, "missing --br"),
        (&[], true, "missing --br"),
        (&[b"--use-vnet"], false, "missing --br"),
        (&[b"--br=br0"], false, "missing --fd"),
        (
            &[b"--br=br0", b"--br=br0"],
            true,
            "--br given more than once",
        ),
        (&[b"--br=br0", b"--fd=0"], true, "--fd given more than once"),
        (
            &[b"--bogus", b"--br=br0"],
            true,
            "unknown argument '--bogus'",
        ),
        (&[b"br0"], true, "unknown argument 'br0'"),
        (&[b"--br", b"br0"], true, "unknown argument '--br'"),
        (&[b"--br=br0", b"--fd"], true, "unknown argument '--fd'"),
        (
            &[b"--use-vnet=1", b"--br=br0"],
            true,
            "unknown argument '--use-vnet=1'",
        ),
        (&[b"-h"], false, "unknown argument '-h'"),
        (&[b"--", b"--br=br0"], true, "unknown argument '--'"),
        (&[b"--br=br0", b""], true, "unknown argument ''"),
        (
            &[b"--\xff\x1b[2J"],
            true,
            "unknown argument '--\\xff\\x1b[2J'",
        ),
        (
            &[b"--help", b"--br=br0"],
            true,
            "--help takes no other arguments",
        ),
        (&[b"--version"], true, "--version takes no other arguments"),
    ];
    for (args, with_fd, text) in cases {
        let r = run_raw(&sb, &ns, m, args, *with_fd);
        refused(&ns, &r, 2, text);
        assert!(r.stderr.contains("usage: bridge-helper"), "{}", r.stderr);
    }
}

#[test]
fn fd_numbers_that_are_not_numbers_or_not_sockets() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow all\n");
    let m = Mode::Setuid;
    for bad in [
        &b"abc"[..],
        b"-1",
        b"-0",
        b"+3",
        b"",
        b" 3",
        b"0x3",
        b"3\n",
        b"99999999999",
        b"2147483648",
        b"18446744073709551619",
        b"\xff",
    ] {
        let arg = [b"--fd=", bad].concat();
        let r = run_raw(&sb, &ns, m, &[b"--br=br0", &arg], false);
        let shown = bridge_helper::report::escape::Quoted(bad);
        refused(
            &ns,
            &r,
            2,
            &format!("--fd={shown}: not a file descriptor number"),
        );
    }
    // Numbers that parse but name nothing open.
    for n in ["2147483647", "1000", "0000000999"] {
        let arg = format!("--fd={n}");
        let r = run_raw(&sb, &ns, m, &[b"--br=br0", arg.as_bytes()], false);
        refused(&ns, &r, 6, "not an open file descriptor");
        assert!(r
            .stderr
            .contains(&format!("--fd={}", n.parse::<i32>().unwrap())));
    }
    // 0, 1, 2 as the harness leaves them: /dev/null, a pipe, a pipe.
    let r = run_fd(&sb, &ns, m, 0, |_| {});
    refused(&ns, &r, 6, "--fd=0: is a character device");
    let r = run_fd(&sb, &ns, m, 1, |_| {});
    refused(&ns, &r, 6, "--fd=1: is a pipe, not a Unix socket");
    let r = run_fd(&sb, &ns, m, 2, |_| {});
    refused(&ns, &r, 6, "--fd=2: is a pipe, not a Unix socket");
}

#[test]
fn a_connected_socket_on_fd_0_is_valid() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    for mode in [Mode::Setuid, Mode::FileCaps] {
        let (ours, theirs) = socketpair();
        let mut cmd = helper(&sb, &ns, mode);
        cmd.args(["--br=br0", "--fd=0"]).stdin(Stdio::from(theirs));
        let r = finish(&mut cmd, ours);
        attached(&ns, r);
    }
}

#[test]
fn bridge_names_that_are_not_interface_names() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br0123456789abc", 1500);
    let sb = Sandbox::new();
    sb.acl("allow br0123456789abc\nallow br0\n");
    let m = Mode::Setuid;
    // The 15-byte name itself is fine; one more byte is refused before the
    // ACL is read (CVE-2019-13164).
    attached_to(
        &ns,
        run(&sb, &ns, m, &["--br=br0123456789abc"]),
        "br0123456789abc",
    );
    let r = run(&sb, &ns, m, &["--br=br0123456789abcX"]);
    refused(
        &ns,
        &r,
        2,
        "'br0123456789abcX': not a valid bridge name: 16 bytes long",
    );
    let r = run(
        &sb,
        &ns,
        m,
        &["--br=br0123456789abcdefghijklmnopqrstuvwxyz"],
    );
    refused(&ns, &r, 2, "38 bytes long, the limit is 15");

    let cases: &[(&[u8], &str)] = &[
        (b"", "--br='': not a valid bridge name: the name is empty"),
        (
            b"/",
            "--br='/': not a valid bridge name: contains the byte 0x2f",
        ),
        (b"br0/..", "contains the byte 0x2f"),
        (b".", "--br='.': not a valid bridge name: '.' and '..'"),
        (b"..", "--br='..': not a valid bridge name: '.' and '..'"),
        (
            b" br0",
            "--br=' br0': not a valid bridge name: contains the byte 0x20",
        ),
        (b"br0 ", "contains the byte 0x20"),
        (
            b"br\t0",
            "--br='br\\t0': not a valid bridge name: contains the byte 0x09",
        ),
        (
            b"br0\n",
            "--br='br0\\n': not a valid bridge name: contains the byte 0x0a",
        ),
        (b"br0\r", "--br='br0\\r'"),
        (b"br0\x0b", "--br='br0\\x0b'"),
        (b"br:0", "contains the byte 0x3a"),
        (
            b"br\xa00",
            "--br='br\\xa00': not a valid bridge name: contains the byte 0xa0",
        ),
        (b"\x1b[31mbr0", "--br='\\x1b[31mbr0'"),
        (b"br0\x7f", "--br='br0\\x7f'"),
        (b"br0\nbridge-helper: ok", "--br='br0\\nbridge-helper: ok'"),
        (b"\x00br0", "--br='\\x00br0'"),
    ];
    for (name, text) in cases {
        if name.first() == Some(&0) {
            continue; // an argv string cannot hold a NUL; exec would refuse it
        }
        let arg = [b"--br=", *name].concat();
        let r = run_raw(&sb, &ns, m, &[&arg], true);
        refused(&ns, &r, 2, text);
    }
    // Bytes that are not UTF-8 (nor control) are legal in a name: they reach
    // the ACL, which denies them, and are shown escaped.
    let r = run_raw(&sb, &ns, m, &[b"--br=br\xff\xfe"], true);
    refused(
        &ns,
        &r,
        4,
        "access to bridge 'br\\xff\\xfe' denied: no rule",
    );
    sb.acl("allow all\n");
    let r = run_raw(&sb, &ns, m, &[b"--br=\xc3(\xff"], true);
    refused(&ns, &r, 7, "bridge '\\xc3(\\xff' does not exist");
}

/// A run refused by the ACL points to `bridge-helper --check --br=NAME`
/// with the name as asked, for its user to paste, and for an administrator
/// who reads the line in the log. Pasted into a shell (dash or bash), that
/// command must run bridge-helper with the name and do nothing else,
/// whatever shell syntax the caller put in it (the kernel takes quotes,
/// `;`, `$(...)` in a name). Bytes that are not printable ASCII stay
/// escaped, for the terminal: the shell gets the escape as text.
#[test]
fn a_refusals_suggested_check_passes_the_name_as_asked_to_a_shell() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl(b"allow br0\ndeny ';echo;#\n".as_slice());
    let names: [(&[u8], &[u8]); 5] = [
        (b"br1", b"br1"),
        (b"';echo;#", b"';echo;#"),
        (b"x'$(echo)'", b"x'$(echo)'"),
        (b"a\"`echo`\\*", b"a\"`echo`\\*"),
        (b"br\xc3\xa9\xff", b"br\\xc3\\xa9\\xff"),
    ];
    for (name, passed) in names {
        let br = [b"--br=".as_slice(), name].concat();
        let r = run_raw(&sb, &ns, Mode::Setuid, &[&br], true);
        refused(&ns, &r, 4, "access to bridge ");
        // A deny rule's line ends "; see COMMAND", a missing allow's
        // "; check with: COMMAND" (after the man pages).
        let line = r.stderr.trim_end();
        let (_, command) = line
            .split_once("; check with: ")
            .or_else(|| line.split_once("; see "))
            .unwrap_or_else(|| panic!("{}", r.stderr));
        let words = pasted_words(command);
        let expected = [
            b"bridge-helper".to_vec(),
            b"--check".to_vec(),
            [b"--br=".as_slice(), passed].concat(),
        ];
        assert_eq!(
            words,
            expected,
            "{command} ran {:?}",
            words
                .iter()
                .map(|w| String::from_utf8_lossy(w))
                .collect::<Vec<_>>()
        );
    }
}

// ---------------------------------------------------------------------------
// Inherited descriptors
// ---------------------------------------------------------------------------

/// Closes the given descriptors in the child (Rust's runtime in the helper,
/// and the C library for a setuid one, reopen 0-2 on /dev/null).
fn close_fds(cmd: &mut Command, fds: &'static [RawFd]) {
    in_child(cmd, move || {
        for &fd in fds {
            // SAFETY: closing a descriptor number in the child only.
            os(unsafe { libc::close(fd) })?;
        }
        Ok(())
    });
}

#[test]
fn started_with_0_1_2_closed() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    for mode in [Mode::Setuid, Mode::FileCaps, Mode::Root] {
        // All three closed: still works.
        let (ours, theirs) = socketpair();
        clear_cloexec(theirs.as_raw_fd());
        let mut cmd = helper(&sb, &ns, mode);
        cmd.args(["--br=br0", &format!("--fd={}", theirs.as_raw_fd())]);
        close_fds(&mut cmd, &[0, 1, 2]);
        let r = finish(&mut cmd, ours);
        drop(theirs);
        attached(&ns, r);
        // All three closed, and --fd names one of them: what the helper finds
        // there is /dev/null (or similar), never a socket.
        for fd in 0..3 {
            let r = run_fd(&sb, &ns, mode, fd, |c| close_fds(c, &[0, 1, 2]));
            assert_eq!(r.code, Some(6), "--fd={fd} in {mode:?}");
            assert!(r.fds.is_empty() && r.stderr.is_empty() && r.stdout.is_empty());
            assert_no_taps(&ns);
        }
        // Only 0 and 1 closed, so the message can be read.
        for fd in 0..2 {
            let r = run_fd(&sb, &ns, mode, fd, |c| close_fds(c, &[0, 1]));
            refused(&ns, &r, 6, &format!("--fd={fd}: is a character device"));
        }
        // The socket as fd 0, with 1 and 2 closed.
        let (ours, theirs) = socketpair();
        let mut cmd = helper(&sb, &ns, mode);
        cmd.args(["--br=br0", "--fd=0"]).stdin(Stdio::from(theirs));
        close_fds(&mut cmd, &[1, 2]);
        let r = finish(&mut cmd, ours);
        assert_eq!(r.code, Some(0), "{mode:?}");
        assert_eq!(r.fds.len(), 1);
        drop(r);
        assert_no_taps(&ns);
    }
}

/// Makes `fd` inheritable for a run; the caller keeps it open until then.
fn inherit(fd: &impl AsRawFd) -> RawFd {
    clear_cloexec(fd.as_raw_fd());
    fd.as_raw_fd()
}

/// A pty pair (master, slave), both close-on-exec.
fn pty() -> (OwnedFd, OwnedFd) {
    use std::os::fd::FromRawFd;
    // SAFETY: posix_openpt returns a new descriptor or -1.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    assert!(master >= 0, "posix_openpt: {}", io::Error::last_os_error());
    // SAFETY: we own the descriptor just returned.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let mut name = [0u8; 64];
    // SAFETY: grantpt/unlockpt take the master fd; ptsname_r writes at most
    // name.len() bytes into the buffer.
    unsafe {
        assert_eq!(libc::grantpt(master.as_raw_fd()), 0);
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0);
        assert_eq!(
            libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr().cast(), name.len()),
            0
        );
    }
    let end = name.iter().position(|&b| b == 0).unwrap();
    let slave = fs::File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(OsStr::from_bytes(&name[..end]))
        .expect("open the pty slave: a TTY is required for this test");
    (master, slave.into())
}

/// A connected TCP pair on 127.0.0.1 inside `ns` (client, server side).
fn tcp_pair_in(ns: &NetNs) -> (std::net::TcpStream, std::net::TcpStream) {
    let path = ns.netns_path();
    std::thread::spawn(move || {
        let netns = fs::File::open(path).unwrap();
        // SAFETY: setns with a namespace fd; it changes only this thread,
        // which ends right after making the sockets.
        os(unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) }).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    })
    .join()
    .unwrap()
}

#[test]
fn fds_that_are_not_a_connected_unix_socket() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    for mode in [Mode::Setuid, Mode::FileCaps] {
        // Closed: our own end of a pair is close-on-exec.
        let (ours, _theirs) = socketpair();
        let r = run_fd(&sb, &ns, mode, ours.as_raw_fd(), |_| {});
        refused(&ns, &r, 6, "not an open file descriptor");

        // A pipe, either end; nothing may be written into it.
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        for end in [&rd, &wr] {
            let r = run_fd(&sb, &ns, mode, inherit(end), |_| {});
            refused(&ns, &r, 6, "is a pipe, not a Unix socket");
        }
        drop(wr);
        assert_eq!(pending(&rd), b"", "something was written into the pipe");

        // A regular file, open for writing: stays empty.
        let path = sb.dir.join(format!("file-{mode:?}"));
        let file = fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let r = run_fd(&sb, &ns, mode, inherit(&file), |_| {});
        refused(&ns, &r, 6, "is a regular file, not a Unix socket");
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);

        // /dev/null and a directory.
        let null = fs::File::options().write(true).open("/dev/null").unwrap();
        let r = run_fd(&sb, &ns, mode, inherit(&null), |_| {});
        refused(&ns, &r, 6, "is a character device");
        let dir = fs::File::open(&sb.dir).unwrap();
        let r = run_fd(&sb, &ns, mode, inherit(&dir), |_| {});
        refused(&ns, &r, 6, "is a directory, not a Unix socket");

        // A terminal, slave or master: refused, and nothing typed into it.
        let (master, slave) = pty();
        let r = run_fd(&sb, &ns, mode, inherit(&slave), |_| {});
        refused(&ns, &r, 6, "is a character device");
        let r = run_fd(&sb, &ns, mode, inherit(&master), |_| {});
        refused(&ns, &r, 6, "is a character device");
        drop(slave);
        assert_eq!(pending(&master), b"", "something was written to the tty");

        // A connected TCP socket (in the test's netns): nothing sent on it.
        let (client, server) = tcp_pair_in(&ns);
        let r = run_fd(&sb, &ns, mode, inherit(&client), |_| {});
        refused(&ns, &r, 6, "is a socket, but not a Unix socket");
        drop(client);
        assert_eq!(pending(&OwnedFd::from(server)), b"");

        // A listening Unix socket, and unconnected ones.
        let listener =
            std::os::unix::net::UnixListener::bind(sb.dir.join(format!("l-{mode:?}"))).unwrap();
        let r = run_fd(&sb, &ns, mode, inherit(&listener), |_| {});
        refused(&ns, &r, 6, "is a listening socket, not a connected one");
        use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
        for ty in [SockType::Stream, SockType::SeqPacket] {
            let s = socket(AddressFamily::Unix, ty, SockFlag::SOCK_CLOEXEC, None).unwrap();
            let r = run_fd(&sb, &ns, mode, inherit(&s), |_| {});
            refused(&ns, &r, 6, "is a Unix socket that is not connected");
        }
        // Datagram sockets, connected or not: their holder could re-point
        // them after the check.
        let s = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        );
        let r = run_fd(&sb, &ns, mode, inherit(&s.unwrap()), |_| {});
        refused(
            &ns,
            &r,
            6,
            "is a datagram socket; a stream socket is needed",
        );
        let (a, b) = nix::sys::socket::socketpair(
            AddressFamily::Unix,
            SockType::Datagram,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let r = run_fd(&sb, &ns, mode, inherit(&a), |_| {});
        refused(
            &ns,
            &r,
            6,
            "is a datagram socket; a stream socket is needed",
        );
        assert_eq!(
            pending(&b),
            b"",
            "something was sent on the datagram socket"
        );
    }
}

/// In the child: a socketpair whose other end is already closed, as fd
/// `target`, with SIGPIPE set to `disposition`. Made in the child so that no
/// other process can hold the peer open.
fn dead_peer_socket(cmd: &mut Command, target: RawFd, disposition: libc::sighandler_t) {
    in_child(cmd, move || {
        let mut sv = [0; 2];
        // SAFETY: socketpair writes two descriptors into `sv`; close, dup2
        // and signal take plain integers.
        unsafe {
            os(libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM,
                0,
                sv.as_mut_ptr(),
            ))?;
            os(libc::close(sv[1]))?;
            os(libc::dup2(sv[0], target))?;
            os(libc::close(sv[0]))?;
            if libc::signal(libc::SIGPIPE, disposition) == libc::SIG_ERR {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    });
}

#[test]
fn a_socket_whose_peer_is_gone() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    for mode in [Mode::Setuid, Mode::FileCaps] {
        for disposition in [libc::SIG_DFL, libc::SIG_IGN] {
            let r = run_fd(&sb, &ns, mode, 200, |c| {
                dead_peer_socket(c, 200, disposition)
            });
            assert_eq!(r.signal, None, "killed by a signal");
            refused(
                &ns,
                &r,
                6,
                "--fd=200: the other end of the socket is already closed",
            );
        }
    }
}

/// The helper's own descriptors are not the caller's: a number that was not
/// inherited must not be taken for the caller's socket even when the helper
/// itself has opened something under that number.
#[test]
fn an_fd_number_the_helper_opened_itself() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    for mode in [Mode::Setuid, Mode::Root] {
        for fd in 3..8 {
            let r = run_fd(&sb, &ns, mode, fd, |c| {
                in_child(c, || {
                    // Marked close-on-exec rather than closed, so std's own
                    // exec-error pipe still works if exec fails (ETXTBSY).
                    const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
                    // SAFETY: close_range takes integers only.
                    os(unsafe {
                        libc::syscall(libc::SYS_close_range, 3u32, !0u32, CLOSE_RANGE_CLOEXEC)
                    } as i32)
                })
            });
            refused(
                &ns,
                &r,
                6,
                &format!("--fd={fd}: not an open file descriptor"),
            );
        }
    }
}

// ---------------------------------------------------------------------------
// ACL files
// ---------------------------------------------------------------------------

struct Acl<'a> {
    ns: &'a NetNs,
    sb: &'a Sandbox,
}

impl Acl<'_> {
    /// Replaces /etc/qemu/bridge.conf (whatever it is now) with `text`.
    fn main(&self, text: impl AsRef<[u8]>) -> &Self {
        self.clear("bridge.conf");
        self.sb.acl(text);
        self
    }

    fn clear(&self, name: &str) {
        let p = self.sb.etc_path(name);
        if p.is_dir() && !p.is_symlink() {
            fs::remove_dir_all(&p).unwrap();
        } else {
            let _ = fs::remove_file(&p);
        }
    }

    fn allows(&self) {
        attached(self.ns, run(self.sb, self.ns, Mode::Setuid, &["--br=br0"]));
    }

    fn refuses(&self, status: i32, text: &str) {
        let r = run(self.sb, self.ns, Mode::Setuid, &["--br=br0"]);
        refused(self.ns, &r, status, text);
    }
}

#[test]
fn acl_files_that_cannot_be_trusted() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    let acl = Acl { ns: &ns, sb: &sb };
    acl.main("allow br0\n").allows();

    acl.clear("bridge.conf");
    acl.refuses(3, "/etc/qemu/bridge.conf: does not exist");
    acl.main("").refuses(4, "no rule in /etc/qemu/bridge.conf");
    acl.main("\n\n# nothing\n   \n")
        .refuses(4, "no rule in /etc/qemu/bridge.conf");

    acl.clear("bridge.conf");
    fs::create_dir(sb.etc_path("bridge.conf")).unwrap();
    acl.refuses(3, "/etc/qemu/bridge.conf: not a regular file");

    acl.main("allow br0\n");
    sb.etc_file("bridge.conf", "allow br0\n", 0o600);
    acl.refuses(3, "/etc/qemu/bridge.conf: not readable by the calling user");

    acl.main("allow br0\n")
        .sb
        .etc_chown("bridge.conf", NOBODY, 0);
    acl.refuses(3, "/etc/qemu/bridge.conf: owned by uid 65534, not root");
    acl.main("allow br0\n")
        .sb
        .etc_chown("bridge.conf", 1000, 1000);
    acl.refuses(3, "owned by uid 1000, not root");
    for (mode, shown) in [
        (0o664, "0664"),
        (0o646, "0646"),
        (0o666, "0666"),
        (0o606, "0606"),
    ] {
        sb.etc_file("bridge.conf", "allow br0\n", mode);
        acl.refuses(3, &format!("writable by group or others (mode {shown})"));
    }
    // Group ownership alone, setgid, sticky: not writable, so fine.
    sb.etc_file("bridge.conf", "allow br0\n", 0o644)
        .etc_chown("bridge.conf", 0, NOBODY);
    acl.allows();

    // Symlinks are followed; what counts is the file they reach.
    sb.etc_file("real.conf", "allow br0\n", 0o644);
    acl.clear("bridge.conf");
    symlink("/etc/qemu/real.conf", sb.etc_path("bridge.conf")).unwrap();
    acl.allows();
    sb.etc_file("user.conf", "allow br0\n", 0o644)
        .etc_chown("user.conf", NOBODY, NOBODY);
    acl.clear("bridge.conf");
    symlink("user.conf", sb.etc_path("bridge.conf")).unwrap();
    acl.refuses(3, "/etc/qemu/bridge.conf: owned by uid 65534, not root");
    acl.clear("bridge.conf");
    symlink("nowhere.conf", sb.etc_path("bridge.conf")).unwrap();
    acl.refuses(3, "/etc/qemu/bridge.conf: does not exist");
    acl.clear("bridge.conf");
    symlink("bridge.conf", sb.etc_path("bridge.conf")).unwrap();
    acl.refuses(3, "/etc/qemu/bridge.conf: ");
    // An include through a symlink to a user-owned file is refused too.
    acl.main("allow br0\ninclude /etc/qemu/inc.conf\n");
    acl.clear("inc.conf");
    symlink("user.conf", sb.etc_path("inc.conf")).unwrap();
    acl.refuses(3, "/etc/qemu/inc.conf: owned by uid 65534, not root");

    // A FIFO or a device where a file should be: refused at once, no hang.
    acl.clear("fifo");
    nix::unistd::mkfifo(
        &sb.etc_path("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    acl.main("allow br0\ninclude fifo\n")
        .refuses(3, "/etc/qemu/fifo: not a regular file");
    acl.clear("bridge.conf");
    symlink("fifo", sb.etc_path("bridge.conf")).unwrap();
    acl.refuses(3, "/etc/qemu/bridge.conf: not a regular file");
    acl.main("allow br0\ninclude /dev/zero\n")
        .refuses(3, "/dev/zero: not a regular file");
    acl.main("allow br0\ninclude /etc/qemu\n")
        .refuses(3, "/etc/qemu: not a regular file");
    // Missing and unreadable includes are skipped, as QEMU does.
    sb.etc_file("secret.conf", "deny br0\n", 0o600);
    acl.main("include nope.conf\ninclude secret.conf\nallow br0\n")
        .allows();
}

#[test]
fn acl_includes_cycles_depth_and_size() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    let acl = Acl { ns: &ns, sb: &sb };
    acl.main("allow br0\ninclude bridge.conf\n").refuses(
        3,
        "/etc/qemu/bridge.conf:2: include of /etc/qemu/bridge.conf forms a cycle",
    );
    acl.main("allow br0\ninclude /etc/qemu/bridge.conf\n")
        .refuses(3, "forms a cycle");
    sb.etc_file("a.conf", "include b.conf\n", 0o644).etc_file(
        "b.conf",
        "allow br0\ninclude a.conf\n",
        0o644,
    );
    acl.main("include a.conf\n").refuses(
        3,
        "/etc/qemu/b.conf:2: include of /etc/qemu/a.conf forms a cycle",
    );
    acl.clear("self.conf");
    symlink("bridge.conf", sb.etc_path("self.conf")).unwrap();
    acl.main("allow br0\ninclude self.conf\n")
        .refuses(3, "include of /etc/qemu/self.conf forms a cycle");
    // The same file twice, not nested, is not a cycle.
    sb.etc_file("a.conf", "allow br0\n", 0o644);
    acl.main("include a.conf\ninclude a.conf\n").allows();

    // Eight levels below the main file are allowed; nine are not.
    for depth in [8, 9, 12] {
        for i in 1..=depth {
            let text = if i == depth {
                "allow br0\n".to_string()
            } else {
                format!("include d{}.conf\n", i + 1)
            };
            sb.etc_file(&format!("d{i}.conf"), text, 0o644);
        }
        acl.main("include d1.conf\n");
        if depth <= 8 {
            acl.allows();
        } else {
            acl.refuses(3, "/etc/qemu/d8.conf:1: includes nest deeper than 8 levels");
        }
    }

    // Size: exactly 1 MiB is read; one byte more is refused, also when the
    // bytes are spread over an include.
    let mib = 1usize << 20;
    let filler = |n: usize| {
        let line = format!("#{}\n", "x".repeat(98));
        let mut t = line.repeat(n / line.len());
        t.push_str(&"#".repeat(n - t.len() - 1));
        t.push('\n');
        t
    };
    let rule = "allow br0\n";
    acl.main(filler(mib - rule.len()) + rule).allows();
    acl.main(filler(mib + 1 - rule.len()) + rule)
        .refuses(3, "/etc/qemu/bridge.conf: over the 1048576-byte limit");
    acl.main(filler(16 << 20))
        .refuses(3, "over the 1048576-byte limit");
    sb.etc_file("half.conf", filler(mib / 2) + rule, 0o644);
    acl.main(filler(mib / 2) + "include half.conf\n")
        .refuses(3, "/etc/qemu/half.conf: over the");
    // 65 small files: the fan-out bound.
    sb.etc_file("leaf.conf", "allow br0\n", 0o644);
    acl.main("include leaf.conf\n".repeat(64))
        .refuses(3, "more than 64 files");
    acl.main("include leaf.conf\n".repeat(63)).allows();
}

#[test]
fn acl_lines_and_names() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    let acl = Acl { ns: &ns, sb: &sb };
    // A comment longer than QEMU's 4096-byte fgets buffer would be cut there
    // and its tail read as a rule: the whole file is refused.
    let long = |n: usize| format!("#{}", "x".repeat(n - 1));
    acl.main(long(4095) + "\nallow br0\n").allows();
    acl.main(long(4096) + "\nallow br0\n")
        .refuses(3, "/etc/qemu/bridge.conf:1: line is 4096 bytes long");
    acl.main(format!("#{}allow br0\n", " ".repeat(4094)))
        .refuses(3, "line is 4104 bytes long");
    acl.main(format!("allow br0\n{}\n", long(100_000)))
        .refuses(3, "bridge.conf:2: line is 100000 bytes long");
    acl.main(format!("allow{}br0\n", " ".repeat(5000)))
        .refuses(3, "line is 5008 bytes long");

    acl.main("allow br0\0\n")
        .refuses(3, "bridge.conf:1: line contains a NUL byte");
    acl.main("# \0\nallow br0\n")
        .refuses(3, "bridge.conf:1: line contains a NUL byte");
    acl.main(b"allow br0\n\0".as_slice())
        .refuses(3, "bridge.conf:2: line contains a NUL byte");

    // CRLF, tabs and other blanks around the words work.
    acl.main("# comment\r\nallow br0\r\n").allows();
    acl.main("allow\tbr0\n").allows();
    acl.main("\t allow br0\t\n").allows();
    acl.main("allow  \t br0 \x0c\r\n").allows();
    // glib's g_ascii_isspace (QEMU's trim) leaves out VT: QEMU reads the
    // name "br0 \v", a rule that can never match; we refuse the file.
    acl.main("allow br0 \x0b\n")
        .refuses(3, "is not a bridge name");
    acl.main("allow br0").allows(); // no final newline

    // A comment after a name is not a comment.
    acl.main("allow br0 # lab bridge\n")
        .refuses(3, "bridge.conf:1: 'br0 # lab bridge' is not a bridge name");
    // ... and '#' inside a name is part of it.
    acl.main("allow br0#lab\n").refuses(4, "no rule in");

    for (text, msg) in [
        ("permit br0\n", "bridge.conf:1: unknown command 'permit'"),
        ("ALLOW br0\n", "unknown command 'ALLOW'"),
        ("Allow br0\n", "unknown command 'Allow'"),
        ("allow\n", "expected a command and an argument, got 'allow'"),
        ("allowbr0\n", "got 'allowbr0'"),
        ("include \n", "include needs a path"),
        ("\x1b[2Jallow br0\n", "unknown command '\\x1b[2Jallow'"),
        ("allow\tbr0 \n", "unknown command 'allow\\tbr0'"),
        (
            "allow br0\x1b]0;pwned\x07\n",
            "'br0\\x1b]0;pwned\\x07' is not a bridge name",
        ),
        (
            "allow br0123456789abcd\n",
            "'br0123456789abcd' is not a bridge name: 16 bytes long",
        ),
        (
            "deny a/b\n",
            "'a/b' is not a bridge name: contains the byte 0x2f",
        ),
        ("deny .\n", "'.' is not a bridge name"),
        ("deny ..\n", "'..' is not a bridge name"),
        ("allow br:0\n", "contains the byte 0x3a"),
        (
            "allow br0\nallow all\ngarbage line\n",
            "bridge.conf:3: unknown command 'garbage'",
        ),
    ] {
        acl.main(text).refuses(3, msg);
    }

    acl.main(b"allow \xff\xfe br0\n".as_slice())
        .refuses(3, "'\\xff\\xfe br0' is not a bridge name");
    acl.main(b"allow \xff\xfe\n".as_slice())
        .refuses(4, "no rule in");

    // `all`, and names that only look like it.
    for text in [
        "allow all\n",
        "allow all \n",
        "allow \t all\n",
        "allow\tall\n",
    ] {
        acl.main(text).allows();
    }
    acl.main("allow all\ndeny all\n").refuses(
        4,
        "access to bridge 'br0' denied by /etc/qemu/bridge.conf:2",
    );
    acl.main("deny all\nallow br0\n")
        .refuses(4, "denied by /etc/qemu/bridge.conf:1");
    acl.main("deny br0\nallow all\n")
        .refuses(4, "denied by /etc/qemu/bridge.conf:1");
    for text in [
        "allow ALL\n",
        "allow All\n",
        "allow alll\n",
        "allow al\n",
        "deny ALL\n",
    ] {
        acl.main(text)
            .refuses(4, "no rule in /etc/qemu/bridge.conf");
    }
    acl.main("allow all\ndeny ALL\n").allows();
    // The decision is per request: a denied bridge does not block another.
    ns.add_bridge("br1", 1500);
    acl.main("allow all\ndeny br1\n").allows();
}

// ---------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------

/// A shared library that announces itself on stderr when loaded.
fn injection_library(dir: &std::path::Path) -> std::path::PathBuf {
    fs::create_dir_all(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    let src = dir.join("inject.c");
    fs::write(
        &src,
        "#include <unistd.h>\n\
         __attribute__((constructor)) static void injected(void) { write(2, \"INJECTED\\n\", 9); }\n",
    )
    .unwrap();
    let lib = dir.join("libinject.so");
    sh(
        "cc",
        &[
            "-shared",
            "-fPIC",
            "-o",
            lib.to_str().unwrap(),
            src.to_str().unwrap(),
        ],
    );
    // Under the name of a library the helper links, for LD_LIBRARY_PATH.
    fs::copy(&lib, dir.join("libgcc_s.so.1")).unwrap();
    lib
}

#[test]
fn environment_changes_nothing() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br1", 1500);
    let sb = Sandbox::new();
    sb.acl("allow all\ndeny br1\n");
    let libdir = sb.dir.join("lib");
    let lib = injection_library(&libdir);
    let lib = lib.to_str().unwrap().to_string();
    let libdir = libdir.to_str().unwrap().to_string();

    let run_env = |mode: Mode, env: &[(&str, &str)], bridge: &str| {
        let (ours, theirs) = socketpair();
        let mut cmd = helper(&sb, &ns, mode);
        cmd.env_clear().envs(env.iter().copied()).args([
            "--use-vnet",
            &format!("--br={bridge}"),
            &format!("--fd={}", inherit(&theirs)),
        ]);
        let r = finish(&mut cmd, ours);
        drop(theirs);
        r
    };

    // The library does load into a dynamic program, so its absence below
    // means something. The helper is static: no loader reads LD_* at all.
    let out = output(
        Command::new("/bin/true")
            .env_clear()
            .env("LD_PRELOAD", &lib),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("INJECTED\n"),
        "the injection library does not load: {:?}",
        out
    );

    let all: Vec<(&str, &str)> = vec![
        ("RUST_BACKTRACE", "full"),
        ("RUST_LIB_BACKTRACE", "1"),
        ("RUST_MIN_STACK", "1"),
        ("LANG", "de_DE.UTF-8"),
        ("LC_ALL", "tr_TR.UTF-8"),
        ("LC_MESSAGES", "fr_FR.UTF-8"),
        ("LANGUAGE", "fr"),
        ("TERM", "xterm-256color"),
        ("COLUMNS", "7"),
        ("LINES", "1"),
        ("NO_COLOR", "1"),
        ("CLICOLOR_FORCE", "1"),
        ("TZ", "Pacific/Kiritimati"),
        ("HOME", "/nonexistent"),
        ("TMPDIR", "/nonexistent"),
        ("PATH", "/nonexistent"),
        ("MALLOC_CHECK_", "3"),
        ("MALLOC_PERTURB_", "165"),
        (
            "GLIBC_TUNABLES",
            "glibc.malloc.check=3:glibc.malloc.mmap_threshold=1",
        ),
        ("LD_PRELOAD", &lib),
        ("LD_LIBRARY_PATH", &libdir),
        ("LD_AUDIT", &lib),
    ];
    for mode in [Mode::Setuid, Mode::FileCaps, Mode::Root] {
        let ok = run_env(mode, &[], "br0");
        let no = run_env(mode, &[], "br1");
        assert_eq!(
            (ok.code, ok.stderr.as_str(), ok.fds.len()),
            (Some(0), "", 1)
        );
        drop(ok);
        refused(
            &ns,
            &no,
            4,
            "access to bridge 'br1' denied by /etc/qemu/bridge.conf:2",
        );
        let vars: Vec<(&str, &str)> = all.clone();
        let mut sets: Vec<Vec<(&str, &str)>> = vars.iter().map(|&kv| vec![kv]).collect();
        sets.push(vars);
        for env in &sets {
            let r = run_env(mode, env, "br0");
            assert_eq!(
                (r.code, r.stderr.as_str(), r.fds.len()),
                (Some(0), "", 1),
                "{mode:?} with {env:?}"
            );
            drop(r);
            let r = run_env(mode, env, "br1");
            assert_eq!(
                (r.code, r.stderr.as_str(), r.fds.len()),
                (no.code, no.stderr.as_str(), 0),
                "{mode:?} with {env:?}"
            );
        }
        assert_no_taps(&ns);
    }
}

// ---------------------------------------------------------------------------
// A forced panic (test-hooks builds only; release builds reject the flag,
// see args::tests::release_builds_know_no_test_hooks)
// ---------------------------------------------------------------------------

#[cfg(feature = "test-hooks")]
#[test]
fn a_panic_prints_one_fixed_line_and_no_address() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    for mode in [Mode::Setuid, Mode::FileCaps, Mode::Root] {
        for env in [
            &[][..],
            &[("RUST_BACKTRACE", "full"), ("RUST_LIB_BACKTRACE", "1")],
        ] {
            let (ours, theirs) = socketpair();
            let mut cmd = helper(&sb, &ns, mode);
            cmd.env_clear().envs(env.iter().copied()).args([
                "--test-panic",
                "--br=br0",
                &format!("--fd={}", inherit(&theirs)),
            ]);
            let r = finish(&mut cmd, ours);
            drop(theirs);
            assert_eq!(r.signal, None);
            refused(&ns, &r, 70, "");
            assert_eq!(
                r.stderr, "bridge-helper: internal error, this is a bug; no tap was handed out\n",
                "{mode:?} {env:?}"
            );
            assert!(!r.stderr.contains("0x") && !r.stderr.contains("backtrace"));
        }
    }
}

// ---------------------------------------------------------------------------
// Resource limits
// ---------------------------------------------------------------------------

/// What a run under a limit may do: succeed with one fd, or fail with a
/// status and something on stderr; never die by a signal (the hang limit is
/// in `finish`).
fn clear_outcome(ns: &NetNs, r: HelperRun, what: &str) -> (Option<i32>, Option<String>) {
    assert_eq!(
        r.signal, None,
        "{what}: killed by a signal; stderr {:?}",
        r.stderr
    );
    match r.code {
        Some(0) => assert_eq!(
            (r.fds.len(), r.cmsgs),
            (1, 1),
            "{what}: status 0 without the fd"
        ),
        Some(code) => {
            assert!(r.fds.is_empty(), "{what}: failed but sent an fd");
            assert!(
                !r.stderr.is_empty(),
                "{what}: status {code} and nothing said"
            );
            if [2, 3, 4, 5, 6, 7, 8, 70].contains(&code) {
                assert_one_clean_line(&r.stderr);
                assert!(
                    r.stderr.starts_with("bridge-helper: "),
                    "{what}: {:?}",
                    r.stderr
                );
            }
        }
        None => unreachable!(),
    }
    let outcome = (r.code, r.stderr.lines().next().map(str::to_owned));
    drop(r);
    assert_no_taps(ns);
    outcome
}

/// The socket as fd 3 and nothing else above 2, so descriptor numbers (and
/// so the limits' effect) do not depend on the test process.
fn socket_as_fd_3(cmd: &mut Command, theirs: &OwnedFd) {
    let src = theirs.as_raw_fd();
    in_child(cmd, move || {
        // SAFETY: dup2, fcntl and close_range take integers only.
        unsafe {
            if src != 3 {
                os(libc::dup2(src, 3))?;
            }
            os(libc::fcntl(3, libc::F_SETFD, 0))?;
            os(libc::syscall(libc::SYS_close_range, 4u32, !0u32, 0u32) as libc::c_int)
        }
    });
}

#[test]
fn rlimit_nofile_3_to_10() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    for mode in [Mode::Setuid, Mode::FileCaps] {
        let mut outcomes = Vec::new();
        for limit in 3..=10u64 {
            let (ours, theirs) = socketpair();
            let mut cmd = helper(&sb, &ns, mode);
            cmd.args(["--br=br0", "--fd=3"]);
            socket_as_fd_3(&mut cmd, &theirs);
            in_child(&mut cmd, move || set_rlimit(libc::RLIMIT_NOFILE, limit));
            let r = finish(&mut cmd, ours);
            drop(theirs);
            let what = format!("{mode:?} RLIMIT_NOFILE={limit}");
            outcomes.push((limit, clear_outcome(&ns, r, &what)));
        }
        eprintln!("{mode:?}: {outcomes:?}");
        assert_eq!(
            outcomes.last().unwrap().1 .0,
            Some(0),
            "10 descriptors are enough"
        );
    }
}

#[test]
fn rlimit_as_small() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let mode = Mode::Setuid;
    // Ok(run) when exec got as far as running the program.
    let attempt = |limit: u64| -> Option<HelperRun> {
        let (ours, theirs) = socketpair();
        let mut cmd = helper(&sb, &ns, mode);
        cmd.args(["--br=br0", &format!("--fd={}", inherit(&theirs))])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        in_child(&mut cmd, move || set_rlimit(libc::RLIMIT_AS, limit));
        let out = try_start(&mut cmd).ok()?.wait_within(HANG_LIMIT);
        drop(theirs);
        Some(HelperRun::collect(out, ours))
    };
    // The smallest limit at which exec succeeds (the kernel or ld.so, not
    // the helper, fails below it).
    let execs = |limit: u64| match attempt(limit) {
        None => false,
        // Killed by the kernel during exec, or ld.so could not map a library.
        Some(r) => {
            !(r.signal == Some(libc::SIGSEGV)
                || r.signal == Some(libc::SIGKILL)
                || r.code == Some(127))
        }
    };
    let (mut lo, mut hi) = (1u64 << 16, 1u64 << 30);
    assert!(execs(hi));
    while hi - lo > 4096 {
        let mid = (lo + hi) / 2 / 4096 * 4096;
        if execs(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    // From there up, page by page, until the run succeeds 8 times running.
    let mut outcomes: Vec<(u64, String)> = Vec::new();
    let (mut limit, mut successes) = (hi, 0);
    while successes < 8 {
        assert!(limit < hi + (4 << 20), "no success within 4 MiB of {hi}");
        let r = attempt(limit).expect("exec");
        // Every limit at which the program runs at all gives a clean
        // outcome: std's start-up no longer maps a signal stack (see
        // sys::leave_faults_to_the_kernel), and allocation failure is exit 5.
        let (code, line) = clear_outcome(&ns, r, &format!("RLIMIT_AS={limit}"));
        let what = format!("{code:?} {}", line.unwrap_or_default());
        successes = if what.starts_with("Some(0)") {
            successes + 1
        } else {
            0
        };
        match outcomes.last_mut() {
            Some((_, last)) if *last == what => {}
            _ => outcomes.push((limit, what)),
        }
        limit += 4096;
    }
    eprintln!("RLIMIT_AS from {hi}: {outcomes:#?}");
}

#[test]
fn rlimit_fsize_0_with_stderr_in_a_file() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    for mode in [Mode::Setuid, Mode::FileCaps] {
        for (bridge, status) in [("br0", 0), ("br1", 4), ("", 2)] {
            let path = sb.dir.join("stderr");
            let file = fs::File::create(&path).unwrap();
            let (ours, theirs) = socketpair();
            let mut cmd = helper(&sb, &ns, mode);
            cmd.args([
                &format!("--br={bridge}"),
                &format!("--fd={}", inherit(&theirs)),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file));
            in_child(&mut cmd, || set_rlimit(libc::RLIMIT_FSIZE, 0));
            let out = start(&mut cmd).wait_within(HANG_LIMIT);
            drop(theirs);
            let r = HelperRun::collect(out, ours);
            assert_eq!(r.signal, None, "{mode:?} {bridge}: killed (SIGXFSZ?)");
            assert_eq!(r.code, Some(status), "{mode:?} {bridge}");
            assert_eq!(r.fds.len(), usize::from(status == 0));
            assert_eq!(fs::metadata(&path).unwrap().len(), 0);
            drop(r);
            assert_no_taps(&ns);
        }
    }
}

// ---------------------------------------------------------------------------
// Privilege postconditions, observed at the moment the tap is configured
// ---------------------------------------------------------------------------

#[cfg(feature = "test-hooks")]
fn proc_status(pid: i32) -> std::collections::HashMap<String, String> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Starts a paused run; returns the stopped process, our socket end.
#[cfg(feature = "test-hooks")]
fn paused(sb: &Sandbox, ns: &NetNs, mode: Mode) -> (Running, OwnedFd) {
    let (ours, theirs) = socketpair();
    let mut cmd = helper(sb, ns, mode);
    cmd.args([
        "--test-pause",
        "--use-vnet",
        "--br=br0",
        &format!("--fd={}", inherit(&theirs)),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let running = start(&mut cmd);
    drop(cmd);
    drop(theirs);
    running.wait_stopped(HANG_LIMIT);
    (running, ours)
}

#[cfg(feature = "test-hooks")]
fn cont(running: &Running) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(running.pid()),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
}

#[cfg(feature = "test-hooks")]
fn privileges_at_the_pause(mode: Mode) {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let (running, ours) = paused(&sb, &ns, mode);
    let pid = running.pid();
    let st = proc_status(pid);
    let id = mode.uid().unwrap_or(0).to_string();
    let four = [id.as_str(); 4].join("\t");
    assert_eq!(st["Uid"], four, "{mode:?} Uid");
    assert_eq!(st["Gid"], four, "{mode:?} Gid");
    assert_eq!(st["Groups"], "", "{mode:?} Groups");
    assert_eq!(st["CapEff"], "0000000000001000", "{mode:?} CapEff");
    assert_eq!(st["CapPrm"], "0000000000001000", "{mode:?} CapPrm");
    assert_eq!(st["CapInh"], "0000000000000000", "{mode:?} CapInh");
    assert_eq!(st["CapAmb"], "0000000000000000", "{mode:?} CapAmb");
    if mode != Mode::FileCaps {
        assert_eq!(st["CapBnd"], "0000000000000000", "{mode:?} CapBnd");
    }
    assert_eq!(st["NoNewPrivs"], "1", "{mode:?} NoNewPrivs");
    // Nothing of the ACL files is still open.
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let target = fs::read_link(entry.unwrap().path()).unwrap();
        assert!(
            !target.starts_with("/etc"),
            "{mode:?}: {target:?} still open"
        );
    }
    // The tap exists, on the bridge, while the helper waits.
    let taps = ns.taps();
    assert_eq!(taps.len(), 1);
    assert_eq!(ns.tap_state(&taps[0]).master, "br0");

    cont(&running);
    let r = HelperRun::collect(running.wait_within(HANG_LIMIT), ours);
    assert_eq!(
        r.stderr,
        format!("bridge-helper: paused before sending '{}'\n", taps[0])
    );
    let fd = r.expect_tap();
    assert_eq!(tun_get_iff(&fd).0, taps[0]);
    drop(fd);
    assert_no_taps(&ns);
}

#[cfg(feature = "test-hooks")]
#[test]
fn privileges_at_the_pause_setuid() {
    privileges_at_the_pause(Mode::Setuid);
}

#[cfg(feature = "test-hooks")]
#[test]
fn privileges_at_the_pause_file_caps() {
    privileges_at_the_pause(Mode::FileCaps);
}

#[cfg(feature = "test-hooks")]
#[test]
fn privileges_at_the_pause_root() {
    privileges_at_the_pause(Mode::Root);
}

/// Packets counted by the rule of `chain` (bridge table `t`) whose
/// comment is `comment`.
fn nft_count(ns: &NetNs, chain: &str, comment: &str) -> u64 {
    let listing = ns.exec(&format!("nft list chain bridge t {chain}"));
    let line = listing
        .lines()
        .find(|l| l.trim_end().ends_with(&format!("comment \"{comment}\"")))
        .unwrap_or_else(|| panic!("no rule {comment:?} in {listing}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "packets").expect(line);
    words[at + 1].parse().expect(line)
}

/// Issue 23, finding 3: installed setuid root, the helper opened
/// /dev/net/tun as root, so the file, the tap's socket and every frame
/// the guest sends were root's for netfilter's `meta skuid` for the tap's
/// whole life (QEMU's helper opens it as the caller). A bridge-family
/// chain counts the frames written to nobody's tap by owner: all under
/// 65534, none under 0, whatever the install. Needs nftables (`nft`).
#[test]
fn netfilter_sees_a_guests_frames_as_the_callers() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    for (k, mode) in [Mode::Setuid, Mode::FileCaps].into_iter().enumerate() {
        let chain = format!("c{k}");
        ns.exec(&format!(
            "nft add table bridge t && \
             nft add chain bridge t {chain} '{{ type filter hook prerouting priority 0; }}' && \
             nft add rule bridge t {chain} meta skuid 0 counter comment root && \
             nft add rule bridge t {chain} meta skuid {NOBODY} counter comment caller"
        ));
        let fd = sb.run_helper(&ns, mode, &["--br=br0"]).expect_tap();
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0x23, 0x03, 0x88, 0xb5]);
        frame.resize(60, 0);
        for _ in 0..5 {
            // SAFETY: write from a live buffer of its stated length.
            let n = unsafe { libc::write(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
            assert_eq!(
                usize::try_from(n).ok(),
                Some(frame.len()),
                "{mode:?}: write"
            );
        }
        let counts = (
            nft_count(&ns, &chain, "root"),
            nft_count(&ns, &chain, "caller"),
        );
        assert_eq!(
            counts,
            (0, 5),
            "{mode:?}: frames counted as (root's, the caller's)"
        );
        ns.exec(&format!("nft delete chain bridge t {chain}"));
        drop(fd);
        assert_no_taps(&ns);
    }
}

/// The peer goes away after the check and before the send: EPIPE is a
/// refusal (status 6), not a SIGPIPE death, and the tap goes with the helper.
#[cfg(feature = "test-hooks")]
#[test]
fn the_peer_closes_while_the_helper_is_paused() {
    use std::os::unix::process::ExitStatusExt;
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    for mode in [Mode::Setuid, Mode::FileCaps] {
        let (running, ours) = paused(&sb, &ns, mode);
        assert_eq!(ns.taps().len(), 1);
        drop(ours);
        // Let any sibling test's fork that may have copied our end exec.
        std::thread::sleep(std::time::Duration::from_millis(100));
        cont(&running);
        let out = running.wait_within(HANG_LIMIT);
        assert_eq!(out.status.signal(), None, "{mode:?}: killed by a signal");
        assert_eq!(out.status.code(), Some(6), "{mode:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap();
        assert!(last.contains("cannot send the tap"), "{stderr:?}");
        assert_no_taps(&ns);
    }
}
