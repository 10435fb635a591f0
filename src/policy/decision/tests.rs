use super::*;
use crate::policy::accounts::{Account, Identity, Who};
use crate::policy::bridge_conf::{BadSetting, LineError};
use crate::policy::helper_conf::lines::*;
use std::path::PathBuf;

fn words(line: &str) -> Vec<&[u8]> {
    line.split_whitespace().map(str::as_bytes).collect()
}
fn p(line: &str) -> Result<Line, LineError> {
    parse_words(&words(line)).expect("a rule line")
}
/// Each line is a rule line the parser refuses as a bad setting or name.
fn assert_all_refused(lines: &[&str]) {
    for bad in lines {
        assert!(
            matches!(
                p(bad),
                Err(LineError::BadSetting(_) | LineError::BadName(..))
            ),
            "{bad}: {:?}",
            p(bad)
        );
    }
}
fn name(n: &str) -> Account {
    Account::Name(n.as_bytes().to_vec())
}

#[test]
fn grants() {
    assert_eq!(
        p("allow br-lab group=students"),
        Ok(Line::Grant(
            Target::Bridge(b"br-lab".to_vec()),
            Who::Group(name("students"))
        ))
    );
    assert_eq!(
        p("allow all user=1000"),
        Ok(Line::Grant(Target::All, Who::User(Account::Id(1000))))
    );
    assert_eq!(
        p("allow br0 user=0"),
        Ok(Line::Grant(
            Target::Bridge(b"br0".to_vec()),
            Who::User(Account::Id(0))
        ))
    );
    assert_all_refused(&[
        "allow br0",
        "allow all",
        "allow br0 user=alice group=x",
        "allow br0 user=",
        "allow br0 users=alice",
        "allow br0 user=4294967295",
        "allow br0 user=99999999999999999999",
        "allow br0 user=a:b",
        "allow br0 group=a,b",
        "allow 0123456789abcdef user=alice",
        "allow a/b user=alice",
        "deny br0",
        "deny br0 user=alice",
    ]);
    assert!(parse_words(&words("max-abandoned-taps 4")).is_none());
}

#[test]
fn port_lines() {
    let s = |l: &str| match p(l) {
        Ok(Line::Port(_, w, s)) => (w, s),
        other => panic!("{l}: {other:?}"),
    };
    assert_eq!(s("port br0"), (Who::Everyone, PortSettings::default()));
    let (w, set) = s("port br-lab group=students isolated vlan=20 learning=off");
    assert_eq!(w, Who::Group(name("students")));
    assert_eq!(
        set,
        PortSettings {
            isolated: true,
            learning: Some(false),
            vlan: Some(20),
            tagged: vec![]
        }
    );
    assert_eq!(set.to_string(), "isolated learning=off vlan=20");
    let (_, set) = s("port br0 user=7 tagged=30,10-12,11 vlan=1");
    assert_eq!(set.tagged, vec![10, 11, 12, 30]);
    assert_eq!(set.vlan, Some(1));
    assert_eq!(
        set.vlans(),
        vec![
            (1, true),
            (10, false),
            (11, false),
            (12, false),
            (30, false)
        ]
    );
    assert_eq!(s("port br0 vlan=4094").1.vlan, Some(4094));
    assert_eq!(s("port br0 user=alice").1.to_string(), "none");
    assert_all_refused(&[
        "port",
        "port all isolated",
        "port br0 vlan=0",
        "port br0 vlan=4095",
        "port br0 vlan=65536",
        "port br0 vlan=-1",
        "port br0 vlan=",
        "port br0 vlan=1x",
        "port br0 vlan=10 vlan=20",
        "port br0 isolated isolated",
        "port br0 learning=off learning=on",
        "port br0 learning=no",
        "port br0 tagged=",
        "port br0 tagged=5-3",
        "port br0 tagged=1,,2",
        "port br0 tagged=0-10",
        "port br0 vlan=10 tagged=5-15",
        "port br0 isolated user=alice",
        "port br0 user=alice group=tutors",
        "port br0 mtu=9000",
        "port br0 ISOLATED",
        "port 0123456789abcdef isolated",
    ]);
}

