//! Which ACL files are trusted: the walk of the path as written (issue 11).
//!
//! The reproductions of the bypasses a review found (each passed before the
//! walk), the layouts of NixOS and Guix and an include in a sticky
//! directory such as /var/tmp, the errors and their fixes, and a property
//! test of the walk against a reference model on generated trees.
//!
//! Every run is as uid 65534 with a setuid copy, in the test's network
//! namespace and a private mount namespace whose /etc is the sandbox's
//! overlay (common.rs); the stores live in the sandbox, never under /nix
//! or /gnu on the machine.
mod common;
use common::*;

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{chown, lchown, symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use bridge_helper::system::trusted_files::SystemFiles;

/// A mount to make in the run's private mount namespace, before the uid
/// changes.
enum Mount {
    /// `src` over `dst` (a file or directory).
    Bind(PathBuf, PathBuf),
    /// `dir` bind-mounted read-only onto itself, as NixOS mounts its store.
    ReadOnly(PathBuf),
}

/// Runs the setuid copy as nobody on `--br=bridge`, with `mounts` made
/// first and `fd9` (if any) inherited as descriptor 9.
fn run_as_nobody(
    sb: &Sandbox,
    ns: &NetNs,
    bridge: &str,
    mounts: Vec<Mount>,
    fd9: Option<&OwnedFd>,
) -> HelperRun {
    run_with(sb, ns, bridge, &["--clear-groups"], mounts, fd9)
}

/// `run_as_nobody` with nobody's groups given as setpriv options.
fn run_as(
    sb: &Sandbox,
    ns: &NetNs,
    bridge: &str,
    groups: &[&str],
    mounts: Vec<Mount>,
) -> HelperRun {
    run_with(sb, ns, bridge, groups, mounts, None)
}

fn run_with(
    sb: &Sandbox,
    ns: &NetNs,
    bridge: &str,
    groups: &[&str],
    mounts: Vec<Mount>,
    fd9: Option<&OwnedFd>,
) -> HelperRun {
    let helper = sb.install(HELPER, Mode::Setuid);
    let (ours, theirs) = socketpair();
    clear_cloexec(theirs.as_raw_fd());
    // Root sets the mounts up (pre_exec below), then setpriv becomes
    // nobody and execs the setuid copy, as a user would run it.
    let mut cmd = sb.command(ns, "setpriv", Jail::root());
    cmd.args(["--reuid=65534", "--regid=65534"])
        .args(groups)
        .arg("--")
        .arg(&helper)
        .arg(format!("--br={bridge}"))
        .arg(format!("--fd={}", socket_fd(&theirs, fd9.is_some())));
    let c = |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mounts: Vec<(CString, CString, bool)> = mounts
        .iter()
        .map(|m| match m {
            Mount::Bind(src, dst) => (c(src), c(dst), false),
            Mount::ReadOnly(dir) => (c(dir), c(dir), true),
        })
        .collect();
    let fd9 = fd9.map(|f| f.as_raw_fd());
    let (sock, moved) = (theirs.as_raw_fd(), socket_fd(&theirs, fd9.is_some()));
    // SAFETY: runs between fork and exec; only raw system calls on data
    // prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let ok = sys_ok;
            for (src, dst, read_only) in &mounts {
                ok(libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
                if *read_only {
                    ok(libc::mount(
                        std::ptr::null(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ))?;
                }
            }
            if let Some(fd) = fd9 {
                // The socket first, out of the way, in case it is 9 itself.
                ok(libc::dup2(sock, moved))?;
                ok(libc::dup2(fd, 9))?;
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = spawn(&mut cmd);
    drop(theirs);
    let out = child.wait_with_output().expect("wait");
    HelperRun::collect(out, ours)
}

/// The socket's number in the helper: its own, or a high one when
/// descriptor 9 is taken for something else (the test's socket may
/// happen to be 9, with other tests' descriptors open in this process).
fn socket_fd(theirs: &OwnedFd, fd9_taken: bool) -> i32 {
    if fd9_taken {
        200
    } else {
        theirs.as_raw_fd()
    }
}

fn refused(ns: &NetNs, run: &HelperRun, status: i32, text: &str) {
    run.expect_refusal(status, text);
    assert_one_clean_line(&run.stderr);
    assert_no_taps(ns);
}

fn mkdir(path: &Path, uid: u32, gid: u32, mode: u32) {
    fs::create_dir_all(path).unwrap();
    chown(path, Some(uid), Some(gid)).unwrap();
    // After chown, which clears nothing on a directory, so the sticky bit stays.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn write(path: &Path, text: &str, uid: u32, mode: u32) {
    let _ = fs::remove_file(path);
    fs::write(path, text).unwrap();
    chown(path, Some(uid), Some(uid)).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn link(target: impl AsRef<Path>, at: &Path, uid: u32) {
    let _ = fs::remove_file(at);
    symlink(target, at).unwrap();
    lchown(at, Some(uid), Some(uid)).unwrap();
}

/// The three reproductions: an include path through /etc/qemu/users/nobody,
/// a directory that belongs to nobody.
struct UserDir {
    ns: NetNs,
    sb: Sandbox,
}

impl UserDir {
    fn new(acl: &str) -> UserDir {
        let ns = NetNs::with_bridge(1500);
        ns.add_bridge("br-bob", 1500);
        let sb = Sandbox::new();
        sb.acl(acl);
        sb.etc_file("bob.conf", "allow br-bob\n", 0o644);
        mkdir(&sb.etc_path("users/nobody"), NOBODY, NOBODY, 0o755);
        UserDir { ns, sb }
    }
}

const USER_DIR_REFUSED: &str = "lies in /etc/qemu/users/nobody, which someone other than root can change (owner uid 65534, mode 0755); fix: chown root /etc/qemu/users/nobody";

/// Finding 1a: nobody swaps the file in their directory for a symlink to
/// another root-owned file, which the old check (the real path) accepted.
#[test]
fn a_symlink_in_a_user_directory_cannot_choose_among_roots_files() {
    let t = UserDir::new("allow br0\ninclude /etc/qemu/users/nobody/bridge.conf\n");
    link(
        "/etc/qemu/bob.conf",
        &t.sb.etc_path("users/nobody/bridge.conf"),
        NOBODY,
    );
    let run = run_as_nobody(&t.sb, &t.ns, "br-bob", vec![], None);
    refused(
        &t.ns,
        &run,
        3,
        &format!("/etc/qemu/users/nobody/bridge.conf: {USER_DIR_REFUSED}"),
    );
    // And br0, which the main file allows, is refused too: the whole ACL is.
    let run = run_as_nobody(&t.sb, &t.ns, "br0", vec![], None);
    refused(&t.ns, &run, 3, USER_DIR_REFUSED);
}

/// Finding 1b: the symlink leads to /proc/self/fd/9, an fd nobody holds on
/// a root-owned grant that root has since deleted.
#[test]
fn a_magic_link_to_a_revoked_grant_is_refused() {
    let t = UserDir::new("allow br0\ninclude /etc/qemu/users/nobody/bridge.conf\n");
    t.sb.etc_file("grant.conf", "allow br-bob\n", 0o644);
    let held: OwnedFd = fs::File::open(t.sb.etc_path("grant.conf")).unwrap().into();
    fs::remove_file(t.sb.etc_path("grant.conf")).unwrap();
    link(
        "/proc/self/fd/9",
        &t.sb.etc_path("users/nobody/bridge.conf"),
        NOBODY,
    );
    let run = run_as_nobody(&t.sb, &t.ns, "br-bob", vec![], Some(&held));
    refused(&t.ns, &run, 3, USER_DIR_REFUSED);

    // Even where root made the symlink, in a root-only directory, procfs
    // is refused as soon as the walk reaches it.
    t.sb.acl("allow br0\ninclude /etc/qemu/magic.conf\n");
    link("/proc/self/fd/9", &t.sb.etc_path("magic.conf"), 0);
    let run = run_as_nobody(&t.sb, &t.ns, "br-bob", vec![], Some(&held));
    refused(
        &t.ns,
        &run,
        3,
        "/etc/qemu/magic.conf: /proc is on a pseudo or user-mounted file system",
    );
    link("/proc/self/comm", &t.sb.etc_path("magic.conf"), 0);
    let run = run_as_nobody(&t.sb, &t.ns, "br-bob", vec![], None);
    refused(
        &t.ns,
        &run,
        3,
        "/proc is on a pseudo or user-mounted file system",
    );
}

/// Finding 1c: root's deny in nobody's directory; nobody deletes it, and
/// the old code skipped the include as missing.
#[test]
fn a_deleted_deny_in_a_user_directory_is_an_error_not_a_skip() {
    let t = UserDir::new("allow all\ninclude /etc/qemu/users/nobody/deny.conf\n");
    let deny = t.sb.etc_path("users/nobody/deny.conf");
    write(&deny, "deny br-bob\n", 0, 0o644);
    // Present, it is still refused: nobody could swap it at any moment.
    let run = run_as_nobody(&t.sb, &t.ns, "br-bob", vec![], None);
    refused(&t.ns, &run, 3, USER_DIR_REFUSED);
    fs::remove_file(&deny).unwrap();
    let run = run_as_nobody(&t.sb, &t.ns, "br-bob", vec![], None);
    refused(
        &t.ns,
        &run,
        3,
        &format!("/etc/qemu/users/nobody/deny.conf: {USER_DIR_REFUSED}"),
    );
    // A missing include behind root-only directories is still skipped, as
    // QEMU does.
    t.sb.acl("allow all\ninclude /etc/qemu/nowhere/deny.conf\n");
    attached_to(
        &t.ns,
        run_as_nobody(&t.sb, &t.ns, "br-bob", vec![], None),
        "br-bob",
    );
}

/// A store in the sandbox: root:GROUP, sticky and group-writable, like
/// /nix/store (1775 root:nixbld) and /gnu/store (1775 root:guixbuild).
fn store(sb: &Sandbox, path: &str) -> PathBuf {
    let store = sb.dir.join(path);
    mkdir(store.parent().unwrap(), 0, 0, 0o755);
    mkdir(&store, 0, 30000, 0o1775);
    store
}

/// NixOS: /etc/qemu/bridge.conf -> /etc/static/qemu/bridge.conf, /etc/static
/// -> STORE/…-etc/etc, whose qemu/bridge.conf -> STORE/…-bridge.conf (root
/// 0444, hard-linked by store optimisation), the store mounted read-only.
#[test]
fn the_nixos_layout_is_accepted() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br1", 1500);
    ns.add_bridge("br2", 1500);
    let sb = Sandbox::new();
    let store = store(&sb, "nix/store");
    let conf = store.join("0aaa-bridge.conf");
    write(&conf, "allow br0\ninclude extra.conf\n", 0, 0o444);
    mkdir(&store.join(".links"), 0, 0, 0o755);
    fs::hard_link(&conf, store.join(".links/0aaa")).unwrap();
    let etc = store.join("1bbb-etc/etc");
    mkdir(&etc.join("qemu"), 0, 0, 0o555);
    mkdir(&store.join("1bbb-etc"), 0, 0, 0o555);
    link(&conf, &etc.join("qemu/bridge.conf"), 0);
    link(&etc, &sb.dir.join("layer/static"), 0);
    fs::remove_file(sb.etc_path("bridge.conf")).ok();
    link(
        "/etc/static/qemu/bridge.conf",
        &sb.etc_path("bridge.conf"),
        0,
    );
    // A relative include is taken beside /etc/qemu/bridge.conf as written,
    // not beside the store file it resolves to.
    sb.etc_file("extra.conf", "allow br1\n", 0o644);
    write(&store.join("extra.conf"), "allow br2\n", 0, 0o444);
    let ro = || vec![Mount::ReadOnly(store.clone())];

    attached_to(&ns, run_as_nobody(&sb, &ns, "br0", ro(), None), "br0");
    attached_to(&ns, run_as_nobody(&sb, &ns, "br1", ro(), None), "br1");
    let run = run_as_nobody(&sb, &ns, "br2", ro(), None);
    refused(&ns, &run, 4, "no rule in /etc/qemu/bridge.conf");

    // A store file not owned by root is refused, read-only mount or not.
    chown(&conf, Some(NOBODY), None).unwrap();
    let run = run_as_nobody(&sb, &ns, "br0", ro(), None);
    refused(
        &ns,
        &run,
        3,
        &format!(
            "/etc/qemu/bridge.conf: {}/0aaa-bridge.conf is owned by uid 65534 in {}, where others can create entries",
            store.display(),
            store.display()
        ),
    );
    chown(&conf, Some(0), None).unwrap();
    // So is a store that is not root's, and one without the sticky bit.
    chown(&store, Some(NOBODY), None).unwrap();
    fs::set_permissions(&store, fs::Permissions::from_mode(0o1775)).unwrap();
    let run = run_as_nobody(&sb, &ns, "br0", ro(), None);
    refused(
        &ns,
        &run,
        3,
        "which someone other than root can change (owner uid 65534, mode 1775)",
    );
    chown(&store, Some(0), None).unwrap();
    fs::set_permissions(&store, fs::Permissions::from_mode(0o775)).unwrap();
    let run = run_as_nobody(&sb, &ns, "br0", ro(), None);
    refused(
        &ns,
        &run,
        3,
        &format!(
            "lies in {}, which someone other than root can change (owner uid 0, mode 0775); fix: chmod g-w {}",
            store.display(),
            store.display()
        ),
    );
}

/// Guix: /etc/qemu/bridge.conf -> /run/current-system/etc/qemu/bridge.conf,
/// through a profile of relative links into /gnu/store (here all under the
/// sandbox, since the rule is about owners and modes, not prefixes).
#[test]
fn the_guix_layout_is_accepted() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    let store = store(&sb, "gnu/store");
    let system = store.join("2ccc-system");
    mkdir(&system, 0, 0, 0o555);
    let etc = store.join("3ddd-etc/etc/qemu");
    mkdir(&etc, 0, 0, 0o555);
    mkdir(&store.join("3ddd-etc/etc"), 0, 0, 0o555);
    mkdir(&store.join("3ddd-etc"), 0, 0, 0o555);
    write(&store.join("4eee-bridge.conf"), "allow br0\n", 0, 0o444);
    link("../../../4eee-bridge.conf", &etc.join("bridge.conf"), 0);
    link(store.join("3ddd-etc/etc"), &system.join("etc"), 0);
    let profiles = sb.dir.join("var/guix/profiles");
    mkdir(&profiles, 0, 0, 0o755);
    link(&system, &profiles.join("system-3-link"), 0);
    link("system-3-link", &profiles.join("system"), 0);
    mkdir(&sb.dir.join("run"), 0, 0, 0o755);
    link(
        profiles.join("system"),
        &sb.dir.join("run/current-system"),
        0,
    );
    link(
        sb.dir.join("run/current-system/etc/qemu/bridge.conf"),
        &sb.etc_path("bridge.conf"),
        0,
    );
    let ro = || vec![Mount::ReadOnly(store.clone())];
    attached_to(&ns, run_as_nobody(&sb, &ns, "br0", ro(), None), "br0");

    // A user's symlink in a root-only directory is harmless: nobody but
    // root can replace it, and a symlink's target cannot be changed.
    lchown(etc.join("bridge.conf"), Some(NOBODY), None).unwrap();
    attached_to(&ns, run_as_nobody(&sb, &ns, "br0", ro(), None), "br0");
    // A user's entry in the sticky store is refused.
    chown(&system, Some(NOBODY), None).unwrap();
    let run = run_as_nobody(&sb, &ns, "br0", ro(), None);
    refused(
        &ns,
        &run,
        3,
        &format!(
            "{} is owned by uid 65534 in {}, where others can create entries",
            system.display(),
            store.display()
        ),
    );
}

/// An include in a world-writable sticky directory (/var/tmp, 1777).
#[test]
fn an_include_in_a_sticky_directory() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br1", 1500);
    let sb = Sandbox::new();
    let tmp = sb.dir.join("vartmp");
    mkdir(&tmp, 0, 0, 0o1777);
    let inc = tmp.join("inc.conf");
    sb.acl(format!("allow br0\ninclude {}\n", inc.display()));
    let shown = inc.display().to_string();

    // Even root's file is refused there: any user can rename a root-owned
    // file into /var/tmp from a directory they can write (red team).
    write(&inc, "allow br1\n", 0, 0o644);
    let run = run_as_nobody(&sb, &ns, "br1", vec![], None);
    refused(
        &ns,
        &run,
        3,
        &format!(
            "{shown}: {shown} is a root-owned file in {}, which anyone can write: a user can rename a root-owned one into it from a directory they can write; fix: keep the file in a root-owned directory",
            tmp.display()
        ),
    );

    // Anyone could create the missing name: an error, not a skip.
    fs::remove_file(&inc).unwrap();
    let run = run_as_nobody(&sb, &ns, "br0", vec![], None);
    refused(
        &ns,
        &run,
        3,
        &format!(
            "{shown}: {shown} does not exist, and anyone who can write {} (mode 1777) could create it",
            tmp.display()
        ),
    );
    // A user's file, or a user's symlink to a root file, in its place.
    write(&inc, "allow br1\n", NOBODY, 0o644);
    let run = run_as_nobody(&sb, &ns, "br1", vec![], None);
    refused(
        &ns,
        &run,
        3,
        &format!(
            "{shown}: {shown} is owned by uid 65534 in {}, where others can create entries; fix: chown root {shown}",
            tmp.display()
        ),
    );
    fs::remove_file(&inc).unwrap();
    sb.etc_file("br1.conf", "allow br1\n", 0o644);
    link("/etc/qemu/br1.conf", &inc, NOBODY);
    let run = run_as_nobody(&sb, &ns, "br1", vec![], None);
    refused(&ns, &run, 3, &format!("fix: chown -h root {shown}"));

    // Root's link can be renamed in just as well; root's directory cannot
    // (moving a directory needs write permission on it).
    link("/etc/qemu/br1.conf", &inc, 0);
    let run = run_as_nobody(&sb, &ns, "br1", vec![], None);
    refused(&ns, &run, 3, "which anyone can write: a user can rename");
    fs::remove_file(&inc).unwrap();
    let sub = tmp.join("sub");
    mkdir(&sub, 0, 0, 0o755);
    write(&sub.join("inc.conf"), "allow br1\n", 0, 0o644);
    sb.acl(format!("allow br0\ninclude {}/inc.conf\n", sub.display()));
    attached_to(&ns, run_as_nobody(&sb, &ns, "br1", vec![], None), "br1");
    // A user's directory there is not.
    chown(&sub, Some(NOBODY), None).unwrap();
    let run = run_as_nobody(&sb, &ns, "br1", vec![], None);
    refused(
        &ns,
        &run,
        3,
        &format!(
            "{} is owned by uid 65534 in {}",
            sub.display(),
            tmp.display()
        ),
    );
    // A world-writable directory without the sticky bit is never trusted.
    chown(&sub, Some(0), None).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o777)).unwrap();
    let run = run_as_nobody(&sb, &ns, "br1", vec![], None);
    refused(
        &ns,
        &run,
        3,
        &format!("lies in {}, which someone other than root can change (owner uid 0, mode 0777); fix: chmod go-w", tmp.display()),
    );
}

