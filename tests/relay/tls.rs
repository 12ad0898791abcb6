//! TLS on the listener (`--tls-cert`): what only TLS has. Everything a
//! plain connection does is checked over TLS too by `over_tls_too!` in
//! the protocol files. Certificates are made here (rcgen, ECDSA P-256).

use crate::support::tls::{self, ca, client_config, client_config_with, inherit, root_store, Leaf};
use crate::support::*;
use rustls::HandshakeKind;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Certificate files the relay is started on and that the test then
/// replaces, as a renewal would.
struct Files {
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn holding(leaf: &Leaf) -> Files {
        let dir = tls::temp_dir("files");
        let files = Files {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        files.put(leaf);
        files
    }

    fn put(&self, leaf: &Leaf) {
        std::fs::copy(&leaf.cert, &self.cert).unwrap();
        std::fs::copy(&leaf.key, &self.key).unwrap();
    }

    fn config(&self) -> itty_relay::Config {
        itty_relay::Config {
            tls_cert: Some(self.cert.clone()),
            tls_key: Some(self.key.clone()),
            ..itty_relay::Config::default()
        }
    }
}

/// A TLS connection to the relay asking for `name`.
fn tls_to(relay: &Relay, config: Arc<rustls::ClientConfig>, name: &str) -> Conn {
    let tcp = TcpStream::connect(relay.addr).unwrap();
    tcp.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    Conn::tls(tcp, config, name)
}

fn tls_relay(files: &Files) -> Relay {
    inherit(Some(client_config()));
    let (cert, key) = (files.cert.clone(), files.key.clone());
    relay_with(move |c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
    })
}

#[test]
fn reload_serves_the_new_certificate_and_open_connections_keep_talking() {
    let first = ca().leaf(&["localhost", "127.0.0.1"], "first");
    let second = ca().leaf(&["localhost", "127.0.0.1"], "second");
    let files = Files::holding(&first);
    let relay = tls_relay(&files);
    let channel = unique("reload");
    let mut early = relay.join(&format!("/c/{channel}"));
    assert_eq!(early.ws.get_ref().peer_leaf().unwrap(), first.der);

    files.put(&second);
    let served = relay.server.as_ref().unwrap();
    assert_eq!(
        served.reload_certificates(&files.config()).unwrap(),
        Some(1)
    );
    let mut late = relay.join(&format!("/c/{channel}"));
    assert_eq!(late.ws.get_ref().peer_leaf().unwrap(), second.der);
    early.recv_event("join");

    early.send("\"from the first certificate\"");
    assert_eq!(late.recv_message()["message"], "from the first certificate");
    late.send("\"from the second\"");
    assert_eq!(early.recv_message()["message"], "from the second");
}

#[test]
fn a_broken_certificate_is_refused_on_reload_and_the_old_one_stays() {
    let first = ca().leaf(&["localhost", "127.0.0.1"], "kept");
    let other = ca().leaf(&["localhost"], "other");
    let files = Files::holding(&first);
    let relay = tls_relay(&files);
    let channel = unique("broken");
    let mut member = relay.join(&format!("/c/{channel}"));
    let server = relay.server.as_ref().unwrap();

    let secret_line = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg";
    for (what, cert, key) in [
        (
            "garbage",
            None,
            Some(format!("-----BEGIN PRIVATE KEY-----\n{secret_line}\n")),
        ),
        ("empty certificate", Some(String::new()), None),
        (
            "mismatched key",
            None,
            Some(std::fs::read_to_string(&other.key).unwrap()),
        ),
    ] {
        files.put(&first);
        if let Some(cert) = cert {
            std::fs::write(&files.cert, cert).unwrap();
        }
        if let Some(key) = key {
            std::fs::write(&files.key, key).unwrap();
        }
        let e = server
            .reload_certificates(&files.config())
            .unwrap_err()
            .to_string();
        assert!(e.contains(".pem"), "{what}: names the file: {e}");
        assert!(!e.contains(secret_line), "{what}: no key material: {e}");
        let mut fresh = relay.join(&format!("/c/{channel}"));
        assert_eq!(fresh.ws.get_ref().peer_leaf().unwrap(), first.der, "{what}");
        member.recv_event("join");
        fresh.send("\"still served\"");
        assert_eq!(member.recv_message()["message"], "still served");
    }
    std::fs::remove_file(&files.key).unwrap();
    let e = server
        .reload_certificates(&files.config())
        .unwrap_err()
        .to_string();
    assert!(e.contains("key.pem") && e.contains("cannot read"), "{e}");
}