fn at(line: usize) -> Origin {
    Origin {
        file: PathBuf::from("/etc/qemu/bridge-helper.conf"),
        line,
    }
}
fn acl_at(line: usize) -> Origin {
    Origin {
        file: PathBuf::from("/etc/qemu/bridge.conf"),
        line,
    }
}
fn port_rule(line: usize, bridge: &str, who: Who, settings: &str) -> PortRule {
    let text = format!("port {bridge} {settings}");
    let Ok(Line::Port(_, _, settings)) = p(&text) else {
        panic!("{text}")
    };
    PortRule {
        origin: at(line),
        bridge: bridge.as_bytes().to_vec(),
        who,
        settings,
    }
}
fn names() -> Accounts {
    Accounts {
        users: vec![(b"alice".to_vec(), 1000), (b"bob".to_vec(), 1001)],
        groups: vec![(b"students".to_vec(), 500), (b"tutors".to_vec(), 600)],
    }
}
const ALICE: fn() -> Identity = || Identity {
    uid: 1000,
    gids: vec![1000, 500],
};

#[test]
fn grants_add_and_bridge_conf_denies_win() {
    let acl = vec![Rule {
        origin: acl_at(1),
        allow: false,
        target: Target::Bridge(b"br-secret".to_vec()),
    }];
    let grants = vec![
        Grant {
            origin: at(1),
            target: Target::All,
            who: Who::Group(name("students")),
        },
        Grant {
            origin: at(2),
            target: Target::Bridge(b"br1".to_vec()),
            who: Who::User(name("ghost")),
        },
    ];
    let d = |me: &Identity, n: &'static [u8]| {
        decide(&acl, &grants, &[], me, &names(), &[n], &[])
            .unwrap()
            .verdict
    };
    let origin = at(1);
    assert_eq!(d(&ALICE(), b"br0"), Verdict::Allowed(&origin));
    let o = acl_at(1);
    assert_eq!(d(&ALICE(), b"br-secret"), Verdict::Denied(&o));
    let bob = Identity {
        uid: 1001,
        gids: vec![1001],
    };
    assert_eq!(d(&bob, b"br0"), Verdict::NoAllow);
    // The unresolvable name matches no one, not even uid 0.
    let root = Identity {
        uid: 0,
        gids: vec![0],
    };
    assert_eq!(d(&root, b"br1"), Verdict::NoAllow);
    // An altname denied in bridge.conf wins over a grant.
    let v = decide(
        &acl,
        &grants,
        &[],
        &ALICE(),
        &names(),
        &[b"br0"],
        &[b"br-secret"],
    )
    .unwrap();
    assert_eq!(
        (v.bridge, v.verdict),
        (&b"br-secret"[..], Verdict::Denied(&o))
    );
}

/// The grant a refusal names: the first for the bridge, by its name or
/// `all`, which after a refusal is for someone else.
#[test]
fn the_grant_a_refusal_names() {
    let grant = |line, target| Grant {
        origin: at(line),
        target,
        who: Who::Group(name("tutors")),
    };
    let policy = Policy {
        acl: Vec::new(),
        grants: vec![
            grant(1, Target::Bridge(b"br1".to_vec())),
            grant(2, Target::All),
        ],
        ports: Vec::new(),
        accounts: names(),
        me: ALICE(),
    };
    let refused = policy.decide(&[b"br1"], &[]).unwrap().verdict;
    assert_eq!(refused, Verdict::NoAllow);
    assert_eq!(policy.grant_for(b"br1").map(|g| g.origin.line), Some(1));
    assert_eq!(policy.grant_for(b"br0").map(|g| g.origin.line), Some(2));
    let none = Policy {
        grants: Vec::new(),
        ..policy
    };
    assert!(none.grant_for(b"br1").is_none());
}

