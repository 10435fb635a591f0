//! The audit trail: one syslog line per request (facility authpriv), like
//! sudo's. Best effort by design: the line is sent without waiting, and
//! nothing about the outcome depends on it (see SECURITY.md).
//!
//! Every field a user influences (their name, the parent's comm, the
//! bridge, the refusal's text) is escaped, so no line can be forged inside
//! another or carry terminal controls into a log viewer.

use nix::unistd::Uid;

use crate::policy::bridge_conf::includes::Origin;
use crate::report::error::Error;
use crate::report::escape::{Escaped, Quoted};
use crate::system::process::{self, Parent};
use crate::system::syslog;

/// What the run has learnt so far, logged once.
#[derive(Debug, Default)]
pub struct Record {
    asker: Asker,
    uid: Option<Uid>,
    /// The caller's name as the run already read it from /etc/passwd (see
    /// `Policy::caller_name`; `Some(None)`: no line for the uid), so that
    /// one run reads the file once. `None`: read when the line is logged.
    name: Option<Option<Vec<u8>>>,
    bridge: Option<Vec<u8>>,
    /// `--check`, `--help`, `--version`: not requests for a tap.
    quiet: bool,
    done: bool,
    /// The tap logged as granted, until it is sent.
    granted: Option<Vec<u8>>,
}

/// The longest refusal text logged: a datagram larger than the socket takes
/// would not be logged at all (EMSGSIZE), and only usage errors carry
/// long user input.
const MAX_OUTCOME: usize = 1024;

/// Who asked, for the line's `ppid` and `comm`: the process that ran the
/// helper, as a setuid run names it.
#[derive(Debug, Default)]
enum Asker {
    /// A run of this binary: its parent, read when the line is logged.
    #[default]
    OurParent,
    /// A request to the service: the parent of the process that connected
    /// (for the forwarder, the VMM that ran it), as the session read it
    /// through pidfds; `None` if it could not be read without a pid that
    /// may have been recycled.
    PeerParent(Option<Parent>),
}

impl Record {
    /// The record of a request the service runs for a peer whose parent
    /// is `parent` (see [`crate::system::peer::peer_parent`]).
    pub fn for_peer(parent: Option<Parent>) -> Record {
        Record {
            asker: Asker::PeerParent(parent),
            ..Record::default()
        }
    }

    pub fn caller(&mut self, uid: Uid) {
        self.uid = Some(uid);
    }

    /// The caller's name, if the run has read /etc/passwd already (see
    /// `Policy::caller_name`): the line does not read it again.
    pub fn caller_name(&mut self, name: Option<Option<&[u8]>>) {
        self.name = name.map(|n| n.map(<[u8]>::to_vec));
    }

    pub fn bridge(&mut self, bridge: &[u8]) {
        self.bridge = Some(bridge.to_vec());
    }

    /// Nothing of this run is logged.
    pub fn quiet(&mut self) {
        self.quiet = true;
    }

    /// The tap is ready and about to be sent: logged now, while this
    /// process is still ours to finish.
    pub fn granted(&mut self, tap: &[u8], rule: &Origin) {
        self.log(
            libc::LOG_INFO,
            &format!("tap={} granted by {rule}", Quoted(tap)),
        );
        self.granted = Some(tap.to_vec());
    }

    /// The run failed with `e`. After a grant was logged (sending the fd
    /// failed), a second line says the tap never reached the caller.
    pub fn failed(&mut self, e: &Error) {
        let what = match e {
            Error::Internal | Error::Panicked => "internal error".to_string(),
            e => capped(&one_line(&e.to_string())),
        };
        let outcome = match self.granted.take() {
            Some(tap) => {
                self.done = false;
                format!(
                    "tap={} not delivered (status {}): {what}",
                    Quoted(&tap),
                    e.status()
                )
            }
            None => format!("refused (status {}): {what}", e.status()),
        };
        self.log(libc::LOG_NOTICE, &outcome);
    }

    fn log(&mut self, severity: libc::c_int, outcome: &str) {
        if self.quiet || self.done {
            return;
        }
        self.done = true;
        let ours;
        let parent = match &self.asker {
            Asker::OurParent => {
                ours = process::parent();
                Some(&ours)
            }
            Asker::PeerParent(parent) => parent.as_ref(),
        };
        let user = match &self.name {
            Some(known) => known.clone(),
            None => self.uid.and_then(crate::system::users::name_of_uid),
        };
        let line = line(
            self.uid,
            user.as_deref(),
            parent,
            self.bridge.as_deref(),
            outcome,
        );
        syslog::send(&datagram(severity, std::process::id(), &line));
    }
}

