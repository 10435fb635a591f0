//! The command line on arbitrary bytes: the input split on NUL is argv
//! after argv[0] (the only byte an argument can never contain). What
//! `parse` (clap, then our checks) accepts must be what argv says, and
//! every refusal one line.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use bridge_helper::cli::{self, Command};
use bridge_helper::policy::ifname;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let argv: Vec<OsString> = if data.is_empty() {
        Vec::new()
    } else {
        data.split(|&b| b == 0)
            .map(|a| OsString::from_vec(a.to_vec()))
            .collect()
    };
    let parsed = cli::parse(&argv);
    match parsed {
        Ok(Command::Help) => assert_eq!(argv, [OsString::from("--help")]),
        Ok(Command::Version) => assert_eq!(argv, [OsString::from("--version")]),
        Ok(Command::Serve) => assert_eq!(argv, [OsString::from("--serve")]),
        Ok(Command::Attach(request)) => {
            // Success needs both options, a valid bridge and a plain fd number.
            assert!(ifname::validate(request.bridge.as_bytes()).is_ok());
            assert!(request.fd >= 0);
            let br = [b"--br=".as_slice(), request.bridge.as_bytes()].concat();
            let fd = format!("--fd={}", request.fd);
            assert!(argv.iter().any(|a| a.as_encoded_bytes() == br));
            assert!(argv.iter().any(|a| {
                let a = a.as_encoded_bytes();
                a.strip_prefix(b"--fd=")
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    == Some(request.fd)
                    && a.len() >= fd.len()
            }));
            assert_eq!(
                request.use_vnet,
                argv.iter().any(|a| a.as_encoded_bytes() == b"--use-vnet")
            );
            assert!((1..=cli::MAX_QUEUES).contains(&request.queues));
            let asked = argv
                .iter()
                .any(|a| a.as_encoded_bytes().starts_with(b"--queues="));
            assert!(asked || request.queues == 1);
            assert!(request.hook.is_none(), "test hooks in a fuzz build");
        }
        Ok(Command::Check(check)) => {
            assert!(argv.iter().any(|a| a.as_encoded_bytes() == b"--check"));
            assert!(!argv
                .iter()
                .any(|a| a.as_encoded_bytes().starts_with(b"--fd=")));
            if let Some(bridge) = check.bridge {
                assert!(ifname::validate(bridge.as_bytes()).is_ok());
            }
        }
        Ok(Command::RemoveAbandoned(user)) => {
            assert!(argv
                .iter()
                .any(|a| a.as_encoded_bytes() == b"--remove-abandoned"));
            assert!(argv
                .iter()
                .any(|a| a.as_encoded_bytes() == [b"--user=".as_slice(), &user].concat()));
        }
        Err(e) => {
            // Every refusal is printable as one line.
            assert!(!e.to_string().contains('\n'));
        }
    }
});
