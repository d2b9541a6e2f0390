//! STS v5 (docs/simulator.md#sts): AssumeAgency (signed), AssumeAgencyWithOIDC (JWT in the body)
//! and GetCallerIdentity (signed), with Huawei's duration, chaining and trust rules.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{self, Caller, Received};
use crate::error::{ApiError, code};
use crate::jwt::{JwtError, subject_matches};
use crate::lock::lock;
use crate::middleware::Minted;
use crate::state::{AgencyInfo, Issued, SessionRecord, SharedSim, stable_id};

pub const MIN_DURATION: i64 = 900;
pub const MAX_DURATION: i64 = 43_200;
pub const DEFAULT_DURATION: i64 = 3600;
/// Agency chaining (a caller signing with temporary credentials) caps the session at one hour.
pub const CHAINED_MAX_DURATION: i64 = 3600;

#[derive(Deserialize)]
struct AssumeBody {
    agency_urn: Option<String>,
    agency_session_name: Option<String>,
    duration_seconds: Option<i64>,
    policy: Option<String>,
    source_identity: Option<String>,
    /// Kept raw: a tag whose value is `null` or not a string is Huawei's 400, not a parse error.
    tags: Option<Vec<serde_json::Value>>,
    transitive_tag_keys: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct AssumeOidcBody {
    provider_urn: Option<String>,
    agency_urn: Option<String>,
    agency_session_name: Option<String>,
    id_token: Option<String>,
    duration_seconds: Option<i64>,
    policy: Option<String>,
    /// Not AssumeAgencyWithOIDC fields (its tags come from the ID token): refused when present,
    /// so a client that believes otherwise finds out here.
    source_identity: Option<serde_json::Value>,
    tags: Option<serde_json::Value>,
    transitive_tag_keys: Option<serde_json::Value>,
}

/// Session tags: at most 20, and at most 20 transitive keys (docs/simulator.md#sts).
pub const MAX_SESSION_TAGS: usize = 20;

/// The attribution an AssumeAgency call carried, once validated.
#[derive(Debug, Default, PartialEq)]
pub struct Attribution {
    pub source_identity: Option<String>,
    pub tags: Vec<(String, String)>,
    pub transitive_tag_keys: Vec<String>,
}

/// 2..64 characters of `[\w+=,.@-]`.
pub fn valid_source_identity(s: &str) -> bool {
    (2..=64).contains(&s.chars().count())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
}

/// IAM's tag characters: letters, digits, spaces and `_.:/=+-@` (the simulator's reading of
/// Huawei's tag rules).
fn tag_chars(s: &str) -> bool {
    s.chars().all(|c| c.is_alphanumeric() || " _.:/=+-@".contains(c))
}

/// Huawei's session tag rules (huawei-cloud-api.md §6.1): at most 20 tags, keys 1..128 not
/// starting with `_sys_` and not repeated, values 0..255 strings (never null); at most 20
/// transitive keys, each naming a tag of the call.
pub fn check_attribution(
    source_identity: Option<&str>,
    tags: Option<&[serde_json::Value]>,
    transitive: Option<&[String]>,
) -> Result<Attribution, ApiError> {
    if let Some(si) = source_identity
        && !valid_source_identity(si)
    {
        return Err(bad(
            "source_identity must be 2..64 characters of letters, digits and _+=,.@-",
        ));
    }
    let tags = tags.unwrap_or_default();
    if tags.len() > MAX_SESSION_TAGS {
        return Err(bad(format!("at most {MAX_SESSION_TAGS} tags are allowed")));
    }
    let mut out = Vec::with_capacity(tags.len());
    for (i, t) in tags.iter().enumerate() {
        let key = t.get("key").and_then(serde_json::Value::as_str);
        let value = t.get("value").and_then(serde_json::Value::as_str);
        let (Some(key), Some(value)) = (key, value) else {
            return Err(bad(format!("tags[{i}] needs a string key and a string value")));
        };
        if !(1..=128).contains(&key.chars().count()) || key.starts_with("_sys_") || !tag_chars(key) {
            return Err(bad(format!(
                "tags[{i}].key must be 1..128 characters of letters, digits, spaces and _.:/=+-@, not starting with _sys_"
            )));
        }
        if value.chars().count() > 255 || !tag_chars(value) {
            return Err(bad(format!(
                "tags[{i}].value must be at most 255 characters of letters, digits, spaces and _.:/=+-@"
            )));
        }
        if out.iter().any(|(k, _): &(String, String)| k == key) {
            return Err(bad(format!("tags[{i}].key repeats an earlier key")));
        }
        out.push((key.to_owned(), value.to_owned()));
    }
    let transitive = transitive.unwrap_or_default();
    if transitive.len() > MAX_SESSION_TAGS {
        return Err(bad(format!(
            "at most {MAX_SESSION_TAGS} transitive_tag_keys are allowed"
        )));
    }
    if let Some(k) = transitive.iter().find(|k| !out.iter().any(|(key, _)| key == *k)) {
        return Err(bad(format!(
            "transitive_tag_keys names {k:?}, which is not one of the request's tags"
        )));
    }
    Ok(Attribution {
        source_identity: source_identity.map(str::to_owned),
        tags: out,
        transitive_tag_keys: transitive.to_vec(),
    })
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code::STS_BAD_REQUEST, message)
}

