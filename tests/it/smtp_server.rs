//! Tests of the scripted SMTP test server (`tests/it/common/smtp.rs`) itself, over real TCP, with the SMTP
//! dialogue written by hand, so other tests can rely on it. One test also drives it with lettre, the
//! product's SMTP client.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::smtp::{self, Behaviour, Script, SmtpServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A hand-driven SMTP client.
struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the test server");
        let (reader, writer) = stream.into_split();
        Client {
            reader: BufReader::new(reader),
            writer,
        }
    }

    /// Connects and expects the 220 greeting.
    async fn open(addr: SocketAddr) -> Client {
        let mut client = Client::connect(addr).await;
        let (code, _) = client.reply().await.expect("a greeting");
        assert_eq!(code, 220);
        client
    }

    /// Connects, expects the greeting, and says EHLO.
    async fn ehlo(addr: SocketAddr) -> Client {
        let mut client = Client::open(addr).await;
        assert_eq!(client.cmd("EHLO client.test").await.0, 250);
        client
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer
            .write_all(bytes)
            .await
            .expect("write to the test server");
    }

    async fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
    }

    /// Reads one (possibly multi-line) reply: the code and the text of every line; `None` if the
    /// server closed the connection first.
    async fn reply(&mut self) -> Option<(u16, Vec<String>)> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(TIMEOUT, self.reader.read_line(&mut line))
                .await
                .expect("a reply within the timeout")
                .unwrap_or(0);
            if n == 0 {
                assert!(
                    lines.is_empty(),
                    "connection closed in the middle of a reply: {lines:?}"
                );
                return None;
            }
            assert!(
                line.ends_with("\r\n"),
                "reply line not ending in CRLF: {line:?}"
            );
            let line = line.trim_end_matches("\r\n");
            let code: u16 = line[..3].parse().expect("a reply code");
            lines.push(line[4..].to_string());
            if line.as_bytes()[3] == b' ' {
                return Some((code, lines));
            }
            assert_eq!(line.as_bytes()[3], b'-', "bad reply line {line:?}");
        }
    }

    /// Sends a command and reads its reply (panics if the connection closes instead).
    async fn cmd(&mut self, line: &str) -> (u16, String) {
        self.send(line).await;
        let (code, lines) = self
            .reply()
            .await
            .unwrap_or_else(|| panic!("connection closed after {line:?}"));
        (code, lines.join("\n"))
    }

    /// Whether the server closes the connection without sending anything more.
    async fn is_closed(&mut self) -> bool {
        let mut rest = String::new();
        match tokio::time::timeout(TIMEOUT, self.reader.read_line(&mut rest)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) => panic!("expected the connection to close, got {rest:?}"),
            Err(_) => false,
        }
    }

    /// MAIL, RCPT (each must be accepted), DATA and the message; returns the final reply.
    async fn message(&mut self, from: &str, to: &[&str], body: &str) -> (u16, String) {
        assert_eq!(self.cmd(&format!("MAIL FROM:<{from}>")).await.0, 250);
        for rcpt in to {
            assert_eq!(
                self.cmd(&format!("RCPT TO:<{rcpt}>")).await.0,
                250,
                "RCPT {rcpt}"
            );
        }
        assert_eq!(self.cmd("DATA").await.0, 354);
        self.send_raw(body.as_bytes()).await;
        self.cmd(".").await
    }
}

fn notice(message_id: &str) -> String {
    format!(
        "From: dpo@sender.test\r\nTo: someone@example.org\r\nMessage-ID: {message_id}\r\nSubject: Notice\r\n\r\nBody.\r\n"
    )
}

