//! The service's wire format on arbitrary bytes: decoding never panics,
//! takes no more than it was given, and whatever decodes encodes back to
//! exactly the bytes it came from (one spelling per request and answer).
//! A prefix of a request is either more-to-come or refused, never a
//! different request.
#![no_main]

use bridge_helper::service::wire::{Answer, Request, MAX_REQUEST};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Request::decode(data) {
        Ok(Some(request)) => {
            assert!(data.len() <= MAX_REQUEST);
            assert_eq!(request.encode().as_deref(), Ok(data));
            for cut in 0..data.len() {
                assert_eq!(Request::decode(&data[..cut]), Ok(None));
            }
            // The typed request, or the command line's refusal of its name.
            let _ = request.attach(3);
        }
        Ok(None) => assert!(data.len() < MAX_REQUEST),
        Err(_) => {}
    }
    if let Ok((tap, answer)) = Answer::decode(data) {
        let mut again = if tap { vec![0] } else { Vec::new() };
        again.extend_from_slice(&answer.encode());
        assert_eq!(again, data);
    }
});