/// serde's messages can quote field values; an id_token must never end up in a response, so only
/// the position is reported.
pub fn parse_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    bad: impl Fn(String) -> ApiError,
) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "has a missing or mistyped field",
            _ => "is not valid JSON",
        };
        bad(format!(
            "the request body {what} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, ApiError> {
    value.as_deref().ok_or_else(|| bad(format!("{name} is required")))
}

/// Huawei's URN pattern: five colon-separated segments, the second possibly empty
/// (docs/simulator.md#sts).
pub fn valid_urn(urn: &str) -> bool {
    let parts: Vec<&str> = urn.splitn(5, ':').collect();
    let class = |s: &str, star: bool| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=-_".contains(c) || (star && c == '*'))
    };
    urn.len() <= 1500
        && parts.len() == 5
        && !parts[0].is_empty()
        && class(parts[0], false)
        && parts[1].len() <= 255
        && class(parts[1], true)
        && (1..=64).contains(&parts[2].len())
        && class(parts[2], false)
        && (1..=64).contains(&parts[3].len())
        && class(parts[3], false)
        && !parts[4].is_empty()
}

/// 2..128 characters of `[\w+=,.@-]`.
pub fn valid_session_name(name: &str) -> bool {
    (2..=128).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
}

pub fn check_duration(requested: Option<i64>) -> Result<i64, ApiError> {
    let d = requested.unwrap_or(DEFAULT_DURATION);
    if !(MIN_DURATION..=MAX_DURATION).contains(&d) {
        return Err(bad(format!(
            "duration_seconds {d} is outside {MIN_DURATION}..{MAX_DURATION}"
        )));
    }
    Ok(d)
}

fn check_policy(policy: &Option<String>) -> Result<(), ApiError> {
    match policy {
        Some(p) if !(2..=4096).contains(&p.chars().count()) => Err(bad("policy must be 2..4096 characters")),
        _ => Ok(()),
    }
}

fn check_against_agency(duration: i64, agency: &AgencyInfo, chained: bool) -> Result<(), ApiError> {
    if duration > i64::from(agency.max_session_seconds) {
        return Err(bad(format!(
            "duration_seconds {duration} exceeds the maximum session duration {} of agency {}",
            agency.max_session_seconds, agency.urn
        )));
    }
    if chained && duration > CHAINED_MAX_DURATION {
        return Err(bad(format!(
            "duration_seconds {duration} exceeds {CHAINED_MAX_DURATION}: the request is signed with temporary \
             credentials (agency chaining)"
        )));
    }
    Ok(())
}

pub fn principal_urn(caller: &Caller) -> String {
    match caller {
        Caller::User { name, account_id } => format!("iam::{account_id}:user:{name}"),
        Caller::Session {
            account_id,
            agency_name,
            session_name,
        } => {
            format!("sts::{account_id}::assumed-agency:{agency_name}/{session_name}")
        }
    }
}

