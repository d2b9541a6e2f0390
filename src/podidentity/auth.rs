//! Who is asking: a ServiceAccount token authenticated by TokenReview for tcred's own audience,
//! with the result cached by the token's SHA-256 (never the token) for at most [`MAX_TTL`] and
//! never past the token's own `exp`. The cache is bounded; a refused token is not cached. Before
//! any review, a token that is not even a JWT, whose `exp` has passed or whose `aud` lacks the
//! audience is refused locally (those claims are only ever used to refuse, never to allow).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::{Api, Client, api::PostParams};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::{
    limits::{Rate, Shared},
    metrics::EndpointMetrics,
};

/// Longest a review result is reused.
pub const MAX_TTL: Duration = Duration::from_secs(5 * 60);

/// An authenticated ServiceAccount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub namespace: String,
    pub service_account: String,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a valid token for the audience (401).
    Unauthenticated,
    /// Too many new tokens to review right now (429).
    Throttled,
    /// The API server could not be asked (503).
    Unavailable,
}

/// Bounds of the authenticator.
#[derive(Debug, Clone, Copy)]
pub struct AuthLimits {
    /// TokenReviews per second across all tokens not yet cached.
    pub reviews: Rate,
    /// TokenReviews in flight at once.
    pub reviews_in_flight: usize,
    /// Review results cached at most.
    pub max_cached: usize,
}

impl Default for AuthLimits {
    fn default() -> Self {
        Self {
            reviews: Rate::new(100.0, 200),
            reviews_in_flight: 64,
            max_cached: 10_000,
        }
    }
}

struct Entry {
    identity: Arc<Identity>,
    until: Instant,
}

pub struct Authenticator {
    client: Client,
    audience: String,
    limits: AuthLimits,
    reviews: Shared,
    in_flight: Semaphore,
    cache: Mutex<HashMap<[u8; 32], Entry>>,
    metrics: Arc<EndpointMetrics>,
}

/// The SHA-256 of a token: the only form in which a token is kept.
pub fn token_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Authenticator {
    pub fn new(client: Client, audience: String, limits: AuthLimits, metrics: Arc<EndpointMetrics>) -> Self {
        Self {
            client,
            audience,
            reviews: Shared::new(limits.reviews),
            in_flight: Semaphore::new(limits.reviews_in_flight.max(1)),
            limits,
            cache: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Who `token` (whose SHA-256 is `key`) belongs to.
    pub async fn authenticate(&self, key: &[u8; 32], token: &str) -> Result<Arc<Identity>, Refusal> {
        if let Some(id) = self.cached(key) {
            return Ok(id);
        }
        let now = jiff::Timestamp::now().as_second();
        let claims = Claims::peek(token).ok_or(Refusal::Unauthenticated)?;
        if !claims.may_be_valid(&self.audience, now) {
            self.metrics.review("refused_locally");
            return Err(Refusal::Unauthenticated);
        }
        let _slot = self.in_flight.try_acquire().map_err(|_| Refusal::Throttled)?;
        if !self.reviews.try_take() {
            self.metrics.review("throttled");
            return Err(Refusal::Throttled);
        }
        let identity = Arc::new(self.review(token).await?);
        if let Some(ttl) = claims.ttl(now) {
            self.remember(*key, identity.clone(), ttl);
        }
        Ok(identity)
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Arc<Identity>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|e| e.until > Instant::now())
            .map(|e| e.identity.clone())
    }

    fn remember(&self, key: [u8; 32], identity: Arc<Identity>, ttl: Duration) {
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= self.limits.max_cached {
            cache.retain(|_, e| e.until > now);
        }
        if cache.len() >= self.limits.max_cached {
            // Full of live entries: drop the one that would lapse first.
            let first = cache.iter().min_by_key(|(_, e)| e.until).map(|(k, _)| *k);
            if let Some(k) = first {
                cache.remove(&k);
            }
        }
        let until = now + ttl.min(MAX_TTL);
        cache.insert(key, Entry { identity, until });
        self.metrics
            .cached_tokens
            .set(i64::try_from(cache.len()).unwrap_or(i64::MAX));
    }

    /// Review results cached now (expired ones included until they are swept).
    pub fn cached_len(&self) -> usize {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    async fn review(&self, token: &str) -> Result<Identity, Refusal> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let api = Api::<TokenReview>::all(self.client.clone());
        let status = match api.create(&PostParams::default(), &review).await {
            Ok(r) => r.status.unwrap_or_default(),
            Err(e) => {
                // The error names no token: TokenReview errors carry the API server's message.
                tracing::warn!(error = %e, "TokenReview failed");
                self.metrics.review("error");
                return Err(Refusal::Unavailable);
            }
        };
        let audience_ok = status
            .audiences
            .as_ref()
            .is_some_and(|a| a.contains(&self.audience));
        let identity = status
            .user
            .as_ref()
            .and_then(|u| u.username.as_deref())
            .and_then(service_account);
        match (status.authenticated == Some(true) && audience_ok, identity) {
            (true, Some(id)) => {
                self.metrics.review("authenticated");
                Ok(id)
            }
            _ => {
                self.metrics.review("unauthenticated");
                Err(Refusal::Unauthenticated)
            }
        }
    }
}

/// `system:serviceaccount:<namespace>:<name>` → the ServiceAccount; anything else (a user, a
/// node) is not one.
pub fn service_account(username: &str) -> Option<Identity> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then(|| Identity {
        namespace: namespace.to_owned(),
        service_account: name.to_owned(),
    })
}

