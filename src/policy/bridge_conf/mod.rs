//! The bridge.conf language: one line at a time, and the decision.
//!
//! Line splitting follows qemu-bridge-helper byte for byte, so every file it
//! accepts means the same here; where it would silently misread a line we
//! refuse the line instead (see "Differences from QEMU's helper" in bridge.conf(5)).

pub mod includes;

use crate::policy::accounts::Who;
use crate::policy::ifname;
use crate::report::escape::Bytes;

/// qemu-bridge-helper reads lines with a 4096-byte buffer: anything longer
/// is split, and the tail parsed as a line of its own.
pub const MAX_LINE: usize = 4095;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directive {
    Allow(Target),
    Deny(Target),
    Include(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    All,
    Bridge(Vec<u8>),
}

impl Target {
    fn matches(&self, bridge: &[u8]) -> bool {
        match self {
            Target::All => true,
            Target::Bridge(name) => name == bridge,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error(
        "line is {0} bytes long; qemu-bridge-helper would cut it at {MAX_LINE}, so it is refused"
    )]
    TooLong(usize),
    #[error("line contains a NUL byte")]
    Nul,
    #[error("expected a command and an argument, got {0}")]
    NoArgument(Bytes),
    #[error("unknown command {0} (expected allow, deny or include)")]
    UnknownCommand(Bytes),
    #[error("{0} is not a bridge name: {1}")]
    BadName(Bytes, ifname::Invalid),
    /// `deny br0 # old`: QEMU's helper reads all of it as one name, which
    /// matches no bridge, so the rule would silently do nothing.
    #[error("{0} is not a bridge name: a comment needs a line of its own (starting with #); move it to the line above")]
    TrailingComment(Bytes),
    /// `allow br0 user=vmu`: grants to users and groups are written in
    /// bridge-helper.conf, which QEMU's helper never reads.
    #[error("{0} is not a bridge name: bridge.conf takes only a bridge name (or all); user= and group= qualifiers belong in bridge-helper.conf, see bridge-helper.conf(5)")]
    Qualified(Bytes),
    #[error("include needs a path")]
    EmptyInclude,
    /// In bridge-helper.conf, not bridge.conf.
    #[error("{0}")]
    BadSetting(BadSetting),
}

/// A line of bridge-helper.conf (see [`crate::policy::helper_conf`]) that
/// is not a setting; the words quoted are the line's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadSetting {
    /// What the line's rule is, with nothing of the line in it.
    #[error("{0}")]
    Rule(&'static str),
    /// A word of the line and what is wrong with it.
    #[error("{0}: {1}")]
    Word(Bytes, &'static str),
    #[error("a comment needs a line of its own (starting with #); move {0} to the line above")]
    TrailingComment(Bytes),
    #[error("unknown setting {0}")]
    Unknown(Bytes),
    #[error("{0} is not a number from 0 to {1}")]
    NotALimit(Bytes, usize),
    #[error(
        "a second port line for bridge {bridge} and {who} (the first is line {first}); keep one"
    )]
    SecondPort {
        bridge: Bytes,
        who: Who,
        first: usize,
    },
    #[error("{0} is not user=NAME or group=NAME")]
    NotAQualifier(Bytes),
    #[error("{0} is given twice")]
    Twice(Bytes),
    #[error(
        "unknown port setting {0} (expected isolated, vlan=N, tagged=LIST or learning=on|off)"
    )]
    UnknownPortSetting(Bytes),
    #[error("{0} is an empty range")]
    EmptyRange(Bytes),
    #[error("{0} is not a VLAN id from 1 to 4094")]
    NotAVlan(Bytes),
    #[error("VLAN {0} cannot be both the untagged vlan= and in tagged=")]
    UntaggedAndTagged(u16),
}

