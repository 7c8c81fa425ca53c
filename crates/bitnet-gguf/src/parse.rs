//! The GGUF header parser.
//!
//! Layout (v2 and v3, little-endian):
//!
//! ```text
//! "GGUF" | u32 version | u64 tensor_count | u64 kv_count
//! kv_count x  { string key | u32 value_type | value }
//! tensor_count x { string name | u32 n_dims | n_dims x u64 dim | u32 ggml_type | u64 offset }
//! padding to the alignment | tensor data section
//! ```
//!
//! A string is `u64 length | bytes`; an array value is `u32 element_type | u64 count | elements`.
//!
//! Every read goes through [`Cursor`], which checks the remaining length first, and every
//! count read from the file is compared with the bytes left before anything is allocated for
//! it: a count of `n` elements of at least `m` bytes each needs `n * m` bytes of file, so an
//! allocation can never exceed a small multiple of the file size (and [`crate::limits`] caps
//! that multiple further). Nothing here panics on any input.

use std::collections::HashMap;

use crate::limits::{
    DEFAULT_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_KEY_LEN, MAX_METADATA_VALUES, MAX_TENSORS, MAX_TENSOR_DIMS,
    MAX_TENSOR_ELEMENTS, MIN_KV_BYTES, MIN_TENSOR_INFO_BYTES,
};
use crate::value::{type_id, type_name_of_id};
use crate::{GgmlType, GgufError, MetadataValue, TensorInfo};

/// Most metadata or tensor entries allocated for ahead of parsing them: enough for real
/// files, while a hostile count costs nothing until its entries are actually read.
const PREALLOC_ENTRIES: usize = 4096;

/// Most array elements allocated for ahead of parsing them (a 64k-token vocabulary).
const PREALLOC_ARRAY: usize = 1 << 16;

/// Everything the header says, validated.
pub(crate) struct Header {
    pub version: u32,
    pub alignment: u64,
    pub data_offset: u64,
    pub metadata: Vec<(String, MetadataValue)>,
    pub key_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    pub tensor_index: HashMap<String, usize>,
}

/// Parses and validates the header of the GGUF file `buf` (the whole file: tensor ranges are
/// checked against its length). `file` names the file in error messages.
pub(crate) fn parse_header(buf: &[u8], file: &str) -> Result<Header, GgufError> {
    let mut p = Parser {
        cur: Cursor { buf, pos: 0, file },
        values_left: MAX_METADATA_VALUES,
    };
    p.parse()
}

/// Bounds-checked little-endian reads over the file bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    /// Invariant: `pos <= buf.len()`.
    pos: usize,
    file: &'a str,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        self.buf.len().saturating_sub(self.pos) as u64
    }

    fn invalid(&self, what: String) -> GgufError {
        GgufError::Invalid {
            file: self.file.to_string(),
            what,
        }
    }

    /// Takes the next `n` bytes, or reports `what` as truncated.
    fn take(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<&'a [u8], GgufError> {
        let slice = usize::try_from(n).ok().and_then(|n| self.buf.get(self.pos..)?.get(..n));
        match slice {
            Some(s) => {
                self.pos += s.len();
                Ok(s)
            }
            None => Err(GgufError::Truncated {
                file: self.file.to_string(),
                what: what(),
                offset: self.pos as u64,
                needed: n,
                available: self.remaining(),
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: impl FnOnce() -> String) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Reads a GGUF string (`u64` length + UTF-8 bytes). `what` describes it for messages.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let len = self.u64(|| format!("length of {}", what()))?;
        if len > self.remaining() {
            return Err(self.invalid(format!(
                "string length {len} of {} exceeds the {} bytes left in the file (at offset \
                 {}): the file is truncated or corrupt",
                what(),
                self.remaining(),
                self.pos
            )));
        }
        let start = self.pos;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(e) => Err(self.invalid(format!(
                "{} is not valid UTF-8 (invalid byte at file offset {})",
                what(),
                start + e.valid_up_to()
            ))),
        }
    }
}

struct Parser<'a> {
    cur: Cursor<'a>,
    /// Metadata values (array elements included) still allowed by [`MAX_METADATA_VALUES`].
    values_left: u64,
}

