//! Signing: Standard Webhooks 1.0 (`../shared/spec/standard-webhooks.md`). A hook with
//! `signing_secret` sends `webhook-id`, `webhook-timestamp` and `webhook-signature`; the
//! signature is `v1,` + base64 HMAC-SHA256 over `"{id}.{timestamp}.{body}"`, one entry per
//! secret (rotation), space-separated.
//!
//! Secrets are parsed once, at config load, and never printed: [`Secret`]'s `Debug` shows
//! nothing of the key. Message ids are ULIDs (time-ordered, 26 Crockford base32 characters, no
//! `.`), prefixed with `msg_`.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The prefix of a serialized secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// The shortest key the specification allows (bytes, once decoded).
pub const MIN_KEY_BYTES: usize = 24;
/// The longest.
pub const MAX_KEY_BYTES: usize = 64;

/// One HMAC-SHA256 key, from a `whsec_<base64>` secret.
#[derive(Clone)]
pub struct Secret {
    key: hmac::Key,
    /// The decoded key, compared for reloads (never printed).
    bytes: Vec<u8>,
}

impl Secret {
    /// Reads `whsec_` + standard base64 (padded or not) of 24 to 64 bytes.
    pub fn parse(text: &str) -> Result<Secret, String> {
        let Some(encoded) = text.strip_prefix(SECRET_PREFIX) else {
            return Err(format!(
                "must start with {SECRET_PREFIX} (a Standard Webhooks secret: {SECRET_PREFIX} and base64)"
            ));
        };
        let bytes = STANDARD
            .decode(encoded)
            .or_else(|_| STANDARD_NO_PAD.decode(encoded))
            .map_err(|_| format!("the part after {SECRET_PREFIX} must be standard base64"))?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&bytes.len()) {
            return Err(format!(
                "must decode to {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, not {} (e.g. {SECRET_PREFIX} and the base64 of 32 random bytes)",
                bytes.len()
            ));
        }
        Ok(Secret {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            bytes,
        })
    }

    /// `v1,` + the base64 HMAC-SHA256 of `"{id}.{timestamp}.{body}"`.
    fn sign_into(&self, id: &str, timestamp: i64, body: &[u8], out: &mut String) {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        out.push_str("v1,");
        STANDARD.encode_string(ctx.sign().as_ref(), out);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Secret {}

/// The `webhook-signature` value: one `v1,<sig>` per secret, joined by one space.
pub fn signature(secrets: &[Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut out = String::with_capacity(secrets.len() * 48);
    for (i, s) in secrets.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        s.sign_into(id, timestamp, body, &mut out);
    }
    out
}

/// A new `webhook-id`: `msg_` + a ULID (48 bits of milliseconds, 80 random bits).
pub fn new_message_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut random = [0u8; 10];
    if SystemRandom::new().fill(&mut random).is_err() {
        // The system's generator failing is not expected; the id must stay unique all the
        // same, so fall back on a process-wide counter mixed with the clock.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        random[..8].copy_from_slice(&n.to_be_bytes());
        random[8..].copy_from_slice(&(std::process::id() as u16).to_be_bytes());
    }
    let mut value = u128::from(ms & 0xFFFF_FFFF_FFFF) << 80;
    for (i, b) in random.iter().enumerate() {
        value |= u128::from(*b) << (8 * (9 - i));
    }
    ulid_text(value)
}

/// `msg_` + the 26-character Crockford base32 text of `value`.
fn ulid_text(value: u128) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut out = String::with_capacity(30);
    out.push_str("msg_");
    for i in (0..26).rev() {
        let digit = (value >> (5 * i)) & 31;
        out.push(ALPHABET[digit as usize] as char);
    }
    out
}

/// The current Unix time in seconds, for `webhook-timestamp`.
pub fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's test vector (standard-webhooks.md): two secrets, a form body.
    #[test]
    fn the_spec_vector_signs_with_both_secrets() {
        let a = Secret::parse("whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcY").unwrap();
        let b = Secret::parse("whsec_ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8").unwrap();
        let body = b"channel_id=c1&channel_name=town-square&file_ids=&post_id=p1&team_domain=acme&team_id=t1&text=deploy+now&timestamp=1767225600&token=hooktoken&trigger_word=deploy&user_id=u1&user_name=alice";
        assert_eq!(body.len(), 187);
        assert_eq!(
            signature(&[a, b], "msg_2zXnE7b4qPq3vKc9hJd1mFtWs0A", 1767225600, body),
            "v1,cqKtUq2xtcl3KVIqUSo5qaqyot5awp8oaCwQwHM7C/g= v1,IwM3uK4zTXZUofND6Fg2QNv2lmXI1TpUwWV5FwtmTb8="
        );
    }

    /// The Rust crate's own vector, which the Python package also accepts.
    #[test]
    fn the_libraries_vector_signs_json() {
        let s = Secret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(
            signature(
                &[s],
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        let rows: &[(&str, &str)] = &[
            ("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcY", "must start with whsec_"),
            ("whsec_not base64!", "must be standard base64"),
            ("whsec_AQID", "not 3"),
            ("whsec_", "not 0"),
        ];
        for (text, want) in rows {
            let e = Secret::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        // 32 bytes: padded or not, both read.
        let padded = format!("whsec_{}", STANDARD.encode([7u8; 32]));
        let unpadded = format!("whsec_{}", STANDARD_NO_PAD.encode([7u8; 32]));
        assert!(padded.ends_with('='));
        assert_eq!(
            Secret::parse(&padded).unwrap(),
            Secret::parse(&unpadded).unwrap()
        );
        let shown = format!("{:?}", Secret::parse(&padded).unwrap());
        assert_eq!(shown, "Secret(<redacted>)");
    }

    #[test]
    fn message_ids_are_unique_ordered_and_dot_free() {
        let ids: Vec<String> = (0..1000).map(|_| new_message_id()).collect();
        for id in &ids {
            assert_eq!(id.len(), 30, "{id}");
            assert!(id.starts_with("msg_"));
            assert!(id[4..].bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
        }
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "no two alike");
        assert_eq!(ulid_text(0), "msg_00000000000000000000000000");
        assert_eq!(ulid_text(u128::MAX), "msg_7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
        // The first ten characters are the time: later ids sort after earlier ones.
        let earlier = ulid_text(1 << 80);
        let later = ulid_text(2 << 80);
        assert!(earlier < later);
    }
}
