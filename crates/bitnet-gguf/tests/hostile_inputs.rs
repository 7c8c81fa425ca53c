//! Corrupt and hostile GGUF inputs, derived from the real fixtures or built by hand: every
//! one must give an `Err` (never a panic, hang or huge allocation) whose message names the
//! file and the problem.

mod common;

use std::sync::Arc;

use bitnet_gguf::{GgufError, GgufFile, GgufWriter, MetadataValue};
use common::{
    fixture_bytes, get_u64, metadata_entry, metadata_key_text, parse_err, parse_error, put_u32, put_u64, tensor_entry,
    Raw, FIXTURES,
};

/// Data offset of bitnet-b158-i2_s.gguf (its header ends 3 bytes before).
const B158_DATA_OFFSET: usize = 34_112;

/// A prefix of shared bytes, so that truncations need no copy.
struct Prefix(Arc<Vec<u8>>, usize);

impl AsRef<[u8]> for Prefix {
    fn as_ref(&self) -> &[u8] {
        &self.0[..self.1]
    }
}

fn parse_prefix(bytes: &Arc<Vec<u8>>, len: usize) -> Result<GgufFile, GgufError> {
    GgufFile::from_shared(Arc::new(Prefix(Arc::clone(bytes), len)), "cut.gguf")
}

/// (header end, data offset, end of the last tensor's data) of a valid file.
fn layout(bytes: &[u8]) -> (usize, usize, usize) {
    let f = GgufFile::from_bytes(bytes.to_vec(), "ok.gguf").unwrap();
    let data_end = f.tensors().iter().map(|t| f.tensor_range(t).end).max().unwrap();
    // The header ends where the tensor entries end: after the last entry's offset field.
    let last = f.tensors().last().unwrap();
    let header_end = tensor_entry(bytes, f.data_offset() as usize, &last.name) + 4 + 8 * last.dims.len() + 4 + 8;
    (header_end, f.data_offset() as usize, data_end)
}

#[test]
fn truncation_at_every_header_byte_and_sampled_data_bytes() {
    for name in FIXTURES {
        let bytes = Arc::new(fixture_bytes(name));
        let (header_end, data_offset, data_end) = layout(&bytes);
        assert!(header_end <= data_offset && data_offset < data_end);
        // Every byte of the header for one file of each writer family (gguf-py and
        // llama.cpp); for the others every byte of the parts that are not token lists (the
        // preamble, the start of the metadata, the tensor entries) and every 61st elsewhere.
        let every_byte = matches!(name, "bitnet-b158-i2_s.gguf" | "llamacpp-tq2_0.gguf");
        let cuts =
            (0..=data_offset).filter(|&len| every_byte || len < 2048 || len + 2048 > header_end || len % 61 == 0);
        for len in cuts {
            let e = parse_prefix(&bytes, len).expect_err("truncated header parsed");
            let msg = e.to_string();
            assert!(msg.starts_with("cut.gguf: "), "{msg}");
            assert!(
                ["truncated", "cannot fit", "bytes left", "past the end"]
                    .iter()
                    .any(|s| msg.contains(s)),
                "{name} cut at {len}: {msg}"
            );
            if len < header_end {
                assert!(!msg.contains("past the end"), "{name} cut at {len}: {msg}");
            }
        }
        // In the data section: an error naming a tensor until the last tensor's data is whole.
        let step = ((bytes.len() - data_offset) / 257).max(1);
        for len in (data_offset..bytes.len()).step_by(step).chain([data_end - 1]) {
            let msg = parse_prefix(&bytes, len).unwrap_err().to_string();
            assert!(
                msg.contains("extends past the end of the file") && msg.contains("tensor '"),
                "{name} cut at {len}: {msg}"
            );
        }
        // Trailing alignment padding after the last tensor is optional.
        for len in data_end..=bytes.len() {
            parse_prefix(&bytes, len).expect("whole data parsed");
        }
    }
}

