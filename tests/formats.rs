//! What the Secret holds for its consumers (docs/api.md, "The Secret"), on the real control plane
//! with the simulator: the account and project ids, the consumer formats and extra key names,
//! after a mint and after a rotation, loaded by the consumers themselves (Huawei's Python SDK with
//! no IAM discovery call, boto3, Huawei's OBS SDK, a Hadoop configuration parser); changing the
//! formats rewrites the Secret without minting; an upgrade from the previous layout mints nothing;
//! hostile formats and names are refused while another namespace keeps rotating; and a session
//! Secret made by hand mints.

mod support;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::*;
use tcred::api::{TemporaryCredential, condition::reasons};

/// The abuse test runs a controller over every namespace; the tests of this file run one at a time
/// so that controller never reconciles another test's credentials.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PROJECT: &str = "0aa1bb2cc3dd4ee5ff60718293a4b5c6";
const REGION: &str = "ap-southeast-1";

fn python() -> std::path::PathBuf {
    std::env::var_os("TCRED_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

fn sha(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Runs conformance/load_formats.py in a clean environment (no inherited credentials) with `envs`.
fn load(mode: &str, file: Option<&std::path::Path>, envs: &[(&str, String)]) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/load_formats.py");
    let mut cmd = std::process::Command::new(python());
    cmd.arg(script).arg(mode);
    if let Some(f) = file {
        cmd.arg(f);
    }
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e} (make venv)", python().display()));
    assert!(
        out.status.success(),
        "consumer {mode} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json line")
}

fn env_of(secret: &Secret, keys: &[&str]) -> Vec<(&'static str, String)> {
    keys.iter()
        .map(|k| {
            (
                &*Box::leak(k.to_string().into_boxed_str()),
                secret_text(secret, k),
            )
        })
        .collect()
}

/// The consumer loaded exactly the credential of the Secret.
fn assert_loaded(got: &Value, secret: &Secret, what: &str) {
    assert_eq!(got["ak"], secret_text(secret, "HUAWEICLOUD_SDK_AK"), "{what}");
    assert_eq!(
        got["sk_sha256"],
        sha(&secret_text(secret, "HUAWEICLOUD_SDK_SK")),
        "{what}"
    );
    assert_eq!(
        got["token_sha256"],
        sha(&secret_text(secret, "HUAWEICLOUD_SDK_SECURITY_TOKEN")),
        "{what}"
    );
}

async fn discovery_calls(sim: &Simulator) -> u64 {
    sim.stats().await["discoveryCalls"]
        .as_u64()
        .expect("discoveryCalls in stats")
}

fn write_file(dir: &std::path::Path, name: &str, content: String) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write file");
    p
}

