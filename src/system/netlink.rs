//! Just enough rtnetlink to look links up and configure a tap in one
//! request. Netlink rather than ioctls on an AF_INET socket: it works on
//! kernels without IPv4, reads back what an ioctl cannot (the tap's owner,
//! persistence and carrier), and sets the alias that marks our taps.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

use crate::system::raw;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWLINKPROP: u16 = 108;
const RTM_NEWVLAN: u16 = 112;
const RTM_GETVLAN: u16 = 114;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_IFALIAS: u16 = 20;
const IFLA_EXT_MASK: u16 = 29;
const IFLA_CARRIER: u16 = 33;
const IFLA_PROP_LIST: u16 = 52;
const IFLA_ALT_IFNAME: u16 = 53;
const IFLA_PROTINFO: u16 = 12;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_INFO_SLAVE_KIND: u16 = 4;
const IFLA_INFO_SLAVE_DATA: u16 = 5;
/// In a bridge's IFLA_INFO_DATA.
const IFLA_BR_VLAN_FILTERING: u16 = 7;
/// In IFLA_PROTINFO (AF_BRIDGE) and a port's IFLA_INFO_SLAVE_DATA.
const IFLA_BRPORT_LEARNING: u16 = 8;
const IFLA_BRPORT_ISOLATED: u16 = 33;
/// In IFLA_AF_SPEC (AF_BRIDGE): struct bridge_vlan_info { u16 flags; u16 vid; }.
const IFLA_BRIDGE_VLAN_INFO: u16 = 2;
const BRIDGE_VLAN_INFO_PVID: u16 = 1 << 1;
const BRIDGE_VLAN_INFO_UNTAGGED: u16 = 1 << 2;
/// RTM_NEWVLAN's entries and what they hold.
const BRIDGE_VLANDB_ENTRY: u16 = 1;
const BRIDGE_VLANDB_ENTRY_INFO: u16 = 1;
const BRIDGE_VLANDB_ENTRY_RANGE: u16 = 2;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLA_F_NESTED: u16 = 0x8000;
pub const IFF_UP: u32 = 0x1;
/// ifinfomsg's family byte; AF_UNSPEC is 0 (checked below).
const AF_UNSPEC: u8 = 0;
const _: () = assert!(libc::AF_UNSPEC == 0);
/// Bridge-port requests go to the bridge driver's handlers.
const AF_BRIDGE: u8 = 7;
const _: () = assert!(libc::AF_BRIDGE == 7);

const HDR: usize = 16;
const IFINFO: usize = 16;

/// An interface index: how every request after a link's creation names
/// it. Unlike a name, it cannot change hands while the link exists, and
/// the kernel's own indexes only grow.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfIndex(pub u32);

impl std::fmt::Display for IfIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One network interface as the kernel describes it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: IfIndex,
    pub flags: u32,
    pub name: Vec<u8>,
    /// Alternative names (`ip link property add ... altname`), by which
    /// the kernel also finds the link.
    pub altnames: Vec<Vec<u8>>,
    pub mtu: u32,
    pub master: Option<IfIndex>,
    pub kind: Option<Vec<u8>>,
    pub alias: Option<Vec<u8>>,
    pub address: Vec<u8>,
    /// The tun driver turns carrier off when its last queue detaches, and
    /// only CAP_NET_ADMIN can turn it on for a tap nobody holds.
    pub carrier: Option<bool>,
    pub tun: Option<TunInfo>,
    /// For a bridge: whether it filters by VLAN (absent on kernels built
    /// without VLAN filtering, which counts as no).
    pub vlan_filtering: Option<bool>,
    /// For a port of a bridge: its bridge-port options.
    pub port: Option<PortInfo>,
}

/// A bridge port's options as the kernel reports them (IFLA_BRPORT_*).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PortInfo {
    pub isolated: Option<bool>,
    pub learning: Option<bool>,
}