#[test]
fn specific_truncation_messages() {
    assert_eq!(
        parse_err(b"GG".to_vec()),
        "bad.gguf: truncated file: magic needs 4 bytes at offset 0, but only 2 bytes remain"
    );
    assert!(parse_err(Vec::new()).contains("truncated file: magic"));
    let msg = parse_err(b"GGUF\x03\x00\x00\x00\x01\x00".to_vec());
    assert!(msg.contains("tensor count needs 8 bytes at offset 8"), "{msg}");
    // (A cut within 1120 bytes of the start is reported as too small for the 35 tensor
    // entries; this one is late in the header.)
    let bytes = fixture_bytes("bitnet-b158-i2_s.gguf");
    let at = metadata_entry(&bytes, "tokenizer.ggml.eos_token_id") + 4;
    let msg = parse_err(bytes[..at + 2].to_vec());
    assert!(
        msg.contains("the u32 value of metadata key 'tokenizer.ggml.eos_token_id' needs 4 bytes")
            && msg.contains("only 2 bytes remain"),
        "{msg}"
    );
    // Strings and arrays longer than what is left are reported with their length.
    let at = metadata_entry(&bytes, "tokenizer.chat_template") + 4;
    let len = get_u64(&bytes, at);
    let msg = parse_err(bytes[..at + 8 + 10].to_vec());
    assert!(
        msg.contains(&format!(
            "string length {len} of the string value of metadata key 'tokenizer.chat_template' \
             exceeds the 10 bytes left in the file"
        )),
        "{msg}"
    );
}

#[test]
fn empty_file_on_disk_is_a_truncation_error() {
    let path = std::env::temp_dir().join(format!("bitnet-gguf-empty-{}.gguf", std::process::id()));
    std::fs::write(&path, b"").unwrap();
    let e = GgufFile::open(&path).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(e.to_string().contains("truncated file: magic"), "{e}");
    assert!(e.to_string().contains("bitnet-gguf-empty-"), "{e}");
}

fn fixture_with(edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut bytes = fixture_bytes("bitnet-b158-i2_s.gguf");
    edit(&mut bytes);
    bytes
}

#[test]
fn bad_magic() {
    let msg = parse_err(fixture_with(|b| b[3] = b'X'));
    assert!(msg.contains("not a GGUF file") && msg.contains("47 47 55 58"), "{msg}");
    let e = parse_error(fixture_with(|b| b[..4].copy_from_slice(b"lmgg")));
    assert!(matches!(e, GgufError::BadMagic { found, .. } if &found == b"lmgg"));
    assert!(e.to_string().contains("legacy GGML"), "{e}");
    assert!(parse_err(fixture_with(|b| b[..4].copy_from_slice(b"FUGG"))).contains("byte-reversed"));
    assert!(parse_err(b"\x7fELF\x02\x01\x01\x00".to_vec()).contains("not a GGUF file"));
}

#[test]
fn bad_versions() {
    for (version, expect) in [
        (0u32, "unsupported GGUF version 0"),
        (1, "unsupported GGUF version 1 (GGUF v1 used 32-bit counts"),
        (4, "unsupported GGUF version 4 (newer than this reader)"),
        (u32::MAX, "unsupported GGUF version 4294967295"),
        (0x0300_0000, "big-endian GGUF file"),
        (0x0200_0000, "version 2 byte-swapped"),
        (0x0100_0000, "version 1 byte-swapped"),
    ] {
        let msg = parse_err(fixture_with(|b| put_u32(b, 4, version)));
        assert!(msg.contains(expect), "version {version:#x}: {msg}");
    }
    let e = parse_error(fixture_with(|b| put_u32(b, 4, 0x0300_0000)));
    assert!(matches!(e, GgufError::BigEndian { version: 3, .. }));
    // Version 2 has the same layout as 3 and is accepted.
    let f = GgufFile::from_bytes(fixture_with(|b| put_u32(b, 4, 2)), "v2.gguf").unwrap();
    assert_eq!(f.version(), 2);
    assert_eq!(f.tensors().len(), 35);
}

#[test]
fn v1_file_is_rejected_before_its_32_bit_counts_are_read() {
    let mut raw = Raw::default();
    raw.bytes(b"GGUF").u32(1).u32(0).u32(1);
    raw.u32(4).bytes(b"name").u32(8).u32(1).bytes(b"x");
    let e = parse_error(raw.build());
    assert!(matches!(e, GgufError::UnsupportedVersion { version: 1, .. }));
}

