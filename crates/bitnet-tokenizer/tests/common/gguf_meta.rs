//! A minimal GGUF metadata reader, test-only: enough to pull the `tokenizer.*` keys out of the
//! fixture files without depending on the bitnet-gguf crate (which is written separately).

use std::collections::HashMap;

use bitnet_tokenizer::GgufVocab;

#[derive(Debug, Clone)]
pub enum Meta {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(Vec<Meta>),
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        out
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        String::from_utf8(self.take(n).to_vec()).expect("UTF-8 string")
    }
    fn value(&mut self, ty: u32) -> Meta {
        match ty {
            0 => Meta::Int(self.take(1)[0] as i64),
            1 => Meta::Int(self.take(1)[0] as i8 as i64),
            2 => Meta::Int(u16::from_le_bytes(self.take(2).try_into().unwrap()) as i64),
            3 => Meta::Int(i16::from_le_bytes(self.take(2).try_into().unwrap()) as i64),
            4 => Meta::Int(self.u32() as i64),
            5 => Meta::Int(self.u32() as i32 as i64),
            6 => Meta::Float(f32::from_le_bytes(self.take(4).try_into().unwrap()) as f64),
            7 => Meta::Bool(self.take(1)[0] != 0),
            8 => Meta::Str(self.string()),
            9 => {
                let elem = self.u32();
                let n = self.u64() as usize;
                Meta::Array((0..n).map(|_| self.value(elem)).collect())
            }
            10 => Meta::Int(self.u64() as i64),
            11 => Meta::Int(self.u64() as i64),
            12 => Meta::Float(f64::from_le_bytes(self.take(8).try_into().unwrap())),
            other => panic!("unknown GGUF value type {other}"),
        }
    }
}

/// All metadata key/values of a GGUF file.
pub fn read_metadata(path: &std::path::Path) -> HashMap<String, Meta> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = Reader { bytes: &bytes, pos: 0 };
    assert_eq!(r.take(4), b"GGUF");
    let _version = r.u32();
    let _n_tensors = r.u64();
    let n_kv = r.u64();
    (0..n_kv)
        .map(|_| {
            let key = r.string();
            let ty = r.u32();
            (key, r.value(ty))
        })
        .collect()
}

/// The `GgufVocab` of a GGUF file, as the model crate is expected to fill it.
pub fn vocab_of(path: &std::path::Path) -> GgufVocab {
    let m = read_metadata(path);
    let s = |k: &str| match m.get(k) {
        Some(Meta::Str(s)) => Some(s.clone()),
        _ => None,
    };
    let id = |k: &str| match m.get(k) {
        Some(Meta::Int(i)) => Some(*i as u32),
        _ => None,
    };
    let arr = |k: &str| match m.get(k) {
        Some(Meta::Array(a)) => Some(a.clone()),
        _ => None,
    };
    let strings = |k: &str| {
        arr(k)
            .unwrap_or_default()
            .into_iter()
            .map(|v| match v {
                Meta::Str(s) => s,
                other => panic!("{k}: {other:?}"),
            })
            .collect::<Vec<_>>()
    };
    GgufVocab {
        model: s("tokenizer.ggml.model").expect("tokenizer.ggml.model"),
        tokens: strings("tokenizer.ggml.tokens"),
        token_types: arr("tokenizer.ggml.token_type").map(|a| {
            a.into_iter()
                .map(|v| match v {
                    Meta::Int(i) => i as i32,
                    other => panic!("token_type {other:?}"),
                })
                .collect()
        }),
        merges: strings("tokenizer.ggml.merges"),
        scores: arr("tokenizer.ggml.scores").map(|a| {
            a.into_iter()
                .map(|v| match v {
                    Meta::Float(f) => f as f32,
                    other => panic!("score {other:?}"),
                })
                .collect()
        }),
        pre: s("tokenizer.ggml.pre"),
        bos_id: id("tokenizer.ggml.bos_token_id"),
        eos_id: id("tokenizer.ggml.eos_token_id"),
        eot_id: id("tokenizer.ggml.eot_token_id"),
        add_bos: match m.get("tokenizer.ggml.add_bos_token") {
            Some(Meta::Bool(b)) => Some(*b),
            _ => None,
        },
        chat_template: s("tokenizer.chat_template"),
    }
}