/// The caller's name for the log, from the accounts the policy read:
/// known only when a line named an account (they were read), and then
/// `None` for a uid with no line.
#[test]
fn the_callers_name_is_known_when_the_accounts_were_read() {
    let by_name = Policy {
        acl: Vec::new(),
        grants: vec![Grant {
            origin: at(1),
            target: Target::All,
            who: Who::Group(name("tutors")),
        }],
        ports: Vec::new(),
        accounts: names(),
        me: ALICE(),
    };
    assert_eq!(by_name.caller_name(), Some(Some(&b"alice"[..])));
    let stranger = Policy {
        me: Identity {
            uid: 7,
            gids: Vec::new(),
        },
        ..by_name.clone()
    };
    assert_eq!(stranger.caller_name(), Some(None));
    let by_number = Policy {
        grants: Vec::new(),
        accounts: Accounts::default(),
        ..by_name
    };
    assert_eq!(by_number.caller_name(), None);
}

#[test]
fn every_name_of_a_bridge_counts() {
    let rule = |line, allow, target: Target| Rule {
        origin: acl_at(line),
        allow,
        target,
    };
    let br = |n: &str| Target::Bridge(n.as_bytes().to_vec());
    fn d<'a>(
        acl: &'a [Rule<Origin>],
        must: &[&'static [u8]],
        also: &[&'static [u8]],
    ) -> (&'static [u8], Verdict<'a, Origin>) {
        let v = decide(acl, &[], &[], &ALICE(), &names(), must, also).unwrap();
        (v.bridge, v.verdict)
    }
    let acl = [rule(1, true, Target::All), rule(2, false, br("lan0"))];
    // Asked by its real name, denied by an altname.
    assert_eq!(
        d(&acl, &[b"br0"], &[b"lan0"]),
        (&b"lan0"[..], Verdict::Denied(&acl_at(2)))
    );
    let acl = [rule(1, true, br("lan0"))];
    // Asked by an altname that alone is allowed: the real name is not.
    assert_eq!(
        d(&acl, &[b"lan0", b"br0"], &[]),
        (&b"br0"[..], Verdict::NoAllow)
    );
    let acl = [rule(1, true, br("lan0")), rule(2, true, br("br0"))];
    assert_eq!(
        d(&acl, &[b"lan0", b"br0"], &[]),
        (&b"br0"[..], Verdict::Allowed(&acl_at(2)))
    );
}

#[test]
fn one_port_line_applies_whole() {
    let acl = vec![Rule {
        origin: acl_at(1),
        allow: true,
        target: Target::All,
    }];
    let ports = vec![
        port_rule(1, "br0", Who::Everyone, "isolated"),
        port_rule(2, "br0", Who::Group(name("students")), "vlan=20"),
        port_rule(3, "lan0", Who::User(Account::Id(1001)), "learning=off"),
        port_rule(4, "br1", Who::Group(name("tutors")), "vlan=30"),
    ];
    let pick = |me: &Identity, names_of: &[&'static [u8]]| {
        decide(
            &acl,
            &[],
            &ports,
            me,
            &names(),
            &names_of[..1],
            &names_of[1..],
        )
        .map(|d| d.port.map(|p| p.origin.line))
    };
    assert_eq!(pick(&ALICE(), &[b"br0"]).unwrap(), Some(2));
    let carol = Identity {
        uid: 1002,
        gids: vec![600],
    };
    assert_eq!(pick(&carol, &[b"br0"]).unwrap(), Some(1));
    assert_eq!(pick(&carol, &[b"br2"]).unwrap(), None);
    let bob = Identity {
        uid: 1001,
        gids: vec![500],
    };
    // Only by its altname lan0 does bob's own line apply.
    assert_eq!(pick(&bob, &[b"br0"]).unwrap(), Some(2));
    assert_eq!(pick(&bob, &[b"br0", b"lan0"]).unwrap(), Some(3));
}

#[test]
fn ambiguity_is_an_error_naming_both_lines() {
    let acl = vec![Rule {
        origin: acl_at(1),
        allow: true,
        target: Target::All,
    }];
    let run = |ports: &[PortRule], me: &Identity| {
        decide(&acl, &[], ports, me, &names(), &[b"br0"], &[b"lan0"])
            .map(|d| d.port.map(|p| p.origin.line))
            .map_err(|e| e.to_string())
    };
    // alice by name and by number.
    let ports = [
        port_rule(1, "br0", Who::User(name("alice")), "vlan=20"),
        port_rule(2, "br0", Who::User(Account::Id(1000)), "vlan=20"),
    ];
    let e = run(&ports, &ALICE()).unwrap_err();
    assert!(e.starts_with("/etc/qemu/bridge-helper.conf:2: "), "{e}");
    assert!(e.contains("bridge-helper.conf:1"), "{e}");
    // Two of alice's groups that disagree.
    let me = Identity {
        uid: 1000,
        gids: vec![500, 600],
    };
    let ports = [
        port_rule(1, "br0", Who::Group(name("students")), "vlan=20"),
        port_rule(2, "br0", Who::Group(name("tutors")), "vlan=30"),
    ];
    let e = run(&ports, &me).unwrap_err();
    assert!(e.contains(":1") && e.contains(":2"), "{e}");
    // ... that agree: the first.
    let ports = [
        port_rule(1, "br0", Who::Group(name("students")), "vlan=20"),
        port_rule(2, "br0", Who::Group(name("tutors")), "vlan=20"),
    ];
    assert_eq!(run(&ports, &me), Ok(Some(1)));
    // Bridge-wide lines by two names of one bridge that disagree.
    let ports = [
        port_rule(1, "br0", Who::Everyone, "isolated"),
        port_rule(2, "lan0", Who::Everyone, "vlan=5"),
    ];
    assert!(run(&ports, &me).is_err());
    // A user line settles what the group lines leave open.
    let ports = [
        port_rule(1, "br0", Who::Group(name("students")), "vlan=20"),
        port_rule(2, "br0", Who::Group(name("tutors")), "vlan=30"),
        port_rule(3, "br0", Who::User(name("alice")), ""),
    ];
    assert_eq!(run(&ports, &me), Ok(Some(3)));
}

#[test]
fn unresolved_names_are_listed() {
    let ports = [
        port_rule(3, "br0", Who::Group(name("nogroup-here")), "vlan=20"),
        port_rule(4, "br0", Who::User(Account::Id(5)), "vlan=20"),
    ];
    let grants = [Grant {
        origin: at(1),
        target: Target::All,
        who: Who::User(name("ghost")),
    }];
    let u = unresolved(&grants, &ports, &names());
    let lines: Vec<(usize, Option<&[u8]>)> = u.iter().map(|(o, _, b)| (o.line, *b)).collect();
    assert_eq!(lines, vec![(1, None), (3, Some(&b"br0"[..]))]);
    // What --check asks: the same, through the policy.
    let policy = Policy {
        acl: vec![],
        grants: grants.to_vec(),
        ports: ports.to_vec(),
        accounts: names(),
        me: ALICE(),
    };
    let lines: Vec<usize> = policy.unresolved().iter().map(|(o, _, _)| o.line).collect();
    assert_eq!(lines, vec![1, 3]);
    // Line 3 is for a group: --check then shows the caller's groups.
    assert!(policy.names_groups());
    let no_groups = Policy {
        ports: ports[1..].to_vec(),
        ..policy
    };
    assert!(!no_groups.names_groups());
}

#[test]
fn a_port_line_for_a_name_that_does_not_resolve_fails_closed() {
    let acl = vec![Rule {
        origin: acl_at(1),
        allow: true,
        target: Target::All,
    }];
    let ports = vec![
        port_rule(1, "br0", Who::Everyone, "learning=off"),
        // Meant for an account /etc/passwd does not list (sssd, LDAP):
        // falling through to line 1 would drop the isolation.
        port_rule(2, "br0", Who::User(name("ldap-alice")), "isolated"),
        port_rule(3, "br1", Who::User(Account::Id(4242)), "isolated"),
    ];
    let pick = |me: &Identity, bridge: &'static [u8]| {
        decide(&acl, &[], &ports, me, &names(), &[bridge], &[])
            .map(|d| d.port.map(|p| p.origin.line))
    };
    let err = pick(&ALICE(), b"br0").unwrap_err();
    assert!(
        matches!(&err, ConfigError::UnresolvedPort(o, _) if o.line == 2),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("user='ldap-alice' does not resolve"),
        "{err}"
    );
    // Numbers always resolve; other bridges are not affected.
    assert_eq!(pick(&ALICE(), b"br1").unwrap(), None);
    let ldap = Identity {
        uid: 4242,
        gids: vec![4242],
    };
    assert_eq!(pick(&ldap, b"br1").unwrap(), Some(3));
}