#[test]
fn huge_counts() {
    for count in [u64::MAX, 1 << 62, 1 << 40, 100_000] {
        let msg = parse_err(fixture_with(|b| put_u64(b, 8, count)));
        assert!(
            msg.contains(&format!("tensor count {count} cannot fit")),
            "{count}: {msg}"
        );
        let msg = parse_err(fixture_with(|b| put_u64(b, 16, count)));
        assert!(
            msg.contains(&format!("metadata entry count {count} cannot fit")),
            "{count}: {msg}"
        );
    }
    // Off by one: the next structure is misread, and that is reported, whatever it says.
    for (at, count) in [(8, 36), (16, 24), (16, 22)] {
        let e = parse_error(fixture_with(|b| put_u64(b, at, count)));
        assert!(e.to_string().starts_with("bad.gguf: "), "{e}");
    }
}

#[test]
fn huge_string_lengths() {
    // The first key's length.
    let msg = parse_err(fixture_with(|b| put_u64(b, 24, u64::MAX)));
    assert!(
        msg.contains("string length 18446744073709551615 of the key of metadata entry #0 exceeds"),
        "{msg}"
    );
    // A string value's length.
    let msg = parse_err(fixture_with(|b| {
        let at = metadata_entry(b, "general.name") + 4;
        put_u64(b, at, 1 << 40);
    }));
    assert!(
        msg.contains("string length 1099511627776 of the string value of metadata key 'general.name'"),
        "{msg}"
    );
    // A string inside an array.
    let msg = parse_err(fixture_with(|b| {
        let at = metadata_entry(b, "tokenizer.ggml.tokens") + 4 + 4 + 8;
        put_u64(b, at, u64::MAX - 1);
    }));
    assert!(
        msg.contains("a string element of metadata array 'tokenizer.ggml.tokens'"),
        "{msg}"
    );
    // A tensor name's length.
    let msg = parse_err(fixture_with(|b| {
        let at = tensor_entry(b, B158_DATA_OFFSET, "token_embd.weight") - "token_embd.weight".len() - 8;
        put_u64(b, at, u64::MAX);
    }));
    assert!(msg.contains("of the name of tensor #0 exceeds"), "{msg}");
}

#[test]
fn huge_array_lengths() {
    for key in [
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.scores",
        "tokenizer.ggml.token_type",
    ] {
        for count in [u64::MAX, 1 << 60, 1 << 33, 400_000] {
            let msg = parse_err(fixture_with(|b| {
                let at = metadata_entry(b, key) + 4 + 4;
                put_u64(b, at, count);
            }));
            assert!(
                msg.contains(&format!("array length {count} of metadata key '{key}' cannot fit")),
                "{key} {count}: {msg}"
            );
        }
    }
}

#[test]
fn metadata_value_count_limit() {
    // 2^24 + 1 one-byte elements fit in the file but exceed the value budget.
    let n = (1u64 << 24) + 1;
    let mut raw = Raw::header(0, 1);
    raw.str("blob").u32(9).u32(0).u64(n).zeros(n as usize);
    let msg = parse_err(raw.build());
    assert!(msg.contains("over the limit of 16777216"), "{msg}");
}

#[test]
fn bad_metadata_types_and_values() {
    let msg = parse_err(fixture_with(|b| {
        let at = metadata_entry(b, "general.name");
        put_u32(b, at, 13);
    }));
    assert!(
        msg.contains("metadata key 'general.name' has unknown value type id 13"),
        "{msg}"
    );
    let msg = parse_err(fixture_with(|b| {
        let at = metadata_entry(b, "tokenizer.ggml.scores") + 4;
        put_u32(b, at, 99);
    }));
    assert!(
        msg.contains("metadata array 'tokenizer.ggml.scores' has unknown element type id 99"),
        "{msg}"
    );
    let msg = parse_err(fixture_with(|b| {
        let at = metadata_entry(b, "tokenizer.ggml.add_bos_token") + 4;
        b[at] = 2;
    }));
    assert!(
        msg.contains("bool value of metadata key 'tokenizer.ggml.add_bos_token' is the byte 2")
            && msg.contains("must be 0 or 1"),
        "{msg}"
    );
}

