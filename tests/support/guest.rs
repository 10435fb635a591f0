//! A tiny Linux guest for the end-to-end tests: Debian's own kernel (taken
//! out of the `linux-image-*-amd64` .deb with `dpkg-deb -x`, never
//! installed) and a busybox initramfs written by this file.
//!
//! The guest's `/init` loads the virtio modules, gives eth0 the address from
//! the kernel command line (`bhguest=ADDR/LEN`), pings `bhhost=ADDR`, prints
//! markers on ttyS0 and powers off (or, with `bhhold=1`, waits to be killed).
//!
//! The kernel is downloaded once per target directory and cached under
//! `$CARGO_TARGET_TMPDIR/guest-kernel`. `BH_GUEST_KERNEL_DEB=/path/to.deb`
//! uses a .deb fetched beforehand instead of `apt-get download`.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Markers the guest prints on its serial console.
pub const MARK_INIT: &str = "BH-INIT";
pub const MARK_NET_UP: &str = "BH-NET-UP";
/// Followed by the NIC's queues as the guest's sysfs lists them.
pub const MARK_QUEUES: &str = "BH-QUEUES";
pub const MARK_PING_OK: &str = "BH-PING-OK";
pub const MARK_PING_FAILED: &str = "BH-PING-FAILED";
pub const MARK_HOLDING: &str = "BH-HOLDING";
pub const MARK_DONE: &str = "BH-DONE";
/// With `bhpeer=ADDR` on the command line, after the ping of `bhhost`.
pub const MARK_PEER_REACHED: &str = "BH-PEER-REACHED";
pub const MARK_PEER_UNREACHABLE: &str = "BH-PEER-UNREACHABLE";

/// Modules the guest needs for a virtio-net-pci NIC; their dependencies are
/// found in the modules' own `.modinfo` and loaded first.
const ROOT_MODULES: &[&str] = &["virtio_pci", "virtio_net"];

/// Modules of the bridge guest (tests/vlan_guest.rs), which runs the
/// helper itself on a bridge with VLAN filtering, and under an automount:
/// this host's kernel has neither, Debian's has. Kept apart from the NIC
/// guest's, which needs none.
const BRIDGE_MODULES: &[&str] = &["llc", "stp", "bridge", "8021q", "tun", "veth", "autofs4"];

/// What a cached kernel directory was extracted for: a cache whose READY
/// says otherwise (older module lists) is extracted again.
fn cache_key() -> String {
    format!(
        "modules {} | bridge guest {}\n",
        ROOT_MODULES.join(" "),
        BRIDGE_MODULES.join(" ")
    )
}

/// The helper the end-to-end tests give QEMU or libvirt: ours, or with
/// `BH_E2E_HELPER=qemu` QEMU's own (to tell harness problems from helper
/// problems), checked to be QEMU's wherever a dpkg diversion put it.
pub fn helper_under_test() -> PathBuf {
    match std::env::var("BH_E2E_HELPER").as_deref() {
        Ok("qemu") => crate::common::qemu_reference_helper(),
        _ => PathBuf::from(crate::common::HELPER),
    }
}

/// The QEMU the end-to-end tests boot the guest with.
pub const QEMU: &str = "qemu-system-x86_64";

/// Fails loudly unless [`QEMU`] runs.
pub fn require_qemu() {
    let ok = Command::new(QEMU)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{QEMU} is missing: install the Debian package qemu-system-x86"
    );
}

/// Kernel and initramfs, ready to boot.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Debian package the kernel came from, e.g. `linux-image-6.1.0-56-amd64`.
    pub kernel_package: String,
}

impl GuestImage {
    /// The arguments every guest here boots with: a headless TCG PC with
    /// `mem_mb` MiB and `smp` CPUs, no defaults or monitor, its console in
    /// the file `serial`, this kernel and initramfs with `append`.
    pub fn boot_args<'c>(
        &self,
        cmd: &'c mut Command,
        mem_mb: u32,
        smp: u32,
        serial: &Path,
        append: &str,
    ) -> &'c mut Command {
        cmd.args(["-machine", "pc", "-accel", "tcg"])
            .args(["-m", &mem_mb.to_string(), "-smp", &smp.to_string()])
            .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
            .args(["-monitor", "none"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .args(["-append", append])
    }

    /// Copies kernel and initramfs into `dir` (mode 0644) so that an
    /// unprivileged QEMU can read them whatever the target directory's
    /// permissions are.
    pub fn copy_to(&self, dir: &Path) -> GuestImage {
        let kernel = dir.join("vmlinuz");
        let initrd = dir.join("initrd.cpio");
        for (from, to) in [(&self.kernel, &kernel), (&self.initrd, &initrd)] {
            fs::copy(from, to)
                .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
            fs::set_permissions(to, fs::Permissions::from_mode(0o644)).unwrap();
        }
        GuestImage {
            kernel,
            initrd,
            kernel_package: self.kernel_package.clone(),
        }
    }
}

