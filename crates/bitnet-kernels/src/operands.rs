//! The operands of a matrix product as two small descriptors, so that every product (ternary or
//! float, any format, any SIMD level) takes the same three things: the weights, [`QTokens`] (what
//! goes in) and [`OutRows`] (where the results go). [`OutRows`] plays the role of ik_llama.cpp's
//! `DataInfo`: a thread that owns rows `row0..row0 + m` of the output writes them through it,
//! without an argument list of eight.

/// `n` tokens of int8 activations: token `t` is `q[t * cols..(t + 1) * cols]` and `scales[t]` is
/// what [`crate::quantize_row_i8`] returned for it, so `n = scales.len()`.
#[derive(Clone, Copy, Debug)]
pub struct QTokens<'a> {
    pub q: &'a [i8],
    pub scales: &'a [f32],
}

impl<'a> QTokens<'a> {
    /// `q` holds `scales.len()` tokens back to back.
    pub fn new(q: &'a [i8], scales: &'a [f32]) -> Self {
        QTokens { q, scales }
    }

    /// One token.
    pub fn one(q: &'a [i8], scale: &'a f32) -> Self {
        QTokens {
            q,
            scales: std::slice::from_ref(scale),
        }
    }

    /// Number of tokens.
    #[inline]
    pub fn n(&self) -> usize {
        self.scales.len()
    }

    /// Token `t`'s `cols` activations.
    #[inline]
    pub fn token(&self, t: usize, cols: usize) -> &'a [i8] {
        &self.q[t * cols..(t + 1) * cols]
    }
}

/// Where a product writes: rows `row0..row0 + m` of the weight matrix for every token, row
/// `row0 + i` of token `t` at `y[t * ldy + i]`. So `y` is an `[n, ldy]` block holding just these
/// `m` rows (what a thread working on those rows owns); [`OutRows::all`] is the whole output.
#[derive(Debug)]
pub struct OutRows<'a> {
    y: &'a mut [f32],
    ldy: usize,
    row0: usize,
    m: usize,
}

impl<'a> OutRows<'a> {
    /// Rows `row0..row0 + m`, token stride `ldy` (checked against the product when it runs).
    pub fn new(y: &'a mut [f32], ldy: usize, row0: usize, m: usize) -> Self {
        OutRows { y, ldy, row0, m }
    }

    /// Every one of `rows` rows: `y` is `[n, rows]`.
    pub fn all(y: &'a mut [f32], rows: usize) -> Self {
        OutRows::new(y, rows, 0, rows)
    }

    /// One token's rows `row0..row0 + y.len()`.
    pub fn one(y: &'a mut [f32], row0: usize) -> Self {
        let m = y.len();
        OutRows::new(y, m, row0, m)
    }

    /// First weight row this block holds.
    #[inline]
    pub fn row0(&self) -> usize {
        self.row0
    }

    /// Rows this block holds.
    #[inline]
    pub fn m(&self) -> usize {
        self.m
    }

    /// Distance between two tokens' rows in `y`.
    #[inline]
    pub fn ldy(&self) -> usize {
        self.ldy
    }

    /// Writes row `row0 + i` of token `t`.
    #[inline(always)]
    pub(crate) fn set(&mut self, t: usize, i: usize, v: f32) {
        self.y[t * self.ldy + i] = v;
    }

    /// The underlying block (`[n, ldy]`).
    #[inline]
    pub(crate) fn y_mut(&mut self) -> &mut [f32] {
        self.y
    }

    /// A shorter borrow of the same rows (so one descriptor can be handed to several calls).
    pub fn reborrow(&mut self) -> OutRows<'_> {
        OutRows::new(self.y, self.ldy, self.row0, self.m)
    }

    /// Panics unless this block can take `n` tokens of a product with `rows` rows (`what` names
    /// the operation in the message).
    pub(crate) fn check(&self, n: usize, rows: usize, what: &str) {
        let end = self.row0.checked_add(self.m);
        assert!(
            end.is_some_and(|e| e <= rows),
            "{what}: rows {}..{}+{} out of {rows}",
            self.row0,
            self.row0,
            self.m
        );
        if n == 0 || self.m == 0 {
            return;
        }
        assert!(self.m <= self.ldy, "{what}: m = {} > ldy = {}", self.m, self.ldy);
        let need = (n - 1)
            .checked_mul(self.ldy)
            .and_then(|v| v.checked_add(self.m))
            .unwrap_or(usize::MAX);
        assert!(
            self.y.len() >= need,
            "{what}: y has {} values, need {need}",
            self.y.len()
        );
    }
}
