//! Issue 15: properties of bridge-helper.conf's grants and port lines.
//!
//! - The parser never panics, whatever the bytes; what it accepts is in
//!   range (VLANs 1-4094, no id -1).
//! - A port line written from any settings parses back to them.
//! - Grants only add: whatever bridge.conf allows stays allowed, whatever
//!   it denies (by any name of the bridge) stays denied.
//! - Exactly one port line applies: a matching user= line beats group=
//!   lines beat bridge-wide ones; ambiguity is an error, never a pick,
//!   and so is a line for a name that does not resolve (issue 23).
//!
//! Pure functions only: no privilege, no namespace.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use bridge_helper::policy::accounts::{self, Account, Accounts, Identity, Who};
use bridge_helper::policy::bridge_conf::includes::Origin;
use bridge_helper::policy::bridge_conf::{Rule, Target, Verdict};
use bridge_helper::policy::decision;
use bridge_helper::policy::helper_conf::lines::{self, Grant, Line, PortRule, PortSettings};
use bridge_helper::policy::helper_conf::{self, Settings};
use proptest::prelude::*;
use proptest::sample::select;

fn origin(file: &str, line: usize) -> Origin {
    Origin {
        file: PathBuf::from(file),
        line,
    }
}

const BRIDGES: [&str; 3] = ["br0", "lab0", "br1"];

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![
        Just(Who::Everyone),
        select(vec!["alice", "bob", "ghost"]).prop_map(|n| Who::User(Account::Name(n.into()))),
        (0u32..3).prop_map(|n| Who::User(Account::Id(1000 + n))),
        select(vec!["students", "tutors", "nogroup"])
            .prop_map(|n| Who::Group(Account::Name(n.into()))),
        (0u32..3).prop_map(|n| Who::Group(Account::Id(500 + n))),
    ]
}

fn settings_strategy() -> impl Strategy<Value = PortSettings> {
    (
        any::<bool>(),
        proptest::option::of(any::<bool>()),
        proptest::option::of(1u16..=4094),
        proptest::collection::vec(1u16..=4094, 0..4),
    )
        .prop_map(|(isolated, learning, vlan, mut tagged)| {
            tagged.retain(|t| Some(*t) != vlan);
            tagged.sort_unstable();
            tagged.dedup();
            PortSettings {
                isolated,
                learning,
                vlan,
                tagged,
            }
        })
}

fn names() -> Accounts {
    Accounts {
        users: vec![(b"alice".to_vec(), 1000), (b"bob".to_vec(), 1001)],
        groups: vec![(b"students".to_vec(), 500), (b"tutors".to_vec(), 501)],
    }
}

fn identity() -> impl Strategy<Value = Identity> {
    (1000u32..1003, proptest::collection::vec(500u32..503, 0..3))
        .prop_map(|(uid, gids)| Identity { uid, gids })
}

fn acl_rules() -> impl Strategy<Value = Vec<Rule<Origin>>> {
    proptest::collection::vec(
        (
            any::<bool>(),
            prop_oneof![
                Just(Target::All),
                select(BRIDGES.to_vec()).prop_map(|b| Target::Bridge(b.into()))
            ],
        ),
        0..4,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (allow, target))| Rule {
                origin: origin("/etc/qemu/bridge.conf", i + 1),
                allow,
                target,
            })
            .collect()
    })
}

fn grants() -> impl Strategy<Value = Vec<Grant>> {
    proptest::collection::vec(
        (
            prop_oneof![
                Just(Target::All),
                select(BRIDGES.to_vec()).prop_map(|b| Target::Bridge(b.into()))
            ],
            who().prop_filter("not everyone", |w| *w != Who::Everyone),
        ),
        0..4,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (target, who))| Grant {
                origin: origin("/etc/qemu/bridge-helper.conf", i + 1),
                target,
                who,
            })
            .collect()
    })
}

fn ports() -> impl Strategy<Value = Vec<PortRule>> {
    proptest::collection::vec((select(BRIDGES.to_vec()), who(), settings_strategy()), 0..6)
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (bridge, who, settings))| PortRule {
                    origin: origin("/etc/qemu/bridge-helper.conf", 100 + i),
                    bridge: bridge.into(),
                    who,
                    settings,
                })
                .collect()
        })
}

