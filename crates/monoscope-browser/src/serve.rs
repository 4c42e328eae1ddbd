//! A static file server for a site directory, bound to 127.0.0.1 only.
//!
//! The site works from disk too; serving it gives a URL to share with a browser on the same
//! machine (or through an SSH tunnel) and avoids `file://` restrictions some browsers add.
//!
//! It answers `GET` and `HEAD` for files under the site and nothing else, and it is meant to stay
//! up whatever a client sends:
//! - a fixed pool of [`WORKERS`] threads takes connections from a queue of [`QUEUE_DEPTH`]; when
//!   the queue is full the accepting thread answers 503 itself, so the number of threads never
//!   depends on the number of connections;
//! - the request line and each header line are capped ([`MAX_LINE_BYTES`]: 414 / 431), as are
//!   the number of headers ([`MAX_HEADERS`]), their total size ([`MAX_HEAD_BYTES`]) and a request
//!   body ([`MAX_BODY_BYTES`]: 413), and the whole request must arrive before a deadline
//!   ([`REQUEST_TIMEOUT`]: 408), so that a slow client holds a worker for a bounded time;
//! - the `Host` header must name the loopback interface (`localhost`, `127.x.y.z`, `[::1]`,
//!   any port; 421 otherwise): a page elsewhere that rebinds its own name to 127.0.0.1 (DNS
//!   rebinding) would send its own name, and so cannot read the run;
//! - every failure is answered with a status, and a panic while answering is caught (500), so
//!   a worker never dies.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{BrowserError, Result};

/// Worker threads answering requests (the default of [`ServeOptions::workers`]).
pub const WORKERS: usize = 8;
/// Accepted connections that may wait for a worker (the default of
/// [`ServeOptions::queue_depth`]); the next one is answered 503.
pub const QUEUE_DEPTH: usize = 32;
/// The longest request line (414 beyond) or header line (431 beyond), line ending included.
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// The most header fields a request may have (431 beyond).
pub const MAX_HEADERS: usize = 100;
/// The most bytes of header lines a request may have (431 beyond).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The largest request body accepted (413 beyond). Nothing the server answers reads a body; a
/// small one is read and dropped so that clients that always send one still work.
pub const MAX_BODY_BYTES: u64 = 1024;
/// The time a client has to send its whole request (the default of
/// [`ServeOptions::request_timeout`]); 408 after.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one write of an answer may wait for a client that does not read (the default of
/// [`ServeOptions::write_timeout`]).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Closing a socket whose input has not all been read makes the kernel reset the connection,
/// and a reset can make the client drop the answer it has not read yet; so after answering, the
/// server reads and discards what the client is still sending, for this long at most.
const LINGER: Duration = Duration::from_secs(2);
/// ... and stops early when the client has gone quiet for this long.
const LINGER_QUIET: Duration = Duration::from_millis(500);
/// Pause after a failed `accept`, so that a persistent failure (out of descriptors) does not
/// spin the accepting thread.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// How the server bounds its threads and its patience; [`serve`] uses the defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// Worker threads answering requests.
    pub workers: usize,
    /// Accepted connections that may wait for a worker; the next one is answered 503.
    pub queue_depth: usize,
    /// The time a client has, from the moment a worker takes its connection, to send its whole
    /// request; 408 after.
    pub request_timeout: Duration,
    /// How long one write of an answer may wait for a client that does not read.
    pub write_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            workers: WORKERS,
            queue_depth: QUEUE_DEPTH,
            request_timeout: REQUEST_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
        }
    }
}

