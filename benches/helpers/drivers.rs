//! The drivers: spawning a helper the way the benchmark times it (fork,
//! join the namespaces, drop privileges, exec), one timed run, the
//! sequential and concurrent phases and the first-run check.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use crate::setup::{
    check_interrupted, cstr, ip, last_err, link_count, wait_child, Mode, Prog, Role,
};
use crate::{sys, Res, BRIDGE};

/// A connected pair of Unix stream sockets, both close-on-exec.
pub fn socketpair() -> Res<(OwnedFd, OwnedFd)> {
    sys::socketpair().map_err(|e| format!("socketpair: {e}").into())
}

/// Receives one byte and at most one SCM_RIGHTS fd. `Ok(None)` means EOF or no fd attached.
pub fn recv_fd(sock: RawFd) -> Res<Option<OwnedFd>> {
    Ok(recv_fds(sock)?.into_iter().next()) // extra fds are dropped (closed)
}

/// Receives one byte and its SCM_RIGHTS fds (all of a `--queues` run's).
/// Empty means EOF or no fd attached.
pub fn recv_fds(sock: RawFd) -> Res<Vec<OwnedFd>> {
    let mut byte = [0u8; 1];
    let msg = sys::recv_with_fds(sock, &mut byte, false).map_err(|e| format!("recvmsg: {e}"))?;
    if msg.bytes == 0 {
        return Ok(Vec::new());
    }
    Ok(msg.fds)
}

/// TUNGETIFF on the received fd: `Ok(name)` if it is a tap.
pub fn tap_name(fd: RawFd) -> Result<String, String> {
    let (name, flags) = sys::tun_iff(fd).map_err(|e| format!("TUNGETIFF: {e}"))?;
    if flags & sys::IFF_TAP == 0 {
        return Err(format!("{name}: not a tap (flags {flags:#x})"));
    }
    Ok(name)
}

// ---------------------------------------------------------------------------------------------
// Spawning: fork, join the namespaces, drop privileges, exec. Everything is allocated before
// fork; the child only makes async-signal-safe libc calls.

pub struct Ns {
    pub mnt: OwnedFd,
    pub net: OwnedFd,
    pub devnull: OwnedFd,
}

pub struct ExecPlan {
    pub path: CString,
    pub _argv: Vec<CString>,
    pub argv_ptrs: Vec<*const libc::c_char>,
    pub _envp: Vec<CString>,
    pub envp_ptrs: Vec<*const libc::c_char>,
    pub uid: Option<u32>,
    pub keep_fd: RawFd,
    pub stderr_fd: RawFd,
}

