//! NumPy `.npy` files: `vpipe_io::npy::parse` and the element conversions.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vpipe_io::npy;

fuzz_target!(|data: &[u8]| {
    if let Ok(array) = npy::parse(data) {
        let count: usize = array.shape.iter().product();
        let converted = [
            array.to_f32("fuzz").map(|v| v.len()),
            array.to_u8("fuzz").map(|v| v.len()),
            array.to_i32("fuzz").map(|v| v.len()),
        ];
        // Exactly one conversion fits the dtype, and it yields one element per
        // entry of the shape.
        let ok: Vec<usize> = converted.into_iter().filter_map(Result::ok).collect();
        assert_eq!(ok, [count]);
    }
});