#[tokio::test]
async fn full_dialogue_is_answered_and_recorded() {
    let server = SmtpServer::start(Script::new()).await;
    let mut c = Client::open(server.addr()).await;

    c.send("EHLO client.test").await;
    let (code, lines) = c.reply().await.unwrap();
    assert_eq!(code, 250);
    assert!(lines[0].starts_with(smtp::HOSTNAME), "{lines:?}");
    for ext in ["PIPELINING", "8BITMIME", "SMTPUTF8"] {
        assert!(
            lines.iter().any(|l| l == ext),
            "{ext} missing from {lines:?}"
        );
    }
    assert!(lines.last().unwrap().starts_with("SIZE "), "{lines:?}");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("STARTTLS") || l.starts_with("AUTH")),
        "{lines:?}"
    );

    let (code, _) = c
        .cmd("MAIL FROM:<dpo@sender.test> SIZE=200 BODY=8BITMIME SMTPUTF8")
        .await;
    assert_eq!(code, 250);
    assert_eq!(c.cmd("RCPT TO:<Alice@Example.org>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send_raw(
        b"From: dpo@sender.test\r\nmessage-id:   <id-1@sender.test>  \r\nSubject: Hi\r\n\r\n",
    )
    .await;
    c.send_raw(b"..a line starting with a dot\r\n...\r\n.\r\n")
        .await;
    let (code, text) = c.reply().await.map(|(c, l)| (c, l.join("\n"))).unwrap();
    assert_eq!(code, 250);
    assert!(text.starts_with("2.0.0 Ok: queued as "), "{text}");
    assert_eq!(c.cmd("QUIT").await.0, 221);
    assert!(c.is_closed().await);

    let received = server.received();
    assert_eq!(received.len(), 1);
    let r = &received[0];
    assert_eq!(r.mail_from, "dpo@sender.test");
    assert_eq!(r.rcpt_to, ["Alice@Example.org"]);
    assert_eq!(r.message_id.as_deref(), Some("<id-1@sender.test>"));
    assert_eq!(
        r.queue_id.as_deref(),
        text.strip_prefix("2.0.0 Ok: queued as ")
    );
    assert_eq!(
        r.text(),
        "From: dpo@sender.test\r\nmessage-id:   <id-1@sender.test>  \r\nSubject: Hi\r\n\r\n.a line starting with a dot\r\n..\r\n"
    );
    assert_eq!(r.header("subject").as_deref(), Some("Hi"));
    assert_eq!(
        server.count_by_message_id().get("<id-1@sender.test>"),
        Some(&1)
    );
    assert_eq!(server.rcpt_attempts("alice@example.org"), 1);
    assert_eq!(server.connections_opened(), 1);
    assert_eq!(server.swallowed_count(), 0);
}

#[tokio::test]
async fn other_commands_sequencing_and_bare_lf() {
    let server = SmtpServer::start(Script::new()).await;
    let mut c = Client::open(server.addr()).await;
    assert_eq!(
        c.cmd("MAIL FROM:<a@b.test>").await.0,
        503,
        "MAIL before EHLO"
    );
    assert_eq!(c.cmd("HELO client.test").await.0, 250);
    assert_eq!(c.cmd("NOOP").await.0, 250);
    assert_eq!(c.cmd("FROBNICATE").await.0, 500);
    assert_eq!(c.cmd("STARTTLS").await.0, 502);
    assert_eq!(
        c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==").await.0,
        502,
        "AUTH not advertised"
    );
    assert_eq!(c.cmd("RCPT TO:<x@y.test>").await.0, 503, "RCPT before MAIL");
    assert_eq!(c.cmd("DATA").await.0, 503, "DATA before MAIL");
    assert_eq!(c.cmd("MAIL FROM:<>").await.0, 250, "null sender");
    assert_eq!(c.cmd("MAIL FROM:<a@b.test>").await.0, 503, "nested MAIL");
    assert_eq!(c.cmd("DATA").await.0, 554, "DATA without recipients");
    assert_eq!(c.cmd("RSET").await.0, 250);
    assert_eq!(
        c.cmd("RCPT TO:<x@y.test>").await.0,
        503,
        "RSET ended the transaction"
    );
    assert_eq!(c.cmd("MAIL FROM:<a@b.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<>").await.0, 501);
    assert_eq!(c.cmd("RCPT TO:<x@y.test>").await.0, 250);
    assert_eq!(c.cmd("RSET").await.0, 250);

    // Bare LF line endings and lower-case commands, with a space before the path.
    c.send_raw(b"mail from: <lf@sender.test>\n").await;
    assert_eq!(c.reply().await.unwrap().0, 250);
    c.send_raw(b"rcpt to: <lf@example.org>\n").await;
    assert_eq!(c.reply().await.unwrap().0, 250);
    c.send_raw(b"data\n").await;
    assert_eq!(c.reply().await.unwrap().0, 354);
    c.send_raw(b"Message-Id: <lf@sender.test>\nX: y\n\n..dot\nend\n.\n")
        .await;
    assert_eq!(c.reply().await.unwrap().0, 250);
    c.send_raw(b"quit\n").await;
    assert_eq!(c.reply().await.unwrap().0, 221);
    assert!(c.is_closed().await);

    let r = &server.received()[0];
    assert_eq!(r.mail_from, "lf@sender.test");
    assert_eq!(r.rcpt_to, ["lf@example.org"]);
    assert_eq!(r.data, b"Message-Id: <lf@sender.test>\nX: y\n\n.dot\nend\n");
    assert_eq!(r.message_id.as_deref(), Some("<lf@sender.test>"));
    assert_eq!(server.received_count(), 1);
    assert_eq!(
        server.rcpt_attempts("x@y.test"),
        1,
        "the RCPT outside a transaction does not count"
    );
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let server = SmtpServer::start(Script::new()).await;
    let mut c = Client::ehlo(server.addr()).await;
    c.send_raw(b"MAIL FROM:<p@sender.test>\r\nRCPT TO:<p1@example.org>\r\nRCPT TO:<p2@example.org>\r\nDATA\r\n").await;
    for expected in [250, 250, 250, 354] {
        assert_eq!(c.reply().await.unwrap().0, expected);
    }
    c.send_raw(format!("{}.\r\nQUIT\r\n", notice("<p@sender.test>")).as_bytes())
        .await;
    assert_eq!(c.reply().await.unwrap().0, 250);
    assert_eq!(c.reply().await.unwrap().0, 221);
    assert_eq!(
        server.received()[0].rcpt_to,
        ["p1@example.org", "p2@example.org"]
    );
}