/// In a group-writable sticky directory (a store, 1775 root:GROUP), where
/// fs.protected_hardlinks is 0 a member can hard-link any root-owned file
/// in, where it is then "root's": non-directories there are refused unless
/// the kernel forbids that. Directories cannot be hard-linked, so NixOS's
/// store directories pass either way. A caller in the group could rename
/// a root file in, so for a member non-directories are refused too.
#[test]
fn files_in_writable_sticky_directories_need_protected_hardlinks() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br1", 1500);
    let sb = Sandbox::new();
    let tmp = sb.dir.join("store");
    mkdir(&tmp, 0, 30000, 0o1775);
    let inc = tmp.join("inc.conf");
    write(&inc, "allow br1\n", 0, 0o644);
    sb.acl(format!("allow br0\ninclude {}\n", inc.display()));
    let setting = |value: &str| {
        let path = sb.dir.join(format!("protected_hardlinks.{value}"));
        fs::write(&path, format!("{value}\n")).unwrap();
        vec![Mount::Bind(
            path,
            PathBuf::from("/proc/sys/fs/protected_hardlinks"),
        )]
    };
    let original = fs::read_to_string("/proc/sys/fs/protected_hardlinks").unwrap();
    attached_to(
        &ns,
        run_as_nobody(&sb, &ns, "br1", setting("1"), None),
        "br1",
    );
    // Several links: still fine while the kernel protects them (NixOS's
    // store optimisation hard-links identical files).
    fs::hard_link(&inc, sb.dir.join("other-name")).unwrap();
    attached_to(
        &ns,
        run_as_nobody(&sb, &ns, "br1", setting("1"), None),
        "br1",
    );
    let run = run_as_nobody(&sb, &ns, "br1", setting("0"), None);
    refused(
        &ns,
        &run,
        3,
        &format!(
            "{0}: {0} lies in {1}, which others can write, and fs.protected_hardlinks is off",
            inc.display(),
            tmp.display()
        ),
    );
    // One link is no defence: the original name may be gone by now.
    fs::remove_file(sb.dir.join("other-name")).unwrap();
    let run = run_as_nobody(&sb, &ns, "br1", setting("0"), None);
    refused(&ns, &run, 3, "fs.protected_hardlinks is off");
    // A caller in the store's group could have renamed a root file in.
    let run = run_as(&sb, &ns, "br1", &["--groups=30000"], setting("1"));
    refused(
        &ns,
        &run,
        3,
        &format!(
            "{0}: {0} is a root-owned file in {1}, which group 30000, the caller's, can write",
            inc.display(),
            tmp.display()
        ),
    );
    // A directory in the sticky one is fine either way.
    let sub = tmp.join("sub");
    mkdir(&sub, 0, 0, 0o755);
    write(&sub.join("inc.conf"), "allow br1\n", 0, 0o644);
    sb.acl(format!("allow br0\ninclude {}/inc.conf\n", sub.display()));
    attached_to(
        &ns,
        run_as_nobody(&sb, &ns, "br1", setting("0"), None),
        "br1",
    );
    // The machine's own setting was never touched.
    assert_eq!(
        fs::read_to_string("/proc/sys/fs/protected_hardlinks").unwrap(),
        original
    );
}

