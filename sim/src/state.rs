//! In-memory state: the immutable catalog derived from the configuration (accounts, agencies,
//! users, permission sets) and the mutable runtime state (Identity Center clients, device codes and
//! sessions, issued temporary keys, fault and lifetime knobs, counters and the event log).
//!
//! Each piece of mutable state has its own `std::sync::Mutex`; no lock is ever held across an
//! `.await`, so a slow request (injected latency, a JWKS fetch) never blocks the others.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use base64::Engine;
use jiff::{SignedDuration, Timestamp};
use rand::Rng;
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};

use crate::config::{Config, ExpirationUnit};
use crate::hostile::{Hostile, Received};
use crate::jwt::Provider;
use crate::lock::lock;
use tcred::sensitive::SecretString;

pub fn agency_urn(account_id: &str, agency_name: &str) -> String {
    format!("iam::{account_id}:agency:{agency_name}")
}

/// A stable, id-looking 32-hex string derived from a name (agency ids, user ids).
pub fn stable_id(seed: &str) -> String {
    tcred::cloud::signer::hex_sha256(seed.as_bytes())[..32].to_owned()
}

// ---------------------------------------------------------------------------------------------
// Catalog

pub struct AgencyInfo {
    pub account_id: String,
    pub name: String,
    pub urn: String,
    pub max_session_seconds: u32,
    pub trusted_users: Vec<String>,
    pub trusted_oidc: Vec<crate::config::OidcTrust>,
}

pub struct UserInfo {
    pub name: String,
    pub account_id: String,
    pub secret: SecretString,
}

#[derive(Clone)]
pub struct PermissionSetInfo {
    pub account_id: String,
    pub name: String,
    pub agency_name: String,
    pub agency_urn: String,
    pub session_seconds: u32,
}

pub struct AccountInfo {
    pub id: String,
    pub name: String,
}

pub struct IcSettings {
    pub start_urls: Vec<String>,
    pub access_token_seconds: u64,
    pub client_secret_seconds: u64,
    pub issue_refresh_tokens: bool,
    pub device_code_seconds: u64,
    pub poll_interval_seconds: u64,
    pub portal_expiration_unit: ExpirationUnit,
}

pub struct Catalog {
    /// In configuration order, which is also the portal's listing order.
    pub accounts: Vec<AccountInfo>,
    pub agencies: HashMap<String, AgencyInfo>,
    pub users_by_ak: HashMap<String, UserInfo>,
    /// Keyed by (account id, agency URN).
    pub permission_sets: HashMap<(String, String), PermissionSetInfo>,
    /// Identity Center user name → assigned (account id, permission set name), in config order.
    pub ic_users: HashMap<String, Vec<(String, String)>>,
    pub providers: HashMap<String, Provider>,
    pub ic: IcSettings,
}

impl Catalog {
    pub fn build(cfg: Config) -> Result<Self, String> {
        let mut agencies = HashMap::new();
        let mut permission_sets = HashMap::new();
        let mut accounts = Vec::new();
        for a in cfg.accounts {
            for ag in a.agencies {
                let urn = agency_urn(&a.id, &ag.name);
                agencies.insert(
                    urn.clone(),
                    AgencyInfo {
                        account_id: a.id.clone(),
                        name: ag.name,
                        urn,
                        max_session_seconds: ag.max_session_seconds,
                        trusted_users: ag.trusted_users,
                        trusted_oidc: ag.trusted_oidc,
                    },
                );
            }
            for ps in a.permission_sets {
                let urn = agency_urn(&a.id, &ps.agency_name);
                permission_sets.insert(
                    (a.id.clone(), urn.clone()),
                    PermissionSetInfo {
                        account_id: a.id.clone(),
                        name: ps.name,
                        agency_name: ps.agency_name,
                        agency_urn: urn,
                        session_seconds: ps.session_seconds,
                    },
                );
            }
            accounts.push(AccountInfo {
                id: a.id,
                name: a.name,
            });
        }
        let users_by_ak = cfg
            .users
            .into_iter()
            .map(|u| {
                let info = UserInfo {
                    name: u.name,
                    account_id: u.account_id,
                    secret: u.secret_access_key,
                };
                (u.access_key_id, info)
            })
            .collect();
        let mut providers = HashMap::new();
        for p in cfg.oidc_providers {
            let provider = Provider::from_config(&p)?;
            providers.insert(p.urn, provider);
        }
        let ic = cfg.identity_center;
        let ic_users = ic
            .users
            .into_iter()
            .map(|u| {
                let list = u
                    .assignments
                    .into_iter()
                    .map(|a| (a.account_id, a.permission_set))
                    .collect();
                (u.name, list)
            })
            .collect();
        Ok(Self {
            accounts,
            agencies,
            users_by_ak,
            permission_sets,
            ic_users,
            providers,
            ic: IcSettings {
                start_urls: ic.start_urls,
                access_token_seconds: ic.access_token_seconds,
                client_secret_seconds: ic.client_secret_seconds,
                issue_refresh_tokens: ic.issue_refresh_tokens,
                device_code_seconds: ic.device_code_seconds,
                poll_interval_seconds: ic.poll_interval_seconds,
                portal_expiration_unit: ic.portal_expiration_unit,
            },
        })
    }

