//! The loop nest shared by the SIMD levels of the per-tensor-scaled ternary formats (I2_S and our
//! Triple5): chunks of rows kept in cache while tiles of tokens pass over them, `sum(q)` once per
//! call, and one integer-to-float epilogue for every level.

// The tiled driver serves the x86 SIMD kernels; other targets only run the scalar paths.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use crate::operands::{OutRows, QTokens};

/// What the driver needs to know about a row-major ternary layout.
pub(crate) trait RowView: Copy {
    /// All the rows' bytes, row `r` at `r * stride()`.
    fn data(&self) -> &[u8];
    fn cols(&self) -> usize;
    fn stride(&self) -> usize;
    /// Columns at the front of every row that the SIMD tiles cover.
    fn tiled_cols(&self) -> usize;
    /// `sum_j q[j] * t[j]` over the columns of row `r` after [`tiled_cols`](Self::tiled_cols)
    /// (scalar, shared by every level so the tail never differs between a kernel and its twin).
    fn tail_dot(&self, r: usize, q: &[i8]) -> i32;
    /// Scalar twin: `sum_j q[j] * t[j]` over the whole of row `r`.
    fn row_dot(&self, r: usize, q: &[i8]) -> i32;
}

/// Calls `$tile::<RR, TT, $flags..>($args..)` for a tile of `$nr` rows (`$r` or 1) and `$nt` tokens
/// (1 to `$t`, at most 4): the instantiations a tile kernel of [`gemm_tiled`] dispatches to.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_macros))]
macro_rules! dispatch_tile {
    ($tile:ident, $r:expr, $t:expr, $nr:expr, $nt:expr, [$($flag:ident),*], ($($arg:expr),*)) => {
        match ($nr == $r, $nt) {
            (true, 1) => $tile::<{ $r }, 1, $($flag),*>($($arg),*),
            (true, 2) => $tile::<{ $r }, 2, $($flag),*>($($arg),*),
            (true, 3) => $tile::<{ $r }, 3, $($flag),*>($($arg),*),
            (true, _) => $tile::<{ $r }, { $t }, $($flag),*>($($arg),*),
            (false, 1) => $tile::<1, 1, $($flag),*>($($arg),*),
            (false, 2) => $tile::<1, 2, $($flag),*>($($arg),*),
            (false, 3) => $tile::<1, 3, $($flag),*>($($arg),*),
            (false, _) => $tile::<1, { $t }, $($flag),*>($($arg),*),
        }
    };
}
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_imports))]
pub(crate) use dispatch_tile;

/// Scalar gemm of every per-tensor-scaled layout: each token through the scalar row dot.
pub(crate) fn gemm_scalar<V: RowView>(v: V, w_scale: f32, x: QTokens<'_>, mut out: OutRows<'_>) {
    let cols = v.cols();
    let row0 = out.row0();
    for (t, &xs) in x.scales.iter().enumerate() {
        let qt = x.token(t, cols);
        for i in 0..out.m() {
            out.set(t, i, finish(v.row_dot(row0 + i, qt), xs, w_scale));
        }
    }
}

/// The integer-to-float step every level shares, so results agree bit for bit.
#[inline]
pub(crate) fn finish(acc: i32, x_scale: f32, w_scale: f32) -> f32 {
    acc as f32 / x_scale * w_scale
}

/// Most rows a SIMD tile covers at once.
pub(crate) const TILE_ROWS: usize = 4;
/// Most tokens a SIMD tile covers at once.
pub(crate) const TILE_TOKENS: usize = 4;
/// Results of one tile: `[row][token]` raw dots over the full blocks with codes 0..=2.
pub(crate) type Tile = [[i32; TILE_TOKENS]; TILE_ROWS];

/// Bytes of weights one pass over the token tiles keeps hot (fits L2 on current x86 cores); shared
/// by both tile drivers (this one and the block-scaled [`crate::tq2_0`] one).
pub(crate) const CHUNK_BYTES: usize = 256 * 1024;