#[test]
fn invalid_utf8() {
    let msg = parse_err(fixture_with(|b| {
        let at = metadata_entry(b, "general.name") + 4 + 8;
        b[at] = 0xff;
    }));
    assert!(
        msg.contains("the string value of metadata key 'general.name' is not valid UTF-8"),
        "{msg}"
    );
    let msg = parse_err(fixture_with(|b| {
        let at = metadata_key_text(b, "general.file_type");
        b[at + 3] = 0xc3; // a lone UTF-8 lead byte
    }));
    assert!(
        msg.contains("the key of metadata entry #") && msg.contains("not valid UTF-8"),
        "{msg}"
    );
    let msg = parse_err(fixture_with(|b| {
        let at = tensor_entry(b, B158_DATA_OFFSET, "output_norm.weight");
        b[at - 1] = 0x80;
    }));
    assert!(msg.contains("the name of tensor #1 is not valid UTF-8"), "{msg}");
    let msg = parse_err(fixture_with(|b| {
        let at = metadata_entry(b, "tokenizer.ggml.merges") + 4 + 4 + 8 + 8;
        b[at] = 0xfe;
    }));
    assert!(
        msg.contains("a string element of metadata array 'tokenizer.ggml.merges'"),
        "{msg}"
    );
}

#[test]
fn bad_tensor_entries() {
    const EMB: &str = "token_embd.weight";
    let edit = |f: &dyn Fn(&mut Vec<u8>, usize)| {
        parse_err(fixture_with(|b| {
            let at = tensor_entry(b, B158_DATA_OFFSET, EMB);
            f(b, at)
        }))
    };
    // n_dims
    for n in [0u32, 5, 64, u32::MAX] {
        let msg = edit(&|b, at| put_u32(b, at, n));
        assert!(
            msg.contains(&format!("tensor '{EMB}' has {n} dimensions; GGUF tensors have 1 to 4")),
            "{msg}"
        );
    }
    // dims
    let msg = edit(&|b, at| put_u64(b, at + 4, u64::MAX));
    assert!(msg.contains("more than the limit of 281474976710656"), "{msg}");
    let msg = edit(&|b, at| {
        put_u64(b, at + 4, 1 << 32);
        put_u64(b, at + 12, 1 << 32);
    });
    assert!(
        msg.contains(&format!("tensor '{EMB}' has shape [4294967296, 4294967296], more than")),
        "{msg}"
    );
    let msg = edit(&|b, at| put_u64(b, at + 12, 0));
    assert!(msg.contains("has shape [256, 0] with dimension 1 equal to 0"), "{msg}");
    let msg = edit(&|b, at| put_u64(b, at + 12, 1 << 30));
    assert!(
        msg.contains(&format!("tensor '{EMB}'")) && msg.contains("extends past the end of the file"),
        "{msg}"
    );
    // type
    let msg = edit(&|b, at| put_u32(b, at + 20, 99));
    assert_eq!(msg, format!("bad.gguf: tensor '{EMB}' has unknown ggml type id 99"));
    let e = parse_error(fixture_with(|b| {
        let at = tensor_entry(b, B158_DATA_OFFSET, "blk.0.attn_q.weight");
        put_u32(b, at + 20, 2); // Q4_0: a real ggml type, but not one we support
    }));
    assert!(matches!(&e, GgufError::UnknownType { tensor, type_id: 2, .. } if tensor == "blk.0.attn_q.weight"));
    assert_eq!(
        e.to_string(),
        "bad.gguf: tensor 'blk.0.attn_q.weight' has unknown ggml type id 2"
    );
    // F16 -> F32: the data doubles and runs into the next tensor.
    let msg = edit(&|b, at| put_u32(b, at + 20, 0));
    assert!(
        msg.contains(&format!(
            "tensors '{EMB}' (data bytes 0..1048576) and 'output_norm.weight' (from data byte 524288) overlap"
        )),
        "{msg}"
    );
    // offset
    for off in [1u64, 31, 2] {
        let msg = edit(&|b, at| put_u64(b, at + 24, off));
        assert!(
            msg.contains(&format!(
                "tensor '{EMB}' has data offset {off}, which is not a multiple of the alignment 32"
            )),
            "{msg}"
        );
    }
    for off in [u64::MAX - 31, 1 << 40, 1_143_776] {
        let msg = edit(&|b, at| put_u64(b, at + 24, off));
        assert!(
            msg.contains(&format!("tensor '{EMB}'"))
                && msg.contains("extends past the end of the file (1143776 bytes)"),
            "{msg}"
        );
    }
    // Overlap: token_embd moved onto the next tensor.
    let msg = edit(&|b, at| put_u64(b, at + 24, 524_288 - 32));
    assert!(msg.contains("overlap"), "{msg}");
}

