//! Hostile mode: a simulator that answers like an endpoint a tenant controls. On the responses of
//! the selected operations (STS AssumeAgency / AssumeAgencyWithOIDC, portal GetAgencyCredentials,
//! OIDC CreateToken) it can send a huge body (streamed, never held here), drip the body over N
//! seconds, replace the expiry with any JSON value, send malformed JSON or a hostile `Date` header.
//! It also records what clients sent it (OIDC `id_token`s, portal `access-token` headers, refresh
//! tokens and client secrets), so a test can ask the API server whether a token that reached a
//! hostile endpoint is one it accepts.
//!
//! Everything here is pure or a small stream builder; the middleware applies it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::operation::Operation;

/// Operations hostile mode applies to when none are named.
pub const DEFAULT_OPERATIONS: [&str; 4] = [
    "AssumeAgency",
    "AssumeAgencyWithOIDC",
    "GetAgencyCredentials",
    "CreateToken",
];

/// An operation hostile mode applies to only when named: SWR CreateSecret (its expiry is a header,
/// so `expiration` replaces `X-Swr-Expireat`; a non-string value removes it).
pub const OPT_IN_OPERATION: &str = "CreateSecret";

/// Largest huge body the control API accepts (64 GiB): the body is generated, not stored.
pub const MAX_HUGE_BODY_BYTES: u64 = 64 << 30;
/// Longest drip the control API accepts.
pub const MAX_SLOW_BODY_SECONDS: u64 = 600;
/// A `Date` offset stays within ±10 years so the header is still a formattable date.
pub const MAX_DATE_OFFSET_SECONDS: i64 = 10 * 366 * 86_400;
/// How many values of each kind [`Received`] keeps (oldest dropped first).
pub const RECEIVED_CAPACITY: usize = 100;

/// A body that starts like a JSON object and stops in the middle of a string.
pub const MALFORMED_BODY: &[u8] = b"{\"credentials\": {\"access_key_id\": \"HOSTILE\", \"expiration\": \"20";

/// The hostile setting, as `PUT /control/hostile` takes it. `{}` is "not hostile".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hostile {
    /// Operation names (see [`DEFAULT_OPERATIONS`]); empty means all four.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<String>,
    /// Answer with a 200 body of this many bytes (JSON-looking padding, no `Content-Length`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_body_bytes: Option<u64>,
    /// Send the (possibly modified) body in small pieces spread over this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_body_seconds: Option<u64>,
    /// Replace the response's expiry with this raw JSON value: `credentials.expiration` (STS),
    /// `agency_credentials.expiration` (portal), `token_info.expires_in` (CreateToken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<Value>,
    /// Answer with [`MALFORMED_BODY`] instead of the real body.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub malformed_json: bool,
    /// Seconds added to the `Date` header only (the simulated clock is unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_offset_seconds: Option<i64>,
}

impl Hostile {
    /// A readable reason when a setting is out of range or names an unknown operation.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(op) = self
            .operations
            .iter()
            .find(|op| !DEFAULT_OPERATIONS.contains(&op.as_str()) && op.as_str() != OPT_IN_OPERATION)
        {
            return Err(format!(
                "unknown operation {op}; hostile mode applies to {} and {OPT_IN_OPERATION}",
                DEFAULT_OPERATIONS.join(", ")
            ));
        }
        if self.huge_body_bytes.is_some_and(|n| n > MAX_HUGE_BODY_BYTES) {
            return Err(format!("hugeBodyBytes must be at most {MAX_HUGE_BODY_BYTES}"));
        }
        if self.slow_body_seconds.is_some_and(|s| s > MAX_SLOW_BODY_SECONDS) {
            return Err(format!("slowBodySeconds must be at most {MAX_SLOW_BODY_SECONDS}"));
        }
        if self
            .date_offset_seconds
            .is_some_and(|o| o.unsigned_abs() > MAX_DATE_OFFSET_SECONDS.unsigned_abs())
        {
            return Err(format!(
                "dateOffsetSeconds must be within ±{MAX_DATE_OFFSET_SECONDS}"
            ));
        }
        Ok(())
    }

    /// Whether this setting changes the answers to `op`.
    pub fn applies_to(&self, op: Operation) -> bool {
        let active = self.huge_body_bytes.is_some()
            || self.slow_body_seconds.is_some()
            || self.expiration.is_some()
            || self.malformed_json
            || self.date_offset_seconds.is_some();
        let selected = if self.operations.is_empty() {
            DEFAULT_OPERATIONS.contains(&op.name())
        } else {
            self.operations.iter().any(|o| o == op.name())
        };
        active && selected
    }

    /// Whether the body must be rewritten (as opposed to only the `Date` header).
    pub fn touches_body(&self) -> bool {
        self.huge_body_bytes.is_some()
            || self.slow_body_seconds.is_some()
            || self.expiration.is_some()
            || self.malformed_json
    }

    /// The body to send instead of `body` (before huge/slow streaming): malformed wins, then the
    /// expiry override; otherwise the body unchanged.
    pub fn rewrite(&self, op: Operation, body: Bytes) -> Bytes {
        if self.malformed_json {
            return Bytes::from_static(MALFORMED_BODY);
        }
        match &self.expiration {
            Some(value) => override_expiration(op, &body, value).map_or(body, Bytes::from),
            None => body,
        }
    }
}

