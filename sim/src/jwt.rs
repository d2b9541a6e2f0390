//! OIDC identity providers for AssumeAgencyWithOIDC: their JWKS (inline, or fetched lazily from
//! `jwksUri`, cached, re-fetched on an unknown `kid`) and verification of an `id_token`
//! (ES256/RS256 signature, `iss`, `exp`/`nbf` with 60 s leeway).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::OidcProvider;
use crate::lock::lock;

/// Clock-skew allowance for `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 60;
/// A fetch on an unknown `kid` happens at most this often, so a stream of bogus tokens cannot
/// turn the simulator into a JWKS hammer.
const REFETCH_INTERVAL: Duration = Duration::from_secs(5);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

struct Cached {
    keys: Arc<Vec<Key>>,
    fetched_at: Instant,
}

enum Source {
    Inline(Arc<Vec<Key>>),
    Remote {
        uri: String,
        client: reqwest::Client,
        cache: Mutex<Option<Cached>>,
        /// Serialises fetches; held across the fetch's await, but it is per provider and only
        /// taken on a cache miss.
        fetching: tokio::sync::Mutex<()>,
    },
}

pub struct Provider {
    pub issuer: String,
    source: Source,
}

/// Why an `id_token` was not accepted; the handler maps these to 400 / 403 / 503.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    Malformed(String),
    Rejected(String),
    Unavailable(String),
}

/// The claims AssumeAgencyWithOIDC needs from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub subject: String,
    pub audiences: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    aud: Audience,
}

impl Provider {
    pub fn from_config(p: &OidcProvider) -> Result<Self, String> {
        let source = match (&p.jwks, &p.jwks_uri) {
            (Some(inline), _) => Source::Inline(Arc::new(
                parse_jwks(inline).map_err(|e| format!("oidc provider {}: jwks: {e}", p.urn))?,
            )),
            (None, Some(uri)) => {
                tcred::cloud::http::install_crypto_provider();
                let mut builder = reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    .hickory_dns(true)
                    .redirect(reqwest::redirect::Policy::none());
                if let Some(path) = &p.ca_file {
                    let pem = std::fs::read(path).map_err(|e| {
                        format!("oidc provider {}: reading caFile {}: {e}", p.urn, path.display())
                    })?;
                    let cert = reqwest::Certificate::from_pem(&pem)
                        .map_err(|e| format!("oidc provider {}: caFile {}: {e}", p.urn, path.display()))?;
                    builder = builder.add_root_certificate(cert);
                }
                let client = builder
                    .build()
                    .map_err(|e| format!("oidc provider {}: building the JWKS client: {e}", p.urn))?;
                Source::Remote {
                    uri: uri.clone(),
                    client,
                    cache: Mutex::new(None),
                    fetching: tokio::sync::Mutex::new(()),
                }
            }
            (None, None) => return Err(format!("oidc provider {}: no jwks or jwksUri", p.urn)),
        };
        Ok(Self {
            issuer: p.issuer.clone(),
            source,
        })
    }