impl ExecPlan {
    pub fn new(
        path: &CStr,
        args: &[String],
        uid: Option<u32>,
        keep_fd: RawFd,
        stderr_fd: RawFd,
    ) -> Res<Self> {
        let mut argv = vec![path.to_owned()];
        for a in args {
            argv.push(cstr(a)?);
        }
        let envp = vec![cstr("PATH=/usr/sbin:/usr/bin:/sbin:/bin")?];
        let mut argv_ptrs: Vec<_> = argv.iter().map(|c| c.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<_> = envp.iter().map(|c| c.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());
        Ok(ExecPlan {
            path: path.to_owned(),
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
            uid,
            keep_fd,
            stderr_fd,
        })
    }
}

pub fn child_die(msg: &[u8]) -> ! {
    // SAFETY: write(2) and _exit(2) are async-signal-safe; `msg` is a live buffer.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

/// Runs in the forked child only: stderr to `stderr_fd`, stdin and
/// stdout to /dev/null, into the namespaces, `keep_fd` (unless -1) kept
/// across exec, and down to `uid` (its gid too, no groups) if given.
pub fn child_enter(ns: &Ns, stderr_fd: RawFd, keep_fd: RawFd, uid: Option<u32>) {
    // SAFETY: only async-signal-safe syscalls on fds prepared before fork.
    unsafe {
        if libc::dup2(stderr_fd, 2) < 0
            || libc::dup2(ns.devnull.as_raw_fd(), 0) < 0
            || libc::dup2(ns.devnull.as_raw_fd(), 1) < 0
        {
            child_die(b"bench child: dup2 failed\n");
        }
        if libc::setns(ns.mnt.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
            child_die(b"bench child: setns(mnt) failed\n");
        }
        if libc::setns(ns.net.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
            child_die(b"bench child: setns(net) failed\n");
        }
        if keep_fd >= 0 && libc::fcntl(keep_fd, libc::F_SETFD, 0) != 0 {
            child_die(b"bench child: fcntl failed\n");
        }
        if let Some(id) = uid {
            // raw syscalls: plain, with no libc bookkeeping between fork and exec
            if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                || libc::syscall(libc::SYS_setresgid, id, id, id) != 0
                || libc::syscall(libc::SYS_setresuid, id, id, id) != 0
            {
                child_die(b"bench child: privilege drop failed\n");
            }
        }
    }
}

/// `execve` of a plan prepared before fork; never returns.
pub fn child_execve(p: &ExecPlan) -> ! {
    // SAFETY: pointers into `p`, alive and NUL-terminated, prepared before fork.
    unsafe { libc::execve(p.path.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr()) };
    child_die(b"bench child: execve failed\n")
}

/// Runs in the forked child only.
pub fn child_exec(ns: &Ns, p: &ExecPlan) -> ! {
    child_enter(ns, p.stderr_fd, p.keep_fd, p.uid);
    child_execve(p)
}

pub fn fork_exec(ns: &Ns, p: &ExecPlan) -> Res<libc::pid_t> {
    // SAFETY: the bench is single-threaded; the child only calls `child_exec`, which never
    // returns and makes async-signal-safe calls only.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(last_err("fork"));
    }
    if pid == 0 {
        child_exec(ns, p);
    }
    Ok(pid)
}

/// `prog`'s own arguments, then `--use-vnet --fd=N --br=BRIDGE`.
pub fn helper_args(prog: &Prog, fd: RawFd) -> Vec<String> {
    let mut args = prog.args.clone();
    args.extend([
        "--use-vnet".into(),
        format!("--fd={fd}"),
        format!("--br={BRIDGE}"),
    ]);
    args
}

#[derive(Clone, Default)]
pub struct Run {
    pub fd_us: Option<f64>,
    pub exit_us: f64,
    pub ok: bool,
    pub cpu_us: f64,
    pub maxrss_kb: i64,
    pub err: Option<String>,
}

/// One run: spawn, receive the fd, wait. Returns the run and the received fd (kept open so the
/// caller can inspect the tap before it vanishes).
pub fn run_once(ns: &Ns, prog: &Prog, mode: Mode) -> Res<(Run, Option<OwnedFd>)> {
    let (run, fds) = run_queues(ns, prog, mode, 1)?;
    Ok((run, fds.into_iter().next()))
}

/// One run with `--queues=Q` (none for 1): all Q fds must arrive in one
/// message and name one tap.
pub fn run_queues(ns: &Ns, prog: &Prog, mode: Mode, queues: u16) -> Res<(Run, Vec<OwnedFd>)> {
    let (mine, theirs) = socketpair()?;
    let mut args = helper_args(prog, theirs.as_raw_fd());
    if queues > 1 {
        args.insert(1, format!("--queues={queues}"));
    }
    let plan = ExecPlan::new(
        &prog.copies[mode.idx()],
        &args,
        mode.uid(),
        theirs.as_raw_fd(),
        prog.log_fd.as_raw_fd(),
    )?;
    let t0 = Instant::now();
    let pid = fork_exec(ns, &plan)?;
    drop(theirs);
    let mut run = Run::default();
    let mut tap = Vec::new();
    if prog.role.is_helper() {
        match recv_fds(mine.as_raw_fd()) {
            Ok(fds) if !fds.is_empty() => {
                run.fd_us = Some(t0.elapsed().as_secs_f64() * 1e6);
                if fds.len() != usize::from(queues) {
                    run.err = Some(format!("{} fds for {queues} queues", fds.len()));
                }
                tap = fds;
            }
            Ok(_) => run.err = Some("no fd received".into()),
            Err(e) => run.err = Some(e.to_string()),
        }
    }
    let exit = wait_child(pid)?;
    run.exit_us = t0.elapsed().as_secs_f64() * 1e6;
    run.cpu_us = exit.cpu_us;
    run.maxrss_kb = exit.maxrss_kb;
    run.ok = exit.ok && run.err.is_none();
    if !exit.ok && run.err.is_none() {
        run.err = Some(exit.status.clone());
    }
    let names: Result<HashSet<String>, String> =
        tap.iter().map(|fd| tap_name(fd.as_raw_fd())).collect();
    match names {
        Err(e) => {
            run.ok = false;
            run.err = Some(e);
        }
        Ok(names) if names.len() > 1 => {
            run.ok = false;
            run.err = Some(format!("queues of {} taps", names.len()));
        }
        Ok(_) => {}
    }
    if !exit.ok {
        if let Some(e) = &mut run.err {
            if !e.contains(&exit.status) {
                *e = format!("{e}; {}", exit.status);
            }
        }
    }
    Ok((run, tap))
}

// ---------------------------------------------------------------------------------------------
// Phases

/// xorshift64*: a fixed-seed shuffle, so each program gets every predecessor alike (a fixed
/// rotation would always run the same program right after another helper's tap teardown).
pub struct Rng(pub u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, (self.next() % (i as u64 + 1)) as usize);
        }
    }
}

