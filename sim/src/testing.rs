//! The test world for the simulator's own tests: `sim/fixtures/world.yaml`, the one fixture the
//! operator's cluster tests, the conformance suite and the demo start the simulator with too.
//! Tests that need a knob (refresh tokens, a faster poll) change the parsed [`Config`].

use tcred::cloud::signer::AccessKey;

use crate::config::Config;
use crate::state::{Catalog, Sim};

pub const WORLD: &str = include_str!("../fixtures/world.yaml");

/// Names the tests use, checked against the fixture by `the_names_are_the_fixtures`.
pub const ACCOUNT: &str = "0123456789abcdef0123456789abcdef";
pub const CI_BOT_AK: &str = "HPUACIBOT00000000001";
pub const CI_BOT_SK: &str = "CiBotSecretKey0123456789abcdefghijABCDEF";
/// Trusts ci-bot, and team-a's ServiceAccounts through [`PROVIDER`].
pub const AGENCY: &str = "iam::0123456789abcdef0123456789abcdef:agency:ops-admin";
pub const PROVIDER: &str = "iam::0123456789abcdef0123456789abcdef:oidcProvider:k8s";
/// The `kid` of the provider's one key, the public half of `jwt::tests::EC_PKCS8_B64`.
pub const KID: &str = "conformance";
pub const START_URL: &str = "https://idcenter.example.com/d-1234567890/portal";

pub fn world() -> Config {
    Config::from_yaml(WORLD).expect("sim/fixtures/world.yaml is a valid configuration")
}

/// The fixture's text with `from` replaced by `to` (which must occur: a test that edits nothing
/// proves nothing).
pub fn world_with(from: &str, to: &str) -> String {
    assert!(WORLD.contains(from), "the fixture has no {from:?}");
    WORLD.replace(from, to)
}

pub fn sim(config: Config) -> Sim {
    Sim::new(Catalog::build(config).expect("the fixture builds a catalog"))
}

/// ci-bot's permanent access key.
pub fn ci_bot() -> AccessKey {
    AccessKey {
        id: CI_BOT_AK.into(),
        secret: CI_BOT_SK.into(),
        security_token: None,
    }
}

#[test]
fn the_names_are_the_fixtures() {
    let w = world();
    let account = &w.accounts[0];
    assert_eq!(account.id, ACCOUNT);
    let user = &w.users[0];
    assert_eq!(
        (user.access_key_id.as_str(), user.secret_access_key.expose()),
        (CI_BOT_AK, CI_BOT_SK)
    );
    assert!(
        account
            .agencies
            .iter()
            .any(|a| crate::state::agency_urn(&account.id, &a.name) == AGENCY)
    );
    assert_eq!(w.oidc_providers[0].urn, PROVIDER);
    assert_eq!(
        w.oidc_providers[0].jwks.as_ref().map(|j| &j["keys"][0]["kid"]),
        Some(&KID.into())
    );
    assert_eq!(w.identity_center.start_urls, [START_URL]);
}
