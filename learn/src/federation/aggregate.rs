//! The coordinator's aggregation core: checking model updates as they stream in, summing the
//! accepted ones in memory O(model size), and robust coordinate-wise rules over spooled updates.
//!
//! Updates travel as chunks of little-endian `f32` ([`f32_from_le`], [`f32_to_le`]). The
//! coordinator
//!
//! 1. runs an [`UpdateCheck`] over each update's chunks as they arrive, so a wrong shape or a
//!    NaN is refused at the chunk that shows it, and the L2 norm is compared with the clip bound
//!    the round announced once the last chunk is in ([`Rejection`] says why);
//! 2. adds accepted updates into one [`WeightedSum`] (f64 accumulators, so a hundred `f32`
//!    updates do not lose the small ones to rounding), never holding more than one model's worth
//!    of numbers whatever the number of nodes;
//! 3. or, when the round asks for a robust rule ([`Rule::TrimmedMean`], [`Rule::Median`]), reads
//!    the updates it spooled to disk block by block through [`aggregate_blocks`], so memory is
//!    O(updates × block + model) instead of O(updates × model).
//!
//! The norm is only known after the last chunk, so a chunk must not enter a [`WeightedSum`] before
//! its update's [`UpdateCheck::finish`] has accepted it: a floating-point sum cannot take a
//! partial update back out exactly. The intended flow is check-while-spooling, then add from the
//! spool (or from the one buffered update) once accepted.
//!
//! Nothing here trusts the numbers it is handed: weights, trim fractions and spooled values are
//! checked again, because a NaN that slips into an accumulator silently poisons the whole round.

use std::fmt;

/// Why an update (or a request to aggregate) was refused. `Display` says what was wrong in one
/// line, in words a federation operator can act on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// The update does not have as many values as the model.
    #[error("update has {got} values, the model has {expected}")]
    Shape {
        /// Number of values in the model.
        expected: usize,
        /// Number of values the update has (or would have, counting the chunk that overflowed).
        got: usize,
    },
    /// A value is NaN or infinite; one such value would poison the whole aggregate.
    #[error("update value at index {index} is NaN or infinite")]
    NonFinite {
        /// Index of the first non-finite value (within the update, or within the block for
        /// [`aggregate_block`]).
        index: usize,
    },
    /// The update's L2 norm is above the clip bound announced for the round, so its privacy
    /// accounting (noise calibrated to the bound) would not hold.
    #[error("update L2 norm {norm} is above the announced clip bound {bound}")]
    Norm {
        /// The update's L2 norm.
        norm: f64,
        /// The clip bound announced for the round.
        bound: f64,
    },
    /// A chunk on the wire is not a whole number of little-endian `f32` values.
    #[error("chunk has {bytes} bytes, not a multiple of 4 (little-endian f32 values)")]
    Encoding {
        /// Length of the chunk in bytes.
        bytes: usize,
    },
    /// An update's weight is negative, NaN or infinite.
    #[error("update weight {weight} is not a finite non-negative number")]
    Weight {
        /// The weight that was given.
        weight: f64,
    },
    /// A trimmed mean was asked to cut a fraction outside [0, 0.5) at each end.
    #[error("trim fraction {trim} is outside [0, 0.5); it is the share cut at each end")]
    Trim {
        /// The trim fraction that was given.
        trim: f64,
    },
    /// There is nothing to aggregate.
    #[error("no updates to aggregate")]
    NoUpdates,
}

/// Incremental checks of one update: feed its chunks in order, then [`finish`](Self::finish).
///
/// Holds only counters, so checking costs no memory per update; the caller decides where the
/// values themselves go (a spool file, a buffer) while the check runs. After an `Err` the update
/// is refused and the check should be dropped.
#[derive(Debug, Clone)]
pub struct UpdateCheck {
    expected_len: usize,
    clip_bound: f64,
    seen: usize,
    sum_sq: f64,
}

impl UpdateCheck {
    /// A check for an update of `expected_len` values whose L2 norm must not exceed
    /// `clip_bound`. A NaN or negative bound refuses every update (fail closed); an infinite
    /// bound turns the norm check off and must be chosen on purpose.
    pub fn new(expected_len: usize, clip_bound: f64) -> Self {
        Self {
            expected_len,
            clip_bound,
            seen: 0,
            sum_sq: 0.0,
        }
    }

