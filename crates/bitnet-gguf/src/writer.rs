//! [`GgufWriter`]: builds a GGUF v3 file from metadata and raw tensor bytes.
//!
//! Everything the reader would reject is refused when it is added (or at the latest when the
//! file is written), so a file written by this crate always reads back: the writer and the
//! reader enforce the same [`limits`](crate::limits).
//!
//! Layout written: header, metadata in insertion order, tensor entries in insertion order,
//! zero padding to the alignment, then each tensor's data in insertion order, each followed by
//! zero padding to the alignment. That is the layout ggml and gguf-py produce, so llama.cpp's
//! stricter loader (which wants tensors packed in that order) accepts it too.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::limits::{
    DEFAULT_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_KEY_LEN, MAX_METADATA_VALUES, MAX_TENSORS, MAX_TENSOR_DIMS,
    MAX_TENSOR_ELEMENTS,
};
use crate::value::type_id;
use crate::{GgmlType, GgufError, MetadataValue, TensorInfo};

/// The metadata key that sets the data alignment.
const ALIGNMENT_KEY: &str = "general.alignment";

/// Builder for a GGUF v3 file.
///
/// ```
/// use bitnet_gguf::{GgmlType, GgufFile, GgufWriter};
///
/// let mut w = GgufWriter::new();
/// w.add_metadata("general.architecture", "bitnet-b1.58")?;
/// w.add_metadata("bitnet-b1.58.block_count", 3u32)?;
/// let norm: Vec<u8> = [1.0f32; 4].iter().flat_map(|x| x.to_le_bytes()).collect();
/// w.add_tensor("output_norm.weight", &[4], GgmlType::F32, norm)?;
///
/// let file = GgufFile::from_bytes(w.to_bytes()?, "in-memory")?;
/// assert_eq!(file.get_u32("bitnet-b1.58.block_count")?, 3);
/// # Ok::<(), bitnet_gguf::GgufError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetadataValue)>,
    tensors: Vec<PendingTensor>,
    tensor_names: HashSet<String>,
}

#[derive(Debug, Clone)]
struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

fn invalid(what: String) -> GgufError {
    GgufError::InvalidInput { what }
}

impl GgufWriter {
    /// An empty writer (alignment 32).
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// The data alignment the file will use: `general.alignment` if set, else 32.
    pub fn alignment(&self) -> u64 {
        match self.get(ALIGNMENT_KEY) {
            Some(MetadataValue::U32(a)) => u64::from(*a),
            _ => DEFAULT_ALIGNMENT,
        }
    }

    /// Sets the data alignment by setting `general.alignment` (a nonzero power of two).
    pub fn set_alignment(&mut self, alignment: u32) -> Result<(), GgufError> {
        self.set_metadata(ALIGNMENT_KEY, alignment)
    }

    /// The metadata added so far, in insertion order.
    pub fn metadata(&self) -> &[(String, MetadataValue)] {
        &self.metadata
    }

    /// The metadata value under `key`, if set.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Appends a metadata entry. Fails if `key` is already set (see
    /// [`set_metadata`](GgufWriter::set_metadata)), or if the value cannot be written: an array
    /// whose elements differ in type, arrays nested deeper than
    /// [`MAX_ARRAY_DEPTH`](crate::limits::MAX_ARRAY_DEPTH), a key longer than 65535 bytes, or a
    /// `general.alignment` that is not a u32 power of two.
    pub fn add_metadata(&mut self, key: impl Into<String>, value: impl Into<MetadataValue>) -> Result<(), GgufError> {
        let key = key.into();
        if self.get(&key).is_some() {
            return Err(invalid(format!("duplicate metadata key '{key}'")));
        }
        let value = value.into();
        check_entry(&key, &value)?;
        self.metadata.push((key, value));
        Ok(())
    }

