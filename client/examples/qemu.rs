//! Gets a tap from bridge-helper and runs a VMM with its queues inherited:
//! here QEMU, with `-netdev tap,fds=A:B:C:D` and a multiqueue virtio-net.
//!
//! ```text
//! cargo run -p bridge-helper-client --example qemu -- \
//!     [--helper PATH] [--queues N] BRIDGE -- qemu-system-x86_64 [ARGS...]
//! ```
//!
//! QEMU's own `helper=` cannot do this: it refuses `queues=` with a
//! helper. Any VMM that takes tap descriptors works the same way.

use std::process::{Command, ExitCode};

use bridge_helper_client::Helper;

const DEFAULT_HELPER: &str = "/usr/libexec/bridge-helper/bridge-helper";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut helper = DEFAULT_HELPER.to_string();
    let mut queues: u16 = 1;
    let mut bridge = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--helper" => helper = args.next().unwrap_or_default(),
            "--queues" => queues = args.next().and_then(|n| n.parse().ok()).unwrap_or(0),
            "--" => break,
            _ if bridge.is_none() => bridge = Some(arg),
            _ => return usage(),
        }
    }
    let vmm: Vec<String> = args.collect();
    let (Some(bridge), Some(program)) = (bridge, vmm.first()) else {
        return usage();
    };
    let tap = match Helper::new(&helper)
        .bridge(&bridge)
        .vnet_hdr(true)
        .queues(queues)
        .run()
    {
        Ok(tap) => tap,
        Err(e) => {
            eprintln!("qemu example: no tap on {bridge}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut cmd = Command::new(program);
    cmd.args(&vmm[1..]);
    let fds = tap.pass_to(&mut cmd);
    let fds: Vec<String> = fds.iter().map(ToString::to_string).collect();
    // vhost=off: vhost-net descriptors are QEMU's to open (see the README).
    cmd.arg("-netdev")
        .arg(format!("tap,id=bhnet0,vhost=off,fds={}", fds.join(":")));
    let mut device = "virtio-net-pci,netdev=bhnet0".to_string();
    if queues > 1 {
        // One MSI-X vector per queue in each direction, plus config and control.
        device += &format!(",mq=on,vectors={}", 2 * u32::from(queues) + 2);
    }
    cmd.arg("-device").arg(device);
    eprintln!("qemu example: {} with {} queue(s)", tap.name(), fds.len());
    let status = match cmd.status() {
        Ok(status) => status,
        Err(e) => {
            eprintln!("qemu example: cannot run {program}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The tap goes away with the last descriptor: ours, and QEMU's.
    drop(tap);
    if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: qemu [--helper PATH] [--queues N] BRIDGE -- VMM [ARGS...]");
    ExitCode::from(2)
}