/// Every consumer of every format loads the credential from the Secret, none of them over the
/// network, and Huawei's SDK makes no discovery call (the simulator counts them).
async fn consumers_load(sim: &Simulator, secret: &Secret) {
    let dir = tempfile::tempdir().expect("tempdir");
    let huawei_env = |extra: Vec<(&'static str, String)>| {
        let mut e = vec![
            ("HUAWEICLOUD_SDK_IAM_ENDPOINT", sim.url.clone()),
            ("HUAWEICLOUD_SDK_STS_ENDPOINT", sim.url.clone()),
            ("TCRED_TEST_REGION", REGION.to_owned()),
        ];
        e.extend(extra);
        e
    };
    let before = discovery_calls(sim).await;
    let env = env_of(
        secret,
        &[
            "HUAWEICLOUD_SDK_AK",
            "HUAWEICLOUD_SDK_SK",
            "HUAWEICLOUD_SDK_SECURITY_TOKEN",
            "HUAWEICLOUD_SDK_PROJECT_ID",
            "HUAWEICLOUD_SDK_DOMAIN_ID",
        ],
    );
    let got = load("huawei", None, &huawei_env(env));
    assert_loaded(&got, secret, "huawei env");
    assert_eq!(
        (got["project_id"].as_str(), got["domain_id"].as_str()),
        (Some(PROJECT), Some(ACCOUNT))
    );
    let ini = write_file(dir.path(), "credentials", secret_text(secret, "credentials"));
    let got = load(
        "huawei",
        None,
        &huawei_env(vec![(
            "HUAWEICLOUD_SDK_CREDENTIALS_FILE",
            ini.display().to_string(),
        )]),
    );
    assert_loaded(&got, secret, "huawei file");
    assert_eq!(
        (got["project_id"].as_str(), got["domain_id"].as_str()),
        (Some(PROJECT), Some(ACCOUNT))
    );
    assert_eq!(
        discovery_calls(sim).await,
        before,
        "a client built from the Secret asked IAM nothing"
    );

    let aws = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"];
    assert_loaded(&load("boto3", None, &env_of(secret, &aws)), secret, "boto3 env");
    let shared = write_file(dir.path(), "aws", secret_text(secret, "aws-credentials"));
    let file_env = [("AWS_SHARED_CREDENTIALS_FILE", shared.display().to_string())];
    assert_loaded(&load("boto3", None, &file_env), secret, "boto3 file");
    let obs = ["OBS_ACCESS_KEY_ID", "OBS_SECRET_ACCESS_KEY", "OBS_SECURITY_TOKEN"];
    assert_loaded(&load("obs", None, &env_of(secret, &obs)), secret, "obs env");
    let xml = write_file(dir.path(), "site.xml", secret_text(secret, "hadoop-obs-site.xml"));
    assert_loaded(&load("hadoop-xml", Some(&xml), &[]), secret, "hadoop xml");
    let props = write_file(
        dir.path(),
        "obs.properties",
        secret_text(secret, "hadoop-obs.properties"),
    );
    assert_loaded(
        &load("hadoop-properties", Some(&props), &[]),
        secret,
        "hadoop properties",
    );
}

fn all_formats() -> Value {
    json!({"secret": {
        "formats": ["obs", "terraform", "aws", "hadoop"],
        "projectId": PROJECT,
        "region": REGION,
        "keys": {"OBS_ACCESS_KEY_ID": "MY_AK", "hadoop-obs-site.xml": "core-site.xml"},
    }})
}

/// Consumers with no runnable copy here are checked against their documented keys:
/// - Terraform/Pulumi huaweicloud provider: `HW_ACCESS_KEY`, `HW_SECRET_KEY`, `HW_SECURITY_TOKEN`,
///   `HW_REGION_NAME`, `HW_PROJECT_ID`, `HW_DOMAIN_ID`, read by `Provider()` in
///   https://github.com/huaweicloud/terraform-provider-huaweicloud/blob/master/huaweicloud/provider.go
///   and listed at https://registry.terraform.io/providers/huaweicloud/huaweicloud/latest/docs
/// - Hadoop OBS connector (OBSA, `hadoop-huaweicloud`): `fs.obs.access.key`, `fs.obs.secret.key`,
///   `fs.obs.session.token` in core-site.xml (`OBSConstants.ACCESS_KEY`, `SECRET_KEY`,
///   `SESSION_TOKEN`; docs/api.md "The Secret" records the source); the XML and properties
///   files are parsed by conformance/load_formats.py.
fn assert_formats_hold_the_credential(s: &Secret) {
    let ak = secret_text(s, "HUAWEICLOUD_SDK_AK");
    for k in ["OBS_ACCESS_KEY_ID", "HW_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "MY_AK"] {
        assert_eq!(secret_text(s, k), ak, "{k}");
    }
    assert_eq!(secret_text(s, "HUAWEICLOUD_SDK_DOMAIN_ID"), ACCOUNT);
    assert_eq!(secret_text(s, "HW_DOMAIN_ID"), ACCOUNT);
    assert_eq!(secret_text(s, "HUAWEICLOUD_SDK_PROJECT_ID"), PROJECT);
    assert_eq!(secret_text(s, "HW_PROJECT_ID"), PROJECT);
    assert_eq!(secret_text(s, "HW_REGION_NAME"), REGION);
    assert!(secret_text(s, "core-site.xml").contains(&format!("<value>{ak}</value>")));
    assert!(secret_text(s, "credentials").contains(&format!("[basic.credentials]\nak = {ak}\n")));
}

