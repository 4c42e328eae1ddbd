//! `monoscope serve` answers: the Host check against DNS rebinding, the caps on a request, and
//! the files it will and will not serve.

mod serve_support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use monoscope_browser::serve::{MAX_BODY_BYTES, MAX_HEADERS, MAX_LINE_BYTES, ServeOptions};
use serve_support::{INDEX, PATIENCE, SCRIPT, SECRET, Site, exchange, get, parse, start};

/// Short, so that the slow-client test is quick.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(300);

fn server() -> SocketAddr {
    static SERVER: OnceLock<(SocketAddr, Site)> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let mut options = ServeOptions::default();
            options.request_timeout = REQUEST_TIMEOUT;
            start(options)
        })
        .0
}

fn status_of(request: &[u8]) -> u16 {
    let bytes = exchange(server(), request).unwrap();
    parse(&bytes).unwrap().status
}

fn with_host(host: &str) -> u16 {
    status_of(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
}

#[test]
fn loopback_host_names_are_served() {
    let port = server().port();
    for host in [
        format!("localhost:{port}"),
        "localhost".to_owned(),
        "LOCALHOST".to_owned(),
        format!("127.0.0.1:{port}"),
        "127.1.2.3".to_owned(),
        format!("[::1]:{port}"),
        // Another port: what a browser sends through a port forward.
        "localhost:9".to_owned(),
    ] {
        assert_eq!(with_host(&host), 200, "{host}");
    }
    let response = get(server(), "/");
    assert_eq!(response.body, INDEX.as_bytes());
}

#[test]
fn other_host_names_are_refused() {
    let port = server().port();
    for host in [
        "evil.com".to_owned(),
        format!("evil.com:{port}"),
        format!("localhost.evil.com:{port}"),
        "127.0.0.1.evil.com".to_owned(),
        "10.0.0.1".to_owned(),
        "0.0.0.0".to_owned(),
        "[::2]".to_owned(),
        "localhost:99999".to_owned(),
        "localhost:abc".to_owned(),
        String::new(),
    ] {
        let bytes = exchange(
            server(),
            format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let response = parse(&bytes).unwrap();
        assert_eq!(response.status, 421, "{host}");
        assert!(
            !response.body.is_empty() && !response.body.starts_with(INDEX.as_bytes()),
            "{host}"
        );
    }
}

#[test]
fn an_http11_request_needs_exactly_one_host() {
    assert_eq!(status_of(b"GET / HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(
        status_of(b"GET / HTTP/1.1\r\nHost: localhost\r\nHost: localhost\r\n\r\n"),
        400
    );
    // HTTP/1.0 had no Host header; a browser always sends one.
    assert_eq!(status_of(b"GET / HTTP/1.0\r\n\r\n"), 200);
    assert_eq!(status_of(b"GET / HTTP/1.0\r\nHost: evil.com\r\n\r\n"), 421);
}

#[test]
fn files_are_served_only_from_inside_the_site() {
    let addr = server();
    let script = get(addr, "/data/a.js");
    assert_eq!(script.status, 200);
    assert_eq!(script.body, SCRIPT.as_bytes());
    assert!(
        script
            .header("Content-Type")
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(get(addr, "/data/").status, 404);
    for path in [
        "/../secret.txt",
        "/data/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%5csecret.txt",
        "/%",
        "/%+1",
        "/%00",
    ] {
        let response = get(addr, path);
        assert_eq!(response.status, 404, "{path}");
        assert!(
            !String::from_utf8_lossy(&response.body).contains(SECRET),
            "{path}"
        );
    }
    assert_eq!(
        status_of(b"GET ../secret.txt HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        400
    );
    assert_eq!(
        status_of(b"GET http://localhost/ HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        400
    );
}

#[test]
fn head_answers_without_a_body_and_other_methods_are_refused() {
    let bytes = exchange(
        server(),
        b"HEAD /data/a.js HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .unwrap();
    let response = parse(&bytes).unwrap();
    assert_eq!(response.status, 200);
    assert!(response.body.is_empty());
    assert_eq!(
        response.header("Content-Length"),
        Some(SCRIPT.len().to_string().as_str())
    );
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "get"] {
        let bytes = exchange(
            server(),
            format!("{method} / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let response = parse(&bytes).unwrap();
        assert_eq!(response.status, 405, "{method}");
        assert_eq!(response.header("Allow"), Some("GET, HEAD"));
    }
}

#[test]
fn oversized_requests_are_refused_with_their_status() {
    let long = "a".repeat(MAX_LINE_BYTES);
    assert_eq!(
        status_of(format!("GET /{long} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()),
        414
    );
    assert_eq!(
        status_of(
            format!("GET / HTTP/1.1\r\nHost: localhost\r\nX-Long: {long}\r\n\r\n").as_bytes()
        ),
        431
    );
    let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
    assert_eq!(
        status_of(format!("GET / HTTP/1.1\r\nHost: localhost\r\n{many}\r\n").as_bytes()),
        431
    );
    // Each line under the cap, all of them together over it.
    let line = "b".repeat(MAX_LINE_BYTES - 100);
    let big: String = (0..MAX_HEADERS / 2)
        .map(|i| format!("X-{i}: {line}\r\n"))
        .collect();
    assert_eq!(
        status_of(format!("GET / HTTP/1.1\r\nHost: localhost\r\n{big}\r\n").as_bytes()),
        431
    );
    let body = vec![b'x'; usize::try_from(MAX_BODY_BYTES).unwrap() + 1];
    let mut request = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    assert_eq!(status_of(&request), 413);
    // A small body is read and dropped.
    assert_eq!(
        status_of(b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc"),
        200
    );
    assert_eq!(
        status_of(
            b"GET / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
        501
    );
}

#[test]
fn a_one_mebibyte_request_line_is_answered_414() {
    // The client does not stop sending after the cap; the answer must still reach it.
    let request = format!(
        "GET /{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "a".repeat(1 << 20)
    );
    assert_eq!(status_of(request.as_bytes()), 414);
}

#[test]
fn malformed_requests_are_answered_400_or_505() {
    for (request, status) in [
        (&b"GARBAGE\r\n\r\n"[..], 400),
        (b"GET /\r\n\r\n", 400),
        (b"GET  / HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: localhost\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nHost localhost\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost : localhost\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: local\x00host\r\n\r\n", 400),
        (
            b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n",
            400,
        ),
        (b"GET /\xff HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
        // Cut short: the client closed before the end of the head.
        (b"GET / HTTP/1.1\r\nHost: local", 400),
        (
            b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 9\r\n\r\nabc",
            400,
        ),
    ] {
        assert_eq!(
            status_of(request),
            status,
            "{:?}",
            String::from_utf8_lossy(request)
        );
    }
    // Nothing sent, nothing answered.
    assert!(exchange(server(), b"").unwrap().is_empty());
    assert!(exchange(server(), b"\r\n\r\n").unwrap().is_empty());
}

#[test]
fn a_client_that_trickles_is_answered_408_once_its_time_is_up() {
    let mut stream = TcpStream::connect(server()).unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .unwrap();
    // A byte at a time, each well within the timeout: a server that timed each read rather than
    // the whole request would wait for all of them.
    stream.set_read_timeout(Some(REQUEST_TIMEOUT / 3)).unwrap();
    let mut bytes = vec![0; 1024];
    let mut answered_after = None;
    for _ in 0..100 {
        match stream.read(&mut bytes) {
            Ok(n) => {
                bytes.truncate(n);
                answered_after = Some(started.elapsed());
                break;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
        let _ = stream.write_all(b"a");
    }
    let waited = answered_after.expect("never answered while the client trickled");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.read_to_end(&mut bytes).unwrap();
    assert_eq!(parse(&bytes).unwrap().status, 408);
    assert!(waited >= REQUEST_TIMEOUT, "answered after {waited:?}");
    // Generous, and still far below the time the trickle goes on for.
    assert!(waited < REQUEST_TIMEOUT * 10, "answered after {waited:?}");
}
