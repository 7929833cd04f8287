//! VERP envelope senders: one return path per notification, `LOCAL+TOKEN@DOMAIN`, whose token names
//! the recipient row and carries a MAC only this daemon can produce. A bounce is acted on only if it
//! comes back to an address whose MAC checks out, so a forged or misdirected report cannot mark
//! anyone as not delivered (docs: /work/shared/bounces.md §4.3).
//!
//! Token layout (version `a`): the letter `a`, then lower-case base32 (RFC 4648 alphabet, no padding)
//! of the row id (8 bytes, big-endian) followed by the first [`MAC_LEN`] bytes of
//! HMAC-SHA256(key, [`MAC_CONTEXT`] || `a` || id). 18 bytes give 29 base32 characters, so the token is
//! 30 characters and `LOCAL` may be up to [`MAX_LOCAL_LEN`] octets within RFC 5321's 64-octet local
//! part.
//!
//! - Lower-case base32 survives MTAs that lower-case local parts (froide saw this) and contains no
//!   `+`, `=`, `-` or `.` that BATV (`prvs=tag=local`), SRS or recipient delimiters would confuse.
//! - The version letter lets the format or the MAC change later: decoders reject letters they do
//!   not know instead of misreading them.
//! - MAC length 80 bits: a forger must guess the tag blind and can only test a guess by mailing a
//!   bounce (each one a logged delivery to our MX), so 2^-80 per attempt is far beyond reach. That is
//!   RFC 2104 §5's floor of 80 bits, below its "half the hash" advice (128 for SHA-256), which NIST
//!   SP 800-107r1 §5.3.5 relaxes when verification attempts are limited, as they are here. 128 bits
//!   would cost 6 more characters and leave `LOCAL` 27 octets.
//! - No key id in the token: [`decode`] tries each key it is given (two during a rotation), which is
//!   at most two HMACs per report.
//!
//! `ring::hmac` computes and verifies the MAC (`verify` compares in constant time; see
//! `verify_truncated` for how a truncated tag goes through it). ring is already
//! linked through lettre and rustls; base32 is 20 lines here rather than another crate.

use ring::hmac;

/// The token format this module writes; [`decode`] accepts only this one for now.
const VERSION: u8 = b'a';

/// Bytes of HMAC-SHA256 kept in the token: 80 bits (see the module header).
pub const MAC_LEN: usize = 10;

/// Domain separation: the key may one day sign something else, and a tag for that must never pass
/// as a VERP tag.
const MAC_CONTEXT: &[u8] = b"breach-notifier verp v1\0";

/// RFC 5321 §4.5.3.1.1: a local part is at most 64 octets.
const MAX_LOCAL_PART: usize = 64;

/// Token length: version letter plus base32 of id and MAC.
const TOKEN_LEN: usize = 1 + ((8 + MAC_LEN) * 8).div_ceil(5);

/// The longest `LOCAL` that [`encode`] accepts: the rest of the 64 octets hold `+` and the token.
pub const MAX_LOCAL_LEN: usize = MAX_LOCAL_PART - 1 - TOKEN_LEN;

/// Lower-case RFC 4648 base32 alphabet.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Why an envelope sender could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerpError {
    /// `LOCAL+TOKEN` would exceed RFC 5321's 64 octets.
    #[error("the VERP local part is {0} octets; at most {MAX_LOCAL_LEN} leave room for the token")]
    LocalTooLong(usize),
    /// `LOCAL` or `DOMAIN` is empty or holds characters that would break the address or the token.
    #[error("the VERP local part or domain is empty or holds a character not allowed there")]
    Invalid,
}

