//! Process isolation: a plugin stage's `run` in a child process, so that a plugin that aborts,
//! crashes or hangs fails its own stage instead of the whole run.
//!
//! The host starts the monoscope executable itself ([`host_executable`]) as
//! `monoscope __plugin-host <plugin> <kind>` ([`HOST_SUBCOMMAND`]), in a process group of its
//! own. The child loads the plugin (the same ABI checks as the host), reads a
//! [`RunRequest`] from stdin, calls the plugin's `run` entry point and writes [`ChildLine`]s,
//! one JSON document a line, to stdout: progress and log lines while it runs, then one
//! `result` or `failure` line. Whatever the plugin itself prints to stdout goes to stderr,
//! so that it cannot garble the lines.
//!
//! The host stops the child (SIGTERM to its process group, which the child turns into the
//! plugin's `is_cancelled`; SIGKILL after [`KILL_GRACE`]) when the run is cancelled or the
//! stage's timeout passes. A child that ends without a `result` or `failure` line fails its
//! stage with how it ended (its exit status or signal).
//!
//! What the child wrote is checked afterwards, not confined (see the `watch` module).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use monoscope_core::{CancelToken, StageContext, StageError};
use monoscope_plugin_abi::abi::{Bytes, Host, Status};
use monoscope_plugin_abi::wire::{Failure, RunRequest, RunResult};
use serde::{Deserialize, Serialize};

use crate::factory::Returned;
use crate::load::PluginError;
use crate::watch::Watch;

/// Where a plugin's stages run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Isolation {
    /// In the host process, as a function call. A plugin that aborts or crashes takes the
    /// host down with it; a panic is caught.
    #[default]
    None,
    /// Each stage run in a child process; `timeout`: how long a run may take before the child
    /// is stopped (`None`: no limit).
    Process { timeout: Option<Duration> },
}

/// The hidden `monoscope` subcommand that serves one isolated stage run ([`serve_child`]).
pub const HOST_SUBCOMMAND: &str = "__plugin-host";

/// Names the executable to start for isolated runs instead of this one. Needed where this
/// process is not the `monoscope` binary (a test binary driving the library).
pub const HOST_ENV: &str = "MONOSCOPE_PLUGIN_HOST";

/// How long a child has between SIGTERM and SIGKILL to let its plugin notice the
/// cancellation and return.
pub const KILL_GRACE: Duration = Duration::from_secs(3);

/// How often the host looks at the cancel token, the clock and the child while no line comes.
const POLL: Duration = Duration::from_millis(50);

/// How long the host keeps reading after the child exited: a process the plugin started may
/// hold the pipe open long after.
const DRAIN: Duration = Duration::from_secs(1);

/// Progress lines are at most this frequent; a plugin may report after every item.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// One line the child writes to its stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChildLine {
    /// The plugin's `progress` callback (`length` 0: unknown).
    Progress { position: u64, length: u64 },
    /// The plugin's `log` callback: `level` 0 error, 1 warn, 2 info, 3 debug.
    Log { level: u32, message: String },
    /// `run` succeeded: its [`RunResult`]. The last line.
    Result { result: RunResult },
    /// `run` failed: its status code (an [`Status`] value) and [`Failure`]. The last line.
    Failure { status: i32, failure: Failure },
}

impl ChildLine {
    fn from_returned(returned: Returned) -> ChildLine {
        match returned {
            Returned::Ran(result) => ChildLine::Result { result },
            Returned::Failed { code, failure } => ChildLine::Failure {
                status: code,
                failure,
            },
        }
    }
}

/// The executable that serves isolated runs: [`HOST_ENV`] if set, else this one.
pub fn host_executable() -> std::io::Result<PathBuf> {
    match std::env::var_os(HOST_ENV) {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => std::env::current_exe(),
    }
}

/// One isolated stage run, as the host sees it.
pub(crate) struct ChildRun<'a> {
    pub plugin: &'a Path,
    pub kind: &'a str,
    /// "plugin name version (path)", for messages.
    pub origin: &'a str,
    pub timeout: Option<Duration>,
    pub request: &'a RunRequest,
}

/// Why the host stopped the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Cancelled,
    TimedOut,
}

