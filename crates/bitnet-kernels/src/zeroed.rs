//! Large zero-filled f32 buffers (the KV cache) that fail with an error instead of aborting the
//! process. They come from the allocator's zeroed path, so untouched pages stay unmapped and cost no
//! memory until written; `vec![0.0; n]` does the same but aborts when the allocation is refused.

use crate::KernelError;

/// Element types whose all-zero bit pattern is a valid value (zero).
///
/// # Safety
/// Implement only for types for which all-zero bytes are a valid value.
unsafe trait ZeroBits: Sized {}
// SAFETY: 0.0f32 is all-zero bits.
unsafe impl ZeroBits for f32 {}
// SAFETY: 0u16 (and f16 0.0 stored as bits) is all-zero bits.
unsafe impl ZeroBits for u16 {}

fn try_zeroed<T: ZeroBits>(n: usize) -> Result<Vec<T>, KernelError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<T>(n).map_err(|_| KernelError::OutOfMemory(usize::MAX))?;
    // SAFETY: `layout` has a non-zero size (n > 0). A non-null result is a fresh allocation of exactly
    // `layout` (n values of T, T's alignment) from the global allocator, fully zeroed, and all-zero bits
    // are a valid T (ZeroBits); so it is a valid Vec<T> with length and capacity n, which frees it with
    // the same layout.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout).cast::<T>();
        if p.is_null() {
            return Err(KernelError::OutOfMemory(layout.size()));
        }
        Ok(Vec::from_raw_parts(p, n, n))
    }
}

/// A vector of `n` zeros, or an error when `n` f32 values cannot be allocated.
pub fn try_zeroed_f32(n: usize) -> Result<Vec<f32>, KernelError> {
    try_zeroed(n)
}

/// A vector of `n` zero `u16`s (e.g. f16 bits), or an error when they cannot be allocated.
pub fn try_zeroed_u16(n: usize) -> Result<Vec<u16>, KernelError> {
    try_zeroed(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_buffers_and_refusals() {
        let v = try_zeroed_f32(1000).unwrap();
        assert_eq!(v.len(), 1000);
        assert!(v.iter().all(|&x| x == 0.0));
        assert!(try_zeroed_f32(0).unwrap().is_empty());
        assert!(try_zeroed_f32(usize::MAX / 2).is_err());
        // Far more than any machine has: refused, not an abort.
        assert!(try_zeroed_f32(1 << 50).is_err());
        assert!(try_zeroed_u16(77).unwrap().iter().all(|&x| x == 0));
        assert!(try_zeroed_u16(1 << 62).is_err());
    }
}