/// Binds `127.0.0.1:port` (0 picks a free port) and returns the listener with its address,
/// so that callers can print the URL before serving.
pub fn bind(port: u16) -> Result<(TcpListener, std::net::SocketAddr)> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| BrowserError::Invalid(format!("cannot listen on 127.0.0.1:{port}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BrowserError::Invalid(format!("listener address: {e}")))?;
    Ok((listener, addr))
}

/// Serves `site` on `listener` with the default [`ServeOptions`] until the process ends.
pub fn serve(site: &Path, listener: TcpListener) -> Result<()> {
    serve_with(site, listener, &ServeOptions::default())
}

/// Serves `site` on `listener` until the process ends (or the listener fails for good): the
/// calling thread accepts, `options.workers` threads answer.
pub fn serve_with(site: &Path, listener: TcpListener, options: &ServeOptions) -> Result<()> {
    if !crate::site::is_site_dir(site) {
        return Err(BrowserError::Invalid(format!(
            "{}: not a site directory (no index.html)",
            site.display()
        )));
    }
    let root = site.canonicalize().map_err(|e| BrowserError::io(site, e))?;
    run(
        listener,
        options,
        Arc::new(move |request| static_file(&root, request)),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
}

/// A request the server will answer: its method and its target (origin form, `/…`).
#[derive(Debug)]
struct Request {
    method: Method,
    target: String,
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    ContentTooLarge,
    UriTooLong,
    MisdirectedRequest,
    HeaderFieldsTooLarge,
    InternalServerError,
    NotImplemented,
    ServiceUnavailable,
    VersionNotSupported,
}

impl Status {
    fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::ContentTooLarge => 413,
            Status::UriTooLong => 414,
            Status::MisdirectedRequest => 421,
            Status::HeaderFieldsTooLarge => 431,
            Status::InternalServerError => 500,
            Status::NotImplemented => 501,
            Status::ServiceUnavailable => 503,
            Status::VersionNotSupported => 505,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::ContentTooLarge => "Content Too Large",
            Status::UriTooLong => "URI Too Long",
            Status::MisdirectedRequest => "Misdirected Request",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::InternalServerError => "Internal Server Error",
            Status::NotImplemented => "Not Implemented",
            Status::ServiceUnavailable => "Service Unavailable",
            Status::VersionNotSupported => "HTTP Version Not Supported",
        }
    }
}

/// A refused request: the status and a short explanation for the body.
#[derive(Debug, Clone, Copy)]
struct Refusal(Status, &'static str);

#[derive(Debug)]
enum Body {
    Text(&'static str),
    File(File, u64),
}

#[derive(Debug)]
struct Response {
    status: Status,
    content_type: &'static str,
    body: Body,
}

impl Response {
    fn refusal(Refusal(status, message): Refusal) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Body::Text(message),
        }
    }
}

