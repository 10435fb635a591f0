//! The service's wire format, version 1: pure encoding and decoding, no
//! system calls, so that it can be read, unit-tested and fuzzed alone.
//!
//! A request is one frame the client writes, then nothing more:
//!
//! ```text
//! "BHRQ" version=1 command flags queues(u16 BE) len name[len]
//! ```
//!
//! `command` is [`ATTACH`] (the only one in version 1), `flags` bit 0 is
//! `--use-vnet` (no other bit may be set), `queues` is 1..=[`MAX_QUEUES`],
//! `name` is the bridge as QEMU writes it after `--br=`: 1..=15 bytes, no
//! NUL. That is all a request can say: who asks is the kernel's word
//! (`SO_PEERCRED`, `SO_PEERGROUPS`), never the client's. The name's other
//! rules are the command line's: a decoded request becomes the command
//! line's own typed request ([`Request::attach`]) through the same checks
//! a setuid run's parser makes of `--br=NAME`, and the queue count is
//! checked by the command line's range.
//!
//! The answer is what a setuid run leaves its caller: if the run sent a
//! tap, its message (one zero byte carrying the queues' fds, exactly what
//! the run sends on `--fd`), then always one frame
//!
//! ```text
//! "BHAN" version=1 status len(u16 BE) line[len]
//! ```
//!
//! with the exit status and what the run printed on stderr (the one line,
//! `bridge-helper: ...\n`, or nothing), at most [`MAX_LINE`] bytes. Then
//! the service closes the connection.
//!
//! A run sends its tap only once it has succeeded, as its last act, so the
//! tap's message is the outcome the moment it arrives: the answer after it
//! always says status 0. A client need not wait for the answer before
//! using the tap: the forwarder relays the tap to `--fd` at once and reads
//! the answer after it for the line and status it repeats; the client
//! crate returns the tap without reading the answer. The forwarder stops
//! at the end the answer frame's length gives, not at the close (which
//! comes only as the session ends).

use crate::cli::{self, MAX_QUEUES};
use crate::policy::ifname;

pub const VERSION: u8 = 1;
pub const ATTACH: u8 = 1;
const REQUEST_MAGIC: &[u8; 4] = b"BHRQ";
const ANSWER_MAGIC: &[u8; 4] = b"BHAN";
const FLAG_VNET: u8 = 1;
/// IFNAMSIZ less its NUL: the longest name the kernel has.
const MAX_NAME: usize = ifname::MAX_LEN;
const REQUEST_HEAD: usize = 10;
/// No request is longer: the service reads at most this many bytes.
pub const MAX_REQUEST: usize = REQUEST_HEAD + MAX_NAME;
/// The longest stderr a run's answer carries (a run prints one line).
pub const MAX_LINE: usize = 4096;
const ANSWER_HEAD: usize = 8;
/// No answer is longer (the tap's marker byte included).
pub const MAX_ANSWER: usize = 1 + ANSWER_HEAD + MAX_LINE;

/// What a client may ask: what QEMU's command line carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub bridge: Vec<u8>,
    pub use_vnet: bool,
    pub queues: u16,
}

/// Why bytes are not a request (or an answer), for the one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not a bridge-helper request")]
    Magic,
    #[error("protocol version {0}, this service speaks version 1")]
    Version(u8),
    #[error("unknown command {0}")]
    Command(u8),
    #[error("unknown flags {0:#x}")]
    Flags(u8),
    #[error("{0} queues: 1 to {MAX_QUEUES} are possible")]
    Queues(u16),
    #[error("a bridge name of {0} bytes: 1 to 15 are possible")]
    NameLength(usize),
    #[error("a bridge name with a NUL byte")]
    Nul,
    #[error("the request is incomplete")]
    Short,
    #[error("{0} bytes after the request")]
    Trailing(usize),
    #[error("an answer line of {0} bytes")]
    LineLength(usize),
}