pub type SeqResults = BTreeMap<(Role, Mode), Vec<Run>>;

pub fn sequential(ns: &Ns, progs: &[Prog], n: usize, warmup: usize, net: &str) -> Res<SeqResults> {
    let mut res: SeqResults = BTreeMap::new();
    let before = link_count(net)?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut order: Vec<(usize, Mode)> = (0..progs.len())
        .flat_map(|p| Mode::ALL.map(|m| (p, m)))
        .collect();
    for i in 0..warmup + n {
        check_interrupted()?;
        // every (program, mode) once per iteration, in a shuffled order
        rng.shuffle(&mut order);
        for &(pi, mode) in &order {
            {
                let prog = &progs[pi];
                let (run, tap) = run_once(ns, prog, mode)?;
                drop(tap); // closing the only fd destroys the tap
                if let Some(e) = &run.err {
                    if res
                        .values()
                        .map(|v| v.iter().filter(|r| !r.ok).count())
                        .sum::<usize>()
                        < 5
                    {
                        eprintln!("  {} [{}] failed: {e}", prog.label, mode.short());
                    }
                }
                if i >= warmup {
                    res.entry((prog.role, mode)).or_default().push(run);
                }
            }
        }
    }
    let after = link_count(net)?;
    if after != before {
        return Err(format!("{} links left behind after sequential runs", after - before).into());
    }
    Ok(res)
}

/// `--queues=Q` against one queue, keyed by (program, mode, queues).
pub type QueueResults = BTreeMap<(Role, Mode, u16), Vec<Run>>;

/// Each program (ours and the floor) with `--queues=Q` and with one queue,
/// in each mode, every iteration in a fixed-seed shuffled order: the
/// floor's Q / 1 is what any program that makes a multiqueue tap pays.
pub fn multiqueue(
    ns: &Ns,
    progs: &[&Prog],
    n: usize,
    warmup: usize,
    queues: u16,
    net: &str,
) -> Res<QueueResults> {
    let before = link_count(net)?;
    let mut out: QueueResults = BTreeMap::new();
    let mut rng = Rng(0xd1b5_4a32_d192_ed03);
    let mut order: Vec<(usize, Mode, u16)> = (0..progs.len())
        .flat_map(|p| {
            Mode::ALL
                .into_iter()
                .flat_map(move |m| [(p, m, 1), (p, m, queues)])
        })
        .collect();
    let mut failed = 0;
    for i in 0..warmup + n {
        check_interrupted()?;
        rng.shuffle(&mut order);
        for &(pi, mode, q) in &order {
            let prog = progs[pi];
            let (run, fds) = run_queues(ns, prog, mode, q)?;
            drop(fds); // closing every queue's fd destroys the tap
            if let Some(e) = &run.err {
                failed += 1;
                if failed <= 5 {
                    eprintln!(
                        "  {} --queues={q} [{}] failed: {e}",
                        prog.label,
                        mode.short()
                    );
                }
            }
            if i >= warmup {
                out.entry((prog.role, mode, q)).or_default().push(run);
            }
        }
    }
    let after = link_count(net)?;
    if after != before {
        return Err(format!(
            "{} links left behind after the multiqueue runs",
            after - before
        )
        .into());
    }
    Ok(out)
}

pub struct ConcRound {
    pub total_us: f64,
    pub all_fds_us: f64,
    pub fails: usize,
    pub distinct: usize,
}

pub fn concurrent(ns: &Ns, prog: &Prog, mode: Mode, k: usize) -> Res<ConcRound> {
    let mut pairs = Vec::with_capacity(k);
    let mut plans = Vec::with_capacity(k);
    for _ in 0..k {
        let (mine, theirs) = socketpair()?;
        plans.push(ExecPlan::new(
            &prog.copies[mode.idx()],
            &helper_args(prog, theirs.as_raw_fd()),
            mode.uid(),
            theirs.as_raw_fd(),
            prog.log_fd.as_raw_fd(),
        )?);
        pairs.push((mine, Some(theirs)));
    }
    let mut pids = Vec::with_capacity(k);
    let t0 = Instant::now();
    for (plan, pair) in plans.iter().zip(pairs.iter_mut()) {
        pids.push(fork_exec(ns, plan)?);
        pair.1 = None; // close the child's end in the parent
    }
    let socks: Vec<RawFd> = pairs.iter().map(|p| p.0.as_raw_fd()).collect();
    finish_round(t0, &socks, &pids)
}