/// Each refusal names the file, what is wrong and the fix.
#[test]
fn errors_say_how_to_fix_the_file() {
    let ns = NetNs::with_bridge(1500);
    let sb = Sandbox::new();
    let run = || run_as_nobody(&sb, &ns, "br0", vec![], None);
    // The how-to recipe: chown root:kvm; chmod 0660.
    sb.acl("allow br0\n").etc_chown("bridge.conf", 0, 30000);
    fs::set_permissions(
        sb.etc_path("bridge.conf"),
        fs::Permissions::from_mode(0o660),
    )
    .unwrap();
    refused(
        &ns,
        &run(),
        3,
        "bridge-helper: /etc/qemu/bridge.conf: writable by group or others (mode 0660); fix: chmod g-w /etc/qemu/bridge.conf",
    );
    sb.etc_file("bridge.conf", "allow br0\n", 0o646);
    refused(
        &ns,
        &run(),
        3,
        "(mode 0646); fix: chmod o-w /etc/qemu/bridge.conf",
    );
    sb.etc_file("bridge.conf", "allow br0\n", 0o644)
        .etc_chown("bridge.conf", 1000, 0);
    refused(
        &ns,
        &run(),
        3,
        "/etc/qemu/bridge.conf: owned by uid 1000, not root; fix: chown root /etc/qemu/bridge.conf",
    );
    // Through a symlink, the fix names the file that is wrong.
    sb.etc_file("real.conf", "allow br0\n", 0o664);
    fs::remove_file(sb.etc_path("bridge.conf")).unwrap();
    link("real.conf", &sb.etc_path("bridge.conf"), 0);
    refused(
        &ns,
        &run(),
        3,
        "/etc/qemu/bridge.conf: writable by group or others (mode 0664); fix: chmod g-w /etc/qemu/real.conf",
    );
    // A group-writable /etc/qemu.
    fs::remove_file(sb.etc_path("bridge.conf")).unwrap();
    sb.acl("allow br0\n");
    let dir = sb.etc_path("");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o775)).unwrap();
    refused(
        &ns,
        &run(),
        3,
        "/etc/qemu/bridge.conf: lies in /etc/qemu, which someone other than root can change (owner uid 0, mode 0775); fix: chmod g-w /etc/qemu",
    );
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    // A missing ACL names the path looked for, and the manual page.
    fs::remove_file(sb.etc_path("bridge.conf")).unwrap();
    refused(
        &ns,
        &run(),
        3,
        "/etc/qemu/bridge.conf: does not exist; create it, owned by root, to allow bridges (see bridge.conf(5))",
    );
}

