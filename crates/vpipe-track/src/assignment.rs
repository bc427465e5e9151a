//! Minimum-cost assignment on a rectangular cost matrix.

/// The minimum-cost assignment of a `rows x cols` cost matrix (row-major): as many
/// pairs as the shorter side, each row and column used at most once, with the smallest
/// total cost. Returns `(row, col)` pairs in increasing row order.
///
/// This is the shortest-augmenting-path algorithm of Crouse ("On implementing 2D
/// rectangular assignment algorithms", 2016) as SciPy's `linear_sum_assignment` runs
/// it, in the same order and with the same choice among equal costs, so that both
/// break ties alike.
///
/// # Panics
/// If `cost.len() != rows * cols` or a cost is NaN.
pub fn min_cost_assignment(cost: &[f64], rows: usize, cols: usize) -> Vec<(usize, usize)> {
    assert_eq!(
        cost.len(),
        rows * cols,
        "cost matrix is not {rows} x {cols}"
    );
    assert!(cost.iter().all(|c| !c.is_nan()), "cost matrix holds NaN");
    if rows == 0 || cols == 0 {
        return Vec::new();
    }
    // The algorithm wants no more rows than columns: solve the transpose otherwise.
    let transposed = rows > cols;
    let (nr, nc) = if transposed {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let at = |i: usize, j: usize| {
        if transposed {
            cost[j * cols + i]
        } else {
            cost[i * cols + j]
        }
    };
    let mut u = vec![0.0f64; nr];
    let mut v = vec![0.0f64; nc];
    let mut path = vec![usize::MAX; nc];
    let mut col4row = vec![usize::MAX; nr];
    let mut row4col = vec![usize::MAX; nc];
    let mut shortest = vec![f64::INFINITY; nc];
    let mut remaining = vec![0usize; nc];
    let mut sr = vec![false; nr];
    let mut sc = vec![false; nc];
    for cur_row in 0..nr {
        // Shortest augmenting path from `cur_row` to a free column.
        let mut min_val = 0.0f64;
        let mut num_remaining = nc;
        for (it, r) in remaining.iter_mut().enumerate() {
            *r = nc - it - 1;
        }
        sr.fill(false);
        sc.fill(false);
        shortest.fill(f64::INFINITY);
        let mut sink = usize::MAX;
        let mut i = cur_row;
        while sink == usize::MAX {
            let mut index = usize::MAX;
            let mut lowest = f64::INFINITY;
            sr[i] = true;
            for (it, &j) in remaining[..num_remaining].iter().enumerate() {
                let r = min_val + at(i, j) - u[i] - v[j];
                if r < shortest[j] {
                    path[j] = i;
                    shortest[j] = r;
                }
                // Among equal costs, prefer a column that ends the path.
                if shortest[j] < lowest || (shortest[j] == lowest && row4col[j] == usize::MAX) {
                    lowest = shortest[j];
                    index = it;
                }
            }
            min_val = lowest;
            // Finite costs always leave a free column for a row.
            let j = remaining[index];
            if row4col[j] == usize::MAX {
                sink = j;
            } else {
                i = row4col[j];
            }
            sc[j] = true;
            num_remaining -= 1;
            remaining[index] = remaining[num_remaining];
        }
        // Dual update.
        u[cur_row] += min_val;
        for r in 0..nr {
            if sr[r] && r != cur_row {
                u[r] += min_val - shortest[col4row[r]];
            }
        }
        for j in 0..nc {
            if sc[j] {
                v[j] -= min_val - shortest[j];
            }
        }
        // Augment along the path.
        let mut j = sink;
        loop {
            let r = path[j];
            row4col[j] = r;
            std::mem::swap(&mut col4row[r], &mut j);
            if r == cur_row {
                break;
            }
        }
    }
    let mut pairs: Vec<(usize, usize)> = col4row
        .iter()
        .enumerate()
        .map(|(r, &c)| if transposed { (c, r) } else { (r, c) })
        .collect();
    pairs.sort_unstable();
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The minimum over every assignment, by brute force.
    fn brute_force(cost: &[f64], rows: usize, cols: usize) -> f64 {
        fn go(cost: &[f64], cols: usize, rows_left: &[usize], used: &mut Vec<bool>) -> f64 {
            let Some((&r, rest)) = rows_left.split_first() else {
                return 0.0;
            };
            let mut best = f64::INFINITY;
            for c in 0..cols {
                if !used[c] {
                    used[c] = true;
                    best = best.min(cost[r * cols + c] + go(cost, cols, rest, used));
                    used[c] = false;
                }
            }
            best
        }
        if rows <= cols {
            let all: Vec<usize> = (0..rows).collect();
            go(cost, cols, &all, &mut vec![false; cols])
        } else {
            let t: Vec<f64> = (0..cols * rows)
                .map(|k| cost[(k % rows) * cols + k / rows])
                .collect();
            brute_force(&t, cols, rows)
        }
    }

    #[test]
    fn finds_the_minimum_on_every_shape() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) % 1000) as f64 / 100.0
        };
        for rows in 1..=5 {
            for cols in 1..=5 {
                for _ in 0..20 {
                    let cost: Vec<f64> = (0..rows * cols).map(|_| next()).collect();
                    let pairs = min_cost_assignment(&cost, rows, cols);
                    assert_eq!(pairs.len(), rows.min(cols));
                    let total: f64 = pairs.iter().map(|&(r, c)| cost[r * cols + c]).sum();
                    assert!((total - brute_force(&cost, rows, cols)).abs() < 1e-9);
                    assert!(
                        pairs
                            .windows(2)
                            .all(|w| w[0].0 < w[1].0 && w[0].1 != w[1].1)
                    );
                }
            }
        }
    }

    #[test]
    fn breaks_ties_as_scipy_does() {
        // scipy.optimize.linear_sum_assignment(np.zeros((2, 3))) -> ([0, 1], [0, 1]);
        // of a 3 x 2 all-ones matrix -> ([0, 1], [0, 1]).
        assert_eq!(min_cost_assignment(&[0.0; 6], 2, 3), [(0, 0), (1, 1)]);
        assert_eq!(min_cost_assignment(&[1.0; 6], 3, 2), [(0, 0), (1, 1)]);
        assert!(min_cost_assignment(&[], 0, 4).is_empty());
    }
}