#[test]
fn only_vlan_settings_need_vlan_filtering() {
    let s = |l: &str| match p(l) {
        Ok(Line::Port(_, _, s)) => s,
        other => panic!("{l}: {other:?}"),
    };
    for (line, wants) in [
        ("port br0", false),
        ("port br0 isolated learning=off", false),
        ("port br0 vlan=20", true),
        ("port br0 tagged=30", true),
        ("port br0 vlan=1 tagged=30", true),
    ] {
        assert_eq!(s(line).wants_vlans(), wants, "{line}");
    }
    assert_eq!(s("port br0 isolated").vlans(), vec![]);
    assert_eq!(s("port br0 tagged=30").vlans(), vec![(30, false)]);
    // A run refuses VLAN settings on a bridge without filtering, and only
    // those.
    let acl = vec![Rule {
        origin: acl_at(1),
        allow: true,
        target: Target::All,
    }];
    for (settings, refused_unfiltered) in [("vlan=20", true), ("isolated", false)] {
        let ports = vec![port_rule(1, "br0", Who::Everyone, settings)];
        let d = decide(&acl, &[], &ports, &ALICE(), &names(), &[b"br0"], &[]).unwrap();
        assert_eq!(
            d.vlan_refusal(false).is_some(),
            refused_unfiltered,
            "{settings}"
        );
        assert!(d.vlan_refusal(true).is_none(), "{settings}");
    }
}

