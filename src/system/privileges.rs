//! Giving up everything but CAP_NET_ADMIN before any user input is read.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::prctl;
use nix::unistd::{getgroups, getresgid, getresuid, setresgid, setresuid, Gid, Uid};

use crate::report::error::{Dropping, Error, IdKind};
use crate::system::caps::{
    self, CapSets, CAP_DAC_OVERRIDE, CAP_KILL, CAP_NET_ADMIN, CAP_SETGID, CAP_SETPCAP, CAP_SETUID,
};
use crate::system::files;

const NET_ADMIN: u64 = 1 << CAP_NET_ADMIN;
/// What opening a 0600 /dev/net/tun as the caller takes (setuid root
/// installs only), kept for that one open and given up right after it.
const DAC_OVERRIDE: u64 = 1 << CAP_DAC_OVERRIDE;
/// What becoming another user takes: kept, permitted only, by root
/// callers alone, until the command line says whether root checks for
/// another user (`--check --user`); see [`Caller::settle`].
const BECOME: u64 = (1 << CAP_SETUID) | (1 << CAP_SETGID);

/// What is left after the drop.
pub struct Caller {
    /// The real uid that ran us: whose ACL view and whose tap this is.
    pub uid: Uid,
    pub tun: TunDevice,
    /// How this copy got its privilege, as the drop saw it.
    pub install: Install,
    net_admin: bool,
    /// [`BECOME`], for a root caller until [`Caller::settle`].
    spare: u64,
}

/// How this copy is installed, from what the process started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// Effective uid 0 for a caller that is not root.
    SetuidRoot,
    /// Started as root (or setuid root, run by root): nothing to tell.
    RunByRoot,
    /// CAP_NET_ADMIN permitted without uid 0: a file capability (or one
    /// inherited through ambient capabilities).
    Capability,
    Neither,
    /// Privileged (root, setuid or a capability) only in a user namespace
    /// that does not own this network namespace: root of `unshare --user
    /// --map-root-user` on the host's network. Its capabilities make no
    /// tap here.
    OtherUserNamespace,
}

impl Install {
    /// Whether a run asks the service rather than making the tap itself:
    /// it has no privilege over this network namespace.
    pub fn asks_service(self) -> bool {
        matches!(self, Install::Neither | Install::OtherUserNamespace)
    }
}

impl std::fmt::Display for Install {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Install::SetuidRoot => "setuid root",
            Install::RunByRoot => "run by root",
            Install::Capability => "file capability cap_net_admin",
            Install::Neither => "neither setuid root nor a file capability",
            Install::OtherUserNamespace => "privileged only in a user namespace that does not own this network namespace (unshare --user, a sandbox): no privilege over the host's network",
        })
    }
}

impl Caller {
    /// Gives up what only `--check --user` needs: every path but that one
    /// calls this once the command line is parsed.
    pub fn settle(&mut self) -> Result<(), Error> {
        if self.spare == 0 {
            return Ok(());
        }
        let kept = if self.net_admin { NET_ADMIN } else { 0 };
        let want = CapSets {
            effective: kept,
            permitted: kept,
            inheritable: 0,
        };
        caps::capset(&want).map_err(|e| fail("capset", e))?;
        self.spare = 0;
        verify_caps(want)
    }

    /// Root only: becomes `uid` with primary group `gid` and the
    /// supplementary `groups`, keeping no capability at all: what a check
    /// for that user reads, it reads as that user.
    pub fn become_user(&mut self, uid: Uid, gid: Gid, groups: &[Gid]) -> Result<(), Error> {
        if self.spare != BECOME {
            return Err(Error::Privileges(Dropping::CannotBecome));
        }
        caps::capset(&CapSets {
            effective: BECOME,
            permitted: BECOME,
            inheritable: 0,
        })
        .map_err(|e| fail("capset", e))?;
        take_groups(gid, groups)?;
        // Without PR_SET_KEEPCAPS, leaving uid 0 clears every capability;
        // staying uid 0 (checking for root itself) clears none, so they
        // are given up here either way.
        setresuid(uid, uid, uid).map_err(|e| fail("setresuid", e))?;
        caps::capset(&CapSets::default()).map_err(|e| fail("capset", e))?;
        self.spare = 0;
        self.net_admin = false;
        self.uid = uid;
        verify(uid, gid, CapSets::default())
    }