/// The kernel command line for one boot. `guest_cidr` like `169.254.7.2/24`.
pub fn cmdline(guest_cidr: &str, host_addr: &str, hold: bool) -> String {
    format!(
        "console=ttyS0 panic=-1 quiet loglevel=3 bhguest={guest_cidr} bhhost={host_addr} bhhold={}",
        u8::from(hold)
    )
}

/// Returns the cached guest, building it on first use (downloads the kernel
/// .deb with apt-get). Panics with a message naming what is missing.
pub fn guest_image() -> GuestImage {
    static IMAGE: OnceLock<Result<GuestImage, String>> = OnceLock::new();
    match IMAGE.get_or_init(build_guest_image) {
        Ok(img) => img.clone(),
        Err(e) => panic!("cannot build the test guest: {e}"),
    }
}

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guest-kernel")
}

fn build_guest_image() -> Result<GuestImage, String> {
    let cache = cache_dir();
    fs::create_dir_all(&cache).map_err(|e| format!("create {}: {e}", cache.display()))?;
    // Test binaries may run concurrently (cargo test -p, nextest): one
    // download at a time, the others wait and reuse it.
    let _lock = FileLock::new(&cache.join(".lock"))?;
    let kernel_dir = cache.join("kernel");
    // A cache extracted for other module lists is redone.
    if fs::read_to_string(kernel_dir.join("READY")).ok() != Some(cache_key()) {
        fetch_kernel(&cache, &kernel_dir)?;
    }
    let kernel_package = fs::read_to_string(kernel_dir.join("PACKAGE"))
        .map_err(|e| e.to_string())?
        .trim()
        .to_owned();
    let busybox = find_static_busybox()?;
    let initrd = cache.join(format!("initrd-{}.cpio", std::process::id()));
    let final_initrd = cache.join("initrd.cpio");
    build_initramfs(&busybox, &kernel_dir.join("modules"), &initrd)?;
    fs::rename(&initrd, &final_initrd).map_err(|e| e.to_string())?;
    Ok(GuestImage {
        kernel: kernel_dir.join("vmlinuz"),
        initrd: final_initrd,
        kernel_package,
    })
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Which versioned package `linux-image-amd64` currently depends on.
fn kernel_package_name() -> Result<String, String> {
    let out = run_ok(
        Command::new("apt-cache").args(["depends", "linux-image-amd64"]),
        "apt-cache depends linux-image-amd64",
    )
    .map_err(|e| format!("{e}\n(need apt with Debian's package lists: run `apt-get update`)"))?;
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
        .map(str::to_owned)
        .ok_or_else(|| {
            format!("apt-cache knows no linux-image-amd64 dependency (run `apt-get update`); it said:\n{out}")
        })
}

fn fetch_kernel(cache: &Path, kernel_dir: &Path) -> Result<(), String> {
    let work = cache.join("work");
    let _ = fs::remove_dir_all(&work);
    let _ = fs::remove_dir_all(kernel_dir);
    fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let (deb, package) = match std::env::var_os("BH_GUEST_KERNEL_DEB") {
        Some(p) => {
            let p = PathBuf::from(p);
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            let package = name.split('_').next().unwrap_or("linux-image").to_owned();
            (p, package)
        }
        None => {
            let package = kernel_package_name()?;
            run_ok(
                Command::new("apt-get")
                    .args(["download", "-q", &package])
                    .current_dir(&work),
                "apt-get download",
            )
            .map_err(|e| format!("downloading the guest kernel package {package}: {e}"))?;
            let deb = fs::read_dir(&work)
                .map_err(|e| e.to_string())?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "deb"))
                .ok_or_else(|| {
                    format!(
                        "apt-get download {package} left no .deb in {}",
                        work.display()
                    )
                })?;
            (deb, package)
        }
    };
    let root = work.join("x");
    run_ok(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
        "dpkg-deb -x (package dpkg)",
    )?;
    let vmlinuz = fs::read_dir(root.join("boot"))
        .map_err(|e| format!("{}: no boot/ in {}: {e}", package, deb.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| format!("no boot/vmlinuz-* in {}", deb.display()))?;
    let staging = cache.join("kernel.new");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(staging.join("modules")).map_err(|e| e.to_string())?;
    fs::copy(&vmlinuz, staging.join("vmlinuz")).map_err(|e| e.to_string())?;

    let index = index_modules(&root.join("lib/modules"))?;
    let order = module_load_order(&index, ROOT_MODULES)?;
    for name in &order {
        let src = &index[name];
        let data = fs::read(src).map_err(|e| e.to_string())?;
        if !data.starts_with(b"\x7fELF") {
            return Err(format!(
                "{} is not a plain ELF module (compressed?); add decompression",
                src.display()
            ));
        }
        fs::write(staging.join("modules").join(format!("{name}.ko")), data)
            .map_err(|e| e.to_string())?;
    }
    fs::write(staging.join("modules/order"), order.join("\n") + "\n").map_err(|e| e.to_string())?;
    let bridge_dir = staging.join("modules-bridge");
    fs::create_dir_all(&bridge_dir).map_err(|e| e.to_string())?;
    let order = module_load_order(&index, BRIDGE_MODULES)?;
    for name in &order {
        let data = plain_module(&index[name])?;
        fs::write(bridge_dir.join(format!("{name}.ko")), data).map_err(|e| e.to_string())?;
    }
    fs::write(bridge_dir.join("order"), order.join("\n") + "\n").map_err(|e| e.to_string())?;
    fs::write(staging.join("PACKAGE"), format!("{package}\n")).map_err(|e| e.to_string())?;
    fs::write(staging.join("READY"), cache_key()).map_err(|e| e.to_string())?;
    fs::rename(&staging, kernel_dir).map_err(|e| e.to_string())?;
    let _ = fs::remove_dir_all(&work);
    Ok(())
}

