//! Webhook response decoding past the 1 MiB cap (spec §3.1): only the first
//! `MAX_RESPONSE_BYTES` bytes are read, a first value that does not end within them is an
//! error, and nothing panics however the body is cut. Kept apart from `response_decoding`
//! because every run decodes a 1 MiB body (~60 ms under ASan).
//!
//! Input layout: byte 0 = filler (odd: `a`, even: spaces), byte 1 = extra bytes past the cap,
//! the rest = the start of the body.
#![no_main]

#[path = "../../tests/shared/models.rs"]
mod models;

use libfuzzer_sys::fuzz_target;
use models::same_outcome;
use posthook::reply::decode_response;
use posthook::webhook::MAX_RESPONSE_BYTES;

fuzz_target!(|data: &[u8]| {
    let [filler, extra, rest @ ..] = data else {
        return;
    };
    let filler = if filler & 1 == 1 { b'a' } else { b' ' };
    let mut body = rest.to_vec();
    body.resize(MAX_RESPONSE_BYTES + 1 + *extra as usize, filler);
    let got = decode_response(&body);
    if let Ok(Some(resp)) = &got {
        assert!(resp.wants_reply());
    }
    if filler == b' ' {
        // Whitespace after the body changes nothing but where a cut value ends.
        assert!(
            same_outcome(&got, &decode_response(rest)),
            "{rest:?} + spaces"
        );
    } else if rest.starts_with(br#"{"text":""#) && !rest[9..].contains(&b'"') {
        // A text value running into the `a` filler cannot end within the cap.
        assert!(got.is_err(), "{rest:?} + a…");
    }
});
