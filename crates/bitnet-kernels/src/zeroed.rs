//! Large zero-filled f32 buffers (the KV cache) that fail with an error instead of aborting the
//! process. They come from the allocator's zeroed path, so untouched pages stay unmapped and cost no
//! memory until written; `vec![0.0; n]` does the same but aborts when the allocation is refused.

use crate::KernelError;

/// A vector of `n` zeros, or an error when `n` f32 values cannot be allocated.
pub fn try_zeroed_f32(n: usize) -> Result<Vec<f32>, KernelError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<f32>(n).map_err(|_| KernelError::OutOfMemory(usize::MAX))?;
    // SAFETY: `layout` has a non-zero size (n > 0). A non-null result is a fresh allocation of exactly
    // `layout` (n f32 values, f32's alignment) from the global allocator, fully zeroed, and 0.0f32 is
    // all-zero bits; so it is a valid Vec<f32> with length and capacity n, which frees it with the same
    // layout.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout).cast::<f32>();
        if p.is_null() {
            return Err(KernelError::OutOfMemory(layout.size()));
        }
        Ok(Vec::from_raw_parts(p, n, n))
    }
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
    }
}
