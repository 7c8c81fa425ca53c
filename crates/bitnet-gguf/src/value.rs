//! GGUF metadata values.
//!
//! GGUF stores every metadata value with a `u32` type tag; arrays carry one element tag and a
//! count, and may contain arrays (each inner array has its own element tag). In memory an array
//! is just a `Vec<MetadataValue>`; the reader guarantees its elements share one type, and the
//! writer checks that they do before writing.

use std::fmt;

/// GGUF value type ids, as stored in the file.
pub(crate) mod type_id {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// Name of a GGUF value type id (`"u32"`, `"string"`, ...), or `None` for an unknown id.
pub(crate) fn type_name_of_id(id: u32) -> Option<&'static str> {
    Some(match id {
        type_id::U8 => "u8",
        type_id::I8 => "i8",
        type_id::U16 => "u16",
        type_id::I16 => "i16",
        type_id::U32 => "u32",
        type_id::I32 => "i32",
        type_id::F32 => "f32",
        type_id::BOOL => "bool",
        type_id::STRING => "string",
        type_id::ARRAY => "array",
        type_id::U64 => "u64",
        type_id::I64 => "i64",
        type_id::F64 => "f64",
        _ => return None,
    })
}

/// One GGUF metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    /// Elements all have the same type (arrays of arrays may differ in their inner types).
    Array(Vec<MetadataValue>),
}

impl MetadataValue {
    /// The GGUF type id of this value (9 for arrays).
    pub fn type_id(&self) -> u32 {
        match self {
            MetadataValue::U8(_) => type_id::U8,
            MetadataValue::I8(_) => type_id::I8,
            MetadataValue::U16(_) => type_id::U16,
            MetadataValue::I16(_) => type_id::I16,
            MetadataValue::U32(_) => type_id::U32,
            MetadataValue::I32(_) => type_id::I32,
            MetadataValue::U64(_) => type_id::U64,
            MetadataValue::I64(_) => type_id::I64,
            MetadataValue::F32(_) => type_id::F32,
            MetadataValue::F64(_) => type_id::F64,
            MetadataValue::Bool(_) => type_id::BOOL,
            MetadataValue::String(_) => type_id::STRING,
            MetadataValue::Array(_) => type_id::ARRAY,
        }
    }

    /// Short type name for messages: `"u32"`, `"string"`, `"array"`, ...
    pub fn type_name(&self) -> &'static str {
        type_name_of_id(self.type_id()).unwrap_or("?")
    }

    /// Type description for messages, with the element type of arrays: `"array of string"`.
    pub fn describe_type(&self) -> String {
        match self {
            MetadataValue::Array(items) => match items.first() {
                Some(first) => format!("array of {}", first.describe_type()),
                None => "empty array".to_string(),
            },
            other => other.type_name().to_string(),
        }
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetadataValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[MetadataValue]> {
        match self {
            MetadataValue::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The value, if this is a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            MetadataValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The value of any integer type, widened to `i128` (which holds every `u64` and `i64`).
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            MetadataValue::U8(v) => v.into(),
            MetadataValue::I8(v) => v.into(),
            MetadataValue::U16(v) => v.into(),
            MetadataValue::I16(v) => v.into(),
            MetadataValue::U32(v) => v.into(),
            MetadataValue::I32(v) => v.into(),
            MetadataValue::U64(v) => v.into(),
            MetadataValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The value of a float (f32, or f64 rounded to f32).
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            MetadataValue::F32(v) => Some(v),
            MetadataValue::F64(v) => Some(v as f32),
            _ => None,
        }
    }
}

macro_rules! from_scalar {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for MetadataValue {
            fn from(v: $t) -> Self {
                MetadataValue::$variant(v)
            }
        })*
    };
}

from_scalar!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, u64 => U64,
    i64 => I64, f32 => F32, f64 => F64, bool => Bool, String => String);

impl From<&str> for MetadataValue {
    fn from(v: &str) -> Self {
        MetadataValue::String(v.to_string())
    }
}

impl<T: Into<MetadataValue>> From<Vec<T>> for MetadataValue {
    fn from(v: Vec<T>) -> Self {
        MetadataValue::Array(v.into_iter().map(Into::into).collect())
    }
}

/// Human-readable form for inspection tools: strings are quoted and escaped, long arrays are
/// abbreviated to their first 8 elements and a count.
impl fmt::Display for MetadataValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        match self {
            MetadataValue::U8(v) => write!(f, "{v}"),
            MetadataValue::I8(v) => write!(f, "{v}"),
            MetadataValue::U16(v) => write!(f, "{v}"),
            MetadataValue::I16(v) => write!(f, "{v}"),
            MetadataValue::U32(v) => write!(f, "{v}"),
            MetadataValue::I32(v) => write!(f, "{v}"),
            MetadataValue::U64(v) => write!(f, "{v}"),
            MetadataValue::I64(v) => write!(f, "{v}"),
            MetadataValue::F32(v) => write!(f, "{v:?}"),
            MetadataValue::F64(v) => write!(f, "{v:?}"),
            MetadataValue::Bool(v) => write!(f, "{v}"),
            MetadataValue::String(s) => write!(f, "{s:?}"),
            MetadataValue::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().take(SHOWN).enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                if items.len() > SHOWN {
                    write!(f, ", ... ({} items)", items.len())?;
                }
                f.write_str("]")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_and_descriptions() {
        let v: MetadataValue = vec!["a", "b"].into();
        assert_eq!(v.describe_type(), "array of string");
        assert_eq!(MetadataValue::from(7u16).as_integer(), Some(7));
        assert_eq!(MetadataValue::from(-7i64).as_integer(), Some(-7));
        assert_eq!(MetadataValue::from(0.5f64).as_f32(), Some(0.5));
        assert_eq!(MetadataValue::Array(vec![]).describe_type(), "empty array");
        let long: MetadataValue = (0..20u32).collect::<Vec<_>>().into();
        assert_eq!(long.to_string(), "[0, 1, 2, 3, 4, 5, 6, 7, ... (20 items)]");
        assert_eq!(MetadataValue::from("x\"y").to_string(), "\"x\\\"y\"");
    }
}