impl Request {
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        check_name(&self.bridge)?;
        check_queues(self.queues)?;
        let mut out = Vec::with_capacity(MAX_REQUEST);
        out.extend_from_slice(REQUEST_MAGIC);
        out.extend_from_slice(&[VERSION, ATTACH, u8::from(self.use_vnet)]);
        out.extend_from_slice(&self.queues.to_be_bytes());
        out.push(u8::try_from(self.bridge.len()).map_err(|_| WireError::NameLength(16))?);
        out.extend_from_slice(&self.bridge);
        Ok(out)
    }

    /// `Ok(None)`: a valid beginning, more bytes needed. Every byte is
    /// checked as soon as it arrives, so a bad request is refused at its
    /// first wrong byte rather than at the deadline.
    pub fn decode(bytes: &[u8]) -> Result<Option<Request>, WireError> {
        let magic_part = &bytes[..bytes.len().min(4)];
        if magic_part != &REQUEST_MAGIC[..magic_part.len()] {
            return Err(WireError::Magic);
        }
        if let Some(&v) = bytes.get(4) {
            if v != VERSION {
                return Err(WireError::Version(v));
            }
        }
        if let Some(&c) = bytes.get(5) {
            if c != ATTACH {
                return Err(WireError::Command(c));
            }
        }
        if let Some(&f) = bytes.get(6) {
            if f & !FLAG_VNET != 0 {
                return Err(WireError::Flags(f));
            }
        }
        if let [_, _, _, _, _, _, _, hi, lo, ..] = *bytes {
            check_queues(u16::from_be_bytes([hi, lo]))?;
        }
        let Some(&len) = bytes.get(9) else {
            return Ok(None);
        };
        let len = usize::from(len);
        if len == 0 || len > MAX_NAME {
            return Err(WireError::NameLength(len));
        }
        let name = &bytes[REQUEST_HEAD..bytes.len().min(REQUEST_HEAD + len)];
        if name.contains(&0) {
            return Err(WireError::Nul);
        }
        match bytes.len().cmp(&(REQUEST_HEAD + len)) {
            std::cmp::Ordering::Less => Ok(None),
            std::cmp::Ordering::Greater => {
                Err(WireError::Trailing(bytes.len() - REQUEST_HEAD - len))
            }
            std::cmp::Ordering::Equal => Ok(Some(Request {
                bridge: name.to_vec(),
                use_vnet: bytes[6] & FLAG_VNET != 0,
                queues: u16::from_be_bytes([bytes[7], bytes[8]]),
            })),
        }
    }

    /// The request a setuid run's parser makes of the command line
    /// `--br=NAME --fd=FD [--use-vnet] [--queues=N]` for this request,
    /// its tap to `fd`, by the parser's own check of the name: a name the
    /// wire carries but the command line refuses (`..`, `br0/x`, a control
    /// byte) is refused with the command line's error, which the run
    /// reports after its privilege drop as a setuid run reports its
    /// parser's. No test hook: none travels on the wire.
    pub fn attach(&self, fd: i32) -> Result<cli::Request, cli::UsageError> {
        // The queue count too, and first, as the parser checks it: the
        // fields are public, so `decode`'s check is no guarantee here,
        // and a count the parser refuses would reach the run (0 as one
        // queue; 254 and up as that many opens of the tun device, and a
        // tap made, before the run fails).
        let queues = cli::parse_queues(self.queues.to_string().as_bytes())?;
        Ok(cli::Request {
            bridge: cli::bridge_name(&self.bridge)?,
            fd,
            use_vnet: self.use_vnet,
            queues,
            hook: None,
        })
    }
}

fn check_name(name: &[u8]) -> Result<(), WireError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(WireError::NameLength(name.len()));
    }
    if name.contains(&0) {
        return Err(WireError::Nul);
    }
    Ok(())
}

