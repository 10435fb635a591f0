//! The report, one fact a line, and the lines of each of its sections:
//! the settings, every bridge and its verdict, the caller's groups, rules
//! naming missing bridges, abandoned taps, bridge addresses, and (for
//! root) the helper's taps.

use crate::policy::accounts::Who;
use crate::policy::bridge_conf::includes::Origin;
use crate::policy::bridge_conf::{Rule, Target};
use crate::policy::decision::Policy;
use crate::policy::helper_conf::lines::PortRule;
use crate::policy::helper_conf::Settings;
use crate::report::error::Error;
use crate::report::escape::{Escaped, Quoted};
use crate::steps;
use crate::system::netlink::{Link, Rtnetlink};
use crate::system::privileges::Caller;
use crate::system::users;
use crate::taps::reaper;
use nix::unistd::Uid;

/// The report's lines, in order.
#[derive(Default)]
pub(super) struct Report {
    pub(super) text: String,
}

impl Report {
    pub(super) fn line(&mut self, line: impl AsRef<str>) {
        self.text.push_str(line.as_ref());
        self.text.push('\n');
    }
}

/// Whether a bridge here has this name or altname.
pub(super) fn exists(bridges: &[Link], name: &[u8]) -> bool {
    bridges
        .iter()
        .any(|b| b.name == name || b.altnames.iter().any(|a| a == name))
}

/// Every bridge in the namespace with the verdict a run reaches on it;
/// returns the names of those allowed.
pub(super) fn bridge_lines(
    policy: &Policy,
    route: &mut Rtnetlink,
    bridges: &[Link],
    out: &mut Report,
) -> Result<Vec<Vec<u8>>, Error> {
    let mut allowed = Vec::new();
    if bridges.is_empty() {
        out.line("bridges: none in this network namespace");
    }
    for bridge in bridges {
        let Ok(name) = crate::policy::ifname::IfName::new(&bridge.name) else {
            out.line(format!(
                "bridge {}: a name a run cannot be asked for",
                Quoted(&bridge.name)
            ));
            continue;
        };
        let mut port = None;
        let verdict = match steps::access(policy, route, &name) {
            Ok(access) => {
                allowed.push(bridge.name.clone());
                port = port_words(access.port.as_ref());
                format!("allowed by {}", access.rule)
            }
            Err(Error::DeniedBy { rule, .. }) => format!("denied by {rule}"),
            Err(Error::NotAllowed { .. }) => "denied: no rule allows it".into(),
            // Gone between the listing and the lookup, or a kernel error.
            Err(e) => e.to_string(),
        };
        out.line(format!("bridge {}: {verdict}", Quoted(&bridge.name)));
        if let Some(port) = port {
            out.line(format!("bridge {}: {port}", Quoted(&bridge.name)));
        }
    }
    Ok(allowed)
}

/// A user's own check, when bridge-helper.conf has group= lines: the
/// groups of this process, which a run decides them with, and what a new
/// login would change when /etc/group gives the user groups this process
/// lacks (added to a group after logging in).
pub(super) fn group_lines(
    policy: &Policy,
    route: &mut Rtnetlink,
    bridges: &[Link],
    out: &mut Report,
) {
    if !policy.names_groups() {
        return;
    }
    let named = |gid: &u32| match policy.accounts.groups.iter().find(|(_, id)| id == gid) {
        Some((name, _)) => format!("{gid} ({})", Escaped(name)),
        None => gid.to_string(),
    };
    let now: Vec<String> = policy.me.gids.iter().map(named).collect();
    out.line(format!(
        "groups: {} (this process's: a run matches group= lines against these)",
        now.join(", ")
    ));
    let Some(user) = users::find(policy.me.uid.to_string().as_bytes()) else {
        return;
    };
    let lacking: Vec<u32> = users::groups(&user)
        .into_iter()
        .filter(|g| !policy.me.gids.contains(g))
        .collect();
    if lacking.is_empty() {
        return;
    }
    let mut later = policy.clone();
    later.me.gids.extend(&lacking);
    let mut gained = Vec::new();
    for bridge in bridges {
        let Ok(name) = crate::policy::ifname::IfName::new(&bridge.name) else {
            continue;
        };
        if steps::access(policy, route, &name).is_err() {
            if let Ok(access) = steps::access(&later, route, &name) {
                gained.push(format!(
                    "{} (allowed by {})",
                    Quoted(&bridge.name),
                    access.rule
                ));
            }
        }
    }
    let shown: Vec<String> = lacking.iter().map(named).collect();
    out.line(format!(
        "groups: /etc/group also puts uid {} in {}, which this process lacks (added since this login); after logging in again, {}",
        policy.me.uid,
        shown.join(", "),
        if gained.is_empty() {
            "no verdict here changes".to_string()
        } else {
            format!("a run could also attach to {}", gained.join(", "))
        }
    ));
}