    pub fn require_net_admin(&self) -> Result<(), Error> {
        if self.net_admin {
            Ok(())
        } else {
            Err(Error::no_net_admin())
        }
    }

    /// Runs `f` with CAP_NET_ADMIN still permitted but not effective, then
    /// makes it effective again: for lookups that must not act with it.
    pub fn without_net_admin<T>(&self, f: impl FnOnce() -> T) -> Result<T, Error> {
        self.lookups().run(f)
    }

    /// [`Caller::without_net_admin`] for code that looks names up later in
    /// the run, without holding on to the caller.
    pub fn lookups(&self) -> Lookups {
        Lookups {
            kept: if self.net_admin { NET_ADMIN } else { 0 },
        }
    }
}

/// How to run lookups by interface name: with CAP_NET_ADMIN lowered, as
/// the kernel answers a lookup of a missing name by a caller holding it
/// with a `netdev-NAME` module load.
#[derive(Debug, Clone, Copy)]
pub struct Lookups {
    kept: u64,
}

impl Lookups {
    /// Runs `f` with CAP_NET_ADMIN still permitted but not effective, then
    /// makes it effective again.
    pub fn run<T>(self, f: impl FnOnce() -> T) -> Result<T, Error> {
        let held = CapSets {
            effective: self.kept,
            permitted: self.kept,
            inheritable: 0,
        };
        let fail = |e| fail("capset", e);
        caps::capset(&CapSets {
            effective: 0,
            ..held
        })
        .map_err(fail)?;
        let out = f();
        caps::capset(&held).map_err(fail)?;
        Ok(out)
    }
}

/// Where the tap's /dev/net/tun descriptor comes from: when installed
/// setuid root, opened during the drop, already as the caller but with
/// CAP_DAC_OVERRIDE (so a 0600 device works), otherwise opened when
/// needed, as the caller. Either way the file's credentials, and so the
/// tap's socket (netfilter's `meta skuid`), are the caller's, never root's.
pub struct TunDevice {
    early: Option<Result<OwnedFd, Errno>>,
}

impl TunDevice {
    /// The new tap's descriptors, queue 1's and then one more per further
    /// queue, all opened before the tap is created, so that a run that
    /// cannot have them all creates nothing. Queue 1's is the one a setuid
    /// install opened during the drop (else opened now, as the caller); the
    /// others are opened as the caller: installed setuid root, only the
    /// first could be opened as root, before the arguments said how many
    /// were wanted, and reading no user input while root matters more than
    /// multiqueue on a 0600 device.
    pub fn for_queues(&mut self, queues: u16) -> Result<(OwnedFd, Vec<OwnedFd>), Error> {
        if queues > 1 {
            // Room for every queue plus the few descriptors a run holds
            // (stdio, --fd, netlink): checked first for a clear line;
            // EMFILE below is the kernel's own word on it.
            const OWN: u64 = 8;
            let limit = files::nofile_limit().map_err(|e| fail("getrlimit", e))?;
            if limit < u64::from(queues) + OWN {
                return Err(Error::FdLimit { queues, limit });
            }
        }
        let setuid_early = self.early.is_some();
        let first = self
            .early
            .take()
            .unwrap_or_else(open_tun)
            .map_err(Error::tun_device)?;
        let mut more = Vec::new();
        for _ in 1..queues {
            match open_tun() {
                Ok(fd) => more.push(fd),
                Err(e) => {
                    return Err(match e {
                        Errno::EACCES | Errno::EPERM if setuid_early => {
                            Error::QueuesNeedTun(queues)
                        }
                        Errno::EMFILE => Error::FdLimit {
                            queues,
                            limit: files::nofile_limit().unwrap_or(0),
                        },
                        _ => Error::tun_device(e),
                    });
                }
            }
        }
        Ok((first, more))
    }

