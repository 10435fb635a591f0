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
    assert_eq!(e.message.as_deref(), Some(&b"Device is busy"[..]));
    assert_eq!(e.to_string(), "Device or resource busy (Device is busy)");
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

#[test]
fn the_unallocated_delete_is_a_whole_dellink_request() {
    let req = delete_request(0x0102_0304);
    assert_eq!(u32_at(&req, 0), Some(32), "length: header and ifinfomsg");
    assert_eq!(u16_at(&req, 4), Some(RTM_DELLINK));
    assert_eq!(u16_at(&req, 6), Some(NLM_F_REQUEST));
    assert_eq!(req[HDR], AF_UNSPEC);
    assert_eq!(u32_at(&req, HDR + 4), Some(0x0102_0304));
    // The same header a Message starts with.
    let mut m = Message::new(RTM_DELLINK, NLM_F_REQUEST, 0x0102_0304, 0, 0);
    assert_eq!(m.finish(0), req.to_vec());
}