/// Starts the workers, then accepts on the calling thread for as long as the listener works.
fn run(listener: TcpListener, options: &ServeOptions, handler: Arc<Handler>) -> Result<()> {
    if options.workers == 0 || options.request_timeout.is_zero() || options.write_timeout.is_zero()
    {
        return Err(BrowserError::Invalid(
            "the server needs at least one worker and non-zero timeouts".into(),
        ));
    }
    let (sender, receiver): (SyncSender<TcpStream>, Receiver<TcpStream>) =
        std::sync::mpsc::sync_channel(options.queue_depth);
    let receiver = Arc::new(Mutex::new(receiver));
    for index in 0..options.workers {
        let (receiver, handler, options) = (receiver.clone(), handler.clone(), options.clone());
        std::thread::Builder::new()
            .name(format!("monoscope-serve-{index}"))
            .spawn(move || work(&receiver, &*handler, &options))
            .map_err(|e| BrowserError::Invalid(format!("cannot start a server thread: {e}")))?;
    }
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => match sender.try_send(stream) {
                Ok(()) => {}
                Err(TrySendError::Full(stream)) => refuse_busy(stream),
                Err(TrySendError::Disconnected(_)) => {
                    return Err(BrowserError::Invalid(
                        "every server worker has stopped".into(),
                    ));
                }
            },
            Err(e) => {
                tracing::debug!("accept failed: {e}");
                std::thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
    Ok(())
}

fn work(queue: &Mutex<Receiver<TcpStream>>, handler: &Handler, options: &ServeOptions) {
    loop {
        // A receiver cannot be shared, so the workers take turns waiting on it.
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(stream) = next else { return };
        // The handler's own panics become 500s inside; this catches the rest (reading, writing)
        // so that the worker survives them too.
        if catch_unwind(AssertUnwindSafe(|| answer(stream, handler, options))).is_err() {
            tracing::error!("the server panicked answering a request; the connection was dropped");
        }
    }
}

/// Answers 503 from the accepting thread without ever blocking it.
fn refuse_busy(stream: TcpStream) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    // Whatever the client already sent is read, so that closing does not reset the connection
    // before the client reads the answer.
    let mut scratch = [0u8; 4096];
    let mut drained = 0;
    while drained < MAX_HEAD_BYTES {
        match (&stream).read(&mut scratch) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
    let refusal = Refusal(
        Status::ServiceUnavailable,
        "the server is busy; try again\n",
    );
    let _ = write_response(&stream, Response::refusal(refusal), false);
    let _ = stream.shutdown(Shutdown::Write);
}

/// Reads one request from `stream` and answers it; the connection is closed after.
fn answer(stream: TcpStream, handler: &Handler, options: &ServeOptions) {
    if let Err(e) = stream.set_write_timeout(Some(options.write_timeout)) {
        tracing::debug!("cannot set a write timeout: {e}");
        return;
    }
    let deadline = Instant::now() + options.request_timeout;
    let mut reader = BufReader::with_capacity(
        MAX_LINE_BYTES,
        DeadlineReader {
            stream: &stream,
            deadline,
        },
    );
    let (response, head_only) = match read_request(&mut reader) {
        Ok(None) => return,
        Ok(Some(request)) => {
            let response =
                catch_unwind(AssertUnwindSafe(|| handler(&request))).unwrap_or_else(|_| {
                    tracing::error!("the server panicked answering {}", request.target);
                    Response::refusal(Refusal(Status::InternalServerError, "internal error\n"))
                });
            (response, request.method == Method::Head)
        }
        Err(ReadError::Refused(refusal)) => (Response::refusal(refusal), false),
        Err(ReadError::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            let refusal = Refusal(Status::RequestTimeout, "the request took too long\n");
            (Response::refusal(refusal), false)
        }
        Err(ReadError::Io(e)) => {
            tracing::debug!("reading a request failed: {e}");
            return;
        }
    };
    drop(reader);
    if let Err(e) = write_response(&stream, response, head_only) {
        tracing::debug!("writing an answer failed: {e}");
        return;
    }
    close_gracefully(&stream);
}

/// Reads from the stream with a deadline for all reads together rather than for each, so that a
/// client trickling bytes cannot stretch its time.
struct DeadlineReader<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

#[derive(Debug)]
enum ReadError {
    Refused(Refusal),
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

impl From<Refusal> for ReadError {
    fn from(refusal: Refusal) -> Self {
        ReadError::Refused(refusal)
    }
}

const BAD_REQUEST: Refusal = Refusal(Status::BadRequest, "malformed request\n");

enum Line {
    Complete,
    TooLong,
    /// The input ended; the flag says whether part of a line had been read.
    Ended(bool),
}

/// Reads one line into `line`, without its ending (LF or CRLF), reading no further than `max`
/// bytes.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    line.clear();
    loop {
        let buffer = match reader.fill_buf() {
            Ok(buffer) => buffer,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buffer.is_empty() {
            return Ok(Line::Ended(!line.is_empty()));
        }
        let (take, done) = match buffer.iter().position(|&b| b == b'\n') {
            Some(end) => (end + 1, true),
            None => (buffer.len(), false),
        };
        if line.len() + take > max {
            return Ok(Line::TooLong);
        }
        line.extend_from_slice(&buffer[..take]);
        reader.consume(take);
        if done {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Line::Complete);
        }
    }
}

/// Reads a request head (and a small body, dropped); `Ok(None)` when the client closed the
/// connection before sending anything but blank lines.
fn read_request(reader: &mut impl BufRead) -> std::result::Result<Option<Request>, ReadError> {
    let mut line = Vec::new();
    let mut head_bytes = 0;
    // Blank lines before a request are allowed (some clients send one after a body).
    loop {
        match read_line(reader, &mut line, MAX_LINE_BYTES)? {
            Line::Complete if line.is_empty() => {
                head_bytes += 2;
                if head_bytes > MAX_HEAD_BYTES {
                    return Err(BAD_REQUEST.into());
                }
            }
            Line::Complete => break,
            Line::TooLong => {
                return Err(Refusal(Status::UriTooLong, "request line too long\n").into());
            }
            Line::Ended(false) => return Ok(None),
            Line::Ended(true) => return Err(BAD_REQUEST.into()),
        }
    }
    let (method, target, http11) = parse_request_line(&line)?;
    let target = target.to_owned();

    let mut headers = 0;
    let mut host: Option<Vec<u8>> = None;
    let mut hosts = 0;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    loop {
        match read_line(reader, &mut line, MAX_LINE_BYTES)? {
            Line::Complete => {}
            Line::TooLong => {
                return Err(Refusal(Status::HeaderFieldsTooLarge, "header line too long\n").into());
            }
            Line::Ended(_) => return Err(BAD_REQUEST.into()),
        }
        if line.is_empty() {
            break;
        }
        head_bytes += line.len() + 2;
        headers += 1;
        if headers > MAX_HEADERS || head_bytes > MAX_HEAD_BYTES {
            return Err(Refusal(Status::HeaderFieldsTooLarge, "too many headers\n").into());
        }
        let (name, value) = parse_header(&line)?;
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            host = Some(value.to_vec());
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let length = parse_content_length(value)?;
            if content_length.is_some_and(|seen| seen != length) {
                return Err(BAD_REQUEST.into());
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
        }
    }

    // A request must name this server as a loopback host: a page served from elsewhere whose
    // name now resolves to 127.0.0.1 still sends its own name.
    match (host, hosts) {
        (None, _) if !http11 => {}
        (Some(host), 1) => {
            if !std::str::from_utf8(&host).is_ok_and(is_loopback_host) {
                return Err(Refusal(
                    Status::MisdirectedRequest,
                    "this server answers only requests for localhost, 127.0.0.1 or [::1]\n",
                )
                .into());
            }
        }
        _ => return Err(Refusal(Status::BadRequest, "one Host header is required\n").into()),
    }
    let Some(method) = method else {
        return Err(Refusal(Status::MethodNotAllowed, "only GET and HEAD are served\n").into());
    };
    if !target.starts_with('/') {
        return Err(BAD_REQUEST.into());
    }
    if chunked {
        return Err(Refusal(
            Status::NotImplemented,
            "transfer codings are not supported\n",
        )
        .into());
    }
    let length = content_length.unwrap_or(0);
    if length > MAX_BODY_BYTES {
        return Err(Refusal(Status::ContentTooLarge, "request bodies are not accepted\n").into());
    }
    let read = io::copy(&mut reader.take(length), &mut io::sink())?;
    if read < length {
        return Err(BAD_REQUEST.into());
    }
    Ok(Some(Request { method, target }))
}

/// Splits `METHOD SP target SP HTTP/x.y`: the method (`None` for one not served), the target and
/// whether the version is 1.1.
fn parse_request_line(line: &[u8]) -> std::result::Result<(Option<Method>, &str, bool), Refusal> {
    let text = std::str::from_utf8(line).map_err(|_| BAD_REQUEST)?;
    let mut parts = text.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BAD_REQUEST);
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(BAD_REQUEST);
    }
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(BAD_REQUEST);
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => {
            let digits = version.strip_prefix("HTTP/").map(str::as_bytes);
            return Err(match digits {
                Some([major, b'.', minor]) if major.is_ascii_digit() && minor.is_ascii_digit() => {
                    Refusal(Status::VersionNotSupported, "only HTTP/1.0 and 1.1\n")
                }
                _ => BAD_REQUEST,
            });
        }
    };
    let method = match method {
        "GET" => Some(Method::Get),
        "HEAD" => Some(Method::Head),
        _ => None,
    };
    Ok((method, target, http11))
}

