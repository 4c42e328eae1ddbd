//! Fault injection for the crash and full-disk tests: named points in the write paths where a
//! test can make the process abort (as a `kill -9` would stop it: no destructor, no cleanup)
//! or make the I/O call fail with `ENOSPC` or `EIO`.
//!
//! A point fires when `MONOSCOPE_FAULT` is `<point>:<action>` or `<point>:<action>:<n>` (the
//! `n`-th time the point is reached in this process, from 1; the first by default), with
//! `<action>` one of `abort`, `enospc`, `eio`. Only debug builds (the test builds, and the
//! `cargo xtask pipeline run` build) read the variable; in a release build every point is a
//! no-op the optimiser removes.

use std::io;

/// Where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// Inside an activation-store shard write, with part of the shard written.
    ShardWrite,
    /// Between the two renames that replace a directory (an SAE, a checkpoint, a site).
    DirSwap,
    /// Inside a training checkpoint save, with part of its files written.
    CheckpointSave,
    /// While `labels.jsonl` is being written, with part of its lines written.
    LabelsWrite,
    /// After a stage's work, before its completion marker is written.
    BeforeMarker,
}

impl FaultPoint {
    pub const ALL: [FaultPoint; 5] = [
        FaultPoint::ShardWrite,
        FaultPoint::DirSwap,
        FaultPoint::CheckpointSave,
        FaultPoint::LabelsWrite,
        FaultPoint::BeforeMarker,
    ];

    /// The point's name in `MONOSCOPE_FAULT`.
    pub fn name(self) -> &'static str {
        match self {
            FaultPoint::ShardWrite => "shard-write",
            FaultPoint::DirSwap => "dir-swap",
            FaultPoint::CheckpointSave => "checkpoint-save",
            FaultPoint::LabelsWrite => "labels-write",
            FaultPoint::BeforeMarker => "before-marker",
        }
    }
}

/// The environment variable that arms a fault point.
pub const FAULT_ENV: &str = "MONOSCOPE_FAULT";

/// Reaching `point`: `Ok` unless `MONOSCOPE_FAULT` arms it (debug builds only), in which case
/// the process aborts or the returned error is what the failed I/O call would have returned.
#[inline]
pub fn reach(point: FaultPoint) -> io::Result<()> {
    #[cfg(debug_assertions)]
    armed::reach(point)?;
    #[cfg(not(debug_assertions))]
    let _ = point;
    Ok(())
}

#[cfg(debug_assertions)]
mod armed {
    use std::io;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::{FAULT_ENV, FaultPoint};

    #[derive(Debug, Clone, Copy)]
    enum Action {
        Abort,
        Errno(i32),
    }

    struct Armed {
        point: FaultPoint,
        action: Action,
        nth: u64,
    }

    const ENOSPC: i32 = 28;
    const EIO: i32 = 5;

    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    static REACHED: AtomicU64 = AtomicU64::new(0);

    fn parse(spec: &str) -> Option<Armed> {
        let mut parts = spec.split(':');
        let name = parts.next()?;
        let point = FaultPoint::ALL.into_iter().find(|p| p.name() == name)?;
        let action = match parts.next()? {
            "abort" => Action::Abort,
            "enospc" => Action::Errno(ENOSPC),
            "eio" => Action::Errno(EIO),
            _ => return None,
        };
        let nth = match parts.next() {
            None => 1,
            Some(n) => n.parse().ok().filter(|&n| n >= 1)?,
        };
        Some(Armed { point, action, nth })
    }

    pub(super) fn reach(point: FaultPoint) -> io::Result<()> {
        let armed = ARMED.get_or_init(|| {
            let spec = std::env::var(FAULT_ENV).ok()?;
            let armed = parse(&spec);
            if armed.is_none() {
                // A typo would make a fault test pass without injecting anything.
                panic!("{FAULT_ENV}={spec:?}: expected <point>:<abort|enospc|eio>[:<n>]");
            }
            armed
        });
        let Some(armed) = armed.as_ref().filter(|a| a.point == point) else {
            return Ok(());
        };
        if REACHED.fetch_add(1, Ordering::SeqCst) + 1 != armed.nth {
            return Ok(());
        }
        match armed.action {
            Action::Abort => {
                eprintln!("{FAULT_ENV}: aborting at {}", point.name());
                std::process::abort()
            }
            Action::Errno(code) => Err(io::Error::from_raw_os_error(code)),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn specs_parse_and_typos_do_not() {
            let a = parse("dir-swap:enospc:3").unwrap();
            assert_eq!((a.point, a.nth), (FaultPoint::DirSwap, 3));
            assert!(matches!(a.action, Action::Errno(ENOSPC)));
            assert!(matches!(
                parse("before-marker:abort").unwrap().action,
                Action::Abort
            ));
            for bad in [
                "dirswap:abort",
                "dir-swap",
                "dir-swap:kill",
                "dir-swap:eio:0",
            ] {
                assert!(parse(bad).is_none(), "{bad}");
            }
        }
    }
}