#[test]
fn a_broken_certificate_stops_the_start_with_a_clear_message() {
    let leaf = ca().leaf(&["localhost"], "start");
    let other = ca().leaf(&["localhost"], "start-other");
    let dir = tls::temp_dir("start");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let start = |cert: &PathBuf, key: &PathBuf| {
        let config = itty_relay::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            shards: 2,
            pin: false,
            io_memory_bytes: 64 * 1024,
            tls_cert: Some(cert.clone()),
            tls_key: Some(key.clone()),
            ..itty_relay::Config::default()
        };
        itty_relay::Server::start(config)
            .err()
            .expect("refused")
            .to_string()
    };
    let e = start(&garbage, &leaf.key);
    assert!(
        e.contains("garbage.pem") && e.contains("no PEM certificate"),
        "{e}"
    );
    let e = start(&leaf.cert, &other.key);
    assert!(e.contains("does not match the certificate"), "{e}");
    let e = start(&leaf.cert, &dir.join("missing.key"));
    assert!(
        e.contains("missing.key") && e.contains("cannot read"),
        "{e}"
    );

    // The binary: the same sentence, and a failing exit status.
    let output = binary()
        .args(["--listen", "127.0.0.1:0", "--shards", "1", "--pin", "false"])
        .args(["--tls-cert", garbage.to_str().unwrap()])
        .args(["--tls-key", leaf.key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("garbage.pem"), "{stderr}");
}

#[test]
fn sighup_reloads_the_certificate_in_the_binary() {
    let first = ca().leaf(&["localhost", "127.0.0.1"], "hup-first");
    let second = ca().leaf(&["localhost", "127.0.0.1"], "hup-second");
    let files = Files::holding(&first);
    inherit(Some(client_config()));
    let process = spawn_relay(&[
        "--tls-cert",
        files.cert.to_str().unwrap(),
        "--tls-key",
        files.key.to_str().unwrap(),
    ]);
    let relay = &process.relay;
    let mut early = relay.join("/c/hup");
    files.put(&second);
    process.signal(libc::SIGHUP);
    process.wait_for_log("TLS certificates reloaded");
    let mut late = relay.join("/c/hup");
    assert_eq!(late.ws.get_ref().peer_leaf().unwrap(), second.der);
    early.recv_event("join");
    late.send("\"after the renewal\"");
    assert_eq!(early.recv_message()["message"], "after the renewal");

    std::fs::write(&files.key, "broken").unwrap();
    process.signal(libc::SIGHUP);
    let refused = process.wait_for_log("TLS certificates refused");
    assert!(refused.contains("key.pem"), "{refused}");
    let fresh = relay.join("/c/hup");
    assert_eq!(fresh.ws.get_ref().peer_leaf().unwrap(), second.der);
}

#[test]
fn sni_chooses_the_certificate_by_name_with_a_default() {
    let default = ca().leaf(&["localhost", "127.0.0.1"], "sni-default");
    let a = ca().leaf(&["a.test"], "sni-a");
    let b = ca().leaf(&["b.test", "www.b.test"], "sni-b");
    let files = Files::holding(&default);
    inherit(Some(client_config()));
    let relay = relay_with(|c| {
        c.tls_cert = Some(files.cert.clone());
        c.tls_key = Some(files.key.clone());
        c.tls_sni = vec![
            itty_relay::config::SniCertificate {
                names: vec!["a.test".into()],
                cert: a.cert.clone(),
                key: a.key.clone(),
            },
            itty_relay::config::SniCertificate {
                names: vec!["b.test".into(), "WWW.b.test".into()],
                cert: b.cert.clone(),
                key: b.key.clone(),
            },
        ];
    });
    for (name, leaf) in [
        ("a.test", &a),
        ("b.test", &b),
        ("www.b.test", &b),
        ("localhost", &default),
        // An IP address sends no SNI: the default.
        ("127.0.0.1", &default),
    ] {
        let conn = tls_to(&relay, client_config(), name);
        assert_eq!(conn.peer_leaf().unwrap(), leaf.der, "{name}");
    }
    // An unknown name gets the default, which the client then refuses.
    let tcp = TcpStream::connect(relay.addr).unwrap();
    let name = rustls::pki_types::ServerName::try_from("c.test").unwrap();
    let mut session = rustls::ClientConnection::new(client_config(), name).unwrap();
    let mut tcp = tcp;
    let refused = loop {
        match session.complete_io(&mut tcp) {
            Err(e) => break e.to_string(),
            Ok(_) if !session.is_handshaking() => panic!("c.test was accepted"),
            Ok(_) => {}
        }
    };
    assert!(refused.contains("not valid for name"), "{refused}");
}

