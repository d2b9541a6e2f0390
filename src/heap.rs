//! The process's heap as its allocator (jemalloc, installed by the binary) sees it, for the
//! `tcred_heap_bytes` gauges: what the program holds (`allocated`), the pages that holds
//! (`active`), what is resident (`resident`, close to the RSS minus the binary's own pages), the
//! allocator's own bookkeeping (`metadata`) and address space kept for reuse (`retained`). Without
//! jemalloc as the global allocator (unit tests) every figure is that of an unused jemalloc.

use tikv_jemalloc_ctl::{background_thread, epoch, stats};

/// Lets the allocator return freed pages to the system from a thread of its own, a few seconds
/// after they were freed (jemalloc's decay), instead of only when the program next allocates: a
/// quiet operator otherwise kept a restart's transient pages resident. Whether it could.
pub fn purge_in_background() -> bool {
    background_thread::write(true).is_ok()
}

/// One reading, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Heap {
    pub allocated: u64,
    pub active: u64,
    pub resident: u64,
    pub metadata: u64,
    pub retained: u64,
}

impl Heap {
    /// The kinds and values, in the order they are exported.
    pub fn rows(&self) -> [(&'static str, u64); 5] {
        [
            ("allocated", self.allocated),
            ("active", self.active),
            ("resident", self.resident),
            ("metadata", self.metadata),
            ("retained", self.retained),
        ]
    }
}

/// Reads the allocator's statistics (refreshing them first); `None` if it cannot.
pub fn read() -> Option<Heap> {
    epoch::advance().ok()?;
    let get = |r: Result<usize, tikv_jemalloc_ctl::Error>| r.ok().map(|v| v as u64);
    Some(Heap {
        allocated: get(stats::allocated::read())?,
        active: get(stats::active::read())?,
        resident: get(stats::resident::read())?,
        metadata: get(stats::metadata::read())?,
        retained: get(stats::retained::read())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_is_consistent() {
        let heap = read().expect("jemalloc statistics");
        assert!(heap.active >= heap.allocated, "{heap:?}");
        assert_eq!(heap.rows().len(), 5);
    }
}