#[tokio::test]
async fn the_secret_carries_ids_and_formats_after_a_mint_and_a_rotation_and_consumers_load_them() {
    let _serial = SERIAL.lock().await;
    with_namespace("formats", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        sim.set_lifetime(Some(30)).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        let _op = Operator::start("formats", &ns).await;
        apply(&client, agency_credential(&ns, "billing", "corp", all_formats())).await;
        wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(30)).await;
        let first = get_secret(&client, &ns, "billing").await.expect("Secret");
        assert_formats_hold_the_credential(&first);
        consumers_load(&sim, &first).await;

        // The control: the same SDK given only AK/SK/token asks IAM for both ids, through signed
        // calls the simulator verified, and gets the ids tcred wrote.
        let before = discovery_calls(&sim).await;
        let mut bare = env_of(
            &first,
            &[
                "HUAWEICLOUD_SDK_AK",
                "HUAWEICLOUD_SDK_SK",
                "HUAWEICLOUD_SDK_SECURITY_TOKEN",
            ],
        );
        bare.extend([
            ("HUAWEICLOUD_SDK_IAM_ENDPOINT", sim.url.clone()),
            ("HUAWEICLOUD_SDK_STS_ENDPOINT", sim.url.clone()),
            ("TCRED_TEST_REGION", REGION.to_owned()),
        ]);
        let got = load("huawei", None, &bare);
        assert_eq!(got["domain_id"], ACCOUNT);
        assert!(
            discovery_calls(&sim).await >= before + 2,
            "without the ids the SDK looks up the project and the domain"
        );

        let rotated = wait_for(Duration::from_secs(60), "a rotation", || async {
            let s = get_secret(&client, &ns, "billing").await?;
            (secret_text(&s, "HUAWEICLOUD_SDK_AK") != secret_text(&first, "HUAWEICLOUD_SDK_AK")).then_some(s)
        })
        .await;
        assert_formats_hold_the_credential(&rotated);
        consumers_load(&sim, &rotated).await;
    })
    .await;
}

async fn patch_secret_spec(client: &kube::Client, ns: &str, name: &str, secret: Value) {
    Api::<TemporaryCredential>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"secret": secret}})),
        )
        .await
        .expect("patch spec.secret");
}

#[tokio::test]
async fn changing_formats_rewrites_the_secret_without_minting_and_keeps_foreign_keys() {
    let _serial = SERIAL.lock().await;
    with_namespace("formats-change", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        let _op = Operator::start("formats-change", &ns).await;
        apply(&client, agency_credential(&ns, "billing", "corp", json!({}))).await;
        wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(30)).await;
        let first = get_secret(&client, &ns, "billing").await.expect("Secret");
        assert_eq!(secret_text(&first, "HUAWEICLOUD_SDK_DOMAIN_ID"), ACCOUNT);
        assert!(first.data.as_ref().unwrap().get("AWS_ACCESS_KEY_ID").is_none());
        let ak = secret_text(&first, "HUAWEICLOUD_SDK_AK");
        let mints = sim.mints_total().await;
        // Someone else's key in the same Secret.
        Api::<Secret>::namespaced(client.clone(), &ns)
            .patch(
                "billing",
                &PatchParams::apply("someone-else"),
                &Patch::Apply(
                    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "billing"},
                    "stringData": {"EXTRA": "kept"}}),
                ),
            )
            .await
            .expect("add a foreign key");

        patch_secret_spec(
            &client,
            &ns,
            "billing",
            json!({"formats": ["aws"], "keys": {"AWS_SESSION_TOKEN": "TOKEN"}}),
        )
        .await;
        let with_aws = wait_for(Duration::from_secs(30), "the aws keys", || async {
            let s = get_secret(&client, &ns, "billing").await?;
            s.data.as_ref()?.contains_key("TOKEN").then_some(s)
        })
        .await;
        assert_eq!(
            secret_text(&with_aws, "AWS_ACCESS_KEY_ID"),
            ak,
            "the same credential"
        );
        assert_eq!(secret_text(&with_aws, "EXTRA"), "kept");

        patch_secret_spec(&client, &ns, "billing", json!({"formats": null, "keys": null})).await;
        let back = wait_for(Duration::from_secs(30), "the aws keys removed", || async {
            let s = get_secret(&client, &ns, "billing").await?;
            (!s.data.as_ref()?.contains_key("AWS_ACCESS_KEY_ID")).then_some(s)
        })
        .await;
        assert!(!back.data.as_ref().unwrap().contains_key("TOKEN"));
        assert_eq!(
            secret_text(&back, "EXTRA"),
            "kept",
            "a foreign key is never removed"
        );
        assert_eq!(secret_text(&back, "HUAWEICLOUD_SDK_AK"), ak);
        assert_eq!(sim.mints_total().await, mints, "no mint for a format change");
        let tc = get_tc(&client, &ns, "billing").await;
        assert_eq!(tc.status.unwrap().rotations, 1);
    })
    .await;
}

