//! What the `monoscope serve` tests share: a site with a file outside it, a server over it, and a
//! strict reading of the server's answers.

#![allow(dead_code)] // Each test binary uses part of this.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use monoscope_browser::serve::{ServeOptions, bind, serve_with};

pub const INDEX: &str = "<p>index</p>";
pub const SCRIPT: &str = "monoscope.loaded(\"a\", {});";
/// Sits next to the site, where no request may reach it.
pub const SECRET: &str = "secret outside the site";
/// Long enough for a stuck server to fail a test, far longer than any answer takes.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A site in a temporary directory: `index.html` and `data/a.js`, with `secret.txt` beside it.
pub struct Site {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

pub fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), SECRET).unwrap();
    let root = dir.path().join("site");
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::write(root.join("index.html"), INDEX).unwrap();
    std::fs::write(root.join("data").join("a.js"), SCRIPT).unwrap();
    Site { _dir: dir, root }
}

/// Serves a fresh site on a thread of its own (the accepting thread), for the rest of the
/// process.
pub fn start(options: ServeOptions) -> (SocketAddr, Site) {
    let site = site();
    let (listener, addr) = bind(0).unwrap();
    let root = site.root.clone();
    std::thread::spawn(move || serve_with(&root, listener, &options).unwrap());
    (addr, site)
}

/// Sends `request`, closes the sending side and reads the whole answer.
pub fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.set_write_timeout(Some(PATIENCE))?;
    stream.write_all(request)?;
    stream.shutdown(Shutdown::Write)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    Ok(response)
}

/// `GET path` with a loopback Host.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\n\r\n",
        addr.port()
    );
    parse(&exchange(addr, request.as_bytes()).unwrap()).unwrap()
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads an answer strictly: `HTTP/1.1 NNN Reason`, well-formed header lines, a
/// `Content-Length` that the body matches (or an empty body, as a `HEAD` answer has).
pub fn parse(bytes: &[u8]) -> Result<Response, String> {
    let shown = || String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of head in {:?}", shown()))?;
    let head =
        std::str::from_utf8(&bytes[..end]).map_err(|_| format!("head not UTF-8: {:?}", shown()))?;
    let body = bytes[end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let rest = status_line
        .strip_prefix("HTTP/1.1 ")
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let (code, reason) = rest
        .split_once(' ')
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let well_formed = code.len() == 3
        && code.bytes().all(|b| b.is_ascii_digit())
        && (b'1'..=b'5').contains(&code.as_bytes()[0])
        && !reason.is_empty()
        && reason.bytes().all(|b| b.is_ascii_alphabetic() || b == b' ');
    if !well_formed {
        return Err(format!("bad status line {status_line:?}"));
    }
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(": ")
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("bad header line {line:?}"));
        }
        headers.push((name.to_owned(), value.to_owned()));
    }
    let response = Response {
        status: code.parse().unwrap(),
        headers,
        body,
    };
    let length: usize = response
        .header("Content-Length")
        .ok_or("no Content-Length")?
        .parse()
        .map_err(|_| "bad Content-Length")?;
    if !response.body.is_empty() && response.body.len() != length {
        return Err(format!(
            "Content-Length {length} but {} bytes of body",
            response.body.len()
        ));
    }
    Ok(response)
}
