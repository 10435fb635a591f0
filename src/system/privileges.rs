//! Giving up everything but CAP_NET_ADMIN before any user input is read.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::unistd::{getgroups, getresgid, getresuid, setresgid, setresuid, Gid, Uid};

use crate::report::error::Error;
use crate::system::raw::{self, CapSets, CAP_NET_ADMIN, CAP_SETPCAP};

const NET_ADMIN: u64 = 1 << CAP_NET_ADMIN;

/// What is left after the drop.
pub struct Caller {
    /// The real uid that ran us: whose ACL view and whose tap this is.
    pub uid: Uid,
    pub tun: TunDevice,
    net_admin: bool,
}

impl Caller {
    pub fn require_net_admin(&self) -> Result<(), Error> {
        if self.net_admin {
            Ok(())
        } else {
            Err(Error::NoNetAdmin)
        }
    }

    /// Runs `f` with CAP_NET_ADMIN still permitted but not effective, then
    /// makes it effective again: for lookups that must not act with it.
    pub fn without_net_admin<T>(&self, f: impl FnOnce() -> T) -> Result<T, Error> {
        let kept = if self.net_admin { NET_ADMIN } else { 0 };
        let held = CapSets {
            effective: kept,
            permitted: kept,
            inheritable: 0,
        };
        let fail = |e: nix::Error| Error::Privileges(format!("capset: {}", e.desc()));
        raw::capset(&CapSets {
            effective: 0,
            ..held
        })
        .map_err(fail)?;
        let out = f();
        raw::capset(&held).map_err(fail)?;
        Ok(out)
    }
}

/// Where the tap's /dev/net/tun descriptor comes from: opened while still
/// root when installed setuid root (so a 0600 device works), otherwise
/// opened when needed, as the caller.
pub struct TunDevice {
    early: Option<io::Result<OwnedFd>>,
}

impl TunDevice {
    /// The descriptor for the new tap.
    pub fn for_tap(&mut self) -> Result<OwnedFd, Error> {
        self.early
            .take()
            .unwrap_or_else(open_tun)
            .map_err(|e| Error::TunDevice(e.to_string()))
    }

    /// One descriptor per queue of the new tap, all opened before the tap
    /// is created, so that a run that cannot have them all creates nothing.
    /// The first is [`TunDevice::for_tap`]'s; the others are opened as the
    /// caller: installed setuid root, only the first could be opened as
    /// root, before the arguments said how many were wanted, and reading
    /// no user input while root matters more than multiqueue on a 0600
    /// device.
    pub fn for_queues(&mut self, queues: u16) -> Result<Vec<OwnedFd>, Error> {
        if queues > 1 {
            // Room for every queue plus the few descriptors a run holds
            // (stdio, --fd, netlink): checked first for a clear line;
            // EMFILE below is the kernel's own word on it.
            const OWN: u64 = 8;
            let limit = raw::nofile_limit()
                .map_err(|e| Error::Privileges(format!("getrlimit: {}", e.desc())))?;
            if limit < u64::from(queues) + OWN {
                return Err(Error::FdLimit { queues, limit });
            }
        }
        let setuid_early = self.early.is_some();
        let mut fds = vec![self.for_tap()?];
        for _ in 1..queues {
            match open_tun() {
                Ok(fd) => fds.push(fd),
                Err(e) => {
                    let errno = e.raw_os_error().map(nix::errno::Errno::from_raw);
                    return Err(match errno {
                        Some(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM)
                            if setuid_early =>
                        {
                            Error::QueuesNeedTun(queues)
                        }
                        Some(nix::errno::Errno::EMFILE) => Error::FdLimit {
                            queues,
                            limit: raw::nofile_limit().unwrap_or(0),
                        },
                        _ => Error::TunDevice(e.to_string()),
                    });
                }
            }
        }
        Ok(fds)
    }

    /// Descriptors opened before `--fd` is checked: whatever numbers they
    /// got, the caller did not pass them.
    pub fn own_fds(&self) -> Vec<RawFd> {
        self.early
            .iter()
            .flatten()
            .map(AsRawFd::as_raw_fd)
            .collect()
    }
}

