//! The one error type of this crate: bad shapes or bad bytes found when a matrix is built.

/// Why a matrix or codec call rejected its input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    /// The dimensions do not fit the format (e.g. a row length that is not a multiple of the block).
    #[error("invalid shape: {0}")]
    Shape(String),
    /// Fewer bytes than the format needs for the given shape.
    #[error("{format} data too short: need {needed} bytes, got {got}")]
    DataTooShort {
        format: &'static str,
        needed: usize,
        got: usize,
    },
    /// Bytes or values that no valid tensor holds (e.g. a ternary code outside -1..=1).
    #[error("invalid data: {0}")]
    InvalidData(String),
    /// The allocator refused a buffer of this many bytes.
    #[error("out of memory: cannot allocate {0} bytes")]
    OutOfMemory(usize),
}
