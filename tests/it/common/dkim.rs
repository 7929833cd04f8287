//! A DKIM verifier for tests (RFC 6376, relaxed/relaxed; rsa-sha256 and ed25519-sha256 per RFC 8463),
//! written from the RFC rather than borrowed from the signer, so that a signature the product makes is
//! checked the way a receiving mail server checks it: body hash, then the signature over the signed
//! headers and the DKIM-Signature header itself, with the public key a DNS TXT record would publish.
//!
//! Deliberately small: one signature, relaxed canonicalization only (what the product uses), no DNS,
//! no `l=`, no `z=`. It returns why a check failed, so a failing test says what broke.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// The public half of a signing key, as a DKIM TXT record's `k=` and `p=` describe it.
pub enum PublicKey {
    /// DER `RSAPublicKey` (PKCS#1).
    Rsa(Vec<u8>),
    /// The 32 raw bytes.
    Ed25519(Vec<u8>),
}

/// The tags of the DKIM-Signature header.
#[derive(Debug)]
pub struct Signature {
    pub algorithm: String,
    pub canonicalization: String,
    pub domain: String,
    pub selector: String,
    pub headers: Vec<String>,
}

/// Checks the message's DKIM-Signature against `key`.
pub fn verify(message: &[u8], key: &PublicKey) -> Result<Signature, String> {
    let split = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no blank line after the headers")?;
    let head = std::str::from_utf8(&message[..split + 2]).map_err(|_| "headers are not UTF-8")?;
    let body = &message[split + 4..];
    let fields = header_fields(head);
    let dkim_field = fields
        .iter()
        .find(|f| name_of(f).eq_ignore_ascii_case("DKIM-Signature"))
        .ok_or("no DKIM-Signature header")?;
    let tags = tags(value_of(dkim_field));
    let tag = |t: &str| {
        tags.iter()
            .find(|(k, _)| k == t)
            .map(|(_, v)| v.clone())
            .ok_or(format!("DKIM-Signature has no {t}= tag"))
    };
    let signature = Signature {
        algorithm: tag("a")?,
        canonicalization: tag("c")?,
        domain: tag("d")?,
        selector: tag("s")?,
        headers: tag("h")?.split(':').map(|h| h.trim().to_string()).collect(),
    };
    if signature.canonicalization != "relaxed/relaxed" {
        return Err(format!(
            "c={} (this verifier checks relaxed/relaxed)",
            signature.canonicalization
        ));
    }

    let body_hash = STANDARD.encode(Sha256::digest(relaxed_body(body)));
    if body_hash != tag("bh")? {
        return Err(format!(
            "body hash differs: computed {body_hash}, signed {}",
            tag("bh")?
        ));
    }

    // The signed headers, each the last unused instance of its name (RFC 6376 5.4.2), then the
    // DKIM-Signature header with an empty b= and no final CRLF.
    let mut data = String::new();
    let mut used = vec![false; fields.len()];
    for name in &signature.headers {
        if let Some(i) = (0..fields.len())
            .rev()
            .find(|&i| !used[i] && name_of(&fields[i]).eq_ignore_ascii_case(name))
        {
            used[i] = true;
            data.push_str(&relaxed_header(&fields[i]));
            data.push_str("\r\n");
        }
    }
    data.push_str(&relaxed_header(&without_b(dkim_field)));
    let signed = STANDARD
        .decode(tag("b")?)
        .map_err(|e| format!("b= is not base64: {e}"))?;
    let verified = match (signature.algorithm.as_str(), key) {
        ("rsa-sha256", PublicKey::Rsa(der)) => ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            der,
        )
        .verify(data.as_bytes(), &signed),
        // RFC 8463: Ed25519 signs the SHA-256 of the data.
        ("ed25519-sha256", PublicKey::Ed25519(raw)) => {
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, raw)
                .verify(&Sha256::digest(data.as_bytes()), &signed)
        }
        (a, _) => return Err(format!("a={a} does not match the key's type")),
    };
    verified.map_err(|_| "the signature does not verify with the public key".to_string())?;
    Ok(signature)
}

/// Splits a header block into fields, continuation lines kept with their CRLFs.
fn header_fields(head: &str) -> Vec<String> {
    let mut fields: Vec<String> = Vec::new();
    for line in head.split_inclusive("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.push_str(line);
            }
        } else if !line.trim().is_empty() {
            fields.push(line.to_string());
        }
    }
    for f in &mut fields {
        if f.ends_with("\r\n") {
            f.truncate(f.len() - 2);
        }
    }
    fields
}

fn name_of(field: &str) -> &str {
    field.split(':').next().unwrap_or_default().trim()
}

fn value_of(field: &str) -> &str {
    field.split_once(':').map_or("", |(_, v)| v)
}

/// `tag=value` pairs, whitespace removed from values (b= and bh= may be folded).
fn tags(value: &str) -> Vec<(String, String)> {
    value
        .split(';')
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.chars().filter(|c| !c.is_whitespace()).collect(),
            )
        })
        .collect()
}

/// The DKIM-Signature field with the value of its b= tag removed (the rest left as it was).
fn without_b(field: &str) -> String {
    let (name, value) = field.split_once(':').expect("a header field");
    let parts: Vec<String> = value
        .split(';')
        .map(|t| match t.split_once('=') {
            Some((k, _)) if k.trim() == "b" => format!("{k}="),
            _ => t.to_string(),
        })
        .collect();
    format!("{name}:{}", parts.join(";"))
}

/// RFC 6376 3.4.2: lower-case name, unfolded value, runs of whitespace as one space, trimmed.
fn relaxed_header(field: &str) -> String {
    let (name, value) = field.split_once(':').expect("a header field");
    let unfolded = value.replace("\r\n", "");
    let compact = unfolded.split([' ', '\t']).filter(|s| !s.is_empty());
    format!(
        "{}:{}",
        name.trim().to_ascii_lowercase(),
        compact.collect::<Vec<_>>().join(" ")
    )
}

/// RFC 6376 3.4.4: whitespace runs as one space, none at line ends, no empty lines at the end.
fn relaxed_body(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let mut lines: Vec<String> = text
        .split("\r\n")
        .map(|line| {
            let mut out = String::new();
            let mut space = false;
            for c in line.chars() {
                if c == ' ' || c == '\t' {
                    space = true;
                } else {
                    if space {
                        out.push(' ');
                    }
                    space = false;
                    out.push(c);
                }
            }
            out
        })
        .collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    if lines.is_empty() {
        return Vec::new();
    }
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(b"\r\n");
    out
}