    /// Checks the next chunk. Fails fast when the update grows past the model's length or a
    /// value is not finite, so a hostile node cannot make the coordinator read gigabytes first.
    pub fn feed(&mut self, chunk: &[f32]) -> Result<(), Rejection> {
        let got = self.seen.saturating_add(chunk.len());
        if got > self.expected_len {
            return Err(Rejection::Shape {
                expected: self.expected_len,
                got,
            });
        }
        // A NaN or infinity makes the sum of squares non-finite, and a finite f32 squared in f64
        // cannot overflow (f32::MAX² ≈ 1.2e77), so one branch per chunk covers both checks; the
        // index is only looked for when something is wrong.
        let sq = sum_of_squares(chunk);
        if !sq.is_finite() {
            let at = chunk.iter().position(|x| !x.is_finite()).unwrap_or(0);
            return Err(Rejection::NonFinite {
                index: self.seen + at,
            });
        }
        self.sum_sq += sq;
        self.seen = got;
        Ok(())
    }

    /// Ends the check: the update must have exactly the model's length and an L2 norm within
    /// the clip bound (with a relative slack of 1e-5, because a node that clipped in `f32` can
    /// land a hair above the bound). Returns the norm.
    pub fn finish(self) -> Result<f64, Rejection> {
        if self.seen != self.expected_len {
            return Err(Rejection::Shape {
                expected: self.expected_len,
                got: self.seen,
            });
        }
        let norm = self.sum_sq.sqrt();
        // Accept only on a true comparison, so that a NaN bound refuses rather than accepts.
        if norm <= self.clip_bound * (1.0 + 1e-5) {
            Ok(norm)
        } else {
            Err(Rejection::Norm {
                norm,
                bound: self.clip_bound,
            })
        }
    }

    /// Number of values checked so far.
    pub fn seen(&self) -> usize {
        self.seen
    }
}

/// Sum of squares in f64 with eight independent accumulators, so the compiler can vectorise
/// it (a single accumulator forces a serial dependency chain).
fn sum_of_squares(xs: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut lanes = xs.chunks_exact(8);
    for c in &mut lanes {
        for (a, &x) in acc.iter_mut().zip(c) {
            let x = f64::from(x);
            *a += x * x;
        }
    }
    let tail: f64 = lanes
        .remainder()
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum();
    acc.iter().sum::<f64>() + tail
}

/// Streaming weighted sum of accepted updates, memory O(len) whatever the number of updates.
///
/// Accumulates in f64: with `f32` accumulators, adding a hundred updates loses the low bits of
/// each and the result depends on arrival order; in f64 the final `f32` mean is the same (to
/// `f32` precision) in any order.
#[derive(Debug, Clone)]
pub struct WeightedSum {
    acc: Vec<f64>,
    updates: usize,
    total_weight: f64,
}

impl WeightedSum {
    /// An empty sum for a model of `len` values.
    pub fn new(len: usize) -> Self {
        Self {
            acc: vec![0.0; len],
            updates: 0,
            total_weight: 0.0,
        }
    }

    /// Number of values in the model.
    pub fn len(&self) -> usize {
        self.acc.len()
    }

    /// Whether the model has no values at all.
    pub fn is_empty(&self) -> bool {
        self.acc.is_empty()
    }

    /// Adds `weight * chunk` at `[offset, offset + chunk.len())`. Refuses a chunk that would
    /// fall outside the model ([`Rejection::Shape`]) and a weight that is negative or not finite
    /// ([`Rejection::Weight`]), before touching the sum.
    pub fn add_chunk(
        &mut self,
        offset: usize,
        chunk: &[f32],
        weight: f64,
    ) -> Result<(), Rejection> {
        check_weight(weight)?;
        let end = offset.saturating_add(chunk.len());
        let Some(dst) = self.acc.get_mut(offset..end) else {
            return Err(Rejection::Shape {
                expected: self.acc.len(),
                got: end,
            });
        };
        for (a, &x) in dst.iter_mut().zip(chunk) {
            *a += weight * f64::from(x);
        }
        Ok(())
    }