/// Splits `name: value`, the value without surrounding blanks.
fn parse_header(line: &[u8]) -> std::result::Result<(&[u8], &[u8]), Refusal> {
    let colon = line.iter().position(|&b| b == b':').ok_or(BAD_REQUEST)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    // A blank before the colon or at the start (a folded line) is refused, as the standard asks.
    if name.is_empty() || !name.iter().copied().all(is_token_byte) {
        return Err(BAD_REQUEST);
    }
    if value.iter().any(|&b| b == 0x7f || (b < 0x20 && b != b'\t')) {
        return Err(BAD_REQUEST);
    }
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !blank(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !blank(b))
        .map_or(start, |i| i + 1);
    Ok((name, &value[start..end]))
}

fn parse_content_length(value: &[u8]) -> std::result::Result<u64, Refusal> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(BAD_REQUEST);
    }
    // Only the size matters: anything too long for a u64 is far over the body cap.
    Ok(std::str::from_utf8(value)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(u64::MAX))
}

/// The characters of an HTTP token (a method, a header name).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether a `Host` value names the loopback interface: `localhost`, `127.x.y.z` or `[::1]`,
/// with any port (a port forward may reach the server on another one).
fn is_loopback_host(host: &str) -> bool {
    let (loopback, rest) = if let Some(bracketed) = host.strip_prefix('[') {
        let Some((address, rest)) = bracketed.split_once(']') else {
            return false;
        };
        (
            address.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback()),
            rest,
        )
    } else {
        let (name, rest) = host.find(':').map_or((host, ""), |i| host.split_at(i));
        let loopback = name.eq_ignore_ascii_case("localhost")
            || name.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback());
        (loopback, rest)
    };
    let port_ok = rest.is_empty()
        || rest.strip_prefix(':').is_some_and(|port| {
            (1..=5).contains(&port.len())
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok()
        });
    loopback && port_ok
}