#[test]
fn an_allow_for_everyone_is_sent_to_bridge_conf() {
    for line in ["allow br0", "allow all"] {
        assert_eq!(
            p(line),
            Err(LineError::BadSetting(BadSetting::Rule(
                "allow here needs user=NAME or group=NAME; an allow for everyone belongs in bridge.conf"
            ))),
            "{line}"
        );
    }
}

#[test]
fn account_names_are_taken_up_to_their_limit() {
    let longest = "a".repeat(MAX_ACCOUNT_NAME);
    assert_eq!(
        p(&format!("allow br0 user={longest}")),
        Ok(Line::Grant(
            Target::Bridge(b"br0".to_vec()),
            Who::User(name(&longest))
        ))
    );
    assert_all_refused(&[&format!("allow br0 user={longest}a")]);
}

#[test]
fn port_line_refusals_say_what_is_wrong() {
    let says = |line: &str, text: &str| match p(line) {
        Err(LineError::BadSetting(why)) => assert!(why.to_string().contains(text), "{line}: {why}"),
        other => panic!("{line}: {other:?}"),
    };
    says(
        "port br0 isolated user=alice",
        "'user=alice': one user= or group= a line, right after the bridge",
    );
    says(
        "port br0 mtu=9000",
        "unknown port setting 'mtu=9000' (expected isolated, vlan=N, tagged=LIST or learning=on|off)",
    );
    says("port br0 vlan=10 tagged=5-15", "VLAN 10 cannot be both");
    says("port br0 tagged=5-3", "'5-3' is an empty range");
}
