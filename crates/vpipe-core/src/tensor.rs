//! A tensor in host memory, the form checkpoints and arrays are read into.

/// A float tensor held in host memory, converted to `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Elements in C order.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// A tensor from its shape and elements; the element count must match the shape.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }
}