    /// The permission sets `user` is assigned in `account_id`, in configuration order.
    pub fn assigned_sets(&self, user: &str, account_id: &str) -> Vec<PermissionSetInfo> {
        let Some(assignments) = self.ic_users.get(user) else {
            return Vec::new();
        };
        assignments
            .iter()
            .filter(|(acct, _)| acct == account_id)
            .filter_map(|(acct, set)| {
                self.permission_sets
                    .values()
                    .find(|ps| &ps.account_id == acct && &ps.name == set)
                    .cloned()
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Runtime state

pub struct OidcClient {
    pub secret: SecretString,
    pub secret_expires_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceStatus {
    Pending,
    Approved(String),
    Denied,
    /// Exchanged for a token already; a device code is good for one exchange.
    Used,
}

pub struct Device {
    pub client_id: String,
    pub user_code: String,
    pub start_url: String,
    pub expires_at: Timestamp,
    pub interval: u64,
    pub last_poll: Option<Timestamp>,
    pub status: DeviceStatus,
}

pub struct Session {
    pub user: String,
    pub expires_at: Timestamp,
}

pub struct RefreshGrant {
    pub client_id: String,
    pub user: String,
}

#[derive(Default)]
pub struct IcState {
    pub clients: HashMap<String, OidcClient>,
    pub devices: HashMap<String, Device>,
    /// user code → device code
    pub user_codes: HashMap<String, String>,
    /// access token → session
    pub sessions: HashMap<String, Session>,
    /// refresh token → grant
    pub refresh: HashMap<String, RefreshGrant>,
}

/// A temporary key this simulator issued (STS or portal).
pub struct TempKey {
    pub secret: SecretString,
    pub token: SecretString,
    pub expires_at: Timestamp,
    pub account_id: String,
    pub agency_name: String,
    pub session_name: String,
}

/// An SWR login this simulator issued (docs/simulator.md#swr), by user name.
pub struct SwrLogin {
    pub password: SecretString,
    pub expires_at: Timestamp,
}

pub struct Issued {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub security_token: SecretString,
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultScope {
    /// AssumeAgency, AssumeAgencyWithOIDC, GetAgencyCredentials and SWR CreateSecret.
    #[default]
    Mint,
    /// Every OIDC, portal, STS and SWR operation.
    All,
    /// SWR CreateSecret only (a registry failing while STS works).
    Swr,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Faults {
    pub latency_ms: u64,
    /// Up to this many milliseconds more, varying per request (see [`Knobs::next_latency_ms`]).
    pub latency_jitter_ms: u64,
    pub error_rate: f64,
    pub throttle_rate: f64,
    pub retry_after_seconds: u64,
    pub scope: FaultScope,
    /// Seconds the simulated Huawei Cloud clock runs ahead of the host's (negative: behind).
    pub clock_offset_seconds: i64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            latency_jitter_ms: 0,
            error_rate: 0.0,
            throttle_rate: 0.0,
            retry_after_seconds: 1,
            scope: FaultScope::Mint,
            clock_offset_seconds: 0,
        }
    }
}

/// Fault decisions are deterministic: each rate feeds an accumulator and a fault fires every time
/// it crosses 1, so `errorRate: 0.25` fails exactly every fourth eligible request.
#[derive(Debug, Default)]
pub struct Knobs {
    pub faults: Faults,
    pub throttle_acc: f64,
    pub error_acc: f64,
    /// Alternates injected errors between 500 and 503.
    pub errors_injected: u64,
    /// Eligible requests since the last `PUT /control/faults`: the jitter sequence's position.
    pub latency_seq: u64,
    pub credential_seconds: Option<u64>,
    /// Hostile answers (`PUT /control/hostile`); the default is a well-behaved cloud.
    pub hostile: Hostile,
}

impl Knobs {
    /// The latency of the next eligible request: `latencyMs` plus a jitter in
    /// `0..=latencyJitterMs`, roughly uniform, in a scrambled order (splitmix64 of the request's
    /// position), so a run is reproducible from the same `PUT /control/faults`.
    pub fn next_latency_ms(&mut self) -> u64 {
        let (base, jitter) = (self.faults.latency_ms, self.faults.latency_jitter_ms);
        self.latency_seq = self.latency_seq.wrapping_add(1);
        if jitter == 0 {
            return base;
        }
        base.saturating_add(splitmix64(self.latency_seq) % (jitter + 1))
    }
}

/// Sebastiano Vigna's splitmix64 finaliser: a fixed scramble of a counter.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub seq: u64,
    pub operation: &'static str,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agency_urn: Option<String>,
}

pub const EVENT_LOG_CAPACITY: usize = 10_000;

/// One STS session the simulator issued, with the attribution its request carried
/// (`GET /control/sessions`): what Huawei's trace service (CTS) would record for the key.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    pub operation: &'static str,
    pub access_key_id: String,
    pub agency_urn: String,
    pub session_name: String,
    pub source_identity: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub transitive_tag_keys: Vec<String>,
    pub expires_at: String,
}

/// How many issued sessions `GET /control/sessions` keeps (oldest dropped first).
pub const SESSION_LOG_CAPACITY: usize = 1_000;

#[derive(Debug, Default)]
pub struct Stats {
    pub mints_total: u64,
    pub mints: BTreeMap<String, u64>,
    pub requests: BTreeMap<u16, u64>,
    pub by_operation: BTreeMap<&'static str, u64>,
    /// Requests received and not yet answered, by operation (a test waits for a call to be under
    /// way, e.g. a mint held by injected latency, instead of sleeping and hoping it started).
    pub in_flight: BTreeMap<&'static str, u64>,
    pub events: VecDeque<Event>,
    pub last_seq: u64,
    pub sessions: VecDeque<SessionRecord>,
}

impl Stats {
    pub fn record(&mut self, operation: &'static str, status: u16, minted: Option<String>) {
        *self.requests.entry(status).or_default() += 1;
        *self.by_operation.entry(operation).or_default() += 1;
        if let Some(urn) = &minted {
            self.mints_total += 1;
            *self.mints.entry(urn.clone()).or_default() += 1;
        }
        self.last_seq += 1;
        if self.events.len() == EVENT_LOG_CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            seq: self.last_seq,
            operation,
            status,
            agency_urn: minted,
        });
    }

    pub fn enter(&mut self, operation: &'static str) {
        *self.in_flight.entry(operation).or_default() += 1;
    }

    pub fn leave(&mut self, operation: &'static str) {
        if let Some(n) = self.in_flight.get_mut(operation) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(operation);
            }
        }
    }

    pub fn record_session(&mut self, session: SessionRecord) {
        if self.sessions.len() == SESSION_LOG_CAPACITY {
            self.sessions.pop_front();
        }
        self.sessions.push_back(session);
    }

    /// Counters go back to zero; the event log and its sequence numbers carry on so a reader
    /// polling `since` never sees numbers repeat.
    pub fn reset_counters(&mut self) {
        self.mints_total = 0;
        self.mints.clear();
        self.requests.clear();
        self.by_operation.clear();
    }
}

