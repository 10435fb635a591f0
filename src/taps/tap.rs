//! Creating the tap and putting it on the bridge.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;

use crate::policy::helper_conf::lines::PortSettings;
use crate::policy::ifname::IfName;
use crate::report::error::{Doing, Error};
use crate::report::escape::Bytes;
use crate::taps::reaper::{self, CallerTaps};
use nix::unistd::Uid;

use crate::system::netlink::{
    IfIndex, Link, NlError, PortSetup, PortVlan, Rtnetlink, Setup, IFF_UP,
};
use crate::system::tun::{
    self, IFF_MULTI_QUEUE, IFF_NO_PI, IFF_PERSIST, IFF_TAP, IFF_TUN_EXCL, IFF_VNET_HDR,
};
use crate::taps::{naming, unfinished};

/// The bridge to join, checked to exist and to be a Linux bridge.
pub fn find_bridge(route: &mut Rtnetlink, name: &IfName) -> Result<Link, Error> {
    let name = name.as_bytes();
    let link = route
        .link(name)
        .map_err(|e| Error::kernel(Doing::LookUpBridge(Bytes::from(name)), e))?
        .ok_or_else(|| Error::NoBridge(Bytes::from(name)))?;
    match link.kind.as_deref() {
        Some(b"bridge") => Ok(link),
        kind => Err(Error::NotABridge(Bytes::from(name), kind.map(Bytes::from))),
    }
}

/// A tap that exists only as long as `fd` is open: never IFF_PERSIST.
pub struct Tap {
    pub fd: OwnedFd,
    /// Queues 2..N of a multiqueue tap (`--queues`); empty otherwise.
    pub queues: Vec<OwnedFd>,
    pub name: Vec<u8>,
    /// The caller's slot a multiqueue tap was created for (its birth
    /// name's); `None` for a tap created under its `tapN`.
    pub born: Option<usize>,
    /// What every request after creation names the tap by.
    pub index: IfIndex,
    mac: [u8; 6],
    flags: i16,
}

/// A `tapN` that no interface has: see [`naming`]. `None` if the lookups
/// failed or found no free number; the kernel then picks with `tap%d`.
/// Call it with CAP_NET_ADMIN lowered (see [`tun::name_in_use`]).
pub fn free_name(route: &Rtnetlink) -> Option<IfName> {
    naming::search(|n| tun::name_in_use(route.socket(), &naming::name(n)))
        .ok()
        .flatten()
        .map(naming::name)
}

/// Creates the tap. A multiqueue tap is created under the birth name of
/// a free slot of the caller's (see [`CallerTaps::create`]): it takes
/// anyone's queue by name before it has an owner, and its name then says
/// from its first instant whose it is, so that a tap left at any point of
/// the run is found and counted (issue 23); [`Tap::rename`] gives it its
/// `tapN` later. A single-queue tap takes no second fd while ours holds
/// it, so it dies with the run whatever happens: it is created as `name`
/// if that is still free, else by the kernel's `tap%d`, and spared the
/// rename (which waits for an RCU grace period under the RTNL lock, and
/// so costs every concurrent run). Then finds its interface index: every
/// later request
/// names the tap by that index, so a rename racing with the run (udev, an
/// administrator) cannot send its configuration to whatever holds its name
/// by then. No ioctl reports a tap's index, so the name is looked up once
/// and the answer accepted only if it carries the address this fd has
/// just set (the kernel's random one, made high with 0xfe).
///
/// With `multi_queue`, the tap takes more queues: see [`Tap::add_queues`].
pub fn create(
    route: &mut Rtnetlink,
    own: &mut CallerTaps,
    tun: OwnedFd,
    use_vnet: bool,
    multi_queue: bool,
    name: Option<&IfName>,
) -> Result<Tap, Error> {
    let features =
        tun::tun_features(tun.as_fd()).map_err(|e| Error::kernel("TUNGETFEATURES", e))?;
    let mut flags = IFF_TAP | IFF_NO_PI;
    if use_vnet && features & u32::from(IFF_VNET_HDR.cast_unsigned()) != 0 {
        flags |= IFF_VNET_HDR;
    }
    if multi_queue {
        if features & u32::from(IFF_MULTI_QUEUE.cast_unsigned()) == 0 {
            return Err(Error::kernel(
                "--queues",
                "this kernel's tun driver has no multiqueue taps",
            ));
        }
        flags |= IFF_MULTI_QUEUE;
    }
    // IFF_TUN_EXCL: a name that exists by now (another run took it)
    // fails with EBUSY; without it, TUNSETIFF would attach to that
    // interface.
    let set_iff = |name: &IfName| tun::tun_set_iff(tun.as_fd(), name, flags | IFF_TUN_EXCL);
    let failed = |e: Errno| Error::kernel("creating a tap (TUNSETIFF)", e);
    let (name, slot) = if multi_queue {
        let (name, slot) = own.create(route, |name| match set_iff(name) {
            Ok(name) => Ok(Some(name)),
            Err(Errno::EBUSY) => Ok(None),
            Err(e) => Err(failed(e)),
        })?;
        (name, Some(slot))
    } else {
        let name = match name.map(set_iff) {
            Some(Ok(name)) => name,
            None | Some(Err(Errno::EBUSY)) => set_iff(&naming::pattern()).map_err(failed)?,
            Some(Err(e)) => return Err(failed(e)),
        };
        (name, None)
    };
    let what = |step| Doing::OnTap(Bytes::from(&name), step);
    let mut mac =
        tun::tap_hwaddr(tun.as_fd()).map_err(|e| Error::kernel(what("SIOCGIFHWADDR"), e))?;
    // A bridge takes the lowest MAC of its ports; 0xfe keeps ours above
    // any real NIC's, so adding a VM never changes the bridge's address.
    mac[0] = 0xfe;
    tun::tap_set_hwaddr(tun.as_fd(), mac).map_err(|e| Error::kernel(what("SIOCSIFHWADDR"), e))?;
    let link = route
        .link(&name)
        .map_err(|e| Error::kernel(what("looking up its index"), e))?;
    let index = match link {
        Some(link) if link.address == mac && link.tun.is_some() => link.index,
        _ => {
            return Err(Error::Mismatch {
                tap: Bytes::from(&name),
                step: "looking up its index",
                what: "the tap was renamed",
            })
        }
    };
    unfinished::mark(index);
    Ok(Tap {
        fd: tun,
        queues: Vec::new(),
        name,
        born: slot,
        index,
        mac,
        flags,
    })
}

