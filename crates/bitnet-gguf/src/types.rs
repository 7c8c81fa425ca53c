//! ggml tensor element types that bitnet-rs can load, and how many bytes a tensor of each takes.
//!
//! Only the types that occur in BitNet b1.58 files (as written by bitnet.cpp, llama.cpp and our own
//! writer) are listed: the reader rejects every other type id at open, naming the tensor, instead
//! of failing later in a kernel.

use std::fmt;

/// A ggml tensor type, identified in GGUF files by a `u32` type id.
///
/// Variant names follow ggml's spelling (`Q4_K`, `I2_S`) so they can be grepped across
/// projects.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit IEEE float (id 0).
    F32,
    /// 16-bit IEEE float (id 1).
    F16,
    /// bfloat16 (id 30).
    BF16,
    /// Blocks of 32 values: f16 scale + 32 x i8 (34 bytes) (id 8).
    Q8_0,
    /// Super-blocks of 256 values, 4.5 bits per weight (144 bytes) (id 12).
    Q4_K,
    /// Super-blocks of 256 values, 6.5625 bits per weight (210 bytes) (id 14).
    Q6_K,
    /// Ternary, blocks of 256: 5 trits per byte + f16 scale (54 bytes) (id 34).
    TQ1_0,
    /// Ternary, blocks of 256: 2 bits per value + f16 scale (66 bytes) (id 35).
    TQ2_0,
    /// bitnet.cpp's ternary type (id 36, which upstream ggml does not define): 2 bits per value
    /// for the whole tensor, then one f32 per-tensor scale padded to 32 bytes.
    I2_S,
}

impl GgmlType {
    /// Every supported type, in type-id order.
    pub const ALL: [GgmlType; 9] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::BF16,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::I2_S,
    ];

    /// The type for a GGUF type id, or `None` if the id is not one this crate supports.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4_K,
            14 => GgmlType::Q6_K,
            30 => GgmlType::BF16,
            34 => GgmlType::TQ1_0,
            35 => GgmlType::TQ2_0,
            36 => GgmlType::I2_S,
            _ => return None,
        })
    }

    /// The GGUF type id.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4_K => 12,
            GgmlType::Q6_K => 14,
            GgmlType::BF16 => 30,
            GgmlType::TQ1_0 => 34,
            GgmlType::TQ2_0 => 35,
            GgmlType::I2_S => 36,
        }
    }

    /// The name ggml tools print for the type: `"F32"`, `"Q6_K"`, `"I2_S"`, ...
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::TQ1_0 => "TQ1_0",
            GgmlType::TQ2_0 => "TQ2_0",
            GgmlType::I2_S => "I2_S",
        }
    }

    /// Number of values that share one block. For block types a row length (`ne0`) must be
    /// a multiple of it; plain floats are blocks of one value. I2_S packs 4 values per byte
    /// across the whole tensor, so only its element count must be a multiple of 4 (its
    /// per-tensor trailer is not a block; see [`tensor_bytes`]).
    ///
    /// [`tensor_bytes`]: GgmlType::tensor_bytes
    pub fn block_size(self) -> u64 {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q8_0 => 32,
            GgmlType::Q4_K | GgmlType::Q6_K | GgmlType::TQ1_0 | GgmlType::TQ2_0 => 256,
            GgmlType::I2_S => 4,
        }
    }

    /// What a shape needs to be valid for this type, for error messages.
    pub(crate) fn shape_rule(self) -> String {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => "nonzero dimensions".to_string(),
            GgmlType::I2_S => "an element count that is a multiple of 4".to_string(),
            _ => format!(
                "a row length (first dimension) that is a multiple of {}",
                self.block_size()
            ),
        }
    }

    /// Bytes one block of [`block_size`](GgmlType::block_size) values takes (for I2_S: the
    /// one byte holding 4 values, without the per-tensor 32-byte trailer).
    pub fn block_bytes(self) -> u64 {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q8_0 => 34,
            GgmlType::Q4_K => 144,
            GgmlType::Q6_K => 210,
            GgmlType::TQ1_0 => 54,
            GgmlType::TQ2_0 => 66,
            GgmlType::I2_S => 1,
        }
    }

    /// Bytes a tensor of `n_elements` values with row length `ne0` (the first ggml dimension)
    /// takes in a GGUF data section, or `None` if that shape is invalid for the type: zero
    /// sizes, `n_elements` not a multiple of `ne0`, `ne0` not a multiple of the block size
    /// (for I2_S: `n_elements` not a multiple of 4), or a size that overflows `u64`.
    ///
    /// I2_S is `n_elements / 4 + 32` (2 bits per value, then a 32-byte trailer whose first 4
    /// bytes are the f32 per-tensor scale). This is what bitnet.cpp actually writes and reads;
    /// the type-size table in its ggml fork would give a different (wrong) number.
    pub fn tensor_bytes(self, ne0: u64, n_elements: u64) -> Option<u64> {
        if ne0 == 0 || n_elements == 0 || !n_elements.is_multiple_of(ne0) {
            return None;
        }
        let block = self.block_size();
        let blocked = match self {
            GgmlType::I2_S => n_elements,
            _ => ne0,
        };
        if blocked % block != 0 {
            return None;
        }
        let body = (n_elements / block).checked_mul(self.block_bytes())?;
        match self {
            GgmlType::I2_S => body.checked_add(32),
            _ => Some(body),
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_unknown_ids_are_rejected() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
        }
        for id in [2, 3, 6, 7, 9, 10, 11, 13, 15, 16, 29, 31, 33, 37, 99, u32::MAX] {
            assert_eq!(GgmlType::from_id(id), None, "id {id}");
        }
    }

    #[test]
    fn sizes_match_the_ggml_block_layouts() {
        assert_eq!(GgmlType::F32.tensor_bytes(256, 256 * 3), Some(3072));
        assert_eq!(GgmlType::F16.tensor_bytes(3, 6), Some(12));
        assert_eq!(GgmlType::BF16.tensor_bytes(5, 5), Some(10));
        assert_eq!(GgmlType::Q8_0.tensor_bytes(64, 128), Some(4 * 34));
        assert_eq!(GgmlType::Q4_K.tensor_bytes(256, 512), Some(2 * 144));
        assert_eq!(GgmlType::Q6_K.tensor_bytes(256, 256 * 1024), Some(1024 * 210));
        assert_eq!(GgmlType::TQ1_0.tensor_bytes(512, 512 * 2), Some(4 * 54));
        assert_eq!(GgmlType::TQ2_0.tensor_bytes(256, 256), Some(66));
        // The fixture's attn_q: 256 x 256 I2_S = 16384 + 32 bytes.
        assert_eq!(GgmlType::I2_S.tensor_bytes(256, 65536), Some(16416));
    }

    #[test]
    fn invalid_shapes_have_no_size() {
        assert_eq!(GgmlType::Q8_0.tensor_bytes(48, 96), None);
        assert_eq!(GgmlType::TQ2_0.tensor_bytes(128, 256), None);
        assert_eq!(GgmlType::I2_S.tensor_bytes(6, 18), None);
        // I2_S packs the flattened tensor: only the element count must be a multiple of 4.
        assert_eq!(GgmlType::I2_S.tensor_bytes(6, 12), Some(3 + 32));
        assert_eq!(GgmlType::F32.tensor_bytes(0, 0), None);
        assert_eq!(GgmlType::F32.tensor_bytes(3, 7), None);
        assert_eq!(GgmlType::F32.tensor_bytes(1, u64::MAX), None);
    }
}