/// The JSON pointer of the expiry in `op`'s success response.
pub fn expiry_pointer(op: Operation) -> Option<&'static str> {
    match op {
        Operation::AssumeAgency | Operation::AssumeAgencyWithOidc => Some("/credentials/expiration"),
        Operation::GetAgencyCredentials => Some("/agency_credentials/expiration"),
        Operation::CreateToken => Some("/token_info/expires_in"),
        _ => None,
    }
}

/// `body` with the expiry of `op`'s response replaced by `value`; `None` when the body is not
/// JSON or has no such field (an error answer), so it is sent unchanged.
pub fn override_expiration(op: Operation, body: &[u8], value: &Value) -> Option<Vec<u8>> {
    let mut doc: Value = serde_json::from_slice(body).ok()?;
    let slot = doc.pointer_mut(expiry_pointer(op)?)?;
    *slot = value.clone();
    serde_json::to_vec(&doc).ok()
}

/// Padding pieces are sliced from this; the stream never allocates per byte.
static PAD: [u8; 64 * 1024] = [b'x'; 64 * 1024];
const HUGE_PREFIX: &[u8] = b"{\"credentials\": {\"padding\": \"";

/// A body of exactly `total` bytes: a JSON-looking prefix then padding, in 64 KiB pieces
/// generated on demand (the simulator holds at most one static piece, whatever `total` is).
pub fn huge_body(total: u64) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    futures::stream::unfold(0u64, move |sent| async move {
        if sent >= total {
            return None;
        }
        let left = total - sent;
        let chunk = if sent == 0 {
            let n = usize::try_from(left).map_or(HUGE_PREFIX.len(), |l| l.min(HUGE_PREFIX.len()));
            Bytes::from_static(&HUGE_PREFIX[..n])
        } else {
            let n = usize::try_from(left).map_or(PAD.len(), |l| l.min(PAD.len()));
            Bytes::from_static(&PAD[..n])
        };
        let sent = sent.saturating_add(chunk.len() as u64);
        Some((Ok(chunk), sent))
    })
}

/// How `body` is cut for a drip over `seconds`: at most 4 pieces a second (at least one piece),
/// never more pieces than bytes. Returns (piece size, pause between pieces).
pub fn drip_plan(len: usize, seconds: u64) -> (usize, Duration) {
    let wanted = usize::try_from(seconds.saturating_mul(4))
        .unwrap_or(usize::MAX)
        .max(1);
    let pieces = wanted.min(len.max(1));
    let size = len.div_ceil(pieces).max(1);
    let pieces = len.div_ceil(size).max(1);
    let pause = Duration::from_secs(seconds) / u32::try_from(pieces).unwrap_or(u32::MAX);
    (size, pause)
}

