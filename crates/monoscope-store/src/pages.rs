//! Large zeroed buffers on transparent huge pages, where the kernel offers them.
//!
//! The shuffle buffer is up to hundreds of MB, read and written at random rows. On 4 KiB pages,
//! faulting it in (a trap per 4 KiB) took about a quarter of the consumer thread's time in a
//! shuffled read of the quickstart store, and every random row needs its own TLB entry. A
//! mapping of its own, advised for huge pages, faults in 2 MiB at a time. (A store's later
//! readers take the buffer over instead: see `recycle`.)

use std::ops::{Deref, DerefMut};

use memmap2::{MmapMut, MmapOptions};

/// Below this size a buffer is not worth a mapping of its own.
const MAPPED_FROM: usize = 2 << 20;

/// A `[u32]` of fixed length, zeroed when made.
#[derive(Debug)]
pub enum Words {
    Mapped(MmapMut),
    Heap(Vec<u32>),
}

impl Words {
    pub fn zeroed(len: usize) -> Words {
        let bytes = len * 4;
        if bytes >= MAPPED_FROM
            && let Ok(map) = MmapOptions::new().len(bytes).map_anon()
        {
            // Only a hint: refused, the buffer works the same on small pages.
            #[cfg(target_os = "linux")]
            let _ = map.advise(memmap2::Advice::HugePage);
            return Words::Mapped(map);
        }
        Words::Heap(vec![0; len])
    }
}

impl Default for Words {
    fn default() -> Words {
        Words::Heap(Vec::new())
    }
}

impl Deref for Words {
    type Target = [u32];

    fn deref(&self) -> &[u32] {
        match self {
            // A mapping is page-aligned and `len * 4` bytes long: the cast cannot fail.
            Words::Mapped(map) => bytemuck::cast_slice(map),
            Words::Heap(v) => v,
        }
    }
}

impl DerefMut for Words {
    fn deref_mut(&mut self) -> &mut [u32] {
        match self {
            Words::Mapped(map) => bytemuck::cast_slice_mut(map),
            Words::Heap(v) => v,
        }
    }
}
