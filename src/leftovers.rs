//! Bounding the taps a user makes persistent and walks away from.
//!
//! Anyone holding a tap fd may set IFF_PERSIST without privilege; the tap
//! then outlives the VM, still in the bridge. Each run removes the calling
//! user's own abandoned ones beyond a small limit, oldest first. Only taps
//! carrying our marker are considered: the alias needs CAP_NET_ADMIN to set
//! or change, so a user can neither forge it onto an administrator's tap
//! nor strip it from one of ours.
//!
//! Carrier off only makes a tap a suspect (its holder can turn carrier off
//! while attached). It is proven abandoned by attaching to it: the kernel
//! refuses a second attachment to a single-queue tap with EBUSY, so success
//! means nothing held it, and from then on we do. Clearing IFF_PERSIST and
//! closing then lets the kernel delete it; no index can go stale meanwhile.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;

use crate::error::Error;
use crate::escape::quote;
use crate::netlink::{Link, Route};
use crate::privs::TunDevice;
use crate::sys::{self, IFF_NO_PI, IFF_TAP, IFF_VNET_HDR};

/// The alias that marks a tap as made by this helper for `uid`.
pub fn marker(uid: u32) -> Vec<u8> {
    format!("bridge-helper uid={uid}").into_bytes()
}

/// The user's taps that look abandoned (ours for this uid, persistent,
/// carrier off), oldest first: interface indexes only grow.
pub fn suspects(links: &[Link], uid: u32) -> Vec<&Link> {
    let mark = marker(uid);
    let mut found: Vec<&Link> = links
        .iter()
        .filter(|l| l.alias.as_deref() == Some(&mark[..]))
        .filter(|l| l.carrier == Some(false) && l.tun.as_ref().is_some_and(|t| t.persist))
        .collect();
    found.sort_by_key(|l| l.index);
    found
}

/// Removes the oldest abandoned taps until at most `limit - 1` remain,
/// leaving room for the one about to be made; says so on stderr for each.
/// A setuid install can prove (and so remove) one tap per run; the rest
/// wait for the next runs.
pub fn reap(
    route: &mut Route,
    tun: &mut TunDevice,
    uid: u32,
    limit: usize,
) -> Result<usize, Error> {
    let links = route
        .tun_links()
        .map_err(|e| Error::kernel("listing tap devices", e))?;
    let suspects = suspects(&links, uid);
    let keep = limit.saturating_sub(1);
    let mut believed = suspects.len();
    let mut removed = 0;
    let mut spare = None;
    for link in suspects {
        if believed <= keep {
            break;
        }
        let Some(fd) = spare.take().or_else(|| tun.spare()) else {
            break;
        };
        // Removed, or still in use, or no longer what we listed: either
        // way it no longer counts against the limit.
        believed -= 1;
        match claim(fd, link, route, uid) {
            Claim::Removed => {
                removed += 1;
                crate::report::notice(&format!(
                    "removed {}, a persistent tap of uid {uid} that nothing was attached to (at most {limit} are kept)",
                    quote(&link.name)
                ));
            }
            Claim::Kept(fd) => spare = fd,
        }
    }
    Ok(removed)
}

enum Claim {
    Removed,
    /// Not removed; the descriptor comes back if it is still unattached.
    Kept(Option<OwnedFd>),
}

fn claim(fd: OwnedFd, link: &Link, route: &mut Route, uid: u32) -> Claim {
    let tun = link.tun.clone().unwrap_or_default();
    let mut flags = IFF_TAP;
    if !tun.pi {
        flags |= IFF_NO_PI;
    }
    if tun.vnet_hdr {
        flags |= IFF_VNET_HDR;
    }
    match sys::tun_set_iff(fd.as_fd(), &link.name, flags) {
        // EBUSY: a VM holds it. Anything else: gone or changed since the
        // listing. Our descriptor stayed unattached either way.
        Err(Errno::EBUSY) | Err(_) => return Claim::Kept(Some(fd)),
        Ok(_) => {}
    }
    // Attached. Only if the name still means the tap we listed (same index,
    // our marker) is it dropped; otherwise closing just detaches again.
    let same = matches!(route.link(&link.name), Ok(Some(now))
        if now.index == link.index && now.alias.as_deref() == Some(&marker(uid)[..]));
    if same && sys::tun_set_persist(fd.as_fd(), false).is_ok() {
        drop(fd);
        return Claim::Removed;
    }
    Claim::Kept(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The suspects `reap` goes through when all are proven abandoned.
    fn to_reap(links: &[Link], uid: u32, limit: usize) -> Vec<&Link> {
        let s = suspects(links, uid);
        let excess = s.len().saturating_sub(limit.saturating_sub(1));
        s.into_iter().take(excess).collect()
    }
    use crate::netlink::TunInfo;

    fn tap(index: u32, alias: Option<&[u8]>, persist: bool, attached: u32) -> Link {
        Link {
            index,
            name: format!("tap{index}").into_bytes(),
            alias: alias.map(<[u8]>::to_vec),
            carrier: Some(attached != 0),
            tun: Some(TunInfo {
                persist,
                tap: true,
                ..TunInfo::default()
            }),
            ..Link::default()
        }
    }

    #[test]
    fn only_our_own_abandoned_taps_count() {
        let ours = marker(1000);
        let theirs = marker(1001);
        let links = vec![
            tap(5, Some(&ours), true, 0),
            tap(3, Some(&ours), true, 0),
            tap(4, Some(&ours), true, 1),   // a VM is attached
            tap(6, Some(&ours), false, 0),  // not persistent: dies with its fd
            tap(7, Some(&theirs), true, 0), // another user's
            tap(8, None, true, 0),          // the administrator's
            tap(9, Some(b"bridge-helper uid=10000"), true, 0),
        ];
        let names = |v: Vec<&Link>| v.iter().map(|l| l.index).collect::<Vec<_>>();

        assert_eq!(names(to_reap(&links, 1000, 4)), Vec::<u32>::new());
        assert_eq!(names(to_reap(&links, 1000, 2)), vec![3]);
        assert_eq!(names(to_reap(&links, 1000, 1)), vec![3, 5]);
        assert_eq!(names(to_reap(&links, 1000, 0)), vec![3, 5]);
        assert_eq!(names(to_reap(&links, 1001, 1)), vec![7]);
    }
}
