//! The packed Hugging Face release of BitNet b1.58 (`uint8` weights of shape `(rows / 4, cols)`):
//! unpacked row `i * R + r` (`R = rows / 4`, `i < 4`) is bits `2i..2i+1` of packed row `r`, and
//! the value is `code - 1`.

use crate::error::KernelError;

/// Unpacks into `codes` (`rows * cols` values, row-major, -1/0/1).
///
/// Errors when `rows % 4 != 0`, when the buffers are too small, or on code 3 (which the reference
/// would turn into a weight of 2: no ternary model holds it, so it means the bytes are not such a
/// tensor).
pub fn unpack(packed: &[u8], rows: usize, cols: usize, codes: &mut [i8]) -> Result<(), KernelError> {
    if !rows.is_multiple_of(4) {
        return Err(KernelError::Shape(format!(
            "packed ternary weights need rows % 4 == 0, got {rows}"
        )));
    }
    let r4 = rows / 4;
    let needed = r4 * cols;
    if packed.len() < needed {
        return Err(KernelError::DataTooShort {
            format: "packed ternary",
            needed,
            got: packed.len(),
        });
    }
    if codes.len() < rows * cols {
        return Err(KernelError::Shape(format!(
            "output holds {} values, need {}",
            codes.len(),
            rows * cols
        )));
    }
    for i in 0..4 {
        let shift = 2 * i;
        let out = &mut codes[i * r4 * cols..(i + 1) * r4 * cols];
        for (o, &b) in out.iter_mut().zip(&packed[..needed]) {
            let code = (b >> shift) & 3;
            if code == 3 {
                return Err(KernelError::InvalidData(format!(
                    "code 3 in packed ternary weights (byte {b:#04x})"
                )));
            }
            *o = code as i8 - 1;
        }
    }
    Ok(())
}

/// Packs -1/0/1 values into the release layout (the inverse of [`unpack`]; for tests and writers).
pub fn pack(codes: &[i8], rows: usize, cols: usize) -> Result<Vec<u8>, KernelError> {
    if !rows.is_multiple_of(4) || codes.len() != rows * cols {
        return Err(KernelError::Shape(format!(
            "cannot pack {} values as {rows} x {cols} (rows % 4 == 0)",
            codes.len()
        )));
    }
    let r4 = rows / 4;
    let mut out = vec![0u8; r4 * cols];
    for i in 0..4 {
        for (o, &v) in out.iter_mut().zip(&codes[i * r4 * cols..(i + 1) * r4 * cols]) {
            *o |= crate::ternary::i2s::code_of(v)? << (2 * i);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        // rows = 8 (R = 2), cols = 3. Packed row 1, col 2 = 0b10_00_01_10:
        // i=0 -> row 1: code 2 (+1); i=1 -> row 3: code 1 (0); i=2 -> row 5: code 0 (-1); i=3 -> row 7: +1.
        let mut packed = vec![0b0101_0101u8; 6];
        packed[3 + 2] = 0b10_00_01_10;
        let mut codes = vec![9i8; 24];
        unpack(&packed, 8, 3, &mut codes).unwrap();
        assert_eq!(codes[3 + 2], 1);
        assert_eq!(codes[3 * 3 + 2], 0);
        assert_eq!(codes[5 * 3 + 2], -1);
        assert_eq!(codes[7 * 3 + 2], 1);
        assert_eq!(codes.iter().filter(|&&c| c != 0).count(), 3);
        assert_eq!(pack(&codes, 8, 3).unwrap(), packed);
    }

    #[test]
    fn errors() {
        let mut codes = vec![0i8; 12];
        assert!(unpack(&[0; 3], 3, 4, &mut codes).is_err());
        assert!(unpack(&[0; 3], 4, 4, &mut codes).is_err());
        assert!(unpack(&[0b11; 4], 4, 4, &mut [0i8; 16]).is_err());
    }
}