/// `body` dripped over about `seconds`: the first piece at once, then one piece per pause.
pub fn drip(body: Bytes, seconds: u64) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let (size, pause) = drip_plan(body.len(), seconds);
    futures::stream::unfold((body, true), move |(mut rest, first)| async move {
        if rest.is_empty() {
            return None;
        }
        if !first {
            tokio::time::sleep(pause).await;
        }
        let piece = rest.split_to(size.min(rest.len()));
        Some((Ok(piece), (rest, false)))
    })
}

/// What clients sent to this simulator, newest last (`GET /control/received`). The simulator is
/// a test tool on loopback: these are the very tokens a hostile endpoint would steal.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Received {
    /// `id_token` of every AssumeAgencyWithOIDC request.
    pub id_tokens: VecDeque<String>,
    /// `access-token` header of every portal request.
    pub access_tokens: VecDeque<String>,
    /// `refresh_token` of every CreateToken request that had one.
    pub refresh_tokens: VecDeque<String>,
    /// `client_secret` of every CreateToken / StartDeviceAuthorization request that had one.
    pub client_secrets: VecDeque<String>,
    /// The attribution every AssumeAgency / AssumeAgencyWithOIDC request carried, as sent (also
    /// requests then failed by an injected fault or refused): `{operation, agencyUrn,
    /// sessionName, sourceIdentity, tags, transitiveTagKeys}`, absent fields `null`.
    pub assume_requests: VecDeque<Value>,
}

fn push(list: &mut VecDeque<String>, value: &str) {
    if list.len() >= RECEIVED_CAPACITY {
        list.pop_front();
    }
    list.push_back(value.to_owned());
}

impl Received {
    /// Records the credentials found in a JSON request body of `op` (anything else is ignored).
    pub fn record_body(&mut self, op: Operation, body: &[u8]) {
        let Ok(doc) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        let field = |name: &str| doc.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
        if matches!(op, Operation::AssumeAgency | Operation::AssumeAgencyWithOidc) {
            let raw = |name: &str| doc.get(name).cloned().unwrap_or(Value::Null);
            if self.assume_requests.len() >= RECEIVED_CAPACITY {
                self.assume_requests.pop_front();
            }
            self.assume_requests.push_back(serde_json::json!({
                "operation": op.name(),
                "agencyUrn": raw("agency_urn"),
                "sessionName": raw("agency_session_name"),
                "sourceIdentity": raw("source_identity"),
                "tags": raw("tags"),
                "transitiveTagKeys": raw("transitive_tag_keys"),
            }));
        }
        match op {
            Operation::AssumeAgencyWithOidc => {
                if let Some(t) = field("id_token") {
                    push(&mut self.id_tokens, t);
                }
            }
            Operation::CreateToken | Operation::StartDeviceAuthorization => {
                if let Some(t) = field("refresh_token") {
                    push(&mut self.refresh_tokens, t);
                }
                if let Some(s) = field("client_secret") {
                    push(&mut self.client_secrets, s);
                }
            }
            _ => {}
        }
    }

    pub fn record_access_token(&mut self, token: &str) {
        if !token.is_empty() {
            push(&mut self.access_tokens, token);
        }
    }

    /// Whether `op`'s request body carries something worth recording (so the middleware reads it).
    pub fn wants_body(op: Operation) -> bool {
        matches!(
            op,
            Operation::AssumeAgency
                | Operation::AssumeAgencyWithOidc
                | Operation::CreateToken
                | Operation::StartDeviceAuthorization
        )
    }