/// The claims read from a token *without* checking its signature.
#[derive(Debug, Default, serde::Deserialize)]
struct Claims {
    exp: Option<i64>,
    #[serde(default)]
    aud: Audiences,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(untagged)]
enum Audiences {
    #[default]
    Missing,
    One(String),
    Many(Vec<String>),
}

impl Claims {
    fn peek(token: &str) -> Option<Self> {
        let mut parts = token.split('.');
        let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || payload.len() > 8 * 1024 {
            return None;
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// False only when the token cannot be valid for `audience` at `now` (seconds).
    fn may_be_valid(&self, audience: &str, now: i64) -> bool {
        let not_expired = self.exp.is_none_or(|exp| exp > now);
        let audience_ok = match &self.aud {
            Audiences::Missing => true,
            Audiences::One(a) => a == audience,
            Audiences::Many(a) => a.iter().any(|x| x == audience),
        };
        not_expired && audience_ok
    }

    /// How long a review of this (authenticated) token may be reused: until its `exp`, at most
    /// [`MAX_TTL`]; a token without `exp` is not cached.
    fn ttl(&self, now: i64) -> Option<Duration> {
        let left = self.exp?.checked_sub(now)?;
        let left = u64::try_from(left).ok().filter(|s| *s > 0)?;
        Some(Duration::from_secs(left).min(MAX_TTL))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        let e = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.sig",
            e(br#"{"alg":"RS256"}"#),
            e(claims.to_string().as_bytes())
        )
    }

    #[test]
    fn only_service_account_usernames_are_identities() {
        assert_eq!(
            service_account("system:serviceaccount:team-a:app"),
            Some(Identity {
                namespace: "team-a".into(),
                service_account: "app".into()
            })
        );
        for bad in [
            "alice",
            "system:node:n1",
            "system:serviceaccount:ns",
            "system:serviceaccount::x",
        ] {
            assert!(service_account(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn garbage_expired_and_wrong_audience_tokens_are_refused_before_any_review() {
        assert!(Claims::peek("garbage").is_none());
        assert!(Claims::peek("a.b.c.d").is_none());
        let now = 1_000_000;
        let ok = Claims::peek(&jwt(serde_json::json!({"aud": ["tcred.dev"], "exp": now + 60}))).unwrap();
        assert!(ok.may_be_valid("tcred.dev", now));
        let expired = Claims::peek(&jwt(serde_json::json!({"aud": "tcred.dev", "exp": now}))).unwrap();
        assert!(!expired.may_be_valid("tcred.dev", now));
        let other = Claims::peek(&jwt(
            serde_json::json!({"aud": ["https://kubernetes.default.svc"]}),
        ))
        .unwrap();
        assert!(!other.may_be_valid("tcred.dev", now));
    }

    #[test]
    fn a_review_is_reused_no_longer_than_the_token_lives_and_at_most_five_minutes() {
        let now = 1_000_000;
        let c = |exp: Option<i64>| Claims {
            exp,
            aud: Audiences::Missing,
        };
        assert_eq!(c(Some(now + 30)).ttl(now), Some(Duration::from_secs(30)));
        assert_eq!(c(Some(now + 3600)).ttl(now), Some(MAX_TTL));
        assert_eq!(c(Some(now)).ttl(now), None);
        assert_eq!(c(None).ttl(now), None);
        assert_eq!(c(Some(i64::MIN)).ttl(i64::MAX), None, "no overflow");
    }
}