mod model {
    //! The rule as a reference model over an in-memory tree, against the
    //! real walk over the same tree on disk (in-process, as root, so
    //! nothing is unreadable).
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    pub enum Node {
        Dir {
            uid: u32,
            mode: u32,
            entries: Vec<(&'static str, Node)>,
        },
        File {
            uid: u32,
            mode: u32,
        },
        Link(&'static str),
    }

    const NAMES: [&str; 3] = ["a", "b", "c"];
    /// Link targets; "@" stands for the tree's base directory.
    const TARGETS: [&str; 9] = [
        "a",
        "b/c",
        "../a",
        "@/a",
        "@/b/a",
        ".",
        "/proc/self/comm",
        "c/../b",
        "@",
    ];

    fn node() -> impl Strategy<Value = Node> {
        let uid = prop_oneof![6 => Just(0u32), 1 => Just(NOBODY)];
        let leaf = prop_oneof![
            3 => (
                uid.clone(),
                prop_oneof![4 => Just(0o644u32), 1 => Just(0o664), 2 => Just(0o444)]
            )
                .prop_map(|(uid, mode)| Node::File { uid, mode }),
            2 => proptest::sample::select(&TARGETS[..]).prop_map(Node::Link),
        ];
        leaf.prop_recursive(3, 12, 3, move |inner| {
            (
                prop_oneof![6 => Just(0u32), 1 => Just(NOBODY)],
                prop_oneof![4 => Just(0o755u32), 1 => Just(0o775), 2 => Just(0o1777), 1 => Just(0o1775), 2 => Just(0o555)],
                proptest::collection::vec((proptest::sample::select(&NAMES[..]), inner), 0..4),
            )
                .prop_map(|(uid, mode, mut entries)| {
                    entries.sort_by_key(|e| e.0);
                    entries.dedup_by_key(|e| e.0);
                    Node::Dir { uid, mode, entries }
                })
        })
    }

    pub fn tree() -> impl Strategy<Value = Vec<(&'static str, Node)>> {
        proptest::collection::vec((proptest::sample::select(&NAMES[..]), node()), 1..4).prop_map(
            |mut e| {
                e.sort_by_key(|e| e.0);
                e.dedup_by_key(|e| e.0);
                e
            },
        )
    }

    pub fn create(at: &Path, base: &Path, node: &Node) {
        match node {
            Node::Dir { uid, mode, entries } => {
                fs::create_dir(at).unwrap();
                for (name, child) in entries {
                    create(&at.join(name), base, child);
                }
                // A group the test (root) is not in: a 1775 directory is
                // then a store of someone else's builders.
                chown(at, Some(*uid), Some(30000)).unwrap();
                fs::set_permissions(at, fs::Permissions::from_mode(*mode)).unwrap();
            }
            Node::File { uid, mode } => {
                fs::write(at, at.as_os_str().as_encoded_bytes()).unwrap();
                chown(at, Some(*uid), Some(0)).unwrap();
                fs::set_permissions(at, fs::Permissions::from_mode(*mode)).unwrap();
            }
            Node::Link(target) => {
                let t = target.replace('@', &base.display().to_string());
                symlink(t, at).unwrap();
            }
        }
    }

    #[derive(Debug, PartialEq, Eq)]
    pub enum Outcome {
        /// The file's text (its own path on disk, as written by `create`).
        Read(Vec<u8>),
        Missing,
        Refused,
    }

    /// The rule, stated simply: resolve name by name from the base (a
    /// trusted root directory), following links, with `open` the directory
    /// lookups happen in: (node, path on disk, open to others).
    /// `None`: the case leaves the base (not modelled).
    pub fn resolve(root: &[(&'static str, Node)], base: &Path, path: &str) -> Option<Outcome> {
        let root_node = Node::Dir {
            uid: 0,
            mode: 0o755,
            entries: root.to_vec(),
        };
        let mut todo: Vec<String> = path.split('/').rev().map(str::to_string).collect();
        let mut stack: Vec<(&Node, PathBuf)> = vec![(&root_node, base.to_path_buf())];
        let mut links = 0;
        while let Some(name) = todo.pop() {
            if name.is_empty() || name == "." {
                continue;
            }
            if name == ".." {
                stack.pop();
                if stack.is_empty() {
                    return None;
                }
                // The parent was checked on the way down.
                continue;
            }
            let (dir, dir_path) = stack.last().unwrap().clone();
            let Node::Dir {
                mode: dmode,
                entries,
                ..
            } = dir
            else {
                unreachable!()
            };
            let open = dmode & 0o022 != 0;
            let Some((_, child)) = entries.iter().find(|(n, _)| *n == name) else {
                return Some(if open {
                    Outcome::Refused
                } else {
                    Outcome::Missing
                });
            };
            let (uid, is_dir) = match child {
                Node::Dir { uid, .. } => (*uid, true),
                Node::File { uid, .. } => (*uid, false),
                Node::Link(_) => (0, false),
            };
            // Links are created by root (as the test runs) here. In a
            // sticky directory others can write, only root's directories
            // are surely root's choice; a file or link only where the
            // directory is not world-writable and links are protected (the
            // test, root, is not in the directories' group).
            if open && (uid != 0 || (!is_dir && (dmode & 0o002 != 0 || !hardlinks_protected()))) {
                return Some(Outcome::Refused);
            }
            let last = todo.iter().all(|n| n.is_empty());
            match child {
                Node::Link(target) => {
                    links += 1;
                    if links > 40 {
                        return Some(Outcome::Refused);
                    }
                    if target.starts_with("/proc") {
                        return Some(Outcome::Refused);
                    }
                    let (abs, rest) = match target.strip_prefix('@') {
                        Some(rest) => (true, rest.to_string()),
                        None => (false, target.to_string()),
                    };
                    if abs {
                        stack.truncate(1);
                    }
                    todo.extend(rest.split('/').rev().map(str::to_string));
                }
                Node::Dir { uid, mode, .. } => {
                    if last {
                        return Some(Outcome::Refused);
                    }
                    if *uid != 0 || (mode & 0o022 != 0 && mode & 0o1000 == 0) {
                        return Some(Outcome::Refused);
                    }
                    stack.push((child, dir_path.join(&name)));
                }
                Node::File { uid, mode } => {
                    if !last {
                        return Some(Outcome::Missing);
                    }
                    if *uid != 0 || mode & 0o022 != 0 {
                        return Some(Outcome::Refused);
                    }
                    let on_disk = dir_path.join(&name);
                    return Some(Outcome::Read(
                        on_disk.as_os_str().as_encoded_bytes().to_vec(),
                    ));
                }
            }
        }
        // Ended on a directory.
        Some(Outcome::Refused)
    }

    /// Every path in the tree (and one below each directory that is not),
    /// to query.
    pub fn paths(entries: &[(&'static str, Node)], prefix: &str, out: &mut Vec<String>) {
        for (name, node) in entries {
            let path = format!("{prefix}{name}");
            if let Node::Dir { entries, .. } = node {
                out.push(format!("{path}/none"));
                paths(entries, &format!("{path}/"), out);
            }
            out.push(path);
        }
    }

    fn hardlinks_protected() -> bool {
        fs::read_to_string("/proc/sys/fs/protected_hardlinks")
            .is_ok_and(|v| matches!(v.trim(), "1" | "2"))
    }

    /// The walk's verdict on `path`, through `files` (which keeps the
    /// directories of earlier reads, as one run does).
    pub fn walk(files: &SystemFiles, path: &Path) -> Outcome {
        use bridge_helper::policy::files::{Files, OpenError};
        match files.read(path, 1 << 20) {
            Ok(text) => Outcome::Read(text.bytes),
            Err(OpenError::Missing) => Outcome::Missing,
            Err(OpenError::Refused(_)) => Outcome::Refused,
            Err(e) => panic!("{path:?}: {e:?}"),
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    #[test]
    fn the_walk_agrees_with_the_reference_model(
        tree in model::tree(),
        picks in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 1..4),
    ) {
        require_root();
        let sb = Sandbox::new();
        let base = sb.dir.join("t");
        model::create(&base, &base, &model::Node::Dir { uid: 0, mode: 0o755, entries: tree.clone() });
        let mut queries = Vec::new();
        model::paths(&tree, "", &mut queries);
        // Several reads through one SystemFiles, as a run reads its ACL, its
        // includes and its settings: a kept directory changes no verdict.
        let files = SystemFiles::default();
        for pick in picks {
            let query = pick.get(&queries);
            if let Some(expected) = model::resolve(&tree, &base, query) {
                let got = model::walk(&files, &base.join(query));
                proptest::prop_assert_eq!(got, expected, "{} in tree {:#?}", query, tree);
            }
        }
    }
}

/// Found by the property test above: a path that runs into root's file in
/// a sticky directory others can write (`b/b/c`, ENOTDIR) is missing, as
/// the model says. The walk refused it; nobody but root could have put or
/// kept the file there, so the verdict is root's.
#[test]
fn a_path_through_roots_file_in_a_sticky_directory_is_missing() {
    use model::{Node, Outcome};
    require_root();
    let sb = Sandbox::new();
    let base = sb.dir.join("t");
    let tree = vec![(
        "b",
        Node::Dir {
            uid: 0,
            mode: 0o1775,
            entries: vec![
                ("a", Node::Link("b/c")),
                (
                    "b",
                    Node::File {
                        uid: 0,
                        mode: 0o644,
                    },
                ),
            ],
        },
    )];
    model::create(
        &base,
        &base,
        &Node::Dir {
            uid: 0,
            mode: 0o755,
            entries: tree.clone(),
        },
    );
    for query in ["b/a", "b/b/c"] {
        assert_eq!(model::resolve(&tree, &base, query), Some(Outcome::Missing));
        let got = model::walk(&SystemFiles::default(), &base.join(query));
        assert_eq!(got, Outcome::Missing, "{query}");
    }
}

/// An include the caller cannot read is skipped, as QEMU does, only when
/// its permissions refuse the caller. A security module's refusal is not a
/// skip: otherwise a user who can enter a stricter AppArmor profile before
/// running the setuid helper (`aa-exec`) could skip root's deny. This
/// kernel has no AppArmor; Landlock refuses an open the same way (and, like
/// AppArmor, not `faccessat`), so a root run under a Landlock ruleset that
/// leaves out the deny file stands in for it.
#[test]
fn a_deny_refused_by_a_security_module_is_not_skipped() {
    let ns = NetNs::with_bridge(1500);
    ns.add_bridge("br-bob", 1500);
    let sb = Sandbox::new();
    sb.acl("allow all\ninclude /etc/qemu/deny.conf\n").etc_file(
        "deny.conf",
        "deny br-bob\n",
        0o644,
    );
    let run = |landlocked: bool| {
        let helper = sb.install(HELPER, Mode::Root);
        let (ours, theirs) = socketpair();
        clear_cloexec(theirs.as_raw_fd());
        let mut cmd = sb.command(&ns, &helper, Jail::root());
        cmd.arg("--br=br-bob")
            .arg(format!("--fd={}", theirs.as_raw_fd()));
        if landlocked {
            landlock_reads(
                &mut cmd,
                &[
                    "/usr",
                    "/dev",
                    "/proc",
                    "/sys",
                    "/tmp",
                    "/etc/qemu/bridge.conf",
                ],
            );
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = spawn(&mut cmd);
        drop(theirs);
        HelperRun::collect(child.wait_with_output().expect("wait"), ours)
    };
    // Without the module, root's deny holds.
    refused(&ns, &run(false), 4, "denied by /etc/qemu/deny.conf:1");
    let r = run(true);
    refused(
        &ns,
        &r,
        3,
        "/etc/qemu/deny.conf: /etc/qemu/deny.conf could not be read although its permissions allow the calling user to read it: a security module",
    );
    // The permissions' own refusal is still a skip (the group trick).
    sb.etc_file("deny.conf", "deny br-bob\n", 0o600);
    let nobody = |sb: &Sandbox| sb.run_helper(&ns, Mode::Setuid, &["--br=br-bob"]);
    attached_to(&ns, nobody(&sb), "br-bob");
}

/// Restricts file reads of the command to `allowed` (and what lies beneath
/// them) with Landlock, after no_new_privs, between fork and exec.
fn landlock_reads(cmd: &mut std::process::Command, allowed: &[&str]) {
    const CREATE_RULESET: libc::c_long = 444;
    const ADD_RULE: libc::c_long = 445;
    const RESTRICT_SELF: libc::c_long = 446;
    const RULE_PATH_BENEATH: libc::c_long = 1;
    const READ_FILE: u64 = 1 << 2;
    #[repr(C, packed)]
    struct PathBeneath {
        allowed_access: u64,
        parent_fd: i32,
    }
    let paths: Vec<CString> = allowed.iter().map(|p| CString::new(*p).unwrap()).collect();
    // SAFETY: runs between fork and exec; only raw system calls on data
    // prepared before the fork, with pointers to live, correctly laid out
    // structures.
    unsafe {
        cmd.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return fail();
            }
            let handled: u64 = READ_FILE;
            let ruleset = libc::syscall(CREATE_RULESET, &handled, 8usize, 0u32);
            if ruleset < 0 {
                return fail();
            }
            for path in &paths {
                let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                if fd < 0 {
                    return fail();
                }
                let rule = PathBeneath {
                    allowed_access: READ_FILE,
                    parent_fd: fd,
                };
                if libc::syscall(ADD_RULE, ruleset, RULE_PATH_BENEATH, &rule, 0u32) != 0 {
                    return fail();
                }
                libc::close(fd);
            }
            if libc::syscall(RESTRICT_SELF, ruleset, 0u32) != 0 {
                return fail();
            }
            Ok(())
        });
    }
}
