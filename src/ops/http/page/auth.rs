//! Who is asking, and whether a request that changes something may come from where it comes from.
//!
//! Tokens (`[[http.tokens]]`) are presented as `Authorization: Bearer TOKEN` (scripts) or as the
//! password of HTTP Basic (a browser's prompt; the user name is not checked: the token names its
//! holder). Only SHA-256 digests are kept, and a presented token is compared with every configured
//! one in constant time ([`subtle`]), so neither the answer's timing nor an early exit tells how
//! much of a guess was right.
//!
//! Viewing needs a token only when some `viewer` token is configured (otherwise the page is open,
//! as `/metrics` is, on loopback); acting always needs an `operator` token, so without one the page is
//! read-only. A wrong token is refused even where none is needed: a typo must not look like success.
//!
//! Cross-site requests are refused before any token is looked at: a browser that holds Basic
//! credentials attaches them to a form another page on the same host (another port, `localhost`)
//! submits for it. A POST passes only with `Sec-Fetch-Site: same-origin` (or `none`, a typed URL);
//! without that header (plain HTTP on a LAN address, older browsers), only when `Origin` names the
//! `Host` it was sent to; a request with neither header is not from a browser and still needs its
//! token.

use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{TokenRole, TokenSettings};

/// The configured tokens, as digests.
pub struct Tokens {
    entries: Vec<Entry>,
}

struct Entry {
    name: String,
    role: TokenRole,
    digest: [u8; 32],
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No token presented.
    Anonymous,
    /// A configured token: its name and role.
    Token { name: String, role: TokenRole },
}

/// Why a request is refused: the status and a sentence for the person reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
    /// Ask the browser for credentials (`WWW-Authenticate`).
    pub challenge: bool,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>, challenge: bool) -> Self {
        Refusal {
            status,
            message: message.into(),
            challenge,
        }
    }
}

/// The realm a browser shows in its prompt and keys its remembered credentials on.
pub const REALM: &str = "Basic realm=\"breach-notifier status\", charset=\"UTF-8\"";

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// From the configuration (entries without a secret, which loading always fills, are skipped).
    pub fn new(settings: &[TokenSettings]) -> Tokens {
        let entries = settings
            .iter()
            .filter_map(|t| {
                let secret = t.secret.as_ref()?;
                Some(Entry {
                    name: t.name.clone(),
                    role: t.role,
                    digest: digest(secret.expose_secret()),
                })
            })
            .collect();
        Tokens { entries }
    }

    /// True when some token may act: otherwise the page is read-only.
    pub fn has_operator(&self) -> bool {
        self.entries.iter().any(|e| e.role == TokenRole::Operator)
    }

    /// True when viewing needs a token (some `viewer` token is configured).
    pub fn viewing_needs_token(&self) -> bool {
        self.entries.iter().any(|e| e.role == TokenRole::Viewer)
    }

    /// The caller of a request; a token presented and not configured, or an unreadable
    /// `Authorization`, is refused.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, Refusal> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(Caller::Anonymous);
        };
        let wrong = || Refusal::new(StatusCode::UNAUTHORIZED, "wrong token", true);
        let presented = value
            .to_str()
            .ok()
            .and_then(presented_token)
            .ok_or_else(wrong)?;
        let presented = digest(&presented);
        // Every entry is compared, whatever matched, so the time taken does not depend on which.
        let mut found: Option<&Entry> = None;
        for e in &self.entries {
            if bool::from(e.digest.ct_eq(&presented)) {
                found = Some(e);
            }
        }
        let e = found.ok_or_else(wrong)?;
        Ok(Caller::Token {
            name: e.name.clone(),
            role: e.role,
        })
    }

    /// May this caller see the pages and `/api/status`?
    pub fn may_view(&self, headers: &HeaderMap) -> Result<Caller, Refusal> {
        let caller = self.caller(headers)?;
        if caller == Caller::Anonymous && self.viewing_needs_token() {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "a token is needed to see this page",
                true,
            ));
        }
        Ok(caller)
    }

    /// May this caller change a campaign? Returns the token's name (the actor is `http:NAME`).
    pub fn may_act(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        same_origin(headers)?;
        if !self.has_operator() {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "this page is read-only: no operator token is configured (http.tokens)",
                false,
            ));
        }
        match self.caller(headers)? {
            Caller::Anonymous => Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "an operator token is needed to change a campaign",
                true,
            )),
            Caller::Token {
                name,
                role: TokenRole::Operator,
            } => Ok(name),
            Caller::Token { name, .. } => Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!("token {name} is a viewer's: only an operator token may change a campaign"),
                false,
            )),
        }
    }
}