    /// Whether /dev/net/tun opens the way a run opens it (for --check):
    /// the descriptor opened as root, or a fresh open as the caller,
    /// closed at once.
    pub fn check(&self) -> Result<(), Error> {
        match &self.early {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(Error::tun_device(*e)),
            None => open_tun().map(drop).map_err(Error::tun_device),
        }
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

/// The supplementary `groups`, and `gid` as the real, effective and saved
/// gid: the groups part of becoming a user, for [`Caller::become_user`]
/// and [`enter_setuid_run`] alike.
fn take_groups(gid: Gid, groups: &[Gid]) -> Result<(), Error> {
    nix::unistd::setgroups(groups).map_err(|e| fail("setgroups", e))?;
    setresgid(gid, gid, gid).map_err(|e| fail("setresgid", e))
}

/// What `bridge-helper --serve` holds, however it was started: the
/// service unit's CapabilityBoundingSet= (debian/bridge-helper.service,
/// which says what each is for), so that a service started by hand or by
/// an init system without systemd is held to the same set.
const SERVICE: u64 = NET_ADMIN | DAC_OVERRIDE | BECOME | (1 << CAP_SETPCAP) | (1 << CAP_KILL);

/// Gives up, in the service's own process before its first connection,
/// every capability its sessions do not use (bounding, effective,
/// permitted, inheritable and ambient sets) and sets no_new_privs: what
/// the unit's CapabilityBoundingSet= and NoNewPrivileges= do under
/// systemd (where this changes nothing). Without it, `--serve` run by hand
/// would keep all of root's capabilities, CAP_SYS_PTRACE included, which
/// lets a process attach to any other and leave any bounding set behind.
pub fn enter_service() -> Result<(), Error> {
    let keep = caps::capget().map_err(|e| fail("capget", e))?.permitted & SERVICE;
    let want = CapSets {
        effective: keep,
        permitted: keep,
        inheritable: 0,
    };
    // The capset first: it makes CAP_SETPCAP effective if it was only
    // permitted. Without it at all (an administrator's narrower unit),
    // the bounding set cannot be changed, and whoever removed CAP_SETPCAP
    // limited that set.
    caps::capset(&want).map_err(|e| fail("capset", e))?;
    if want.effective & (1 << CAP_SETPCAP) != 0 {
        caps::drop_bounding_set(SERVICE).map_err(|e| fail("limiting the bounding set", e))?;
    }
    caps::clear_ambient().map_err(|e| fail("PR_CAP_AMBIENT_CLEAR_ALL", e))?;
    prctl::set_no_new_privs().map_err(|e| fail("PR_SET_NO_NEW_PRIVS", e))?;
    // Trust, but read back, as the run's drop does.
    let now = caps::capget().map_err(|e| fail("capget", e))?;
    if now != want {
        return Err(Error::Privileges(Dropping::Caps { now, want }));
    }
    Ok(())
}

/// Puts this root process in the state the kernel leaves a setuid-root
/// program in when `uid` runs it with primary group `gid` and the
/// supplementary `groups`: those groups, `gid` as every gid, `uid` as the
/// real uid and 0 as the effective and saved ones (the capabilities stay
/// root's), and not dumpable (no process of that user may ptrace it or
/// read its memory). The service's session does this before it runs a
/// request through the code of a setuid run, whose first step is
/// [`drop_to_caller`].
pub fn enter_setuid_run(uid: Uid, gid: Gid, groups: &[Gid]) -> Result<(), Error> {
    take_groups(gid, groups)?;
    let root = Uid::from_raw(0);
    setresuid(uid, root, root).map_err(|e| fail("setresuid", e))?;
    prctl::set_dumpable(false).map_err(|e| fail("PR_SET_DUMPABLE", e))?;
    let u = getresuid().map_err(|e| fail("getresuid", e))?;
    let g = getresgid().map_err(|e| fail("getresgid", e))?;
    if [u.real, u.effective, u.saved] != [uid, root, root]
        || [g.real, g.effective, g.saved] != [gid; 3]
    {
        return Err(Error::Privileges(Dropping::Ids(u, g)));
    }
    Ok(())
}

/// The caller's groups as the kernel reports them for this process, read
/// after the drop (which changes the gids but keeps the supplementary
/// list): real, effective and supplementary, for `group=` lines.
pub fn groups() -> Result<Vec<u32>, Error> {
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

/// How the program file is installed, from its mode and file capability
/// (for `--check --user`, where root's own start-up says nothing about a
/// user's run).
pub fn installed_binary() -> Install {
    let exe = c"/proc/self/exe";
    let setuid_root = std::fs::metadata("/proc/self/exe").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.mode() & 0o4000 != 0 && m.uid() == 0
    });
    // struct vfs_cap_data: le32 magic_etc, then le32 permitted (low word).
    let capability = files::xattr(exe, c"security.capability")
        .and_then(|v| {
            v.get(4..8)
                .map(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]]))
        })
        .is_some_and(|permitted| permitted & (1 << CAP_NET_ADMIN) != 0);
    match (setuid_root, capability) {
        (true, _) => Install::SetuidRoot,
        (false, true) => Install::Capability,
        (false, false) => Install::Neither,
    }
}