    /// Verifies signature, issuer and validity window; audience and subject are checked by the
    /// caller against the agency's trust entries.
    pub async fn verify(&self, token: &str) -> Result<Verified, JwtError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| JwtError::Malformed(format!("id_token is not a well-formed JWT: {e}")))?;
        if !matches!(header.alg, Algorithm::ES256 | Algorithm::RS256) {
            return Err(JwtError::Malformed(format!(
                "id_token alg {:?} is not supported (ES256 or RS256)",
                header.alg
            )));
        }
        let kid = header.kid.as_deref();
        let candidates = self.keys_for(header.alg, kid).await?;
        if candidates.is_empty() {
            return Err(JwtError::Rejected(format!(
                "no key in the provider's JWKS matches kid {:?} and alg {:?}",
                kid.unwrap_or(""),
                header.alg
            )));
        }

        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);

        let mut last = JwtError::Rejected("id_token signature verification failed".into());
        for key in candidates.iter() {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => {
                    let audiences = match data.claims.aud {
                        Audience::One(a) => vec![a],
                        Audience::Many(v) => v,
                    };
                    return Ok(Verified {
                        subject: data.claims.sub,
                        audiences,
                    });
                }
                Err(e) => {
                    last = map_error(e.kind(), &self.issuer);
                    // Only a signature mismatch is worth trying the next key for.
                    if !matches!(e.kind(), ErrorKind::InvalidSignature) {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    async fn keys_for(&self, alg: Algorithm, kid: Option<&str>) -> Result<Vec<Key>, JwtError> {
        let pick = |keys: &[Key]| -> Vec<Key> {
            keys.iter()
                .filter(|k| k.alg == alg && (kid.is_none() || k.kid.as_deref() == kid))
                .cloned()
                .collect()
        };
        match &self.source {
            Source::Inline(keys) => Ok(pick(keys)),
            Source::Remote {
                uri,
                client,
                cache,
                fetching,
            } => {
                let cached = lock(cache).as_ref().map(|c| (c.keys.clone(), c.fetched_at));
                if let Some((keys, _)) = &cached {
                    let found = pick(keys);
                    if !found.is_empty() {
                        return Ok(found);
                    }
                }
                let _guard = fetching.lock().await;
                // Another request may have refreshed the cache while this one waited.
                let cached = lock(cache).as_ref().map(|c| (c.keys.clone(), c.fetched_at));
                if let Some((keys, fetched_at)) = &cached {
                    let found = pick(keys);
                    if !found.is_empty() || fetched_at.elapsed() < REFETCH_INTERVAL {
                        return Ok(found);
                    }
                }
                let keys = Arc::new(fetch_jwks(client, uri).await?);
                *lock(cache) = Some(Cached {
                    keys: keys.clone(),
                    fetched_at: Instant::now(),
                });
                Ok(pick(&keys))
            }
        }
    }
}

fn map_error(kind: &ErrorKind, issuer: &str) -> JwtError {
    match kind {
        ErrorKind::InvalidSignature => JwtError::Rejected("id_token signature verification failed".into()),
        ErrorKind::ExpiredSignature => JwtError::Rejected("id_token has expired".into()),
        ErrorKind::ImmatureSignature => JwtError::Rejected("id_token is not valid yet (nbf)".into()),
        ErrorKind::InvalidIssuer => JwtError::Rejected(format!(
            "id_token iss does not match the provider issuer {issuer}"
        )),
        ErrorKind::MissingRequiredClaim(c) => JwtError::Malformed(format!("id_token has no {c} claim")),
        other => JwtError::Malformed(format!("id_token could not be decoded: {other:?}")),
    }
}

async fn fetch_jwks(client: &reqwest::Client, uri: &str) -> Result<Vec<Key>, JwtError> {
    let fail = |what: String| JwtError::Unavailable(format!("fetching the JWKS from {uri} failed: {what}"));
    let resp = client
        .get(uri)
        .send()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP {}", resp.status())));
    }
    let body: serde_json::Value = resp.json().await.map_err(|e| fail(e.without_url().to_string()))?;
    parse_jwks(&body).map_err(fail)
}

/// The RSA and P-256 keys of a `{"keys": [...]}` document; other key types are skipped (an HMAC
/// key in a JWKS must never let an HS256 token in).
fn parse_jwks(doc: &serde_json::Value) -> Result<Vec<Key>, String> {
    let list = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or_else(|| "expected an object with a \"keys\" array".to_owned())?;
    let mut out = Vec::new();
    for value in list {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value.clone()) else {
            continue;
        };
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
            _ => continue,
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("key {:?}: {e}", jwk.common.key_id))?;
        out.push(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
    }
    Ok(out)
}

