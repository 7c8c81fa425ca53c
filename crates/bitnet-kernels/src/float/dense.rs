//! Plain F32 / F16 / BF16 rows: conversion and dot products. Bytes may be unaligned, so the scalar
//! code reads them with `from_le_bytes` and the SIMD code with unaligned loads.

use crate::float::dot_f32_scalar;
use crate::simd::SimdLevel;
use half::{bf16, f16};

pub(crate) fn f32_to_f32(row: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(row.chunks_exact(4)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

pub(crate) fn f16_to_f32(row: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(row.chunks_exact(2)) {
        *o = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
    }
}

pub(crate) fn bf16_to_f32(row: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(row.chunks_exact(2)) {
        *o = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
    }
}

/// Scalar dot of a row stored with `elem` bytes per value: converts 64 values at a time to the
/// stack, then runs the scalar f32 dot on them.
fn dot_converted(row: &[u8], x: &[f32], elem: usize, convert: fn(&[u8], &mut [f32])) -> f32 {
    let mut buf = [0.0f32; 64];
    let mut acc = 0.0f32;
    for (rb, xb) in row.chunks(64 * elem).zip(x.chunks(64)) {
        let n = xb.len();
        convert(rb, &mut buf[..n]);
        acc += dot_f32_scalar(&buf[..n], xb);
    }
    acc
}

pub(crate) fn dot_f32(level: SimdLevel, row: &[u8], x: &[f32]) -> f32 {
    assert!(row.len() >= 4 * x.len());
    match level {
        #[cfg(target_arch = "x86_64")]
        l if l.has_avx512() => {
            // SAFETY: level is clamped to the CPU (AVX-512 F present); row holds 4 * x.len() bytes.
            unsafe { crate::x86::float_dot::dot_f32_avx512(row.as_ptr(), x) }
        }
        #[cfg(target_arch = "x86_64")]
        l if l.has_avx2() => {
            // SAFETY: level is clamped to the CPU (AVX2 + FMA present); row holds 4 * x.len() bytes.
            unsafe { crate::x86::float_dot::dot_f32_avx2(row.as_ptr(), x, x.len()) }
        }
        _ => dot_converted(row, x, 4, f32_to_f32),
    }
}

pub(crate) fn dot_f16(level: SimdLevel, row: &[u8], x: &[f32]) -> f32 {
    assert!(row.len() >= 2 * x.len());
    match level {
        #[cfg(target_arch = "x86_64")]
        l if l.has_avx512() => {
            // SAFETY: level is clamped to the CPU (AVX-512 F + F16C present); row holds 2 * x.len() bytes.
            unsafe { crate::x86::float_dot::dot_f16_avx512(row.as_ptr(), x) }
        }
        #[cfg(target_arch = "x86_64")]
        l if l.has_avx2() => {
            // SAFETY: level is clamped to the CPU (AVX2 + FMA + F16C present); row holds 2 * x.len() bytes.
            unsafe { crate::x86::float_dot::dot_f16_avx2(row.as_ptr(), x) }
        }
        _ => dot_converted(row, x, 2, f16_to_f32),
    }
}

pub(crate) fn dot_bf16(level: SimdLevel, row: &[u8], x: &[f32]) -> f32 {
    assert!(row.len() >= 2 * x.len());
    match level {
        #[cfg(target_arch = "x86_64")]
        l if l.has_avx2() => {
            // SAFETY: level is clamped to the CPU (AVX2 + FMA present); row holds 2 * x.len() bytes.
            unsafe { crate::x86::float_dot::dot_bf16_avx2(row.as_ptr(), x) }
        }
        _ => dot_converted(row, x, 2, bf16_to_f32),
    }
}