#[cfg(not(unix))]
pub(crate) fn run_in_child(
    run: &ChildRun<'_>,
    _: &StageContext<'_>,
) -> Result<Returned, StageError> {
    Err(StageError::Invalid(format!(
        "{}: isolation = \"process\" needs a Unix system",
        run.origin
    )))
}

/// Runs the stage in a child process and returns what the plugin returned, or fails the stage
/// with how the child ended.
#[cfg(unix)]
pub(crate) fn run_in_child(
    run: &ChildRun<'_>,
    ctx: &StageContext<'_>,
) -> Result<Returned, StageError> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    let (origin, stage) = (run.origin, ctx.stage_id);
    let fail = |what: String| StageError::Invalid(format!("{origin}: stage `{stage}`: {what}"));
    let request = serde_json::to_vec(run.request).map_err(StageError::other)?;
    let exe = host_executable().map_err(|e| {
        fail(format!(
            "cannot find the monoscope executable to isolate it in: {e}"
        ))
    })?;
    let watch = Watch::new(
        ctx.run_dir,
        &ctx.stage_dir,
        run.request.inputs.values().map(|a| a.path.clone()),
    );
    let before = watch.snapshot();

    let mut child = Command::new(&exe)
        .arg(HOST_SUBCOMMAND)
        .arg(run.plugin)
        .arg(run.kind)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Its own group: a terminal's Ctrl-C reaches the host only, which stops the child
        // itself, and a stop reaches whatever the plugin started too.
        .process_group(0)
        .spawn()
        .map_err(|e| fail(format!("cannot start {}: {e}", exe.display())))?;
    let pid = child.id();
    tracing::debug!(stage = %stage, pid, plugin = %run.plugin.display(), "isolated plugin process started");

    // Written from a thread: a child that never reads must not block the host.
    let mut stdin = child.stdin.take();
    std::thread::spawn(move || {
        if let Some(stdin) = stdin.as_mut() {
            // A child that died early closed the pipe; how it ended is what gets reported.
            let _ = stdin.write_all(&request);
        }
    });
    let (lines_tx, lines) = mpsc::channel::<String>();
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
    }

    let started = Instant::now();
    let mut stop: Option<(Stop, Instant)> = None;
    let mut killed = false;
    let mut returned: Option<Returned> = None;
    let take = |line: String, returned: &mut Option<Returned>| match serde_json::from_str(&line) {
        Ok(ChildLine::Progress { position, length }) => {
            if length > 0 {
                ctx.progress.set_length(length);
            }
            ctx.progress.set_position(position);
        }
        Ok(ChildLine::Log { level, message }) => log(stage, level, &message),
        Ok(ChildLine::Result { result }) => *returned = Some(Returned::Ran(result)),
        Ok(ChildLine::Failure { status, failure }) => {
            *returned = Some(Returned::Failed {
                code: status,
                failure,
            })
        }
        Err(_) => tracing::warn!(stage = %stage, "plugin process wrote: {line}"),
    };
    let status = loop {
        match lines.recv_timeout(POLL) {
            Ok(line) => take(line, &mut returned),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // The child closed its stdout; it is about to exit (or is stuck exiting).
            Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(POLL),
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                signal_group(pid, libc::SIGKILL);
                let _ = child.wait();
                return Err(fail(format!("lost track of its process {pid}: {e}")));
            }
        }
        if stop.is_none() {
            let why = if ctx.cancel.is_cancelled() {
                Some(Stop::Cancelled)
            } else if run.timeout.is_some_and(|t| started.elapsed() >= t) {
                Some(Stop::TimedOut)
            } else {
                None
            };
            if let Some(why) = why {
                tracing::debug!(stage = %stage, pid, ?why, "stopping the plugin process");
                // The child is not reaped yet, so its pid still names its group.
                signal_group(pid, libc::SIGTERM);
                stop = Some((why, Instant::now()));
            }
        }
        if let Some((_, since)) = stop
            && !killed
            && since.elapsed() >= KILL_GRACE
        {
            signal_group(pid, libc::SIGKILL);
            killed = true;
        }
    };
    let drain_until = Instant::now() + DRAIN;
    while let Some(left) = drain_until.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) => take(line, &mut returned),
            Err(_) => break,
        }
    }

    let after = watch.snapshot();
    let changes = watch.changes(&before, &after);
    let outside = || {
        format!(
            "it changed files outside its stage directory {}: {}",
            ctx.stage_dir.display(),
            changes.join(", ")
        )
    };
    let also = || {
        if changes.is_empty() {
            String::new()
        } else {
            format!("; {}", outside())
        }
    };
    match (stop, returned) {
        (Some((Stop::Cancelled, _)), _) => Err(StageError::Cancelled),
        (Some((Stop::TimedOut, _)), _) => {
            let limit = run.timeout.unwrap_or_default().as_secs_f64();
            Err(fail(format!(
                "timed out after {limit} s (the plugin's `timeout_s`); its process was killed{}",
                also()
            )))
        }
        (None, Some(returned)) if changes.is_empty() => {
            if !status.success() {
                tracing::warn!(stage = %stage, "the plugin process {}, after returning its result", ended(status));
            }
            Ok(returned)
        }
        (None, Some(Returned::Ran(_))) => Err(fail(outside())),
        // The plugin's own failure comes first; its status (a panic, say) is kept.
        (None, Some(Returned::Failed { code, mut failure })) => {
            failure.message.push_str(&also());
            Ok(Returned::Failed { code, failure })
        }
        (None, None) => Err(fail(format!(
            "its process {} before returning a result{}",
            ended(status),
            also()
        ))),
    }
}