#[tokio::test]
async fn a_secret_in_the_previous_layout_is_rewritten_without_minting() {
    let _serial = SERIAL.lock().await;
    with_namespace("formats-upgrade", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &ns, "corp", &sim).await;
        let mut op = Operator::start("formats-upgrade", &ns).await;
        apply(&client, agency_credential(&ns, "billing", "corp", json!({}))).await;
        wait_ready_reason(&client, &ns, "billing", reasons::ISSUED, Duration::from_secs(30)).await;
        op.stop();

        // What the previous release wrote: no domain id, four INI sections, its template hash, and
        // the data hash over those keys (the same function: its definition did not change).
        let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
        let mut s = secrets.get("billing").await.expect("Secret");
        let ak = secret_text(&s, "HUAWEICLOUD_SDK_AK");
        let (sk, token) = (
            secret_text(&s, "HUAWEICLOUD_SDK_SK"),
            secret_text(&s, "HUAWEICLOUD_SDK_SECURITY_TOKEN"),
        );
        let data = s.data.as_mut().unwrap();
        data.remove("HUAWEICLOUD_SDK_DOMAIN_ID");
        let ini: String = ["basic", "global", "basiccredentials", "globalcredentials"]
            .iter()
            .map(|sec| format!("[{sec}]\nak = {ak}\nsk = {sk}\nsecurity_token = {token}\n\n"))
            .collect();
        data.insert("credentials".into(), ByteString(ini.into_bytes()));
        let issued: jiff::Timestamp = s.annotations()["tcred.dev/issued-at"].parse().unwrap();
        let hash = tcred::controller::credentials::secret::data_hash(s.data.as_ref().unwrap(), issued);
        let ann = s.metadata.annotations.as_mut().unwrap();
        ann.insert("tcred.dev/data-hash".into(), hash);
        ann.insert("tcred.dev/template-hash".into(), "previous-release".into());
        s.metadata.managed_fields = None;
        secrets
            .replace("billing", &PostParams::default(), &s)
            .await
            .expect("write old layout");
        let mints = sim.mints_total().await;

        let _op = Operator::start("formats-upgrade-2", &ns).await;
        let upgraded = wait_for(Duration::from_secs(30), "the rewrite", || async {
            let s = get_secret(&client, &ns, "billing").await?;
            s.data
                .as_ref()?
                .contains_key("HUAWEICLOUD_SDK_DOMAIN_ID")
                .then_some(s)
        })
        .await;
        assert_eq!(secret_text(&upgraded, "HUAWEICLOUD_SDK_AK"), ak);
        assert!(secret_text(&upgraded, "credentials").contains("[global.credentials]"));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(sim.mints_total().await, mints, "an upgrade re-mints nothing");
        assert_eq!(get_tc(&client, &ns, "billing").await.status.unwrap().rotations, 1);
    })
    .await;
}

