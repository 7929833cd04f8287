//! The notice as an email: multipart/alternative (text + HTML), UTF-8, one recipient, and a
//! Message-ID derived from the campaign and the recipient so that every retry (and any duplicate
//! after a crash) carries the same one and can be recognised.
//!
//! Deliberately absent: tracking pixels, rewritten links, `List-Unsubscribe` (a legally required
//! notice is not marketing, and tracking looks like the phishing every breach triggers).

use std::str::FromStr;

use lettre::Message;
use lettre::address::{Address, Envelope};
use lettre::message::{Mailbox, MultiPart};
use sha2::{Digest, Sha256};

use crate::campaign::CampaignSpec;
use crate::campaign::template::Rendered;

/// A message ready for a transport: envelope plus RFC 5322 bytes.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub message_id: String,
    pub envelope: Envelope,
    pub bytes: Vec<u8>,
}

/// Why a message could not be built for a recipient.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("recipient row {0} has no email address")]
    NoAddress(i64),
    #[error("recipient row {0}: the stored email address is not valid")]
    BadAddress(i64),
    #[error("building the message for recipient row {0} failed: {1}")]
    Build(i64, String),
    #[error("the campaign's sender address is not valid: {0}")]
    Sender(String),
}

/// The DKIM signer the configuration asks for (none without a `[dkim]` section), for the daemon and
/// for `campaign test-send` alike, so that seed copies are signed as the real notices are.
pub fn load_dkim(
    settings: Option<&crate::config::DkimSettings>,
) -> anyhow::Result<Option<lettre::message::dkim::DkimConfig>> {
    use lettre::message::dkim::{DkimSigningAlgorithm, DkimSigningKey};
    let Some(k) = settings else {
        return Ok(None);
    };
    let key = std::fs::read_to_string(&k.key_file).map_err(|e| {
        anyhow::anyhow!(
            "dkim.key_file {}: cannot read it ({e})",
            k.key_file.display()
        )
    })?;
    let algorithm = match k.algorithm.as_str() {
        "rsa" => DkimSigningAlgorithm::Rsa,
        "ed25519" => DkimSigningAlgorithm::Ed25519,
        other => anyhow::bail!("dkim.algorithm = {other:?}: use \"rsa\" or \"ed25519\""),
    };
    let signing = DkimSigningKey::new(key.trim(), algorithm).map_err(|e| {
        anyhow::anyhow!(
            "dkim.key_file {}: not a usable {} key ({e})",
            k.key_file.display(),
            k.algorithm
        )
    })?;
    Ok(Some(dkim_config(
        k.selector.clone(),
        k.domain.clone(),
        signing,
    )))
}

/// How notices are DKIM-signed: relaxed canonicalization for headers and body (it survives relays
/// that re-fold headers or touch whitespace, which lettre's default `simple` header mode does not), over
/// the headers a forger would want to change: From, To, Subject, Date, Message-ID, Reply-To and
/// MIME-Version. Not Content-Type: lettre writes a multipart message's Content-Type with the body,
/// after signing, so listing it would make every signature fail (tests/it/dkim.rs verifies them).
pub fn dkim_config(
    selector: String,
    domain: String,
    key: lettre::message::dkim::DkimSigningKey,
) -> lettre::message::dkim::DkimConfig {
    use lettre::message::dkim::{DkimCanonicalization, DkimCanonicalizationType, DkimConfig};
    use lettre::message::header::HeaderName;
    let headers = [
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "Reply-To",
        "MIME-Version",
    ]
    .into_iter()
    .map(HeaderName::new_from_ascii_str)
    .collect();
    DkimConfig::new(
        selector,
        domain,
        key,
        headers,
        DkimCanonicalization {
            header: DkimCanonicalizationType::Relaxed,
            body: DkimCanonicalizationType::Relaxed,
        },
    )
}

/// The stable Message-ID: `<bn.CAMPAIGN.RECIPIENT.HASH@DOMAIN>`, where HASH binds it to the campaign's
/// content so that two databases never mint the same id, and DOMAIN is the sender's.
pub fn message_id(
    spec_hash: &str,
    campaign_id: i64,
    recipient_id: i64,
    sender_domain: &str,
) -> String {
    let digest = Sha256::digest(format!("{spec_hash}:{campaign_id}:{recipient_id}").as_bytes());
    format!(
        "<bn.{campaign_id}.{recipient_id}.{}@{sender_domain}>",
        &hex::encode(digest)[..12]
    )
}

/// A campaign's sender addresses, parsed once. Parsing a mailbox (lettre's RFC 5322 parser) costs
/// more than writing the rest of a notice's headers and is the same for every notice of a campaign, so
/// the daemon keeps one `Sender` per campaign rather than parsing `From:` twice per message.
#[derive(Debug, Clone)]
pub struct Sender {
    from: Mailbox,
    reply_to: Option<Mailbox>,
    return_path: Address,
    /// When set, each notice's envelope sender is its own signed VERP address instead of
    /// `return_path`, so that a bounce names its recipient (docs/bounces.md).
    verp: Option<Verp>,
}