/// Sends `signal` to the process group led by `pid`.
#[cfg(unix)]
fn signal_group(pid: u32, signal: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // SAFETY: `kill` takes no pointers; a group that is already gone is only an error code.
    unsafe { libc::kill(-pid, signal) };
}

/// "was killed by signal 11 (SIGSEGV)", "exited with status 3".
#[cfg(unix)]
fn ended(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(signal) = status.signal() {
        let name = signal_name(signal)
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        let core = if status.core_dumped() {
            ", core dumped"
        } else {
            ""
        };
        let hint = if signal == libc::SIGKILL {
            "; nothing in monoscope sent it, which is what the out-of-memory killer does"
        } else {
            ""
        };
        return format!("was killed by signal {signal}{name}{core}{hint}");
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => format!("ended ({status})"),
    }
}

#[cfg(unix)]
fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return None,
    })
}

fn log(stage: &str, level: u32, message: &str) {
    match level {
        0 => tracing::error!(stage = %stage, "{message}"),
        1 => tracing::warn!(stage = %stage, "{message}"),
        2 => tracing::info!(stage = %stage, "{message}"),
        _ => tracing::debug!(stage = %stage, "{message}"),
    }
}

/// The child's side of an isolated run: loads the plugin at `plugin`, reads the request from
/// stdin, runs stage kind `kind` and writes [`ChildLine`]s to stdout. `cancel` is what the
/// plugin's `is_cancelled` reports; the caller cancels it on SIGTERM.
///
/// A plugin that fails, or fails to load, is reported on stdout and is not an error here;
/// errors are about the pipes to the host.
#[cfg(unix)]
pub fn serve_child(plugin: &Path, kind: &str, cancel: &CancelToken) -> Result<(), PluginError> {
    let out = take_stdout().map_err(|source| PluginError::Child {
        what: "redirecting stdout",
        source,
    })?;
    // The host waits on this process from the thread that started it; should the host die,
    // nothing would stop this process, so the kernel is asked to.
    #[cfg(target_os = "linux")]
    // SAFETY: `prctl` with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    let state = ChildState {
        out: Mutex::new(out),
        cancel: cancel.clone(),
        last_progress: Mutex::new(None),
    };
    let mut request = Vec::new();
    std::io::stdin()
        .read_to_end(&mut request)
        .map_err(|source| PluginError::Child {
            what: "reading the run request",
            source,
        })?;
    let line = match crate::load::open(plugin) {
        Ok((entrypoints, _)) => {
            let host = Host {
                ctx: &state as *const ChildState as *mut std::ffi::c_void,
                is_cancelled: child_is_cancelled,
                progress: child_progress,
                log: child_log,
            };
            let (code, out) = entrypoints.call_run(kind, &request, &host);
            ChildLine::from_returned(Returned::from_call(code, &out))
        }
        Err(e) => ChildLine::Failure {
            status: Status::Error as i32,
            failure: Failure {
                message: format!("loading it in its own process: {e}"),
                problems: Vec::new(),
            },
        },
    };
    state.send(&line).map_err(|source| PluginError::Child {
        what: "writing the result",
        source,
    })
}

