//! Typed metadata getters on [`GgufFile`].
//!
//! Converters disagree on integer widths (the same key may be u32 in one file and u64 or i32 in
//! another), so the integer getters accept any integer type whose value fits, and report an
//! error naming the key, the found type and the expected one otherwise.

use crate::{GgufError, GgufFile, MetadataValue};

impl GgufFile {
    /// The value under `key`, or [`GgufError::MissingKey`].
    fn value(&self, key: &str) -> Result<&MetadataValue, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            file: self.name().to_string(),
            key: key.to_string(),
        })
    }

    fn wrong_type(&self, key: &str, expected: &'static str, found: &MetadataValue) -> GgufError {
        GgufError::WrongType {
            file: self.name().to_string(),
            key: key.to_string(),
            expected,
            found: found.describe_type(),
        }
    }

    fn out_of_range(&self, key: &str, value: String, target: &'static str) -> GgufError {
        GgufError::OutOfRange {
            file: self.name().to_string(),
            key: key.to_string(),
            value,
            target,
        }
    }

    /// Any integer value under `key`, converted to `T` (`target` names `T` in messages).
    fn integer<T: TryFrom<i128>>(&self, key: &str, target: &'static str) -> Result<T, GgufError> {
        let v = self.value(key)?;
        let i = v.as_integer().ok_or_else(|| self.wrong_type(key, "an integer", v))?;
        T::try_from(i).map_err(|_| self.out_of_range(key, i.to_string(), target))
    }

    /// A string.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.value(key)?;
        v.as_str().ok_or_else(|| self.wrong_type(key, "string", v))
    }

    /// Any integer type with a non-negative value.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.integer(key, "u64")
    }

    /// Any integer type with a value in `0..=u32::MAX`.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.integer(key, "u32")
    }

    /// Any integer type with a value in the `i64` range.
    pub fn get_i64(&self, key: &str) -> Result<i64, GgufError> {
        self.integer(key, "i64")
    }

    /// An f32, or an f64 rounded to f32.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        let v = self.value(key)?;
        v.as_f32().ok_or_else(|| self.wrong_type(key, "f32 or f64", v))
    }

    /// A bool.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let v = self.value(key)?;
        v.as_bool().ok_or_else(|| self.wrong_type(key, "bool", v))
    }

    /// An array of any element type.
    pub fn get_array(&self, key: &str) -> Result<&[MetadataValue], GgufError> {
        let v = self.value(key)?;
        v.as_array().ok_or_else(|| self.wrong_type(key, "array", v))
    }

    /// An array of strings (an empty array of any type gives an empty vector).
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        let v = self.value(key)?;
        let items = v.as_array().ok_or_else(|| self.wrong_type(key, "array of string", v))?;
        items
            .iter()
            .map(|item| item.as_str().ok_or_else(|| self.wrong_type(key, "array of string", v)))
            .collect()
    }

    /// An array of any integer type whose elements all fit in `i32`.
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>, GgufError> {
        let v = self.value(key)?;
        let items = v
            .as_array()
            .ok_or_else(|| self.wrong_type(key, "array of integers", v))?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let n = item
                    .as_integer()
                    .ok_or_else(|| self.wrong_type(key, "array of integers", v))?;
                i32::try_from(n).map_err(|_| self.out_of_range(key, format!("{n} (element {i})"), "i32"))
            })
            .collect()
    }

    /// An array of f32 (or f64, rounded to f32).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>, GgufError> {
        let v = self.value(key)?;
        let items = v.as_array().ok_or_else(|| self.wrong_type(key, "array of f32", v))?;
        items
            .iter()
            .map(|item| item.as_f32().ok_or_else(|| self.wrong_type(key, "array of f32", v)))
            .collect()
    }
}
