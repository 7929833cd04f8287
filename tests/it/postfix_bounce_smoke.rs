//! The Postfix harness (common::postfix) end to end, without the daemon: a real Postfix on loopback
//! takes two messages over STARTTLS, relays one to a sink and one to a server that refuses every
//! recipient, and delivers its own DSN for the refused one to the VERP sender's domain through a
//! pipe(8) transport; a pipe command that answers 75 (EX_TEMPFAIL) gets the DSN again shortly after.
//! Postfix's log is printed when a test here fails.

use std::time::{Duration, Instant};

use crate::common::postfix::{PipeCommand, PostfixInstance, PostfixOptions, wait_until};
use crate::common::smtp::{Behaviour, Script, SmtpServer};

const VERP: &str = "bounces+abc123@bounce.test";

fn notice(to: &str, id: &str) -> Vec<u8> {
    format!(
        "From: Example Org <notices@example.org>\r\nTo: <{to}>\r\nSubject: Notice of a data breach\r\n\
         Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{id}@notify.example.org>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nWe are writing to tell you.\r\n"
    )
    .into_bytes()
}

async fn servers() -> (SmtpServer, SmtpServer) {
    let sink = SmtpServer::start(Script::new()).await;
    let refuser = SmtpServer::start(Script::new().default_behaviour(Behaviour::reply(
        550,
        "5.1.1 <recipient>: Recipient address rejected: User unknown",
    )))
    .await;
    (sink, refuser)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_recipient_comes_back_as_one_dsn_through_the_pipe() {
    let begun = Instant::now();
    let (sink, refuser) = servers().await;
    let postfix = PostfixInstance::start(PostfixOptions::new(
        sink.port(),
        refuser.port(),
        PipeCommand::recorder(&[]),
    ));

    let queued = postfix
        .submit(VERP, &["a@ok.test"], &notice("a@ok.test", "n.1"))
        .await;
    assert!(queued.contains("queued as"), "reply {queued:?}");
    postfix
        .submit(VERP, &["b@refuse.test"], &notice("b@refuse.test", "n.2"))
        .await;
    postfix.flush();

    if !sink.wait_for(1, Duration::from_secs(15)).await {
        postfix.fail("the sink got nothing");
    }
    if !wait_until(Duration::from_secs(15), || !postfix.pipe_calls().is_empty()).await {
        postfix.fail("no DSN reached the pipe");
    }
    if !wait_until(Duration::from_secs(10), || postfix.queue_is_empty()).await {
        postfix.fail("the queue did not empty");
    }
    let delivered_in = begun.elapsed();

    // The sink: exactly the accepted recipient, with the VERP envelope sender, relayed by Postfix.
    let received = sink.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].rcpt_to, ["a@ok.test"]);
    assert_eq!(received[0].mail_from, VERP);
    assert!(
        received[0]
            .text()
            .contains("Message-ID: <n.1@notify.example.org>")
    );
    // The refuser: asked once, accepted nothing.
    assert_eq!(refuser.rcpt_attempts("b@refuse.test"), 1);
    assert_eq!(refuser.received_count(), 0);

    // The pipe: one DSN, to the VERP address, from the null sender, run as the unprivileged user.
    let calls = postfix.pipe_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call.exit_code, 0);
    assert_eq!(call.recipient, VERP);
    assert_eq!(
        call.sender, "",
        "the null sender, as pipe(8) passes it with null_sender="
    );
    assert_eq!(call.user, "nobody");
    let dsn = call.text();
    for expected in [
        "Return-Path: <>",
        "Content-Type: multipart/report; report-type=delivery-status;",
        "Content-Type: message/delivery-status",
        "Final-Recipient: rfc822; b@refuse.test",
        "Action: failed",
        "Status: 5.1.1",
        "Diagnostic-Code: smtp; 550 5.1.1",
        "Message-ID: <n.2@notify.example.org>",
    ] {
        assert!(dsn.contains(expected), "DSN lacks {expected:?}:\n{dsn}");
    }
    assert!(
        !dsn.contains("a@ok.test"),
        "the delivered recipient is in the DSN:\n{dsn}"
    );

    // The submissions came over TLS.
    let log = postfix.log();
    assert!(
        log.contains("TLS connection established from unknown[127.0.0.1]"),
        "no STARTTLS in the log:\n{log}"
    );
    eprintln!(
        "postfix started in {:?}; both messages delivered and the DSN piped {:?} after the test began",
        postfix.started_in, delivered_in
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipe_tempfail_75_is_retried_until_it_succeeds() {
    let (sink, refuser) = servers().await;
    let postfix = PostfixInstance::start(PostfixOptions::new(
        sink.port(),
        refuser.port(),
        PipeCommand::recorder(&[75]),
    ));
    let begun = Instant::now();
    let verp = "bounces+retry1@bounce.test";
    postfix
        .submit(verp, &["b@refuse.test"], &notice("b@refuse.test", "n.3"))
        .await;

    // No flush: the short backoff alone must bring the retry.
    if !wait_until(Duration::from_secs(20), || postfix.pipe_calls().len() >= 2).await {
        postfix.fail("the DSN was not retried after exit 75");
    }
    if !wait_until(Duration::from_secs(10), || postfix.queue_is_empty()).await {
        postfix.fail("the queue did not empty");
    }
    let calls = postfix.pipe_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        calls.iter().map(|c| c.exit_code).collect::<Vec<_>>(),
        [75, 0]
    );
    assert!(calls.iter().all(|c| c.recipient == verp));
    // The same queued DSN both times.
    assert_eq!(calls[0].data, calls[1].data);
    assert!(calls[1].text().contains("Status: 5.1.1"));
    let log = postfix.log();
    assert!(
        log.contains("relay=bouncepipe, delay=") && log.contains("status=deferred"),
        "no deferral in the log:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("relay=bouncepipe") && l.contains("status=sent")),
        "no final delivery in the log:\n{log}"
    );
    eprintln!(
        "exit 75, retry and final delivery done {:?} after the test began",
        begun.elapsed()
    );
}