/// What the bridge driver sets on a port, besides VLANs. `None` leaves an
/// option as it is.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PortSetup {
    pub isolated: Option<bool>,
    pub learning: Option<bool>,
}

/// One VLAN of a bridge port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortVlan {
    pub vid: u16,
    /// Untagged frames from the port go to this VLAN.
    pub pvid: bool,
    /// Frames leave the port without a tag.
    pub untagged: bool,
}

/// The tun driver's own attributes (IFLA_TUN_*).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TunInfo {
    pub owner: Option<u32>,
    pub group: Option<u32>,
    pub tap: bool,
    pub pi: bool,
    pub vnet_hdr: bool,
    pub persist: bool,
    pub multi_queue: bool,
    /// Queues attached, and queues detached with TUNSETQUEUE (which still
    /// hold the tap): only a kernel from 4.19 on reports them.
    pub num_queues: Option<u32>,
    pub num_disabled_queues: Option<u32>,
}

/// What one RTM_SETLINK does to a new tap.
pub struct Setup<'a> {
    pub mtu: u32,
    pub master: IfIndex,
    pub alias: &'a [u8],
}

/// A failed request: the errno and, when the kernel gave one, its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlError {
    pub errno: Errno,
    pub message: Option<String>,
}

impl std::fmt::Display for NlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(m) => write!(f, "{} ({})", self.errno.desc(), m),
            None => f.write_str(self.errno.desc()),
        }
    }
}

impl std::error::Error for NlError {}

impl From<Errno> for NlError {
    fn from(errno: Errno) -> Self {
        NlError {
            errno,
            message: None,
        }
    }
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
        let _ = raw::netlink_ext_ack(fd.as_fd());
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

