//! Which peers the service answers for (see the module doc of
//! [`crate::service`] for why): pure decisions on facts the system layer
//! read from the kernel, and the parser of `/etc/subuid` and `/etc/subgid`.

use nix::errno::Errno;

use crate::report::escape::Bytes;
use crate::system::peer::{Setgroups, UserNs};

/// What the kernel says about a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Effective ids at `connect()` (`SO_PEERCRED`), in the service's
    /// user namespace.
    pub uid: u32,
    pub gid: u32,
    /// `SO_PEERGROUPS`, in the service's user namespace.
    pub groups: Vec<u32>,
    /// The connecting process's user namespace: what vouches for its own
    /// ids, not for the ones `connect()` ran with.
    pub userns: UserNs,
    /// Whether the connecting process is in the service's network
    /// namespace. A setuid run makes its tap in its caller's, so one in
    /// another (confined there by root: systemd's PrivateNetwork=, a
    /// container) gets none of the service's bridges, whose traffic it
    /// was cut off from.
    pub own_network: bool,
    /// The connecting process's own ids now (`/proc/PID/status`), `None`
    /// if they could not be parsed. `connect()` may run with credentials
    /// that are not the process's: an io_uring personality carries those
    /// of whichever process registered it, from any user namespace.
    pub process: Option<Ids>,
}

/// A process's effective uid and gid and its supplementary groups, in the
/// service's user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// The effective ids and the groups in a `/proc/PID/status` text.
pub fn status_ids(text: &[u8]) -> Option<Ids> {
    let line = |name: &[u8]| {
        text.split(|&b| b == b'\n')
            .find_map(|l| l.strip_prefix(name))
    };
    let fields = |l: &'static [u8]| -> Option<Vec<u32>> {
        line(l)?
            .split(u8::is_ascii_whitespace)
            .filter(|f| !f.is_empty())
            .map(number)
            .collect()
    };
    Some(Ids {
        uid: *fields(b"Uid:")?.get(1)?,
        gid: *fields(b"Gid:")?.get(1)?,
        groups: fields(b"Groups:")?,
    })
}

/// One line of `/etc/subuid` or `/etc/subgid`: `owner:first:count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubRange {
    /// A user name or a decimal uid, as written.
    pub owner: Vec<u8>,
    pub first: u32,
    pub count: u32,
}

impl SubRange {
    fn contains(&self, id: u32) -> bool {
        id >= self.first && u64::from(id) < u64::from(self.first) + u64::from(self.count)
    }
}

/// The lines of a subordinate-id file that parse; others are ignored, as
/// shadow's own tools ignore them.
pub fn parse_subids(text: &[u8]) -> Vec<SubRange> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut fields = line.split(|&b| b == b':');
            let owner = fields.next()?;
            let first = number(fields.next()?)?;
            let count = number(fields.next()?)?;
            (fields.next().is_none() && !owner.is_empty()).then(|| SubRange {
                owner: owner.to_vec(),
                first,
                count,
            })
        })
        .collect()
}

/// The user a connection from `uid` counts against: the owner of the
/// subordinate range `uid` lies in (a container's user acts for it, and one
/// user may own many such uids), found by `uid_of`, or `uid` itself.
pub fn accountable(uid: u32, subuids: &[SubRange], uid_of: impl Fn(&[u8]) -> Option<u32>) -> u32 {
    subuids
        .iter()
        .find(|r| r.contains(uid))
        .and_then(|r| uid_of(&r.owner))
        .unwrap_or(uid)
}