/// A module file as insmod takes it: plain ELF, or decompressed with the
/// xz/zstd/gzip tool when the package compresses its modules.
fn plain_module(path: &Path) -> Result<Vec<u8>, String> {
    let data = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if data.starts_with(b"\x7fELF") {
        return Ok(data);
    }
    let tool = match path.extension().and_then(|e| e.to_str()) {
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => return Err(format!("{}: not an ELF module", path.display())),
    };
    let out = Command::new(tool)
        .args(["-dc"])
        .arg(path)
        .output()
        .map_err(|e| format!("{tool} -dc {}: {e} (install {tool})", path.display()))?;
    if !out.status.success() || !out.stdout.starts_with(b"\x7fELF") {
        return Err(format!("{tool} -dc {}: {}", path.display(), out.status));
    }
    Ok(out.stdout)
}

fn norm(name: &str) -> String {
    name.replace('-', "_")
}

/// Every `*.ko` under `dir`, by normalised module name.
fn index_modules(dir: &Path) -> Result<BTreeMap<String, PathBuf>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let p = e.map_err(|e| e.to_string())?.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                for ext in [".ko", ".ko.xz", ".ko.zst", ".ko.gz"] {
                    if let Some(stem) = n.strip_suffix(ext) {
                        out.insert(norm(stem), p.clone());
                    }
                }
            }
        }
    }
    if out.is_empty() {
        return Err(format!("no kernel modules under {}", dir.display()));
    }
    Ok(out)
}

/// The `depends=` field of a module's `.modinfo` section.
fn module_depends(ko: &Path) -> Result<Vec<String>, String> {
    let data = fs::read(ko).map_err(|e| e.to_string())?;
    let key = b"\0depends=";
    let Some(pos) = data.windows(key.len()).position(|w| w == key) else {
        return Ok(Vec::new());
    };
    let rest = &data[pos + key.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    Ok(String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(norm)
        .collect())
}

/// Dependencies first, each module once.
fn module_load_order(
    index: &BTreeMap<String, PathBuf>,
    roots: &[&str],
) -> Result<Vec<String>, String> {
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        done: &mut BTreeSet<String>,
        active: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) -> Result<(), String> {
        if done.contains(name) {
            return Ok(());
        }
        if !active.insert(name.to_owned()) {
            return Err(format!("module dependency cycle at {name}"));
        }
        let path = index
            .get(name)
            .ok_or_else(|| format!("module {name} not in the kernel package"))?;
        for dep in module_depends(path)? {
            visit(&dep, index, done, active, order)?;
        }
        active.remove(name);
        done.insert(name.to_owned());
        order.push(name.to_owned());
        Ok(())
    }
    let (mut done, mut active, mut order) = (BTreeSet::new(), BTreeSet::new(), Vec::new());
    for r in roots {
        visit(r, index, &mut done, &mut active, &mut order)?;
    }
    Ok(order)
}