pub struct Sim {
    pub catalog: Catalog,
    pub ic: Mutex<IcState>,
    pub keys: Mutex<HashMap<String, TempKey>>,
    pub knobs: Mutex<Knobs>,
    pub stats: Mutex<Stats>,
    /// What clients sent (tokens, secrets), for `GET /control/received`.
    pub received: Mutex<Received>,
    /// SWR logins issued and not yet expired.
    pub swr_logins: Mutex<HashMap<String, SwrLogin>>,
}

pub type SharedSim = Arc<Sim>;

impl Sim {
    pub fn new(catalog: Catalog) -> Self {
        Self {
            catalog,
            ic: Mutex::default(),
            keys: Mutex::default(),
            knobs: Mutex::default(),
            stats: Mutex::default(),
            received: Mutex::default(),
            swr_logins: Mutex::default(),
        }
    }

    /// The simulator's clock: the host's, shifted by the `clockOffsetSeconds` fault (a Huawei Cloud
    /// whose clock differs from the cluster's). Signatures, expirations and the `Date` header all
    /// use it.
    pub fn now(&self) -> Timestamp {
        let offset = lock(&self.knobs).faults.clock_offset_seconds;
        Timestamp::now() + SignedDuration::from_secs(offset)
    }

    /// `requested`, capped by the `credentialSeconds` override when one is set.
    pub fn effective_lifetime(&self, requested: u64) -> u64 {
        match lock(&self.knobs).credential_seconds {
            Some(cap) => requested.min(cap),
            None => requested,
        }
    }

