//! The constant-velocity Kalman filter of SORT and ByteTrack, on boxes as
//! `(centre x, centre y, aspect ratio, height)`.

#![allow(
    clippy::needless_range_loop,
    reason = "the fixed-size matrix algebra reads best with row and column indices"
)]

/// Position noise per unit of box height.
const STD_POSITION: f64 = 1.0 / 20.0;
/// Velocity noise per unit of box height.
const STD_VELOCITY: f64 = 1.0 / 160.0;

/// A box as the filter measures it: `[centre x, centre y, width / height, height]`.
pub type Xyah = [f64; 4];

/// A track's state: the mean of `[x, y, a, h, vx, vy, va, vh]` and its covariance.
#[derive(Debug, Clone, PartialEq)]
pub struct KalmanState {
    /// Mean.
    pub mean: [f64; 8],
    /// Covariance, row-major.
    pub covariance: [[f64; 8]; 8],
}

impl KalmanState {
    /// A new track at `measurement`, at rest, with the uncertainty of a first sighting.
    pub fn initiate(measurement: Xyah) -> Self {
        let h = measurement[3];
        let std = [
            2.0 * STD_POSITION * h,
            2.0 * STD_POSITION * h,
            1e-2,
            2.0 * STD_POSITION * h,
            10.0 * STD_VELOCITY * h,
            10.0 * STD_VELOCITY * h,
            1e-5,
            10.0 * STD_VELOCITY * h,
        ];
        let mut covariance = [[0.0; 8]; 8];
        for (i, s) in std.iter().enumerate() {
            covariance[i][i] = s * s;
        }
        let mut mean = [0.0; 8];
        mean[..4].copy_from_slice(&measurement);
        Self { mean, covariance }
    }

    /// One frame ahead at constant velocity. `keep_height_velocity` false zeroes the
    /// height's velocity first (ByteTrack does so for tracks that are not being
    /// followed).
    pub fn predict(&mut self, keep_height_velocity: bool) {
        if !keep_height_velocity {
            self.mean[7] = 0.0;
        }
        let h = self.mean[3];
        let std = [
            STD_POSITION * h,
            STD_POSITION * h,
            1e-2,
            STD_POSITION * h,
            STD_VELOCITY * h,
            STD_VELOCITY * h,
            1e-5,
            STD_VELOCITY * h,
        ];
        for i in 0..4 {
            self.mean[i] += self.mean[i + 4];
        }
        // F P Fᵀ with F = [[I, I], [0, I]]: rows then columns i += i + 4.
        let p = &mut self.covariance;
        for i in 0..4 {
            for j in 0..8 {
                p[i][j] += p[i + 4][j];
            }
        }
        for row in p.iter_mut() {
            for j in 0..4 {
                row[j] += row[j + 4];
            }
        }
        for (i, s) in std.iter().enumerate() {
            p[i][i] += s * s;
        }
    }

    /// Corrects the state with a measurement.
    pub fn update(&mut self, measurement: Xyah) {
        let h = self.mean[3];
        let noise = [STD_POSITION * h, STD_POSITION * h, 1e-1, STD_POSITION * h];
        // Innovation covariance S = H P Hᵀ + R (the top-left 4 x 4 block of P).
        let mut s = [[0.0; 4]; 4];
        for i in 0..4 {
            for j in 0..4 {
                s[i][j] = self.covariance[i][j];
            }
            s[i][i] += noise[i] * noise[i];
        }
        let l = cholesky(s);
        // Kalman gain K (8 x 4) = P Hᵀ S⁻¹: solve S Kᵀ = H P column by column.
        let mut gain = [[0.0; 4]; 8];
        for (c, row) in gain.iter_mut().enumerate() {
            let b = [
                self.covariance[0][c],
                self.covariance[1][c],
                self.covariance[2][c],
                self.covariance[3][c],
            ];
            *row = cholesky_solve(&l, b);
        }
        let innovation: [f64; 4] = std::array::from_fn(|i| measurement[i] - self.mean[i]);
        for (m, k) in self.mean.iter_mut().zip(&gain) {
            *m += (0..4).map(|j| innovation[j] * k[j]).sum::<f64>();
        }
        // P -= K S Kᵀ.
        let ks: [[f64; 4]; 8] = std::array::from_fn(|i| {
            std::array::from_fn(|j| (0..4).map(|t| gain[i][t] * s[t][j]).sum())
        });
        for i in 0..8 {
            for j in 0..8 {
                self.covariance[i][j] -= (0..4).map(|t| ks[i][t] * gain[j][t]).sum::<f64>();
            }
        }
    }

    /// The mean box as `[x1, y1, x2, y2]`.
    pub fn bbox(&self) -> [f64; 4] {
        xyah_to_xyxy([self.mean[0], self.mean[1], self.mean[2], self.mean[3]])
    }
}

/// `[x1, y1, x2, y2]` to `(centre x, centre y, width / height, height)`.
pub fn xyxy_to_xyah(b: [f64; 4]) -> Xyah {
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    [b[0] + w / 2.0, b[1] + h / 2.0, w / h, h]
}

/// The inverse of [`xyxy_to_xyah`].
pub fn xyah_to_xyxy(m: Xyah) -> [f64; 4] {
    let w = m[2] * m[3];
    let (x1, y1) = (m[0] - w / 2.0, m[1] - m[3] / 2.0);
    [x1, y1, x1 + w, y1 + m[3]]
}

/// The lower Cholesky factor of a symmetric positive definite 4 x 4 matrix.
fn cholesky(a: [[f64; 4]; 4]) -> [[f64; 4]; 4] {
    let mut l = [[0.0; 4]; 4];
    for i in 0..4 {
        for j in 0..=i {
            let s = a[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            l[i][j] = if i == j { s.sqrt() } else { s / l[j][j] };
        }
    }
    l
}

/// `x` with `L Lᵀ x = b`.
fn cholesky_solve(l: &[[f64; 4]; 4], b: [f64; 4]) -> [f64; 4] {
    let mut y = [0.0; 4];
    for i in 0..4 {
        y[i] = (b[i] - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
    }
    let mut x = [0.0; 4];
    for i in (0..4).rev() {
        x[i] = (y[i] - (i + 1..4).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_round_trip() {
        let b = [10.0, 20.0, 50.0, 100.0];
        let m = xyxy_to_xyah(b);
        assert_eq!(m, [30.0, 60.0, 0.5, 80.0]);
        assert_eq!(xyah_to_xyxy(m), b);
    }

    #[test]
    fn follows_a_box_moving_at_constant_speed() {
        let mut k = KalmanState::initiate(xyxy_to_xyah([0.0, 0.0, 40.0, 80.0]));
        for t in 1..=30 {
            k.predict(true);
            let x = 3.0 * t as f64;
            k.update(xyxy_to_xyah([x, 0.0, x + 40.0, 80.0]));
        }
        // The velocity is learnt: one more prediction lands on the next position.
        k.predict(true);
        let b = k.bbox();
        assert!((b[0] - 93.0).abs() < 0.5, "{b:?}");
        assert!((k.mean[4] - 3.0).abs() < 0.05, "{:?}", k.mean);
        // The covariance stays symmetric.
        for i in 0..8 {
            for j in 0..8 {
                assert!((k.covariance[i][j] - k.covariance[j][i]).abs() < 1e-9);
            }
        }
    }
}