/// glib's g_ascii_isspace, which is what QEMU trims with: space, \t, \n,
/// \f and \r. Unlike C's isspace it does not count vertical tab (0x0b):
/// to QEMU "\vallow br0" is an unknown command and "allow \vbr0" names
/// "\vbr0" (here a name we refuse).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0c | b'\r')
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_space(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_space(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// Splits a file into numbered lines (from 1), without their '\n'.
pub fn lines(text: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let empty = text.is_empty();
    body.split(|&b| b == b'\n')
        .enumerate()
        .filter(move |_| !empty)
        .map(|(i, l)| (i + 1, l))
}

/// Parses one line; `Ok(None)` for blank lines and comments.
pub fn parse_line(line: &[u8]) -> Result<Option<Directive>, LineError> {
    if line.len() > MAX_LINE {
        return Err(LineError::TooLong(line.len()));
    }
    if line.contains(&0) {
        return Err(LineError::Nul);
    }
    let start = line
        .iter()
        .position(|&b| !is_space(b))
        .unwrap_or(line.len());
    let rest = &line[start..];
    if rest.is_empty() || rest[0] == b'#' {
        return Ok(None);
    }
    // QEMU splits at the first space anywhere on the line, and only looks
    // for a tab when there is no space at all; "allow\tbr0 " is therefore
    // the unknown command "allow\tbr0" there, and so it is here.
    let split = rest
        .iter()
        .position(|&b| b == b' ')
        .or_else(|| rest.iter().position(|&b| b == b'\t'));
    let Some(split) = split else {
        return Err(LineError::NoArgument(Bytes::from(trim(rest))));
    };
    let (cmd, arg) = (&rest[..split], trim(&rest[split + 1..]));
    match cmd {
        b"include" if arg.is_empty() => Err(LineError::EmptyInclude),
        b"include" => Ok(Some(Directive::Include(arg.to_vec()))),
        b"allow" => target(arg).map(|t| Some(Directive::Allow(t))),
        b"deny" => target(arg).map(|t| Some(Directive::Deny(t))),
        _ => Err(LineError::UnknownCommand(Bytes::from(cmd))),
    }
}

fn target(arg: &[u8]) -> Result<Target, LineError> {
    if arg == b"all" {
        return Ok(Target::All);
    }
    // QEMU keeps any name under 16 bytes, even one that can never match
    // ("deny br0 # old" denies nothing); a rule that cannot mean what it
    // says is refused instead.
    ifname::validate(arg).map_err(|why| {
        // A valid name followed by more words: say what the rest was
        // meant to be.
        let rest = arg
            .iter()
            .position(|&b| b == b' ' || b == b'\t')
            .filter(|&at| ifname::validate(&arg[..at]).is_ok())
            .map(|at| trim(&arg[at..]));
        let arg = Bytes::from(arg);
        match rest {
            Some(rest) if rest.starts_with(b"#") => LineError::TrailingComment(arg),
            Some(rest) if rest.contains(&b'=') => LineError::Qualified(arg),
            _ => LineError::BadName(arg, why),
        }
    })?;
    Ok(Target::Bridge(arg.to_vec()))
}

/// One allow or deny, remembering where it came from for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule<O> {
    pub origin: O,
    pub allow: bool,
    pub target: Target,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a, O> {
    Allowed(&'a O),
    Denied(&'a O),
    NoAllow,
}

/// Any matching deny wins wherever it stands; otherwise one matching allow
/// is needed. Exactly qemu-bridge-helper's rule.
pub fn decide<'a, O>(rules: &'a [Rule<O>], bridge: &[u8]) -> Verdict<'a, O> {
    let mut matching = rules.iter().filter(|r| r.target.matches(bridge));
    let mut allowed = None;
    for rule in &mut matching {
        if !rule.allow {
            return Verdict::Denied(&rule.origin);
        }
        allowed.get_or_insert(&rule.origin);
    }
    allowed.map_or(Verdict::NoAllow, Verdict::Allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &[u8]) -> Result<Option<Directive>, LineError> {
        parse_line(line)
    }
    fn allow(n: &[u8]) -> Result<Option<Directive>, LineError> {
        Ok(Some(Directive::Allow(Target::Bridge(n.to_vec()))))
    }

    #[test]
    fn qemu_grammar() {
        assert_eq!(p(b"allow br0"), allow(b"br0"));
        assert_eq!(
            p(b"deny br0"),
            Ok(Some(Directive::Deny(Target::Bridge(b"br0".to_vec()))))
        );
        assert_eq!(p(b"allow all"), Ok(Some(Directive::Allow(Target::All))));
        assert_eq!(p(b"deny all"), Ok(Some(Directive::Deny(Target::All))));
        assert_eq!(
            p(b"include /etc/qemu/x.conf"),
            Ok(Some(Directive::Include(b"/etc/qemu/x.conf".to_vec())))
        );
        assert_eq!(
            p(b"include /a path/with spaces "),
            Ok(Some(Directive::Include(b"/a path/with spaces".to_vec())))
        );
    }

    #[test]
    fn whitespace_variants() {
        assert_eq!(p(b"allow\tbr0"), allow(b"br0"));
        assert_eq!(p(b"  \t allow   br0  \t"), allow(b"br0"));
        assert_eq!(p(b"allow br0\r"), allow(b"br0"));
        assert_eq!(p(b"allow \x0c\rbr0\x0c"), allow(b"br0"));
        // Vertical tab is not white space to glib, so neither is it here.
        assert!(matches!(
            p(b"allow \x0bbr0"),
            Err(LineError::BadName(_, ifname::Invalid::BadByte(0x0b)))
        ));
        assert!(matches!(
            p(b"allow br0\x0b"),
            Err(LineError::BadName(_, ifname::Invalid::BadByte(0x0b)))
        ));
        assert!(matches!(
            p(b"\x0ballow br0"),
            Err(LineError::UnknownCommand(_))
        ));
        // QEMU finds the space first and so reads the command "allow\tbr0".
        assert_eq!(
            p(b"allow\tbr0 "),
            Err(LineError::UnknownCommand(Bytes(b"allow\tbr0".to_vec())))
        );
    }

    #[test]
    fn comments_and_blanks() {
        for l in [
            &b""[..],
            b"   ",
            b"\r",
            b"#",
            b"# allow all",
            b"  \t# x",
            b"#allow br0",
        ] {
            assert_eq!(p(l), Ok(None), "{l:?}");
        }
    }

    #[test]
    fn qemu_errors_stay_errors() {
        assert!(matches!(p(b"allow"), Err(LineError::NoArgument(_))));
        assert!(matches!(p(b"allowbr0"), Err(LineError::NoArgument(_))));
        assert!(matches!(
            p(b"permit br0"),
            Err(LineError::UnknownCommand(_))
        ));
        assert!(matches!(p(b"ALLOW br0"), Err(LineError::UnknownCommand(_))));
        assert!(matches!(
            p(b"allow 0123456789abcdef"),
            Err(LineError::BadName(_, ifname::Invalid::TooLong(16)))
        ));
    }

    #[test]
    fn fail_closed_deviations() {
        assert!(matches!(
            p(b"deny br0 # old"),
            Err(LineError::TrailingComment(..))
        ));
        assert!(matches!(
            p(b"allow br0 user=vmu"),
            Err(LineError::Qualified(..))
        ));
        assert!(matches!(p(b"allow br0 br1"), Err(LineError::BadName(..))));
        assert!(matches!(p(b"allow a/b"), Err(LineError::BadName(..))));
        assert!(matches!(p(b"allow .."), Err(LineError::BadName(..))));
        assert!(matches!(
            p(b"allow "),
            Err(LineError::NoArgument(_)) | Err(LineError::BadName(..))
        ));
        assert_eq!(p(b"include  "), Err(LineError::EmptyInclude));
        assert_eq!(p(b"allow br0\0evil"), Err(LineError::Nul));
        let long = [b"#".repeat(4095), b"allow all".to_vec()].concat();
        assert_eq!(p(&long), Err(LineError::TooLong(4104)));
        assert_eq!(p(&b"#".repeat(4095)), Ok(None));
    }

    #[test]
    fn line_numbers() {
        let v: Vec<_> = lines(b"a\n\nb").collect();
        assert_eq!(v, vec![(1, &b"a"[..]), (2, &b""[..]), (3, &b"b"[..])]);
        assert_eq!(lines(b"a\n").count(), 1);
        assert_eq!(lines(b"").count(), 0);
        assert_eq!(lines(b"\n").collect::<Vec<_>>(), vec![(1, &b""[..])]);
    }

    fn rule(allow: bool, t: Target, o: u32) -> Rule<u32> {
        Rule {
            origin: o,
            allow,
            target: t,
        }
    }
    fn br(n: &str) -> Target {
        Target::Bridge(n.as_bytes().to_vec())
    }

    #[test]
    fn deny_wins_regardless_of_order() {
        let rules = [rule(true, br("br0"), 1), rule(false, br("br0"), 2)];
        assert_eq!(decide(&rules, b"br0"), Verdict::Denied(&2));
        let rules = [rule(false, Target::All, 1), rule(true, br("br0"), 2)];
        assert_eq!(decide(&rules, b"br0"), Verdict::Denied(&1));
        let rules = [rule(true, Target::All, 1), rule(false, br("br1"), 2)];
        assert_eq!(decide(&rules, b"br0"), Verdict::Allowed(&1));
        assert_eq!(decide(&rules, b"br1"), Verdict::Denied(&2));
        assert_eq!(decide::<u32>(&[], b"br0"), Verdict::NoAllow);
        assert_eq!(
            decide(&[rule(true, br("br1"), 1)], b"br0"),
            Verdict::NoAllow
        );
    }
}
