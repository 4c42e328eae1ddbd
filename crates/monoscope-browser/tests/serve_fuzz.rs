//! Requests built from valid ones and then mangled (methods, `..` and percent escapes in paths,
//! header names and values, line endings, inserted and repeated bytes, truncation): every answer
//! is a well-formed HTTP response with an expected status, nothing outside the site is ever
//! served, and the server answers an ordinary request after each.
//!
//! `MONOSCOPE_FUZZ_CASES` sets the number of cases, as for the file-format fuzz targets.

mod serve_support;

use std::net::SocketAddr;
use std::sync::OnceLock;

use monoscope_browser::serve::ServeOptions;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use serve_support::{INDEX, SCRIPT, SECRET, Site, exchange, get, parse, start};

/// The file-format targets' count: enough to reach every refusal many times while staying well
/// inside the test time budget of a debug build.
const DEFAULT_CASES: u32 = 20_000;

fn cases() -> u32 {
    std::env::var("MONOSCOPE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

fn server() -> SocketAddr {
    static SERVER: OnceLock<(SocketAddr, Site)> = OnceLock::new();
    SERVER.get_or_init(|| start(ServeOptions::default())).0
}

/// Every status the server may give a lone client that sends its request and closes. 408
/// (it waited although the request had ended), 500 (a panic) and 503 (a worker was lost) are
/// bugs here.
const EXPECTED: [u16; 10] = [200, 400, 404, 405, 413, 414, 421, 431, 501, 505];

fn method() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => Just(b"GET".to_vec()),
        1 => Just(b"HEAD".to_vec()),
        2 => select(&["POST", "PUT", "DELETE", "OPTIONS", "CONNECT", "TRACE", "get", "G ET", ""][..])
            .prop_map(|m| m.as_bytes().to_vec()),
        1 => "[A-Za-z]{1,10}".prop_map(String::into_bytes),
    ]
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(
            &[
                "index.html", "data", "a.js", "..", ".", "%2e%2e", "%2E%2e", "..%2f..", "%2f",
                "%5c..", "%00", "%", "%2", "%zz", "%+1", "%c3%a9", "%ff", "secret.txt", "~", "",
                "?q=../x", "#frag", "site",
            ][..],
        )
        .prop_map(str::to_owned),
        1 => "[a-zA-Z0-9._%~-]{0,12}",
    ]
}

fn target() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::collection::vec(segment(), 0..6)
            .prop_map(|segments| format!("/{}", segments.join("/")).into_bytes()),
        1 => select(
            &["*", "http://localhost/", "localhost:80", "", "//etc/passwd", "/./../secret.txt"][..],
        )
        .prop_map(|t| t.as_bytes().to_vec()),
    ]
}

fn version() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => Just(b"HTTP/1.1".to_vec()),
        1 => select(&["HTTP/1.0", "HTTP/2.0", "HTTP/1", "http/1.1", "HTTP/9.9", "HTTP/1.1 ", ""][..])
            .prop_map(|v| v.as_bytes().to_vec()),
    ]
}

fn bytes_of(choices: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    select(choices).prop_map(|c| c.as_bytes().to_vec())
}

