//! Property tests: random corruptions of valid headers never make the reader panic, and
//! whatever it accepts is internally consistent.

mod common;

use std::sync::OnceLock;

use bitnet_gguf::{GgmlType, GgufFile, GgufWriter, MetadataValue};
use proptest::prelude::*;

/// A small valid file using every metadata type, nested arrays and several tensor types.
fn small_file() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", "bitnet-b1.58").unwrap();
        w.add_metadata("u8", 1u8).unwrap();
        w.add_metadata("i8", -1i8).unwrap();
        w.add_metadata("u16", 2u16).unwrap();
        w.add_metadata("i16", -2i16).unwrap();
        w.add_metadata("u32", 3u32).unwrap();
        w.add_metadata("i32", -3i32).unwrap();
        w.add_metadata("u64", 4u64).unwrap();
        w.add_metadata("i64", -4i64).unwrap();
        w.add_metadata("f32", 0.5f32).unwrap();
        w.add_metadata("f64", 0.25f64).unwrap();
        w.add_metadata("bool", true).unwrap();
        w.add_metadata("tokens", vec!["a", "bc", "déf"]).unwrap();
        w.add_metadata("scores", vec![0.0f32, -1.0, 2.0]).unwrap();
        w.add_metadata("nested", vec![vec![1u32, 2], vec![3]]).unwrap();
        w.add_metadata("empty", Vec::<u8>::new()).unwrap();
        w.add_tensor("a", &[4, 2], GgmlType::F32, vec![1u8; 32]).unwrap();
        w.add_tensor("b", &[256], GgmlType::TQ2_0, vec![2u8; 66]).unwrap();
        w.add_tensor("c", &[128, 2], GgmlType::I2_S, vec![3u8; 96]).unwrap();
        w.add_tensor("d", &[3], GgmlType::F16, vec![4u8; 6]).unwrap();
        w.to_bytes().unwrap()
    })
}

fn fixture_header() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| common::fixture_bytes("bitnet-b158-i2_s.gguf"))
}

/// Parses, and if the file is accepted, uses every accessor: none may panic, and the tensor
/// data must have the advertised sizes.
fn check(bytes: Vec<u8>) {
    let len = bytes.len();
    let Ok(f) = GgufFile::from_bytes(bytes, "fuzz.gguf") else {
        return;
    };
    assert!(f.alignment().is_power_of_two());
    assert!(f.data_offset() <= len as u64 || f.tensors().is_empty());
    for t in f.tensors() {
        assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes);
        assert_eq!(t.ggml_type.tensor_bytes(t.dims[0], t.n_elements()), Some(t.n_bytes));
        assert_eq!(t.offset % f.alignment(), 0);
    }
    for (key, value) in f.metadata() {
        let _ = (f.get_str(key), f.get_u64(key), f.get_u32(key), f.get_i64(key));
        let _ = (f.get_f32(key), f.get_bool(key), f.get_str_array(key));
        let _ = (f.get_i32_array(key), f.get_f32_array(key));
        let _ = value.to_string();
    }
}

/// Overwrites the bytes from `at` with `value`, as far as they fit.
fn splice(bytes: &mut [u8], at: usize, value: &[u8]) {
    for (i, b) in value.iter().enumerate() {
        if let Some(slot) = bytes.get_mut(at + i) {
            *slot = *b;
        }
    }
}

fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(2),
        Just(3),
        Just(4),
        Just(5),
        Just(8),
        Just(9),
        Just(31),
        Just(32),
        Just(36),
        Just(255),
        Just(1 << 31),
        Just(1 << 32),
        Just(1 << 48),
        Just(u64::MAX),
        Just(u64::MAX / 2),
        any::<u64>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_byte_overwrites_of_a_small_file(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = small_file().to_vec();
        for (at, v) in edits {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        check(bytes);
    }

    #[test]
    fn interesting_integers_spliced_into_a_small_file(
        edits in prop::collection::vec((any::<prop::sample::Index>(), interesting_u64(), prop::bool::ANY), 1..4),
    ) {
        let mut bytes = small_file().to_vec();
        for (at, v, wide) in edits {
            let i = at.index(bytes.len());
            if wide {
                splice(&mut bytes, i, &v.to_le_bytes());
            } else {
                splice(&mut bytes, i, &(v as u32).to_le_bytes());
            }
        }
        check(bytes);
    }

    #[test]
    fn random_headers_after_a_valid_preamble(
        body in prop::collection::vec(any::<u8>(), 0..512),
        counts in (0u64..6, 0u64..6),
    ) {
        let mut bytes = b"GGUF\x03\0\0\0".to_vec();
        bytes.extend_from_slice(&counts.0.to_le_bytes());
        bytes.extend_from_slice(&counts.1.to_le_bytes());
        bytes.extend_from_slice(&body);
        check(bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_mutations_of_a_real_header(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        splices in prop::collection::vec((any::<prop::sample::Index>(), interesting_u64()), 0..2),
    ) {
        let mut bytes = fixture_header().to_vec();
        // Mutate only the header (the data section is opaque to the reader).
        let header = 34_112;
        for (at, v) in edits {
            bytes[at.index(header)] = v;
        }
        for (at, v) in splices {
            splice(&mut bytes, at.index(header), &v.to_le_bytes());
        }
        check(bytes);
    }
}

#[test]
fn the_small_file_is_valid() {
    let f = GgufFile::from_bytes(small_file().to_vec(), "small").unwrap();
    assert_eq!(f.metadata().len(), 16);
    assert_eq!(f.tensors().len(), 4);
    assert_eq!(f.get("empty"), Some(&MetadataValue::Array(vec![])));
    check(small_file().to_vec());
}
