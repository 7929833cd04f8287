//! One SMTP transaction pipelined (RFC 2920), for a relay that offers PIPELINING.
//!
//! Owns the transaction as lettre's `send` makes it (the same MAIL parameters, the same checks, the
//! same bytes on the wire, the connection closed after any refusal), but MAIL, RCPT and DATA go out in
//! one write and their answers are read together, then the message and its closing dot go out in one
//! write. Two round trips and two writes instead of four and five: on a loopback relay at thousands of
//! messages per second, the writes, reads and task wake-ups were the largest part of the daemon's own
//! CPU (docs/benchmarks.md). Lettre has no pipelining; this uses only its public `command` and
//! `read_response`. Anything this path does not handle (a message that is not UTF-8, or one lettre
//! refuses before MAIL) goes through lettre's `send`.

use lettre::address::Envelope;
use lettre::transport::smtp::Error;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;

/// Sends one message in a pipelined transaction (or through lettre's `send`, see the module header).
pub(super) async fn send(
    conn: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    bytes: &[u8],
) -> Result<Response, Error> {
    let Some((text, commands)) = commands(conn, envelope, bytes) else {
        return conn.send(envelope, bytes).await;
    };
    exchange(conn, &commands, 2 + envelope.to().len()).await?;
    let answer = conn.command(DotStuffed(text)).await;
    if answer.is_err() {
        conn.abort().await;
    }
    answer
}

/// The message as text and MAIL, RCPT and DATA as one string; `None` when lettre's `send` must take
/// the message: not UTF-8, or an extension it needs is missing (lettre's own refusal, word for word).
fn commands<'a>(
    conn: &AsyncSmtpConnection,
    envelope: &Envelope,
    bytes: &'a [u8],
) -> Option<(&'a str, String)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut options = Vec::new();
    let non_ascii = envelope
        .from()
        .into_iter()
        .chain(envelope.to())
        .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
    if non_ascii {
        if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            return None;
        }
        options.push(MailParameter::SmtpUtfEight);
    }
    if !bytes.is_ascii() {
        if !conn.server_info().supports_feature(Extension::EightBitMime) {
            return None;
        }
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    let mut commands = Mail::new(envelope.from().cloned(), options).to_string();
    for to in envelope.to() {
        commands.push_str(&Rcpt::new(to.clone(), vec![]).to_string());
    }
    commands.push_str(&Data.to_string());
    Some((text, commands))
}

/// Writes the pipelined commands and reads one answer per command, in order. All of them are read
/// (they are on their way whatever happened), and the first refusal is the transaction's answer: the
/// connection is then ended and closed, as lettre's `send` does after a refusal.
async fn exchange(
    conn: &mut AsyncSmtpConnection,
    commands: &str,
    answers: usize,
) -> Result<(), Error> {
    let mut refusal = None;
    let mut data_accepted = false;
    for i in 0..answers {
        let answer = if i == 0 {
            conn.command(commands).await
        } else {
            conn.read_response().await
        };
        match answer {
            Ok(_) if i + 1 == answers => data_accepted = true,
            Ok(_) => {}
            Err(e) => {
                let broken = e.is_transient() || e.is_permanent();
                refusal.get_or_insert(e);
                if !broken {
                    // The connection failed (not a refusal): no more answers will come.
                    break;
                }
            }
        }
    }
    let Some(e) = refusal else {
        return Ok(());
    };
    if data_accepted {
        // A relay that took DATA after refusing the sender or every recipient: end the empty
        // message so that the connection can be closed cleanly.
        let _ = conn.message(b"").await;
    }
    conn.abort().await;
    Err(e)
}

/// The message as it goes after DATA: a `.` that begins a line (after CRLF, or the first byte) gets
/// another, exactly as lettre's codec does, then the closing `CRLF . CRLF`. Written straight into
/// the command buffer (one copy of the message, not two).
struct DotStuffed<'a>(&'a str);

impl std::fmt::Display for DotStuffed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        let text = self.0;
        if text.starts_with('.') {
            f.write_char('.')?;
        }
        let mut from = 0;
        for (at, _) in text.match_indices("\r\n.") {
            f.write_str(&text[from..at + 3])?;
            f.write_char('.')?;
            from = at + 3;
        }
        f.write_str(&text[from..])?;
        f.write_str("\r\n.\r\n")
    }
}

#[cfg(test)]
mod tests {
    use super::DotStuffed;

    fn dot_stuffed(text: &str) -> String {
        DotStuffed(text).to_string()
    }

    #[test]
    fn dots_that_begin_a_line_are_doubled_as_lettre_does() {
        assert_eq!(dot_stuffed(".a"), "..a\r\n.\r\n");
        assert_eq!(
            dot_stuffed("a\r\n.b\r\n..c\r\nd.e\n.f"),
            "a\r\n..b\r\n...c\r\nd.e\n.f\r\n.\r\n",
            "after CRLF only: a bare LF does not begin a line"
        );
        assert_eq!(dot_stuffed(""), "\r\n.\r\n");
        // A CR before the CRLF, and dot-only lines back to back.
        assert_eq!(
            dot_stuffed("f\r\r\n.g\r\n.\r\n."),
            "f\r\r\n..g\r\n..\r\n..\r\n.\r\n"
        );
    }
}