    /// Records that one whole update of `weight` has been added (the same weight its chunks were
    /// added with). A weight [`add_chunk`](Self::add_chunk) would refuse is not counted, so it
    /// cannot poison [`total_weight`](Self::total_weight).
    pub fn commit(&mut self, weight: f64) {
        if check_weight(weight).is_ok() {
            self.updates += 1;
            self.total_weight += weight;
        }
    }

    /// Number of updates committed.
    pub fn updates(&self) -> usize {
        self.updates
    }

    /// Sum of the committed updates' weights.
    pub fn total_weight(&self) -> f64 {
        self.total_weight
    }

    /// The weighted mean as `f32`; `None` if no update was committed or the weights sum to zero
    /// (there is no mean to publish, and dividing would produce NaNs).
    pub fn mean(&self) -> Option<Vec<f32>> {
        if self.updates == 0 || self.total_weight <= 0.0 || !self.total_weight.is_finite() {
            return None;
        }
        let inv = 1.0 / self.total_weight;
        Some(self.acc.iter().map(|&s| (s * inv) as f32).collect())
    }
}

fn check_weight(weight: f64) -> Result<(), Rejection> {
    if weight.is_finite() && weight >= 0.0 {
        Ok(())
    } else {
        Err(Rejection::Weight { weight })
    }
}

/// How to combine updates coordinate by coordinate.
///
/// `Mean` is FedAvg without weights; `TrimmedMean` and `Median` bound the influence of a few
/// malicious or broken nodes (a single huge value moves the mean arbitrarily far, but not the
/// median, nor a trimmed mean that cuts at least one value at each end).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Rule {
    /// Plain (unweighted) mean.
    Mean,
    /// Mean after cutting `floor(trim * k)` of the `k` values at each end.
    TrimmedMean {
        /// Fraction cut at each end, in [0, 0.5).
        trim: f64,
    },
    /// Median; of an even count, the mean of the two middle values.
    Median,
}

impl Rule {
    /// Checks the rule's parameters (a rule read from a config file may carry any trim).
    pub fn validate(&self) -> Result<(), Rejection> {
        match *self {
            Rule::TrimmedMean { trim } if !(0.0..0.5).contains(&trim) => {
                Err(Rejection::Trim { trim })
            }
            _ => Ok(()),
        }
    }
}

/// Coordinate-wise aggregation of one block: `rows[u]` is update `u`'s values for the block, all
/// rows as long as `out`. Unweighted. Refuses an empty `rows`, a row of the wrong length, a
/// non-finite value (index within the block) and an invalid trim.
pub fn aggregate_block(rows: &[&[f32]], rule: Rule, out: &mut [f32]) -> Result<(), Rejection> {
    rule.validate()?;
    let k = rows.len();
    if k == 0 {
        return Err(Rejection::NoUpdates);
    }
    for row in rows {
        if row.len() != out.len() {
            return Err(Rejection::Shape {
                expected: out.len(),
                got: row.len(),
            });
        }
        // Spooled data was checked on arrival, but a disk or a bug can still hand us a NaN,
        // and `total_cmp` would quietly sort it to an end instead of refusing it.
        if let Some(index) = row.iter().position(|x| !x.is_finite()) {
            return Err(Rejection::NonFinite { index });
        }
    }
    let cut = match rule {
        Rule::Mean => 0,
        // trim < 0.5 gives 2·floor(trim·k) < k, so at least one value always remains.
        Rule::TrimmedMean { trim } => (trim * k as f64).floor() as usize,
        Rule::Median => 0,
    };
    if rule != Rule::Median && cut == 0 {
        // Row-major: each row is read sequentially, which the cache likes.
        let mut acc = vec![0.0f64; out.len()];
        for row in rows {
            for (a, &x) in acc.iter_mut().zip(row.iter()) {
                *a += f64::from(x);
            }
        }
        let inv = 1.0 / k as f64;
        for (o, a) in out.iter_mut().zip(acc) {
            *o = (a * inv) as f32;
        }
        return Ok(());
    }
    let mut col = vec![0.0f32; k];
    for (j, o) in out.iter_mut().enumerate() {
        for (c, row) in col.iter_mut().zip(rows) {
            *c = row[j];
        }
        *o = match rule {
            Rule::Median => median(&mut col),
            _ => {
                col.sort_unstable_by(f32::total_cmp);
                let kept = &col[cut..k - cut];
                let s: f64 = kept.iter().map(|&x| f64::from(x)).sum();
                (s / kept.len() as f64) as f32
            }
        };
    }
    Ok(())
}