/// What a real ingest command will rely on: an explicit command line (an argument with spaces, `$$`
/// for a literal `$`, Postfix's `${original_recipient}`), environment from `pipe_env` (a value with a
/// space), and a file only the pipe user may read (as a config file with database credentials).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argv_pipe_gets_recipient_environment_and_a_private_file() {
    let (sink, refuser) = servers().await;
    let script = "cat > \"$$BN_PIPE_DIR/argv.eml\"; \
                  printf '%s|%s|%s|%s' \"$$1\" \"$$BN_TEST_TOKEN\" \"$$(id -un)\" \
                  \"$$(cat \"$$BN_PIPE_DIR/../../secret\")\" > \"$$BN_PIPE_DIR/argv.txt\"";
    let mut options = PostfixOptions::new(
        sink.port(),
        refuser.port(),
        PipeCommand::Argv(
            ["/bin/sh", "-c", script, "sh", "${original_recipient}"]
                .map(String::from)
                .to_vec(),
        ),
    );
    options
        .pipe_env
        .push(("BN_TEST_TOKEN".to_string(), "t0 ken".to_string()));
    let postfix = PostfixInstance::start(options);
    let secret = postfix.dir().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    postfix.give_to_pipe_user(&secret);
    assert_eq!(
        std::fs::read_to_string(postfix.ca_file()).unwrap(),
        postfix.ca_pem()
    );

    std::net::TcpStream::connect(("127.0.0.1", postfix.port())).expect("Postfix listens");
    postfix
        .submit("sender@example.org", &[VERP], &notice(VERP, "n.4"))
        .await;
    let out = postfix.pipe_dir().join("argv.txt");
    if !wait_until(Duration::from_secs(15), || {
        out.exists() && postfix.queue_is_empty()
    })
    .await
    {
        postfix.fail("the argv command did not run");
    }
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        format!("{VERP}|t0 ken|nobody|s3cret")
    );
    let message = std::fs::read_to_string(postfix.pipe_dir().join("argv.eml")).unwrap();
    assert!(
        message.starts_with("Return-Path: <sender@example.org>"),
        "{message}"
    );
    assert!(
        message.contains("Message-ID: <n.4@notify.example.org>"),
        "{message}"
    );
}
