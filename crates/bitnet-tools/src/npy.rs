//! NumPy `.npy` files (version 1.0, little-endian float32, C order): how logits are exchanged with the
//! Python reference.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Encodes a float32 array of `shape` as `.npy` bytes.
pub fn encode_f32(shape: &[usize], data: &[f32]) -> Result<Vec<u8>> {
    let n: usize = shape.iter().product();
    if n != data.len() {
        bail!("npy: shape {shape:?} holds {n} values, got {}", data.len());
    }
    let dims = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // Pad with spaces so that magic(6) + version(2) + len(2) + header + '\n' is a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// Writes a float32 `.npy` file.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let bytes = encode_f32(shape, data)?;
    // Atomic (temporary file, fsync, rename): a crash never leaves a half-written array.
    crate::safe_write::write_atomically(path, |w| {
        w.write_all(&bytes)
            .with_context(|| format!("writing {}", path.display()))
    })
}

/// Reads a little-endian float32 or float64 `.npy` file (C order) as f32.
pub fn read_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    decode_f32(&b).with_context(|| format!("{}", path.display()))
}

/// Decodes `.npy` bytes (see [`read_f32`]).
pub fn decode_f32(b: &[u8]) -> Result<(Vec<usize>, Vec<f32>)> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        bail!("not a .npy file (bad magic)");
    }
    let (hlen, hstart) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 => {
            if b.len() < 12 {
                bail!("truncated .npy header");
            }
            (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
        }
        v => bail!(".npy version {v} is not supported"),
    };
    let header = b.get(hstart..hstart + hlen).context("truncated .npy header")?;
    let header = std::str::from_utf8(header).context(".npy header is not UTF-8")?;
    let field = |key: &str| -> Result<&str> {
        let i = header
            .find(key)
            .with_context(|| format!(".npy header has no '{key}'"))?;
        Ok(&header[i + key.len()..])
    };
    let descr = field("'descr':")?.trim_start();
    let width = if descr.starts_with("'<f4'") {
        4
    } else if descr.starts_with("'<f8'") {
        8
    } else {
        bail!(
            ".npy dtype {} is not supported (only <f4 and <f8)",
            descr.split(',').next().unwrap_or("")
        );
    };
    if field("'fortran_order':")?.trim_start().starts_with("True") {
        bail!("Fortran-order .npy arrays are not supported");
    }
    let shape_txt = field("'shape':")?.trim_start();
    let inner = shape_txt.strip_prefix('(').context(".npy shape is not a tuple")?;
    let end = inner.find(')').context(".npy shape is not closed")?;
    let shape: Vec<usize> = inner[..end]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().with_context(|| format!("bad .npy dimension '{s}'")))
        .collect::<Result<_>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .context(".npy shape overflows")?;
    let data = &b[hstart + hlen..];
    if n.checked_mul(width).is_none_or(|need| data.len() != need) {
        bail!(
            ".npy data has {} bytes, shape {shape:?} needs {}",
            data.len(),
            n.saturating_mul(width)
        );
    }
    let vals = if width == 4 {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        data.chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect()
    };
    Ok((shape, vals))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let d: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect();
        let b = encode_f32(&[2, 3], &d).unwrap();
        assert_eq!((10 + u16::from_le_bytes([b[8], b[9]]) as usize) % 64, 0);
        let (s, v) = decode_f32(&b).unwrap();
        assert_eq!(s, vec![2, 3]);
        assert_eq!(v, d);
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode_f32(b"hello").is_err());
        let mut b = encode_f32(&[4], &[1.0; 4]).unwrap();
        b.truncate(b.len() - 1);
        assert!(decode_f32(&b).is_err());
    }

    /// Malformed headers are errors, never panics: shapes that are not tuples (`)` first used to
    /// slice out of order), every byte of the header changed, and every truncation.
    #[test]
    fn malformed_headers_never_panic() {
        let good = encode_f32(&[2, 3], &[0.5; 6]).unwrap();
        let text = String::from_utf8_lossy(&good[10..]).into_owned();
        for shape in [
            "'shape': )",
            "'shape': ",
            "'shape': (",
            "'shape': é)",
            "'shape': (-1,)",
            "'shape': (99999999999999999999,)",
        ] {
            let h = text.replacen("'shape': (2, 3)", shape, 1);
            let mut b = good[..10].to_vec();
            b.extend_from_slice(h.as_bytes());
            assert!(decode_f32(&b).is_err(), "{shape}");
        }
        for i in 0..good.len() {
            for v in [0u8, b')', b'(', 0xff, b'9'] {
                let mut b = good.clone();
                b[i] = v;
                let _ = decode_f32(&b);
            }
            let _ = decode_f32(&good[..i]);
        }
    }
}