/// Median of a non-empty column, reordering it. Selection rather than sorting: O(k) per
/// coordinate.
fn median(col: &mut [f32]) -> f32 {
    let k = col.len();
    let mid = k / 2;
    let (lower, m, _) = col.select_nth_unstable_by(mid, f32::total_cmp);
    let m = *m;
    if k % 2 == 1 {
        return m;
    }
    // Even count: the other middle value is the largest of the lower half.
    let below = lower.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    ((f64::from(below) + f64::from(m)) / 2.0) as f32
}

/// Why [`aggregate_blocks`] failed: the updates were refused, or reading them failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum AggregateError<E> {
    /// The aggregation itself refused (non-finite spooled value, bad trim, no updates, …).
    /// For [`Rejection::NonFinite`] the index is within the whole update.
    Rejected(Rejection),
    /// `block` was zero, so no progress could be made.
    ZeroBlock,
    /// The reader failed for update `update` at `offset`.
    Read {
        /// Which update was being read.
        update: usize,
        /// Offset (in values) of the block being read.
        offset: usize,
        /// The reader's error.
        source: E,
    },
}

impl<E> From<Rejection> for AggregateError<E> {
    fn from(r: Rejection) -> Self {
        AggregateError::Rejected(r)
    }
}

impl<E: fmt::Display> fmt::Display for AggregateError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AggregateError::Rejected(r) => write!(f, "aggregation refused: {r}"),
            AggregateError::ZeroBlock => write!(f, "block size is 0; use a positive block size"),
            AggregateError::Read {
                update,
                offset,
                source,
            } => write!(
                f,
                "reading spooled update {update} at value {offset} failed: {source}"
            ),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for AggregateError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AggregateError::Rejected(r) => Some(r),
            AggregateError::ZeroBlock => None,
            AggregateError::Read { source, .. } => Some(source),
        }
    }
}

/// Robust aggregation of `updates` updates of `len` values each, `block` values at a time:
/// `read(u, offset, buf)` fills `buf` with update `u`'s values at `[offset, offset + buf.len())`.
/// Memory O(updates × block + len): one block of every update plus the result.
pub fn aggregate_blocks<E>(
    updates: usize,
    len: usize,
    block: usize,
    rule: Rule,
    mut read: impl FnMut(usize, usize, &mut [f32]) -> Result<(), E>,
) -> Result<Vec<f32>, AggregateError<E>> {
    rule.validate()?;
    if updates == 0 {
        return Err(Rejection::NoUpdates.into());
    }
    if block == 0 {
        return Err(AggregateError::ZeroBlock);
    }
    let width = block.min(len);
    let mut buf = vec![0.0f32; updates * width];
    let mut out = vec![0.0f32; len];
    let mut offset = 0;
    while offset < len {
        let n = width.min(len - offset);
        for (u, dst) in buf.chunks_exact_mut(width).enumerate() {
            read(u, offset, &mut dst[..n]).map_err(|source| AggregateError::Read {
                update: u,
                offset,
                source,
            })?;
        }
        let rows: Vec<&[f32]> = buf.chunks_exact(width).map(|r| &r[..n]).collect();
        aggregate_block(&rows, rule, &mut out[offset..offset + n]).map_err(|r| match r {
            Rejection::NonFinite { index } => Rejection::NonFinite {
                index: offset + index,
            },
            other => other,
        })?;
        offset += n;
    }
    Ok(out)
}