/// busybox from `busybox-static`: it must have no ELF interpreter, as the
/// initramfs holds no libc.
fn find_static_busybox() -> Result<PathBuf, String> {
    let candidates = ["/bin/busybox", "/usr/bin/busybox"];
    let mut seen = Vec::new();
    for c in candidates {
        let p = Path::new(c);
        let Ok(data) = fs::read(p) else { continue };
        if elf_is_static(&data) {
            return Ok(p.to_path_buf());
        }
        seen.push(c);
    }
    Err(if seen.is_empty() {
        "busybox not found: install the Debian package busybox-static".to_owned()
    } else {
        format!("{seen:?} is dynamically linked: install busybox-static (not busybox)")
    })
}

pub fn elf_is_static(data: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    if data.len() < 64 || !data.starts_with(b"\x7fELF\x02\x01") {
        return false;
    }
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= data.len() && u32::from_le_bytes(data[o..o + 4].try_into().unwrap()) != 3
        // PT_INTERP
    })
}

/// How every test guest starts: busybox, /proc, /sys, /dev, then the
/// modules in /lib/modules/order; it prints BH-INIT on the way.
pub const INIT_PRELUDE: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo BH-INIT
for m in $(cat /lib/modules/order); do
    insmod /lib/modules/$m.ko || echo "BH-INSMOD-FAILED $m"
done
"#;

/// The network check that follows [`INIT_PRELUDE`] in the image of
/// [`guest_image`].
const INIT_NET: &str = r#"i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
ip link set lo up
ip link set eth0 up
ip addr add "$bhguest" dev eth0
echo "BH-NET-UP $(cat /sys/class/net/eth0/address)"
echo "BH-QUEUES $(ls /sys/class/net/eth0/queues | tr '\n' ' ')"
ok=0
i=0
while [ $i -lt 10 ]; do
    if ping -c 1 -W 2 "$bhhost"; then ok=1; break; fi
    i=$((i+1))
done
if [ $ok = 1 ]; then echo BH-PING-OK; else echo BH-PING-FAILED; fi
if [ -n "$bhpeer" ]; then
    if ping -c 3 -W 2 "$bhpeer"; then echo BH-PEER-REACHED; else echo BH-PEER-UNREACHABLE; fi
fi
if [ "$bhhold" = 1 ]; then
    echo BH-HOLDING
    while true; do sleep 60; done
fi
echo BH-DONE
poweroff -f
"#;

/// Minimal cpio "newc" writer.
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn new() -> Self {
        Cpio {
            out: Vec::new(),
            ino: 1,
        }
    }
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        let namesize = name.len() + 1;
        let hdr = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            namesize,
            0
        );
        self.ino += 1;
        self.out.extend_from_slice(hdr.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }
    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, b"", (0, 0));
    }
    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100000 | mode, data, (0, 0));
    }
    fn chardev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, b"", (major, minor));
    }
    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, b"", (0, 0));
        self.out
    }
}

fn build_initramfs(busybox: &Path, modules: &Path, out: &Path) -> Result<(), String> {
    let mut c = Cpio::new();
    for d in ["bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"] {
        c.dir(d);
    }
    c.chardev("dev/console", 5, 1);
    c.chardev("dev/null", 1, 3);
    c.file(
        "bin/busybox",
        0o755,
        &fs::read(busybox).map_err(|e| e.to_string())?,
    );
    c.file(
        "init",
        0o755,
        format!("{INIT_PRELUDE}{INIT_NET}").as_bytes(),
    );
    for e in fs::read_dir(modules).map_err(|e| e.to_string())? {
        let p = e.map_err(|e| e.to_string())?.path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        c.file(
            &format!("lib/modules/{name}"),
            0o644,
            &fs::read(&p).map_err(|e| e.to_string())?,
        );
    }
    fs::write(out, c.finish()).map_err(|e| format!("{}: {e}", out.display()))
}

