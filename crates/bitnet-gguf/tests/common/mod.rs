//! Helpers shared by the integration tests: fixture paths, a raw GGUF byte builder for
//! deliberately invalid headers, and locators for fields inside real fixture headers.
#![allow(dead_code)]

use std::path::PathBuf;

use bitnet_gguf::{GgufError, GgufFile};

/// The six GGUF fixtures of the tiny-a model, in the repository (not in ../shared).
pub const FIXTURES: [&str; 6] = [
    "bitnet-b158-i2_s.gguf",
    "bitnetcpp-i2_s.gguf",
    "llamacpp-f16.gguf",
    "llamacpp-tq1_0.gguf",
    "llamacpp-tq2_0.gguf",
    "llamacpp-tq2_0-f16emb.gguf",
];

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny-a/gguf")
        .join(name)
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()))
}

pub fn open_fixture(name: &str) -> GgufFile {
    GgufFile::open(&fixture_path(name)).unwrap_or_else(|e| panic!("opening {name}: {e}"))
}

/// Parses `bytes`, expecting an error; returns its message.
pub fn parse_err(bytes: Vec<u8>) -> String {
    match GgufFile::from_bytes(bytes, "bad.gguf") {
        Ok(f) => panic!("expected an error, parsed {f:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("bad.gguf"), "message does not name the file: {msg}");
            msg
        }
    }
}

/// Parses `bytes`, expecting an error; returns it.
pub fn parse_error(bytes: Vec<u8>) -> GgufError {
    match GgufFile::from_bytes(bytes, "bad.gguf") {
        Ok(f) => panic!("expected an error, parsed {f:?}"),
        Err(e) => e,
    }
}

/// Little-endian byte builder for hand-made (usually invalid) GGUF files.
#[derive(Default, Clone)]
pub struct Raw {
    pub buf: Vec<u8>,
}

impl Raw {
    /// Magic, version 3 and the two counts.
    pub fn header(n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw::default();
        r.bytes(b"GGUF").u32(3).u64(n_tensors).u64(n_kv);
        r
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Raw {
        self.buf.extend_from_slice(b);
        self
    }
    pub fn u8(&mut self, v: u8) -> &mut Raw {
        self.bytes(&[v])
    }
    pub fn u32(&mut self, v: u32) -> &mut Raw {
        self.bytes(&v.to_le_bytes())
    }
    pub fn u64(&mut self, v: u64) -> &mut Raw {
        self.bytes(&v.to_le_bytes())
    }
    pub fn str(&mut self, s: &str) -> &mut Raw {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    /// A metadata entry `key` of type u32.
    pub fn kv_u32(&mut self, key: &str, v: u32) -> &mut Raw {
        self.str(key).u32(4).u32(v)
    }
    /// A metadata entry `key` of type string.
    pub fn kv_str(&mut self, key: &str, v: &str) -> &mut Raw {
        self.str(key).u32(8).str(v)
    }
    /// A tensor entry.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Raw {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Zero padding up to a multiple of `align`.
    pub fn pad(&mut self, align: usize) -> &mut Raw {
        while !self.buf.len().is_multiple_of(align) {
            self.buf.push(0);
        }
        self
    }
    /// `n` zero bytes (tensor data).
    pub fn zeros(&mut self, n: usize) -> &mut Raw {
        self.buf.resize(self.buf.len() + n, 0);
        self
    }
    pub fn build(&self) -> Vec<u8> {
        self.buf.clone()
    }
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

fn find_first(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn encoded_str(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

/// Offset of the `n_dims` field of tensor `name`'s entry in a fixture header (the entry's
/// fields follow: dims, type, offset).
pub fn tensor_entry(bytes: &[u8], header_end: usize, name: &str) -> usize {
    let needle = encoded_str(name);
    let at = find_last(&bytes[..header_end], &needle).expect("tensor entry not found");
    at + needle.len()
}

/// Offset of the value-type field of metadata key `key` in a fixture header (the value
/// follows it).
pub fn metadata_entry(bytes: &[u8], key: &str) -> usize {
    let needle = encoded_str(key);
    let at = find_first(bytes, &needle).expect("metadata key not found");
    at + needle.len()
}

/// Offset of the first byte of key `key`'s text (its length field is the 8 bytes before).
pub fn metadata_key_text(bytes: &[u8], key: &str) -> usize {
    metadata_entry(bytes, key) - key.len()
}

pub fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

pub fn get_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// Decodes an IEEE half (for checking scales stored as f16).
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((bits >> 10) & 0x1f);
    let mant = f32::from(bits & 0x3ff);
    match exp {
        0 => sign * mant * 2f32.powi(-24),
        31 => {
            if mant == 0.0 {
                sign * f32::INFINITY
            } else {
                f32::NAN
            }
        }
        _ => sign * (1.0 + mant / 1024.0) * 2f32.powi(exp - 15),
    }
}
