//! A global allocator that starts large blocks on a cache line.
//!
//! glibc's `malloc` places a block it maps from the kernel (any block of more than
//! 128 KiB at first) 16 bytes past a page boundary. A video frame whose size is a
//! multiple of the page size (640x480, 768x576, 1280x720 and 3840x2160 RGB frames
//! all are) then also ends 16 bytes past one, and OpenCV's FFmpeg writer copies each
//! such frame into a buffer of its own before converting it (its converters read up
//! to 32 bytes past the end, which must stay on the same page). Starting large blocks
//! on a 64-byte boundary moves their end to 64 bytes past the boundary; vector loads
//! over large tensors gain aligned starts too.
//!
//! This crate installs it as the global allocator, so the `vpipe` binary and any
//! program linking `vpipe_cli` (a command line with heads of its own) use it.

use std::alloc::{GlobalAlloc, Layout, System};

/// The system allocator, with blocks of at least [`LineAligned::LARGE`] bytes
/// aligned to [`LineAligned::LINE`] bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct LineAligned;

impl LineAligned {
    /// Blocks at least this large are line-aligned.
    pub const LARGE: usize = 64 << 10;
    /// Their alignment, in bytes.
    pub const LINE: usize = 64;

    /// The layout a block of `layout` gets from the system allocator (always the
    /// same for the same `layout`, so that blocks are freed as they were made).
    fn adjusted(layout: Layout) -> Layout {
        if layout.size() >= Self::LARGE && layout.align() < Self::LINE {
            Layout::from_size_align(layout.size(), Self::LINE).unwrap_or(layout)
        } else {
            layout
        }
    }
}

// SAFETY: every block comes from `System` with the layout `adjusted` gives, and goes
// back to it with the same layout; `adjusted` keeps the size and never lowers the
// alignment, so each block satisfies the layout it was asked for.
unsafe impl GlobalAlloc for LineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `adjusted` keeps the (non-zero) size of `layout`.
        unsafe { System.alloc(Self::adjusted(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(Self::adjusted(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` or `realloc` with this `layout`, hence from
        // `System` with `adjusted(layout)`.
        unsafe { System.dealloc(ptr, Self::adjusted(layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = Self::adjusted(layout);
        // SAFETY: the caller guarantees that `new_size`, rounded up to the alignment,
        // does not overflow `isize`.
        let new =
            Self::adjusted(unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) });
        if old.align() == new.align() {
            // SAFETY: `ptr` is a block of `old` from `System`.
            return unsafe { System.realloc(ptr, old, new_size) };
        }
        // SAFETY: `new` has a non-zero size (`new_size` is non-zero).
        let moved = unsafe { System.alloc(new) };
        if !moved.is_null() {
            // SAFETY: both blocks hold at least the smaller size and do not overlap;
            // `ptr` is a block of `old` from `System`.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                System.dealloc(ptr, old);
            }
        }
        moved
    }
}

/// Blocks up to this size come from malloc's heap rather than their own mapping.
pub const HEAP_BLOCKS_UP_TO: usize = 64 << 20;
/// Free memory malloc keeps at the top of its heap instead of returning it.
pub const KEEP_FREE: usize = 512 << 20;

/// Has glibc's `malloc` keep freed memory for the next blocks.
///
/// A network allocates a fresh output for most layers and frees its input. By
/// default glibc maps each block above 128 KiB from the kernel and unmaps it when
/// freed, and shrinks its heap whenever the free top passes 128 KiB: the next image
/// then faults every page of those blocks in again, zeroed by the kernel. That took
/// about a tenth of the CPU time of SSD-XXS at 320. With blocks up to
/// [`HEAP_BLOCKS_UP_TO`] on the heap and [`KEEP_FREE`] kept, the pages stay mapped
/// and are reused. Called by [`crate::main_with`] before anything is allocated in
/// bulk; elsewhere a no-op.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: plain settings of glibc's allocator, valid at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, HEAP_BLOCKS_UP_TO as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_FREE as libc::c_int);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts_on_a_line(p: *mut u8) -> bool {
        (p as usize).is_multiple_of(LineAligned::LINE)
    }

    #[test]
    fn large_blocks_start_on_a_line_and_keep_their_contents() {
        let a = LineAligned;
        let large = LineAligned::LARGE;
        for (size, new_size) in [
            (100, 200),
            (100, large + 5),
            (large + 5, 100),
            (large, 3 << 20),
            (3 << 20, large + 1),
        ] {
            let layout = Layout::from_size_align(size, 1).unwrap();
            // SAFETY: non-zero sizes; each block is used within its size and freed
            // once, with the layout it has.
            unsafe {
                let p = a.alloc(layout);
                assert!(!p.is_null());
                assert!(size < large || starts_on_a_line(p), "{size}");
                p.write_bytes(7, size);
                let q = a.realloc(p, layout, new_size);
                assert!(!q.is_null());
                assert!(
                    new_size < large || starts_on_a_line(q),
                    "{size} -> {new_size}"
                );
                let kept = size.min(new_size);
                assert!((0..kept).all(|i| *q.add(i) == 7), "{size} -> {new_size}");
                a.dealloc(q, Layout::from_size_align(new_size, 1).unwrap());
                let z = a.alloc_zeroed(layout);
                assert!(size < large || starts_on_a_line(z), "{size}");
                assert!((0..size).all(|i| *z.add(i) == 0));
                a.dealloc(z, layout);
            }
        }
    }
}