fn header() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let printable = || "[ -~]{0,24}".prop_map(String::into_bytes);
    prop_oneof![
        4 => (
            bytes_of(&["Accept", "User-Agent", "Connection", "X-Forwarded-Host", "X-A"]),
            printable(),
        ),
        1 => (
            bytes_of(&["Host", "host", "HOST", "Host ", " Host"]),
            bytes_of(&[
                "localhost", "localhost:8000", "127.0.0.1", "127.0.0.1:1", "[::1]:80", "evil.com",
                "localhost.evil.com", "", "localhost:x",
            ]),
        ),
        1 => (
            bytes_of(&["Content-Length", "content-length"]),
            bytes_of(&["0", "1", "5", "1024", "1025", "-1", "99999999999999999999", "1, 1", ""]),
        ),
        1 => (bytes_of(&["Transfer-Encoding"]), bytes_of(&["chunked", "identity"])),
        1 => (
            prop_oneof![bytes_of(&["", ":", "A B"]), "[A-Za-z-]{1,16}".prop_map(String::into_bytes)],
            prop_oneof![printable(), prop::collection::vec(any::<u8>(), 0..16)],
        ),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Replace(Index, u8),
    Remove(Index, Index),
    /// Many copies of one byte: reaches the caps on lines and heads.
    Repeat(Index, u8, usize),
    BareLineFeeds,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Replace(at, byte)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(at, len)| Mutation::Remove(at, len)),
        1 => (any::<Index>(), select(&b"a:\r\n %."[..]), 1usize..20_000)
            .prop_map(|(at, byte, len)| Mutation::Repeat(at, byte, len)),
        1 => Just(Mutation::BareLineFeeds),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    // Positions run to the end inclusive, so that insertions can append.
    let at = |index: &Index, len: usize| index.index(len + 1);
    match mutation {
        Mutation::Truncate(i) => bytes.truncate(at(i, bytes.len())),
        Mutation::Insert(i, inserted) => {
            let i = at(i, bytes.len());
            bytes.splice(i..i, inserted.iter().copied());
        }
        Mutation::Replace(i, byte) => {
            if !bytes.is_empty() {
                let i = i.index(bytes.len());
                bytes[i] = *byte;
            }
        }
        Mutation::Remove(i, len) => {
            let i = at(i, bytes.len());
            let end = i + len.index(bytes.len() - i + 1);
            bytes.drain(i..end);
        }
        Mutation::Repeat(i, byte, len) => {
            let i = at(i, bytes.len());
            bytes.splice(i..i, std::iter::repeat_n(*byte, *len));
        }
        Mutation::BareLineFeeds => {
            let mut out = Vec::with_capacity(bytes.len());
            for (i, &b) in bytes.iter().enumerate() {
                if !(b == b'\r' && bytes.get(i + 1) == Some(&b'\n')) {
                    out.push(b);
                }
            }
            *bytes = out;
        }
    }
}

fn request() -> impl Strategy<Value = Vec<u8>> {
    (
        method(),
        target(),
        version(),
        prop::bool::weighted(0.9),
        prop::collection::vec(header(), 0..5),
        prop::collection::vec(any::<u8>(), 0..32),
        prop_oneof![1 => Just(Vec::new()), 2 => prop::collection::vec(mutation(), 1..4)],
    )
        .prop_map(
            |(method, target, version, host, headers, body, mutations)| {
                let mut bytes = [method, target, version].join(&b' ');
                bytes.extend_from_slice(b"\r\n");
                if host {
                    bytes.extend_from_slice(b"Host: localhost\r\n");
                }
                for (name, value) in headers {
                    bytes.extend_from_slice(&[&name[..], b": ", &value[..], b"\r\n"].concat());
                }
                bytes.extend_from_slice(b"\r\n");
                bytes.extend_from_slice(&body);
                for mutation in &mutations {
                    apply(&mut bytes, mutation);
                }
                bytes
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 512,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_request_gets_a_well_formed_answer_and_the_server_carries_on(request in request()) {
        let addr = server();
        let answer = exchange(addr, &request)
            .map_err(|e| TestCaseError::fail(format!("exchange failed: {e}")))?;
        if answer.is_empty() {
            // Only a client that sent nothing but blank lines goes unanswered.
            prop_assert!(
                request.iter().all(|&b| b == b'\r' || b == b'\n'),
                "no answer"
            );
        } else {
            let response = parse(&answer).map_err(TestCaseError::fail)?;
            prop_assert!(EXPECTED.contains(&response.status), "status {}", response.status);
            let text = String::from_utf8_lossy(&answer);
            prop_assert!(!text.contains(SECRET), "a file outside the site was served");
            if response.status == 200 {
                prop_assert!(
                    response.body.is_empty()
                        || response.body == INDEX.as_bytes()
                        || response.body == SCRIPT.as_bytes(),
                    "unexpected body {:?}", text
                );
            }
        }
        let after = get(addr, "/");
        prop_assert_eq!(after.status, 200);
        prop_assert_eq!(after.body, INDEX.as_bytes());
    }
}