/// The caller's groups as the kernel reports them for this process, read
/// after the drop (which changes the gids but keeps the supplementary
/// list): real, effective and supplementary, for `group=` lines.
pub fn groups() -> Result<Vec<u32>, Error> {
    let fail = |what: &str, e: nix::Error| Error::Privileges(format!("{what}: {}", e.desc()));
    let ids = getresgid().map_err(|e| fail("getresgid", e))?;
    let mut gids: Vec<u32> = getgroups()
        .map_err(|e| fail("getgroups", e))?
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    gids.extend([ids.real.as_raw(), ids.effective.as_raw()]);
    gids.sort_unstable();
    gids.dedup();
    Ok(gids)
}

/// Gives up CAP_NET_ADMIN too, once nothing is left to configure: the
/// hand-over itself needs no privilege.
pub fn drop_all() -> Result<(), Error> {
    let none = CapSets::default();
    raw::capset(&none).map_err(|e| Error::Privileges(format!("capset: {}", e.desc())))?;
    verify_caps(none)
}

fn open_tun() -> io::Result<OwnedFd> {
    // std opens with O_CLOEXEC.
    File::options()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map(OwnedFd::from)
}

/// Becomes the real user with CAP_NET_ADMIN only (or nothing, if we were
/// never given it), then checks that this is really so.
pub fn drop_to_caller() -> Result<Caller, Error> {
    let fail = |what: &str, e: nix::Error| Error::Privileges(format!("{what}: {}", e.desc()));
    let uids = getresuid().map_err(|e| fail("getresuid", e))?;
    let gids = getresgid().map_err(|e| fail("getresgid", e))?;
    let (uid, gid) = (uids.real, gids.real);

    let setuid_root = uids.effective.is_root() && !uid.is_root();
    let tun = TunDevice {
        early: setuid_root.then(open_tun),
    };

    let caps = raw::capget().map_err(|e| fail("capget", e))?;
    let keep = caps.permitted & NET_ADMIN;
    if caps.effective & (1 << CAP_SETPCAP) != 0 {
        raw::drop_bounding_set().map_err(|e| fail("clearing the bounding set", e))?;
    }
    raw::set_keepcaps(true).map_err(|e| fail("PR_SET_KEEPCAPS", e))?;
    setresgid(gid, gid, gid).map_err(|e| fail("setresgid", e))?;
    setresuid(uid, uid, uid).map_err(|e| fail("setresuid", e))?;
    raw::set_keepcaps(false).map_err(|e| fail("PR_SET_KEEPCAPS", e))?;
    let want = CapSets {
        effective: keep,
        permitted: keep,
        inheritable: 0,
    };
    raw::capset(&want).map_err(|e| fail("capset", e))?;
    raw::clear_ambient().map_err(|e| fail("clearing ambient capabilities", e))?;
    raw::set_no_new_privs().map_err(|e| fail("PR_SET_NO_NEW_PRIVS", e))?;

    verify(uid, gid, want)?;
    Ok(Caller {
        uid,
        tun,
        net_admin: keep != 0,
    })
}

/// Trust, but read back: a drop that silently did less is a hole.
fn verify(uid: Uid, gid: Gid, want: CapSets) -> Result<(), Error> {
    let bad = |what: String| Err(Error::Privileges(what));
    let u = getresuid().map_err(|e| Error::Privileges(e.desc().into()))?;
    let g = getresgid().map_err(|e| Error::Privileges(e.desc().into()))?;
    if [u.real, u.effective, u.saved] != [uid; 3] || [g.real, g.effective, g.saved] != [gid; 3] {
        return bad(format!("still running with uids {u:?} and gids {g:?}"));
    }
    verify_caps(want)
}

fn verify_caps(want: CapSets) -> Result<(), Error> {
    let now = raw::capget().map_err(|e| Error::Privileges(e.desc().into()))?;
    if now != want {
        return Err(Error::Privileges(format!(
            "capabilities are {now:x?}, wanted {want:x?}"
        )));
    }
    Ok(())
}
