//! Connection floods (API.md "Conventions", `server.max_connections_per_ip`): one TCP peer
//! address holds at most that many open connections per listener, more are closed at once
//! and unanswered, trusted proxies are exempt, and the limit reloads.
//!
//! Linux routes all of 127.0.0.0/8 to loopback, so a socket bound to 127.0.0.2 before it
//! connects is a second client address on the same machine.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::{Api, POLL, TestApp, config_with, write_config};

const FLOODER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const BYSTANDER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// Well below the header read timeout (10 s), after which the server would close even a
/// connection it had accepted: a close seen within this was a refusal.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

// ----- helpers -----

/// `host:port` of a listener's base URL.
fn socket_addr(base: &str) -> SocketAddr {
    base.trim_start_matches("http://").parse().unwrap()
}

/// A TCP connection to `base` whose source address is `from`.
async fn connect_from(from: IpAddr, base: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(socket_addr(base)).await.unwrap()
}

/// `count` connections from `from`, opened one after another (so the server accepts them
/// in this order) and held open by the caller.
async fn open_many(from: IpAddr, base: &str, count: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        streams.push(connect_from(from, base).await);
    }
    streams
}

/// The same [`Api`] helpers as the app's, from a client whose connections start at `from`.
fn api_from(app: &TestApp, from: IpAddr) -> Api {
    Api {
        client: reqwest::Client::builder()
            .local_address(from)
            .build()
            .unwrap(),
        ..Api::new(
            app.public.clone(),
            app.admin.clone(),
            app.admin_token.clone(),
        )
    }
}

/// What a server did with a complete request sent on a connection.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// It answered with this status.
    Answered(u16),
    /// It closed the connection without a byte.
    Closed,
}

