//! Description of one tensor in a GGUF file (its header entry, not its data).

use crate::GgmlType;

/// One tensor's header entry.
///
/// Produced by the reader only after validation: the shape is valid for the type, `n_bytes`
/// equals [`GgmlType::tensor_bytes`] for it, and the data lies inside the file, aligned, and
/// overlapping no other tensor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in ggml `ne` order: `dims[0]` is the row length (the contiguous, input
    /// dimension), so a PyTorch `(out, in)` weight has `dims == [in, out]`. 1 to 4 entries.
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Byte offset of the data, relative to the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of values (product of the dims). Validated at open not to overflow; saturates
    /// for hand-built infos that would.
    pub fn n_elements(&self) -> u64 {
        self.dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    /// Number of rows: the product of all dims but the first (1 for a vector).
    pub fn n_rows(&self) -> u64 {
        self.dims
            .iter()
            .skip(1)
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .unwrap_or(u64::MAX)
    }
}
