//! Support for the `fuzz_*` tests across the workspace, which mutate valid files made by the
//! crates' own writers and check that reading them never panics, aborts or allocates beyond a
//! bound: how many cases to run, a global allocator that records the largest single
//! allocation, and the mutations themselves (byte edits, integer fields of a header set to
//! extreme values, JSON values replaced), which the tests drive from proptest strategies.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

/// The environment variable that sets the number of cases of every fuzz target.
pub const CASES_VAR: &str = "MONOSCOPE_FUZZ_CASES";

/// The bound every fuzz target holds the largest single allocation of one case to. The
/// inputs are small files, so a reader that sizes an allocation by a count the file cannot
/// back overshoots it by orders of magnitude, while honest reading stays far below.
pub const ALLOCATION_BOUND: usize = 64 << 20;

/// Cases per target when `MONOSCOPE_FUZZ_CASES` is not set: the full count, affordable for
/// every target of the workspace together in the debug test build.
pub const DEFAULT_CASES: u32 = 20_000;

/// Cases to run per target: `MONOSCOPE_FUZZ_CASES` when set (and a number), else
/// [`DEFAULT_CASES`].
pub fn cases() -> u32 {
    std::env::var(CASES_VAR)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// The runner of every fuzz target: [`cases`] cases, no regression files written, and
/// shrinking capped at `max_shrink_iters` (shrinking a file-sized input takes long, and the
/// failing edits are already small).
pub fn runner(max_shrink_iters: u32) -> proptest::test_runner::TestRunner {
    proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: cases(),
        max_shrink_iters,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    })
}

static LARGEST: AtomicUsize = AtomicUsize::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

/// Allocations this large are refused, so that a reader that asks for one fails its test
/// (the process aborts with "memory allocation failed") instead of exhausting the machine.
const REFUSED_FROM: usize = 8 << 30;

/// A global allocator for fuzz test binaries: [`System`], recording the largest single
/// allocation (see [`largest_allocation`]).
///
/// ```ignore
/// #[global_allocator]
/// static ALLOCATOR: CountingAllocator = CountingAllocator;
/// ```
#[derive(Debug)]
pub struct CountingAllocator;

fn record(size: usize) -> bool {
    LARGEST.fetch_max(size, Ordering::Relaxed);
    size < REFUSED_FROM
}

// SAFETY: every call is forwarded to `System` unchanged, or refused with a null pointer,
// which `GlobalAlloc` allows for any allocation.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !record(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !record(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !record(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: as in `dealloc`; the caller's contract on `new_size` is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs the tests of one binary one at a time, so that each reads the allocations of its own
/// cases: hold the guard for the whole test.
pub fn serial() -> MutexGuard<'static, ()> {
    // A test that failed while holding the lock poisons it; the next test still runs alone.
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `f` and returns its result with the largest single allocation made meanwhile (by any
/// thread: work handed to a pool counts). Meaningful with [`CountingAllocator`] installed and
/// under [`serial`].
pub fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.store(0, Ordering::Relaxed);
    let out = f();
    (out, LARGEST.load(Ordering::Relaxed))
}

/// Numbers that break size arithmetic: nothing, one, the edges of the integer widths a header
/// uses, and the largest.
pub const EXTREMES: [u64; 16] = [
    0,
    1,
    2,
    3,
    255,
    256,
    0xFFFF,
    0x7FFF_FFFF,
    0xFFFF_FFFF,
    1 << 32,
    1 << 40,
    1 << 48,
    1 << 62,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
];

/// One edit of a file's bytes. Positions are taken modulo the length of the bytes edited, so
/// that any edit applies to any file.
#[derive(Debug, Clone, PartialEq)]
pub enum ByteEdit {
    /// Write the low `width` bytes of `value`, little-endian, at `at`.
    Int { at: usize, width: usize, value: u64 },
    /// Set the byte at `at`.
    Byte { at: usize, value: u8 },
    /// Flip bit `bit % 8` of the byte at `at`.
    Flip { at: usize, bit: u8 },
    /// Keep only the first `len` bytes.
    Truncate { len: usize },
    /// Copy `len` bytes from `from` over the bytes at `to`.
    Splice { from: usize, to: usize, len: usize },
    /// Insert `bytes` at `at`.
    Insert { at: usize, bytes: Vec<u8> },
    /// Remove `len` bytes from `at`.
    Remove { at: usize, len: usize },
}

