//! The rtnetlink message format: the constants, building a request,
//! and parsing what the kernel answers. Pure code: no socket here.

use nix::errno::Errno;

use crate::report::escape::Escaped;
use crate::system::tun;

pub(super) const NLMSG_ERROR: u16 = 2;
pub(super) const NLMSG_DONE: u16 = 3;
pub(super) const RTM_NEWLINK: u16 = 16;
pub(super) const RTM_DELLINK: u16 = 17;
pub(super) const RTM_GETLINK: u16 = 18;
pub(super) const RTM_SETLINK: u16 = 19;
pub(super) const RTM_NEWLINKPROP: u16 = 108;
pub(super) const RTM_NEWVLAN: u16 = 112;
pub(super) const RTM_GETVLAN: u16 = 114;
pub(super) const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_MULTI: u16 = 0x2;
pub(super) const NLM_F_ACK: u16 = 0x4;
pub(super) const NLM_F_DUMP: u16 = 0x300;

pub(super) const IFLA_ADDRESS: u16 = 1;
pub(super) const IFLA_IFNAME: u16 = 3;
pub(super) const IFLA_MTU: u16 = 4;
pub(super) const IFLA_MASTER: u16 = 10;
pub(super) const IFLA_LINKINFO: u16 = 18;
pub(super) const IFLA_IFALIAS: u16 = 20;
pub(super) const IFLA_EXT_MASK: u16 = 29;
pub(super) const IFLA_CARRIER: u16 = 33;
pub(super) const IFLA_PROP_LIST: u16 = 52;
pub(super) const IFLA_ALT_IFNAME: u16 = 53;
pub(super) const IFLA_PROTINFO: u16 = 12;
pub(super) const IFLA_AF_SPEC: u16 = 26;
pub(super) const IFLA_INFO_KIND: u16 = 1;
pub(super) const IFLA_INFO_DATA: u16 = 2;
pub(super) const IFLA_INFO_SLAVE_KIND: u16 = 4;
pub(super) const IFLA_INFO_SLAVE_DATA: u16 = 5;
/// In a bridge's IFLA_INFO_DATA.
pub(super) const IFLA_BR_VLAN_FILTERING: u16 = 7;
/// In IFLA_PROTINFO (AF_BRIDGE) and a port's IFLA_INFO_SLAVE_DATA.
pub(super) const IFLA_BRPORT_LEARNING: u16 = 8;
pub(super) const IFLA_BRPORT_ISOLATED: u16 = 33;
/// In IFLA_AF_SPEC (AF_BRIDGE): struct bridge_vlan_info { u16 flags; u16 vid; }.
pub(super) const IFLA_BRIDGE_VLAN_INFO: u16 = 2;
pub(super) const BRIDGE_VLAN_INFO_PVID: u16 = 1 << 1;
pub(super) const BRIDGE_VLAN_INFO_UNTAGGED: u16 = 1 << 2;
/// RTM_NEWVLAN's entries and what they hold.
pub(super) const BRIDGE_VLANDB_ENTRY: u16 = 1;
pub(super) const BRIDGE_VLANDB_ENTRY_INFO: u16 = 1;
pub(super) const BRIDGE_VLANDB_ENTRY_RANGE: u16 = 2;
pub(super) const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
pub(super) const NLMSGERR_ATTR_MSG: u16 = 1;
pub(super) const NLA_TYPE_MASK: u16 = 0x3fff;
pub(super) const NLA_F_NESTED: u16 = 0x8000;
pub const IFF_UP: u32 = 0x1;
/// ifinfomsg's family byte; AF_UNSPEC is 0 (checked below).
pub(super) const AF_UNSPEC: u8 = 0;
const _: () = assert!(libc::AF_UNSPEC == 0);
/// Bridge-port requests go to the bridge driver's handlers.
pub(super) const AF_BRIDGE: u8 = 7;
const _: () = assert!(libc::AF_BRIDGE == 7);

pub(super) const HDR: usize = 16;
pub(super) const IFINFO: usize = 16;
const _: () = assert!(HDR + IFINFO == 32);

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
    /// Brought up in the same request; left down for a port whose
    /// bridge-port options must be set before it passes traffic (the
    /// kernel refuses them in the request that enslaves).
    pub up: bool,
}

/// A failed request: the errno and, when the kernel gave one, its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlError {
    pub errno: Errno,
    /// The kernel's extended ack text, as sent (escaped when shown).
    pub message: Option<Vec<u8>>,
}

impl std::fmt::Display for NlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(m) => write!(f, "{} ({})", self.errno.desc(), Escaped(m)),
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