/// Answers a request from the files under `root`.
fn static_file(root: &Path, request: &Request) -> Response {
    let not_found = || Response::refusal(Refusal(Status::NotFound, "not found\n"));
    let Some(path) = resolve(root, &request.target) else {
        return not_found();
    };
    // Only regular files: opening a FIFO someone left in the site would block the worker.
    let file = match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => File::open(&path).map(|file| (file, meta.len())),
        _ => return not_found(),
    };
    match file {
        Ok((file, length)) => Response {
            status: Status::Ok,
            content_type: content_type(&path),
            body: Body::File(file, length),
        },
        Err(_) => not_found(),
    }
}

/// Maps a request path to a file under `root`; `None` for anything that would leave it.
fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let path = percent_decode(path)?;
    let mut resolved = root.to_path_buf();
    for component in Path::new(path.trim_start_matches('/')).components() {
        match component {
            Component::Normal(part) => resolved.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if resolved.is_dir() {
        resolved.push(crate::site::INDEX_FILE);
    }
    let canonical = resolved.canonicalize().ok()?;
    canonical.starts_with(root).then_some(canonical)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            // `from_str_radix` alone would also take a sign.
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

fn write_response(stream: &TcpStream, response: Response, head_only: bool) -> io::Result<()> {
    let length = match &response.body {
        Body::Text(text) => text.len() as u64,
        Body::File(_, length) => *length,
    };
    let mut out = BufWriter::new(stream);
    write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {length}\r\n\
         X-Content-Type-Options: nosniff\r\nConnection: close\r\n",
        response.status.code(),
        response.status.reason(),
        response.content_type,
    )?;
    if response.status == Status::MethodNotAllowed {
        out.write_all(b"Allow: GET, HEAD\r\n")?;
    }
    if response.status == Status::ServiceUnavailable {
        out.write_all(b"Retry-After: 1\r\n")?;
    }
    out.write_all(b"\r\n")?;
    if !head_only {
        match response.body {
            Body::Text(text) => out.write_all(text.as_bytes())?,
            Body::File(file, length) => {
                let copied = io::copy(&mut file.take(length), &mut out)?;
                if copied < length {
                    // The file shrank since its size was sent; the client must not take the
                    // short body for the whole.
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was sent",
                    ));
                }
            }
        }
    }
    out.flush()
}

