//! Splits matrix products over the worker pool ([`crate::pool`]): each task takes a
//! contiguous block of output rows (weights are read once per block for all tokens), then the blocks
//! are gathered. Nothing here allocates once `tmp` has grown to the largest product.

use crate::operands::{OutRows, QTokens};
use crate::{pool, FloatMatrix, TernaryMatrix};

/// Output rows per task: enough tasks for load balance (4 per thread), rows a multiple of 16.
fn rows_per_task(rows: usize) -> usize {
    let tasks = pool::num_threads().max(1) * 4;
    rows.div_ceil(tasks).next_multiple_of(16).max(16)
}

/// Runs `f(row0, m, ychunk)` over blocks of rows, where `ychunk` is `[n_tok, m]`, then scatters the
/// blocks into `y` (`[n_tok, rows]`). `tmp` is reusable scratch.
fn blocked(rows: usize, n_tok: usize, y: &mut [f32], tmp: &mut Vec<f32>, f: impl Fn(usize, usize, &mut [f32]) + Sync) {
    let chunk = rows_per_task(rows);
    if n_tok == 1 {
        pool::for_each_chunk_mut(&mut y[..rows], chunk, |ci, yc| f(ci * chunk, yc.len(), yc));
        return;
    }
    if tmp.len() < rows * n_tok {
        tmp.resize(rows * n_tok, 0.0);
    }
    let tmp = &mut tmp[..rows * n_tok];
    pool::for_each_chunk_mut(tmp, chunk * n_tok, |ci, yc| {
        let m = yc.len() / n_tok;
        f(ci * chunk, m, yc)
    });
    scatter(tmp, chunk, n_tok, rows, y);
}

/// Copies blocks of `chunk` rows laid out `[block][token][row]` (what the tasks wrote) into `y`
/// (`[n_tok, rows]`).
fn scatter(blocks: &[f32], chunk: usize, n_tok: usize, rows: usize, y: &mut [f32]) {
    for (ci, yc) in blocks.chunks(chunk * n_tok).enumerate() {
        let r0 = ci * chunk;
        let m = yc.len() / n_tok;
        for t in 0..n_tok {
            y[t * rows + r0..t * rows + r0 + m].copy_from_slice(&yc[t * m..(t + 1) * m]);
        }
    }
}

/// `ys[k][t] = ws[k] · x[t]` for `n_tok` int8-quantized tokens (`xq` is `[n_tok, cols]`, `xs` the
/// per-token activation scales) and one or several matrices of the same input (q/k/v, gate/up), in one
/// pool operation so the threads meet once rather than once per matrix. `ys[k]` is `[n_tok, ws[k].rows()]`.
pub fn ternary_many<const K: usize>(
    ws: [&TernaryMatrix; K],
    xq: &[i8],
    xs: &[f32],
    ys: [&mut [f32]; K],
    tmp: &mut Vec<f32>,
) {
    let n_tok = xs.len();
    let rows: [usize; K] = std::array::from_fn(|k| ws[k].rows());
    let total: usize = rows.iter().sum();
    // Chunks sized from all the rows together: about 4 tasks per thread in all.
    let chunk = rows_per_task(total);
    if n_tok == 1 {
        let mut k = 0;
        let ys = ys.map(|y| {
            k += 1;
            &mut y[..rows[k - 1]]
        });
        pool::for_each_chunk_of_mut(ys, [chunk; K], |k, ci, yc| {
            ws[k].gemm(QTokens::new(xq, xs), OutRows::one(yc, ci * chunk))
        });
        return;
    }
    if tmp.len() < total * n_tok {
        tmp.resize(total * n_tok, 0.0);
    }
    // Each matrix's blocks go to its own region of `tmp` ([block][token][row]), then are scattered.
    let parts: [&mut [f32]; K] = {
        let mut rest = &mut tmp[..total * n_tok];
        std::array::from_fn(|k| {
            let (a, b) = std::mem::take(&mut rest).split_at_mut(rows[k] * n_tok);
            rest = b;
            a
        })
    };
    pool::for_each_chunk_of_mut(parts, [chunk * n_tok; K], |k, ci, yc| {
        let m = yc.len() / n_tok;
        ws[k].gemm(QTokens::new(xq, xs), OutRows::new(yc, m, ci * chunk, m))
    });
    let mut off = 0;
    for (k, y) in ys.into_iter().enumerate() {
        scatter(&tmp[off..off + rows[k] * n_tok], chunk, n_tok, rows[k], y);
        off += rows[k] * n_tok;
    }
}

/// `y[t] = W · x[t]` in f32 for a float/quantized matrix (the output head). `x` is `[n_tok, cols]`.
pub fn float(w: &FloatMatrix, x: &[f32], n_tok: usize, y: &mut [f32], tmp: &mut Vec<f32>) {
    // FloatMatrix::gemm walks the rows in cache-sized tiles itself (each row read from memory once per
    // call for all tokens).
    blocked(w.rows(), n_tok, y, tmp, |r0, m, yc| {
        w.gemm(x, n_tok, OutRows::new(yc, m, r0, m))
    });
}