/// ISO-8601 UTC with milliseconds, e.g. `2022-09-07T03:27:51.158Z`.
pub fn format_expiration(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn credentials_json(agency: &AgencyInfo, session_name: &str, issued: &Issued) -> serde_json::Value {
    json!({
        "assumed_agency": {
            "urn": format!("sts::{}::assumed-agency:{}/{session_name}", agency.account_id, agency.name),
            "id": format!("{}:{session_name}", stable_id(&agency.urn)),
        },
        "credentials": {
            "access_key_id": issued.access_key_id,
            "secret_access_key": issued.secret_access_key.expose(),
            "security_token": issued.security_token.expose(),
            "expiration": format_expiration(issued.expires_at),
        }
    })
}

fn minted(body: serde_json::Value, agency_urn: &str) -> Response {
    let mut resp = Json(body).into_response();
    resp.extensions_mut().insert(Minted(agency_urn.to_owned()));
    resp
}

pub async fn assume_agency(
    State(sim): State<SharedSim>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let now = sim.now();
    let received = Received::of(&method, &uri, &headers, &body);
    let caller = auth::verify(&sim, &received, now)?;

    let req: AssumeBody = parse_body(&body, bad)?;
    let urn = required(&req.agency_urn, "agency_urn")?;
    if !valid_urn(urn) {
        return Err(bad(
            "agency_urn is not a valid agency URN (iam::<account_id>:agency:<name>)",
        ));
    }
    let session_name = required(&req.agency_session_name, "agency_session_name")?;
    if !valid_session_name(session_name) {
        return Err(bad(
            "agency_session_name must be 2..128 characters of letters, digits and _+=,.@-",
        ));
    }
    let duration = check_duration(req.duration_seconds)?;
    check_policy(&req.policy)?;
    let attribution = check_attribution(
        req.source_identity.as_deref(),
        req.tags.as_deref(),
        req.transitive_tag_keys.as_deref(),
    )?;

    let agency = sim.catalog.agencies.get(urn).ok_or_else(|| {
        ApiError::not_found(code::STS_NO_AGENCY, format!("the agency '{urn}' cannot be found"))
    })?;
    let trusted = match &caller {
        Caller::User { name, .. } => agency.trusted_users.iter().any(|t| t == "*" || t == name),
        Caller::Session { .. } => agency.trusted_users.iter().any(|t| t == "*"),
    };
    if !trusted {
        return Err(ApiError::sts_denied(format!(
            "{} is not allowed to perform sts:agencies:assume on {urn}",
            principal_urn(&caller)
        )));
    }
    check_against_agency(duration, agency, caller.is_temporary())?;

    let lifetime = sim.effective_lifetime(duration.unsigned_abs());
    let issued = sim.issue_key(&agency.account_id, &agency.name, session_name, lifetime, now);
    let mut body = credentials_json(agency, session_name, &issued);
    if let (Some(si), Some(obj)) = (&attribution.source_identity, body.as_object_mut()) {
        obj.insert("source_identity".into(), si.clone().into());
    }
    lock(&sim.stats).record_session(SessionRecord {
        operation: "AssumeAgency",
        access_key_id: issued.access_key_id.clone(),
        agency_urn: urn.to_owned(),
        session_name: session_name.to_owned(),
        source_identity: attribution.source_identity,
        tags: attribution.tags.into_iter().collect(),
        transitive_tag_keys: attribution.transitive_tag_keys,
        expires_at: format_expiration(issued.expires_at),
    });
    Ok(minted(body, urn))
}

pub async fn assume_agency_with_oidc(
    State(sim): State<SharedSim>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let now = sim.now();
    let req: AssumeOidcBody = parse_body(&body, bad)?;
    let provider_urn = required(&req.provider_urn, "provider_urn")?;
    let urn = required(&req.agency_urn, "agency_urn")?;
    let session_name = required(&req.agency_session_name, "agency_session_name")?;
    let id_token = required(&req.id_token, "id_token")?;
    if !valid_urn(provider_urn) {
        return Err(bad(
            "provider_urn is not a valid URN (iam::<account_id>:oidcProvider:<name>)",
        ));
    }
    if !valid_urn(urn) {
        return Err(bad(
            "agency_urn is not a valid agency URN (iam::<account_id>:agency:<name>)",
        ));
    }
    if !valid_session_name(session_name) {
        return Err(bad(
            "agency_session_name must be 2..128 characters of letters, digits and _+=,.@-",
        ));
    }
    if !(4..=20_000).contains(&id_token.len()) {
        return Err(bad("id_token must be 4..20000 characters"));
    }
    let duration = check_duration(req.duration_seconds)?;
    check_policy(&req.policy)?;
    for (name, present) in [
        ("source_identity", req.source_identity.is_some()),
        ("tags", req.tags.is_some()),
        ("transitive_tag_keys", req.transitive_tag_keys.is_some()),
    ] {
        if present {
            return Err(bad(format!(
                "{name} is not a parameter of AssumeAgencyWithOIDC (session tags come from the id_token)"
            )));
        }
    }

    let provider = sim.catalog.providers.get(provider_urn).ok_or_else(|| {
        ApiError::not_found(
            code::STS_NO_PROVIDER,
            format!("the identity provider '{provider_urn}' cannot be found"),
        )
    })?;
    let agency = sim.catalog.agencies.get(urn).ok_or_else(|| {
        ApiError::not_found(code::STS_NO_AGENCY, format!("the agency '{urn}' cannot be found"))
    })?;

    let verified = provider.verify(id_token).await.map_err(|e| match e {
        JwtError::Malformed(m) => bad(m),
        JwtError::Rejected(m) => ApiError::sts_denied(m),
        JwtError::Unavailable(m) => ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            code::STS_IDP_UNAVAILABLE,
            m,
        ),
    })?;

    let entries: Vec<_> = agency
        .trusted_oidc
        .iter()
        .filter(|t| t.provider == provider_urn)
        .collect();
    if entries.is_empty() {
        return Err(ApiError::sts_denied(format!(
            "agency {urn} does not trust identity provider {provider_urn}"
        )));
    }
    let audience = entries
        .iter()
        .flat_map(|t| {
            verified
                .audiences
                .iter()
                .filter(|a| t.audiences.contains(a))
                .map(move |a| (t, a))
        })
        .collect::<Vec<_>>();
    if audience.is_empty() {
        return Err(ApiError::sts_denied(format!(
            "none of the id_token audiences {:?} is trusted by agency {urn} for {provider_urn}",
            verified.audiences
        )));
    }
    let Some((_, matched_aud)) = audience
        .iter()
        .find(|(t, _)| t.subjects.iter().any(|s| subject_matches(s, &verified.subject)))
    else {
        return Err(ApiError::sts_denied(format!(
            "subject {} is not trusted by agency {urn} for {provider_urn}",
            verified.subject
        )));
    };
    check_against_agency(duration, agency, false)?;

    let lifetime = sim.effective_lifetime(duration.unsigned_abs());
    let issued = sim.issue_key(&agency.account_id, &agency.name, session_name, lifetime, now);
    lock(&sim.stats).record_session(SessionRecord {
        operation: "AssumeAgencyWithOIDC",
        access_key_id: issued.access_key_id.clone(),
        agency_urn: urn.to_owned(),
        session_name: session_name.to_owned(),
        source_identity: None,
        tags: Default::default(),
        transitive_tag_keys: Vec::new(),
        expires_at: format_expiration(issued.expires_at),
    });
    let mut body = credentials_json(agency, session_name, &issued);
    if let Some(obj) = body.as_object_mut() {
        obj.insert("audience".into(), (*matched_aud).clone().into());
        obj.insert("provider".into(), provider_urn.into());
        obj.insert("subject_from_id_token".into(), verified.subject.clone().into());
    }
    Ok(minted(body, urn))
}