#[test]
fn tensor_shape_must_suit_the_type() {
    let mut raw = Raw::header(1, 0);
    raw.tensor("w", &[48, 2], 8, 0).pad(32).zeros(2 * 2 * 34);
    let msg = parse_err(raw.build());
    assert!(
        msg.contains("tensor 'w' of type Q8_0 has shape [48, 2], but Q8_0 needs a row length (first dimension) that is a multiple of 32"),
        "{msg}"
    );
    let mut raw = Raw::header(1, 0);
    raw.tensor("w", &[6], 36, 0).pad(32).zeros(64);
    let msg = parse_err(raw.build());
    assert!(
        msg.contains("type I2_S has shape [6], but I2_S needs an element count that is a multiple of 4"),
        "{msg}"
    );
}

#[test]
fn alignment_rules() {
    for (align, ok) in [
        (0u32, false),
        (3, false),
        (48, false),
        (1, true),
        (64, true),
        (1 << 20, true),
    ] {
        let mut raw = Raw::header(1, 1);
        raw.kv_u32("general.alignment", align).tensor("t", &[8], 0, 0);
        let a = if align.is_power_of_two() { align as usize } else { 32 };
        raw.pad(a).zeros(32);
        let result = GgufFile::from_bytes(raw.build(), "bad.gguf");
        if ok {
            let f = result.unwrap();
            assert_eq!(f.alignment(), align as u64);
            assert_eq!(f.data_offset() % align as u64, 0);
        } else {
            let msg = result.unwrap_err().to_string();
            assert!(
                msg.contains(&format!(
                    "general.alignment is {align}; it must be a nonzero power of two"
                )),
                "{msg}"
            );
        }
    }
    let mut raw = Raw::header(0, 1);
    raw.kv_str("general.alignment", "32");
    assert!(parse_err(raw.build()).contains("general.alignment has type string; it must be u32"));
    // A 64-aligned file must have 64-aligned offsets.
    let mut raw = Raw::header(2, 1);
    raw.kv_u32("general.alignment", 64)
        .tensor("a", &[8], 0, 0)
        .tensor("b", &[8], 0, 32)
        .pad(64)
        .zeros(128);
    assert!(
        parse_err(raw.build()).contains("tensor 'b' has data offset 32, which is not a multiple of the alignment 64")
    );
}

/// An array nested `depth` levels deep (1 = a plain array of u32).
fn nested(depth: usize) -> Vec<u8> {
    let mut raw = Raw::header(0, 1);
    raw.str("deep").u32(9);
    for _ in 1..depth {
        raw.u32(9).u64(1);
    }
    raw.u32(4).u64(1).u32(7);
    raw.build()
}

#[test]
fn nested_arrays() {
    let f = GgufFile::from_bytes(nested(8), "ok.gguf").unwrap();
    let mut v = f.get("deep").unwrap();
    for _ in 0..8 {
        v = &v.as_array().unwrap()[0];
    }
    assert_eq!(v, &MetadataValue::U32(7));
    for depth in [9, 100, 100_000] {
        let msg = parse_err(nested(depth));
        assert!(
            msg.contains("metadata key 'deep' has arrays nested more than 8 levels deep"),
            "{depth}: {msg}"
        );
    }
}

