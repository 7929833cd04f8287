//! The status page's access tokens (`[[http.tokens]]`): each a name (the actor `http:NAME` in
//! `campaign_events`), a role and a file holding the secret (a systemd credential by relative name),
//! read at load so that a missing or weak file stops the start with its key named.

use std::fmt;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::{ConfigError, read_credential};

/// The shortest secret accepted: a guessable token would protect nothing.
pub const MIN_TOKEN_CHARS: usize = 16;

/// What a token lets its holder do on the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    /// Sees the pages and `/api/status`.
    Viewer,
    /// Also pauses, resumes, cancels and releases waves.
    Operator,
}

impl fmt::Display for TokenRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenRole::Viewer => "viewer",
            TokenRole::Operator => "operator",
        })
    }
}

/// One `[[http.tokens]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// Who holds it: letters, digits, `-`, `_` and `.`, at most 64 (recorded as `http:NAME`).
    pub name: String,
    pub role: TokenRole,
    /// The file holding the token; a relative path is looked up in `$CREDENTIALS_DIRECTORY` when set.
    pub file: PathBuf,
    /// The token read from `file`.
    #[serde(skip)]
    pub secret: Option<SecretString>,
}

/// Reads every token's file and checks the names; an error names the entry and the file.
pub(super) fn read_tokens(tokens: &mut [TokenSettings]) -> Result<(), ConfigError> {
    let mut names = std::collections::BTreeSet::new();
    for (i, t) in tokens.iter_mut().enumerate() {
        let key = format!("http.tokens[{i}]");
        let valid = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if t.name.is_empty() || t.name.len() > 64 || !t.name.chars().all(valid) {
            return Err(ConfigError::Value(format!(
                "{key}.name {:?}: use 1 to 64 letters, digits, '-', '_' or '.'",
                t.name
            )));
        }
        if !names.insert(t.name.clone()) {
            return Err(ConfigError::Value(format!(
                "{key}.name {:?}: another token has this name",
                t.name
            )));
        }
        let (path, text) =
            read_credential(&format!("{key}.file"), &t.file, std::fs::read_to_string)?;
        let value = text.trim();
        if value.chars().count() < MIN_TOKEN_CHARS || value.contains(char::is_whitespace) {
            return Err(ConfigError::Value(format!(
                "{key}.file {}: a token is one word of at least {MIN_TOKEN_CHARS} characters \
                 (make one with `openssl rand -base64 32`)",
                path.display()
            )));
        }
        t.secret = Some(SecretString::from(value.to_string()));
    }
    Ok(())
}