fn number(field: &[u8]) -> Option<u32> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// Why a peer is not answered; the text follows "refused: ".
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// What the service must know of the peer could not be read.
    #[error("{what}: {cause}", cause = .why.desc())]
    Unreadable { what: &'static str, why: Errno },
    /// The peer is alive, but the service cannot see it in /proc.
    #[error("uid {0} connected, but /proc hides its process from the service (/proc is mounted with hidepid=): give the service the group that /proc's gid= option names (SupplementaryGroups= in a drop-in for bridge-helper.service), or mount /proc without hidepid=")]
    ProcHidden(u32),
    #[error("uid {uid} connected from {} allows setgroups (made with newuidmap/newgidmap or by root, as rootless containers are), where a group could have been dropped to escape a deny; connect from the host, or from a sandbox whose setgroups is deny (bubblewrap, Flatpak)", Namespace(*.depth))]
    SetgroupsAllowed { uid: u32, depth: u32 },
    #[error("uid {uid} connected from a user namespace; the service could not read {} setgroups ({}): let the service enter user namespaces (RestrictNamespaces=user in its unit), or connect from the host", if *.depth == 1 { "its" } else { "its first level's" }, .why.desc())]
    SetgroupsUnread { uid: u32, depth: u32, why: Errno },
    #[error("uid {uid} connected from a user namespace whose owner stopped or killed the service's check of it (no answer within a second); ask again without signalling the service's processes")]
    ProbeStopped { uid: u32 },
    #[error("uid {0} connected from a process that uid {0} may not examine itself (the kernel refused its /proc/PID/ns/user to the ids it connected with): it is not dumpable (it changed its ids, runs a setuid, setgid or file-capability program, or set PR_SET_DUMPABLE to 0), holds capabilities, or lives in a user namespace another user made; connect from an ordinary process of that user, started with its real and effective ids the same (root, or a process with CAP_NET_ADMIN, runs bridge-helper itself)")]
    Unexaminable(u32),
    #[error("uid {0} connected from a user namespace that is not below the service's, whose groups the service cannot vouch for; connect from the service's namespace or one below it")]
    Outside(u32),
    #[error("uid {0} connected from a network namespace other than the service's: a setuid run there makes its tap in that namespace, and the service makes taps only on the bridges of its own (the host's); connect from the host's network namespace")]
    OtherNetwork(u32),
    #[error("uid {uid} is a subordinate uid of {owner} (/etc/subuid): a container's user acting for {owner}; ask as {owner} itself")]
    SubUid { uid: u32, owner: Bytes },
    #[error("gid {gid} is a subordinate gid of {owner} (/etc/subgid): a container's group acting for {owner}; ask as {owner} itself")]
    SubGid { gid: u32, owner: Bytes },
    #[error("uid {0} connected with ids or groups that are not its process's own (an io_uring personality, or ids changed before the answer), which the process's user namespace cannot vouch for; connect with the process's own credentials and keep them until the answer")]
    ForeignCreds(u32),
}

/// Which namespace decides: the peer's own, or the first one below the
/// service's on the way down to it.
struct Namespace(u32);

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            1 => f.write_str("a user namespace that"),
            n => write!(f, "a user namespace nested {n} deep whose first level"),
        }
    }
}

