//! Issue 15 with real guests on this host: two users' TCG guests on
//! ports that bridge-helper.conf isolates cannot ping each other, and both
//! ping an address on the uplink side (a veth in the bridge).
//!
//! Needs what e2e_qemu needs (qemu-system-x86, busybox-static, apt access
//! for Debian's kernel, cached under target/tmp).

mod common;
#[path = "support/guest.rs"]
mod guest;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{time, Jail, Mode, NetNs, Sandbox, NOBODY};
use guest::{KillOnDrop, MARK_HOLDING, MARK_PEER_UNREACHABLE, MARK_PING_OK};

const OTHER_USER: u32 = 1234;
/// A third user whose own port line sets nothing: a plain port.
const PLAIN_USER: u32 = 1235;
const SUBNET: u8 = 77;
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

struct Guest {
    qemu: KillOnDrop,
    out: PathBuf,
}

impl Guest {
    fn serial(&self) -> String {
        guest::read_serial(&self.out.join("serial.log"))
    }

    fn wait_for(&mut self, mark: &str, what: &str) {
        let deadline = Instant::now() + time::limit(BOOT_TIMEOUT);
        while Instant::now() < deadline {
            if self.serial().contains(mark) {
                return;
            }
            if !self.qemu.is_running() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{what}: no {mark}\n--- serial ---\n{}", self.serial());
    }
}

/// What every boot shares.
struct World<'a> {
    sb: &'a Sandbox,
    ns: &'a NetNs,
    helper: &'a std::path::Path,
    image: &'a guest::GuestImage,
}

/// Boots a guest as `uid` with address .`host` that pings the uplink
/// (.1) and then, if given, `peer`.
fn boot(w: &World, uid: u32, host: u8, peer: Option<u8>, hold: bool) -> Guest {
    let World {
        sb,
        ns,
        helper,
        image,
    } = *w;
    let out = sb.dir.join(format!("out-{uid}"));
    fs::create_dir(&out).unwrap();
    std::os::unix::fs::chown(&out, Some(uid), Some(uid)).unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
    let mut append = guest::cmdline(
        &format!("169.254.{SUBNET}.{host}/24"),
        &format!("169.254.{SUBNET}.1"),
        hold,
    );
    if let Some(p) = peer {
        append.push_str(&format!(" bhpeer=169.254.{SUBNET}.{p}"));
    }
    let mut jail = Jail::user(uid);
    jail.tun_0666 = true;
    let mut cmd = sb.command(ns, guest::QEMU, jail);
    image
        .boot_args(&mut cmd, 256, 1, &out.join("serial.log"), &append)
        .args([
            "-netdev",
            &format!("bridge,id=n0,br=br0,helper={}", helper.display()),
        ])
        // QEMU's default MAC is the same for every guest: distinct ones,
        // or the bridge could not tell the guests apart at all.
        .args([
            "-device",
            &format!("virtio-net-pci,netdev=n0,romfile=,mac=52:54:00:00:{SUBNET:02x}:{host:02x}"),
        ])
        .current_dir(&out)
        .env("HOME", &out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(out.join("qemu.stderr")).unwrap());
    Guest {
        qemu: KillOnDrop::new(common::spawn(&mut cmd), "qemu"),
        out,
    }
}

#[test]
fn two_users_guests_on_isolated_ports_reach_the_uplink_not_each_other() {
    common::require_root();
    guest::require_qemu();
    let image = guest::guest_image();
    let ns = NetNs::with_bridge(1500);
    ns.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
    ns.ip(&["link", "set", "up0", "master", "br0", "up"]);
    ns.ip(&[
        "addr",
        "add",
        &format!("169.254.{SUBNET}.1/24"),
        "dev",
        "up1",
    ]);
    ns.ip(&["link", "set", "up1", "up"]);
    let sb = Sandbox::new();
    sb.acl("allow br0\n");
    sb.etc_file(
        "bridge-helper.conf",
        format!(
            "port br0 user={NOBODY} isolated\nport br0 user={OTHER_USER} isolated\nport br0 user={PLAIN_USER}\n"
        ),
        0o644,
    );
    let helper = sb.install(common::HELPER, Mode::Setuid);
    let image = image.copy_to(&sb.dir);

    let w = World {
        sb: &sb,
        ns: &ns,
        helper: &helper,
        image: &image,
    };
    // B: up, has pinged the uplink, holds.
    let mut b = boot(&w, OTHER_USER, 3, None, true);
    b.wait_for(MARK_HOLDING, "guest B (uid 1234)");
    assert!(
        b.serial().contains(MARK_PING_OK),
        "B could not ping the uplink\n{}",
        b.serial()
    );
    // A: pings the uplink, then B.
    let mut a = boot(&w, NOBODY, 2, Some(3), false);
    let status = a.qemu.wait_timeout(time::limit(BOOT_TIMEOUT));
    let serial = a.serial();
    assert!(status.is_some(), "guest A did not finish\n{serial}");
    assert!(
        serial.contains(MARK_PING_OK),
        "A could not ping the uplink\n{serial}"
    );
    assert!(
        serial.contains(MARK_PEER_UNREACHABLE),
        "A reached B across isolated ports\n{serial}"
    );
    // B was up all along, and the uplink side still reaches it.
    assert!(b.qemu.is_running(), "guest B stopped\n{}", b.serial());
    let taps = ns.ip(&["-d", "-o", "link", "show", "type", "tun"]);
    assert!(
        taps.contains("isolated on"),
        "B's port is not isolated: {taps}"
    );
    let ping = ns.exec(&format!(
        "busybox ping -c 2 -W 5 169.254.{SUBNET}.3 2>&1; echo status=$?"
    ));
    assert!(
        ping.contains("status=0"),
        "the uplink side cannot ping B: {ping}\n--- B ---\n{}",
        b.serial()
    );
    // Control: a third user's guest on a plain port reaches B (isolation
    // only keeps isolated ports apart), so A's failure was isolation.
    let mut c = boot(&w, PLAIN_USER, 4, Some(3), false);
    let status = c.qemu.wait_timeout(time::limit(BOOT_TIMEOUT));
    let serial = c.serial();
    assert!(status.is_some(), "guest C did not finish\n{serial}");
    assert!(
        serial.contains(guest::MARK_PEER_REACHED),
        "a plain port's guest could not reach B either: the test proves nothing\n{serial}"
    );
    b.qemu.kill9();
}
