//! Just enough rtnetlink to look links up and configure a tap in one
//! request. Netlink rather than ioctls on an AF_INET socket: it works on
//! kernels without IPv4, reads back what an ioctl cannot (the tap's owner,
//! persistence and carrier), and sets the alias that marks our taps.
//!
//! This file is the socket and the requests a run makes; [`wire`] is the
//! message format (building requests, parsing answers), pure code that
//! the unit tests drive without a socket.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

use crate::policy::ifname::IfName;

#[allow(unsafe_code)]
mod ext_ack;
mod wire;

use wire::*;
pub use wire::{
    parse_link, IfIndex, Link, NlError, PortInfo, PortSetup, PortVlan, Setup, TunInfo, IFF_UP,
};

/// Deletes link `index` with a socket of its own, best effort and without
/// allocating: for the exit that removes an unfinished tap, which may be
/// an exit because memory ran out. rtnetlink handles a request within the
/// `sendto`, so the link is gone when this returns (unless the kernel
/// refused, as it does once privileges are dropped).
pub fn delete_now(index: IfIndex) {
    let Ok(fd) = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    ) else {
        return;
    };
    let request = wire::delete_request(index.0);
    let _ = socket::sendto(
        fd.as_raw_fd(),
        &request,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    );
}

pub struct Rtnetlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Rtnetlink {
    pub fn open() -> Result<Rtnetlink, NlError> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        // Older kernels lack extended acks; errors are then just less wordy.
        let _ = ext_ack::netlink_ext_ack(fd.as_fd());
        Ok(Rtnetlink {
            fd,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// The socket, for the interface ioctls that any socket takes.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Looks an interface up by name; `None` if there is none.
    pub fn link(&mut self, name: &[u8]) -> Result<Option<Link>, NlError> {
        let mut msg = Message::new(RTM_GETLINK, NLM_F_REQUEST, 0, 0, 0);
        msg.attr(IFLA_IFNAME, name);
        self.get_link(msg)
    }

    /// Looks an interface up by index; `None` if there is none.
    pub fn link_by_index(&mut self, index: IfIndex) -> Result<Option<Link>, NlError> {
        self.get_link(Message::new(RTM_GETLINK, NLM_F_REQUEST, index.0, 0, 0))
    }

    fn get_link(&mut self, mut msg: Message) -> Result<Option<Link>, NlError> {
        msg.attr(IFLA_EXT_MASK, &RTEXT_FILTER_SKIP_STATS.to_ne_bytes());
        let mut found = None;
        match self.exchange(msg, |payload| {
            found = Some(parse_link(payload));
        }) {
            Err(NlError {
                errno: Errno::ENODEV,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
            Ok(()) => Ok(found),
        }
    }

    /// Looks links up by name, several per request: one entry per name,
    /// `None` where no link has it. Since Linux 5.5 a name finds a link by
    /// its alternative names too (the kernel keeps both in one table).
    pub fn links_by_name(&mut self, names: &[IfName]) -> Result<Vec<Option<Link>>, NlError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut batch = Vec::new();
        let first = self.seq.wrapping_add(1);
        for name in names {
            self.seq = self.seq.wrapping_add(1);
            let mut msg = Message::new(RTM_GETLINK, NLM_F_REQUEST, 0, 0, 0);
            msg.attr(IFLA_IFNAME, name.as_bytes());
            msg.attr(IFLA_EXT_MASK, &RTEXT_FILTER_SKIP_STATS.to_ne_bytes());
            batch.extend(msg.finish(self.seq));
        }
        self.send(&batch)?;
        let mut found: Vec<Option<Result<Option<Link>, NlError>>> = vec![None; names.len()];
        while found.iter().any(Option::is_none) {
            let len = self.receive()?;
            for (ty, _, seq, payload) in Messages(&self.buf[..len]) {
                let slot = seq.wrapping_sub(first) as usize;
                let Some(entry) = found.get_mut(slot) else {
                    continue;
                };
                *entry = Some(match ty {
                    NLMSG_ERROR => match ack(payload) {
                        Err(NlError {
                            errno: Errno::ENODEV,
                            ..
                        }) => Ok(None),
                        Err(e) => Err(e),
                        Ok(()) => Err(Errno::EPROTO.into()),
                    },
                    RTM_NEWLINK => Ok(Some(parse_link(payload))),
                    _ => Err(Errno::EPROTO.into()),
                });
            }
        }
        found.into_iter().flatten().collect()
    }

    /// Gives the link `index` the alternative name `altname`; EEXIST if
    /// some link already has that name.
    pub fn add_altname(&mut self, index: IfIndex, altname: &[u8]) -> Result<(), NlError> {
        let mut msg = Message::new(RTM_NEWLINKPROP, NLM_F_REQUEST | NLM_F_ACK, index.0, 0, 0);
        let list = msg.nest(IFLA_PROP_LIST | NLA_F_NESTED);
        msg.attr(IFLA_ALT_IFNAME, altname);
        msg.end_nest(list);
        self.exchange(msg, |_| {})
    }

    /// Every tun/tap interface in this network namespace.
    pub fn tun_links(&mut self) -> Result<Vec<Link>, NlError> {
        let mut links = self.links_of_kind(b"tun")?;
        // The kernel filters by kind, but check rather than trust it.
        links.retain(|l| l.tun.is_some());
        Ok(links)
    }

    /// Every bridge in this network namespace, in index order.
    pub fn bridges(&mut self) -> Result<Vec<Link>, NlError> {
        let mut links = self.links_of_kind(b"bridge")?;
        links.retain(|l| l.kind.as_deref() == Some(b"bridge"));
        links.sort_by_key(|l| l.index);
        Ok(links)
    }

    /// Every interface in this network namespace.
    pub fn all_links(&mut self) -> Result<Vec<Link>, NlError> {
        let mut msg = Message::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 0, 0, 0);
        msg.attr(IFLA_EXT_MASK, &RTEXT_FILTER_SKIP_STATS.to_ne_bytes());
        let mut links = Vec::new();
        self.exchange(msg, |payload| links.push(parse_link(payload)))?;
        Ok(links)
    }

    fn links_of_kind(&mut self, kind: &[u8]) -> Result<Vec<Link>, NlError> {
        let mut msg = Message::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 0, 0, 0);
        msg.attr(IFLA_EXT_MASK, &RTEXT_FILTER_SKIP_STATS.to_ne_bytes());
        let info = msg.nest(IFLA_LINKINFO);
        msg.attr(IFLA_INFO_KIND, kind);
        msg.end_nest(info);
        let mut links = Vec::new();
        self.exchange(msg, |payload| links.push(parse_link(payload)))?;
        Ok(links)
    }

    /// Sets MTU, alias and master of link `index`, and brings it up if
    /// `setup.up`, in one request. By index, never by name: a rename
    /// racing with the request (udev, an administrator) cannot redirect it.
    pub fn configure(&mut self, index: IfIndex, setup: &Setup<'_>) -> Result<(), NlError> {
        let up = if setup.up { IFF_UP } else { 0 };
        let mut msg = Message::new(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, index.0, up, up);
        msg.attr(IFLA_MTU, &setup.mtu.to_ne_bytes());
        msg.attr(IFLA_IFALIAS, setup.alias);
        msg.attr(IFLA_MASTER, &setup.master.0.to_ne_bytes());
        self.exchange(msg, |_| {})
    }

    /// Renames link `index` (down: the kernel renames no tap that is up)
    /// and sets its alias, in one request: no one sees it renamed without
    /// the alias. A name with `%d` takes the lowest free number.
    pub fn rename(&mut self, index: IfIndex, name: &[u8], alias: &[u8]) -> Result<(), NlError> {
        let mut msg = Message::new(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, index.0, 0, 0);
        msg.attr(IFLA_IFNAME, name);
        msg.attr(IFLA_IFALIAS, alias);
        self.exchange(msg, |_| {})
    }

    /// Brings link `index` up.
    pub fn set_up(&mut self, index: IfIndex) -> Result<(), NlError> {
        let msg = Message::new(
            RTM_SETLINK,
            NLM_F_REQUEST | NLM_F_ACK,
            index.0,
            IFF_UP,
            IFF_UP,
        );
        self.exchange(msg, |_| {})
    }

    /// Sets bridge-port options and adds VLANs to port `index`, in one
    /// AF_BRIDGE RTM_SETLINK (the bridge driver handles IFLA_PROTINFO and
    /// IFLA_AF_SPEC of one request together).
    pub fn set_port(
        &mut self,
        index: IfIndex,
        setup: &PortSetup,
        add: &[PortVlan],
    ) -> Result<(), NlError> {
        let mut msg = Message::bridge(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, index.0);
        if setup.isolated.is_some() || setup.learning.is_some() {
            // Without NLA_F_NESTED the bridge reads IFLA_PROTINFO as a
            // port state, not as options.
            let info = msg.nest(IFLA_PROTINFO | NLA_F_NESTED);
            if let Some(on) = setup.isolated {
                msg.attr(IFLA_BRPORT_ISOLATED, &[u8::from(on)]);
            }
            if let Some(on) = setup.learning {
                msg.attr(IFLA_BRPORT_LEARNING, &[u8::from(on)]);
            }
            msg.end_nest(info);
        }
        if !add.is_empty() {
            let spec = msg.nest(IFLA_AF_SPEC);
            for v in add {
                msg.attr(IFLA_BRIDGE_VLAN_INFO, &vlan_info(v));
            }
            msg.end_nest(spec);
        }
        self.exchange(msg, |_| {})
    }

    /// Removes VLANs from port `index` (AF_BRIDGE RTM_DELLINK, which on a
    /// port deletes only the VLANs it names).
    pub fn remove_vlans(&mut self, index: IfIndex, vids: &[u16]) -> Result<(), NlError> {
        let mut msg = Message::bridge(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, index.0);
        let spec = msg.nest(IFLA_AF_SPEC);
        for &vid in vids {
            let v = PortVlan {
                vid,
                pvid: false,
                untagged: false,
            };
            msg.attr(IFLA_BRIDGE_VLAN_INFO, &vlan_info(&v));
        }
        msg.end_nest(spec);
        self.exchange(msg, |_| {})
    }

    /// The VLANs of port `index`, from the kernel's VLAN database
    /// (RTM_GETVLAN filtered by ifindex, Linux 5.8 and later), sorted.
    pub fn port_vlans(&mut self, index: IfIndex) -> Result<Vec<PortVlan>, NlError> {
        let mut msg = Message(Vec::with_capacity(64));
        msg.0.extend_from_slice(&0u32.to_ne_bytes());
        msg.0.extend_from_slice(&RTM_GETVLAN.to_ne_bytes());
        msg.0
            .extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        msg.0.extend_from_slice(&[0; 8]);
        // struct br_vlan_msg { u8 family; u8 pad; u16 pad; u32 ifindex; }
        msg.0.extend_from_slice(&[AF_BRIDGE, 0, 0, 0]);
        msg.0.extend_from_slice(&index.0.to_ne_bytes());
        let mut vlans = Vec::new();
        let mut wrong = false;
        self.exchange_typed(msg, |ty, payload| {
            if ty != RTM_NEWVLAN || u32_at(payload, 4) != Some(index.0) {
                wrong = true;
                return;
            }
            vlans.extend(parse_vlans(payload.get(8..).unwrap_or(&[])));
        })?;
        if wrong {
            return Err(Errno::EPROTO.into());
        }
        vlans.sort_unstable();
        Ok(vlans)
    }

    /// Removes a link by index (never by name, which can change hands).
    pub fn delete(&mut self, index: IfIndex) -> Result<(), NlError> {
        let msg = Message::new(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, index.0, 0, 0);
        self.exchange(msg, |_| {})
    }

    /// Sends one request and hands each reply's payload to `each`, until
    /// the acknowledgement, the end of a dump, or a single reply.
    fn exchange(&mut self, msg: Message, mut each: impl FnMut(&[u8])) -> Result<(), NlError> {
        self.exchange_typed(msg, |_, payload| each(payload))
    }

    /// [`Self::exchange`], with each reply's message type.
    fn exchange_typed(
        &mut self,
        mut msg: Message,
        mut each: impl FnMut(u16, &[u8]),
    ) -> Result<(), NlError> {
        self.seq = self.seq.wrapping_add(1);
        let bytes = msg.finish(self.seq);
        self.send(&bytes)?;
        loop {
            let len = self.receive()?;
            for (ty, flags, seq, payload) in Messages(&self.buf[..len]) {
                if seq != self.seq {
                    continue;
                }
                match ty {
                    NLMSG_ERROR => return ack(payload),
                    NLMSG_DONE => return Ok(()),
                    _ => {
                        each(ty, payload);
                        if flags & NLM_F_MULTI == 0 {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), NlError> {
        let kernel = NetlinkAddr::new(0, 0);
        loop {
            match socket::sendmsg(
                self.fd.as_raw_fd(),
                &[IoSlice::new(bytes)],
                &[],
                MsgFlags::empty(),
                Some(&kernel),
            ) {
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(_) => return Ok(()),
            }
        }
    }

    /// Reads the next datagram from the kernel into `buf`; anything sent
    /// by another process is dropped, since only the kernel answers us.
    fn receive(&mut self) -> Result<usize, NlError> {
        loop {
            let mut iov = [IoSliceMut::new(&mut self.buf)];
            let got = match socket::recvmsg::<NetlinkAddr>(
                self.fd.as_raw_fd(),
                &mut iov,
                None,
                MsgFlags::empty(),
            ) {
                Err(Errno::EINTR) => continue,
                other => other?,
            };
            if got.flags.contains(MsgFlags::MSG_TRUNC) {
                return Err(Errno::EMSGSIZE.into());
            }
            if got.address.is_some_and(|a| a.pid() == 0) {
                return Ok(got.bytes);
            }
        }
    }
}
