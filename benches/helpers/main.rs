//! Side-by-side benchmark: `bridge-helper` against QEMU's `qemu-bridge-helper`.
//!
//! Run as root from the repository root (one command; figures side by side):
//!
//! ```text
//! cargo bench --bench helpers
//! cargo bench --bench helpers -- --n 200 --k 64 --rounds 3 --taps 0,100,1000
//! ```
//!
//! The tables go to stdout and to `target/bench/RESULTS.md`; `--update-results`
//! writes `bench/RESULTS.md` instead (the figures the repository keeps).
//! `bench/LEVERS.md` says what was measured and decided.
//!
//! What it does:
//! - creates its own network namespace `bhbench-<pid>` with bridge `bhbr0` (deleted at the end,
//!   also on error or panic); the machine's own interfaces are never touched;
//! - prepares one private mount namespace (kept alive by an fd) in which `/etc` is an overlayfs
//!   whose upper layer holds `qemu/bridge.conf` = `allow bhbr0`, and `/dev/net/tun` is a 0666
//!   node bind-mounted over the host's (0600 here); the real `/etc` is never written;
//! - copies each program into a 0755 temp dir as a setuid-root copy, a `cap_net_admin+ep` copy
//!   and a plain copy; each run forks, joins the mount and network namespaces, drops to uid/gid
//!   65534 (setuid and cap modes) and execs `HELPER --use-vnet --fd=N --br=bhbr0`;
//! - times spawn -> fd received (recvmsg) and spawn -> exit (wait4), checks each fd with
//!   TUNGETIFF, closes it, and checks that the taps vanished;
//! - runs a no-checks floor beside them (`benches/floor.c`, built with musl-gcc: the kernel's
//!   work and nothing else) and prints every ratio against it as well as against QEMU's helper;
//! - with `--queues Q` (default 4), runs bridge-helper and the floor with Q queues and with one,
//!   interleaved, on the empty bridge: the floor's Q / 1 is the kernel's price for a multiqueue
//!   tap, which no helper can go under;
//! - the service rows (`service`; `--no-service` skips them, `--service-only` runs only them):
//!   `bridge-helper --serve` socket-activated in a mount namespace of its own, the forwarder and
//!   the client crate's direct request interleaved with our setuid mode and QEMU's helper, K of
//!   each at once, and `--cold C` cold starts (first request to a service not running) apart;
//!   beside them the forwarded floor (`floor --serve` / `--forward`: the same architecture with
//!   the floor's work and no checks, a fork per connection or pre-forked spares), reported as
//!   information against the service's targets.
//!
//! The reference is QEMU's helper where `dpkg-divert --truename` says it is
//! (bridge-helper's package diverts it), checked to really be QEMU's
//! (`tests/common/sys.rs`, shared with the tests). The code: `setup` (the
//! namespaces, install modes and programs), `drivers` (spawning, the
//! sequential and concurrent phases), `resources` (the strace / time
//! runs), `stats` and `report` (the tables), `service` and
//! `service_report` (the service rows and their tables).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod drivers;
mod report;
mod resources;
mod service;
mod service_report;
mod setup;
mod stats;
#[path = "../../tests/common/sys.rs"]
mod sys;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use drivers::{
    concurrent, multiqueue, sanity, sequential, ConcRound, Ns, QueueResults, Rng, SeqResults,
};
use resources::{resources, Resource};
use service::Serve;
use setup::{
    add_taps, build_floor, check_interrupted, chown_root, cstr, install, install_signal_handlers,
    ip, last_err, link_count, make_mount_ns, open_ro, remove_stale, set_mode, tiny_elf, DirGuard,
    Mode, NetnsGuard, Prog, Role,
};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const BRIDGE: &str = "bhbr0";
/// A Linux bridge takes at most 1023 ports (BR_MAX_PORTS 1024, port 0 reserved).
const BRIDGE_MAX_PORTS: usize = 1023;

// ---------------------------------------------------------------------------------------------
// Options

struct Opts {
    n: usize,
    k: usize,
    warmup: usize,
    rounds: usize,
    taps: Vec<usize>,
    /// `--queues=Q` runs of bridge-helper and of the floor against one
    /// queue; 0 or 1: none.
    queues: u16,
    helper: PathBuf,
    reference: PathBuf,
    out: Option<PathBuf>,
    /// Port settings for every run (bridge-helper.conf `port bhbr0 ...`).
    port: Option<String>,
    /// Run the service rows (not with `--no-service`).
    service: bool,
    /// Run nothing but the service rows (`--service-only`).
    service_only: bool,
    /// Cold starts of each service client at each tap count.
    cold: usize,
}