/// The line for a request the service refused before any run (a run
/// logs its own): `parent` as in [`Record::for_peer`].
pub fn service_refused(uid: Uid, parent: Option<&Parent>, bridge: Option<&[u8]>, e: &Error) {
    refused(uid, parent, bridge, e, "");
}

/// A connection the service turned away as busy, by the loop (no
/// parent, no bridge: it reads nothing the client sends), with how many
/// of the same user's were turned away unlogged since its last such line.
pub fn service_busy(uid: Uid, e: &Error, unlogged: u32) {
    let more = match unlogged {
        0 => String::new(),
        n => format!(" ({n} more of this user's since the last such line)"),
    };
    refused(uid, None, None, e, &more);
}

fn refused(uid: Uid, parent: Option<&Parent>, bridge: Option<&[u8]>, e: &Error, more: &str) {
    let user = crate::system::users::name_of_uid(uid);
    let outcome = format!(
        "refused by the service (status {}): {}{more}",
        e.status(),
        capped(&one_line(&e.to_string()))
    );
    let line = line(Some(uid), user.as_deref(), parent, bridge, &outcome);
    syslog::send(&datagram(libc::LOG_NOTICE, std::process::id(), &line));
}

/// The message, without syslog's header.
pub fn line(
    uid: Option<Uid>,
    user: Option<&[u8]>,
    parent: Option<&Parent>,
    bridge: Option<&[u8]>,
    outcome: &str,
) -> String {
    let uid = uid.map_or("?".to_string(), |u| u.to_string());
    let shown = |b: Option<&[u8]>| b.map_or("?".to_string(), |b| Quoted(b).to_string());
    let comm = parent.and_then(|p| p.comm.as_deref());
    let (user, comm, bridge) = (shown(user), shown(comm), shown(bridge));
    let ppid = parent.map_or("?".to_string(), |p| p.pid.to_string());
    format!("uid={uid} user={user} ppid={ppid} comm={comm} bridge={bridge} {outcome}")
}

/// `<PRI>bridge-helper[PID]: LINE` in facility authpriv (as sudo and su
/// log), with no timestamp: the receiver (journald, rsyslog) stamps it on
/// arrival, and a static binary has no time zone database to write
/// syslog's local-time stamp with.
pub fn datagram(severity: libc::c_int, pid: u32, line: &str) -> Vec<u8> {
    format!(
        "<{}>bridge-helper[{pid}]: {line}",
        libc::LOG_AUTHPRIV | severity
    )
    .into_bytes()
}

/// At most [`MAX_OUTCOME`] characters, saying how many were cut.
fn capped(text: &str) -> String {
    match text.char_indices().nth(MAX_OUTCOME) {
        Some((cut, _)) => format!("{}...({} bytes)", &text[..cut], text.len()),
        None => text.to_string(),
    }
}

/// Error lines quote user bytes already; this only guarantees one line
/// whatever a future message does.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                Escaped(c.to_string().as_bytes()).to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_escapes_every_user_field() {
        let l = line(
            Some(Uid::from_raw(1000)),
            Some(b"al\nice"),
            Some(&Parent {
                pid: 42,
                comm: Some(b"qemu\x1b[2J".to_vec()),
            }),
            Some(b"br\xff"),
            &one_line("refused (status 4): x\ny"),
        );
        assert_eq!(
            l,
            "uid=1000 user='al\\nice' ppid=42 comm='qemu\\x1b[2J' bridge='br\\xff' refused (status 4): x\\ny"
        );
        assert_eq!(
            datagram(libc::LOG_INFO, 7, "m"),
            b"<86>bridge-helper[7]: m".to_vec()
        );
        assert_eq!(
            line(None, None, None, None, "z"),
            "uid=? user=? ppid=? comm=? bridge=? z"
        );
    }

    #[test]
    fn long_refusals_are_cut_and_say_so() {
        assert_eq!(capped("short"), "short");
        let long = "x".repeat(MAX_OUTCOME + 10);
        let cut = capped(&long);
        assert!(cut.starts_with(&"x".repeat(MAX_OUTCOME)));
        assert!(cut.ends_with(&format!("...({} bytes)", MAX_OUTCOME + 10)));
    }
}