#[tokio::test]
async fn rules_match_in_order_by_address_domain_and_predicate() {
    let script = Script::new()
        .for_address("vip@bounce.test", Behaviour::Accept)
        .for_address(
            "Nobody@Example.org",
            Behaviour::reply(550, "5.1.1 No such user"),
        )
        .for_domain("bounce.test", Behaviour::reply(451, "4.3.0 Try later"))
        .when(
            |a| a.starts_with("full"),
            Behaviour::reply(452, "4.2.2 Mailbox full\nreally full"),
        );
    let server = SmtpServer::start(script).await;
    let mut c = Client::ehlo(server.addr()).await;
    assert_eq!(c.cmd("MAIL FROM:<dpo@sender.test>").await.0, 250);
    assert_eq!(
        c.cmd("RCPT TO:<nobody@example.org>").await,
        (550, "5.1.1 No such user".to_string())
    );
    assert_eq!(
        c.cmd("RCPT TO:<x@BOUNCE.test>").await,
        (451, "4.3.0 Try later".to_string())
    );
    assert_eq!(
        c.cmd("RCPT TO:<x@sub.bounce.test>").await.0,
        250,
        "subdomains do not match"
    );
    assert_eq!(
        c.cmd("RCPT TO:<vip@bounce.test>").await.0,
        250,
        "earlier rule wins"
    );
    assert_eq!(
        c.cmd("RCPT TO:<full@example.org>").await,
        (452, "4.2.2 Mailbox full\nreally full".to_string())
    );
    assert_eq!(
        c.cmd("RCPT TO:<ok@example.org>").await.0,
        250,
        "default accepts"
    );
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send_raw(notice("<multi@sender.test>").as_bytes()).await;
    assert_eq!(c.cmd(".").await.0, 250);

    let r = &server.received()[0];
    assert_eq!(
        r.rcpt_to,
        ["x@sub.bounce.test", "vip@bounce.test", "ok@example.org"]
    );
    assert_eq!(server.rcpt_attempts("NOBODY@example.org"), 1);

    // A default other than Accept.
    server.set_script(Script::new().default_behaviour(Behaviour::reply(550, "5.7.1 Relay denied")));
    assert_eq!(c.cmd("MAIL FROM:<dpo@sender.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<ok@example.org>").await.0, 550);
}

