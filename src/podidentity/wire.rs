//! The wire format of the pod identity provider in Huawei's SDKs: the `200` body and the JSON
//! error bodies of the credentials endpoint (contract: docs/api.md, "Pod identity").

use jiff::Timestamp;
use serde::Serialize;

/// `{"credentials":{…}}`: the wrapper Java and Go need; every value a JSON string.
#[derive(Serialize)]
pub struct CredentialsBody<'a> {
    pub credentials: Credentials<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub security_token: &'a str,
    /// UTC with exactly three fractional digits (see [`expiration`]).
    pub expiration: String,
}

// The body carries the secret key and token: never print it.
impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

/// `2026-11-24T13:21:02.123Z`: what Python (`%Y-%m-%dT%H:%M:%S.%fZ`) and Java
/// (`yyyy-MM-dd'T'HH:mm:ss.SSS'Z'`) parse. Sub-millisecond digits are dropped (rounding down never
/// announces more validity than there is).
pub fn expiration(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// `{"error":"Forbidden","message":"…"}`.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: &'static str,
    pub message: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_body_has_the_wrapper_and_string_values() {
        let at: Timestamp = "2026-11-24T13:21:02.123456Z".parse().unwrap();
        let body = CredentialsBody {
            credentials: Credentials {
                access_key_id: "AK",
                secret_access_key: "SK",
                security_token: "TOKEN",
                expiration: expiration(at),
            },
        };
        let json: serde_json::Value = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"credentials": {"accessKeyId": "AK", "secretAccessKey": "SK",
                "securityToken": "TOKEN", "expiration": "2026-11-24T13:21:02.123Z"}})
        );
        assert!(
            !format!("{:?}", body.credentials).contains("SK"),
            "Debug hides the secret"
        );
    }

    #[test]
    fn whole_seconds_still_carry_three_digits() {
        let at: Timestamp = "2026-11-24T13:21:02Z".parse().unwrap();
        assert_eq!(expiration(at), "2026-11-24T13:21:02.000Z");
    }

    proptest! {
        #[test]
        fn expiration_has_exactly_three_fractional_digits_and_reads_back(
            secs in 0i64..253_402_300_799, nanos in 0i32..1_000_000_000
        ) {
            let at = Timestamp::new(secs, nanos).unwrap();
            let text = expiration(at);
            let re = regex_lite(&text);
            prop_assert!(re, "{text}");
            let back: Timestamp = text.parse().unwrap();
            prop_assert_eq!(back.as_millisecond(), at.as_millisecond());
            prop_assert!(back <= at);
        }
    }

    /// `^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$` without a regex dependency.
    fn regex_lite(s: &str) -> bool {
        let b = s.as_bytes();
        let shape = b"dddd-dd-ddTdd:dd:dd.dddZ";
        b.len() == shape.len()
            && b.iter().zip(shape).all(|(c, p)| match p {
                b'd' => c.is_ascii_digit(),
                other => c == other,
            })
    }
}