    /// Sets a metadata entry: replaces the value in place if `key` exists (keeping its
    /// position), appends it otherwise. Same checks as [`add_metadata`](GgufWriter::add_metadata).
    pub fn set_metadata(&mut self, key: impl Into<String>, value: impl Into<MetadataValue>) -> Result<(), GgufError> {
        let key = key.into();
        let value = value.into();
        check_entry(&key, &value)?;
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.metadata.push((key, value)),
        }
        Ok(())
    }

    /// Removes a metadata entry, returning its value.
    pub fn remove_metadata(&mut self, key: &str) -> Option<MetadataValue> {
        let i = self.metadata.iter().position(|(k, _)| k == key)?;
        Some(self.metadata.remove(i).1)
    }

    /// Appends a tensor. `dims` are in ggml order (`dims[0]` = row length), 1 to 4 of them, all
    /// nonzero; `data` is the tensor's raw bytes in `ggml_type`'s layout, whose length must
    /// equal [`GgmlType::tensor_bytes`] for the shape.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ggml_type: GgmlType,
        data: impl Into<Vec<u8>>,
    ) -> Result<(), GgufError> {
        let name = name.into();
        if self.tensor_names.contains(&name) {
            return Err(invalid(format!("duplicate tensor name '{name}'")));
        }
        if dims.is_empty() || dims.len() > MAX_TENSOR_DIMS as usize {
            return Err(invalid(format!(
                "tensor '{name}' has {} dimensions; GGUF tensors have 1 to {MAX_TENSOR_DIMS}",
                dims.len()
            )));
        }
        if dims.contains(&0) {
            return Err(invalid(format!(
                "tensor '{name}' has shape {dims:?} with a dimension equal to 0"
            )));
        }
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= MAX_TENSOR_ELEMENTS)
            .ok_or_else(|| {
                invalid(format!(
                    "tensor '{name}' has shape {dims:?}, more than {MAX_TENSOR_ELEMENTS} elements"
                ))
            })?;
        let ne0 = dims.first().copied().unwrap_or(0);
        let expected = ggml_type.tensor_bytes(ne0, n_elements).ok_or_else(|| {
            invalid(format!(
                "tensor '{name}' of type {ggml_type} has shape {dims:?}, but {ggml_type} needs \
                 {}",
                ggml_type.shape_rule()
            ))
        })?;
        let data = data.into();
        if data.len() as u64 != expected {
            return Err(invalid(format!(
                "tensor '{name}': {} bytes given, but a {ggml_type} tensor of shape {dims:?} \
                 takes {expected} bytes",
                data.len()
            )));
        }
        self.tensor_names.insert(name.clone());
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            ggml_type,
            data,
        });
        Ok(())
    }

    /// The tensor entries the file will contain, with their data-section offsets.
    pub fn tensor_infos(&self) -> Vec<TensorInfo> {
        let alignment = self.alignment();
        let mut offset = 0u64;
        self.tensors
            .iter()
            .map(|t| {
                let n_bytes = t.data.len() as u64;
                let info = TensorInfo {
                    name: t.name.clone(),
                    dims: t.dims.clone(),
                    ggml_type: t.ggml_type,
                    offset,
                    n_bytes,
                };
                offset = offset.saturating_add(n_bytes.next_multiple_of(alignment));
                info
            })
            .collect()
    }

    /// Writes the file to `out`; returns the number of bytes written.
    ///
    /// `out` receives a few large writes (the header, then each tensor's data), so it needs
    /// no buffering of its own.
    pub fn write<W: Write>(&self, out: W) -> Result<u64, GgufError> {
        self.write_labelled(out, "<stream>")
    }

    /// The whole file in memory.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let mut out = Vec::new();
        self.write(&mut out)?;
        Ok(out)
    }

    /// Writes the file to `path` atomically: into a temporary file in the same folder, which
    /// is flushed to disk (fsync) and then renamed over `path`. A crash or error never leaves a
    /// half-written file under `path`; the temporary file is removed on error.
    pub fn write_to_path(&self, path: &Path) -> Result<(), GgufError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let label = path.display().to_string();
        let io = |source| GgufError::Io {
            file: label.clone(),
            source,
        };
        let file_name = path
            .file_name()
            .ok_or_else(|| invalid(format!("'{label}' does not name a file")))?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(file_name);
        tmp_name.push(format!(
            ".tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = dir.join(tmp_name);

        let file = OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(io)?;
        let result = (|| {
            let mut buffered = BufWriter::new(file);
            self.write_labelled(&mut buffered, &label)?;
            let file = buffered.into_inner().map_err(|e| io(e.into_error()))?;
            file.sync_all().map_err(io)?;
            drop(file);
            fs::rename(&tmp, path).map_err(io)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
            return result;
        }
        sync_dir(dir);
        Ok(())
    }

    fn write_labelled<W: Write>(&self, mut out: W, label: &str) -> Result<u64, GgufError> {
        self.check_totals()?;
        let alignment = self.alignment();
        let infos = self.tensor_infos();
        let header = self.encode_header(&infos, alignment);

        let io = |source| GgufError::Io {
            file: label.to_string(),
            source,
        };
        let mut written = 0u64;
        let mut put = |bytes: &[u8]| -> Result<(), GgufError> {
            out.write_all(bytes).map_err(io)?;
            written += bytes.len() as u64;
            Ok(())
        };
        put(&header)?;
        put(&zeros(header.len() as u64, alignment))?;
        for t in &self.tensors {
            put(&t.data)?;
            put(&zeros(t.data.len() as u64, alignment))?;
        }
        out.flush().map_err(io)?;
        Ok(written)
    }

    /// Limits that depend on everything added: total metadata values and tensor count.
    fn check_totals(&self) -> Result<(), GgufError> {
        let values: u64 = self.metadata.iter().map(|(_, v)| count_values(v)).sum();
        if values > MAX_METADATA_VALUES {
            return Err(invalid(format!(
                "{values} metadata values (array elements included) exceed the limit of \
                 {MAX_METADATA_VALUES}"
            )));
        }
        if self.tensors.len() as u64 > MAX_TENSORS {
            return Err(invalid(format!(
                "{} tensors exceed the limit of {MAX_TENSORS}",
                self.tensors.len()
            )));
        }
        Ok(())
    }

    fn encode_header(&self, infos: &[TensorInfo], alignment: u64) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(b"GGUF");
        h.extend_from_slice(&3u32.to_le_bytes());
        h.extend_from_slice(&(infos.len() as u64).to_le_bytes());
        h.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_str(&mut h, key);
            h.extend_from_slice(&value.type_id().to_le_bytes());
            put_value(&mut h, value);
        }
        for t in infos {
            put_str(&mut h, &t.name);
            h.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                h.extend_from_slice(&d.to_le_bytes());
            }
            h.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            h.extend_from_slice(&t.offset.to_le_bytes());
        }
        debug_assert!(infos.iter().all(|t| t.offset % alignment == 0));
        h
    }
}