/// Shared loop nest of the SIMD levels of the per-tensor-scaled formats. `dots(r, nr, toks, out,
/// stream)` must write `out[k][t] = sum_j toks[t][j] * u(r + k, j)` over the first
/// [`RowView::tiled_cols`] columns, where `u = t + 1` is the weight's unsigned code (0..=2), for
/// `k < nr` where `nr` is `rmax` or 1; `stream` says that this call passes over the weights once (at
/// most `tmax` tokens), so the kernel should prefetch ahead itself. The ternary dot is that minus
/// `sum_j q[j]` (computed once per call), plus [`RowView::tail_dot`].
///
/// Rows are processed in chunks of about `CHUNK_BYTES` so a chunk stays in cache while every
/// token tile passes over it; each weight byte is thus read from memory once per call.
pub(crate) fn gemm_tiled<V: RowView>(
    v: V,
    w_scale: f32,
    x: QTokens<'_>,
    mut out: OutRows<'_>,
    rmax: usize,
    tmax: usize,
    mut dots: impl FnMut(usize, usize, &[&[i8]], &mut Tile, bool),
) {
    debug_assert!((1..=TILE_ROWS).contains(&rmax) && (1..=TILE_TOKENS).contains(&tmax));
    let (q, x_scales) = (x.q, x.scales);
    let (row0, m) = (out.row0(), out.m());
    let cols = v.cols();
    let full = v.tiled_cols();
    let n = x_scales.len();
    let stride = v.stride();
    let chunk_rows = ((CHUNK_BYTES / stride.max(1)) / rmax * rmax).max(rmax);
    let mut tile: Tile = [[0; TILE_TOKENS]; TILE_ROWS];
    // sum(q) per token, needed once per tile: computed up front for the usual token counts (exact at
    // every level, so the detected one is used), else per token tile.
    // (A small array for decoding so that the per-call zeroing stays small.)
    const SUMS: usize = 512;
    let level = crate::simd_level();
    let sum_of = |t: usize| crate::sum_i8_with(level, &q[t * cols..t * cols + full]);
    let (mut small, mut big);
    let sums: &mut [i32] = if n <= TILE_TOKENS {
        small = [0i32; TILE_TOKENS];
        &mut small
    } else {
        big = [0i32; SUMS];
        &mut big
    };
    if n <= SUMS {
        for (t, s) in sums.iter_mut().enumerate().take(n) {
            *s = sum_of(t);
        }
    }
    let has_tail = full != cols;
    let stream = n <= tmax;
    let mut c0 = 0;
    while c0 < m {
        let c1 = m.min(c0 + chunk_rows);
        let mut t0 = 0;
        while t0 < n {
            let nt = tmax.min(n - t0);
            let mut toks: [&[i8]; TILE_TOKENS] = [&[]; TILE_TOKENS];
            let mut sumq = [0i32; TILE_TOKENS];
            let mut xs_tile = [1f32; TILE_TOKENS];
            xs_tile[..nt].copy_from_slice(&x_scales[t0..t0 + nt]);
            for k in 0..nt {
                toks[k] = &q[(t0 + k) * cols..(t0 + k + 1) * cols];
                sumq[k] = if n <= SUMS { sums[t0 + k] } else { sum_of(t0 + k) };
            }
            let mut i = c0;
            while i < c1 {
                let nr = if c1 - i >= rmax { rmax } else { 1 };
                dots(row0 + i, nr, &toks[..nt], &mut tile, stream);
                // The last token tile over a chunk works from cache; meanwhile fetch the same rows of
                // the next chunk, so that its first pass does not wait on memory.
                if n > tmax && t0 + nt == n && c1 + (i - c0) + nr <= m {
                    let start = (row0 + c1 + (i - c0)) * stride;
                    crate::simd::prefetch(&v.data()[start..start + nr * stride]);
                }
                for (rr, tile_row) in tile.iter().enumerate().take(nr) {
                    // All TILE_TOKENS lanes at once (unused ones divide by 1) so that the compiler
                    // vectorizes the divisions; each lane is exactly `finish`.
                    let mut acc = [0i32; TILE_TOKENS];
                    for k in 0..TILE_TOKENS {
                        acc[k] = tile_row[k] - sumq[k];
                    }
                    if has_tail {
                        for k in 0..nt {
                            acc[k] += v.tail_dot(row0 + i + rr, toks[k]);
                        }
                    }
                    let res = finish_tile(acc, xs_tile, w_scale);
                    for (k, &o) in res.iter().enumerate().take(nt) {
                        out.set(t0 + k, i + rr, o);
                    }
                }
                i += nr;
            }
            t0 += nt;
        }
        c0 = c1;
    }
}

/// [`finish`] of a tile row's four tokens at once (the epilogue runs once per 16 outputs of a tile;
/// scalar divisions there cost a tenth of a prefill). Lane for lane the same IEEE operations as
/// `finish`, so the results are identical.
#[inline]
fn finish_tile(acc: [i32; TILE_TOKENS], xs: [f32; TILE_TOKENS], w_scale: f32) -> [f32; TILE_TOKENS] {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::*;
        const _: () = assert!(TILE_TOKENS == 4);
        let mut out = [0f32; TILE_TOKENS];
        // SAFETY: SSE2 is part of the x86-64 baseline; the loads and the store cover exactly the
        // four-element arrays.
        unsafe {
            let a = _mm_cvtepi32_ps(_mm_loadu_si128(acc.as_ptr().cast()));
            let v = _mm_mul_ps(_mm_div_ps(a, _mm_loadu_ps(xs.as_ptr())), _mm_set1_ps(w_scale));
            _mm_storeu_ps(out.as_mut_ptr(), v);
        }
        out
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        core::array::from_fn(|k| finish(acc[k], xs[k], w_scale))
    }
}
