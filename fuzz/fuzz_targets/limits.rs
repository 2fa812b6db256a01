//! The memory limit for one allocation, for every target. libFuzzer's own `-malloc_limit_mb`
//! works through a sanitizer's malloc hooks, which a build without one (`-s none`, the one the
//! stable compiler makes) does not have; so the targets' allocator checks each allocation
//! against the same flag and aborts, which libFuzzer reports as a crash and saves the input.
//! (`-rss_limit_mb` is checked by libFuzzer's own thread and needs nothing here.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

#[global_allocator]
static ALLOCATOR: Limited = Limited;

/// The largest allocation allowed, in bytes; no limit until [`init`] reads it.
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Reads `-malloc_limit_mb=N` from the command line (without it, `-rss_limit_mb=N`, as
/// libFuzzer does). Called once, before the first input.
pub fn init() {
    let flag = |name: &str| {
        std::env::args()
            .filter_map(|arg| arg.strip_prefix(name)?.parse::<usize>().ok())
            .next_back()
            .filter(|&mb| mb > 0)
    };
    if let Some(mb) = flag("-malloc_limit_mb=").or_else(|| flag("-rss_limit_mb=")) {
        LIMIT.store(mb.saturating_mul(1 << 20), Ordering::Relaxed);
    }
}

struct Limited;

fn check(size: usize) {
    if size > LIMIT.load(Ordering::Relaxed) {
        // Nothing here may allocate: the size is written from a buffer on the stack.
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut n = size;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let mut err = std::io::stderr();
        let _ = err.write_all(b"==teal-fuzz== ERROR: an allocation of ");
        let _ = err.write_all(&digits[at..]);
        let _ = err.write_all(b" bytes, over -malloc_limit_mb\n");
        std::process::abort();
    }
}

// SAFETY: every call is passed to the system allocator unchanged; the check only reads the
// requested size.
unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}