/// Zero bytes that pad `len` up to a multiple of `alignment`.
fn zeros(len: u64, alignment: u64) -> Vec<u8> {
    vec![0u8; (len.next_multiple_of(alignment) - len) as usize]
}

/// Flushes a directory entry change (the rename) to disk where the platform allows it.
/// Best effort: the data itself was already synced.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Checks one metadata entry against the rules the reader enforces.
fn check_entry(key: &str, value: &MetadataValue) -> Result<(), GgufError> {
    if key.len() as u64 > MAX_KEY_LEN {
        return Err(invalid(format!(
            "metadata key of {} bytes exceeds the limit of {MAX_KEY_LEN}",
            key.len()
        )));
    }
    if key == ALIGNMENT_KEY {
        match value {
            MetadataValue::U32(a) if a.is_power_of_two() => {}
            MetadataValue::U32(a) => {
                return Err(invalid(format!(
                    "{ALIGNMENT_KEY} = {a}: it must be a nonzero power of two"
                )))
            }
            other => {
                return Err(invalid(format!(
                    "{ALIGNMENT_KEY} must be a u32, not {}",
                    other.describe_type()
                )))
            }
        }
    }
    check_value(key, value, 0)
}

/// Arrays must be homogeneous and nested at most [`MAX_ARRAY_DEPTH`] levels.
fn check_value(key: &str, value: &MetadataValue, level: u32) -> Result<(), GgufError> {
    let MetadataValue::Array(items) = value else {
        return Ok(());
    };
    if level >= MAX_ARRAY_DEPTH {
        return Err(invalid(format!(
            "metadata key '{key}' has arrays nested more than {MAX_ARRAY_DEPTH} levels deep"
        )));
    }
    if let Some(first) = items.first() {
        if let Some((i, odd)) = items.iter().enumerate().find(|(_, v)| v.type_id() != first.type_id()) {
            return Err(invalid(format!(
                "metadata array '{key}' mixes element types: element 0 is {} but element {i} \
                 is {}",
                first.type_name(),
                odd.type_name()
            )));
        }
    }
    items.iter().try_for_each(|item| check_value(key, item, level + 1))
}

/// Number of values in `v`, counting itself and every array element, as the reader counts.
fn count_values(v: &MetadataValue) -> u64 {
    match v {
        MetadataValue::Array(items) => 1 + items.iter().map(count_values).sum::<u64>(),
        _ => 1,
    }
}

fn put_str(h: &mut Vec<u8>, s: &str) {
    h.extend_from_slice(&(s.len() as u64).to_le_bytes());
    h.extend_from_slice(s.as_bytes());
}

/// Encodes a value without its type tag.
fn put_value(h: &mut Vec<u8>, value: &MetadataValue) {
    match value {
        MetadataValue::U8(v) => h.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::I8(v) => h.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::U16(v) => h.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::I16(v) => h.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::U32(v) => h.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::I32(v) => h.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::U64(v) => h.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::I64(v) => h.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::F32(v) => h.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::F64(v) => h.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::Bool(v) => h.push(u8::from(*v)),
        MetadataValue::String(s) => put_str(h, s),
        MetadataValue::Array(items) => {
            // An empty array's element type is not recoverable from the in-memory value;
            // u8 is as good as any (readers see an empty array either way).
            let elem = items.first().map_or(type_id::U8, MetadataValue::type_id);
            h.extend_from_slice(&elem.to_le_bytes());
            h.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(h, item);
            }
        }
    }
}