    /// Looks links up by alternative name, several per request: one entry
    /// per name, `None` where no link has it. A kernel without altname
    /// lookups (before 5.5) answers EINVAL.
    pub fn links_by_altname(&mut self, names: &[Vec<u8>]) -> Result<Vec<Option<Link>>, NlError> {
        let mut batch = Vec::new();
        let first = self.seq.wrapping_add(1);
        for name in names {
            self.seq = self.seq.wrapping_add(1);
            let mut msg = Message::new(RTM_GETLINK, NLM_F_REQUEST, 0, 0, 0);
            msg.attr(IFLA_ALT_IFNAME, name);
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

    /// Sets MTU, alias and master of link `index` and brings it up,
    /// in one request. By index, never by name: a rename racing with the
    /// request (udev, an administrator) cannot redirect it.
    pub fn configure(&mut self, index: IfIndex, setup: &Setup<'_>) -> Result<(), NlError> {
        let mut msg = Message::new(
            RTM_SETLINK,
            NLM_F_REQUEST | NLM_F_ACK,
            index.0,
            IFF_UP,
            IFF_UP,
        );
        msg.attr(IFLA_MTU, &setup.mtu.to_ne_bytes());
        msg.attr(IFLA_IFALIAS, setup.alias);
        msg.attr(IFLA_MASTER, &setup.master.0.to_ne_bytes());
        self.exchange(msg, |_| {})
    }

    /// Sets MTU, alias and master of link `index`, leaving it down: for a
    /// port whose bridge-port options must be set before it passes
    /// traffic (the kernel refuses them in the request that enslaves).
    pub fn configure_down(&mut self, index: IfIndex, setup: &Setup<'_>) -> Result<(), NlError> {
        let mut msg = Message::new(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, index.0, 0, 0);
        msg.attr(IFLA_MTU, &setup.mtu.to_ne_bytes());
        msg.attr(IFLA_IFALIAS, setup.alias);
        msg.attr(IFLA_MASTER, &setup.master.0.to_ne_bytes());
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

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// An attribute's length field. Ours are far below 64 KiB; one that were
/// not would be sent as a length the kernel rejects, never wrapped.
fn length(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Netlink messages in a datagram: (type, flags, sequence, payload).
/// Stops at the first malformed header instead of trusting its length.
struct Messages<'a>(&'a [u8]);

impl<'a> Iterator for Messages<'a> {
    type Item = (u16, u16, u32, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let b = self.0;
        let len = u32_at(b, 0)? as usize;
        if len < HDR || len > b.len() {
            self.0 = &[];
            return None;
        }
        let item = (u16_at(b, 4)?, u16_at(b, 6)?, u32_at(b, 8)?, &b[HDR..len]);
        self.0 = b.get(align4(len)..).unwrap_or(&[]);
        Some(item)
    }
}

/// Attributes in a buffer: (type without flag bits, value).
struct Attrs<'a>(&'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let b = self.0;
        let len = u16_at(b, 0)? as usize;
        if len < 4 || len > b.len() {
            self.0 = &[];
            return None;
        }
        let item = (u16_at(b, 2)? & NLA_TYPE_MASK, &b[4..len]);
        self.0 = b.get(align4(len)..).unwrap_or(&[]);
        Some(item)
    }
}

fn cstr(v: &[u8]) -> Vec<u8> {
    v.split(|&b| b == 0).next().unwrap_or_default().to_vec()
}

fn flag(v: &[u8]) -> bool {
    v.first().is_some_and(|&b| b != 0)
}

/// Decodes an RTM_NEWLINK payload (ifinfomsg plus attributes). Fields the
/// kernel left out stay at their defaults, which no check accepts as a
/// match for anything real (index 0, MTU 0, no master).
pub fn parse_link(payload: &[u8]) -> Link {
    let mut slave_kind = None;
    let mut link = Link {
        index: IfIndex(u32_at(payload, 4).unwrap_or(0)),
        flags: u32_at(payload, 8).unwrap_or(0),
        ..Link::default()
    };
    for (ty, v) in Attrs(payload.get(IFINFO..).unwrap_or(&[])) {
        match ty {
            IFLA_IFNAME => link.name = cstr(v),
            IFLA_MTU => link.mtu = u32_at(v, 0).unwrap_or(0),
            IFLA_MASTER => link.master = u32_at(v, 0).map(IfIndex),
            IFLA_IFALIAS => link.alias = Some(cstr(v)),
            IFLA_ADDRESS => link.address = v.to_vec(),
            IFLA_CARRIER => link.carrier = Some(flag(v)),
            IFLA_PROP_LIST => link.altnames.extend(
                Attrs(v)
                    .filter(|(ty, _)| *ty == IFLA_ALT_IFNAME)
                    .map(|(_, name)| cstr(name)),
            ),
            IFLA_LINKINFO => {
                for (ty, v) in Attrs(v) {
                    match ty {
                        IFLA_INFO_KIND => link.kind = Some(cstr(v)),
                        IFLA_INFO_DATA => {
                            link.tun = Some(parse_tun(v));
                            link.vlan_filtering = Some(
                                Attrs(v)
                                    .find(|(ty, _)| *ty == IFLA_BR_VLAN_FILTERING)
                                    .is_some_and(|(_, v)| flag(v)),
                            );
                        }
                        IFLA_INFO_SLAVE_KIND => slave_kind = Some(cstr(v)),
                        IFLA_INFO_SLAVE_DATA => link.port = Some(parse_port(v)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if link.kind.as_deref() != Some(b"tun") {
        link.tun = None;
    }
    if link.kind.as_deref() != Some(b"bridge") {
        link.vlan_filtering = None;
    }
    if slave_kind.as_deref() != Some(b"bridge") {
        link.port = None;
    }
    link
}

fn parse_port(data: &[u8]) -> PortInfo {
    let mut port = PortInfo::default();
    for (ty, v) in Attrs(data) {
        match ty {
            IFLA_BRPORT_ISOLATED => port.isolated = Some(flag(v)),
            IFLA_BRPORT_LEARNING => port.learning = Some(flag(v)),
            _ => {}
        }
    }
    port
}

fn vlan_info(v: &PortVlan) -> [u8; 4] {
    let mut flags = 0;
    if v.pvid {
        flags |= BRIDGE_VLAN_INFO_PVID;
    }
    if v.untagged {
        flags |= BRIDGE_VLAN_INFO_UNTAGGED;
    }
    let mut b = [0; 4];
    b[..2].copy_from_slice(&flags.to_ne_bytes());
    b[2..].copy_from_slice(&v.vid.to_ne_bytes());
    b
}

/// The entries of an RTM_NEWVLAN payload after its br_vlan_msg: each one
/// VLAN, or a range of VLANs with the same flags.
fn parse_vlans(attrs: &[u8]) -> Vec<PortVlan> {
    let mut out = Vec::new();
    for (ty, entry) in Attrs(attrs) {
        if ty != BRIDGE_VLANDB_ENTRY {
            continue;
        }
        let mut info = None;
        let mut end = None;
        for (ty, v) in Attrs(entry) {
            match ty {
                BRIDGE_VLANDB_ENTRY_INFO => info = Some((u16_at(v, 0), u16_at(v, 2))),
                BRIDGE_VLANDB_ENTRY_RANGE => end = u16_at(v, 0),
                _ => {}
            }
        }
        let Some((Some(flags), Some(vid))) = info else {
            continue;
        };
        // VLAN ids are 12 bits: a range past 4095 is not the kernel's.
        for vid in vid..=end.unwrap_or(vid).min(4095) {
            out.push(PortVlan {
                vid,
                pvid: flags & BRIDGE_VLAN_INFO_PVID != 0,
                untagged: flags & BRIDGE_VLAN_INFO_UNTAGGED != 0,
            });
        }
    }
    out
}

fn parse_tun(data: &[u8]) -> TunInfo {
    let mut tun = TunInfo::default();
    for (ty, v) in Attrs(data) {
        match ty {
            1 => tun.owner = u32_at(v, 0),
            2 => tun.group = u32_at(v, 0),
            3 => tun.tap = v.first().map(|&t| i16::from(t)) == Some(raw::IFF_TAP),
            4 => tun.pi = flag(v),
            5 => tun.vnet_hdr = flag(v),
            6 => tun.persist = flag(v),
            7 => tun.multi_queue = flag(v),
            8 => tun.num_queues = u32_at(v, 0),
            9 => tun.num_disabled_queues = u32_at(v, 0),
            _ => {}
        }
    }
    tun
}

/// An NLMSG_ERROR payload: 0 is an acknowledgement.
fn ack(payload: &[u8]) -> Result<(), NlError> {
    let code = u32_at(payload, 0).map_or(-libc::EPROTO, u32::cast_signed);
    if code == 0 {
        return Ok(());
    }
    // With NETLINK_CAP_ACK the request's header, but not its body, is
    // echoed; the extended-ack attributes follow it.
    let message = Attrs(payload.get(4 + HDR..).unwrap_or(&[]))
        .find(|(ty, _)| *ty == NLMSGERR_ATTR_MSG)
        .map(|(_, v)| String::from_utf8_lossy(&cstr(v)).into_owned());
    Err(NlError {
        errno: Errno::from_raw(code.saturating_neg()),
        message,
    })
}

/// A request under construction.
struct Message(Vec<u8>);

impl Message {
    fn new(ty: u16, flags: u16, index: u32, ifi_flags: u32, change: u32) -> Message {
        let mut b = Vec::with_capacity(256);
        b.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&[0; 8]); // sequence (set by finish), port id 0
        b.extend_from_slice(&[AF_UNSPEC, 0, 0, 0]);
        b.extend_from_slice(&index.to_ne_bytes());
        b.extend_from_slice(&ifi_flags.to_ne_bytes());
        b.extend_from_slice(&change.to_ne_bytes());
        Message(b)
    }

    /// A request with family AF_BRIDGE, for the bridge driver.
    fn bridge(ty: u16, flags: u16, index: u32) -> Message {
        let mut m = Message::new(ty, flags, index, 0, 0);
        m.0[HDR] = AF_BRIDGE;
        m
    }

    fn attr(&mut self, ty: u16, value: &[u8]) {
        let len = 4 + value.len();
        self.0.extend_from_slice(&length(len).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(align4(self.0.len()), 0);
    }

    fn nest(&mut self, ty: u16) -> usize {
        let at = self.0.len();
        self.attr(ty, &[]);
        at
    }

    fn end_nest(&mut self, at: usize) {
        let len = length(self.0.len() - at);
        self.0[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(&mut self, seq: u32) -> Vec<u8> {
        let len = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        self.0[0..4].copy_from_slice(&len.to_ne_bytes());
        self.0[8..12].copy_from_slice(&seq.to_ne_bytes());
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tun_link_payload() -> Vec<u8> {
        let mut m = Message::new(16, 0, 7, IFF_UP, 0);
        m.attr(IFLA_IFNAME, b"tap0\0");
        m.attr(IFLA_MTU, &1400u32.to_ne_bytes());
        m.attr(IFLA_MASTER, &3u32.to_ne_bytes());
        m.attr(IFLA_IFALIAS, b"bridge-helper uid=1000\0");
        m.attr(IFLA_ADDRESS, &[0xfe, 1, 2, 3, 4, 5]);
        m.attr(IFLA_CARRIER, &[1]);
        let props = m.nest(IFLA_PROP_LIST | 0x8000);
        m.attr(IFLA_ALT_IFNAME, b"lan0\0");
        m.attr(IFLA_ALT_IFNAME, b"uplink-port\0");
        m.end_nest(props);
        let info = m.nest(IFLA_LINKINFO | 0x8000);
        m.attr(IFLA_INFO_KIND, b"tun\0");
        let data = m.nest(IFLA_INFO_DATA | 0x8000);
        m.attr(1, &1000u32.to_ne_bytes());
        m.attr(3, &[2]);
        m.attr(4, &[0]);
        m.attr(5, &[1]);
        m.attr(6, &[0]);
        m.attr(7, &[1]);
        m.attr(8, &4u32.to_ne_bytes());
        m.attr(9, &0u32.to_ne_bytes());
        m.end_nest(data);
        m.end_nest(info);
        m.finish(1)[HDR..].to_vec()
    }

    #[test]
    fn parses_a_tap() {
        let link = parse_link(&tun_link_payload());
        assert_eq!(link.index, IfIndex(7));
        assert_eq!(link.name, b"tap0");
        assert_eq!(
            (link.mtu, link.master, link.flags & IFF_UP),
            (1400, Some(IfIndex(3)), IFF_UP)
        );
        assert_eq!(link.alias.as_deref(), Some(&b"bridge-helper uid=1000"[..]));
        assert_eq!(link.address, [0xfe, 1, 2, 3, 4, 5]);
        assert_eq!(link.carrier, Some(true));
        assert_eq!(link.altnames, [b"lan0".to_vec(), b"uplink-port".to_vec()]);
        let tun = link.tun.unwrap();
        let got = (tun.owner, tun.tap, tun.pi, tun.vnet_hdr, tun.persist);
        assert_eq!(got, (Some(1000), true, false, true, false));
        let queues = (tun.multi_queue, tun.num_queues, tun.num_disabled_queues);
        assert_eq!(queues, (true, Some(4), Some(0)));
    }

    #[test]
    fn truncated_input_never_panics() {
        let full = tun_link_payload();
        for cut in 0..full.len() {
            let _ = parse_link(&full[..cut]);
            let _ = Messages(&full[..cut]).count();
            let _ = ack(&full[..cut]);
        }
    }

    #[test]
    fn error_acks_carry_the_kernel_reason() {
        let mut p = (-libc::EBUSY).to_ne_bytes().to_vec();
        p.extend_from_slice(&[0; HDR]);
        let mut m = Message(Vec::new());
        m.attr(NLMSGERR_ATTR_MSG, b"Device is busy\0");
        p.extend_from_slice(&m.0);
        let e = ack(&p).unwrap_err();
        assert_eq!(e.errno, Errno::EBUSY);
        assert_eq!(e.message.as_deref(), Some("Device is busy"));
        assert_eq!(ack(&0i32.to_ne_bytes()), Ok(()));
    }

    #[test]
    fn bridge_port_requests_and_answers() {
        // AF_BRIDGE RTM_SETLINK: nested protinfo, then the VLAN list.
        let mut m = Message::bridge(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, 9);
        let info = m.nest(IFLA_PROTINFO | NLA_F_NESTED);
        m.attr(IFLA_BRPORT_ISOLATED, &[1]);
        m.end_nest(info);
        let v = PortVlan {
            vid: 20,
            pvid: true,
            untagged: true,
        };
        assert_eq!(
            vlan_info(&v).to_vec(),
            [6u16.to_ne_bytes(), 20u16.to_ne_bytes()].concat()
        );
        let bytes = m.finish(1);
        assert_eq!(bytes[HDR], AF_BRIDGE);
        assert_eq!(u32_at(&bytes, HDR + 4), Some(9));
        let (ty, value) = Attrs(&bytes[HDR + IFINFO..]).next().unwrap();
        assert_eq!(ty, IFLA_PROTINFO);
        assert_eq!(
            Attrs(value).collect::<Vec<_>>(),
            vec![(IFLA_BRPORT_ISOLATED, &[1u8][..])]
        );

        // A port's slave data and a bridge's VLAN filtering.
        let mut m = Message::new(16, 0, 9, 0, 0);
        let li = m.nest(IFLA_LINKINFO | NLA_F_NESTED);
        m.attr(IFLA_INFO_SLAVE_KIND, b"bridge\0");
        let sd = m.nest(IFLA_INFO_SLAVE_DATA | NLA_F_NESTED);
        m.attr(IFLA_BRPORT_LEARNING, &[0]);
        m.attr(IFLA_BRPORT_ISOLATED, &[1]);
        m.end_nest(sd);
        m.end_nest(li);
        let link = parse_link(&m.finish(1)[HDR..]);
        assert_eq!(
            link.port,
            Some(PortInfo {
                isolated: Some(true),
                learning: Some(false)
            })
        );
        let mut m = Message::new(16, 0, 3, 0, 0);
        let li = m.nest(IFLA_LINKINFO | NLA_F_NESTED);
        m.attr(IFLA_INFO_KIND, b"bridge\0");
        let d = m.nest(IFLA_INFO_DATA | NLA_F_NESTED);
        m.attr(IFLA_BR_VLAN_FILTERING, &[1]);
        m.end_nest(d);
        m.end_nest(li);
        let link = parse_link(&m.finish(1)[HDR..]);
        assert_eq!(
            (link.vlan_filtering, link.port, link.tun),
            (Some(true), None, None)
        );

        // RTM_NEWVLAN entries: one VLAN, and a range.
        let mut m = Message(Vec::new());
        let e = m.nest(BRIDGE_VLANDB_ENTRY | NLA_F_NESTED);
        m.attr(BRIDGE_VLANDB_ENTRY_INFO, &vlan_info(&v));
        m.end_nest(e);
        let e = m.nest(BRIDGE_VLANDB_ENTRY | NLA_F_NESTED);
        m.attr(
            BRIDGE_VLANDB_ENTRY_INFO,
            &[0u16.to_ne_bytes(), 30u16.to_ne_bytes()].concat(),
        );
        m.attr(BRIDGE_VLANDB_ENTRY_RANGE, &32u16.to_ne_bytes());
        m.end_nest(e);
        let vids: Vec<(u16, bool)> = parse_vlans(&m.0).iter().map(|v| (v.vid, v.pvid)).collect();
        assert_eq!(
            vids,
            vec![(20, true), (30, false), (31, false), (32, false)]
        );
        for cut in 0..m.0.len() {
            let _ = parse_vlans(&m.0[..cut]);
        }
    }
}
