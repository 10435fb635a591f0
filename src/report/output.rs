//! Everything the program prints, and the panic hook.

use std::io::Write;

/// Prints `bridge-helper: <line>` on stderr in one write. A failed write
/// (stderr closed, full, over RLIMIT_FSIZE) is ignored: nothing about the
/// outcome depends on being heard.
pub fn notice(line: &str) {
    let _ = std::io::stderr().write_all(format!("bridge-helper: {line}\n").as_bytes());
}

/// For --help and --version: stdout, and success whether or not anyone
/// reads it.
pub fn print(text: &str) {
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// The version, then the paths compiled in (policy::compiled), which
/// differ by distribution: what an administrator
/// needs to know where to write, and what to expose to a sandbox.
pub fn version() -> String {
    format!(
        "bridge-helper {}\nACL file: {}\nsettings file: {}\nservice socket: {}\n",
        env!("CARGO_PKG_VERSION"),
        crate::policy::compiled::ACL_FILE,
        crate::policy::compiled::SETTINGS_FILE,
        crate::policy::compiled::SOCKET_PATH
    )
}

/// One fixed line for any panic: no message, location, backtrace or
/// address (the default hook prints some and reads RUST_BACKTRACE).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|_| {
        let _ = std::io::stderr()
            .write_all(b"bridge-helper: internal error, this is a bug; no tap was handed out\n");
    }));
}

pub const HELP: &str = "\
bridge-helper: attach a VM's tap device to a host bridge

usage: bridge-helper [--use-vnet] [--queues=N] --br=BRIDGE --fd=FD
       bridge-helper --check [--br=BRIDGE] [--user=USER]
       bridge-helper --remove-abandoned --user=USER
       bridge-helper --serve

Creates a tap, makes it a port of BRIDGE with the bridge's MTU, brings it up
and sends its file descriptor over the connected Unix socket FD. Only bridges
that the ACL file (bridge.conf(5)) allows for the calling user can be joined;
bridge-helper.conf(5) can grant bridges to users and groups and set their
ports (isolated, VLANs). --version prints both files' and the socket's paths.

  --br=BRIDGE   the bridge to join (at most 15 bytes)
  --fd=FD       an inherited, connected Unix socket to send the tap over
  --use-vnet    enable virtio-net headers (IFF_VNET_HDR) when the kernel can
  --queues=N    a multiqueue tap: N fds (1 to 253) in one message; needs
                /dev/net/tun usable by the caller when N > 1
  --check       report what a run would decide for you (every bridge, or
                BRIDGE), one fact a line; creates, changes and sends nothing
  --user=USER   root only: --check, or --remove-abandoned, for USER (a
                name, or a uid, in /etc/passwd or not)
  --remove-abandoned  root only: remove USER's abandoned persistent taps
  --help        this text;  --version  the version and compiled-in paths
  --serve       root only: the service on /run/bridge-helper/socket; a copy
                with no privilege asks it instead (see bridge-helper(8))

Exit status: 0 only when the tap was sent; 2 usage, 3 ACL or settings file
error, 4 access denied, 5 installation or environment, 6 bad --fd or sending
failed, 7 bridge missing or not a bridge, 8 kernel refused an operation, 70 bug.
--check exits with the status a run would. Each request is logged to syslog
(authpriv). See bridge-helper(8).
";