impl Tap {
    fn what(&self, step: &'static str) -> Doing {
        Doing::OnTap(Bytes::from(&self.name), step)
    }

    /// Every queue's descriptor, queue 1 first: what the caller gets.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        std::iter::once(&self.fd)
            .chain(&self.queues)
            .map(AsFd::as_fd)
            .collect()
    }

    /// Attaches `more` as queues 2..N. A multiqueue tap takes a queue only
    /// by name (TUNSETIFF without IFF_TUN_EXCL), which no other run does:
    /// the name is this tap's while queue 1's fd holds it, and only
    /// CAP_NET_ADMIN can rename it. Until the tap has an owner, though, any
    /// user who can open /dev/net/tun may attach a queue by its name too,
    /// so the owner is set first, and each queue must prove it is on this
    /// tap (an address set through its fd shows on the tap's index), and
    /// the kernel must count exactly N queues, none detached: no queue but
    /// ours. On failure the run's end deletes the tap by index (see
    /// `unfinished::remove`): it may hold a queue that is not ours,
    /// and must not wait for that queue's holder.
    pub fn add_queues(
        &mut self,
        route: &mut Rtnetlink,
        more: Vec<OwnedFd>,
        owner: Uid,
    ) -> Result<(), Error> {
        if more.is_empty() {
            return Ok(());
        }
        tun::tun_set_owner(self.fd.as_fd(), owner)
            .map_err(|e| Error::kernel(self.what("TUNSETOWNER"), e))?;
        let wrong = |what: &'static str| Error::Mismatch {
            tap: Bytes::from(&self.name),
            step: "attaching its queues",
            what,
        };
        let name = IfName::new(&self.name).map_err(|_| wrong("the kernel gave it a bad name"))?;
        for (k, fd) in (1u16..).zip(more) {
            let got = tun::tun_set_iff(fd.as_fd(), &name, self.flags)
                .map_err(|e| Error::kernel(self.what("attaching a queue (TUNSETIFF)"), e))?;
            if got != self.name {
                return Err(wrong("a queue went to another interface"));
            }
            // Unique per queue and never the tap's own address.
            let mut marker = self.mac;
            let [hi, lo] = k.to_be_bytes();
            marker[4] ^= hi;
            marker[5] ^= lo;
            tun::tap_set_hwaddr(fd.as_fd(), marker)
                .map_err(|e| Error::kernel(self.what("SIOCSIFHWADDR on a queue"), e))?;
            let link = route
                .link_by_index(self.index)
                .map_err(|e| Error::kernel(self.what("reading back a queue"), e))?;
            if link.map(|l| l.address) != Some(marker.to_vec()) {
                return Err(wrong("a queue went to another interface"));
            }
            self.queues.push(fd);
        }
        tun::tap_set_hwaddr(self.fd.as_fd(), self.mac)
            .map_err(|e| Error::kernel(self.what("SIOCSIFHWADDR"), e))?;
        let link = route
            .link_by_index(self.index)
            .map_err(|e| Error::kernel(self.what("counting its queues"), e))?
            .ok_or_else(|| {
                Error::kernel(self.what("counting its queues"), "the tap disappeared")
            })?;
        if link.address != self.mac || !self.has_only_our_queues(&link) {
            return Err(wrong("the kernel counts other queues than ours"));
        }
        // A queue attached in the ownerless moment may set the owner (and
        // group) without privilege, to re-attach after the reset below. This
        // one read is taken under RTNL, as TUNSETIFF and TUNSETOWNER are: if
        // it shows no queue but ours and the caller as owner, no one else
        // can attach again.
        let owned = link
            .tun
            .as_ref()
            .is_some_and(|t| t.owner == Some(owner.as_raw()) && t.group.is_none());
        if !owned {
            return Err(wrong(
                "its owner was changed by a queue attached before it had one",
            ));
        }
        // Ours alone now, and owned: undo whatever a queue attached in the
        // ownerless moment and closed again may have set for the whole tap.
        tun::tun_reset_shared(self.fd.as_fd())
            .map_err(|e| Error::kernel(self.what("resetting its shared settings"), e))?;
        Ok(())
    }

    /// Gives the tap its `tapN` (`name`, or the kernel's `tap%d` if that
    /// is taken by now) and the caller's marker in one request: from its
    /// birth name to its final one, the tap always says whose it is.
    /// Still down, so the kernel allows the rename; no unprivileged holder
    /// can bring it up.
    pub fn rename(
        &mut self,
        route: &mut Rtnetlink,
        name: Option<&IfName>,
        owner: Uid,
    ) -> Result<(), Error> {
        if self.born.is_none() {
            return Ok(());
        }
        let alias = reaper::marker(owner);
        let pattern = naming::pattern();
        let renamed = match name.map(|n| route.rename(self.index, n.as_bytes(), &alias)) {
            Some(Ok(())) => Ok(()),
            None
            | Some(Err(NlError {
                errno: Errno::EEXIST,
                ..
            })) => route.rename(self.index, pattern.as_bytes(), &alias),
            Some(Err(e)) => Err(e),
        };
        renamed.map_err(|e| Error::kernel(self.what("renaming it"), e))?;
        let link = route
            .link_by_index(self.index)
            .map_err(|e| Error::kernel(self.what("reading back its name"), e))?
            .ok_or_else(|| Error::kernel(self.what("renaming it"), "the tap disappeared"))?;
        self.name = link.name;
        Ok(())
    }

    /// The kernel's count of the tap's queues is exactly ours. For one
    /// queue, a tap that is not multiqueue takes no second one anyway.
    fn has_only_our_queues(&self, link: &Link) -> bool {
        let Some(tun) = &link.tun else {
            return false;
        };
        let ours = u32::try_from(self.queues.len() + 1).ok();
        if self.queues.is_empty() {
            return !tun.multi_queue;
        }
        tun.multi_queue && tun.num_queues == ours && tun.num_disabled_queues == Some(0)
    }

    /// Owner, MTU, marker, bridge, port settings and link state, then
    /// reads it all back, with the MAC [`create`] set and the slot altname
    /// if it got one: the fd is only handed over if the tap is exactly as
    /// intended.
    pub fn attach(
        &self,
        route: &mut Rtnetlink,
        bridge: &Link,
        owner: Uid,
        slot: Option<&[u8]>,
        port: Option<&PortSettings>,
    ) -> Result<(), Error> {
        // Only the caller (or CAP_NET_ADMIN) may ever attach to it by name,
        // should its holder make it persistent.
        tun::tun_set_owner(self.fd.as_fd(), owner)
            .map_err(|e| Error::kernel(self.what("TUNSETOWNER"), e))?;
        let alias = reaper::marker(owner);
        let port = port.filter(|p| !p.is_empty());
        // Without port settings, up in the same request (as before port
        // settings existed); with them, down until they hold: an isolated
        // port must never pass a frame as a plain one.
        let setup = Setup {
            mtu: bridge.mtu,
            master: bridge.index,
            alias: &alias,
            up: port.is_none(),
        };
        route.configure(self.index, &setup).map_err(|e| {
            let adding = Doing::AddToBridge {
                tap: Bytes::from(&self.name),
                bridge: Bytes::from(&bridge.name),
            };
            Error::kernel(adding, e)
        })?;
        if let Some(port) = port {
            self.apply(route, port)?;
            route
                .set_up(self.index)
                .map_err(|e| Error::kernel(self.what("bringing it up"), e))?;
        }
        let link = self.verify(route, bridge, &setup, owner, slot)?;
        match port {
            Some(port) => self.verify_port(route, &link, port),
            None => Ok(()),
        }
    }

    /// Options and VLANs in one request, then whatever VLAN the bridge
    /// gave the port by default (its default PVID, normally 1) removed.
    fn apply(&self, route: &mut Rtnetlink, port: &PortSettings) -> Result<(), Error> {
        let setup = PortSetup {
            isolated: port.isolated.then_some(true),
            learning: port.learning,
        };
        let want = wanted_vlans(port);
        route.set_port(self.index, &setup, &want).map_err(|e| {
            let port = port.clone();
            Error::kernel(
                Doing::SetPort {
                    tap: Bytes::from(&self.name),
                    port,
                },
                e,
            )
        })?;
        if port.wants_vlans() {
            let have = route
                .port_vlans(self.index)
                .map_err(|e| Error::kernel(self.what("reading its VLANs"), e))?;
            let extra: Vec<u16> = have
                .iter()
                .map(|v| v.vid)
                .filter(|vid| !want.iter().any(|w| w.vid == *vid))
                .collect();
            if !extra.is_empty() {
                route
                    .remove_vlans(self.index, &extra)
                    .map_err(|e| Error::kernel(self.what("removing the default VLAN"), e))?;
            }
        }
        Ok(())
    }

    /// The port's options from the read-back `link`, its VLANs from the
    /// kernel's VLAN database.
    fn verify_port(
        &self,
        route: &mut Rtnetlink,
        link: &Link,
        port: &PortSettings,
    ) -> Result<(), Error> {
        let wrong = |what: &'static str| {
            Err(Error::Mismatch {
                tap: Bytes::from(&self.name),
                step: "read back after setup",
                what,
            })
        };
        let Some(info) = &link.port else {
            return wrong("no bridge port options reported");
        };
        if port.isolated && info.isolated != Some(true) {
            return wrong("port isolation not as set");
        }
        if port.learning.is_some() && info.learning != port.learning {
            return wrong("port learning not as set");
        }
        if port.wants_vlans() {
            let have = route
                .port_vlans(self.index)
                .map_err(|e| Error::kernel(self.what("reading back its VLANs"), e))?;
            if have != wanted_vlans(port) {
                return wrong("port VLANs not as set");
            }
        }
        Ok(())
    }

    fn verify(
        &self,
        route: &mut Rtnetlink,
        bridge: &Link,
        setup: &Setup<'_>,
        owner: Uid,
        slot: Option<&[u8]>,
    ) -> Result<Link, Error> {
        let wrong = |what: &'static str| {
            Err(Error::Mismatch {
                tap: Bytes::from(&self.name),
                step: "read back after setup",
                what,
            })
        };
        for fd in self.fds() {
            let (name, flags) =
                tun::tun_get_iff(fd).map_err(|e| Error::kernel(self.what("TUNGETIFF"), e))?;
            if name != self.name {
                return wrong("the tap was renamed");
            }
            if flags & (self.flags | IFF_PERSIST) != self.flags {
                return wrong("unexpected tun flags");
            }
        }
        let link = route
            .link_by_index(self.index)
            .map_err(|e| Error::kernel(self.what("reading back"), e))?
            .ok_or_else(|| Error::kernel(self.what("reading back"), "the tap disappeared"))?;
        if link.name != self.name {
            return wrong("the tap was renamed");
        }
        let Some(tun) = &link.tun else {
            return wrong("not a tun device");
        };
        if tun.owner != Some(owner.as_raw()) || tun.persist || !tun.tap {
            return wrong("owner or persistence not as set");
        }
        // The helper sets no group; one set by a queue's holder while the
        // tap had no owner cannot be cleared, so the tap is refused.
        if tun.group.is_some() {
            return wrong("a group was set on it");
        }
        if !self.has_only_our_queues(&link) {
            return wrong("the kernel counts other queues than ours");
        }
        if link.master != Some(bridge.index) || link.mtu != setup.mtu || link.flags & IFF_UP == 0 {
            return wrong("not up in the bridge with the bridge's MTU");
        }
        // Off, the bridge keeps the port disabled: a tap that passes no
        // frame is no success (a queue's holder can turn it off).
        if link.carrier != Some(true) {
            return wrong("its carrier is off");
        }
        if link.address != self.mac || link.alias.as_deref() != Some(setup.alias) {
            return wrong("address or marker not as set");
        }
        if slot.is_some_and(|s| !link.altnames.iter().any(|a| a == s)) {
            return wrong("the altname that lists it for its owner is missing");
        }
        Ok(link)
    }
}

/// The port's VLANs as the kernel lists them, sorted by id: `vlan=N` is
/// PVID and untagged, `tagged=` ones neither.
fn wanted_vlans(port: &PortSettings) -> Vec<PortVlan> {
    port.vlans()
        .into_iter()
        .map(|(vid, native)| PortVlan {
            vid,
            pvid: native,
            untagged: native,
        })
        .collect()
}