#[tokio::test]
async fn reply_421_at_rcpt_closes_the_connection() {
    let server = SmtpServer::start(
        Script::new().for_domain("busy.test", Behaviour::reply(421, "4.3.2 Shutting down")),
    )
    .await;
    let mut c = Client::ehlo(server.addr()).await;
    assert_eq!(c.cmd("MAIL FROM:<dpo@sender.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<a@busy.test>").await.0, 421);
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn reply_after_data_is_the_final_answer() {
    let script = Script::new()
        .for_address(
            "reject@example.org",
            Behaviour::reply_after_data(554, "5.7.1 Spam"),
        )
        .for_address(
            "custom-ok@example.org",
            Behaviour::reply_after_data(250, "2.0.0 Fine"),
        );
    let server = SmtpServer::start(script).await;
    let mut c = Client::ehlo(server.addr()).await;
    let reply = c
        .message(
            "dpo@sender.test",
            &["reject@example.org"],
            &notice("<r1@sender.test>"),
        )
        .await;
    assert_eq!(reply, (554, "5.7.1 Spam".to_string()));
    assert_eq!(server.received_count(), 0);
    let reply = c
        .message(
            "dpo@sender.test",
            &["custom-ok@example.org"],
            &notice("<r2@sender.test>"),
        )
        .await;
    assert_eq!(reply, (250, "2.0.0 Fine".to_string()));
    assert_eq!(server.received_count(), 1);
    assert_eq!(server.received()[0].queue_id, None);
    // The session goes on.
    let reply = c
        .message(
            "dpo@sender.test",
            &["other@example.org"],
            &notice("<r3@sender.test>"),
        )
        .await;
    assert_eq!(reply.0, 250);
    assert_eq!(server.received_count(), 2);
}

#[tokio::test]
async fn disconnect_at_rcpt_closes_without_a_reply() {
    let server = SmtpServer::start(
        Script::new().for_address("drop@example.org", Behaviour::DisconnectAtRcpt),
    )
    .await;
    let mut c = Client::ehlo(server.addr()).await;
    assert_eq!(c.cmd("MAIL FROM:<dpo@sender.test>").await.0, 250);
    c.send("RCPT TO:<drop@example.org>").await;
    assert!(c.reply().await.is_none());
    assert_eq!(server.rcpt_attempts("drop@example.org"), 1);
    assert_eq!(server.received_count() + server.swallowed_count(), 0);
}

#[tokio::test]
async fn disconnect_after_data_swallows_the_message() {
    let server = SmtpServer::start(
        Script::new().for_address("void@example.org", Behaviour::DisconnectAfterData),
    )
    .await;
    let mut c = Client::ehlo(server.addr()).await;
    assert_eq!(c.cmd("MAIL FROM:<dpo@sender.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<void@example.org>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send_raw(format!("{}.\r\n", notice("<gone@sender.test>")).as_bytes())
        .await;
    assert!(c.reply().await.is_none(), "no reply after the message");
    assert_eq!(server.received_count(), 0);
    let swallowed = server.swallowed();
    assert_eq!(swallowed.len(), 1);
    assert_eq!(
        swallowed[0].message_id.as_deref(),
        Some("<gone@sender.test>")
    );
    assert_eq!(swallowed[0].rcpt_to, ["void@example.org"]);
    assert!(server.count_by_message_id().is_empty());
}

#[tokio::test]
async fn slow_data_delays_the_final_reply() {
    let delay = Duration::from_millis(300);
    let server = SmtpServer::start(
        Script::new().for_address("slow@example.org", Behaviour::SlowData(delay)),
    )
    .await;
    let mut c = Client::ehlo(server.addr()).await;
    let start = Instant::now();
    let reply = c
        .message(
            "dpo@sender.test",
            &["slow@example.org"],
            &notice("<slow@sender.test>"),
        )
        .await;
    assert_eq!(reply.0, 250);
    assert!(
        start.elapsed() >= delay,
        "answered after {:?}",
        start.elapsed()
    );
    assert_eq!(server.received_count(), 1);
}

#[tokio::test]
async fn fail_first_fails_n_attempts_then_accepts() {
    let server = SmtpServer::start(Script::new().for_address(
        "flaky@example.org",
        Behaviour::fail_first(2, 451, "4.7.1 Greylisted"),
    ))
    .await;
    // Two attempts on separate connections, as a retrying client would make.
    for _ in 0..2 {
        let mut c = Client::ehlo(server.addr()).await;
        assert_eq!(c.cmd("MAIL FROM:<dpo@sender.test>").await.0, 250);
        assert_eq!(
            c.cmd("RCPT TO:<flaky@example.org>").await,
            (451, "4.7.1 Greylisted".to_string())
        );
        assert_eq!(c.cmd("QUIT").await.0, 221);
    }
    let mut c = Client::ehlo(server.addr()).await;
    assert_eq!(
        c.message(
            "dpo@sender.test",
            &["flaky@example.org"],
            &notice("<f@sender.test>")
        )
        .await
        .0,
        250
    );
    assert_eq!(server.rcpt_attempts("flaky@example.org"), 3);
    assert_eq!(server.connections_opened(), 3);

    // A new script starts counting again; 421 closes the connection.
    server.set_script(Script::new().default_behaviour(Behaviour::fail_first(1, 421, "4.4.5 Busy")));
    assert_eq!(c.cmd("MAIL FROM:<dpo@sender.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<flaky@example.org>").await.0, 421);
    assert!(c.is_closed().await);
    let mut c = Client::ehlo(server.addr()).await;
    assert_eq!(
        c.message(
            "dpo@sender.test",
            &["flaky@example.org"],
            &notice("<f2@sender.test>")
        )
        .await
        .0,
        250
    );
}

#[tokio::test]
async fn connection_limit_refuses_with_421() {
    let server = SmtpServer::start(Script::new().max_connections(Some(1))).await;
    let mut first = Client::ehlo(server.addr()).await;
    let mut second = Client::connect(server.addr()).await;
    let (code, lines) = second.reply().await.expect("a 421");
    assert_eq!(
        (code, lines[0].as_str()),
        (421, "4.7.0 Too many connections")
    );
    assert!(second.is_closed().await);

    assert_eq!(first.cmd("QUIT").await.0, 221);
    assert!(first.is_closed().await);
    // The session has ended before the client saw the close, so a new one fits.
    let mut third = Client::ehlo(server.addr()).await;
    assert_eq!(third.cmd("QUIT").await.0, 221);
    assert_eq!(server.connections_opened(), 3);
    assert_eq!(server.max_concurrent_connections(), 1);
}

#[tokio::test]
async fn down_server_closes_connections_at_once() {
    let server = SmtpServer::start(Script::new()).await;
    server.set_down(true);
    assert!(server.is_down());
    let mut c = Client::connect(server.addr()).await;
    assert!(c.reply().await.is_none(), "no greeting while down");
    server.set_down(false);
    let mut c = Client::ehlo(server.addr()).await;
    assert_eq!(
        c.message(
            "dpo@sender.test",
            &["a@example.org"],
            &notice("<d@sender.test>")
        )
        .await
        .0,
        250
    );
    assert_eq!(server.connections_opened(), 2);
    assert_eq!(server.max_concurrent_connections(), 1);
}

#[tokio::test]
async fn connections_are_served_concurrently() {
    let server = SmtpServer::start(Script::new()).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(Client::ehlo(server.addr()).await);
    }
    assert_eq!(server.active_connections(), 3);
    let sends = clients.into_iter().enumerate().map(|(i, mut c)| {
        tokio::spawn(async move {
            let id = format!("<c{i}@sender.test>");
            assert_eq!(
                c.message(
                    "dpo@sender.test",
                    &[&format!("r{i}@example.org")],
                    &notice(&id)
                )
                .await
                .0,
                250
            );
            assert_eq!(c.cmd("QUIT").await.0, 221);
        })
    });
    for send in sends.collect::<Vec<_>>() {
        send.await.unwrap();
    }
    assert!(server.wait_for(3, TIMEOUT).await);
    assert_eq!(server.max_concurrent_connections(), 3);
    let counts = server.count_by_message_id();
    assert_eq!(counts.len(), 3);
    assert!(counts.values().all(|&n| n == 1));
}

#[tokio::test]
async fn wait_for_waits_and_times_out() {
    let server = SmtpServer::start(Script::new()).await;
    let start = Instant::now();
    assert!(!server.wait_for(1, Duration::from_millis(100)).await);
    assert!(start.elapsed() >= Duration::from_millis(100));

    let addr = server.addr();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = Client::ehlo(addr).await;
        for i in 0..2 {
            let id = format!("<w{i}@sender.test>");
            assert_eq!(
                c.message("dpo@sender.test", &["a@example.org"], &notice(&id))
                    .await
                    .0,
                250
            );
        }
    });
    assert!(server.wait_for(2, TIMEOUT).await);
    assert_eq!(server.received_count(), 2);
    sender.await.unwrap();
}

