//! GgufWriter: what it writes reads back identically, it lays data out as promised, and it
//! refuses what the reader would reject.

use bitnet_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, MetadataValue};
use proptest::prelude::*;

/// Value equality with floats compared bit for bit (so NaN and -0.0 round-trip checks work).
fn same(a: &MetadataValue, b: &MetadataValue) -> bool {
    use MetadataValue as V;
    match (a, b) {
        (V::F32(x), V::F32(y)) => x.to_bits() == y.to_bits(),
        (V::F64(x), V::F64(y)) => x.to_bits() == y.to_bits(),
        (V::Array(x), V::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        _ => a == b,
    }
}

fn read(w: &GgufWriter) -> GgufFile {
    let bytes = w.to_bytes().unwrap();
    GgufFile::from_bytes(bytes, "written.gguf").unwrap()
}

fn sample_values() -> Vec<(&'static str, MetadataValue)> {
    use MetadataValue as V;
    vec![
        ("u8", V::U8(u8::MAX)),
        ("i8", V::I8(i8::MIN)),
        ("u16", V::U16(u16::MAX)),
        ("i16", V::I16(i16::MIN)),
        ("u32", V::U32(u32::MAX)),
        ("i32", V::I32(i32::MIN)),
        ("u64", V::U64(u64::MAX)),
        ("i64", V::I64(i64::MIN)),
        ("f32", V::F32(-0.0)),
        ("f32.nan", V::F32(f32::from_bits(0x7fc0_1234))),
        ("f64", V::F64(f64::MIN_POSITIVE)),
        ("bool.t", V::Bool(true)),
        ("bool.f", V::Bool(false)),
        ("str.empty", V::String(String::new())),
        ("str.unicode", V::String("Zürich 日本 🚀 \0 nul".into())),
        ("arr.u8", vec![0u8, 1, 255].into()),
        ("arr.bool", vec![true, false, true].into()),
        ("arr.str", vec!["Ġt", "h e", ""].into()),
        ("arr.f64", vec![1.5f64, -2.25].into()),
        ("arr.i64", vec![i64::MAX, -1].into()),
        ("arr.empty", V::Array(vec![])),
        // Inner arrays have their own element types.
        (
            "arr.nested",
            V::Array(vec![vec![1u32, 2].into(), vec!["x"].into(), V::Array(vec![])]),
        ),
        (
            "arr.deep",
            V::Array(vec![V::Array(vec![V::Array(vec![V::Array(vec![V::U16(7)])])])]),
        ),
    ]
}

#[test]
fn every_value_type_round_trips_in_insertion_order() {
    let mut w = GgufWriter::new();
    for (k, v) in sample_values() {
        w.add_metadata(k, v).unwrap();
    }
    let f = read(&w);
    assert_eq!(f.version(), 3);
    let expected = sample_values();
    assert_eq!(f.metadata().len(), expected.len());
    for ((k, v), (ek, ev)) in f.metadata().iter().zip(&expected) {
        assert_eq!(k, ek);
        assert!(same(v, ev), "{k}: {v:?} != {ev:?}");
    }
    assert_eq!(f.get_u64("u64").unwrap(), u64::MAX);
    assert_eq!(f.get_i64("i64").unwrap(), i64::MIN);
    assert_eq!(f.get_str("str.unicode").unwrap(), "Zürich 日本 🚀 \0 nul");
    assert_eq!(f.get_str_array("arr.str").unwrap(), vec!["Ġt", "h e", ""]);
    assert_eq!(f.get_str_array("arr.empty").unwrap(), Vec::<&str>::new());
    assert_eq!(f.get_i32_array("arr.u8").unwrap(), vec![0, 1, 255]);
    assert_eq!(f.get_f32_array("arr.f64").unwrap(), vec![1.5, -2.25]);
    assert_eq!(f.get_f32("f64").unwrap(), f64::MIN_POSITIVE as f32);
}

#[test]
fn integer_getters_convert_between_widths() {
    let mut w = GgufWriter::new();
    w.add_metadata("neg", -5i32).unwrap();
    w.add_metadata("big", 1u64 << 40).unwrap();
    w.add_metadata("huge", u64::MAX).unwrap();
    w.add_metadata("small", 7u8).unwrap();
    w.add_metadata("ints", vec![1u64 << 40]).unwrap();
    let f = read(&w);
    assert_eq!(f.get_i64("neg").unwrap(), -5);
    assert_eq!(f.get_u32("small").unwrap(), 7);
    assert_eq!(f.get_u64("big").unwrap(), 1 << 40);
    let e = f.get_u64("neg").unwrap_err();
    assert!(matches!(e, GgufError::OutOfRange { .. }));
    assert_eq!(
        e.to_string(),
        "written.gguf: metadata key 'neg' has value -5, which does not fit in u64"
    );
    assert!(f
        .get_u32("big")
        .unwrap_err()
        .to_string()
        .contains("1099511627776, which does not fit in u32"));
    assert!(f.get_i64("huge").is_err());
    assert!(f.get_i32_array("ints").unwrap_err().to_string().contains("(element 0)"));
}

/// Deterministic non-zero bytes.
fn pattern(n: u64, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

fn all_type_tensors(w: &mut GgufWriter) -> Vec<(String, Vec<u64>, GgmlType, Vec<u8>)> {
    let shapes: [(GgmlType, &[u64]); 10] = [
        (GgmlType::F32, &[3]),
        (GgmlType::F16, &[5, 3]),
        (GgmlType::BF16, &[7, 1, 2]),
        (GgmlType::Q8_0, &[64, 3]),
        (GgmlType::Q4_K, &[256, 2]),
        (GgmlType::Q6_K, &[512]),
        (GgmlType::TQ1_0, &[256, 3]),
        (GgmlType::TQ2_0, &[768, 2, 1, 1]),
        (GgmlType::I2_S, &[128, 3]),
        (GgmlType::F32, &[1, 1, 1, 1]),
    ];
    let mut out = Vec::new();
    for (i, (ty, dims)) in shapes.into_iter().enumerate() {
        let n: u64 = dims.iter().product();
        let bytes = ty.tensor_bytes(dims[0], n).unwrap();
        let data = pattern(bytes, i as u8);
        let name = format!("t{i}.{}", ty.name());
        w.add_tensor(name.clone(), dims, ty, data.clone()).unwrap();
        out.push((name, dims.to_vec(), ty, data));
    }
    out
}

#[test]
fn every_tensor_type_round_trips_at_several_alignments() {
    for alignment in [None, Some(1u32), Some(8), Some(64), Some(4096)] {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", "test").unwrap();
        if let Some(a) = alignment {
            w.set_alignment(a).unwrap();
        }
        let expected = all_type_tensors(&mut w);
        let align = alignment.map_or(32, u64::from);
        assert_eq!(w.alignment(), align);
        let bytes = w.to_bytes().unwrap();
        assert_eq!(bytes.len() as u64 % align, 0, "file padded to the alignment");
        let f = GgufFile::from_bytes(bytes.clone(), "t").unwrap();
        assert_eq!(f.alignment(), align);
        assert_eq!(f.data_offset() % align, 0);
        assert_eq!(f.tensors(), &w.tensor_infos()[..]);
        let mut next = 0;
        for (t, (name, dims, ty, data)) in f.tensors().iter().zip(&expected) {
            assert_eq!((&t.name, &t.dims, t.ggml_type), (name, dims, *ty));
            assert_eq!(f.tensor_data(t), &data[..], "{name}");
            // Packed in order, each at the next aligned offset, zero padding between.
            assert_eq!(t.offset, next, "{name}");
            let end = f.tensor_range(t).end;
            next = (t.offset + t.n_bytes).next_multiple_of(align);
            let pad_end = f.data_offset() as usize + next as usize;
            assert!(bytes[end..pad_end].iter().all(|&b| b == 0));
        }
    }
}

#[test]
fn set_and_remove_metadata_keep_positions() {
    let mut w = GgufWriter::new();
    w.add_metadata("a", 1u32).unwrap();
    w.add_metadata("b", 2u32).unwrap();
    w.add_metadata("c", 3u32).unwrap();
    w.set_metadata("b", "two").unwrap();
    w.set_metadata("d", 4u32).unwrap();
    assert_eq!(w.remove_metadata("a"), Some(MetadataValue::U32(1)));
    assert_eq!(w.remove_metadata("a"), None);
    let f = read(&w);
    let keys: Vec<&str> = f.metadata().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["b", "c", "d"]);
    assert_eq!(f.get_str("b").unwrap(), "two");
}

#[test]
fn empty_writer_writes_a_valid_file() {
    let w = GgufWriter::new();
    let mut out = Vec::new();
    let n = w.write(&mut out).unwrap();
    assert_eq!(n, out.len() as u64);
    assert_eq!(out.len(), 32); // 24-byte header padded to 32
    let f = GgufFile::from_bytes(out, "empty").unwrap();
    assert!(f.metadata().is_empty() && f.tensors().is_empty());
}

fn writer_err(r: Result<(), GgufError>) -> String {
    let e = r.unwrap_err();
    assert!(matches!(e, GgufError::InvalidInput { .. }), "{e:?}");
    e.to_string()
}

#[test]
fn writer_refuses_what_the_reader_would_reject() {
    let mut w = GgufWriter::new();
    w.add_metadata("k", 1u32).unwrap();
    assert!(writer_err(w.add_metadata("k", 2u32)).contains("duplicate metadata key 'k'"));
    let mixed = MetadataValue::Array(vec![MetadataValue::U32(1), MetadataValue::I32(1)]);
    assert!(writer_err(w.add_metadata("m", mixed))
        .contains("metadata array 'm' mixes element types: element 0 is u32 but element 1 is i32"));
    let mut deep = MetadataValue::U8(0);
    for _ in 0..9 {
        deep = MetadataValue::Array(vec![deep]);
    }
    assert!(writer_err(w.add_metadata("deep", deep)).contains("nested more than 8 levels"));
    assert!(writer_err(w.set_alignment(0)).contains("nonzero power of two"));
    assert!(writer_err(w.set_alignment(48)).contains("general.alignment = 48"));
    assert!(writer_err(w.add_metadata("general.alignment", 32u64)).contains("must be a u32, not u64"));
    assert!(writer_err(w.add_metadata("x".repeat(65536), 1u8)).contains("exceeds the limit of 65535"));

    let f32s = |n: usize| vec![0u8; 4 * n];
    w.add_tensor("t", &[4], GgmlType::F32, f32s(4)).unwrap();
    assert!(writer_err(w.add_tensor("t", &[4], GgmlType::F32, f32s(4))).contains("duplicate tensor name 't'"));
    assert_eq!(
        writer_err(w.add_tensor("u", &[4, 2], GgmlType::F32, f32s(4))),
        "GGUF writer: tensor 'u': 16 bytes given, but a F32 tensor of shape [4, 2] takes 32 bytes"
    );
    assert!(writer_err(w.add_tensor("u", &[100], GgmlType::Q8_0, vec![0; 136]))
        .contains("but Q8_0 needs a row length (first dimension) that is a multiple of 32"));
    assert!(writer_err(w.add_tensor("u", &[], GgmlType::F32, vec![])).contains("has 0 dimensions"));
    assert!(writer_err(w.add_tensor("u", &[1; 5], GgmlType::F32, f32s(1))).contains("has 5 dimensions"));
    assert!(writer_err(w.add_tensor("u", &[4, 0], GgmlType::F32, vec![])).contains("equal to 0"));
    assert!(writer_err(w.add_tensor("u", &[1 << 32, 1 << 32], GgmlType::F32, vec![])).contains("more than"));
    // Failed additions leave no trace.
    let f = read(&w);
    assert_eq!(f.metadata().len(), 1);
    assert_eq!(f.tensors().len(), 1);
}

#[test]
fn write_to_path_is_atomic_and_leaves_no_temp_files() {
    let dir = std::env::temp_dir().join(format!("bitnet-gguf-writer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.gguf");
    std::fs::write(&path, b"old contents").unwrap();

    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "bitnet-b1.58").unwrap();
    all_type_tensors(&mut w);
    w.write_to_path(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.get_str("general.architecture").unwrap(), "bitnet-b1.58");
    assert_eq!(f.tensors().len(), 10);
    assert_eq!(std::fs::read(&path).unwrap(), w.to_bytes().unwrap());
    let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(entries.len(), 1, "temporary file left behind");

    // A missing folder is an I/O error naming the path.
    let missing = dir.join("no-such-dir").join("m.gguf");
    let e = w.write_to_path(&missing).unwrap_err();
    assert!(matches!(e, GgufError::Io { .. }));
    assert!(e.to_string().contains("no-such-dir"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn write_reports_io_errors() {
    struct Failing;
    impl std::io::Write for Failing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let e = GgufWriter::new().write(Failing).unwrap_err();
    assert_eq!(e.to_string(), "<stream>: disk full");
}

/// A scalar metadata value of kind `k` (0..12).
fn scalar_of(k: usize) -> BoxedStrategy<MetadataValue> {
    use MetadataValue as V;
    match k {
        0 => any::<u8>().prop_map(V::U8).boxed(),
        1 => any::<i8>().prop_map(V::I8).boxed(),
        2 => any::<u16>().prop_map(V::U16).boxed(),
        3 => any::<i16>().prop_map(V::I16).boxed(),
        4 => any::<u32>().prop_map(V::U32).boxed(),
        5 => any::<i32>().prop_map(V::I32).boxed(),
        6 => any::<u64>().prop_map(V::U64).boxed(),
        7 => any::<i64>().prop_map(V::I64).boxed(),
        8 => any::<u32>().prop_map(|b| V::F32(f32::from_bits(b))).boxed(),
        9 => any::<u64>().prop_map(|b| V::F64(f64::from_bits(b))).boxed(),
        10 => any::<bool>().prop_map(V::Bool).boxed(),
        _ => ".{0,12}".prop_map(V::String).boxed(),
    }
}

/// Any scalar metadata value.
fn scalar() -> impl Strategy<Value = MetadataValue> {
    (0usize..12).prop_flat_map(scalar_of)
}

/// An array of 0..max_len scalars of one (random) kind.
fn homogeneous(max_len: usize) -> impl Strategy<Value = MetadataValue> {
    (0usize..12).prop_flat_map(move |k| prop::collection::vec(scalar_of(k), 0..max_len).prop_map(MetadataValue::Array))
}

/// Any metadata value: scalars, homogeneous arrays of scalars, arrays of such arrays.
fn value() -> impl Strategy<Value = MetadataValue> {
    let nested = prop::collection::vec(homogeneous(4), 0..4).prop_map(MetadataValue::Array);
    prop_oneof![3 => scalar(), 2 => homogeneous(6), 1 => nested]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_metadata_round_trips(values in prop::collection::vec(value(), 0..12)) {
        let mut w = GgufWriter::new();
        for (i, v) in values.iter().enumerate() {
            w.add_metadata(format!("key.{i}"), v.clone()).unwrap();
        }
        let f = read(&w);
        prop_assert_eq!(f.metadata().len(), values.len());
        for ((k, got), (i, want)) in f.metadata().iter().zip(values.iter().enumerate()) {
            prop_assert_eq!(k, &format!("key.{i}"));
            prop_assert!(same(got, want), "{:?} != {:?}", got, want);
        }
    }
}