/// Why a peer is not answered, if it is not.
pub fn refusal(peer: &Peer, subuids: &[SubRange], subgids: &[SubRange]) -> Option<Refusal> {
    let uid = peer.uid;
    // The namespace below vouches for the process's own ids only.
    let sorted = |ids: Ids| Ids {
        groups: {
            let mut g = ids.groups;
            g.sort_unstable();
            g
        },
        ..ids
    };
    let connected = sorted(Ids {
        uid: peer.uid,
        gid: peer.gid,
        groups: peer.groups.clone(),
    });
    if peer.process.clone().map(sorted) != Some(connected) {
        return Some(Refusal::ForeignCreds(uid));
    }
    match peer.userns {
        UserNs::Same
        | UserNs::Below {
            first_level: Setgroups::Deny,
            ..
        } => {}
        UserNs::Below {
            depth,
            first_level: Setgroups::Allow,
        } => return Some(Refusal::SetgroupsAllowed { uid, depth }),
        UserNs::Below {
            depth,
            first_level: Setgroups::Unread(errno),
        } => {
            return Some(match Errno::from_raw(errno) {
                Errno::ETIMEDOUT | Errno::EINTR => Refusal::ProbeStopped { uid },
                why => Refusal::SetgroupsUnread { uid, depth, why },
            });
        }
        UserNs::Outside => return Some(Refusal::Outside(uid)),
        UserNs::Unexaminable => return Some(Refusal::Unexaminable(uid)),
    }
    if !peer.own_network {
        return Some(Refusal::OtherNetwork(uid));
    }
    let owner = |ranges: &[SubRange], id: u32| {
        ranges
            .iter()
            .find(|r| r.contains(id))
            .map(|r| Bytes::from(&r.owner))
    };
    if let Some(owner) = owner(subuids, uid) {
        return Some(Refusal::SubUid { uid, owner });
    }
    owner(subgids, peer.gid).map(|owner| Refusal::SubGid {
        gid: peer.gid,
        owner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(userns: UserNs) -> Peer {
        Peer {
            uid: 1000,
            gid: 1000,
            groups: vec![1000, 27],
            userns,
            own_network: true,
            process: Some(Ids {
                uid: 1000,
                gid: 1000,
                groups: vec![27, 1000],
            }),
        }
    }

    #[test]
    fn status_gives_the_effective_ids_and_the_groups() {
        let text = b"Name:\tx\nUid:\t1000\t1001\t1002\t1003\nGid:\t50\t51\t52\t53\nFDSize:\t64\nGroups:\t27 1000 \nNStgid:\t1\n";
        let want = Ids {
            uid: 1001,
            gid: 51,
            groups: vec![27, 1000],
        };
        assert_eq!(status_ids(text), Some(want));
        let none = b"Uid:\t1\t1\t1\t1\nGid:\t2\t2\t2\t2\nGroups:\t\n";
        assert_eq!(status_ids(none).map(|ids| ids.groups), Some(vec![]));
        assert_eq!(status_ids(b"Uid:\t1\t1\t1\t1\nGid:\t2\n"), None);
        assert_eq!(status_ids(b"Uid:\t1\tx\nGid:\t2\t2\nGroups:\t\n"), None);
    }

    #[test]
    fn a_peer_that_connected_with_credentials_not_its_own_is_refused() {
        let mut shed = peer(UserNs::Same);
        shed.groups = vec![1000];
        let line = refusal(&shed, &[], &[]).unwrap().to_string();
        assert!(line.contains("not its process's own"), "{line}");
        let mut other = peer(below(1, Setgroups::Deny));
        other.uid = 1001;
        assert!(refusal(&other, &[], &[]).is_some());
        let unread = Peer {
            process: None,
            ..peer(UserNs::Same)
        };
        assert!(refusal(&unread, &[], &[]).is_some());
    }

    #[test]
    fn subids_parse_like_shadow_and_skip_bad_lines() {
        let ranges =
            parse_subids(b"alice:100000:65536\n1001:200000:10\nbad\nx:1:2:3\n:1:1\ny:z:1\n");
        assert_eq!(
            ranges,
            vec![
                SubRange {
                    owner: b"alice".to_vec(),
                    first: 100_000,
                    count: 65536
                },
                SubRange {
                    owner: b"1001".to_vec(),
                    first: 200_000,
                    count: 10
                },
            ]
        );
        assert!(ranges[1].contains(200_009) && !ranges[1].contains(200_010));
        let top = SubRange {
            owner: b"t".to_vec(),
            first: u32::MAX,
            count: u32::MAX,
        };
        assert!(top.contains(u32::MAX));
    }

    fn below(depth: u32, first_level: Setgroups) -> UserNs {
        UserNs::Below { depth, first_level }
    }

    #[test]
    fn host_and_sandbox_peers_whose_first_level_denies_setgroups_are_answered() {
        assert_eq!(refusal(&peer(UserNs::Same), &[], &[]), None);
        // bubblewrap without --dev, and with it (Flatpak: two levels).
        assert_eq!(refusal(&peer(below(1, Setgroups::Deny)), &[], &[]), None);
        assert_eq!(refusal(&peer(below(2, Setgroups::Deny)), &[], &[]), None);
    }

    #[test]
    fn a_peer_that_could_have_shed_a_group_is_refused() {
        let line = refusal(&peer(below(1, Setgroups::Allow)), &[], &[])
            .unwrap()
            .to_string();
        assert!(line.contains("allows setgroups (made with"), "{line}");
        let line = refusal(&peer(below(3, Setgroups::Allow)), &[], &[])
            .unwrap()
            .to_string();
        assert!(
            line.contains("nested 3 deep whose first level allows setgroups"),
            "{line}"
        );
        let line = refusal(&peer(below(2, Setgroups::Unread(libc::EPERM))), &[], &[])
            .unwrap()
            .to_string();
        assert!(
            line.contains("could not read its first level's setgroups (Operation not permitted)"),
            "{line}"
        );
        assert!(line.contains("RestrictNamespaces=user"), "{line}");
        // A probe stopped past its deadline, or killed, by the owner.
        for errno in [libc::ETIMEDOUT, libc::EINTR] {
            let line = refusal(&peer(below(2, Setgroups::Unread(errno))), &[], &[])
                .unwrap()
                .to_string();
            assert!(
                line.contains("stopped or killed the service's check"),
                "{line}"
            );
        }
        let line = refusal(&peer(UserNs::Outside), &[], &[])
            .unwrap()
            .to_string();
        assert!(line.contains("not below the service's"), "{line}");
    }

    #[test]
    fn a_peer_its_own_user_may_not_examine_is_refused_unless_it_connected_with_others_ids() {
        let line = refusal(&peer(UserNs::Unexaminable), &[], &[])
            .unwrap()
            .to_string();
        assert!(
            line.starts_with("uid 1000 connected from a process that uid 1000 may not examine"),
            "{line}"
        );
        assert!(line.contains("it is not dumpable"), "{line}");
        // Ids changed since connect() (which also makes it not dumpable):
        // that line says more.
        let changed = Peer {
            process: Some(Ids {
                uid: 1001,
                gid: 1000,
                groups: vec![27, 1000],
            }),
            ..peer(UserNs::Unexaminable)
        };
        let line = refusal(&changed, &[], &[]).unwrap().to_string();
        assert!(line.contains("not its process's own"), "{line}");
    }

    #[test]
    fn a_peer_in_another_network_namespace_is_refused() {
        for userns in [UserNs::Same, below(2, Setgroups::Deny)] {
            let elsewhere = Peer {
                own_network: false,
                ..peer(userns)
            };
            let line = refusal(&elsewhere, &[], &[]).unwrap().to_string();
            assert!(
                line.starts_with("uid 1000 connected from a network namespace other than"),
                "{line}"
            );
        }
    }

    #[test]
    fn a_subordinate_uid_counts_against_its_owner() {
        let ranges = parse_subids(b"alice:100000:65536\n1001:200000:10\n");
        let uid_of = |name: &[u8]| match name {
            b"alice" => Some(1000),
            other => std::str::from_utf8(other).ok()?.parse().ok(),
        };
        assert_eq!(accountable(100_007, &ranges, uid_of), 1000);
        assert_eq!(accountable(200_009, &ranges, uid_of), 1001);
        assert_eq!(accountable(200_010, &ranges, uid_of), 200_010);
        assert_eq!(accountable(65534, &ranges, uid_of), 65534);
    }

    #[test]
    fn a_subordinate_id_is_refused_naming_its_owner() {
        let subs = parse_subids(b"alice:999:2\n");
        let line = refusal(&peer(UserNs::Same), &subs, &[])
            .unwrap()
            .to_string();
        assert!(line.contains("subordinate uid of 'alice'"), "{line}");
        let line = refusal(&peer(UserNs::Same), &[], &subs)
            .unwrap()
            .to_string();
        assert!(line.contains("subordinate gid of 'alice'"), "{line}");
        let elsewhere = parse_subids(b"alice:2000:10\n");
        assert_eq!(refusal(&peer(UserNs::Same), &elsewhere, &elsewhere), None);
    }
}
