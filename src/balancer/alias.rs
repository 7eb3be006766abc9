//! Vose's alias method: O(n) to build, O(1) to sample an index with probability proportional
//! to its weight. Used for weighted random picks and for P2C candidate sampling.

/// Walker's alias table: weighted sampling in constant time per pick.
pub struct AliasTable {
    prob: Vec<f64>,
    alias: Vec<u32>,
}

impl AliasTable {
    /// `weights` must be non-empty; zero or negative weights are treated as tiny, not excluded.
    pub fn new(weights: &[f64]) -> AliasTable {
        let n = weights.len();
        let total: f64 = weights.iter().map(|w| w.max(f64::MIN_POSITIVE)).sum();
        let mut scaled: Vec<f64> = weights
            .iter()
            .map(|w| w.max(f64::MIN_POSITIVE) * n as f64 / total)
            .collect();
        let mut prob = vec![1.0; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = scaled[s];
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        AliasTable { prob, alias }
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.prob.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.prob.is_empty()
    }

    /// A random index, distributed by weight.
    pub fn sample(&self) -> usize {
        let i = fastrand::usize(..self.prob.len());
        if fastrand::f64() < self.prob[i] {
            i
        } else {
            self.alias[i] as usize
        }
    }
}