impl ByteEdit {
    pub fn apply(&self, bytes: &mut Vec<u8>) {
        let n = bytes.len();
        let pos = |at: usize| if n == 0 { 0 } else { at % n };
        match self {
            ByteEdit::Int { at, width, value } => {
                let at = pos(*at);
                for (i, b) in value.to_le_bytes().iter().take(*width).enumerate() {
                    if let Some(slot) = bytes.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            ByteEdit::Byte { at, value } => {
                if n > 0 {
                    bytes[pos(*at)] = *value;
                }
            }
            ByteEdit::Flip { at, bit } => {
                if n > 0 {
                    bytes[pos(*at)] ^= 1 << (bit % 8);
                }
            }
            ByteEdit::Truncate { len } => bytes.truncate(len % (n + 1)),
            ByteEdit::Splice { from, to, len } => {
                let (from, to) = (pos(*from), pos(*to));
                let len = (*len).min(n - from).min(n - to);
                bytes.copy_within(from..from + len, to);
            }
            ByteEdit::Insert { at, bytes: new } => {
                let at = pos(*at);
                bytes.splice(at..at, new.iter().copied());
            }
            ByteEdit::Remove { at, len } => {
                let at = pos(*at);
                let end = at + (*len).min(n - at);
                bytes.drain(at..end);
            }
        }
    }
}

/// An integer field of a header: where it is and how wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub at: usize,
    pub width: usize,
}

/// The integer fields of a GGUF file's header, in file order: counts, string and array
/// lengths, type ids, scalar metadata values, tensor dims, types and offsets. Of an array's
/// elements only the first two count, so that a vocabulary does not drown out the rest. Walks
/// as far as the bytes are a well-formed GGUF; a mutated file gives the fields before the
/// damage.
pub fn gguf_fields(bytes: &[u8]) -> Vec<Field> {
    let mut w = Walker {
        bytes,
        pos: 24,
        fields: vec![Field { at: 4, width: 4 }],
    };
    let _ = w.gguf();
    w.fields
}

struct Walker<'a> {
    bytes: &'a [u8],
    pos: usize,
    fields: Vec<Field>,
}

impl Walker<'_> {
    fn int(&mut self, width: usize) -> Option<u64> {
        self.int_kept(width, true)
    }

    fn int_kept(&mut self, width: usize, keep: bool) -> Option<u64> {
        let b = self.bytes.get(self.pos..self.pos.checked_add(width)?)?;
        let mut le = [0u8; 8];
        le[..width].copy_from_slice(b);
        if keep {
            self.fields.push(Field {
                at: self.pos,
                width,
            });
        }
        self.pos += width;
        Some(u64::from_le_bytes(le))
    }

    fn skip(&mut self, n: u64) -> Option<()> {
        let end = self.pos.checked_add(usize::try_from(n).ok()?)?;
        (end <= self.bytes.len()).then(|| self.pos = end)
    }

    fn gguf(&mut self) -> Option<()> {
        self.fields.push(Field { at: 8, width: 8 });
        self.fields.push(Field { at: 16, width: 8 });
        let n_tensors = u64::from_le_bytes(self.bytes.get(8..16)?.try_into().ok()?);
        let n_kv = u64::from_le_bytes(self.bytes.get(16..24)?.try_into().ok()?);
        for _ in 0..n_kv {
            let key_len = self.int(8)?;
            self.skip(key_len)?;
            let ty = self.int(4)?;
            self.value(ty as u32, 0, true)?;
        }
        for _ in 0..n_tensors {
            let name_len = self.int(8)?;
            self.skip(name_len)?;
            let n_dims = self.int(4)?;
            for _ in 0..n_dims.min(4) {
                self.int(8)?;
            }
            self.int(4)?;
            self.int(8)?;
        }
        Some(())
    }

    fn value(&mut self, ty: u32, depth: u32, keep: bool) -> Option<()> {
        let width = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => {
                let len = self.int_kept(8, keep)?;
                return self.skip(len);
            }
            9 if depth < 4 => {
                let elem = self.int_kept(4, keep)?;
                let len = self.int_kept(8, keep)?;
                for i in 0..len {
                    self.value(elem as u32, depth + 1, keep && i < 2)?;
                }
                return Some(());
            }
            _ => return None,
        };
        self.int_kept(width, keep).map(drop)
    }
}

/// A safetensors file's JSON header and where its data starts, if the bytes have one.
pub fn safetensors_header(bytes: &[u8]) -> Option<(Value, usize)> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let end = 8usize.checked_add(usize::try_from(n).ok()?)?;
    let header = serde_json::from_slice(bytes.get(8..end)?).ok()?;
    Some((header, end))
}

/// `bytes` (a safetensors file) with its header replaced by `header`, the data kept.
pub fn with_safetensors_header(bytes: &[u8], header: &Value) -> Vec<u8> {
    let data = safetensors_header(bytes).map_or(&[][..], |(_, end)| &bytes[end..]);
    let text = header.to_string();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(data);
    out
}