#[tokio::test]
async fn hostile_formats_and_key_names_are_refused_while_a_victim_keeps_rotating() {
    let _serial = SERIAL.lock().await;
    with_namespace("formats-victim", |client, victim| async move {
        let attacker = create_namespace(&client, "formats-attacker", &[]).await;
        let sim = Simulator::start(&default_sim_config()).await;
        sim.set_lifetime(Some(30)).await;
        access_key_source(&client, &victim, "corp", &sim).await;
        access_key_source(&client, &attacker, "corp", &sim).await;
        let _op = Operator::start_with(
            "formats-victim",
            OperatorOptions {
                namespace: None,
                ..Default::default()
            },
        )
        .await;
        apply(&client, agency_credential(&victim, "billing", "corp", json!({}))).await;
        wait_ready_reason(
            &client,
            &victim,
            "billing",
            reasons::ISSUED,
            Duration::from_secs(30),
        )
        .await;

        let long = "k".repeat(254);
        let many_formats: Vec<String> = (0..9).map(|i| format!("obs{i}")).collect();
        let many_keys: BTreeMap<String, String> = [
            "HUAWEICLOUD_SDK_AK",
            "HUAWEICLOUD_SDK_SK",
            "HUAWEICLOUD_SDK_SECURITY_TOKEN",
            "HUAWEICLOUD_SDK_EXPIRES_AT",
            "credentials",
            "HUAWEICLOUD_SDK_DOMAIN_ID",
            "OBS_ACCESS_KEY_ID",
            "OBS_SECRET_ACCESS_KEY",
            "OBS_SECURITY_TOKEN",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "aws-credentials",
            "HW_ACCESS_KEY",
            "HW_SECRET_KEY",
            "HW_SECURITY_TOKEN",
            "HW_DOMAIN_ID",
        ]
        .iter()
        .enumerate()
        .map(|(i, k)| ((*k).to_owned(), format!("copy-{i}")))
        .collect();
        let hostile = [
            (json!({"formats": ["swr"]}), "Unsupported value"),
            (json!({"formats": ["obs", "obs"]}), "duplicate"),
            (json!({"formats": many_formats}), "must have at most 8 items"),
            (
                json!({"keys": {"HUAWEICLOUD_SDK_AK": "HUAWEICLOUD_SDK_SK"}}),
                "must not be a key tcred writes",
            ),
            (
                json!({"formats": ["obs"], "keys": {"HUAWEICLOUD_SDK_AK": "OBS_ACCESS_KEY_ID"}}),
                "must not be a key tcred writes",
            ),
            (json!({"keys": {"HUAWEICLOUD_SDK_AK": "a/b"}}), "should match"),
            (json!({"keys": {"HUAWEICLOUD_SDK_AK": ".."}}), "must not be '.'"),
            (json!({"keys": {"HUAWEICLOUD_SDK_AK": long}}), "Too long"),
            (
                json!({"keys": {"HUAWEICLOUD_SDK_AK": "same", "HUAWEICLOUD_SDK_SK": "same"}}),
                "the same new name",
            ),
            (json!({"keys": {"MY_OWN": "x"}}), "must be a key tcred writes"),
            (
                json!({"keys": {"OBS_ACCESS_KEY_ID": "x"}}),
                "must be written for this credential",
            ),
            (
                json!({"keys": {"HUAWEICLOUD_SDK_PROJECT_ID": "x"}}),
                "must be written for this credential",
            ),
            (
                json!({"formats": ["obs", "aws", "terraform"], "keys": many_keys}),
                "must have at most 16 items",
            ),
            (json!({"projectId": "../../etc"}), "should match"),
        ];
        for (i, (secret, expected)) in hostile.into_iter().enumerate() {
            let tc = agency_credential(&attacker, &format!("evil-{i}"), "corp", json!({"secret": secret}));
            let err = try_apply(&client, &tc)
                .await
                .expect_err(&format!("{secret} was accepted"));
            assert!(err.contains(expected), "{secret}: {err}");
        }
        // The largest spec the schema allows mints, and so does the victim, which keeps rotating.
        let mut biggest: BTreeMap<String, String> = BTreeMap::new();
        for (i, k) in [
            "HUAWEICLOUD_SDK_SECURITY_TOKEN",
            "credentials",
            "AWS_SESSION_TOKEN",
            "aws-credentials",
            "hadoop-obs-site.xml",
            "hadoop-obs.properties",
            "HW_SECURITY_TOKEN",
            "OBS_SECURITY_TOKEN",
        ]
        .iter()
        .enumerate()
        {
            biggest.insert((*k).to_owned(), format!("{}-{i}", "x".repeat(240)));
        }
        let big = json!({"secret": {"formats": ["obs", "terraform", "aws", "hadoop"], "projectId": PROJECT,
            "region": REGION, "keys": biggest}});
        apply(&client, agency_credential(&attacker, "biggest", "corp", big)).await;
        wait_ready_reason(
            &client,
            &attacker,
            "biggest",
            reasons::ISSUED,
            Duration::from_secs(30),
        )
        .await;
        wait_ready_reason(
            &client,
            &victim,
            "billing",
            reasons::ROTATED,
            Duration::from_secs(60),
        )
        .await;
        delete_namespace(&client, &attacker).await;
    })
    .await;
}