/// Ends the connection after an answer without resetting it (see [`LINGER`]).
fn close_gracefully(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let mut scratch = [0u8; 4096];
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    // Nothing pending (the usual case): close at once.
    match (&*stream).read(&mut scratch) {
        Ok(n) if n > 0 => {}
        _ => return,
    }
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero()
            || stream
                .set_read_timeout(Some(left.min(LINGER_QUIET)))
                .is_err()
        {
            return;
        }
        match (&*stream).read(&mut scratch) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_the_site_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "x").unwrap();
        let root = dir.path().canonicalize().unwrap();
        assert_eq!(resolve(&root, "/").unwrap(), root.join("index.html"));
        assert_eq!(
            resolve(&root, "/index.html?q=1").unwrap(),
            root.join("index.html")
        );
        assert!(resolve(&root, "/../etc/passwd").is_none());
        assert!(resolve(&root, "/%2e%2e/etc/passwd").is_none());
        assert!(resolve(&root, "/missing.js").is_none());
    }

    #[test]
    fn percent_escapes_must_be_two_hex_digits() {
        assert_eq!(percent_decode("/a%20b").as_deref(), Some("/a b"));
        assert_eq!(percent_decode("/%+1"), None);
        assert_eq!(percent_decode("/%2"), None);
        assert_eq!(percent_decode("/%zz"), None);
        assert_eq!(percent_decode("/%c3%28"), None);
    }

    #[test]
    fn only_loopback_hosts_are_accepted() {
        for host in [
            "localhost",
            "LocalHost:8000",
            "127.0.0.1",
            "127.0.0.1:1",
            "127.255.3.4:65535",
            "[::1]",
            "[::1]:8000",
            "[0:0:0:0:0:0:0:1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "evil.com",
            "evil.com:8000",
            "localhost.evil.com",
            "127.0.0.1.evil.com",
            "localhost:",
            "localhost:65536",
            "localhost:80:80",
            "localhost:+80",
            "128.0.0.1",
            "0.0.0.0",
            "127.0.0.01",
            "2130706433",
            "[::2]",
            "[::1",
            "[::1]x",
            "::1",
            "[::ffff:8.8.8.8]",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(request).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    #[test]
    fn serves_files_with_their_type() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<p>hi</p>").unwrap();
        let (listener, addr) = bind(0).unwrap();
        let site = dir.path().to_path_buf();
        std::thread::spawn(move || serve(&site, listener));
        let response = exchange(addr, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.contains("text/html"));
        assert!(response.ends_with("<p>hi</p>"));
    }

    #[test]
    fn a_panicking_handler_answers_500_and_the_workers_carry_on() {
        let (listener, addr) = bind(0).unwrap();
        let options = ServeOptions {
            workers: 2,
            ..ServeOptions::default()
        };
        let handler: Arc<Handler> = Arc::new(|request: &Request| {
            assert!(request.target != "/panic", "a handler bug");
            Response::refusal(Refusal(Status::Ok, "fine\n"))
        });
        std::thread::spawn(move || run(listener, &options, handler));
        // More panics than workers: had one killed its worker, the last requests would hang.
        for _ in 0..5 {
            let response = exchange(addr, b"GET /panic HTTP/1.1\r\nHost: localhost\r\n\r\n");
            assert!(
                response.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
                "{response}"
            );
        }
        let response = exchange(addr, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("\r\n\r\nfine\n"), "{response}");
    }
}
