//! [`GgufFile`]: an opened, validated GGUF file.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

use crate::parse::parse_header;
use crate::{GgufError, MetadataValue, TensorInfo};

/// The bytes of a whole GGUF file, shared: a memory map for [`GgufFile::open`], a `Vec<u8>`
/// for [`GgufFile::from_bytes`], or anything else given to [`GgufFile::from_shared`].
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A GGUF file whose header has been parsed and validated.
///
/// Opening reads only the header: the tensor data stays in the memory map (or buffer) and is
/// handed out as slices by [`tensor_data`](GgufFile::tensor_data), or as absolute ranges into
/// [`source`](GgufFile::source) for consumers that want to keep their own reference to the
/// bytes. Every range was checked at open, so those accessors need no error path.
#[derive(Clone)]
pub struct GgufFile {
    name: String,
    source: SharedBytes,
    /// The same bytes as `source` when they are a memory map (for [`GgufFile::release`]).
    map: Option<Arc<Mmap>>,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, MetadataValue)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl GgufFile {
    /// Memory-maps the file at `path` and parses its header.
    ///
    /// The tensor data is neither read nor copied, so opening a multi-gigabyte model costs a
    /// few page faults for the header. Errors name `path`.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let name = path.display().to_string();
        let io = |source| GgufError::Io {
            file: name.clone(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            // Mapping an empty file fails on some platforms; parsing then reports truncation.
            return Self::from_shared(Arc::new(Vec::<u8>::new()), &name);
        }
        let map = {
            // SAFETY: `Mmap::map` is unsafe because the mapped bytes could change, or pages
            // could vanish (SIGBUS), if another process modified or truncated the file while it
            // is mapped. Model files are written once and then only read; like every mmap-based
            // model loader we require that they are not modified while open. The mapping is
            // read-only and is kept alive by the `Arc` as long as any slice of it is in use.
            let map = unsafe { Mmap::map(&file) }.map_err(io)?;
            Arc::new(map)
        };
        let source: SharedBytes = map.clone();
        let mut g = Self::from_shared(source, &name)?;
        g.map = Some(map);
        Ok(g)
    }

    /// Lets the OS drop this process's copies of the pages inside `range` (absolute offsets into
    /// the file) when the file is memory-mapped: for tensors a loader has converted and will not
    /// read again, so that the process does not hold both copies. The bytes stay readable and
    /// unchanged (a later read maps them in again from the page cache or the file). Only whole
    /// pages inside `range` are released; a no-op for in-memory files, off Unix, or on error.
    pub fn release(&self, range: Range<usize>) {
        #[cfg(unix)]
        if let Some(map) = &self.map {
            const PAGE: usize = 4096;
            // Clamped to the map first, so the page rounding below cannot overflow.
            let base = map.as_ptr() as usize;
            let start = (base + range.start.min(map.len())).next_multiple_of(PAGE);
            let end = (base + range.end.min(map.len())) / PAGE * PAGE;
            if end > start {
                let offset = start - base;
                // SAFETY: the mapping is private and read-only, and nothing ever writes to it, so
                // after MADV_DONTNEED a later access reads the same file bytes again: every slice
                // handed out keeps seeing the same contents (the file must not change while
                // mapped, as required at open). The range lies inside the map.
                let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, end - start) };
            }
        }
        #[cfg(not(unix))]
        let _ = range;
    }

    /// Parses a GGUF file held in memory. `name` is used in error messages.
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<GgufFile, GgufError> {
        Self::from_shared(Arc::new(bytes), name)
    }

    /// Parses a GGUF file from already-shared bytes. `source` must return the same bytes on
    /// every `as_ref()` call. `name` is used in error messages.
    pub fn from_shared(source: SharedBytes, name: &str) -> Result<GgufFile, GgufError> {
        let header = parse_header((*source).as_ref(), name)?;
        Ok(GgufFile {
            name: name.to_string(),
            source,
            map: None,
            version: header.version,
            alignment: header.alignment,
            data_offset: header.data_offset,
            metadata: header.metadata,
            key_index: header.key_index,
            tensors: header.tensors,
            tensor_index: header.tensor_index,
        })
    }

    /// The name given at open (the path for [`open`](GgufFile::open)).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// GGUF version: 2 or 3.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Data alignment: `general.alignment`, or 32 when absent.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// File offset of the tensor data section (the header end rounded up to the alignment).
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// All metadata entries, in file order.
    pub fn metadata(&self) -> &[(String, MetadataValue)] {
        &self.metadata
    }

    /// The metadata value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        let &i = self.key_index.get(key)?;
        self.metadata.get(i).map(|(_, v)| v)
    }

    /// All tensor entries, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor entry named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        let &i = self.tensor_index.get(name)?;
        self.tensors.get(i)
    }

    /// The whole file's bytes (the memory map for [`open`](GgufFile::open)), for consumers
    /// that keep tensor data beyond the lifetime of this `GgufFile`.
    pub fn source(&self) -> Arc<dyn AsRef<[u8]> + Send + Sync> {
        Arc::clone(&self.source)
    }

    /// The absolute byte range of `t`'s data within [`source`](GgufFile::source).
    ///
    /// `t` must be one of this file's [`tensors`](GgufFile::tensors) (its range was validated
    /// at open); [`tensor_data`](GgufFile::tensor_data) panics for a range outside the file.
    pub fn tensor_range(&self, t: &TensorInfo) -> Range<usize> {
        let start = self.data_offset.saturating_add(t.offset);
        let end = start.saturating_add(t.n_bytes);
        to_usize(start)..to_usize(end)
    }

    /// The data of tensor `t`.
    ///
    /// # Panics
    ///
    /// If `t` is not a tensor of this file and its range lies outside the file: that is a bug
    /// in the caller, never a property of the file (whose ranges were checked at open).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let range = self.tensor_range(t);
        match self.bytes().get(range.clone()) {
            Some(data) => data,
            None => panic!(
                "tensor_data: tensor '{}' (bytes {range:?}) is not inside GGUF file '{}' \
                 ({} bytes); was it taken from another file?",
                t.name,
                self.name,
                self.bytes().len()
            ),
        }
    }

    /// The data of the tensor named `name`, or [`GgufError::MissingTensor`].
    pub fn tensor_data_by_name(&self, name: &str) -> Result<&[u8], GgufError> {
        match self.tensor(name) {
            Some(t) => Ok(self.tensor_data(t)),
            None => Err(GgufError::MissingTensor {
                file: self.name.clone(),
                name: name.to_string(),
            }),
        }
    }

    fn bytes(&self) -> &[u8] {
        (*self.source).as_ref()
    }
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .field("metadata_entries", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("file_len", &self.bytes().len())
            .finish()
    }
}
