//! `SecretString`: the one type that holds secret material (secret access keys, security tokens,
//! access and refresh tokens, client secrets). Its `Debug` and `Display` print a placeholder, and it
//! serializes only where a caller asks for the bytes explicitly, so secret material cannot reach
//! logs, Events, status or error messages by accident.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Placeholder printed instead of secret material.
pub const REDACTED: &str = "<redacted>";

/// A string whose content is secret. Only code that signs requests or writes the Secret calls
/// [`SecretString::expose`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret bytes. Every call site is a place where secret material leaves this type.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

// Wire formats (Huawei responses, the session Secret) need the real value; serde is an explicit,
// reviewed path, not formatting.
impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = SecretString::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(format!("{:?}", Some(s.clone())), format!("Some({REDACTED})"));
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn structs_holding_secrets_debug_without_them() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            id: &'static str,
            secret: SecretString,
        }
        let h = Holder {
            id: "AK",
            secret: "SK-material".into(),
        };
        let out = format!("{h:?} {h:#?}");
        assert!(!out.contains("SK-material"), "{out}");
    }
}
