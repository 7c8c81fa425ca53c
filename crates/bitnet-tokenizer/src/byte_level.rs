//! The GPT-2 byte <-> unicode table used by byte-level BPE vocabularies.
//!
//! Byte-level BPE vocabularies (GPT-2, Llama-3) do not store raw bytes: every byte is shown as a
//! printable character (`' '` becomes `'Ġ'`, `'\n'` becomes `'Ċ'`, ...). To decode a token (and to
//! stream output without splitting a UTF-8 character) we need the raw bytes back, so this module
//! holds the inverse mapping. It is computed at compile time from the rule of the original GPT-2
//! encoder: printable Latin-1 bytes map to themselves, the other 68 bytes map, in increasing order,
//! to U+0100, U+0101, ...

/// True for the bytes that byte-level BPE shows as the character with the same code point.
const fn maps_to_itself(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// Number of bytes that do not map to themselves (they get U+0100 + rank).
const N_SHIFTED: usize = 68;

/// The bytes that do not map to themselves, in increasing order: index `n` is shown as U+0100 + n.
const SHIFTED_BYTES: [u8; N_SHIFTED] = {
    let mut out = [0u8; N_SHIFTED];
    let mut n = 0;
    let mut b = 0usize;
    while b < 256 {
        if !maps_to_itself(b as u8) {
            out[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    out
};

/// The raw byte a byte-level character stands for, or `None` if `c` is not one of the 256
/// byte-level characters.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let code = c as u32;
    if code < 256 && maps_to_itself(code as u8) {
        return Some(code as u8);
    }
    let rank = code.checked_sub(0x100)? as usize;
    SHIFTED_BYTES.get(rank).copied()
}

/// The byte-level character that stands for byte `b`.
pub(crate) fn byte_to_char(b: u8) -> char {
    if maps_to_itself(b) {
        return char::from(b);
    }
    // The rank is < 68, so the code point is in U+0100..U+0144: always a valid char.
    let rank = SHIFTED_BYTES.iter().position(|&x| x == b).unwrap_or(0) as u32;
    char::from_u32(0x100 + rank).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// Appends the raw bytes of one vocabulary piece to `out`, the way Hugging Face's `ByteLevel`
/// decoder does: if every character of the piece is a byte-level character, the bytes they stand
/// for; otherwise (added tokens stored as plain text, e.g. `日本` or a special token with such
/// characters) the piece's own UTF-8 bytes.
pub(crate) fn piece_bytes(piece: &str, out: &mut Vec<u8>) {
    let start = out.len();
    for c in piece.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.truncate(start);
                out.extend_from_slice(piece.as_bytes());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_a_bijection_onto_256_chars() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = byte_to_char(b);
            assert!(seen.insert(c), "duplicate char for byte {b}");
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'\t'), 'ĉ');
        assert_eq!(char_to_byte('\u{144}'), None);
        assert_eq!(char_to_byte(' '), None);
        assert_eq!(char_to_byte('日'), None);
    }

    #[test]
    fn pieces_fall_back_to_their_text() {
        let mut out = Vec::new();
        piece_bytes("Ġworld", &mut out);
        assert_eq!(out, b" world");
        out.clear();
        piece_bytes("æĹ", &mut out);
        assert_eq!(out, [0xE6, 0x97]);
        out.clear();
        piece_bytes("<|eot_id|>", &mut out);
        assert_eq!(out, b"<|eot_id|>");
        out.clear();
        piece_bytes("日本", &mut out);
        assert_eq!(out, "日本".as_bytes());
    }
}