/// The end of a round of K at once started at `t0`: every client's fd
/// (on `socks`), then every exit (`pids`); what they delivered.
pub fn finish_round(t0: Instant, socks: &[RawFd], pids: &[libc::pid_t]) -> Res<ConcRound> {
    let (fds, fails) = gather(socks)?;
    let all_fds_us = t0.elapsed().as_secs_f64() * 1e6;
    let mut exits_ok = Vec::with_capacity(pids.len());
    for &pid in pids {
        exits_ok.push(wait_child(pid)?.ok);
    }
    let total_us = t0.elapsed().as_secs_f64() * 1e6;
    let (bad, distinct) = tally(&fds, &exits_ok);
    Ok(ConcRound {
        total_us,
        all_fds_us,
        fails: fails + bad,
        distinct,
    })
}

/// What K runs delivered, after [`gather`]: the runs that sent an fd but
/// failed (not a tap, or a failed exit), and the distinct taps.
fn tally(fds: &[Option<OwnedFd>], exits_ok: &[bool]) -> (usize, usize) {
    let mut names = HashSet::new();
    let mut fails = 0;
    for (fd, ok) in fds.iter().zip(exits_ok) {
        // no fd: counted by `gather` already
        if let Some(fd) = fd {
            match tap_name(fd.as_raw_fd()) {
                Ok(name) if *ok => {
                    names.insert(name);
                }
                _ => fails += 1,
            }
        }
    }
    (fails, names.len())
}

/// One message from each of `socks`, as they come (an error if none of
/// the pending ones speaks for 10 s): the fd each sent, and how many sent
/// none.
fn gather(socks: &[RawFd]) -> Res<(Vec<Option<OwnedFd>>, usize)> {
    let mut fds: Vec<Option<OwnedFd>> = socks.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..socks.len()).collect();
    let mut fails = 0;
    while !pending.is_empty() {
        let mut pfds: Vec<libc::pollfd> = pending
            .iter()
            .map(|&i| libc::pollfd {
                fd: socks[i],
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `pfds` is a live array of the stated length.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as _, 10_000) };
        if r < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(last_err("poll"));
        }
        if r == 0 {
            return Err(format!("{} clients still silent after 10 s", pending.len()).into());
        }
        let mut still = Vec::new();
        for (pfd, &i) in pfds.iter().zip(pending.iter()) {
            if pfd.revents == 0 {
                still.push(i);
                continue;
            }
            match recv_fd(pfd.fd) {
                Ok(Some(fd)) => fds[i] = Some(fd),
                _ => fails += 1,
            }
        }
        pending = still;
    }
    Ok((fds, fails))
}

/// On the first run of each helper and mode: the tap is on the bridge, up, has the bridge's
/// MTU and a MAC starting with fe; the feature floor's also has its alias, its slot altname
/// and, unless run with `--no-port-options`, port isolation.
pub fn sanity(ns: &Ns, prog: &Prog, mode: Mode, net: &str) -> Res<String> {
    let (run, tap) = run_once(ns, prog, mode)?;
    let Some(fd) = tap.filter(|_| run.ok) else {
        let log = fs::read_to_string(&prog.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        return Err(format!(
            "{} [{}] does not work: {} (stderr: {})",
            prog.label,
            mode.short(),
            run.err.unwrap_or_default(),
            tail.join(" / ")
        )
        .into());
    };
    let name = tap_name(fd.as_raw_fd())?;
    let info = ip(net, &["-o", "link", "show", "dev", &name])?;
    let br_mtu = ip(net, &["-o", "link", "show", "dev", BRIDGE])?
        .split_whitespace()
        .skip_while(|w| *w != "mtu")
        .nth(1)
        .unwrap_or("?")
        .to_string();
    let mut problems = Vec::new();
    if !info.contains(&format!("master {BRIDGE}")) {
        problems.push("not on the bridge");
    }
    if !info.contains(&format!("mtu {br_mtu} ")) {
        problems.push("MTU differs from the bridge's");
    }
    if !info.contains("link/ether fe:") {
        problems.push("MAC does not start with fe");
    }
    if !info.contains(",UP") && !info.contains("<UP") {
        problems.push("not up");
    }
    Ok(if problems.is_empty() {
        "ok".into()
    } else {
        problems.join(", ")
    })
}
