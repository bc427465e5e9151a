//! The bf16 products' blocks on Intel AMX (Advanced Matrix Extensions), where the
//! processor and the kernel offer it.
//!
//! AMX multiplies tiles held in eight tile registers: `tdpbf16ps` adds the product
//! of a `16 x 32` bf16 tile (16 rows of 16 column pairs) and a `16 x 32` bf16 tile
//! (16 row pairs of 16 columns) into a `16 x 16` `f32` tile. Those are exactly the
//! layouts of [`crate::bf16`]'s packed operands: a row of the left operand holds
//! pairs of columns, a panel of the right operand pairs of rows. So the operands
//! are packed as for the AVX512_BF16 kernel, with the rows padded to whole tiles
//! ([`ROWS`]) and the panels to whole tiles of row pairs ([`PAIRS`]).
//!
//! A block is at most 32 rows by one panel of 32 columns: four `f32` tiles (`tmm0`
//! to `tmm3`), two left tiles (`tmm4`, `tmm5`) and two right tiles (`tmm6`,
//! `tmm7`), all of 16 rows of 64 bytes.
//!
//! Sums are in `f32` as in the AVX512_BF16 kernel, but in another order, and AMX
//! treats bf16 subnormals as zeros: results agree to the rounding of `f32` sums,
//! not to the bit.
//!
//! Linux lends the tile registers only to processes that ask
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); [`available`] asks once.

#[cfg(target_arch = "x86_64")]
use std::arch::asm;

#[cfg(target_arch = "x86_64")]
use crate::bf16::{NR, copy_edge};

/// Environment variable that turns AMX off (`VPIPE_AMX=off`): the bf16 products
/// then run on AVX512_BF16, to compare the two or to avoid AMX.
pub const AMX_ENV: &str = "VPIPE_AMX";

/// Rows of a tile: the left operand's rows are padded to a multiple of it.
pub const ROWS: usize = 16;
/// Pairs of the inner dimension per tile: the right operand's panels are padded
/// to a multiple of it.
pub const PAIRS: usize = 16;
/// Rows of a block: two tiles.
pub const BLOCK_ROWS: usize = 2 * ROWS;

/// Whether the bf16 products run on AMX: the processor has AMX-TILE and AMX-BF16,
/// the operating system saves the tile registers and lends them to this process,
/// and [`AMX_ENV`] does not turn them off. Decided once per process.
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let off = matches!(std::env::var(AMX_ENV).as_deref(), Ok("off" | "0"));
        !off && detect()
    })
}

/// Whether the processor and the operating system offer AMX-BF16 to this process.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::{__cpuid_count, _xgetbv};
    // CPUID.(7, 0).EDX: bit 22 AMX-BF16, bit 24 AMX-TILE.
    let leaf7 = __cpuid_count(7, 0);
    if leaf7.edx & (1 << 22) == 0 || leaf7.edx & (1 << 24) == 0 {
        return false;
    }
    // CPUID.1.ECX bit 27: OSXSAVE, without which XGETBV faults.
    if __cpuid_count(1, 0).ecx & (1 << 27) == 0 {
        return false;
    }
    // XCR0 bits 17 and 18: the OS saves the tile configuration and data.
    // SAFETY: OSXSAVE is set, so XGETBV is allowed.
    let xcr0 = unsafe { _xgetbv(0) };
    if xcr0 & (0b11 << 17) != 0b11 << 17 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only asks for a permission.
    let granted = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    granted == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// The tile configuration: palette 1, eight tiles of 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        // Bytes 16.. hold each tile's row length in bytes (u16), 48.. its rows.
        c[16 + 2 * t] = 64;
        c[48 + t] = ROWS as u8;
        t += 1;
    }
    TileConfig(c)
};

/// Loads the tile configuration on this thread; [`release`] undoes it.
///
/// # Safety
/// [`available`] must hold.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn configure() {
    // SAFETY: AMX is available (caller's contract); CONFIG is a valid palette-1
    // configuration of 64 bytes.
    unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly)) };
}

/// Returns the tile registers to their initial state, so that switching threads
/// does not save them.
///
/// # Safety
/// [`available`] must hold.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn release() {
    // SAFETY: AMX is available (caller's contract).
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// Loads tile `T` from `ptr`, rows `stride` bytes apart.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn load<const T: u8>(ptr: *const u32, stride: usize) {
    // SAFETY: the caller makes 16 rows of 64 bytes readable at `ptr`, `stride` apart.
    unsafe {
        asm!("tileloadd tmm{t}, [{p} + {s}*1]", t = const T, p = in(reg) ptr, s = in(reg) stride,
             options(nostack, readonly))
    };
}