#[test]
fn a_tls_slowloris_is_cut_at_the_handshake_deadline() {
    let leaf = tls::localhost_leaf();
    inherit(Some(client_config()));
    let relay = relay_with(|c| {
        c.tls_cert = Some(leaf.cert.clone());
        c.tls_key = Some(leaf.key.clone());
        c.handshake_timeout_ms = 300;
    });
    // Half a ClientHello record header, then nothing.
    let mut slow = TcpStream::connect(relay.addr).unwrap();
    slow.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    let started = Instant::now();
    slow.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let mut buf = [0u8; 64];
    let n = slow.read(&mut buf).unwrap_or(0);
    let took = started.elapsed();
    assert_eq!(n, 0, "closed without an answer");
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    relay.wait_until(EVENT_TIMEOUT, "the failed handshake is counted", |r| {
        r.metric_sum("tls_handshake_failures_total") >= 1
            && r.metric_sum("tls_handshakes_in_progress") == 0
    });
}

#[test]
fn plain_http_on_the_tls_port_gets_400_and_a_close() {
    let leaf = tls::localhost_leaf();
    let files = Files::holding(leaf);
    let relay = tls_relay(&files);
    let mut plain = TcpStream::connect(relay.addr).unwrap();
    plain.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    plain.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("speaks TLS"), "{answer}");
}

#[test]
fn an_old_tls_version_gets_a_clean_alert_and_tls_1_2_works() {
    let leaf = tls::localhost_leaf();
    let files = Files::holding(leaf);
    let relay = tls_relay(&files);
    // A TLS 1.0 ClientHello (no supported_versions extension).
    let mut hello = vec![0x03, 0x01];
    hello.extend_from_slice(&[7u8; 32]); // random
    hello.extend_from_slice(&[0x00]); // no session id
    hello.extend_from_slice(&[0x00, 0x02, 0x00, 0x2f]); // TLS_RSA_WITH_AES_128_CBC_SHA
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00, 0x00, hello.len() as u8];
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    let mut old = TcpStream::connect(relay.addr).unwrap();
    old.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    old.write_all(&record).unwrap();
    let mut answer = Vec::new();
    old.read_to_end(&mut answer).unwrap();
    // One alert record, fatal (2): rustls says handshake_failure (40) to
    // a hello that offers nothing it speaks; then the close.
    assert_eq!(answer.len(), 7, "{answer:?}");
    assert_eq!((answer[0], answer[5]), (0x15, 2), "{answer:?}");
    assert!([40, 70].contains(&answer[6]), "{answer:?}");

    let tls12 = Arc::new(client_config_with(|c| {
        let provider = rustls::crypto::ring::default_provider();
        let roots = c.clone();
        *c = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(root_store())
            .with_no_client_auth();
        c.alpn_protocols = roots.alpn_protocols;
    }));
    let conn = tls_to(&relay, tls12, "localhost");
    let Conn::Tls(stream) = &conn else {
        unreachable!()
    };
    assert_eq!(
        stream.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let (ws, _) = tungstenite::client::client(relay.url("/c/tls12"), conn).expect("joins");
    drop(ws);
}