/// A guest of Debian's kernel with the bridge, 802.1Q, tun and veth
/// modules, whose `/init` (busybox sh) is `init` and whose files include
/// `extra` (path without leading `/`, mode, contents; parents created
/// 0755, root-owned). Written to `out`. The root directory is made 0755:
/// the initramfs's own is 1777, which the helper's trust walk would
/// refuse for /etc/qemu behind it.
pub fn bridge_guest(init: &str, extra: &[(&str, u32, Vec<u8>)], out: &Path) -> GuestImage {
    let image = guest_image();
    let modules = cache_dir().join("kernel/modules-bridge");
    let busybox = find_static_busybox().unwrap_or_else(|e| panic!("{e}"));
    let mut c = Cpio::new();
    c.dir(".");
    let mut dirs = BTreeSet::new();
    for d in ["bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"] {
        dirs.insert(d.to_owned());
    }
    for (path, _, _) in extra {
        let mut at = Path::new(path).parent();
        while let Some(p) = at.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_string_lossy().into_owned());
            at = p.parent();
        }
    }
    // BTreeSet order puts every parent before its children.
    for d in &dirs {
        c.dir(d);
    }
    c.chardev("dev/console", 5, 1);
    c.chardev("dev/null", 1, 3);
    c.file("bin/busybox", 0o755, &fs::read(&busybox).unwrap());
    c.file("init", 0o755, init.as_bytes());
    for e in fs::read_dir(&modules).unwrap_or_else(|e| panic!("{}: {e}", modules.display())) {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        c.file(
            &format!("lib/modules/{name}"),
            0o644,
            &fs::read(&p).unwrap(),
        );
    }
    for (path, mode, data) in extra {
        c.file(path, *mode, data);
    }
    fs::write(out, c.finish()).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    GuestImage {
        kernel: image.kernel,
        initrd: out.to_path_buf(),
        kernel_package: image.kernel_package,
    }
}

/// flock(2)-based exclusive lock, released on drop.
struct FileLock(fs::File);

impl FileLock {
    fn new(path: &Path) -> Result<Self, String> {
        use std::os::fd::AsRawFd;
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if r != 0 {
            return Err(format!(
                "flock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(FileLock(f))
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so a
/// failing test never leaves a QEMU behind.
pub struct KillOnDrop {
    pub child: Option<Child>,
    pub what: String,
}

impl KillOnDrop {
    pub fn new(child: Child, what: &str) -> Self {
        KillOnDrop {
            child: Some(child),
            what: what.to_owned(),
        }
    }
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }
    /// Waits at most `timeout`; on timeout the process is killed and `None`
    /// returned.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
    /// SIGKILL now and reap.
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Reads the serial log (which may not exist yet).
pub fn read_serial(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// ICMP echo counters from a network namespace's /proc/net/snmp:
/// (InEchos, OutEchoReps).
pub fn parse_icmp_echos(snmp: &str) -> Option<(u64, u64)> {
    let mut lines = snmp.lines().filter(|l| l.starts_with("Icmp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let get = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .and_then(|i| values.get(i)?.parse().ok())
    };
    Some((get("InEchos")?, get("OutEchoReps")?))
}

/// A tap seen in the namespace while QEMU ran.
#[derive(Debug, Clone)]
pub struct SeenTap {
    pub name: String,
    pub master: String,
    pub mtu: u32,
    pub up: bool,
    pub mac: String,
    pub alias: String,
}

fn field<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    let i = s.find(key)?;
    s[i + key.len()..].split_whitespace().next()
}

/// The namespace's tun/tap devices, from one `ip -o link` call (no panics:
/// devices come and go while we look).
pub fn taps_now(ns: &crate::common::NetNs) -> Vec<SeenTap> {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-o", "link", "show", "type", "tun"])
        .output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?.to_owned();
            let flags = l.split('<').nth(1)?.split('>').next()?;
            Some(SeenTap {
                name,
                master: field(l, " master ").unwrap_or("").to_owned(),
                mtu: field(l, " mtu ")?.parse().ok()?,
                up: flags.split(',').any(|f| f == "UP"),
                mac: field(l, "link/ether ").unwrap_or("").to_owned(),
                alias: l.split("    alias ").nth(1).unwrap_or("").trim().to_owned(),
            })
        })
        .collect()
}

/// The ICMP echo counters of a network namespace (see
/// [`parse_icmp_echos`]).
pub fn icmp_echos(ns: &crate::common::NetNs) -> (u64, u64) {
    let snmp = ns.exec("cat /proc/net/snmp");
    parse_icmp_echos(&snmp).unwrap_or_else(|| panic!("no Icmp lines in /proc/net/snmp:\n{snmp}"))
}

/// How a booted guest must end: its ping succeeded (its serial log says
/// so), QEMU exited 0, and the namespace answered its echoes (InEchos and
/// OutEchoReps moved from `before`). Returns the counters now.
pub fn assert_guest_pinged(
    ns: &crate::common::NetNs,
    serial: &str,
    status: Option<ExitStatus>,
    before: (u64, u64),
    ctx: &str,
) -> (u64, u64) {
    assert!(
        serial.contains(MARK_PING_OK),
        "the guest's ping did not succeed{ctx}"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "QEMU exited with {status:?}{ctx}"
    );
    let after = icmp_echos(ns);
    assert!(
        after.0 > before.0 && after.1 > before.1,
        "the namespace's ICMP counters did not move (InEchos, OutEchoReps) {before:?} -> {after:?}{ctx}"
    );
    after
}