#[test]
fn duplicates_and_long_keys() {
    let mut raw = Raw::header(0, 2);
    raw.kv_u32("a.b", 1).kv_u32("a.b", 2);
    assert!(parse_err(raw.build()).contains("duplicate metadata key 'a.b'"));

    let mut raw = Raw::header(2, 0);
    raw.tensor("w", &[8], 0, 0).tensor("w", &[8], 0, 32).pad(32).zeros(64);
    assert!(parse_err(raw.build()).contains("duplicate tensor name 'w'"));

    let mut raw = Raw::header(0, 1);
    raw.kv_u32(&"k".repeat(70_000), 1);
    assert!(parse_err(raw.build()).contains("has a key of 70000 bytes; the limit is 65535"));
}

#[test]
fn overlapping_tensors_are_rejected() {
    let mut raw = Raw::header(2, 0);
    raw.tensor("a", &[16], 0, 0).tensor("b", &[8], 0, 32).pad(32).zeros(64);
    let msg = parse_err(raw.build());
    assert!(
        msg.contains("tensors 'a' (data bytes 0..64) and 'b' (from data byte 32) overlap"),
        "{msg}"
    );
}

/// Corruptions crafted by rewriting a real header with the writer: the header keeps its
/// structure, only one value changes.
#[test]
fn writer_rebuilt_corruptions() {
    let f = GgufFile::from_bytes(fixture_bytes("llamacpp-tq2_0.gguf"), "src").unwrap();
    let rebuild = |edit: &dyn Fn(&mut GgufWriter)| {
        let mut w = GgufWriter::new();
        for (k, v) in f.metadata() {
            w.add_metadata(k.clone(), v.clone()).unwrap();
        }
        edit(&mut w);
        for t in f.tensors() {
            w.add_tensor(t.name.clone(), &t.dims, t.ggml_type, f.tensor_data(t))
                .unwrap();
        }
        w.to_bytes().unwrap()
    };
    // Sanity: the rebuild parses.
    GgufFile::from_bytes(rebuild(&|_| {}), "ok").unwrap();

    // Retype an i32 array to bool: its payload now decodes as 1-byte bools, the sixth of
    // which is made invalid.
    let bytes = rebuild(&|w| {
        w.set_metadata("tokenizer.ggml.token_type", vec![0i32; 1024]).unwrap();
    });
    let mut bytes = bytes;
    let at = metadata_entry(&bytes, "tokenizer.ggml.token_type") + 4;
    put_u32(&mut bytes, at, 7);
    put_u32(&mut bytes, at + 12, 0x0100_0000); // first i32 element bytes: 00 00 00 01
    bytes[at + 12 + 5] = 9;
    let msg = parse_err(bytes);
    assert!(
        msg.contains("bool element of metadata array 'tokenizer.ggml.token_type' is the byte 9"),
        "{msg}"
    );

    // A bigger alignment added to a header whose offsets were laid out for it parses; the
    // same header with the alignment key changed afterwards does not.
    let mut bytes = rebuild(&|w| w.set_alignment(64).unwrap());
    let g = GgufFile::from_bytes(bytes.clone(), "ok").unwrap();
    assert_eq!(g.alignment(), 64);
    let at = metadata_entry(&bytes, "general.alignment") + 4;
    put_u32(&mut bytes, at, 96);
    assert!(parse_err(bytes.clone()).contains("general.alignment is 96"));
    put_u32(&mut bytes, at, 4096);
    let msg = parse_err(bytes);
    assert!(
        msg.contains("not a multiple of the alignment 4096") || msg.contains("past the end"),
        "{msg}"
    );

    // Offsets: the data offset of the second tensor pushed one alignment unit further.
    let mut bytes = rebuild(&|_| {});
    let second = &f.tensors()[1];
    let at = tensor_entry(&bytes, f.data_offset() as usize, &second.name) + 4 + 8 * second.dims.len() + 4;
    let off = get_u64(&bytes, at);
    put_u64(&mut bytes, at, off + 32);
    let msg = parse_err(bytes);
    assert!(msg.contains("overlap"), "{msg}");
}