fn plain_verdict(rules: &[Rule<Origin>], names: &[&[u8]]) -> Option<bool> {
    // Some(false): denied; Some(true): allowed; None: no allow.
    let matches = |r: &Rule<Origin>, n: &[u8]| match &r.target {
        Target::All => true,
        Target::Bridge(b) => b == n,
    };
    if rules
        .iter()
        .any(|r| !r.allow && names.iter().any(|n| matches(r, n)))
    {
        return Some(false);
    }
    rules
        .iter()
        .any(|r| r.allow && matches(r, names[0]))
        .then_some(true)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_parser_never_panics_and_keeps_values_in_range(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        words in proptest::collection::vec(
            select(vec!["port", "allow", "deny", "br0", "all", "isolated", "vlan=", "tagged=",
                        "learning=off", "user=", "group=", "0", "4094", "4095", "-", ",",
                        "65535", "18446744073709551616", " ", "\t", "\n", "#", "=", "\r"]),
            0..40),
    ) {
        for text in [bytes, words.concat().into_bytes()] {
            let _ = accounts::parse(&text);
            if let Ok(s) = helper_conf::parse(&text, Settings::with_limit(4)) {
                for p in &s.ports {
                    let all = p.settings.vlans();
                    prop_assert!(all.iter().all(|(v, _)| (1..=4094).contains(v)));
                    prop_assert!(all.iter().filter(|(_, native)| *native).count() <= 1);
                }
                for w in s.grants.iter().map(|g| &g.who).chain(s.ports.iter().map(|p| &p.who)) {
                    if let Who::User(Account::Id(n)) | Who::Group(Account::Id(n)) = w {
                        prop_assert_ne!(*n, u32::MAX);
                    }
                }
                prop_assert!(s.grants.iter().all(|g| g.who != Who::Everyone));
            }
        }
    }

    #[test]
    fn a_port_line_parses_back_to_its_settings(
        bridge in select(BRIDGES.to_vec()),
        who in who(),
        settings in settings_strategy(),
    ) {
        let qualifier = match &who {
            Who::Everyone => String::new(),
            w => format!(" {}", w.to_string().replace('\'', "")),
        };
        let words = if settings.is_empty() { String::new() } else { format!(" {settings}") };
        let line = format!("port {bridge}{qualifier}{words}");
        let split: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        prop_assert_eq!(
            lines::parse_words(&split),
            Some(Ok(Line::Port(bridge.as_bytes().to_vec(), who, settings))),
            "{}", line
        );
    }

    #[test]
    fn grants_only_add_and_bridge_conf_denies_win(
        acl in acl_rules(),
        grants in grants(),
        me in identity(),
        asked in select(BRIDGES.to_vec()),
        alt in select(BRIDGES.to_vec()),
    ) {
        let must: [&[u8]; 1] = [asked.as_bytes()];
        let also: [&[u8]; 1] = [alt.as_bytes()];
        let d = decision::decide(&acl, &grants, &[], &me, &names(), &must, &also).unwrap();
        match plain_verdict(&acl, &[asked.as_bytes(), alt.as_bytes()]) {
            Some(false) => prop_assert!(matches!(d.verdict, Verdict::Denied(_))),
            Some(true) => prop_assert!(matches!(d.verdict, Verdict::Allowed(_))),
            None => {
                let granted = grants.iter().any(|g| {
                    (g.target == Target::All || g.target == Target::Bridge(asked.into()))
                        && g.who.matches(&me, &names())
                });
                prop_assert_eq!(matches!(d.verdict, Verdict::Allowed(_)), granted);
                prop_assert!(!matches!(d.verdict, Verdict::Denied(_)));
            }
        }
        // No grant at all: exactly bridge.conf's decision.
        let alone = decision::decide(&acl, &[], &[], &me, &names(), &must, &also).unwrap();
        prop_assert_eq!(
            matches!(alone.verdict, Verdict::Allowed(_)),
            plain_verdict(&acl, &[asked.as_bytes(), alt.as_bytes()]) == Some(true)
        );
    }

    #[test]
    fn exactly_one_port_line_applies(
        ports in ports(),
        me in identity(),
        asked in select(BRIDGES.to_vec()),
        alt in select(BRIDGES.to_vec()),
    ) {
        let acl = vec![Rule { origin: origin("/etc/qemu/bridge.conf", 1), allow: true, target: Target::All }];
        let bridge_names: Vec<&[u8]> = vec![asked.as_bytes(), alt.as_bytes()];
        let applies = |p: &PortRule| bridge_names.contains(&p.bridge.as_slice()) && p.who.matches(&me, &names());
        let users: Vec<&PortRule> = ports.iter().filter(|p| matches!(p.who, Who::User(_)) && applies(p)).collect();
        let groups: Vec<&PortRule> = ports.iter().filter(|p| matches!(p.who, Who::Group(_)) && applies(p)).collect();
        let wide: Vec<&PortRule> = ports.iter().filter(|p| p.who == Who::Everyone && applies(p)).collect();
        let got = decision::decide(&acl, &[], &ports, &me, &names(), &bridge_names[..1], &bridge_names[1..]);
        let level = if !users.is_empty() { users } else if !groups.is_empty() { groups } else { wide };
        // A line for a name that does not resolve (ghost) may be this
        // caller's: it refuses the run rather than let another apply.
        let unresolved = ports.iter().any(|p| bridge_names.contains(&p.bridge.as_slice()) && !p.who.resolves(&names()));
        prop_assert!(!unresolved || got.is_err());
        match got {
            Ok(d) => {
                match d.port {
                    None => prop_assert!(level.is_empty()),
                    Some(p) => {
                        prop_assert!(level.iter().any(|l| std::ptr::eq(*l, p)));
                        // Whole: every line of the level says the same.
                        prop_assert!(level.iter().all(|l| l.settings == p.settings));
                        prop_assert!(!(matches!(p.who, Who::User(_)) && level.len() > 1));
                    }
                }
            }
            Err(_) => {
                let disagree = level.iter().any(|l| l.settings != level[0].settings);
                let two_users = level.len() > 1 && matches!(level[0].who, Who::User(_));
                prop_assert!(unresolved || disagree || two_users);
            }
        }
    }
}