#[tokio::test]
async fn a_session_secret_made_by_hand_with_only_region_and_access_token_mints() {
    let _serial = SERIAL.lock().await;
    with_namespace("hand-session", |client, ns| async move {
        let sim = Simulator::start(&default_sim_config()).await;
        identity_center_source(&client, &ns, "corp", &sim).await;
        // An access token obtained elsewhere: here from a login into a throw-away Secret.
        identity_center_source(&client, &ns, "donor", &sim).await;
        login(&["--source", "donor", "-n", &ns, "--start-url", START_URL], &sim, "alice").await;
        let donor = get_secret(&client, &ns, "donor-session").await.expect("donor session");
        let token = secret_text(&donor, "accessToken");
        let expires = secret_text(&donor, "accessTokenExpiresAt");
        create_labelled_secret(
            &client,
            &ns,
            "corp-session",
            &bound_to("CredentialSource", "corp"),
            &[("region", REGION), ("accessToken", &token), ("accessTokenExpiresAt", &expires)],
        )
        .await;
        let _op = Operator::start("hand-session", &ns).await;
        apply(
            &client,
            json!({"apiVersion": "tcred.dev/v1alpha1", "kind": "TemporaryCredential",
                "metadata": {"name": "portal", "namespace": ns},
                "spec": {"sourceRef": {"name": "corp"}, "permissionSet": {"accountId": ACCOUNT, "name": "ReadOnlyAccess"}}}),
        )
        .await;
        wait_ready_reason(&client, &ns, "portal", reasons::ISSUED, Duration::from_secs(30)).await;
        let s = get_secret(&client, &ns, "portal").await.expect("Secret");
        assert_eq!(secret_text(&s, "HUAWEICLOUD_SDK_DOMAIN_ID"), ACCOUNT);
        // The source's status is written by its own controller, not ordered with the mint.
        let conditions = wait_for(Duration::from_secs(30), "the source's Ready", || async {
            let src = Api::<tcred::api::CredentialSource>::namespaced(client.clone(), &ns)
                .get("corp")
                .await
                .expect("source");
            let conditions = src.status?.conditions;
            let ready = tcred::api::condition::find(&conditions, "Ready")?;
            (ready.status == "True").then_some(conditions)
        })
        .await;
        // No refresh token, so no refresh is due: no condition names the keys a refresh would need.
        assert!(
            conditions.iter().all(|c| !c.message.contains("clientId")),
            "{conditions:?}"
        );

        // With a refresh token and an issue time that makes the refresh due, the missing client is
        // named (and nothing is sent anywhere); the session still mints until it ends.
        Api::<Secret>::namespaced(client.clone(), &ns)
            .patch(
                "corp-session",
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {
                    "refreshToken": "refresh-token-from-elsewhere",
                    "accessTokenIssuedAt": "2001-01-01T00:00:00Z",
                }})),
            )
            .await
            .expect("add a refresh token");
        let received_before = sim.received().await;
        let message = wait_for(Duration::from_secs(330), "SessionExpiringSoon naming the client", || async {
            let src = Api::<tcred::api::CredentialSource>::namespaced(client.clone(), &ns)
                .get("corp")
                .await
                .ok()?;
            let conditions = src.status?.conditions;
            // (The session already ends within the default 24 h warning, so the condition is True
            // before the patch too: wait for the message that names the missing client.)
            let c = tcred::api::condition::find(&conditions, "SessionExpiringSoon")?;
            (c.status == "True" && c.reason == "SessionEnding" && c.message.contains("clientId"))
                .then(|| c.message.clone())
        })
        .await;
        assert!(message.contains("no clientId and clientSecret"), "{message}");
        assert!(!message.contains("refresh-token-from-elsewhere"));
        let received = sim.received().await;
        assert_eq!(
            received["refreshTokens"], received_before["refreshTokens"],
            "no refresh was attempted without the client"
        );
        rotate(&client, &ns, "portal", "again").await;
        wait_ready_reason(&client, &ns, "portal", reasons::ROTATED, Duration::from_secs(30)).await;
    })
    .await;
}
