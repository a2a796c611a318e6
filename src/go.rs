//! Go compatibility: the few behaviours of Go's standard library that Mattermost's server shows
//! on the wire and that more than one stage of posthook must reproduce byte for byte.
//!
//! - [`key_matches`]: how `encoding/json` binds an object key to a struct field (the proxy reads
//!   the post being created with it, the reply decoder the webhook's answer).
//! - [`query_escape_into`] and [`json_string_into`]: `url.QueryEscape` and `encoding/json`'s
//!   string encoding, for the webhook payload (spec §2.2).
//! - [`lossy_utf8`]: how Go's JSON decoder repairs invalid UTF-8.

/// True when Go's `encoding/json` would bind the object key `key` to a struct field tagged
/// `field` (an ASCII lower-case name): byte-exact, or equal under Go's case folding
/// (`unicode.ToUpper(unicode.ToLower(r))`). Folding is ASCII case plus the four non-ASCII
/// runes that fold onto ASCII letters: KELVIN SIGN → k, LONG S → s, and both Turkish i's → i.
pub fn key_matches(key: &str, field: &str) -> bool {
    let mut expected = field.bytes();
    for c in key.chars() {
        let folded = match c {
            '\u{212A}' => 'k',
            '\u{017F}' => 's',
            '\u{0130}' | '\u{0131}' => 'i',
            c if c.is_ascii() => c.to_ascii_lowercase(),
            _ => return false,
        };
        if expected.next() != Some(folded as u8) {
            return false;
        }
    }
    expected.next().is_none()
}

/// Go's `url.QueryEscape`: unreserved `A-Z a-z 0-9 - _ . ~` kept, space as `+`, every other
/// byte of the UTF-8 encoding as `%XX` with upper-case hex.
pub fn query_escape_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
    }
}

/// A JSON string as Go's `encoding/json` writes it with HTML escaping on (Go ≥ 1.22):
/// `\"` `\\` `\n` `\r` `\t` `\b` `\f`, other control bytes as `\u00xx` (lower-case hex),
/// `<` `>` `&` as `\u003c` `\u003e` `\u0026`, U+2028/U+2029 escaped, everything else raw.
pub fn json_string_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc: Option<&str> = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '<' => Some("\\u003c"),
            '>' => Some("\\u003e"),
            '&' => Some("\\u0026"),
            '\u{2028}' => Some("\\u2028"),
            '\u{2029}' => Some("\\u2029"),
            _ => None,
        };
        if esc.is_none() && (c as u32) >= 0x20 {
            continue;
        }
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                let b = c as u8;
                out.push_str("\\u00");
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// `body` with every byte that is not part of valid UTF-8 replaced by U+FFFD, one per byte,
/// as Go's decoder repairs strings (Rust's `from_utf8_lossy` puts one per invalid sequence).
pub fn lossy_utf8(body: &[u8]) -> String {
    let mut out = String::with_capacity(body.len() + 16);
    let mut rest = body;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                out.push_str(valid);
                return out;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                out.push(char::REPLACEMENT_CHARACTER);
                rest = after.get(1..).unwrap_or_default();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_use_go_query_escape() {
        let rows: &[(&str, &str)] = &[
            ("a b", "a+b"),
            ("A-Z_a.z~09", "A-Z_a.z~09"),
            (",", "%2C"),
            ("*", "%2A"),
            ("'", "%27"),
            ("\n", "%0A"),
            ("é", "%C3%A9"),
            ("a&b=c+d", "a%26b%3Dc%2Bd"),
            ("100%", "100%25"),
            ("/?#", "%2F%3F%23"),
            ("😀", "%F0%9F%98%80"),
        ];
        for (input, want) in rows {
            let mut out = String::new();
            query_escape_into(&mut out, input);
            assert_eq!(out, *want, "escaping {input:?}");
        }
    }

    #[test]
    fn json_strings_escape_like_go() {
        let rows: &[(&str, &str)] = &[
            ("<b>&</b>", r#""\u003cb\u003e\u0026\u003c/b\u003e""#),
            ("a\"b\\c", r#""a\"b\\c""#),
            ("\n\r\t", r#""\n\r\t""#),
            ("\u{8}\u{c}", r#""\b\f""#),
            ("\u{1}\u{1f}", r#""\u0001\u001f""#),
            ("\u{7f}", "\"\u{7f}\""),
            ("\u{2028}\u{2029}", r#""\u2028\u2029""#),
            ("é日本😀", "\"é日本😀\""),
            ("", r#""""#),
        ];
        for (input, want) in rows {
            let mut out = String::new();
            json_string_into(&mut out, input);
            assert_eq!(out, *want, "encoding {input:?}");
        }
    }

    #[test]
    fn go_key_folding_covers_go_special_cases() {
        let rows = [
            ("text", "text", true),
            ("TeXt", "text", true),
            ("icon_url", "icon_url", true),
            ("\u{0130}con_url", "icon_url", true),
            ("\u{0131}con_url", "icon_url", true),
            ("re\u{017F}ponse_type", "response_type", true),
            ("texts", "text", false),
            ("tex", "text", false),
            ("t\u{00e9}xt", "text", false),
        ];
        for (key, field, want) in rows {
            assert_eq!(key_matches(key, field), want, "{key} vs {field}");
        }
    }
}