const USAGE: &str = "usage: cargo bench --bench helpers -- [--n N] [--k K] [--warmup W] \
[--rounds R] [--taps 0,100,1000] [--queues Q] [--helper PATH] [--reference PATH] \
[--out FILE | --update-results | --no-save] [--port 'isolated learning=off'] \
[--no-service | --service-only] [--cold C]";

/// Where the tables go unless `--out`, `--update-results` or `--no-save` says otherwise.
const DEFAULT_OUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench/RESULTS.md");
/// The results the repository keeps.
const KEPT_RESULTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/RESULTS.md");
/// Our binary, as `cargo bench` builds it.
const OURS: Option<&str> = option_env!("CARGO_BIN_EXE_bridge-helper");

fn parse_opts() -> Res<Opts> {
    let mut o = Opts {
        n: 200,
        k: 64,
        warmup: 10,
        rounds: 3,
        taps: vec![0, 100, 1000],
        queues: 4,
        helper: PathBuf::from(OURS.unwrap_or("target/release/bridge-helper")),
        reference: PathBuf::from(sys::QEMU_HELPER),
        out: Some(PathBuf::from(DEFAULT_OUT)),
        port: None,
        service: true,
        service_only: false,
        cold: 10,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--bench" => {} // passed by `cargo bench`; required (see real_main)
            "--n" => o.n = val("--n")?.parse()?,
            "--k" => o.k = val("--k")?.parse()?,
            "--warmup" => o.warmup = val("--warmup")?.parse()?,
            "--rounds" => o.rounds = val("--rounds")?.parse()?,
            "--taps" => {
                o.taps = val("--taps")?
                    .split(',')
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()?;
                o.taps.sort_unstable();
                o.taps.dedup();
            }
            "--queues" => o.queues = val("--queues")?.parse()?,
            "--helper" => o.helper = PathBuf::from(val("--helper")?),
            "--reference" => o.reference = PathBuf::from(val("--reference")?),
            "--out" => o.out = Some(PathBuf::from(val("--out")?)),
            "--update-results" => o.out = Some(PathBuf::from(KEPT_RESULTS)),
            "--no-save" => o.out = None,
            "--port" => o.port = Some(val("--port")?),
            "--no-service" => o.service = false,
            "--service-only" => o.service_only = true,
            "--cold" => o.cold = val("--cold")?.parse()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    if o.n == 0 || o.k == 0 || o.rounds == 0 {
        return Err("--n, --k and --rounds must be > 0".into());
    }
    if o.service_only && !o.service {
        return Err("--service-only and --no-service: nothing to run".into());
    }
    if o.queues > 253 {
        return Err("--queues: at most 253 (SCM_MAX_FD: one message carries every queue)".into());
    }
    Ok(o)
}
fn main() {
    let code = match real_main() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bench failed: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn real_main() -> Res<()> {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("helpers bench: run it with `cargo bench --bench helpers` (as root); nothing to do here");
        return Ok(());
    }
    let o = parse_opts()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "the benchmark must run as root (it creates a network namespace and setuid copies)"
                .into(),
        );
    }
    install_signal_handlers();
    let started = Instant::now();
    let load_at_start = fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string();
    let tmp = std::env::temp_dir();
    remove_stale(&tmp);
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let name = format!("bhbench-{pid}");

    // temp dir (0755, root) with copies, overlay layers and the 0666 tun node
    let dir = tmp.join(&name);
    fs::create_dir(&dir)?;
    let _dir_guard = DirGuard(dir.clone());
    for sub in ["bin", "etc-upper", "etc-upper/qemu", "etc-work"] {
        fs::create_dir(dir.join(sub))?;
    }
    for sub in ["", "bin", "etc-upper", "etc-upper/qemu"] {
        set_mode(&dir.join(sub), 0o755)?;
    }
    let conf = dir.join("etc-upper/qemu/bridge.conf");
    fs::write(&conf, format!("allow {BRIDGE}\n"))?;
    chown_root(&conf)?;
    set_mode(&conf, 0o644)?;
    if let Some(port) = &o.port {
        // Read by ours only: QEMU's helper never opens it.
        let settings = dir.join("etc-upper/qemu/bridge-helper.conf");
        fs::write(&settings, format!("port {BRIDGE} {port}\n"))?;
        chown_root(&settings)?;
        set_mode(&settings, 0o644)?;
        println!("port settings for every run of ours: {port}");
    }
    {
        let d = cstr(dir.as_os_str().as_bytes())?;
        // SAFETY: statvfs is plain old data and `d` a valid path.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid path and out-pointer.
        if unsafe { libc::statvfs(d.as_ptr(), &mut st) } != 0 {
            return Err(last_err("statvfs"));
        }
        if st.f_flag & libc::ST_NOSUID != 0 {
            return Err(format!(
                "{} is on a nosuid mount: set TMPDIR elsewhere",
                tmp.display()
            )
            .into());
        }
        sys::make_tun_node(&dir.join("tun"), 0o666).map_err(|e| format!("mknod tun: {e}"))?;
    }

    // programs
    let mut notes = Vec::new();
    let mut progs = Vec::new();
    // Ours or nothing: measuring another program in its column would
    // print a table that reads as ours.
    if !o.helper.exists() {
        return Err(format!(
            "bridge-helper not found at {}: build it with `cargo build --release --locked`, \
             or pass --helper PATH",
            o.helper.display()
        )
        .into());
    }
    // QEMU's helper is where a dpkg diversion put it, and must really be QEMU's.
    let is_qemu = o.reference == Path::new(sys::QEMU_HELPER);
    let reference = if is_qemu {
        sys::qemu_helper_truename()?
    } else {
        o.reference.clone()
    };
    let ref_present = reference.exists();
    if is_qemu && ref_present {
        sys::check_qemu_helper(&reference, &o.helper)
            .map_err(|why| format!("the reference is not QEMU's qemu-bridge-helper: {why}"))?;
    }
    progs.push(install(&dir, Role::Ours, "bridge-helper", &o.helper, None)?);
    if ref_present {
        let ref_label = if is_qemu {
            "qemu-bridge-helper".to_string()
        } else {
            format!("reference {}", reference.display())
        };
        progs.push(install(
            &dir,
            Role::Reference,
            &ref_label,
            &reference,
            None,
        )?);
    } else {
        notes.push(format!(
            "**reference helper {} absent: no ratios**",
            reference.display()
        ));
    }
    let floor = build_floor(&dir)?;
    progs.push(install(
        &dir,
        Role::FloorWork,
        "floor: the kernel's work only (benches/floor.c, static musl)",
        &floor,
        None,
    )?);
    if cfg!(target_arch = "x86_64") {
        progs.push(install(
            &dir,
            Role::FloorStatic,
            "floor: 129-byte static ELF, exit(0)",
            Path::new("(generated)"),
            Some(tiny_elf()),
        )?);
    }
    progs.push(install(
        &dir,
        Role::FloorDyn,
        "floor: /bin/true (dynamic glibc)",
        Path::new("/bin/true"),
        None,
    )?);

    // network namespace with a bridge
    let status = Command::new("ip").args(["netns", "add", &name]).status()?;
    if !status.success() {
        return Err(format!("ip netns add {name} failed").into());
    }
    let _ns_guard = NetnsGuard(name.clone());
    ip(&name, &["link", "add", BRIDGE, "type", "bridge"])?;
    ip(&name, &["link", "set", BRIDGE, "up"])?;
    let ns = Ns {
        mnt: make_mount_ns(&dir)?,
        net: open_ro(&format!("/run/netns/{name}"))?,
        devnull: open_ro("/dev/null")?,
    };

    eprintln!(
        "bench: netns {name}, N={} K={} rounds={} warmup={} taps={:?}",
        o.n, o.k, o.rounds, o.warmup, o.taps
    );
    let mut sanity_rows = Vec::new();
    for p in progs.iter().filter(|p| p.role.is_helper()) {
        for mode in Mode::ALL {
            sanity_rows.push((p.label.clone(), mode, sanity(&ns, p, mode, &name)?));
        }
    }

    // Before any tap is added: bridge-helper and the no-checks floor (QEMU's
    // helper has no --queues), one queue and Q queues interleaved.
    let mut queues = QueueResults::new();
    if o.queues > 1 && !o.service_only {
        let ours = progs.iter().find(|p| p.role == Role::Ours);
        let floor = progs.iter().find(|p| p.role == Role::FloorWork);
        if let (Some(ours), Some(floor)) = (ours, floor) {
            eprintln!("bench: --queues={} against one queue", o.queues);
            queues = multiqueue(&ns, &[ours, floor], o.n, o.warmup, o.queues, &name)?;
        }
    }

    let mut seq: Vec<(usize, SeqResults)> = Vec::new();
    let mut conc: Vec<(usize, usize, Role, Mode, Vec<ConcRound>)> = Vec::new();
    let mut res: BTreeMap<(usize, Role, Mode), Resource> = BTreeMap::new();
    let clients = if o.service {
        Some(service_clients(&o, &dir, &ns, &progs)?)
    } else {
        None
    };
    let mut service_levels = Vec::new();
    let mut have = 0;
    for &level in &o.taps {
        check_interrupted()?;
        add_taps(&name, &dir, have, level)?;
        have = have.max(level);
        let k = o.k.min(BRIDGE_MAX_PORTS.saturating_sub(level));
        if k < o.k {
            notes.push(format!(
                "At {level} taps the concurrent runs use K={k}, not {}: a bridge takes at most {BRIDGE_MAX_PORTS} ports.",
                o.k
            ));
        }
        if let Some(clients) = &clients {
            eprintln!("bench: {level} taps on the bridge: the service rows");
            let plan = service::Plan {
                taps: level,
                n: o.n,
                warmup: o.warmup,
                rounds: o.rounds,
                k,
                cold: o.cold,
                net: &name,
            };
            service_levels.push(service::measure(clients, &plan)?);
        }
        if o.service_only {
            continue;
        }
        let t = Instant::now();
        eprintln!("bench: {level} taps on the bridge: sequential runs");
        seq.push((level, sequential(&ns, &progs, o.n, o.warmup, &name)?));
        eprintln!(
            "bench:   done in {:.1} s; concurrent runs",
            t.elapsed().as_secs_f64()
        );
        let before = link_count(&name)?;
        let helpers: Vec<&Prog> = progs.iter().filter(|p| p.role.is_helper()).collect();
        let mut rounds: BTreeMap<(Role, Mode), Vec<ConcRound>> = BTreeMap::new();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut order: Vec<(usize, Mode)> = (0..helpers.len())
            .flat_map(|p| Mode::ALL.map(|m| (p, m)))
            .collect();
        for _ in 0..o.rounds {
            rng.shuffle(&mut order);
            for &(pi, mode) in &order {
                {
                    check_interrupted()?;
                    let p = helpers[pi];
                    rounds
                        .entry((p.role, mode))
                        .or_default()
                        .push(concurrent(&ns, p, mode, k)?);
                    let after = link_count(&name)?;
                    if after != before {
                        return Err(format!(
                            "{} taps left behind after a concurrent round",
                            after - before
                        )
                        .into());
                    }
                }
            }
        }
        for ((role, mode), v) in rounds {
            conc.push((level, k, role, mode, v));
        }
        eprintln!("bench:   strace / time runs");
        for p in &progs {
            for mode in Mode::ALL {
                if p.role != Role::FloorDyn {
                    res.insert((level, p.role, mode), resources(&ns, p, mode, &dir)?);
                }
            }
        }
    }

    let mut out = if o.service_only {
        format!(
            "# bridge-helper benchmark: the service rows\n\nCommand (as root, from the repository root): \
             `cargo bench --bench helpers{}`\n\n## Machine\n\n{}\n{}",
            report::arguments(),
            report::machine(&load_at_start),
            notes.join("\n\n")
        )
    } else {
        report::render(
            &o,
            &progs,
            &report::Results {
                started,
                load_at_start,
                notes,
                sanity_rows,
                seq,
                conc,
                res,
                queues,
            },
        )?
    };
    if o.service {
        out.push_str(&service_report::render(
            &service_levels,
            o.n,
            o.rounds,
            o.cold,
        ));
    }
    println!("{out}");
    if let Some(path) = &o.out {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(path, &out)?;
        eprintln!("bench: results saved to {}", path.display());
    }
    drop(ns);
    Ok(())
}