/// One edit of a JSON document; `pick` chooses among its values (see [`json_paths`]) modulo
/// their number, the document itself excluded where the edit would replace or remove it.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonEdit {
    /// Replace the picked value.
    Set { pick: usize, value: Value },
    /// Remove the picked value from its object or array.
    Remove { pick: usize },
    /// Add `key` = `value` to the picked value (the document itself included), when it is an
    /// object.
    Add {
        pick: usize,
        key: String,
        value: Value,
    },
}

/// The JSON pointer of every value in `v`, the root first, in document order.
pub fn json_paths(v: &Value) -> Vec<String> {
    fn walk(v: &Value, at: String, out: &mut Vec<String>) {
        out.push(at.clone());
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let k = k.replace('~', "~0").replace('/', "~1");
                    walk(child, format!("{at}/{k}"), out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, String::new(), &mut out);
    out
}

impl JsonEdit {
    pub fn apply(&self, doc: &mut Value) {
        let paths = json_paths(doc);
        let at = |pick: usize| paths[pick % paths.len()].clone();
        let inner =
            |pick: usize| (paths.len() > 1).then(|| paths[1 + pick % (paths.len() - 1)].clone());
        match self {
            JsonEdit::Set { pick, value } => {
                if let Some(slot) = inner(*pick).and_then(|p| doc.pointer_mut(&p)) {
                    *slot = value.clone();
                }
            }
            JsonEdit::Remove { pick } => {
                let Some(path) = inner(*pick) else {
                    return;
                };
                let Some((parent, last)) = path.rsplit_once('/') else {
                    return;
                };
                let last = last.replace("~1", "/").replace("~0", "~");
                match doc.pointer_mut(parent) {
                    Some(Value::Object(map)) => {
                        map.remove(&last);
                    }
                    Some(Value::Array(items)) => {
                        if let Ok(i) = last.parse::<usize>()
                            && i < items.len()
                        {
                            items.remove(i);
                        }
                    }
                    _ => {}
                }
            }
            JsonEdit::Add { pick, key, value } => {
                if let Some(Value::Object(map)) = doc.pointer_mut(&at(*pick)) {
                    map.insert(key.clone(), value.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_edits_wrap_positions_and_stay_in_bounds() {
        let mut b = vec![0u8; 8];
        ByteEdit::Int {
            at: 14,
            width: 4,
            value: 0x0403_0201,
        }
        .apply(&mut b);
        assert_eq!(b, [0, 0, 0, 0, 0, 0, 1, 2]);
        ByteEdit::Splice {
            from: 6,
            to: 0,
            len: 100,
        }
        .apply(&mut b);
        assert_eq!(b[..2], [1, 2]);
        ByteEdit::Remove { at: 7, len: 5 }.apply(&mut b);
        assert_eq!(b.len(), 7);
        ByteEdit::Truncate { len: 3 }.apply(&mut b);
        assert_eq!(b, [1, 2, 0]);
        let mut empty = Vec::new();
        for e in [
            ByteEdit::Byte { at: 3, value: 1 },
            ByteEdit::Flip { at: 3, bit: 9 },
            ByteEdit::Remove { at: 1, len: 1 },
        ] {
            e.apply(&mut empty);
        }
        assert!(empty.is_empty());
    }

    #[test]
    fn gguf_fields_find_every_integer_of_the_header() {
        let mut w = crate::GgufWriter::new();
        w.add_metadata("a", crate::MetadataValue::U32(7));
        w.add_tensor("t", &[2], crate::GgmlType::F32, &[1.0, 2.0])
            .unwrap();
        let bytes = w.to_bytes().unwrap();
        let fields = gguf_fields(&bytes);
        // version, 2 counts, key length, type, value, name length, dim count, dim, type,
        // offset.
        assert_eq!(fields.len(), 11);
        let value = fields[5];
        assert_eq!(value.width, 4);
        assert_eq!(bytes[value.at], 7);
    }

    #[test]
    fn json_edits_reach_nested_values() {
        let mut v = serde_json::json!({"a": {"b/c": [1, 2]}});
        let paths = json_paths(&v);
        assert_eq!(paths, ["", "/a", "/a/b~1c", "/a/b~1c/0", "/a/b~1c/1"]);
        JsonEdit::Set {
            pick: 2,
            value: 9.into(),
        }
        .apply(&mut v);
        JsonEdit::Remove { pick: 3 }.apply(&mut v);
        assert_eq!(v, serde_json::json!({"a": {"b/c": [9]}}));
    }
}
