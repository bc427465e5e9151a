//! Comparing computed float arrays with reference ones.

/// The largest absolute difference between `got` and `want`, element by element.
///
/// Fails when the lengths differ or when either array holds a NaN or an infinity
/// (which a plain `fold(0.0, f32::max)` would skip, letting all-NaN outputs pass).
pub fn max_abs_diff(got: &[f32], want: &[f32]) -> Result<f32, String> {
    if got.len() != want.len() {
        return Err(format!(
            "{} values computed, {} expected",
            got.len(),
            want.len()
        ));
    }
    let mut worst = 0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if !g.is_finite() || !w.is_finite() {
            return Err(format!(
                "value {i} is not finite: {g} computed, {w} expected"
            ));
        }
        worst = worst.max((g - w).abs());
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_lengths_and_non_finite_values() {
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 1.0]), Ok(1.0));
        assert!(max_abs_diff(&[1.0], &[1.0, 2.0]).is_err());
        assert!(max_abs_diff(&[f32::NAN, f32::NAN], &[0.0, 0.0]).is_err());
        assert!(max_abs_diff(&[0.0], &[f32::INFINITY]).is_err());
    }
}
