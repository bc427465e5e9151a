//! Typed head options: a head declares its options as a serde struct, and a
//! pipeline file's `options:` map is read into it, with errors that name the
//! option (which the pipeline turns into file:line:col).

use crate::error::HeadError;
use serde::de::{self, DeserializeOwned, Visitor};
use serde_json::{Map, Value};

/// The field names of the struct `T` (its serde names), found by asking `T` to
/// deserialize from a deserializer that only records what it is asked for.
pub(crate) fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    /// Ends the deserialization as soon as the struct names its fields.
    struct Probe<'a>(&'a mut &'static [&'static str]);

    #[derive(Debug)]
    struct Stop;

    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field names recorded")
        }
    }

    impl std::error::Error for Stop {}

    impl de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }

    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = Stop;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = fields;
            Err(Stop)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// Reads `options` into `T`. An error names the option at fault (its path below
/// `options`) and says what is wrong in words.
pub(crate) fn read<T: DeserializeOwned>(options: &Map<String, Value>) -> Result<T, HeadError> {
    serde_path_to_error::deserialize(Value::Object(options.clone())).map_err(|e| {
        // serde's message names the value found.
        HeadError::Option {
            key: e.path().to_string(),
            message: in_words(&e.inner().to_string()),
            help: None,
        }
    })
}

/// serde's message with Rust's type names put in words: `invalid type: string
/// "x", expected usize` becomes `invalid type: string "x", expected a whole number`.
fn in_words(message: &str) -> String {
    const WORDS: [(&str, &str); 12] = [
        ("expected usize", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected u8", "expected a whole number"),
        ("expected isize", "expected an integer"),
        ("expected i64", "expected an integer"),
        ("expected i32", "expected an integer"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("expected a string", "expected text"),
    ];
    WORDS
        .iter()
        .find(|(rust, _)| message.ends_with(rust))
        .map_or_else(
            || message.to_string(),
            |(rust, words)| format!("{}{words}", &message[..message.len() - rust.len()]),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Opts {
        #[serde(default)]
        level: usize,
        #[serde(default)]
        draw: bool,
    }

    fn map(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn options_are_typed_and_errors_name_the_option() {
        assert_eq!(field_names::<Opts>(), ["level", "draw"]);
        let o: Opts = read(&map(r#"{"level": 4}"#)).unwrap();
        assert_eq!(
            o,
            Opts {
                level: 4,
                draw: false
            }
        );
        let HeadError::Option { key, message, help } =
            read::<Opts>(&map(r#"{"level": "x"}"#)).unwrap_err()
        else {
            panic!("not an option error")
        };
        assert_eq!(key, "level");
        assert_eq!(
            message,
            r#"invalid type: string "x", expected a whole number"#
        );
        assert_eq!(help, None);
        let HeadError::Option { key, .. } = read::<Opts>(&map(r#"{"levl": 4}"#)).unwrap_err()
        else {
            panic!("not an option error")
        };
        assert_eq!(key, "levl");
    }
}