#[test]
fn a_session_ticket_from_one_shard_resumes_on_the_other() {
    let leaf = tls::localhost_leaf();
    let files = Files::holding(leaf);
    let relay = tls_relay(&files);
    // One client with its own session store: every connection after the
    // first offers the ticket the one before it got.
    let resuming = Arc::new(client_config_with(|c| {
        c.resumption = rustls::client::Resumption::in_memory_sessions(16);
    }));
    let mut previous: Option<usize> = None;
    let mut crossed = 0;
    for attempt in 0..64 {
        let before = accepted(&relay);
        let conn = tls_to(&relay, resuming.clone(), "localhost");
        let Conn::Tls(stream) = &conn else {
            unreachable!()
        };
        let kind = stream.conn.handshake_kind();
        let (ws, _) = tungstenite::client::client(relay.url("/c/resume"), conn).expect("joins");
        let after = accepted(&relay);
        let shard = (0..2)
            .find(|&s| after[s] > before[s])
            .expect("a shard accepted");
        if attempt > 0 {
            assert_eq!(kind, Some(HandshakeKind::Resumed), "attempt {attempt}");
        }
        if previous.is_some_and(|p| p != shard) {
            crossed += 1;
            if crossed >= 2 {
                return;
            }
        }
        previous = Some(shard);
        drop(ws);
    }
    panic!("no two connections in a row landed on different shards");
}

fn accepted(relay: &Relay) -> Vec<u64> {
    let text = relay.metrics();
    (0..2)
        .map(|s| metric_in(&text, "connections_accepted_total", s))
        .collect()
}

#[test]
fn frames_are_sealed_several_to_a_record_under_load() {
    let leaf = tls::localhost_leaf();
    let files = Files::holding(leaf);
    let relay = tls_relay(&files);
    let channel = unique("batch");
    let mut member = relay.join(&format!("/c/{channel}"));
    let mut publisher = relay.join(&format!("/c/{channel}"));
    member.recv_event("join");
    let records_before = relay.metric_sum("tls_records_sealed_total");
    let frames_before = relay.metric_sum("tls_frames_sealed_total");
    for i in 0..2000 {
        publisher
            .ws
            .write(tungstenite::Message::text(i.to_string()))
            .unwrap();
    }
    publisher.ws.flush().unwrap();
    for i in 0..2000 {
        assert_eq!(member.recv_message()["message"], i);
    }
    let records = relay.metric_sum("tls_records_sealed_total") - records_before;
    let frames = relay.metric_sum("tls_frames_sealed_total") - frames_before;
    // The member's 2000 frames (and the scrapes' responses) went out in
    // far fewer records than frames.
    assert!(frames >= 2000, "{frames}");
    assert!(
        records * 2 < frames,
        "{records} records for {frames} frames"
    );
}

#[test]
fn the_bound_on_handshakes_in_progress_holds_and_refusals_are_counted() {
    raise_nofile_to_hard();
    let leaf = tls::localhost_leaf();
    inherit(Some(client_config()));
    let relay = relay_with(|c| {
        c.tls_cert = Some(leaf.cert.clone());
        c.tls_key = Some(leaf.key.clone());
        c.handshake_timeout_ms = 5_000;
    });
    // More half-open handshakes than two shards may hold (256 each).
    const STALLED: usize = 700;
    let stalled: Vec<TcpStream> = (0..STALLED)
        .map(|_| {
            let mut s = TcpStream::connect(relay.addr).unwrap();
            let _ = s.write_all(&[0x16, 0x03, 0x01]);
            s
        })
        .collect();
    let max = itty_relay::limits::TLS_HANDSHAKES_IN_PROGRESS_MAX as u64;
    // Read in process: a scrape over TLS would itself be refused now.
    let counters = relay.server.as_ref().unwrap().metrics().clone();
    let in_progress = |s: usize| counters[s].tls_handshakes_in_progress.get();
    let refused = || -> u64 {
        (0..2)
            .map(|s| counters[s].tls_handshakes_refused.get())
            .sum()
    };
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while in_progress(0) + in_progress(1) + refused() < STALLED as u64 {
        assert!(
            Instant::now() < deadline,
            "not every stalled handshake was counted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for shard in 0..2 {
        assert!(
            in_progress(shard) <= max,
            "shard {shard}: {} in progress",
            in_progress(shard)
        );
    }
    assert!(
        refused() >= (STALLED as u64).saturating_sub(2 * max),
        "{} refused",
        refused()
    );
    drop(stalled);
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while in_progress(0) + in_progress(1) > 0 {
        assert!(
            Instant::now() < deadline,
            "handshakes left after their clients went"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A client gets through again.
    let mut client = relay.join(&format!("/c/{}", unique("after-flood")));
    client.send("1");
}