impl Parser<'_> {
    fn invalid(&self, what: String) -> GgufError {
        self.cur.invalid(what)
    }

    fn parse(&mut self) -> Result<Header, GgufError> {
        let version = self.preamble()?;
        let tensor_count = self.cur.u64(|| "tensor count".to_string())?;
        let kv_count = self.cur.u64(|| "metadata entry count".to_string())?;
        self.check_tensor_count(tensor_count)?;
        if kv_count > self.cur.remaining() / MIN_KV_BYTES {
            return Err(self.invalid(format!(
                "metadata entry count {kv_count} cannot fit in the {} bytes left in the file \
                 (each entry takes at least {MIN_KV_BYTES} bytes): the file is truncated or \
                 corrupt",
                self.cur.remaining()
            )));
        }
        if kv_count > MAX_METADATA_VALUES {
            return Err(self.invalid(format!(
                "metadata entry count {kv_count} exceeds the limit of {MAX_METADATA_VALUES}"
            )));
        }

        let (metadata, key_index) = self.metadata(kv_count)?;
        let alignment = self.alignment(&metadata, &key_index)?;
        let (tensors, tensor_index) = self.tensor_infos(tensor_count)?;

        let header_end = self.cur.pos as u64;
        let data_offset = header_end
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| self.invalid("data section offset overflows".to_string()))?;
        self.check_tensor_ranges(&tensors, data_offset, alignment)?;

        Ok(Header {
            version,
            alignment,
            data_offset,
            metadata,
            key_index,
            tensors,
            tensor_index,
        })
    }

    /// Magic and version; returns the version (2 or 3).
    fn preamble(&mut self) -> Result<u32, GgufError> {
        let file = self.cur.file.to_string();
        let magic: [u8; 4] = self.cur.array(|| "magic".to_string())?;
        if &magic != b"GGUF" {
            return Err(GgufError::BadMagic { file, found: magic });
        }
        let raw = self.cur.u32(|| "version".to_string())?;
        match raw {
            2 | 3 => Ok(raw),
            _ if matches!(raw.swap_bytes(), 1..=3) => Err(GgufError::BigEndian {
                file,
                version: raw.swap_bytes(),
                raw,
            }),
            _ => Err(GgufError::UnsupportedVersion { file, version: raw }),
        }
    }

    fn check_tensor_count(&self, tensor_count: u64) -> Result<(), GgufError> {
        if tensor_count > self.cur.remaining() / MIN_TENSOR_INFO_BYTES {
            return Err(self.invalid(format!(
                "tensor count {tensor_count} cannot fit in the {} bytes left in the file \
                 (each tensor entry takes at least {MIN_TENSOR_INFO_BYTES} bytes): the file is \
                 truncated or corrupt",
                self.cur.remaining()
            )));
        }
        if tensor_count > MAX_TENSORS {
            return Err(self.invalid(format!(
                "tensor count {tensor_count} exceeds the limit of {MAX_TENSORS}"
            )));
        }
        Ok(())
    }

    #[allow(clippy::type_complexity)]
    fn metadata(&mut self, kv_count: u64) -> Result<(Vec<(String, MetadataValue)>, HashMap<String, usize>), GgufError> {
        // Entries are only allocated as they are parsed; preallocate for typical files.
        let cap = usize::try_from(kv_count).unwrap_or(0).min(PREALLOC_ENTRIES);
        let mut metadata = Vec::with_capacity(cap);
        let mut key_index = HashMap::with_capacity(cap);
        for i in 0..kv_count {
            let key = self.cur.string(&|| format!("the key of metadata entry #{i}"))?;
            if key.len() as u64 > MAX_KEY_LEN {
                return Err(self.invalid(format!(
                    "metadata entry #{i} has a key of {} bytes; the limit is {MAX_KEY_LEN}",
                    key.len()
                )));
            }
            if key_index.contains_key(&key) {
                return Err(self.invalid(format!("duplicate metadata key '{key}'")));
            }
            let ty = self.cur.u32(|| format!("the value type of metadata key '{key}'"))?;
            if type_name_of_id(ty).is_none() {
                return Err(self.invalid(format!("metadata key '{key}' has unknown value type id {ty}")));
            }
            self.spend_values(1, &key)?;
            let value = self.value(ty, &key, 0)?;
            key_index.insert(key.clone(), metadata.len());
            metadata.push((key, value));
        }
        Ok((metadata, key_index))
    }

    /// Accounts for `n` more metadata values against [`MAX_METADATA_VALUES`].
    fn spend_values(&mut self, n: u64, key: &str) -> Result<(), GgufError> {
        if n > self.values_left {
            return Err(self.invalid(format!(
                "metadata key '{key}' brings the number of metadata values over the limit of \
                 {MAX_METADATA_VALUES}"
            )));
        }
        self.values_left -= n;
        Ok(())
    }

    /// Reads one value of (known) type `ty`; `level` is the number of enclosing arrays.
    fn value(&mut self, ty: u32, key: &str, level: u32) -> Result<MetadataValue, GgufError> {
        let what = || {
            let name = type_name_of_id(ty).unwrap_or("?");
            if level == 0 {
                format!("the {name} value of metadata key '{key}'")
            } else {
                format!("a {name} element of metadata array '{key}'")
            }
        };
        let c = &mut self.cur;
        Ok(match ty {
            type_id::U8 => MetadataValue::U8(u8::from_le_bytes(c.array(what)?)),
            type_id::I8 => MetadataValue::I8(i8::from_le_bytes(c.array(what)?)),
            type_id::U16 => MetadataValue::U16(u16::from_le_bytes(c.array(what)?)),
            type_id::I16 => MetadataValue::I16(i16::from_le_bytes(c.array(what)?)),
            type_id::U32 => MetadataValue::U32(u32::from_le_bytes(c.array(what)?)),
            type_id::I32 => MetadataValue::I32(i32::from_le_bytes(c.array(what)?)),
            type_id::U64 => MetadataValue::U64(u64::from_le_bytes(c.array(what)?)),
            type_id::I64 => MetadataValue::I64(i64::from_le_bytes(c.array(what)?)),
            type_id::F32 => MetadataValue::F32(f32::from_le_bytes(c.array(what)?)),
            type_id::F64 => MetadataValue::F64(f64::from_le_bytes(c.array(what)?)),
            type_id::BOOL => {
                let offset = c.pos;
                match c.array::<1>(what)? {
                    [0] => MetadataValue::Bool(false),
                    [1] => MetadataValue::Bool(true),
                    [b] => {
                        return Err(self.invalid(format!(
                            "{} is the byte {b} at offset {offset}; a bool must be 0 or 1",
                            what()
                        )))
                    }
                }
            }
            type_id::STRING => MetadataValue::String(c.string(&what)?),
            type_id::ARRAY => self.array(key, level)?,
            _ => return Err(self.invalid(format!("metadata key '{key}' has unknown value type id {ty}"))),
        })
    }

    /// Reads an array value (after its type tag); `level` is the number of enclosing arrays.
    fn array(&mut self, key: &str, level: u32) -> Result<MetadataValue, GgufError> {
        if level >= MAX_ARRAY_DEPTH {
            return Err(self.invalid(format!(
                "metadata key '{key}' has arrays nested more than {MAX_ARRAY_DEPTH} levels deep"
            )));
        }
        let elem_ty = self.cur.u32(|| format!("the element type of metadata array '{key}'"))?;
        let Some(elem_name) = type_name_of_id(elem_ty) else {
            return Err(self.invalid(format!("metadata array '{key}' has unknown element type id {elem_ty}")));
        };
        let count = self.cur.u64(|| format!("the length of metadata array '{key}'"))?;
        let min_size = min_encoded_size(elem_ty);
        if count > self.cur.remaining() / min_size {
            return Err(self.invalid(format!(
                "array length {count} of metadata key '{key}' cannot fit in the {} bytes left \
                 in the file ({elem_name} elements take at least {min_size} bytes each): the \
                 file is truncated or corrupt",
                self.cur.remaining()
            )));
        }
        self.spend_values(count, key)?;
        // Preallocation is capped too, so that a count the file cannot back costs nothing;
        // beyond the cap the vector grows with the elements actually read.
        let cap = usize::try_from(count).unwrap_or(0).min(PREALLOC_ARRAY);
        let mut items = Vec::with_capacity(cap);
        for _ in 0..count {
            items.push(self.value(elem_ty, key, level + 1)?);
        }
        Ok(MetadataValue::Array(items))
    }

    fn alignment(
        &self,
        metadata: &[(String, MetadataValue)],
        key_index: &HashMap<String, usize>,
    ) -> Result<u64, GgufError> {
        let value = key_index
            .get("general.alignment")
            .and_then(|&i| metadata.get(i))
            .map(|(_, v)| v);
        match value {
            None => Ok(DEFAULT_ALIGNMENT),
            Some(MetadataValue::U32(a)) if a.is_power_of_two() => Ok(u64::from(*a)),
            Some(MetadataValue::U32(a)) => {
                Err(self.invalid(format!("general.alignment is {a}; it must be a nonzero power of two")))
            }
            Some(other) => Err(self.invalid(format!(
                "general.alignment has type {}; it must be u32",
                other.describe_type()
            ))),
        }
    }

    #[allow(clippy::type_complexity)]
    fn tensor_infos(&mut self, tensor_count: u64) -> Result<(Vec<TensorInfo>, HashMap<String, usize>), GgufError> {
        // Re-checked now that the metadata has been consumed: the tensor entries follow it.
        self.check_tensor_count(tensor_count)?;
        let cap = usize::try_from(tensor_count).unwrap_or(0).min(PREALLOC_ENTRIES);
        let mut tensors = Vec::with_capacity(cap);
        let mut index = HashMap::with_capacity(cap);
        for i in 0..tensor_count {
            let info = self.tensor_info(i)?;
            if index.contains_key(&info.name) {
                return Err(self.invalid(format!("duplicate tensor name '{}'", info.name)));
            }
            index.insert(info.name.clone(), tensors.len());
            tensors.push(info);
        }
        Ok((tensors, index))
    }

    fn tensor_info(&mut self, i: u64) -> Result<TensorInfo, GgufError> {
        let name = self.cur.string(&|| format!("the name of tensor #{i}"))?;
        let n_dims = self.cur.u32(|| format!("the dimension count of tensor '{name}'"))?;
        if n_dims == 0 || n_dims > MAX_TENSOR_DIMS {
            return Err(self.invalid(format!(
                "tensor '{name}' has {n_dims} dimensions; GGUF tensors have 1 to \
                 {MAX_TENSOR_DIMS}"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(self.cur.u64(|| format!("dimension {d} of tensor '{name}'"))?);
        }
        let type_id = self.cur.u32(|| format!("the type of tensor '{name}'"))?;
        let offset = self.cur.u64(|| format!("the data offset of tensor '{name}'"))?;

        if let Some(d) = dims.iter().position(|&d| d == 0) {
            return Err(self.invalid(format!(
                "tensor '{name}' has shape {dims:?} with dimension {d} equal to 0"
            )));
        }
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= MAX_TENSOR_ELEMENTS)
            .ok_or_else(|| {
                self.invalid(format!(
                    "tensor '{name}' has shape {dims:?}, more than the limit of \
                     {MAX_TENSOR_ELEMENTS} (2^48) elements"
                ))
            })?;
        let Some(ggml_type) = GgmlType::from_id(type_id) else {
            return Err(GgufError::UnknownType {
                file: self.cur.file.to_string(),
                tensor: name,
                type_id,
            });
        };
        let ne0 = dims.first().copied().unwrap_or(0);
        let n_bytes = ggml_type.tensor_bytes(ne0, n_elements).ok_or_else(|| {
            self.invalid(format!(
                "tensor '{name}' of type {ggml_type} has shape {dims:?}, but {ggml_type} needs \
                 {}",
                ggml_type.shape_rule()
            ))
        })?;
        Ok(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            n_bytes,
        })
    }

    /// Checks that every tensor's data is aligned, inside the file, and overlaps no other.
    fn check_tensor_ranges(&self, tensors: &[TensorInfo], data_offset: u64, alignment: u64) -> Result<(), GgufError> {
        let file_len = self.cur.buf.len() as u64;
        for t in tensors.iter() {
            if t.offset % alignment != 0 {
                return Err(self.invalid(format!(
                    "tensor '{}' has data offset {}, which is not a multiple of the alignment {}",
                    t.name, t.offset, alignment
                )));
            }
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|start| start.checked_add(t.n_bytes));
            match end {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(self.invalid(format!(
                        "tensor '{}' ({} bytes at data offset {}, file offset {}) extends past \
                         the end of the file ({} bytes)",
                        t.name,
                        t.n_bytes,
                        t.offset,
                        data_offset as u128 + t.offset as u128,
                        file_len
                    )))
                }
            }
        }
        let mut order: Vec<&TensorInfo> = tensors.iter().collect();
        order.sort_by_key(|t| t.offset);
        for pair in order.windows(2) {
            if let [a, b] = pair {
                // Cannot overflow: both ranges were checked to end inside the file.
                if b.offset < a.offset + a.n_bytes {
                    return Err(self.invalid(format!(
                        "tensors '{}' (data bytes {}..{}) and '{}' (from data byte {}) overlap",
                        a.name,
                        a.offset,
                        a.offset + a.n_bytes,
                        b.name,
                        b.offset
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Fewest bytes one encoded value of (known) type `ty` can take.
fn min_encoded_size(ty: u32) -> u64 {
    match ty {
        type_id::U8 | type_id::I8 | type_id::BOOL => 1,
        type_id::U16 | type_id::I16 => 2,
        type_id::U32 | type_id::I32 | type_id::F32 => 4,
        type_id::U64 | type_id::I64 | type_id::F64 | type_id::STRING => 8,
        // element type (4) + count (8)
        type_id::ARRAY => 12,
        _ => 1,
    }
}