pub async fn get_caller_identity(
    State(sim): State<SharedSim>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let received = Received::of(&method, &uri, &headers, &body);
    let caller = auth::verify(&sim, &received, sim.now())?;
    let (account_id, principal_id) = match &caller {
        Caller::User { name, account_id } => (
            account_id.clone(),
            stable_id(&format!("{account_id}:user:{name}")),
        ),
        Caller::Session {
            account_id,
            agency_name,
            session_name,
        } => {
            let agency = crate::state::agency_urn(account_id, agency_name);
            (
                account_id.clone(),
                format!("{}:{session_name}", stable_id(&agency)),
            )
        }
    };
    Ok(Json(json!({
        "account_id": account_id,
        "principal_urn": principal_urn(&caller),
        "principal_id": principal_id,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_rules() {
        assert_eq!(check_duration(None).unwrap(), 3600);
        assert_eq!(check_duration(Some(900)).unwrap(), 900);
        assert_eq!(check_duration(Some(43_200)).unwrap(), 43_200);
        let e = check_duration(Some(899)).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "STS5.0400"));
        assert!(check_duration(Some(43_201)).is_err());

        let agency = AgencyInfo {
            account_id: "a".into(),
            name: "n".into(),
            urn: "iam::a:agency:n".into(),
            max_session_seconds: 7200,
            trusted_users: vec![],
            trusted_oidc: vec![],
        };
        assert!(check_against_agency(7200, &agency, false).is_ok());
        assert!(check_against_agency(7201, &agency, false).is_err());
        assert!(check_against_agency(3600, &agency, true).is_ok());
        let e = check_against_agency(3601, &agency, true).unwrap_err();
        assert!(e.message.contains("chaining"), "{e}");
    }

    #[test]
    fn urn_and_session_name_patterns() {
        assert!(valid_urn(
            "iam::0123456789abcdef0123456789abcdef:agency:ops-admin"
        ));
        assert!(valid_urn("iam::0123:oidcProvider:k8s"));
        assert!(!valid_urn("iam:0123:agency:x"));
        assert!(!valid_urn("iam::0123:agency:"));
        assert!(valid_session_name("k8s-operator"));
        assert!(valid_session_name("a.b@c=d,e+f_g"));
        assert!(!valid_session_name("x"));
        assert!(!valid_session_name("has space"));
        assert!(!valid_session_name(&"a".repeat(129)));
    }

    #[test]
    fn attribution_follows_huaweis_rules() {
        let tag = |k: &str, v: serde_json::Value| json!({"key": k, "value": v});
        let ok = check_attribution(
            Some("team-a.billing"),
            Some(&[tag("tcred.namespace", json!("team-a")), tag("empty", json!(""))]),
            Some(&["tcred.namespace".to_owned()]),
        )
        .unwrap();
        assert_eq!(ok.tags.len(), 2);
        assert_eq!(ok.source_identity.as_deref(), Some("team-a.billing"));

        let refused = |si: Option<&str>, tags: &[serde_json::Value], tr: &[String]| {
            let e = check_attribution(si, Some(tags), Some(tr)).unwrap_err();
            assert_eq!((e.status.as_u16(), e.code), (400, "STS5.0400"));
            e.message
        };
        assert!(refused(Some(&"a".repeat(65)), &[], &[]).contains("source_identity"));
        assert!(refused(Some("x"), &[], &[]).contains("source_identity"));
        assert!(refused(Some("has/slash"), &[], &[]).contains("source_identity"));
        let many: Vec<_> = (0..21).map(|i| tag(&format!("k{i}"), json!("v"))).collect();
        assert!(refused(None, &many, &[]).contains("at most 20 tags"));
        assert!(refused(None, &[tag("_sys_x", json!("v"))], &[]).contains("_sys_"));
        assert!(refused(None, &[tag(&"k".repeat(129), json!("v"))], &[]).contains("key"));
        assert!(refused(None, &[tag("", json!("v"))], &[]).contains("key"));
        assert!(refused(None, &[tag("k", json!("v".repeat(256)))], &[]).contains("value"));
        assert!(refused(None, &[tag("k", json!(null))], &[]).contains("string value"));
        assert!(refused(None, &[tag("k", json!("a")), tag("k", json!("b"))], &[]).contains("repeats"));
        assert!(refused(None, &[tag("k", json!("a"))], &["other".to_owned()]).contains("not one of"));
    }

    #[test]
    fn expiration_has_milliseconds_and_z() {
        let at: Timestamp = "2022-09-07T03:27:51.158123Z".parse().unwrap();
        assert_eq!(format_expiration(at), "2022-09-07T03:27:51.158Z");
        let whole: Timestamp = "2022-09-07T03:27:51Z".parse().unwrap();
        assert_eq!(format_expiration(whole), "2022-09-07T03:27:51.000Z");
    }

    #[test]
    fn body_errors_do_not_echo_values() {
        let e = parse_body::<AssumeOidcBody>(br#"{"id_token": 12, "x": "eyJsecret"}"#, bad)
            .err()
            .unwrap();
        assert!(!e.message.contains("eyJ"), "{e}");
        let e = parse_body::<AssumeOidcBody>(br#"{"duration_seconds": "eyJsecret"}"#, bad)
            .err()
            .unwrap();
        assert!(!e.message.contains("eyJ"), "{e}");
    }
}