/// What a VERP envelope sender is made of: `LOCAL+TOKEN@DOMAIN`, the token signed with `key`.
#[derive(Clone)]
pub struct Verp {
    local: String,
    domain: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for Verp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verp({}+…@{}, key redacted)", self.local, self.domain)
    }
}

impl Verp {
    /// From `[bounces]`: `None` unless a domain and a signing key are configured.
    pub fn of(settings: &crate::config::BounceSettings) -> Option<Verp> {
        Some(Verp {
            local: settings.local_part.clone(),
            domain: settings.domain.clone()?,
            key: settings.keys.signing()?.to_vec(),
        })
    }

    /// The envelope sender of recipient `recipient_id`'s notice.
    pub fn address(&self, recipient_id: i64) -> Result<Address, MessageError> {
        let text = crate::bounce::verp::encode(&self.local, &self.domain, recipient_id, &self.key)
            .map_err(|e| MessageError::Build(recipient_id, format!("VERP envelope sender: {e}")))?;
        Address::from_str(&text)
            .map_err(|e| MessageError::Build(recipient_id, format!("VERP envelope sender: {e}")))
    }
}

impl Sender {
    /// The `From:`, `Reply-To:` and envelope sender of a campaign (checked when it was created).
    pub fn of(spec: &CampaignSpec) -> Result<Sender, MessageError> {
        let parse = |what: &str, text: &str| {
            Mailbox::from_str(text)
                .map_err(|e| MessageError::Sender(format!("{what} {text:?}: {e}")))
        };
        let from = parse("from", &spec.sender.from)?;
        let reply_to = match &spec.sender.reply_to {
            Some(r) => Some(parse("reply_to", r)?),
            None => None,
        };
        let return_path = match &spec.sender.return_path {
            Some(rp) => parse("return_path", rp)?.email,
            None => from.email.clone(),
        };
        Ok(Sender {
            from,
            reply_to,
            return_path,
            verp: None,
        })
    }

    /// Signs each notice's envelope sender with `verp` (none: the campaign's `return_path`).
    pub fn with_verp(mut self, verp: Option<Verp>) -> Sender {
        self.verp = verp;
        self
    }

    /// The sender's domain, the right-hand side of every Message-ID.
    pub fn domain(&self) -> &str {
        self.from.email.domain()
    }

    /// Builds the notice for one recipient, with its stable Message-ID.
    pub fn build(
        &self,
        spec_hash: &str,
        campaign_id: i64,
        recipient_id: i64,
        to: &str,
        rendered: &Rendered,
        dkim: Option<&lettre::message::dkim::DkimConfig>,
    ) -> Result<Outgoing, MessageError> {
        let id = message_id(spec_hash, campaign_id, recipient_id, self.domain());
        let envelope_from = match &self.verp {
            Some(verp) => verp.address(recipient_id)?,
            None => self.return_path.clone(),
        };
        self.build_with_id(id, envelope_from, recipient_id, to, rendered, dkim)
    }

    /// A test copy for a seed mailbox: the same message under a Message-ID of its own
    /// (`<bn-test.CAMPAIGN.RECIPIENT.NANOS@DOMAIN>`), so it never shares the real notice's id.
    pub fn build_sample(
        &self,
        campaign_id: i64,
        recipient_id: i64,
        to: &str,
        rendered: &Rendered,
        dkim: Option<&lettre::message::dkim::DkimConfig>,
    ) -> Result<Outgoing, MessageError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let id = format!(
            "<bn-test.{campaign_id}.{recipient_id}.{nanos}@{}>",
            self.domain()
        );
        // A seed's bounce names no recipient: the campaign's return path.
        self.build_with_id(
            id,
            self.return_path.clone(),
            recipient_id,
            to,
            rendered,
            dkim,
        )
    }

    fn build_with_id(
        &self,
        id: String,
        envelope_from: Address,
        recipient_id: i64,
        to: &str,
        rendered: &Rendered,
        dkim: Option<&lettre::message::dkim::DkimConfig>,
    ) -> Result<Outgoing, MessageError> {
        let to_address =
            Address::from_str(to).map_err(|_| MessageError::BadAddress(recipient_id))?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to_address.clone()))
            .subject(rendered.subject.clone())
            .message_id(Some(id.clone()))
            .date_now();
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        let mut message = builder
            .multipart(MultiPart::alternative_plain_html(
                rendered.text.clone(),
                rendered.html.clone(),
            ))
            .map_err(|e| MessageError::Build(recipient_id, e.to_string()))?;
        if let Some(config) = dkim {
            message.sign(config);
        }
        let envelope = Envelope::new(Some(envelope_from), vec![to_address])
            .map_err(|e| MessageError::Build(recipient_id, e.to_string()))?;
        Ok(Outgoing {
            message_id: id,
            envelope,
            bytes: message.formatted(),
        })
    }
}

/// Builds one notice for a campaign (preview, tests); the daemon keeps a [`Sender`] instead.
pub fn build(
    spec: &CampaignSpec,
    spec_hash: &str,
    campaign_id: i64,
    recipient_id: i64,
    to: &str,
    rendered: &Rendered,
    dkim: Option<&lettre::message::dkim::DkimConfig>,
) -> Result<Outgoing, MessageError> {
    Sender::of(spec)?.build(spec_hash, campaign_id, recipient_id, to, rendered, dkim)
}