/// What the service rows run: our setuid copy, QEMU's, and a plain copy
/// of ours (the forwarder, and the service's own binary).
fn service_clients<'a>(
    o: &Opts,
    dir: &Path,
    ns: &'a Ns,
    progs: &'a [Prog],
) -> Res<service::Clients<'a>> {
    for tool in ["/usr/bin/systemd-socket-activate", "/usr/bin/setpriv"] {
        if !Path::new(tool).exists() {
            return Err(format!(
                "{tool} is missing: the service rows need it (scripts/install-test-deps), \
                 or pass --no-service"
            )
            .into());
        }
    }
    let log = dir.join("service.stderr");
    let log_fd = fs::File::options().create(true).append(true).open(&log)?;
    // The forwarded floor: the floor's servers on sockets in the bench's
    // directory, its forwarder a plain copy as ours is.
    let floor = match progs.iter().find(|p| p.role == Role::FloorWork) {
        Some(floor) => {
            let sockets = Serve::ALL.map(|s| dir.join(format!("floor-{}.sock", s.arg())));
            let fwd = [
                service::floor_forwarder(dir, &floor.source, Serve::Fork, &sockets[0])?,
                service::floor_forwarder(dir, &floor.source, Serve::Spares, &sockets[1])?,
            ];
            Some(service::Floors {
                floor,
                fwd,
                sockets,
            })
        }
        None => None,
    };
    Ok(service::Clients {
        ns,
        ours: progs
            .iter()
            .find(|p| p.role == Role::Ours)
            .ok_or("no bridge-helper")?,
        qemu: progs.iter().find(|p| p.role == Role::Reference),
        fwd: service::forwarder(dir, &o.helper)?,
        log,
        log_fd: log_fd.into(),
        floor,
    })
}