/// Rules naming a bridge that is not in this namespace: a typo, or a
/// bridge made later (libvirt's).
pub(super) fn missing_bridge_lines(rules: &[Rule<Origin>], bridges: &[Link], out: &mut Report) {
    for rule in rules {
        if let Target::Bridge(name) = &rule.target {
            if !exists(bridges, name) {
                out.line(format!(
                    "rule {}: names bridge {}, which does not exist here",
                    rule.origin,
                    Quoted(name)
                ));
            }
        }
    }
}

/// The settings in force, and the lines of bridge-helper.conf with a name
/// that does not resolve: a grant matches no one, a port line stops every
/// run on its bridge.
pub(super) fn settings_lines(
    settings: &Result<Settings, Error>,
    policy: Option<&Policy>,
    out: &mut Report,
) {
    match settings {
        Ok(s) => {
            out.line(format!("max-abandoned-taps: {}", s.max_abandoned_taps));
            out.line(if s.ports.is_empty() {
                "port settings: none".to_string()
            } else {
                format!(
                    "port settings: {} port line(s); each bridge below says which applies",
                    s.ports.len()
                )
            });
        }
        Err(e) => out.line(format!("settings: {e}")),
    }
    for (origin, who, port) in policy.map(Policy::unresolved).unwrap_or_default() {
        out.line(match port {
            None => format!(
                "warning: {origin}: {who} does not resolve in /etc/passwd or /etc/group; the line matches no one"
            ),
            Some(bridge) => format!(
                "warning: {origin}: {who} does not resolve in /etc/passwd or /etc/group; every run on bridge {} stops at this line",
                Quoted(bridge)
            ),
        });
    }
}

/// What a run would set on the port, and the line that chose it; `None`
/// when no port line applies (a plain port, as QEMU's helper makes).
pub(super) fn port_words(port: Option<&PortRule>) -> Option<String> {
    let p = port?;
    let what = if p.settings.is_empty() {
        format!("port: plain, chosen by {}", p.origin)
    } else {
        format!("port: {}, chosen by {}", p.settings, p.origin)
    };
    // Groups are the process's: a run started without the group (a login
    // from before the user joined it) gets another line, or none.
    Some(match &p.who {
        Who::Group(g) => {
            format!("{what} (group={g}: only while the caller's process has that group)")
        }
        _ => what,
    })
}

/// Taps this helper made for the caller that are persistent: they outlive
/// the VM, and stay in the bridge.
pub(super) fn abandoned_tap_lines(route: &mut Rtnetlink, caller: &Caller, out: &mut Report) {
    let Ok(taps) = route.tun_links() else {
        out.line("warning: could not list tap devices");
        return;
    };
    for tap in taps {
        let persistent = tap.tun.as_ref().is_some_and(|t| t.persist);
        if persistent && reaper::made_for(&tap) == Some(caller.uid) {
            let state = if tap.carrier == Some(false) {
                "abandoned (no process holds it)"
            } else {
                "held by a process"
            };
            out.line(format!(
                "warning: tap {} of uid {} was made persistent and is {state}; it outlives its VM (runs remove the oldest abandoned ones beyond max-abandoned-taps; root removes them all with 'bridge-helper --remove-abandoned --user={}')",
                Quoted(&tap.name),
                caller.uid,
                caller.uid
            ));
        }
    }
}