#[cfg(not(unix))]
pub fn serve_child(_: &Path, _: &str, _: &CancelToken) -> Result<(), PluginError> {
    Err(PluginError::Child {
        what: "starting",
        source: std::io::Error::other("process isolation needs a Unix system"),
    })
}

/// The protocol's copy of stdout, with fd 1 itself pointed at stderr.
#[cfg(unix)]
fn take_stdout() -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // Close-on-exec: processes the plugin starts must not hold the host's pipe open.
    // SAFETY: `fcntl` and `dup2` on this process's standard descriptors, no pointers.
    let fd = unsafe { libc::fcntl(libc::STDOUT_FILENO, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// What the child's host callbacks see.
struct ChildState {
    out: Mutex<std::fs::File>,
    cancel: CancelToken,
    last_progress: Mutex<Option<Instant>>,
}

impl ChildState {
    fn send(&self, line: &ChildLine) -> std::io::Result<()> {
        let mut text = serde_json::to_vec(line).map_err(std::io::Error::other)?;
        text.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.write_all(&text)?;
        out.flush()
    }

    /// A line for a callback: a host that stopped listening is a cancellation.
    fn send_or_cancel(&self, line: &ChildLine) {
        if self.send(line).is_err() {
            self.cancel.cancel();
        }
    }
}

extern "C" fn child_is_cancelled(ctx: *mut std::ffi::c_void) -> bool {
    // SAFETY: `ctx` is the `ChildState` that outlives the `run` call it was passed to.
    unsafe { &*(ctx as *const ChildState) }
        .cancel
        .is_cancelled()
}

extern "C" fn child_progress(ctx: *mut std::ffi::c_void, position: u64, length: u64) {
    // SAFETY: as above.
    let state = unsafe { &*(ctx as *const ChildState) };
    let now = Instant::now();
    {
        let mut last = state
            .last_progress
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let done = length > 0 && position >= length;
        if !done && last.is_some_and(|t| now.duration_since(t) < PROGRESS_EVERY) {
            return;
        }
        *last = Some(now);
    }
    state.send_or_cancel(&ChildLine::Progress { position, length });
}

extern "C" fn child_log(ctx: *mut std::ffi::c_void, level: u32, message: Bytes) {
    // SAFETY: as above; the message buffer is valid for this call.
    let (state, message) = unsafe { (&*(ctx as *const ChildState), message.as_slice()) };
    state.send_or_cancel(&ChildLine::Log {
        level,
        message: String::from_utf8_lossy(message).into_owned(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line format is what a host and a child of different builds must agree on.
    #[test]
    fn child_lines_are_tagged_json_documents() {
        let progress = ChildLine::Progress {
            position: 3,
            length: 10,
        };
        assert_eq!(
            serde_json::to_string(&progress).unwrap(),
            r#"{"type":"progress","position":3,"length":10}"#
        );
        let failure: ChildLine = serde_json::from_str(
            r#"{"type":"failure","status":2,"failure":{"message":"plugin panicked: x"}}"#,
        )
        .unwrap();
        assert_eq!(
            failure,
            ChildLine::Failure {
                status: Status::Panicked as i32,
                failure: Failure {
                    message: "plugin panicked: x".into(),
                    problems: vec![],
                },
            }
        );
        let result = ChildLine::Result {
            result: RunResult::default(),
        };
        let text = serde_json::to_string(&result).unwrap();
        assert_eq!(text, r#"{"type":"result","result":{"outputs":{}}}"#);
        assert_eq!(serde_json::from_str::<ChildLine>(&text).unwrap(), result);
    }

    #[cfg(unix)]
    #[test]
    fn an_exit_status_names_its_signal() {
        use std::os::unix::process::ExitStatusExt;
        let segv = ExitStatus::from_raw(libc::SIGSEGV);
        assert_eq!(ended(segv), "was killed by signal 11 (SIGSEGV)");
        let code = ExitStatus::from_raw(3 << 8);
        assert_eq!(ended(code), "exited with status 3");
    }
}