/// Stores tile `T` to `ptr`, rows `stride` bytes apart.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store<const T: u8>(ptr: *mut f32, stride: usize) {
    // SAFETY: the caller makes 16 rows of 64 bytes writable at `ptr`, `stride` apart.
    unsafe {
        asm!("tilestored [{p} + {s}*1], tmm{t}", t = const T, p = in(reg) ptr, s = in(reg) stride,
             options(nostack))
    };
}

/// Zeroes tile `T`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn zero<const T: u8>() {
    // SAFETY: only touches a tile register.
    unsafe { asm!("tilezero tmm{t}", t = const T, options(nostack, nomem)) };
}

/// Tile `C` += tile `A` · tile `B` (bf16 pairs, `f32` sums).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot<const C: u8, const A: u8, const B: u8>() {
    // SAFETY: only touches tile registers.
    unsafe {
        asm!("tdpbf16ps tmm{c}, tmm{a}, tmm{b}", c = const C, a = const A, b = const B,
             options(nostack, nomem))
    };
}

/// `c[rows, cols] = a[rows, :] · b[:, cols]` for one block of at most
/// [`BLOCK_ROWS`] rows and one panel of at most [`NR`] (32) columns, over `steps` tiles of
/// [`PAIRS`] pairs of the inner dimension.
///
/// # Safety
/// [`configure`] must have run on this thread. `a` must hold `rows` rounded up to
/// [`ROWS`] rows of `steps * PAIRS` pairs at stride `lda` (in `u32`), `b` one panel
/// of `steps * PAIRS` pairs of 32 columns, and `c` (row stride `ldc`) `rows` rows
/// of `cols` columns.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn block(
    a: *const u32,
    lda: usize,
    b: *const u32,
    steps: usize,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
) {
    let (sa, sb) = (lda * 4, NR * 4);
    let two = rows > ROWS;
    // SAFETY: the loads stay inside the operands, as the caller guarantees.
    unsafe {
        zero::<0>();
        zero::<1>();
        if two {
            zero::<2>();
            zero::<3>();
        }
        for s in 0..steps {
            let (ak, bk) = (a.add(s * PAIRS), b.add(s * PAIRS * NR));
            load::<6>(bk, sb);
            load::<7>(bk.add(16), sb);
            load::<4>(ak, sa);
            dot::<0, 4, 6>();
            dot::<1, 4, 7>();
            if two {
                load::<5>(ak.add(ROWS * lda), sa);
                dot::<2, 5, 6>();
                dot::<3, 5, 7>();
            }
        }
    }
    // The sums' tiles go to `dst` (row stride `ld` floats): `tmm0`/`tmm1` for the
    // first 16 rows, `tmm2`/`tmm3` for the next.
    let store_all = |dst: *mut f32, ld: usize| {
        // SAFETY: `dst` holds the block's tiles' rows at stride `ld` (see the calls).
        unsafe {
            store::<0>(dst, ld * 4);
            store::<1>(dst.add(16), ld * 4);
            if two {
                store::<2>(dst.add(ROWS * ld), ld * 4);
                store::<3>(dst.add(ROWS * ld + 16), ld * 4);
            }
        }
    };
    if rows == if two { BLOCK_ROWS } else { ROWS } && cols == NR {
        // The whole block's rows and 32 columns lie inside `c`.
        store_all(c, ldc);
        return;
    }
    // A partial block goes through a buffer and only its rows and columns are copied.
    let mut edge = [0f32; BLOCK_ROWS * NR];
    store_all(edge.as_mut_ptr(), NR);
    // SAFETY: `edge` is initialised; `c` holds the block's rows and columns
    // (caller's contract).
    unsafe { copy_edge(edge.as_ptr(), c, ldc, rows, cols) };
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn configure() {
    unreachable!("AMX runs only on x86_64")
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn release() {
    unreachable!("AMX runs only on x86_64")
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn block(
    _: *const u32,
    _: usize,
    _: *const u32,
    _: usize,
    _: *mut f32,
    _: usize,
    _: usize,
    _: usize,
) {
    unreachable!("AMX runs only on x86_64")
}