fn check_queues(queues: u16) -> Result<(), WireError> {
    if !cli::queues_in_range(queues) {
        return Err(WireError::Queues(queues));
    }
    Ok(())
}

/// The outcome of a request: the run's exit status and its stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u8,
    pub line: Vec<u8>,
}

impl Answer {
    /// The frame; a longer line is cut at [`MAX_LINE`] bytes.
    pub fn encode(&self) -> Vec<u8> {
        let line = &self.line[..self.line.len().min(MAX_LINE)];
        let len = u16::try_from(line.len()).unwrap_or(u16::MAX);
        let mut out = Vec::with_capacity(ANSWER_HEAD + line.len());
        out.extend_from_slice(ANSWER_MAGIC);
        out.extend_from_slice(&[VERSION, self.status]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(line);
        out
    }

    /// Everything the service sent, up to its close: `(tap, answer)`,
    /// where `tap` says whether the tap's one-byte message came first (its
    /// fds travel beside the bytes, see the module doc).
    pub fn decode(bytes: &[u8]) -> Result<(bool, Answer), WireError> {
        let (tap, frame) = match bytes.split_first() {
            Some((0, rest)) => (true, rest),
            _ => (false, bytes),
        };
        if frame.len() < ANSWER_HEAD {
            return Err(if ANSWER_MAGIC.starts_with(&frame[..frame.len().min(4)]) {
                WireError::Short
            } else {
                WireError::Magic
            });
        }
        if &frame[..4] != ANSWER_MAGIC {
            return Err(WireError::Magic);
        }
        if frame[4] != VERSION {
            return Err(WireError::Version(frame[4]));
        }
        let len = usize::from(u16::from_be_bytes([frame[6], frame[7]]));
        if len > MAX_LINE {
            return Err(WireError::LineLength(len));
        }
        let line = &frame[ANSWER_HEAD..];
        match line.len().cmp(&len) {
            std::cmp::Ordering::Less => Err(WireError::Short),
            std::cmp::Ordering::Greater => Err(WireError::Trailing(line.len() - len)),
            std::cmp::Ordering::Equal => Ok((
                tap,
                Answer {
                    status: frame[5],
                    line: line.to_vec(),
                },
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &[u8]) -> Request {
        Request {
            bridge: name.to_vec(),
            use_vnet: true,
            queues: 4,
        }
    }

    #[test]
    fn a_request_round_trips_and_every_prefix_asks_for_more() {
        let r = req(b"br0");
        let bytes = r.encode().unwrap();
        assert_eq!(bytes, b"BHRQ\x01\x01\x01\x00\x04\x03br0");
        for cut in 0..bytes.len() {
            assert_eq!(Request::decode(&bytes[..cut]), Ok(None), "prefix {cut}");
        }
        assert_eq!(Request::decode(&bytes), Ok(Some(r)));
    }

    #[test]
    fn a_bad_request_is_refused_at_its_first_wrong_byte() {
        assert_eq!(Request::decode(b"X"), Err(WireError::Magic));
        assert_eq!(Request::decode(b"BHRQ\x02"), Err(WireError::Version(2)));
        assert_eq!(Request::decode(b"BHRQ\x01\x07"), Err(WireError::Command(7)));
        assert_eq!(
            Request::decode(b"BHRQ\x01\x01\x02"),
            Err(WireError::Flags(2))
        );
        assert_eq!(
            Request::decode(b"BHRQ\x01\x01\x00\x00\x00"),
            Err(WireError::Queues(0))
        );
        assert_eq!(
            Request::decode(b"BHRQ\x01\x01\x00\x00\xfe"),
            Err(WireError::Queues(254))
        );
        assert_eq!(
            Request::decode(b"BHRQ\x01\x01\x00\x00\x01\x00"),
            Err(WireError::NameLength(0))
        );
        assert_eq!(
            Request::decode(b"BHRQ\x01\x01\x00\x00\x01\x10"),
            Err(WireError::NameLength(16))
        );
        assert_eq!(
            Request::decode(b"BHRQ\x01\x01\x00\x00\x01\x03b\0"),
            Err(WireError::Nul)
        );
        assert_eq!(
            Request::decode(b"BHRQ\x01\x01\x00\x00\x01\x01bX"),
            Err(WireError::Trailing(1))
        );
    }

    /// The typed request of a wire request is, refusal included, what the
    /// command line's parser makes of `--br=NAME --fd=FD [--use-vnet]
    /// [--queues=N]`: every one-byte name, names the wire carries but the
    /// command line refuses, and queue counts the wire never decodes (a
    /// `Request` is a plain value: the parser's range holds for it too).
    #[test]
    fn a_request_becomes_what_the_parser_makes_of_its_command_line() {
        use std::ffi::OsString;
        use std::os::unix::ffi::OsStringExt;
        let mut names: Vec<Vec<u8>> = (1..=255u8).map(|b| vec![b]).collect();
        for name in [
            &b"br0"[..],
            b"..",
            b"br0/x",
            b"a:b",
            b"br 0",
            b"br\xa0",
            b"-br",
            b"--fd=7",
            b"br=x",
            b"\xff\xfe",
            b"br-fifteen-1234",
        ] {
            names.push(name.to_vec());
        }
        for name in names {
            for (use_vnet, queues) in [
                (false, 1),
                (true, 1),
                (true, MAX_QUEUES),
                (false, 0),
                (true, MAX_QUEUES + 1),
                (false, u16::MAX),
            ] {
                let request = Request {
                    bridge: name.clone(),
                    use_vnet,
                    queues,
                };
                let mut argv = vec![
                    OsString::from_vec([&b"--br="[..], &name].concat()),
                    OsString::from("--fd=7"),
                ];
                if use_vnet {
                    argv.push("--use-vnet".into());
                }
                if queues != 1 {
                    argv.push(format!("--queues={queues}").into());
                }
                let parsed = cli::parse(&argv).map(|c| match c {
                    cli::Command::Attach(r) => r,
                    other => panic!("{name:?}: {other:?}"),
                });
                assert_eq!(request.attach(7), parsed, "{name:?}");
            }
        }
    }

    #[test]
    fn encode_refuses_what_decode_would() {
        assert_eq!(req(b"").encode(), Err(WireError::NameLength(0)));
        assert_eq!(req(&[b'a'; 16]).encode(), Err(WireError::NameLength(16)));
        assert_eq!(req(b"a\0").encode(), Err(WireError::Nul));
        let r = Request {
            queues: 0,
            ..req(b"br0")
        };
        assert_eq!(r.encode(), Err(WireError::Queues(0)));
        assert!(req(&[b'a'; 15]).encode().unwrap().len() == MAX_REQUEST);
    }

    #[test]
    fn an_answer_round_trips_with_and_without_a_tap() {
        let a = Answer {
            status: 4,
            line: b"bridge-helper: access denied\n".to_vec(),
        };
        let frame = a.encode();
        assert_eq!(Answer::decode(&frame), Ok((false, a.clone())));
        let mut tapped = vec![0];
        tapped.extend_from_slice(&frame);
        assert_eq!(Answer::decode(&tapped), Ok((true, a)));
        for cut in 0..frame.len() {
            assert_eq!(
                Answer::decode(&frame[..cut]),
                Err(WireError::Short),
                "cut {cut}"
            );
        }
        assert_eq!(Answer::decode(b"garbage!"), Err(WireError::Magic));
    }

    #[test]
    fn an_answer_line_is_bounded() {
        let a = Answer {
            status: 0,
            line: vec![b'x'; MAX_LINE + 10],
        };
        let frame = a.encode();
        assert_eq!(frame.len(), MAX_ANSWER - 1);
        let mut long = frame.clone();
        long[6..8].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(Answer::decode(&long), Err(WireError::LineLength(65535)));
    }
}
