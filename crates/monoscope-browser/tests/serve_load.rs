//! Many connections at once, slow and oversized ones among them: every ordinary client is
//! answered, and the server runs on as many threads as its pool has, whatever the number of
//! connections. Alone in its test binary, so that no other test's threads are counted.

#![cfg(target_os = "linux")]

mod serve_support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use monoscope_browser::serve::{ServeOptions, WORKERS};
use serve_support::{INDEX, PATIENCE, SCRIPT, exchange, parse, start};

const CONNECTIONS: usize = 200;
/// Short, so that stalled clients free their workers within the test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn request(addr: SocketAddr, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\n\r\n",
        addr.port()
    )
    .into_bytes()
}

/// Reads until the server closes; `None` when it reset the connection instead, which a refused
/// client that was still sending may see.
fn read_answer(mut stream: TcpStream) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    match stream.read_to_end(&mut bytes) {
        Ok(_) => Some(bytes),
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => None,
        Err(e) => panic!("the server held a connection past {PATIENCE:?}: {e}"),
    }
}

/// The status of a refused slow or oversized client: one of `expected`, 503 (the queue was
/// full), or none when the connection was reset.
fn refusal_status(stream: TcpStream, expected: u16) -> Option<u16> {
    let bytes = read_answer(stream)?;
    if bytes.is_empty() {
        return None;
    }
    let status = parse(&bytes).unwrap().status;
    assert!(
        status == expected || status == 503,
        "expected {expected} or 503, got {status}"
    );
    Some(status)
}

#[test]
fn two_hundred_connections_with_slow_and_oversized_ones_are_served_by_a_fixed_pool() {
    let started = Instant::now();
    let baseline = threads();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(baseline));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(threads(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    // The sampler, the server's accepting thread and its workers.
    let bound = baseline + 1 + 1 + WORKERS;

    let mut options = ServeOptions::default();
    options.request_timeout = REQUEST_TIMEOUT;
    let (addr, _site) = start(options);

    let oversized_request = {
        let mut bytes = b"GET /".to_vec();
        bytes.resize(bytes.len() + (1 << 20), b'a');
        bytes.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\n\r\n");
        bytes
    };
    let (mut normal, mut slow, mut oversized) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..CONNECTIONS {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        match i % 4 {
            0 | 1 => {
                let path = if i % 8 == 0 { "/" } else { "/data/a.js" };
                // A failed write shows as a failed read below, and the client asks again.
                let _ = stream.write_all(&request(addr, path));
                normal.push((stream, path));
            }
            2 => {
                let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: local");
                slow.push(stream);
            }
            _ => {
                // As much as the socket takes at once; this thread must not wait on the server.
                stream.set_nonblocking(true).unwrap();
                let mut sent = 0;
                while sent < oversized_request.len() {
                    match stream.write(&oversized_request[sent..]) {
                        Ok(n) => sent += n,
                        Err(_) => break,
                    }
                }
                stream.set_nonblocking(false).unwrap();
                oversized.push(stream);
            }
        }
    }

    // Ordinary clients ask again after a 503 or a reset, as a browser's user would, until a
    // generous deadline.
    let deadline = Instant::now() + 2 * PATIENCE;
    let mut retries = 0;
    for (stream, path) in normal {
        let expected = if path == "/" { INDEX } else { SCRIPT };
        let mut answer = read_answer(stream);
        loop {
            let response = answer.as_deref().filter(|b| !b.is_empty()).map(parse);
            match response {
                Some(Ok(response)) if response.status == 200 => {
                    assert_eq!(response.body, expected.as_bytes(), "{path}");
                    break;
                }
                Some(Ok(response)) => assert_eq!(response.status, 503, "{path}"),
                Some(Err(e)) => panic!("{path}: {e}"),
                None => {}
            }
            assert!(Instant::now() < deadline, "{path} was never served");
            retries += 1;
            std::thread::sleep(Duration::from_millis(20));
            answer = exchange(addr, &request(addr, path)).ok();
        }
    }
    let timed_out = slow
        .into_iter()
        .filter_map(|stream| refusal_status(stream, 408))
        .filter(|&status| status == 408)
        .count();
    let too_long = oversized
        .into_iter()
        .filter_map(|stream| refusal_status(stream, 414))
        .filter(|&status| status == 414)
        .count();

    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    eprintln!(
        "{CONNECTIONS} connections in {:?}: {retries} retries, {timed_out} answered 408, \
         {too_long} answered 414, at most {peak} threads (bound {bound}, {baseline} before)",
        started.elapsed()
    );
    assert!(peak <= bound, "{peak} threads, more than {bound}");
    assert!(peak > baseline, "the sampler saw no thread start");
    // The queue holds some of each kind before it fills, and those are answered in full.
    assert!(timed_out > 0, "no stalled client was answered 408");
    assert!(too_long > 0, "no oversized request was answered 414");
}
