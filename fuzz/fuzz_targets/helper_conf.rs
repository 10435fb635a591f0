//! bridge-helper.conf end to end on arbitrary bytes: the settings file,
//! /etc/passwd and /etc/group as we parse them, and the decision with its
//! port-line selection for a few callers and bridge names.
//!
//! The input is up to three parts separated by the two bytes 0xff 0xfe:
//! bridge-helper.conf, /etc/passwd, /etc/group.
#![no_main]

use std::path::PathBuf;

use bridge_helper::policy::decision;
use bridge_helper::policy::helper_conf::lines;
use bridge_helper::policy::accounts::{self, Accounts, Identity, Who};
use bridge_helper::policy::bridge_conf::{Rule, Target, Verdict};
use bridge_helper::policy::bridge_conf::includes::Origin;
use bridge_helper::policy::helper_conf::{self, Settings};
use libfuzzer_sys::fuzz_target;

fn parts(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(2).position(|w| w == [0xff, 0xfe]) {
        out.push(&rest[..at]);
        rest = &rest[at + 2..];
    }
    out.push(rest);
    out.resize(3, &[]);
    out
}

fuzz_target!(|data: &[u8]| {
    let p = parts(data);
    let names = Accounts {
        users: accounts::parse(p[1]),
        groups: accounts::parse(p[2]),
    };
    let Ok(conf) = helper_conf::parse(p[0], Settings::with_limit(4)) else {
        return;
    };
    for port in &conf.ports {
        assert!(port
            .settings
            .vlans()
            .iter()
            .all(|(v, _)| (1..=4094).contains(v)));
        // What --check prints parses back to the same settings.
        let shown = port.settings.to_string();
        if !port.settings.is_empty() {
            let mut words: Vec<&[u8]> = vec![b"port", &port.bridge];
            words.extend(shown.split(' ').map(str::as_bytes));
            match lines::parse_words(&words) {
                Some(Ok(lines::Line::Port(_, Who::Everyone, s))) => assert_eq!(s, port.settings),
                other => panic!("{shown}: {other:?}"),
            }
        }
    }
    let deny = Rule {
        origin: Origin {
            file: PathBuf::from("/etc/qemu/bridge.conf"),
            line: 1,
        },
        allow: false,
        target: Target::Bridge(b"denied0".to_vec()),
    };
    let acl = vec![deny];
    let mut bridges: Vec<Vec<u8>> = vec![b"br0".to_vec(), b"denied0".to_vec()];
    bridges.extend(conf.ports.iter().map(|p| p.bridge.clone()));
    bridges.truncate(6);
    let mut ids: Vec<u32> = vec![0, 1000];
    ids.extend(names.users.iter().map(|u| u.1).take(3));
    let gids: Vec<u32> = names.groups.iter().map(|g| g.1).take(4).collect();
    for &uid in &ids {
        for g in 0..=gids.len() {
            let me = Identity {
                uid,
                gids: gids[..g].to_vec(),
            };
            for a in &bridges {
                for b in &bridges {
                    let Ok(d) = decision::decide(
                        &acl,
                        &conf.grants,
                        &conf.ports,
                        &me,
                        &names,
                        &[a],
                        &[b],
                    ) else {
                        continue;
                    };
                    // bridge.conf's deny wins over every grant.
                    if a == b"denied0" || b == b"denied0" {
                        assert!(matches!(d.verdict, Verdict::Denied(_)));
                    }
                    if let Some(port) = d.port {
                        assert!(matches!(d.verdict, Verdict::Allowed(_)));
                        assert!(port.bridge == *a || port.bridge == *b);
                        assert!(port.who.matches(&me, &names));
                    }
                }
            }
        }
    }
    let _ = decision::unresolved(&conf.grants, &conf.ports, &names);
});
