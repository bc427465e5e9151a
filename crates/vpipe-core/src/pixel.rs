//! Channel order of interleaved 8-bit colour pixels, and conversion between orders.

/// Order of the three colour channels of each pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChannelOrder {
    /// Red, green, blue (decoded stills, Pillow, torchvision).
    #[default]
    Rgb,
    /// Blue, green, red (OpenCV's video frames).
    Bgr,
}

impl ChannelOrder {
    /// Where channel `c` of this order sits in a pixel of order `data`: `c` when
    /// the orders agree, else `2 - c`.
    pub fn index_in(self, c: usize, data: ChannelOrder) -> usize {
        if self == data { c } else { 2 - c }
    }
}

vpipe_simd::simd_fn! {
    /// Copies pixels of `src_channels` channels (3 or 4) from `src` into the
    /// 3-channel `dst`, first and third channels swapped: BGR(A) to RGB and back.
    pub fn swap_red_blue(dst: &mut [u8], src: &[u8], src_channels: usize) {
        let (dst, _) = dst.as_chunks_mut::<3>();
        if src_channels == 4 {
            swap_pixels::<4>(dst, src);
        } else {
            swap_pixels::<3>(dst, src);
        }
    }
}

/// [`swap_red_blue`] for `N`-channel source pixels (a constant, so that it vectorises).
#[inline(always)]
fn swap_pixels<const N: usize>(dst: &mut [[u8; 3]], src: &[u8]) {
    let (src, _) = src.as_chunks::<N>();
    dst.iter_mut()
        .zip(src)
        .for_each(|(d, s)| *d = [s[2], s[1], s[0]]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_and_maps_channels() {
        let mut out = [0u8; 6];
        swap_red_blue(&mut out, &[1, 2, 3, 4, 5, 6], 3);
        assert_eq!(out, [3, 2, 1, 6, 5, 4]);
        swap_red_blue(&mut out, &[1, 2, 3, 9, 4, 5, 6, 9], 4);
        assert_eq!(out, [3, 2, 1, 6, 5, 4]);
        assert_eq!(ChannelOrder::Rgb.index_in(0, ChannelOrder::Bgr), 2);
        assert_eq!(ChannelOrder::Bgr.index_in(1, ChannelOrder::Rgb), 1);
        assert_eq!(ChannelOrder::Bgr.index_in(0, ChannelOrder::Bgr), 0);
    }
}
