//! One run of each program under `strace -c -f` and one under
//! `/usr/bin/time -v`: system calls and peak memory, at each tap count.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::drivers::{fork_exec, helper_args, recv_fd, socketpair, tap_name, ExecPlan, Ns};
use crate::setup::{cstr, set_mode, wait_child, Mode, Prog};
use crate::Res;

pub struct Resource {
    pub syscalls: Option<(u64, u64)>,
    pub rss_kb: Option<u64>,
    pub note: String,
}

/// One run under `strace -c -f` and one under `/usr/bin/time -v`.
pub fn resources(ns: &Ns, prog: &Prog, mode: Mode, dir: &Path) -> Res<Resource> {
    let copy = prog.copies[mode.idx()].to_string_lossy().into_owned();
    let mut note = String::new();
    let mut syscalls = None;
    if prog.role.is_helper() && Path::new("/usr/bin/strace").exists() {
        let out = dir.join(format!("strace-{:?}-{}", prog.role, mode.short()));
        let (mine, theirs) = socketpair()?;
        let mut args: Vec<String> = vec!["-f".into(), "-c".into(), "-o".into()];
        args.push(out.to_string_lossy().into_owned());
        if mode.uid().is_some() {
            // strace runs as root and starts the helper as nobody: setuid/file caps still apply
            args.extend(["-u".into(), "nobody".into()]);
        }
        args.push(copy.clone());
        args.extend(helper_args(prog, theirs.as_raw_fd()));
        let plan = ExecPlan::new(
            &cstr("/usr/bin/strace")?,
            &args,
            None,
            theirs.as_raw_fd(),
            prog.log_fd.as_raw_fd(),
        )?;
        let pid = fork_exec(ns, &plan)?;
        drop(theirs);
        let fd = recv_fd(mine.as_raw_fd()).ok().flatten();
        let ok = wait_child(pid)?.ok;
        let tap_ok = fd.as_ref().is_some_and(|f| tap_name(f.as_raw_fd()).is_ok());
        drop(fd);
        if !(ok && tap_ok) {
            note.push_str("strace run failed; ");
        }
        let text = fs::read_to_string(&out).unwrap_or_default();
        syscalls = text
            .lines()
            .rev()
            .find(|l| l.trim_end().ends_with("total"))
            .and_then(|l| {
                let nums: Vec<u64> = l
                    .split_whitespace()
                    .filter_map(|t| t.parse::<u64>().ok())
                    .collect();
                // columns: % time, seconds, usecs/call, calls, [errors]; only integers survive
                match nums.as_slice() {
                    [_, calls, errors] => Some((*calls, *errors)),
                    [_, calls] => Some((*calls, 0)),
                    _ => None,
                }
            });
    }
    let mut rss_kb = None;
    if Path::new("/usr/bin/time").exists() {
        let out = dir.join(format!("time-{:?}-{}", prog.role, mode.short()));
        fs::write(&out, "")?;
        set_mode(&out, 0o666)?; // written by `time` running as nobody
        let (mine, theirs) = socketpair()?;
        let mut args: Vec<String> = vec!["-v".into(), "-o".into()];
        args.push(out.to_string_lossy().into_owned());
        args.push(copy);
        args.extend(helper_args(prog, theirs.as_raw_fd()));
        let plan = ExecPlan::new(
            &cstr("/usr/bin/time")?,
            &args,
            mode.uid(),
            theirs.as_raw_fd(),
            prog.log_fd.as_raw_fd(),
        )?;
        let pid = fork_exec(ns, &plan)?;
        drop(theirs);
        let fd = if prog.role.is_helper() {
            recv_fd(mine.as_raw_fd()).ok().flatten()
        } else {
            None
        };
        let ok = wait_child(pid)?.ok;
        if prog.role.is_helper() && !(ok && fd.is_some()) {
            note.push_str("time run failed; ");
        }
        drop(fd);
        rss_kb = fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Maximum resident set size (kbytes):")
                    .and_then(|v| v.trim().parse().ok())
            });
    }
    Ok(Resource {
        syscalls,
        rss_kb,
        note,
    })
}
