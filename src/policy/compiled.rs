//! Settings fixed when the binary is built, never by whoever runs it.

/// The ACL file. Override at build time with `BRIDGE_HELPER_CONF=/path`,
/// the counterpart of QEMU's `--sysconfdir`.
pub const ACL_FILE: &str = match option_env!("BRIDGE_HELPER_CONF") {
    Some(path) => path,
    None => "/etc/qemu/bridge.conf",
};

/// This helper's own settings file, which QEMU's helper never reads.
/// Override at build time with `BRIDGE_HELPER_SETTINGS=/path`.
pub const SETTINGS_FILE: &str = match option_env!("BRIDGE_HELPER_SETTINGS") {
    Some(path) => path,
    None => "/etc/qemu/bridge-helper.conf",
};

/// Where the service (`--serve`) listens, and where the forwarder
/// connects: one path to document and to grant in AppArmor and sandboxes.
pub const SOCKET_PATH: &str = "/run/bridge-helper/socket";

/// How many taps this helper made, that a user made persistent and then
/// abandoned, may stay behind per user before the oldest are removed,
/// unless the settings file says otherwise. Override at build time with
/// `BRIDGE_HELPER_MAX_ABANDONED=N`.
pub const MAX_ABANDONED: usize = match option_env!("BRIDGE_HELPER_MAX_ABANDONED") {
    Some(n) => parse_usize(n),
    None => 4,
};

const fn parse_usize(s: &str) -> usize {
    let b = s.as_bytes();
    assert!(
        !b.is_empty(),
        "BRIDGE_HELPER_MAX_ABANDONED must be a number"
    );
    let mut i = 0;
    let mut n = 0usize;
    while i < b.len() {
        assert!(
            b[i].is_ascii_digit(),
            "BRIDGE_HELPER_MAX_ABANDONED must be a number"
        );
        n = n * 10 + (b[i] - b'0') as usize;
        i += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a build with BRIDGE_HELPER_MAX_ABANDONED set runs it (at
    /// compile time), so a default build's tests check it here.
    #[test]
    fn the_build_time_limit_is_read_as_a_decimal_number() {
        assert_eq!(parse_usize("0"), 0);
        assert_eq!(parse_usize("7"), 7);
        assert_eq!(parse_usize("1024"), 1024);
    }
}
