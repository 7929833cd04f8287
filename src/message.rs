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
use crate::template::Rendered;

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

/// Builds the notice for one recipient, with its stable Message-ID.
pub fn build(
    spec: &CampaignSpec,
    spec_hash: &str,
    campaign_id: i64,
    recipient_id: i64,
    to: &str,
    rendered: &Rendered,
    dkim: Option<&lettre::message::dkim::DkimConfig>,
) -> Result<Outgoing, MessageError> {
    let id = message_id(
        spec_hash,
        campaign_id,
        recipient_id,
        spec.from_mailbox().email.domain(),
    );
    build_with_id(spec, id, recipient_id, to, rendered, dkim)
}

/// A test copy for a seed mailbox: the same message under a Message-ID of its own
/// (`<bn-test.CAMPAIGN.RECIPIENT.NANOS@DOMAIN>`), so it never shares the real notice's id.
pub fn build_sample(
    spec: &CampaignSpec,
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
        spec.from_mailbox().email.domain()
    );
    build_with_id(spec, id, recipient_id, to, rendered, dkim)
}

fn build_with_id(
    spec: &CampaignSpec,
    id: String,
    recipient_id: i64,
    to: &str,
    rendered: &Rendered,
    dkim: Option<&lettre::message::dkim::DkimConfig>,
) -> Result<Outgoing, MessageError> {
    let to_address = Address::from_str(to).map_err(|_| MessageError::BadAddress(recipient_id))?;
    let from = spec.from_mailbox();
    let mut builder = Message::builder()
        .from(from.clone())
        .to(Mailbox::new(None, to_address.clone()))
        .subject(rendered.subject.clone())
        .message_id(Some(id.clone()))
        .date_now();
    if let Some(reply_to) = &spec.sender.reply_to {
        builder = builder.reply_to(
            Mailbox::from_str(reply_to)
                .map_err(|e| MessageError::Build(recipient_id, e.to_string()))?,
        );
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
    let return_path = match &spec.sender.return_path {
        Some(rp) => {
            Mailbox::from_str(rp)
                .map_err(|e| MessageError::Build(recipient_id, e.to_string()))?
                .email
        }
        None => from.email,
    };
    let envelope = Envelope::new(Some(return_path), vec![to_address])
        .map_err(|e| MessageError::Build(recipient_id, e.to_string()))?;
    Ok(Outgoing {
        message_id: id,
        envelope,
        bytes: message.formatted(),
    })
}