/// Subject patterns in a trust entry: exact, `*`, or a prefix ending in `*`.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => subject.starts_with(prefix),
        None => pattern == subject,
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    /// P-256 key pair generated with `openssl ecparam -genkey -name prime256v1 | openssl pkcs8
    /// -topk8 -nocrypt -outform DER | base64` for these tests only.
    pub const EC_PKCS8_B64: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgd21r/5qwf1jNLnyfQYAjcnjCDhOXf84D2WWoTyW0sWahRANCAAT2oYvvhs6Sw4haViSoYiIrd1LAawA45FUkKzOQCkQ+8KgTluIpQO3+tKPom08He2E/Bd8gXG67PHvYEqieoEaL";
    pub const EC_X: &str = "9qGL74bOksOIWlYkqGIiK3dSwGsAOORVJCszkApEPvA";
    pub const EC_Y: &str = "qBOW4ilA7f60o-ibTwd7YT8F3yBcbrs8e9gSqJ6gRos";
    /// A second, unrelated P-256 key: its signatures must not verify against the JWK above.
    pub const OTHER_EC_PKCS8_B64: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgApc7vP6U1yCOmwI04vwacQk1AmesRHcp1glJxP2DkGihRANCAASqvNsIEXHKHiPfwbX+XE3Hv3jhnNuumIxLY73oZ80E13c8KcQTMvvR6ryL37T+t7JjgZ10qMGsYG4PnV9FhaBH";
    pub const ISSUER: &str = "https://kubernetes.default.svc";

    pub fn jwks() -> serde_json::Value {
        json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256", "x": EC_X, "y": EC_Y},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}
        ]})
    }

    pub fn sign_with(pkcs8_b64: &str, kid: &str, claims: &serde_json::Value) -> String {
        let der = base64::engine::general_purpose::STANDARD
            .decode(pkcs8_b64)
            .unwrap();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&der)).unwrap()
    }

    pub fn claims(sub: &str, aud: serde_json::Value, exp_offset: i64) -> serde_json::Value {
        let now = jiff::Timestamp::now().as_second();
        json!({"iss": ISSUER, "sub": sub, "aud": aud, "iat": now, "exp": now + exp_offset})
    }

    fn provider() -> Provider {
        let cfg = OidcProvider {
            urn: "iam::0123456789abcdef0123456789abcdef:oidcProvider:k8s".into(),
            issuer: ISSUER.into(),
            jwks_uri: None,
            ca_file: None,
            jwks: Some(jwks()),
        };
        Provider::from_config(&cfg).unwrap()
    }

    #[tokio::test]
    async fn accepts_a_valid_es256_token() {
        let token = sign_with(
            EC_PKCS8_B64,
            "k1",
            &claims("system:serviceaccount:a:b", json!(["sts", "x"]), 600),
        );
        let v = provider().verify(&token).await.unwrap();
        assert_eq!(v.subject, "system:serviceaccount:a:b");
        assert_eq!(v.audiences, vec!["sts".to_owned(), "x".to_owned()]);
        let single = sign_with(EC_PKCS8_B64, "k1", &claims("s", json!("sts"), 600));
        assert_eq!(
            provider().verify(&single).await.unwrap().audiences,
            vec!["sts".to_owned()]
        );
    }

    #[tokio::test]
    async fn rejects_bad_signature_expiry_issuer_and_garbage() {
        let p = provider();
        let forged = sign_with(OTHER_EC_PKCS8_B64, "k1", &claims("s", json!("sts"), 600));
        assert_eq!(
            p.verify(&forged).await.unwrap_err(),
            JwtError::Rejected("id_token signature verification failed".into())
        );

        // Expired beyond the 60 s leeway; 30 s past expiry is still inside it.
        let expired = sign_with(EC_PKCS8_B64, "k1", &claims("s", json!("sts"), -120));
        assert_eq!(
            p.verify(&expired).await.unwrap_err(),
            JwtError::Rejected("id_token has expired".into())
        );
        let just_expired = sign_with(EC_PKCS8_B64, "k1", &claims("s", json!("sts"), -30));
        assert!(p.verify(&just_expired).await.is_ok());

        let mut wrong_iss = claims("s", json!("sts"), 600);
        wrong_iss["iss"] = json!("https://evil.example");
        let token = sign_with(EC_PKCS8_B64, "k1", &wrong_iss);
        assert!(matches!(p.verify(&token).await.unwrap_err(), JwtError::Rejected(m) if m.contains("iss")));

        let unknown_kid = sign_with(EC_PKCS8_B64, "k2", &claims("s", json!("sts"), 600));
        assert!(
            matches!(p.verify(&unknown_kid).await.unwrap_err(), JwtError::Rejected(m) if m.contains("kid"))
        );

        assert!(matches!(
            p.verify("not-a-jwt").await.unwrap_err(),
            JwtError::Malformed(_)
        ));

        let mut no_sub = claims("s", json!("sts"), 600);
        no_sub.as_object_mut().unwrap().remove("sub");
        let token = sign_with(EC_PKCS8_B64, "k1", &no_sub);
        assert!(matches!(p.verify(&token).await.unwrap_err(), JwtError::Malformed(m) if m.contains("sub")));
    }

    #[tokio::test]
    async fn hs256_tokens_are_refused_even_with_an_oct_key_in_the_jwks() {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("hmac".into());
        let token = jsonwebtoken::encode(
            &header,
            &claims("s", json!("sts"), 600),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(
            matches!(provider().verify(&token).await.unwrap_err(), JwtError::Malformed(m) if m.contains("alg"))
        );
    }

    #[tokio::test]
    async fn remote_jwks_is_fetched_lazily_cached_and_refetched_for_new_kids() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static FETCHES: AtomicUsize = AtomicUsize::new(0);
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(|| async {
                FETCHES.fetch_add(1, Ordering::SeqCst);
                axum::Json(jwks())
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let p = Provider::from_config(&OidcProvider {
            urn: "iam::0123456789abcdef0123456789abcdef:oidcProvider:remote".into(),
            issuer: ISSUER.into(),
            jwks_uri: Some(format!("http://{addr}/jwks")),
            ca_file: None,
            jwks: None,
        })
        .unwrap();
        assert_eq!(
            FETCHES.load(Ordering::SeqCst),
            0,
            "nothing is fetched before the first token"
        );
        let token = sign_with(EC_PKCS8_B64, "k1", &claims("s", json!("sts"), 600));
        p.verify(&token).await.unwrap();
        p.verify(&token).await.unwrap();
        assert_eq!(
            FETCHES.load(Ordering::SeqCst),
            1,
            "known kids come from the cache"
        );

        // An unknown kid may trigger a re-fetch, but not more than once per REFETCH_INTERVAL.
        let unknown = sign_with(EC_PKCS8_B64, "rotated", &claims("s", json!("sts"), 600));
        assert!(p.verify(&unknown).await.is_err());
        assert!(p.verify(&unknown).await.is_err());
        assert_eq!(FETCHES.load(Ordering::SeqCst), 1);

        let down = Provider::from_config(&OidcProvider {
            urn: "iam::0123456789abcdef0123456789abcdef:oidcProvider:down".into(),
            issuer: ISSUER.into(),
            jwks_uri: Some(format!("http://{addr}/missing")),
            ca_file: None,
            jwks: None,
        })
        .unwrap();
        assert!(
            matches!(down.verify(&token).await.unwrap_err(), JwtError::Unavailable(m) if m.contains("404"))
        );
    }

    #[test]
    fn subject_patterns() {
        assert!(subject_matches("*", "anything"));
        assert!(subject_matches(
            "system:serviceaccount:team-a:*",
            "system:serviceaccount:team-a:billing"
        ));
        assert!(!subject_matches(
            "system:serviceaccount:team-a:*",
            "system:serviceaccount:team-b:billing"
        ));
        assert!(subject_matches("exact", "exact"));
        assert!(!subject_matches("exact", "exactly"));
    }
}