pub(super) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(super) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// An attribute's length field. Ours are far below 64 KiB; one that were
/// not would be sent as a length the kernel rejects, never wrapped.
pub(super) fn length(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

pub(super) const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Netlink messages in a datagram: (type, flags, sequence, payload).
/// Stops at the first malformed header instead of trusting its length.
pub(super) struct Messages<'a>(pub(super) &'a [u8]);

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
pub(super) struct Attrs<'a>(pub(super) &'a [u8]);

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

pub(super) fn cstr(v: &[u8]) -> Vec<u8> {
    v.split(|&b| b == 0).next().unwrap_or_default().to_vec()
}

pub(super) fn flag(v: &[u8]) -> bool {
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

pub(super) fn parse_port(data: &[u8]) -> PortInfo {
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

pub(super) fn vlan_info(v: &PortVlan) -> [u8; 4] {
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
pub(super) fn parse_vlans(attrs: &[u8]) -> Vec<PortVlan> {
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

pub(super) fn parse_tun(data: &[u8]) -> TunInfo {
    let mut tun = TunInfo::default();
    for (ty, v) in Attrs(data) {
        match ty {
            1 => tun.owner = u32_at(v, 0),
            2 => tun.group = u32_at(v, 0),
            3 => tun.tap = v.first().map(|&t| i16::from(t)) == Some(tun::IFF_TAP),
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
pub(super) fn ack(payload: &[u8]) -> Result<(), NlError> {
    let code = u32_at(payload, 0).map_or(-libc::EPROTO, u32::cast_signed);
    if code == 0 {
        return Ok(());
    }
    // With NETLINK_CAP_ACK the request's header, but not its body, is
    // echoed; the extended-ack attributes follow it.
    let message = Attrs(payload.get(4 + HDR..).unwrap_or(&[]))
        .find(|(ty, _)| *ty == NLMSGERR_ATTR_MSG)
        .map(|(_, v)| cstr(v));
    Err(NlError {
        errno: Errno::from_raw(code.saturating_neg()),
        message,
    })
}

/// A request's netlink header and ifinfomsg, the sequence number left 0
/// and the length that of the two alone: on the stack, so that the
/// request that deletes an unfinished tap can be made where allocating
/// may be what failed ([`delete_request`]).
fn head(ty: u16, flags: u16, index: u32, ifi_flags: u32, change: u32) -> [u8; HDR + IFINFO] {
    let mut b = [0u8; HDR + IFINFO];
    b[0..4].copy_from_slice(&32u32.to_ne_bytes());
    b[4..6].copy_from_slice(&ty.to_ne_bytes());
    b[6..8].copy_from_slice(&flags.to_ne_bytes());
    // Sequence and port id (8..16) stay 0.
    b[HDR] = AF_UNSPEC;
    b[HDR + 4..HDR + 8].copy_from_slice(&index.to_ne_bytes());
    b[HDR + 8..HDR + 12].copy_from_slice(&ifi_flags.to_ne_bytes());
    b[HDR + 12..HDR + 16].copy_from_slice(&change.to_ne_bytes());
    b
}

/// RTM_DELLINK of link `index`, complete, with no ack asked for.
pub(super) fn delete_request(index: u32) -> [u8; HDR + IFINFO] {
    head(RTM_DELLINK, NLM_F_REQUEST, index, 0, 0)
}

/// A request under construction.
pub(super) struct Message(pub(super) Vec<u8>);

impl Message {
    pub(super) fn new(ty: u16, flags: u16, index: u32, ifi_flags: u32, change: u32) -> Message {
        let mut b = Vec::with_capacity(256);
        b.extend_from_slice(&head(ty, flags, index, ifi_flags, change));
        Message(b)
    }

    /// A request with family AF_BRIDGE, for the bridge driver.
    pub(super) fn bridge(ty: u16, flags: u16, index: u32) -> Message {
        let mut m = Message::new(ty, flags, index, 0, 0);
        m.0[HDR] = AF_BRIDGE;
        m
    }

    pub(super) fn attr(&mut self, ty: u16, value: &[u8]) {
        let len = 4 + value.len();
        self.0.extend_from_slice(&length(len).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(align4(self.0.len()), 0);
    }

    pub(super) fn nest(&mut self, ty: u16) -> usize {
        let at = self.0.len();
        self.attr(ty, &[]);
        at
    }

    pub(super) fn end_nest(&mut self, at: usize) {
        let len = length(self.0.len() - at);
        self.0[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    pub(super) fn finish(&mut self, seq: u32) -> Vec<u8> {
        let len = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        self.0[0..4].copy_from_slice(&len.to_ne_bytes());
        self.0[8..12].copy_from_slice(&seq.to_ne_bytes());
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests;