#[tokio::test]
async fn auth_accepts_any_credentials_when_advertised() {
    let server = SmtpServer::start(Script::new().advertise_auth(true)).await;
    let mut c = Client::open(server.addr()).await;
    let (code, ehlo) = c.cmd("EHLO client.test").await;
    assert_eq!(code, 250);
    assert!(ehlo.lines().any(|l| l == "AUTH PLAIN LOGIN"), "{ehlo}");
    assert_eq!(c.cmd("AUTH CRAM-MD5").await.0, 504);
    assert_eq!(c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==").await.0, 235);
    assert_eq!(
        c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==").await.0,
        503,
        "already authenticated"
    );

    let mut c = Client::ehlo(server.addr()).await;
    assert_eq!(c.cmd("AUTH LOGIN").await, (334, "VXNlcm5hbWU6".to_string()));
    assert_eq!(c.cmd("Ym9i").await, (334, "UGFzc3dvcmQ6".to_string()));
    assert_eq!(c.cmd("cHc=").await.0, 235);

    let mut c = Client::ehlo(server.addr()).await;
    assert_eq!(c.cmd("AUTH PLAIN").await, (334, String::new()));
    assert_eq!(c.cmd("*").await.0, 501, "cancelled");
    assert_eq!(server.auth_usernames(), ["alice", "bob"]);
}

#[tokio::test]
async fn oversize_messages_are_refused_and_the_session_goes_on() {
    let server = SmtpServer::start(Script::new().max_message_size(100)).await;
    let mut c = Client::ehlo(server.addr()).await;
    assert_eq!(
        c.cmd("MAIL FROM:<dpo@sender.test> SIZE=101").await.0,
        552,
        "declared size"
    );
    let big = format!(
        "Message-ID: <big@sender.test>\r\n\r\n{}\r\n",
        "x".repeat(200)
    );
    assert_eq!(
        c.message("dpo@sender.test", &["a@example.org"], &big)
            .await
            .0,
        552
    );
    let exact = format!("\r\n{}\r\n", "y".repeat(96)); // 100 bytes
    assert_eq!(
        c.message("dpo@sender.test", &["a@example.org"], &exact)
            .await
            .0,
        250
    );
    assert_eq!(server.received_count(), 1);
    assert_eq!(server.received()[0].data.len(), 100);
}

#[tokio::test]
async fn shutdown_closes_the_port_and_keeps_the_records() {
    let server = SmtpServer::start(Script::new()).await;
    let mut c = Client::ehlo(server.addr()).await;
    assert_eq!(
        c.message(
            "dpo@sender.test",
            &["a@example.org"],
            &notice("<s@sender.test>")
        )
        .await
        .0,
        250
    );
    server.shutdown().await;
    assert!(c.is_closed().await, "open sessions are aborted");
    assert!(
        TcpStream::connect(server.addr()).await.is_err(),
        "port still open after shutdown"
    );
    assert_eq!(server.received_count(), 1);
    server.shutdown().await; // twice is fine
}

#[tokio::test]
async fn dropping_the_server_closes_the_port() {
    let server = SmtpServer::start(Script::new()).await;
    let addr = server.addr();
    drop(server);
    let deadline = Instant::now() + TIMEOUT;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "port still open after drop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The product's own client, lettre, gets along with the server (greeting, EHLO parsing, params).
#[tokio::test]
async fn lettre_can_send_through_it() {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let server = SmtpServer::start(Script::new().for_address(
        "bounce@example.org",
        Behaviour::reply(550, "5.1.1 No such user"),
    ))
    .await;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.port())
        .build();
    let message = |to: &str, id: &str| {
        Message::builder()
            .from("DPO <dpo@sender.test>".parse().unwrap())
            .to(to.parse().unwrap())
            .subject("Notice of a data breach — Überblick")
            .message_id(Some(id.to_string()))
            .body("Line one.\n.leading dot\n".to_string())
            .unwrap()
    };
    let response = transport
        .send(message("alice@example.org", "<l1@sender.test>"))
        .await
        .expect("lettre send");
    assert_eq!(response.code().to_string(), "250");
    let error = transport
        .send(message("bounce@example.org", "<l2@sender.test>"))
        .await
        .expect_err("a 550");
    assert!(error.is_permanent(), "{error}");

    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].mail_from, "dpo@sender.test");
    assert_eq!(received[0].rcpt_to, ["alice@example.org"]);
    assert_eq!(received[0].message_id.as_deref(), Some("<l1@sender.test>"));
    assert!(
        received[0].text().contains("\r\n.leading dot\r\n"),
        "{}",
        received[0].text()
    );
    assert_eq!(server.rcpt_attempts("bounce@example.org"), 1);
}