    /// Whether `op` is a portal call authenticated by the `access-token` header.
    pub fn wants_access_token(op: Operation) -> bool {
        matches!(
            op,
            Operation::ListAccounts
                | Operation::ListAccountAgencies
                | Operation::GetAgencyCredentials
                | Operation::Logout
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use serde_json::json;

    fn sts_body() -> Vec<u8> {
        serde_json::to_vec(
            &json!({"credentials": {"access_key_id": "AK", "expiration": "2030-01-01T00:00:00.000Z"}}),
        )
        .unwrap()
    }

    #[test]
    fn an_empty_setting_is_not_hostile() {
        let h = Hostile::default();
        assert!(h.validate().is_ok());
        assert!(!h.applies_to(Operation::AssumeAgency));
        assert_eq!(serde_json::to_value(&h).unwrap(), json!({}));
    }

    #[test]
    fn the_setting_applies_to_the_named_operations_only() {
        let h = Hostile {
            operations: vec!["GetAgencyCredentials".into()],
            malformed_json: true,
            ..Hostile::default()
        };
        assert!(h.applies_to(Operation::GetAgencyCredentials));
        assert!(!h.applies_to(Operation::AssumeAgency));
        let all = Hostile {
            date_offset_seconds: Some(3000),
            ..Hostile::default()
        };
        for op in [
            Operation::AssumeAgency,
            Operation::AssumeAgencyWithOidc,
            Operation::GetAgencyCredentials,
            Operation::CreateToken,
        ] {
            assert!(all.applies_to(op), "{op:?}");
        }
        assert!(!all.applies_to(Operation::GetCallerIdentity));
        assert!(!all.applies_to(Operation::ListAccounts));
        assert!(!all.touches_body());
    }

    #[test]
    fn out_of_range_settings_are_refused_with_a_reason() {
        let unknown = Hostile {
            operations: vec!["Logout".into()],
            ..Hostile::default()
        };
        assert!(
            unknown
                .validate()
                .unwrap_err()
                .contains("unknown operation Logout")
        );
        let date = Hostile {
            date_offset_seconds: Some(i64::MIN),
            ..Hostile::default()
        };
        assert!(date.validate().unwrap_err().contains("dateOffsetSeconds"));
        let slow = Hostile {
            slow_body_seconds: Some(601),
            ..Hostile::default()
        };
        assert!(slow.validate().unwrap_err().contains("slowBodySeconds"));
        let huge = Hostile {
            huge_body_bytes: Some(u64::MAX),
            ..Hostile::default()
        };
        assert!(huge.validate().unwrap_err().contains("hugeBodyBytes"));
        let parsed: Result<Hostile, _> = serde_json::from_value(json!({"hugeBody": 1}));
        assert!(parsed.is_err(), "unknown keys are refused");
    }

    #[test]
    fn the_expiry_is_replaced_by_any_raw_json_value() {
        for value in [
            json!("-009999-01-02T01:59:59Z"),
            json!(-1_000_000_000_000_i64),
            json!("1999-01-01T00:00:00Z"),
            json!(null),
            json!({"nested": [1, 2]}),
        ] {
            let out = override_expiration(Operation::AssumeAgency, &sts_body(), &value).unwrap();
            let doc: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(doc["credentials"]["expiration"], value);
            assert_eq!(doc["credentials"]["access_key_id"], "AK", "the rest is kept");
        }
        let portal = serde_json::to_vec(&json!({"agency_credentials": {"expiration": 1}})).unwrap();
        let out = override_expiration(Operation::GetAgencyCredentials, &portal, &json!(-5)).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&out).unwrap()["agency_credentials"]["expiration"],
            -5
        );
        let token = serde_json::to_vec(&json!({"token_info": {"expires_in": 28800}})).unwrap();
        let out = override_expiration(Operation::CreateToken, &token, &json!(-1)).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&out).unwrap()["token_info"]["expires_in"],
            -1
        );
    }

    #[test]
    fn error_answers_and_non_json_bodies_are_left_alone() {
        let err = br#"{"error_code": "STS5.0403", "error_msg": "denied"}"#;
        assert!(override_expiration(Operation::AssumeAgency, err, &json!(1)).is_none());
        assert!(override_expiration(Operation::AssumeAgency, b"not json", &json!(1)).is_none());
        assert!(override_expiration(Operation::GetCallerIdentity, &sts_body(), &json!(1)).is_none());
        let h = Hostile {
            expiration: Some(json!(1)),
            ..Hostile::default()
        };
        assert_eq!(
            h.rewrite(Operation::AssumeAgency, Bytes::from_static(err)),
            Bytes::from_static(err)
        );
    }

    #[test]
    fn malformed_json_wins_over_an_expiry_override() {
        let h = Hostile {
            malformed_json: true,
            expiration: Some(json!(1)),
            ..Hostile::default()
        };
        let out = h.rewrite(Operation::AssumeAgency, Bytes::from(sts_body()));
        assert_eq!(&out[..], MALFORMED_BODY);
        assert!(serde_json::from_slice::<Value>(&out).is_err());
    }

    #[tokio::test]
    async fn a_huge_body_has_exactly_the_requested_size_in_bounded_pieces() {
        for total in [0u64, 5, 30, 64 * 1024 + 31, 3 * 1024 * 1024 + 1] {
            let mut stream = std::pin::pin!(huge_body(total));
            let (mut seen, mut largest, mut first) = (0u64, 0usize, None);
            while let Some(Ok(piece)) = stream.next().await {
                first.get_or_insert_with(|| piece.clone());
                seen += piece.len() as u64;
                largest = largest.max(piece.len());
            }
            assert_eq!(seen, total);
            assert!(largest <= 64 * 1024, "{largest}");
            if total >= HUGE_PREFIX.len() as u64 {
                assert_eq!(&first.unwrap()[..], HUGE_PREFIX);
            }
        }
    }

    #[test]
    fn a_drip_spreads_the_body_over_the_requested_time() {
        let (size, pause) = drip_plan(400, 5);
        assert_eq!(size, 20);
        assert_eq!(pause, Duration::from_millis(250));
        let (size, pause) = drip_plan(3, 10);
        assert_eq!(
            (size, pause),
            (1, Duration::from_millis(3333) + Duration::from_nanos(333_333))
        );
        let (size, _) = drip_plan(0, 10);
        assert_eq!(size, 1);
        let (size, pause) = drip_plan(10, 0);
        assert_eq!((size, pause), (10, Duration::ZERO));
    }

    #[tokio::test]
    async fn a_drip_sends_the_whole_body_and_takes_the_time() {
        let body = Bytes::from_static(b"0123456789abcdefghij");
        let started = tokio::time::Instant::now();
        let pieces: Vec<Bytes> = drip(body.clone(), 2).map(|r| r.unwrap()).collect().await;
        assert_eq!(pieces.len(), 7, "20 bytes in pieces of 3");
        assert_eq!(pieces.concat(), body.to_vec());
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1700) && took <= Duration::from_secs(3),
            "{took:?}"
        );
    }

    #[test]
    fn received_tokens_are_recorded_newest_last_and_bounded() {
        let mut r = Received::default();
        r.record_body(
            Operation::AssumeAgencyWithOidc,
            br#"{"id_token": "eyJ.a.b", "agency_urn": "x"}"#,
        );
        r.record_body(
            Operation::CreateToken,
            br#"{"grant_type": "refresh_token", "refresh_token": "rt-1", "client_secret": "cs-1"}"#,
        );
        r.record_body(
            Operation::AssumeAgency,
            br#"{"id_token": "ignored", "agency_session_name": "team-a-web", "source_identity": "team-a.web"}"#,
        );
        r.record_body(Operation::AssumeAgencyWithOidc, b"not json");
        r.record_access_token("at-1");
        r.record_access_token("");
        assert_eq!(r.id_tokens, ["eyJ.a.b"]);
        assert_eq!(r.refresh_tokens, ["rt-1"]);
        assert_eq!(r.client_secrets, ["cs-1"]);
        assert_eq!(r.access_tokens, ["at-1"]);
        for i in 0..(RECEIVED_CAPACITY + 5) {
            r.record_access_token(&format!("t{i}"));
        }
        assert_eq!(r.access_tokens.len(), RECEIVED_CAPACITY);
        assert_eq!(r.access_tokens.back().map(String::as_str), Some("t104"));
        assert!(Received::wants_access_token(Operation::GetAgencyCredentials));
        assert!(Received::wants_body(Operation::AssumeAgencyWithOidc));
        // AssumeAgency bodies are read for their attribution (never a token of theirs)
        assert!(Received::wants_body(Operation::AssumeAgency));
        assert_eq!(r.assume_requests.len(), 2);
        assert_eq!(r.assume_requests[1]["sourceIdentity"], "team-a.web");
        assert_eq!(r.assume_requests[1]["sessionName"], "team-a-web");
        assert_eq!(r.assume_requests[0]["tags"], Value::Null);
    }
}