/// The token in an `Authorization` value: Bearer, or Basic's password.
fn presented_token(value: &str) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_string());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()?;
    let pair = String::from_utf8(decoded).ok()?;
    let (_, password) = pair.split_once(':')?;
    Some(password.to_string())
}

/// Refuses a request a browser sent on behalf of another site (module header).
pub fn same_origin(headers: &HeaderMap) -> Result<(), Refusal> {
    let refuse = |why: String| {
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!("cross-site request refused: {why}"),
            false,
        ))
    };
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return match site {
            "same-origin" | "none" => Ok(()),
            other => refuse(format!("Sec-Fetch-Site is {other}, not same-origin")),
        };
    }
    let Some(origin) = text("origin") else {
        return Ok(());
    };
    let host = text("host").unwrap_or_default();
    let origin_host = origin
        .split_once("://")
        .map_or("", |(_, rest)| rest.trim_end_matches('/'));
    if !host.is_empty() && origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        refuse(format!("Origin {origin} does not match Host {host}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use secrecy::SecretString;

    fn tokens(list: &[(&str, TokenRole, &str)]) -> Tokens {
        let settings: Vec<TokenSettings> = list
            .iter()
            .map(|(name, role, secret)| TokenSettings {
                name: name.to_string(),
                role: *role,
                file: "unused".into(),
                secret: Some(SecretString::from(secret.to_string())),
            })
            .collect();
        Tokens::new(&settings)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const OP: &str = "operator-secret-0123456789";
    const VIEW: &str = "viewer-secret-0123456789";

    #[test]
    fn bearer_and_basic_find_their_token_and_a_wrong_one_is_refused() {
        let t = tokens(&[
            ("ops", TokenRole::Operator, OP),
            ("counsel", TokenRole::Viewer, VIEW),
        ]);
        let bearer = headers(&[("authorization", &format!("Bearer {OP}"))]);
        assert_eq!(t.may_act(&bearer), Ok("ops".into()));
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("anyone:{VIEW}"));
        let basic = headers(&[("authorization", &format!("Basic {basic}"))]);
        let refused = t.may_act(&basic).unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(t.may_view(&basic).is_ok());
        let wrong = headers(&[("authorization", "Bearer operator-secret-0123456780")]);
        assert_eq!(
            t.may_view(&wrong).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        let garbage = headers(&[("authorization", "Basic !!!")]);
        assert_eq!(
            t.caller(&garbage).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            t.may_view(&HeaderMap::new()).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn without_tokens_the_page_is_open_and_read_only() {
        let t = tokens(&[]);
        assert_eq!(t.may_view(&HeaderMap::new()), Ok(Caller::Anonymous));
        let refused = t.may_act(&HeaderMap::new()).unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(refused.message.contains("read-only"), "{}", refused.message);
        // Operator tokens alone leave viewing open.
        let t = tokens(&[("ops", TokenRole::Operator, OP)]);
        assert_eq!(t.may_view(&HeaderMap::new()), Ok(Caller::Anonymous));
        assert_eq!(
            t.may_act(&HeaderMap::new()).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn cross_site_requests_are_refused_before_the_token() {
        let t = tokens(&[("ops", TokenRole::Operator, OP)]);
        let auth = format!("Bearer {OP}");
        for (site, ok) in [
            ("same-origin", true),
            ("none", true),
            ("same-site", false),
            ("cross-site", false),
        ] {
            let h = headers(&[("authorization", &auth), ("sec-fetch-site", site)]);
            assert_eq!(t.may_act(&h).is_ok(), ok, "{site}");
        }
        let h = headers(&[
            ("authorization", &auth),
            ("origin", "http://127.0.0.1:9187"),
            ("host", "127.0.0.1:9187"),
        ]);
        assert!(t.may_act(&h).is_ok());
        let h = headers(&[
            ("authorization", &auth),
            ("origin", "http://localhost:9187"),
            ("host", "127.0.0.1:9187"),
        ]);
        assert_eq!(t.may_act(&h).unwrap_err().status, StatusCode::FORBIDDEN);
        let h = headers(&[("authorization", &auth), ("origin", "null"), ("host", "x")]);
        assert_eq!(t.may_act(&h).unwrap_err().status, StatusCode::FORBIDDEN);
    }
}
