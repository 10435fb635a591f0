//! Runs from user namespaces the caller made itself (`unshare --user`):
//! with no map for its ids, a run and a check stop at the drop with a line
//! that names the missing map and its fix.
mod common;
#[path = "support/service.rs"]
mod service;

use common::*;
use service::Service;

fn nobody() -> Jail {
    Jail::user(NOBODY)
}

/// `unshare` with `flags`, then `program` with `args`, as `jail`'s user in
/// the service's namespaces, with a socketpair as `--fd` unless it checks.
fn in_userns(svc: &Service, jail: Jail, flags: &[&str], program: &str, args: &[&str]) -> HelperRun {
    let mut cmd = svc.command("unshare", jail);
    cmd.args(flags).arg("--").arg(program).args(args);
    let (child, ours) = spawn_with_socket(&mut cmd, args.first() != Some(&"--check"));
    HelperRun::collect(child.wait_with_output().expect("wait"), ours)
}

#[test]
fn an_unmapped_user_namespace_is_named_with_its_fix_by_run_and_check() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    let svc = Service::start(&sb, &ns);
    let text = "the caller's gid has no mapping in its user namespace (setresgid: Invalid argument), as in one made by 'unshare --user' without a map; fix: map it ('unshare --user --map-current-user'";
    for mode in [Mode::Setuid, Mode::Unprivileged] {
        let program = sb.install(HELPER, mode);
        let program = program.to_str().unwrap();
        let run = in_userns(&svc, nobody(), &["--user"], program, &["--br=br0"]);
        run.expect_refusal(5, text);
        assert!(
            run.stderr
                .starts_with("bridge-helper: cannot drop privileges: "),
            "{mode:?}: {}",
            run.stderr
        );
        let check = in_userns(&svc, nobody(), &["--user"], program, &["--check"]);
        assert_eq!(
            (check.code, &check.stderr),
            (run.code, &run.stderr),
            "{mode:?}: the check stops where the run does"
        );
        // The fix named works: mapped, the forwarder's request is answered.
        let mapped = ["--user", "--map-current-user"];
        let fd = in_userns(&svc, nobody(), &mapped, program, &["--br=br0"]).expect_tap();
        let (name, _) = tun_get_iff(&fd);
        assert_eq!(ns.tap_state(&name).owner, i64::from(NOBODY), "{mode:?}");
    }
    assert_no_taps(&ns);
}