/// Gives up CAP_NET_ADMIN too, once nothing is left to configure: the
/// hand-over itself needs no privilege.
pub fn drop_all() -> Result<(), Error> {
    let none = CapSets::default();
    caps::capset(&none).map_err(|e| fail("capset", e))?;
    verify_caps(none)
}

fn open_tun() -> Result<OwnedFd, Errno> {
    // openat: musl's open() adds an fcntl for O_CLOEXEC.
    files::open_at(None, c"/dev/net/tun", libc::O_RDWR)
}

/// A call of the drop that failed.
fn fail(call: &'static str, e: Errno) -> Error {
    Error::Privileges(Dropping::Call(call, e))
}

/// The drop's setresgid or setresuid, which sets the caller's own real
/// id as every id, failed. EINVAL there means the id has no mapping in
/// the process's user namespace (`unshare --user` without a map, where it
/// shows as the overflow id): the kernel sets no id it cannot map, even
/// one the process already has. Named, with its fix, as the cause.
fn own_id(kind: IdKind, e: Errno) -> Error {
    match e {
        Errno::EINVAL => Error::Privileges(Dropping::Unmapped(kind)),
        e => fail(
            match kind {
                IdKind::Uid => "setresuid",
                IdKind::Gid => "setresgid",
            },
            e,
        ),
    }
}

/// Becomes the real user with CAP_NET_ADMIN only (or nothing, if we were
/// never given it), then checks that this is really so (CAP_DAC_OVERRIDE,
/// held for the setuid open of the device, included).
pub fn drop_to_caller() -> Result<Caller, Error> {
    let uids = getresuid().map_err(|e| fail("getresuid", e))?;
    let gids = getresgid().map_err(|e| fail("getresgid", e))?;
    let (uid, gid) = (uids.real, gids.real);

    let setuid_root = uids.effective.is_root() && !uid.is_root();

    let caps = caps::capget().map_err(|e| fail("capget", e))?;
    // CAP_NET_ADMIN held in a user namespace that does not own this
    // network namespace (root of `unshare --user --map-root-user`) is no
    // privilege over its links: such a run could only fail at the kernel,
    // after judging the host's files from a view where root's show as
    // someone else's. It gives the capability up with the rest and asks
    // the service, which judges it as the uid the kernel reports on the
    // socket (SO_PEERCRED: the host's), as it judges any other peer in a
    // user namespace. Not a security decision: the kernel refuses what
    // capabilities do not reach either way; when the probe cannot tell
    // (no /proc), a run goes on as before.
    let reaches =
        caps.permitted & NET_ADMIN == 0 || caps::reach_network_namespace().unwrap_or(true);
    let keep = if reaches {
        caps.permitted & NET_ADMIN
    } else {
        0
    };
    let install = match (reaches, setuid_root, uid.is_root(), keep != 0) {
        (false, ..) => Install::OtherUserNamespace,
        (true, true, _, _) => Install::SetuidRoot,
        (true, false, true, _) => Install::RunByRoot,
        (true, false, false, true) => Install::Capability,
        (true, false, false, false) => Install::Neither,
    };
    if caps.effective & (1 << CAP_SETPCAP) != 0 {
        caps::drop_bounding_set(0).map_err(|e| fail("clearing the bounding set", e))?;
    }
    prctl::set_keepcaps(true).map_err(|e| fail("PR_SET_KEEPCAPS", e))?;
    setresgid(gid, gid, gid).map_err(|e| own_id(IdKind::Gid, e))?;
    setresuid(uid, uid, uid).map_err(|e| own_id(IdKind::Uid, e))?;
    prctl::set_keepcaps(false).map_err(|e| fail("PR_SET_KEEPCAPS", e))?;
    let spare = if uid.is_root() {
        caps.permitted & BECOME
    } else {
        0
    };
    let want = CapSets {
        effective: keep,
        permitted: keep | spare,
        inheritable: 0,
    };
    // Setuid root: the device is opened now, with the caller's uids (the
    // file keeps the opener's credentials for the tap's whole life) and
    // CAP_DAC_OVERRIDE for this one open, before any user input is read.
    // (A caller who started us without it in the bounding set gets the
    // device's own permissions: an open that fails is reported when the
    // tap is made.)
    let early = if install == Install::SetuidRoot {
        let dac = caps.permitted & DAC_OVERRIDE;
        let opening = CapSets {
            effective: keep | dac,
            permitted: keep | dac,
            inheritable: 0,
        };
        caps::capset(&opening).map_err(|e| fail("capset", e))?;
        Some(open_tun())
    } else {
        None
    };
    let tun = TunDevice { early };
    caps::capset(&want).map_err(|e| fail("capset", e))?;
    caps::clear_ambient().map_err(|e| fail("PR_CAP_AMBIENT_CLEAR_ALL", e))?;
    prctl::set_no_new_privs().map_err(|e| fail("PR_SET_NO_NEW_PRIVS", e))?;

    verify(uid, gid, want)?;
    Ok(Caller {
        uid,
        tun,
        install,
        net_admin: keep != 0,
        spare,
    })
}