/// The envelope sender for recipient row `recipient_id`: `LOCAL+TOKEN@DOMAIN`, signed with `key`.
///
/// # Errors
/// [`VerpError::LocalTooLong`] when `LOCAL` leaves no room for the token in 64 octets;
/// [`VerpError::Invalid`] when `LOCAL` or `DOMAIN` is empty, or `LOCAL` holds `+`, `@`, whitespace,
/// or a character outside printable ASCII.
pub fn encode(
    local: &str,
    domain: &str,
    recipient_id: i64,
    key: &[u8],
) -> Result<String, VerpError> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'+' | b'@' | b'"'))
    };
    if !plain(local) || !plain(domain) {
        return Err(VerpError::Invalid);
    }
    if local.len() > MAX_LOCAL_LEN {
        return Err(VerpError::LocalTooLong(local.len()));
    }
    let id = recipient_id.to_be_bytes();
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), &signed_bytes(&id));
    let mut payload = id.to_vec();
    payload.extend_from_slice(&tag.as_ref()[..MAC_LEN]);
    let mut token = String::with_capacity(TOKEN_LEN);
    token.push(char::from(VERSION));
    token.push_str(&base32_lower(&payload));
    Ok(format!("{local}+{token}@{domain}"))
}

/// The recipient row id carried by `address`, if its token's MAC is valid under one of `keys`.
///
/// `address` may be the whole envelope recipient (`LOCAL+TOKEN@DOMAIN`, in any case, possibly wrapped
/// by BATV or SRS, whose own `=` fields come before the last `+`), a local part, or the bare token
/// (Postfix's `${extension}`). Anything malformed, of another version, or with a wrong MAC is `None`.
#[must_use]
pub fn decode(address: &str, keys: &[&[u8]]) -> Option<i64> {
    let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
    let token = local.rsplit_once('+').map_or(local, |(_, t)| t);
    if token.len() != TOKEN_LEN || !token.is_ascii() {
        return None;
    }
    let token = token.to_ascii_lowercase();
    let (version, body) = token.split_at(1);
    if version.as_bytes() != [VERSION] {
        return None;
    }
    let payload = base32_lower_decode(body)?;
    let (id, mac) = payload.split_at(8);
    let id: [u8; 8] = id.try_into().ok()?;
    let signed = signed_bytes(&id);
    keys.iter()
        .any(|k| verify_truncated(k, &signed, mac))
        .then(|| i64::from_be_bytes(id))
}

/// What the MAC covers: context, version, id.
fn signed_bytes(id: &[u8; 8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(MAC_CONTEXT.len() + 9);
    m.extend_from_slice(MAC_CONTEXT);
    m.push(VERSION);
    m.extend_from_slice(id);
    m
}

/// Second context: the truncated tags are compared as HMACs of themselves (below).
const COMPARE_CONTEXT: &[u8] = b"breach-notifier verp compare\0";

/// Checks a truncated tag in constant time. `ring::hmac::verify` compares only full-length tags, so
/// both the expected prefix and the received one are wrapped in a second HMAC and `verify` compares
/// those: the comparison is ring's constant-time one, and the attacker cannot choose what is compared.
fn verify_truncated(key: &[u8], signed: &[u8], mac: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&key, signed);
    let wrap = |m: &[u8]| [COMPARE_CONTEXT, m].concat();
    let expected = hmac::sign(&key, &wrap(&tag.as_ref()[..MAC_LEN]));
    hmac::verify(&key, &wrap(mac), expected.as_ref()).is_ok()
}