/// Decodes a chunk of little-endian `f32` values (the wire format of update chunks).
pub fn f32_from_le(bytes: &[u8]) -> Result<Vec<f32>, Rejection> {
    let mut out = vec![0.0f32; bytes.len() / 4];
    f32_decode_into(bytes, &mut out)?;
    Ok(out)
}

/// Decodes little-endian `f32` values into `out`, which must hold exactly `bytes.len() / 4`
/// values; lets a reader reuse one buffer instead of allocating per chunk.
pub fn f32_decode_into(bytes: &[u8], out: &mut [f32]) -> Result<(), Rejection> {
    if bytes.len() % 4 != 0 {
        return Err(Rejection::Encoding { bytes: bytes.len() });
    }
    if bytes.len() / 4 != out.len() {
        return Err(Rejection::Shape {
            expected: out.len(),
            got: bytes.len() / 4,
        });
    }
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    Ok(())
}

/// Encodes values as little-endian `f32`, the wire format of update chunks.
pub fn f32_to_le(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs `values` through an [`UpdateCheck`] split at the given cut points.
    fn check_chunked(
        values: &[f32],
        cuts: &[usize],
        len: usize,
        bound: f64,
    ) -> Result<f64, Rejection> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (values.len() + 1)).collect();
        cuts.sort_unstable();
        let mut check = UpdateCheck::new(len, bound);
        let mut start = 0;
        for &c in cuts.iter().chain(std::iter::once(&values.len())) {
            check.feed(&values[start..c])?;
            start = c;
        }
        check.finish()
    }

    fn whole(values: &[f32], len: usize, bound: f64) -> Result<f64, Rejection> {
        let mut check = UpdateCheck::new(len, bound);
        check.feed(values)?;
        check.finish()
    }

    fn naive_weighted_mean(updates: &[(Vec<f32>, f64)]) -> Vec<f64> {
        let total: f64 = updates.iter().map(|(_, w)| w).sum();
        let len = updates[0].0.len();
        (0..len)
            .map(|i| {
                updates
                    .iter()
                    .map(|(u, w)| w * f64::from(u[i]))
                    .sum::<f64>()
                    / total
            })
            .collect()
    }

    /// Streams updates in the given order, each in chunks of `chunk` values, checking first.
    fn streamed_mean(updates: &[(Vec<f32>, f64)], order: &[usize], chunk: usize) -> Vec<f32> {
        let len = updates[0].0.len();
        let mut sum = WeightedSum::new(len);
        for &u in order {
            let (values, w) = &updates[u];
            let mut check = UpdateCheck::new(len, f64::INFINITY);
            for (i, c) in values.chunks(chunk).enumerate() {
                check.feed(c).expect("finite update");
                sum.add_chunk(i * chunk, c, *w).expect("in range");
            }
            check.finish().expect("accepted");
            sum.commit(*w);
        }
        sum.mean().expect("some updates")
    }

    fn update_set() -> impl Strategy<Value = Vec<(Vec<f32>, f64)>> {
        (1usize..40, 1usize..12).prop_flat_map(|(len, n)| {
            prop::collection::vec((prop::collection::vec(-1e3f32..1e3, len), 0.5f64..100.0), n)
        })
    }

    proptest! {
        #[test]
        fn chunked_checks_equal_whole_update_checks(
            values in prop::collection::vec(-10f32..10.0, 0..200),
            cuts in prop::collection::vec(0usize..1000, 0..6),
            bound in 0.0f64..100.0,
        ) {
            let a = check_chunked(&values, &cuts, values.len(), bound);
            let b = whole(&values, values.len(), bound);
            match (a, b) {
                (Ok(x), Ok(y)) => prop_assert!((x - y).abs() <= 1e-12 * y.max(1.0)),
                (Err(Rejection::Norm { norm: x, .. }), Err(Rejection::Norm { norm: y, .. })) => {
                    prop_assert!((x - y).abs() <= 1e-12 * y.max(1.0))
                }
                (a, b) => prop_assert!(false, "chunked {a:?} but whole {b:?}"),
            }
        }

        #[test]
        fn chunked_checks_find_the_same_non_finite_index(
            values in prop::collection::vec(-10f32..10.0, 1..200),
            at in 0usize..1000,
            bad in prop::sample::select(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY]),
            cuts in prop::collection::vec(0usize..1000, 0..6),
        ) {
            let mut values = values;
            let at = at % values.len();
            values[at] = bad;
            let want = Err(Rejection::NonFinite { index: at });
            prop_assert_eq!(check_chunked(&values, &cuts, values.len(), 1e9), want.clone());
            prop_assert_eq!(whole(&values, values.len(), 1e9), want);
        }

        #[test]
        fn streaming_mean_is_independent_of_order_and_chunking_and_equals_naive_mean(
            updates in update_set(),
            chunk_a in 1usize..50,
            chunk_b in 1usize..50,
            seed in any::<u64>(),
        ) {
            let forward: Vec<usize> = (0..updates.len()).collect();
            let mut shuffled = forward.clone();
            // Deterministic Fisher–Yates from the proptest seed.
            let mut s = seed | 1;
            for i in (1..shuffled.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let a = streamed_mean(&updates, &forward, chunk_a);
            let b = streamed_mean(&updates, &shuffled, chunk_b);
            let naive = naive_weighted_mean(&updates);
            for i in 0..naive.len() {
                let tol = 1e-6 * naive[i].abs().max(1.0);
                prop_assert!((f64::from(a[i]) - naive[i]).abs() <= tol, "a[{}]={} naive={}", i, a[i], naive[i]);
                prop_assert!((f64::from(b[i]) - naive[i]).abs() <= tol, "b[{}]={} naive={}", i, b[i], naive[i]);
            }
        }

        #[test]
        fn aggregate_blocks_equals_aggregate_block_for_any_block_size(
            rows in (1usize..60, 1usize..9).prop_flat_map(|(len, n)| {
                prop::collection::vec(prop::collection::vec(-1e3f32..1e3, len), n)
            }),
            block in 1usize..80,
            rule in prop::sample::select(vec![
                Rule::Mean, Rule::Median, Rule::TrimmedMean { trim: 0.2 }, Rule::TrimmedMean { trim: 0.45 },
            ]),
        ) {
            let len = rows[0].len();
            let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
            let mut whole = vec![0.0f32; len];
            aggregate_block(&refs, rule, &mut whole).expect("whole");
            let blocked = aggregate_blocks(rows.len(), len, block, rule, |u, off, buf: &mut [f32]| {
                buf.copy_from_slice(&rows[u][off..off + buf.len()]);
                Ok::<(), std::convert::Infallible>(())
            }).expect("blocked");
            prop_assert_eq!(blocked, whole);
        }

        #[test]
        fn le_encoding_round_trips(values in prop::collection::vec(any::<f32>(), 0..100)) {
            let back = f32_from_le(&f32_to_le(&values)).expect("whole f32s");
            prop_assert_eq!(
                back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                values.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn nan_is_refused_at_its_index() {
        let mut c = UpdateCheck::new(6, 10.0);
        c.feed(&[0.1, 0.2, 0.3]).expect("finite chunk");
        assert_eq!(
            c.feed(&[0.4, f32::NAN, 0.5]),
            Err(Rejection::NonFinite { index: 4 })
        );
    }

    #[test]
    fn infinity_is_refused_at_its_index() {
        let mut c = UpdateCheck::new(3, 10.0);
        assert_eq!(
            c.feed(&[f32::NEG_INFINITY, 0.0, 0.0]),
            Err(Rejection::NonFinite { index: 0 })
        );
        let mut c = UpdateCheck::new(3, f64::INFINITY);
        assert_eq!(
            c.feed(&[0.0, 0.0, f32::INFINITY]),
            Err(Rejection::NonFinite { index: 2 })
        );
    }

    #[test]
    fn too_long_update_is_refused_on_the_chunk_that_overflows() {
        let mut c = UpdateCheck::new(4, 10.0);
        c.feed(&[0.0; 3]).expect("fits");
        assert_eq!(
            c.feed(&[0.0; 2]),
            Err(Rejection::Shape {
                expected: 4,
                got: 5
            })
        );
        assert_eq!(c.seen(), 3, "the overflowing chunk is not counted");
    }

    #[test]
    fn too_short_update_is_refused_at_finish() {
        let mut c = UpdateCheck::new(4, 10.0);
        c.feed(&[0.0; 3]).expect("fits");
        assert_eq!(
            c.finish(),
            Err(Rejection::Shape {
                expected: 4,
                got: 3
            })
        );
    }

    #[test]
    fn norm_above_clip_bound_is_refused() {
        let mut c = UpdateCheck::new(2, 4.9);
        c.feed(&[3.0, 4.0]).expect("finite");
        assert_eq!(
            c.finish(),
            Err(Rejection::Norm {
                norm: 5.0,
                bound: 4.9
            })
        );
    }

    #[test]
    fn norm_at_clip_bound_within_relative_slack_is_accepted() {
        let mut c = UpdateCheck::new(2, 5.0 / (1.0 + 0.5e-5));
        c.feed(&[3.0, 4.0]).expect("finite");
        assert_eq!(c.finish(), Ok(5.0));
        let mut c = UpdateCheck::new(2, 5.0 / (1.0 + 2e-5));
        c.feed(&[3.0, 4.0]).expect("finite");
        assert!(matches!(c.finish(), Err(Rejection::Norm { .. })));
    }

    #[test]
    fn nan_clip_bound_refuses_every_update() {
        let mut c = UpdateCheck::new(1, f64::NAN);
        c.feed(&[0.0]).expect("finite");
        assert!(matches!(c.finish(), Err(Rejection::Norm { .. })));
    }

    #[test]
    fn rejection_messages_say_what_was_wrong() {
        assert_eq!(
            Rejection::Shape {
                expected: 10,
                got: 12
            }
            .to_string(),
            "update has 12 values, the model has 10"
        );
        assert_eq!(
            Rejection::NonFinite { index: 7 }.to_string(),
            "update value at index 7 is NaN or infinite"
        );
    }

    #[test]
    fn out_of_range_chunk_is_refused_and_leaves_the_sum_untouched() {
        let mut s = WeightedSum::new(4);
        s.add_chunk(0, &[1.0; 4], 1.0).expect("in range");
        assert_eq!(
            s.add_chunk(2, &[1.0; 3], 1.0),
            Err(Rejection::Shape {
                expected: 4,
                got: 5
            })
        );
        s.commit(1.0);
        assert_eq!(s.mean(), Some(vec![1.0; 4]));
    }

    #[test]
    fn invalid_weights_are_refused_and_not_counted() {
        let mut s = WeightedSum::new(1);
        for w in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                s.add_chunk(0, &[1.0], w),
                Err(Rejection::Weight { .. })
            ));
            s.commit(w);
        }
        assert_eq!((s.updates(), s.total_weight(), s.mean()), (0, 0.0, None));
    }

    #[test]
    fn weighted_mean_weighs_updates() {
        let mut s = WeightedSum::new(2);
        s.add_chunk(0, &[1.0, 0.0], 3.0).expect("in range");
        s.commit(3.0);
        s.add_chunk(0, &[0.0, 1.0], 1.0).expect("in range");
        s.commit(1.0);
        assert_eq!(s.mean(), Some(vec![0.75, 0.25]));
        assert_eq!((s.updates(), s.total_weight(), s.len()), (2, 4.0, 2));
    }

    fn five_rows_one_outlier() -> Vec<Vec<f32>> {
        vec![
            vec![1.0, -2.0],
            vec![1.1, -2.1],
            vec![0.9, -1.9],
            vec![1.05, -2.05],
            vec![1e30, -1e30],
        ]
    }

    fn aggregate(rows: &[Vec<f32>], rule: Rule) -> Result<Vec<f32>, Rejection> {
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        let mut out = vec![0.0; rows[0].len()];
        aggregate_block(&refs, rule, &mut out).map(|()| out)
    }

    #[test]
    fn trimmed_mean_and_median_resist_one_huge_outlier_among_five_rows() {
        let rows = five_rows_one_outlier();
        for rule in [Rule::Median, Rule::TrimmedMean { trim: 0.2 }] {
            let out = aggregate(&rows, rule).expect("valid");
            assert!((out[0] - 1.03).abs() < 0.05, "{rule:?} gave {out:?}");
            assert!((out[1] + 2.03).abs() < 0.05, "{rule:?} gave {out:?}");
        }
        // The plain mean is dragged away: the property above is not vacuous.
        let mean = aggregate(&rows, Rule::Mean).expect("valid");
        assert!(mean[0] > 1e28 && mean[1] < -1e28);
    }

    #[test]
    fn median_of_even_count_is_mean_of_two_middle_values() {
        let rows = vec![vec![4.0], vec![1.0], vec![3.0], vec![100.0]];
        assert_eq!(aggregate(&rows, Rule::Median), Ok(vec![3.5]));
    }

    #[test]
    fn trimmed_mean_cuts_floor_of_trim_times_rows_at_each_end() {
        let rows: Vec<Vec<f32>> = [10.0, 1.0, 2.0, 3.0, 4.0, -10.0, 5.0]
            .iter()
            .map(|&x| vec![x])
            .collect();
        // floor(0.3 * 7) = 2 cut at each end: keeps 2, 3, 4.
        assert_eq!(
            aggregate(&rows, Rule::TrimmedMean { trim: 0.3 }),
            Ok(vec![3.0])
        );
        // floor(0.1 * 7) = 0: the plain mean.
        assert_eq!(
            aggregate(&rows, Rule::TrimmedMean { trim: 0.1 }),
            Ok(vec![15.0 / 7.0])
        );
    }

    #[test]
    fn invalid_aggregation_requests_are_refused() {
        let rows = five_rows_one_outlier();
        for trim in [0.5, -0.1, f64::NAN] {
            assert!(matches!(
                aggregate(&rows, Rule::TrimmedMean { trim }),
                Err(Rejection::Trim { .. })
            ));
        }
        let mut out = [0.0f32; 2];
        assert_eq!(
            aggregate_block(&[], Rule::Median, &mut out),
            Err(Rejection::NoUpdates)
        );
        assert_eq!(
            aggregate_block(&[&[1.0, 2.0], &[1.0]], Rule::Median, &mut out),
            Err(Rejection::Shape {
                expected: 2,
                got: 1
            })
        );
    }

    #[test]
    fn aggregate_blocks_reports_spooled_nan_at_its_index_in_the_update() {
        let err = aggregate_blocks(2, 10, 4, Rule::Median, |u, off, buf: &mut [f32]| {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = if u == 1 && off + i == 6 {
                    f32::NAN
                } else {
                    0.0
                };
            }
            Ok::<(), std::convert::Infallible>(())
        });
        assert!(matches!(
            err,
            Err(AggregateError::Rejected(Rejection::NonFinite { index: 6 }))
        ));
    }

    #[test]
    fn aggregate_blocks_passes_reader_errors_through_with_where_they_happened() {
        let err = aggregate_blocks(3, 10, 4, Rule::Median, |u, off, _buf: &mut [f32]| {
            if u == 2 && off == 4 {
                Err("disk gone")
            } else {
                Ok(())
            }
        });
        assert!(matches!(
            err,
            Err(AggregateError::Read {
                update: 2,
                offset: 4,
                source: "disk gone"
            })
        ));
        assert!(matches!(
            aggregate_blocks(1, 10, 0, Rule::Mean, |_, _, _: &mut [f32]| Ok::<(), ()>(())),
            Err(AggregateError::ZeroBlock)
        ));
    }

    #[test]
    fn chunk_length_not_a_multiple_of_four_is_refused() {
        assert_eq!(
            f32_from_le(&[0u8; 7]),
            Err(Rejection::Encoding { bytes: 7 })
        );
    }

    #[test]
    fn rule_serialises_with_a_rule_tag() {
        let json = serde_json::to_string(&Rule::TrimmedMean { trim: 0.1 }).expect("serialise");
        assert_eq!(json, r#"{"rule":"trimmed_mean","trim":0.1}"#);
        let back: Rule = serde_json::from_str(r#"{"rule":"median"}"#).expect("deserialise");
        assert_eq!(back, Rule::Median);
    }
}