/// Trust, but read back: a drop that silently did less is a hole.
fn verify(uid: Uid, gid: Gid, want: CapSets) -> Result<(), Error> {
    let u = getresuid().map_err(|e| Error::Privileges(Dropping::Errno(e)))?;
    let g = getresgid().map_err(|e| Error::Privileges(Dropping::Errno(e)))?;
    if [u.real, u.effective, u.saved] != [uid; 3] || [g.real, g.effective, g.saved] != [gid; 3] {
        return Err(Error::Privileges(Dropping::Ids(u, g)));
    }
    verify_caps(want)
}

fn verify_caps(want: CapSets) -> Result<(), Error> {
    let now = caps::capget().map_err(|e| Error::Privileges(Dropping::Errno(e)))?;
    if now != want {
        return Err(Error::Privileges(Dropping::Caps { now, want }));
    }
    Ok(())
}

/// This process's `/proc/self/uid_map` if it is in a user namespace other
/// than the initial one (a bubblewrap or Flatpak sandbox, `unshare
/// --user`), `None` otherwise: there, files of uids the namespace does not
/// map (root's, on the host) show as owned by the overflow uid. The
/// initial namespace maps every uid to itself, which a nested one cannot
/// (it would need all of its parent's).
pub fn nested_uid_map() -> Option<String> {
    std::fs::read_to_string("/proc/self/uid_map")
        .ok()
        .filter(|map| map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
}

/// `uid` (of this process's user namespace) as the parent namespace sees
/// it, from the text of `/proc/self/uid_map` (lines of `inside outside
/// count`, whose outside ids are the parent's); `None` if it maps no such
/// uid.
pub fn uid_in_parent_namespace(uid_map: &str, uid: Uid) -> Option<u32> {
    let id = uid.as_raw();
    uid_map.lines().find_map(|line| {
        let mut fields = line.split_whitespace().map(|f| f.parse::<u32>().ok());
        let (inside, outside, count) = (fields.next()??, fields.next()??, fields.next()??);
        let offset = id.checked_sub(inside).filter(|&o| o < count)?;
        outside.checked_add(offset)
    })
}

#[cfg(test)]
mod tests {
    use super::uid_in_parent_namespace;
    use nix::unistd::Uid;

    fn outside_id(map: &str, id: u32) -> Option<u32> {
        uid_in_parent_namespace(map, Uid::from_raw(id))
    }

    #[test]
    fn a_uid_map_line_gives_the_outside_id_of_an_inside_one() {
        // unshare --user --map-root-user, run by nobody.
        assert_eq!(
            outside_id("         0      65534          1\n", 0),
            Some(65534)
        );
        assert_eq!(outside_id("         0      65534          1\n", 1), None);
        let two = "0 1000 1\n1 100000 65536\n";
        assert_eq!(outside_id(two, 5), Some(100_004));
        assert_eq!(outside_id(two, 65537), None);
        assert_eq!(outside_id("0 0 4294967295\n", 7), Some(7));
        assert_eq!(outside_id("", 0), None);
        assert_eq!(outside_id("0 x 1\n", 0), None);
    }
}