/// RFC 4648 base32, lower case, no padding.
fn base32_lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Inverse of [`base32_lower`]; `None` on a character outside the alphabet or non-zero padding bits.
fn base32_lower_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)?;
        buffer = (buffer << 5) | u32::try_from(v).ok()?;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buffer >> bits) & 0xff).ok()?);
        }
        buffer &= (1 << bits) - 1;
    }
    // Leftover bits must be zero, so that each payload has exactly one spelling.
    (buffer == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"first key, 32 bytes of secret!!!";
    const NEXT: &[u8] = b"second key, the rotation target.";

    #[test]
    fn round_trip() {
        for id in [0, 1, 42, 1_000_000_007, i64::MAX, -1, i64::MIN] {
            let a = encode("bounces", "b.example.org", id, KEY).unwrap();
            assert!(
                a.starts_with("bounces+a") && a.ends_with("@b.example.org"),
                "{a}"
            );
            assert_eq!(decode(&a, &[KEY]), Some(id));
        }
    }

    #[test]
    fn survives_case_changes_and_wrappers() {
        let a = encode("b", "bounces.example.org", 77, KEY).unwrap();
        assert_eq!(decode(&a.to_ascii_uppercase(), &[KEY]), Some(77));
        let token = a.split_once('+').unwrap().1.split_once('@').unwrap().0;
        assert_eq!(
            decode(token, &[KEY]),
            Some(77),
            "the bare token (Postfix extension)"
        );
        let batv = format!("prvs=190694bd6d={a}");
        assert_eq!(decode(&batv, &[KEY]), Some(77));
        let srs = format!(
            "SRS0=HHH=TT=bounces.example.org={}@fwd.example.net",
            a.split('@').next().unwrap()
        );
        assert_eq!(decode(&srs, &[KEY]), Some(77));
    }

    #[test]
    fn wrong_key_is_rejected_and_the_second_key_accepted() {
        let a = encode("b", "example.org", 5, KEY).unwrap();
        assert_eq!(decode(&a, &[NEXT]), None);
        assert_eq!(decode(&a, &[]), None);
        assert_eq!(decode(&a, &[NEXT, KEY]), Some(5));
        let b = encode("b", "example.org", 5, NEXT).unwrap();
        assert_eq!(decode(&b, &[KEY, NEXT]), Some(5));
    }

    #[test]
    fn forged_id_or_mac_is_rejected() {
        let a = encode("b", "example.org", 5, KEY).unwrap();
        // Put id 6 in front of 5's MAC.
        let mut payload = base32_lower_decode(&a[3..32]).unwrap();
        payload[..8].copy_from_slice(&6i64.to_be_bytes());
        let forged = format!("b+a{}@example.org", base32_lower(&payload));
        assert_eq!(forged.len(), a.len());
        assert_eq!(decode(&forged, &[KEY]), None);
        // Flip each character of the token in turn.
        for i in 2..32 {
            let mut bytes = a.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            assert_eq!(
                decode(std::str::from_utf8(&bytes).unwrap(), &[KEY]),
                None,
                "{i}"
            );
        }
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        for bad in [
            "",
            "@",
            "b+@example.org",
            "b+a@example.org",
            "no token here",
            "b+\u{e9}@x",
        ] {
            assert_eq!(decode(bad, &[KEY]), None, "{bad}");
        }
        let a = encode("b", "example.org", 5, KEY).unwrap();
        assert_eq!(
            decode(&a.replacen("+a", "+b", 1), &[KEY]),
            None,
            "unknown version"
        );
        assert_eq!(decode(&a.replacen("@", "a@", 1), &[KEY]), None, "too long");
        assert_eq!(
            decode(&a.replacen("+a", "+a1", 1).replacen("@", "", 0), &[KEY]),
            None
        );
    }

    #[test]
    fn local_part_stays_within_64_octets() {
        let longest = "x".repeat(MAX_LOCAL_LEN);
        let a = encode(&longest, "example.org", i64::MAX, KEY).unwrap();
        assert_eq!(a.split('@').next().unwrap().len(), 64);
        assert_eq!(
            encode(&format!("{longest}x"), "example.org", 1, KEY),
            Err(VerpError::LocalTooLong(MAX_LOCAL_LEN + 1))
        );
        for (local, domain) in [
            ("", "d"),
            ("a+b", "d"),
            ("a b", "d"),
            ("a", ""),
            ("a@b", "d"),
        ] {
            assert_eq!(encode(local, domain, 1, KEY), Err(VerpError::Invalid));
        }
    }

    #[test]
    fn base32_matches_rfc_4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foobar", "mzxw6ytboi"),
        ] {
            assert_eq!(base32_lower(plain.as_bytes()), coded);
            assert_eq!(base32_lower_decode(coded).unwrap(), plain.as_bytes());
        }
    }
}