    pub fn issue_key(
        &self,
        account_id: &str,
        agency_name: &str,
        session_name: &str,
        lifetime_seconds: u64,
        now: Timestamp,
    ) -> Issued {
        let access_key_id = random_upper_alnum(20);
        let secret = SecretString::new(Alphanumeric.sample_string(&mut rand::rng(), 40));
        let token = SecretString::new(new_security_token());
        let expires_at =
            now + SignedDuration::from_secs(i64::try_from(lifetime_seconds).unwrap_or(i64::MAX / 2));
        lock(&self.keys).insert(
            access_key_id.clone(),
            TempKey {
                secret: secret.clone(),
                token: token.clone(),
                expires_at,
                account_id: account_id.to_owned(),
                agency_name: agency_name.to_owned(),
                session_name: session_name.to_owned(),
            },
        );
        Issued {
            access_key_id,
            secret_access_key: secret,
            security_token: token,
            expires_at,
        }
    }

    pub fn active_temporary_keys(&self, now: Timestamp) -> usize {
        lock(&self.keys).values().filter(|k| k.expires_at > now).count()
    }

    /// Drops what can no longer be used. Device codes and sessions linger a little past expiry so
    /// clients get `expired_token` / "expired" rather than "unknown".
    pub fn prune(&self, now: Timestamp) {
        let grace = SignedDuration::from_secs(600);
        lock(&self.keys).retain(|_, k| k.expires_at > now);
        lock(&self.swr_logins).retain(|_, l| l.expires_at > now);
        let mut ic = lock(&self.ic);
        ic.clients.retain(|_, c| c.secret_expires_at + grace > now);
        let before = ic.devices.len();
        ic.devices.retain(|_, d| d.expires_at + grace > now);
        if ic.devices.len() != before {
            let IcState {
                devices, user_codes, ..
            } = &mut *ic;
            user_codes.retain(|_, dc| devices.contains_key(dc));
        }
        ic.sessions.retain(|_, s| s.expires_at + grace > now);
    }
}

// ---------------------------------------------------------------------------------------------
// Generators

pub fn random_upper_alnum(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    random_from(CHARS, len)
}

pub fn random_lower_alnum(len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    random_from(CHARS, len)
}

fn random_from(chars: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(chars[rng.random_range(0..chars.len())]))
        .collect()
}

/// Opaque, ~340 characters of base64url, about the size of a real security token.
pub fn new_security_token() -> String {
    let mut bytes = [0u8; 256];
    rand::rng().fill(&mut bytes[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Opaque bearer tokens matching `^[a-zA-Z0-9-_.]{1,4096}$`.
pub fn new_bearer_token(prefix: &str) -> String {
    let mut bytes = [0u8; 48];
    rand::rng().fill(&mut bytes[..]);
    format!(
        "{prefix}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// `ABCD-EFGH` from letters that are hard to misread.
pub fn new_user_code() -> String {
    const CHARS: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
    format!("{}-{}", random_from(CHARS, 4), random_from(CHARS, 4))
}

/// Compares secrets without an early exit on the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_values_have_the_documented_shapes() {
        let ak = random_upper_alnum(20);
        assert_eq!(ak.len(), 20);
        assert!(ak.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
        let token = new_security_token();
        assert!(token.len() > 300, "{}", token.len());
        let bearer = new_bearer_token("ic");
        assert!(
            bearer
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        );
        let rt = random_lower_alnum(16);
        assert!(rt.len() == 16 && rt.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        let uc = new_user_code();
        assert_eq!(uc.len(), 9);
        assert_eq!(&uc[4..5], "-");
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn stats_count_and_log_events() {
        let mut s = Stats::default();
        s.record("AssumeAgency", 200, Some("iam::a:agency:x".into()));
        s.record("AssumeAgency", 429, None);
        assert_eq!(s.mints_total, 1);
        assert_eq!(s.requests[&429], 1);
        assert_eq!(s.by_operation["AssumeAgency"], 2);
        s.enter("AssumeAgency");
        s.enter("AssumeAgency");
        s.leave("AssumeAgency");
        assert_eq!(s.in_flight["AssumeAgency"], 1);
        s.leave("AssumeAgency");
        s.leave("AssumeAgency");
        assert!(s.in_flight.is_empty(), "{:?}", s.in_flight);
        s.reset_counters();
        assert_eq!(s.mints_total, 0);
        assert_eq!(s.events.len(), 2);
        assert_eq!(s.last_seq, 2);
    }
}