/// A bridge whose address is one of its ports' most likely has none of its
/// own and follows the lowest port address, which the holder of a tap can
/// set. No netlink attribute says how a bridge's address was assigned, and
/// sysfs may belong to another network namespace, so a bridge without
/// ports, or with an address of its own equal to a port's, goes unnoticed.
pub(super) fn bridge_address_lines(route: &mut Rtnetlink, bridges: &[Link], out: &mut Report) {
    let Ok(links) = route.all_links() else {
        return;
    };
    for bridge in bridges {
        let Some(port) = links
            .iter()
            .find(|l| l.master == Some(bridge.index) && l.address == bridge.address)
        else {
            continue;
        };
        // The fix pins an address no VM controls: a port that is not a
        // tap (the uplink), never a tap's.
        let is_tap = |l: &Link| l.kind.as_deref() == Some(b"tun") || l.tun.is_some();
        let fixed = if is_tap(port) {
            links
                .iter()
                .find(|l| l.master == Some(bridge.index) && !is_tap(l))
                .map(|l| &l.address)
        } else {
            Some(&port.address)
        };
        let fix = match fixed {
            Some(address) => {
                let mac: Vec<String> = address.iter().map(|b| format!("{b:02x}")).collect();
                format!(
                    "ip link set {} address {}",
                    Escaped(&bridge.name),
                    mac.join(":")
                )
            }
            None => format!(
                "give it an address of its own, not a tap's: ip link set {} address ADDRESS (a locally administered one, such as 02:00:00:00:00:01)",
                Escaped(&bridge.name)
            ),
        };
        out.line(format!(
            "warning: bridge {} has the address of its port {}: it probably has no fixed address, and then takes the lowest address among its ports, which a VM can set on its tap; fix: {fix}",
            Quoted(&bridge.name),
            Quoted(&port.name),
        ));
    }
}

/// For root: every tap this helper made in the namespace, whose, where,
/// and whether anything holds it.
pub(super) fn helper_tap_lines(route: &mut Rtnetlink, bridges: &[Link], out: &mut Report) {
    let Ok(taps) = route.tun_links() else {
        out.line("warning: could not list tap devices");
        return;
    };
    let mut any = false;
    for tap in &taps {
        let Some(uid) = reaper::made_for(tap) else {
            continue;
        };
        any = true;
        let bridge = tap
            .master
            .and_then(|m| bridges.iter().find(|b| b.index == m))
            .map_or("no bridge".to_string(), |b| {
                format!("bridge {}", Quoted(&b.name))
            });
        let persistent = tap.tun.as_ref().is_some_and(|t| t.persist);
        let remove = format!(
            "abandoned (persistent, nothing attached); remove with 'bridge-helper --remove-abandoned --user={uid}'"
        );
        let state = match (persistent, tap.carrier) {
            (true, Some(false)) => remove.as_str(),
            (true, _) => "held (persistent)",
            (false, _) => "held",
        };
        out.line(format!(
            "helper tap {}: uid {uid}{}, {bridge}, {state}",
            Quoted(&tap.name),
            user_name(uid)
        ));
    }
    if !any {
        out.line("helper taps: none in this network namespace");
    }
}

/// ` (NAME)` from /etc/passwd, or nothing.
pub(super) fn user_name(uid: Uid) -> String {
    users::name_of_uid(uid)
        .map(|n| format!(" ({})", Escaped(&n)))
        .unwrap_or_default()
}