/// Sends `GET path` (with `token` as bearer, if any) on `stream` and reads the status line
/// of the answer. Fails the test if neither an answer nor a close comes within
/// [`ANSWER_TIMEOUT`].
async fn ask(stream: &mut TcpStream, path: &str, token: Option<&str>) -> Outcome {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n");
    // A refused connection may already be closed: then the write or the read fails.
    if stream.write_all(request.as_bytes()).await.is_err() {
        return Outcome::Closed;
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(ANSWER_TIMEOUT, async {
        while !head.windows(2).any(|w| w == b"\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.unwrap_or_else(|_| panic!("no answer and no close within {ANSWER_TIMEOUT:?}"));
    if head.is_empty() {
        return Outcome::Closed;
    }
    let line = String::from_utf8_lossy(&head);
    let status = line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {line:?}"));
    Outcome::Answered(status)
}

/// `GET /healthz` on `stream`: any listener answers it.
async fn ask_health(stream: &mut TcpStream) -> Outcome {
    ask(stream, "/healthz", None).await
}

/// A connection from `from` that the server accepts — polled, because the server notices
/// closed connections (and frees their slots) on its own time.
async fn accepted_connection(from: IpAddr, base: &str) -> TcpStream {
    let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
    loop {
        let mut stream = connect_from(from, base).await;
        if ask_health(&mut stream).await == Outcome::Answered(200) {
            return stream;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connection from {from} accepted within {ANSWER_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The value of the sample whose line starts with `series` (name plus labels), 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

async fn refused_connections(api: &Api) -> f64 {
    let response = api
        .admin_request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    sample(
        &text,
        "authd_connections_refused_total{listener=\"public\"}",
    )
}

// ----- the attack -----

#[tokio::test]
async fn a_500_connection_flood_from_one_address_is_cut_at_its_limit_and_verify_keeps_answering_others()
 {
    let app = TestApp::spawn_with(&[("AUTHD__SERVER__MAX_CONNECTIONS_PER_IP", "50")]).await;
    // Everything but the flood comes from the bystander's address.
    let bystander = api_from(&app, BYSTANDER);
    let token = bystander.user_token("alice", &[]).await;
    let refused_before = refused_connections(&bystander).await;

    let mut flood = open_many(FLOODER, &app.public, 500).await;

    // The bystander keeps being served, on its open connection and on new ones.
    for _ in 0..20 {
        let verified = bystander.verify(&token).await;
        assert_eq!(verified.status(), StatusCode::OK);
    }
    for _ in 0..5 {
        let mut fresh = connect_from(BYSTANDER, &app.public).await;
        let answer = ask(&mut fresh, "/v1/verify", Some(&token)).await;
        assert_eq!(answer, Outcome::Answered(200));
    }
    // The flooder holds exactly 50: its first 50 connections are served...
    for (n, stream) in flood[..50].iter_mut().enumerate() {
        let answer = ask(stream, "/v1/verify", Some(&token)).await;
        assert_eq!(answer, Outcome::Answered(200), "connection {}", n + 1);
    }
    // ...and the 51st and every later one was closed, without an answer.
    for (n, stream) in flood[50..].iter_mut().enumerate() {
        let answer = ask(stream, "/v1/verify", Some(&token)).await;
        assert_eq!(answer, Outcome::Closed, "connection {}", n + 51);
    }
    // The recorder is process-wide and tests run in parallel: growth, not the value.
    let refused = refused_connections(&bystander).await - refused_before;
    assert!(refused >= 450.0, "{refused} refusals counted");
}

#[tokio::test]
async fn trusted_proxies_are_exempt_from_the_limit() {
    let app = TestApp::spawn_with(&[
        ("AUTHD__SERVER__MAX_CONNECTIONS_PER_IP", "5"),
        ("AUTHD__SERVER__TRUSTED_PROXIES", "127.0.0.1/32"),
    ])
    .await;

    let mut proxy = open_many(FLOODER, &app.public, 20).await;
    let mut client = open_many(BYSTANDER, &app.public, 6).await;

    for (n, stream) in proxy.iter_mut().enumerate() {
        assert_eq!(
            ask_health(stream).await,
            Outcome::Answered(200),
            "proxy connection {}",
            n + 1
        );
    }
    // The limit is in force for everyone else.
    for stream in &mut client[..5] {
        assert_eq!(ask_health(stream).await, Outcome::Answered(200));
    }
    assert_eq!(ask_health(&mut client[5]).await, Outcome::Closed);
}

// ----- counting -----

#[tokio::test]
async fn each_listener_counts_its_own_connections() {
    let app = TestApp::spawn_with(&[("AUTHD__SERVER__MAX_CONNECTIONS_PER_IP", "2")]).await;
    let mut public = open_many(FLOODER, &app.public, 2).await;

    let mut admin = open_many(FLOODER, &app.admin, 3).await;

    for stream in &mut public {
        assert_eq!(ask_health(stream).await, Outcome::Answered(200));
    }
    // `/metrics` is the admin listener's route open without a credential on loopback.
    for stream in &mut admin[..2] {
        assert_eq!(ask(stream, "/metrics", None).await, Outcome::Answered(200));
    }
    assert_eq!(ask(&mut admin[2], "/metrics", None).await, Outcome::Closed);
}

#[tokio::test]
async fn a_connection_that_ends_gives_its_slot_back() {
    let app = TestApp::spawn_with(&[("AUTHD__SERVER__MAX_CONNECTIONS_PER_IP", "3")]).await;
    let mut held = open_many(FLOODER, &app.public, 3).await;
    for stream in &mut held {
        assert_eq!(ask_health(stream).await, Outcome::Answered(200));
    }
    let mut over = connect_from(FLOODER, &app.public).await;
    assert_eq!(ask_health(&mut over).await, Outcome::Closed);

    // One ends cleanly (the client closes it), one on an error (a request hyper refuses).
    let mut broken = held.pop().unwrap();
    let closed = held.pop().unwrap();
    drop(closed);
    broken.write_all(b"NOT HTTP AT ALL\r\n\r\n").await.unwrap();

    // Both slots come back, and no more than both.
    let _first = accepted_connection(FLOODER, &app.public).await;
    let _second = accepted_connection(FLOODER, &app.public).await;
    let mut over = connect_from(FLOODER, &app.public).await;
    assert_eq!(ask_health(&mut over).await, Outcome::Closed);
}

#[tokio::test]
async fn a_reload_applies_the_new_limit_to_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), &config_with(&[("max_connections_per_ip", "2")]));
    let app = TestApp::start_with_config_file(dir.path(), &file).await;
    let mut held = open_many(FLOODER, &app.public, 3).await;
    for stream in &mut held[..2] {
        assert_eq!(ask_health(stream).await, Outcome::Answered(200));
    }
    assert_eq!(ask_health(&mut held[2]).await, Outcome::Closed);

    write_config(dir.path(), &config_with(&[("max_connections_per_ip", "4")]));
    app.reload_settled().await;
    let mut more = open_many(FLOODER, &app.public, 3).await;

    for stream in &mut more[..2] {
        assert_eq!(ask_health(stream).await, Outcome::Answered(200));
    }
    assert_eq!(ask_health(&mut more[2]).await, Outcome::Closed);
}
