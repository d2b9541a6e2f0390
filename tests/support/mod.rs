//! Harness for the black-box tests: the local control plane (`hack/cluster.sh up`), a fresh
//! namespace per test that is deleted whatever the outcome, the Huawei simulator and the operator
//! as real processes, and clients for the RBAC-limited tenant users.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod node;

use std::{
    future::Future,
    io::{BufRead, BufReader, Write as _},
    net::TcpListener,
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures::FutureExt;
use k8s_openapi::{
    ByteString,
    api::core::v1::{Namespace, Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

pub mod podidentity;

pub const ACCOUNT: &str = "0123456789abcdef0123456789abcdef";
pub const AGENCY: &str = "ops";
pub const CI_BOT_AK: &str = "HPUACIBOT00000000001";
pub const CI_BOT_SK: &str = "CiBotSecretKey0123456789abcdefghijABCDEF";

pub fn agency_urn(name: &str) -> String {
    format!("iam::{ACCOUNT}:agency:{name}")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn cluster_dir() -> PathBuf {
    std::env::var_os("TCRED_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/cluster"))
}

/// Where each test keeps the logs of the processes it started.
pub fn log_dir(test: &str) -> PathBuf {
    let dir = root().join("target/test-logs").join(test);
    std::fs::create_dir_all(&dir).expect("create log dir");
    dir
}

/// Without a local control plane, a plain `cargo test` runs the unit tests and skips the cluster
/// tests with one line saying how to run them; under `make test` (which sets
/// `TCRED_REQUIRE_CLUSTER`) a missing control plane is a failure, never a skip.
pub fn skip_without_control_plane(kubeconfig: &Path) {
    if std::env::var_os("TCRED_REQUIRE_CLUSTER").is_some() {
        return;
    }
    let why = match control_plane_running(kubeconfig) {
        Ok(()) => return,
        Err(why) => why,
    };
    // Straight to the process's stderr: the test harness captures `eprintln!`, and the process
    // ends here, before captured output would be shown.
    let _ = writeln!(
        std::io::stderr(),
        "skipping the cluster tests of this file: no local control plane ({why}); \
         run them with `make cluster-up` then `cargo test`, or everything with `make test`"
    );
    std::process::exit(0);
}

/// Whether the local control plane is there and listening: a kubeconfig left behind by a stopped
/// one (`make cluster-down`) does not count.
fn control_plane_running(kubeconfig: &Path) -> Result<(), String> {
    if !kubeconfig.exists() {
        return Err(format!("{} is missing", kubeconfig.display()));
    }
    let port_file = cluster_dir().join("apiserver.port");
    let port: u16 = std::fs::read_to_string(&port_file)
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| format!("{} is missing", port_file.display()))?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map(drop)
        .map_err(|_| format!("nothing listens on {addr}: it was stopped"))
}

pub async fn client_for(kubeconfig: &Path) -> Client {
    skip_without_control_plane(kubeconfig);
    let kc = Kubeconfig::read_from(kubeconfig).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}. Start the local control plane with `make cluster-up`.",
            kubeconfig.display()
        )
    });
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

pub fn admin_kubeconfig() -> PathBuf {
    cluster_dir().join("kubeconfig")
}

static CRDS: OnceCell<()> = OnceCell::const_new();

/// The admin client, with the CRDs applied (once per test binary) and established.
pub async fn admin() -> Client {
    tcred::cloud::http::install_crypto_provider();
    let client = client_for(&admin_kubeconfig()).await;
    CRDS.get_or_init(|| async {
        let api = Api::<CustomResourceDefinition>::all(client.clone());
        for crd in tcred::api::crds() {
            let name = crd.name_any();
            api.patch(
                &name,
                &PatchParams::apply("tcred-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .expect("apply CRD");
            wait_for(
                Duration::from_secs(30),
                &format!("CRD {name} established"),
                || {
                    let api = api.clone();
                    let name = name.clone();
                    async move {
                        let crd = api.get(&name).await.ok()?;
                        crd.status?
                            .conditions?
                            .iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                            .then_some(())
                    }
                },
            )
            .await;
        }
    })
    .await;
    client
}

pub async fn tenant(name: &str) -> Client {
    tcred::cloud::http::install_crypto_provider();
    client_for(&cluster_dir().join(format!("kubeconfig-{name}"))).await
}

/// Polls `f` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A fresh namespace, named after the test, with optional labels.
pub async fn create_namespace(client: &Client, prefix: &str, labels: &[(&str, &str)]) -> String {
    let suffix: u32 = rand::random::<u32>() % 1_000_000;
    let name = format!(
        "{}-{suffix:06}",
        prefix.replace('_', "-").chars().take(40).collect::<String>()
    );
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

pub async fn delete_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::background())
        .await;
}

/// Runs `body` with a fresh namespace and deletes the namespace afterwards, also when `body`
/// panics (the panic is then resumed). Set `TCRED_KEEP_NAMESPACES=1` to keep them for debugging.
pub async fn with_namespace<F, Fut>(test: &str, body: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let client = admin().await;
    let ns = create_namespace(&client, test, &[]).await;
    let outcome = AssertUnwindSafe(body(client.clone(), ns.clone()))
        .catch_unwind()
        .await;
    if std::env::var_os("TCRED_KEEP_NAMESPACES").is_none() {
        delete_namespace(&client, &ns).await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Applies a manifest given as JSON (server-side apply, as a user would with kubectl).
pub async fn apply(client: &Client, manifest: Value) {
    let gvk = kube::core::GroupVersionKind::try_from(&kube::core::TypeMeta {
        api_version: manifest["apiVersion"].as_str().expect("apiVersion").into(),
        kind: manifest["kind"].as_str().expect("kind").into(),
    })
    .expect("gvk");
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .expect("discover kind");
    let name = manifest["metadata"]["name"].as_str().expect("name").to_owned();
    let api: Api<kube::core::DynamicObject> = match (caps.scope, manifest["metadata"]["namespace"].as_str()) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    };
    api.patch(
        &name,
        &PatchParams::apply("tcred-tests").force(),
        &Patch::Apply(&manifest),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {}/{name}: {e}", manifest["kind"]));
}

pub async fn create_secret(client: &Client, ns: &str, name: &str, data: &[(&str, &str)]) {
    create_labelled_secret(client, ns, name, &[], data).await;
}

/// Creates Secret `ns/name` with these labels and data.
pub async fn create_labelled_secret(
    client: &Client,
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
    data: &[(&str, &str)],
) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: (!labels.is_empty()).then(|| {
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            }),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create Secret");
}

pub fn secret_text(s: &Secret, key: &str) -> String {
    let v = s
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .unwrap_or_else(|| panic!("Secret has no key {key}"));
    String::from_utf8(v.0.clone()).expect("utf-8")
}

// === The Huawei Cloud simulator ===

/// The simulator binary: `$TCRED_SIM_BIN` when set (as for `conformance/`), else the workspace's
/// `tcred-huawei-sim` package built with cargo, once per test process. The simulator is its own
/// package (`sim/`), so cargo does not build it for this package's tests the way it builds `tcred`
/// (`CARGO_BIN_EXE_*` names only a package's own binaries); the build is a no-op when it is fresh.
pub fn simulator_binary() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("TCRED_SIM_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => build_simulator(),
    })
}

fn build_simulator() -> PathBuf {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // What cargo set for this test process describes this package, not the build: left in, it
    // makes cargo rebuild dependencies whose build tracks it (ring and CARGO_MANIFEST_DIR), and
    // the next plain `cargo build` rebuild them back.
    const SET_FOR_THE_TEST: [&str; 5] = [
        "CARGO_PKG_",
        "CARGO_BIN_EXE_",
        "CARGO_MANIFEST_",
        "CARGO_CRATE_",
        "CARGO_TARGET_TMPDIR",
    ];
    for (key, _) in std::env::vars_os() {
        if SET_FOR_THE_TEST
            .iter()
            .any(|prefix| key.to_string_lossy().starts_with(prefix))
        {
            cargo.env_remove(key);
        }
    }
    let out = cargo
        .args([
            "build",
            "--quiet",
            "--package",
            "tcred-huawei-sim",
            "--bin",
            "tcred-huawei-sim",
        ])
        .args(["--message-format", "json-render-diagnostics"])
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build for the simulator");
    assert!(
        out.status.success(),
        "cargo build --package tcred-huawei-sim failed"
    );
    // The last compiler-artifact message for the binary names the executable.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "tcred-huawei-sim")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo build reported the simulator's executable")
}

/// A simulator process with a config; killed on drop.
pub struct Simulator {
    child: Child,
    pub url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// The test world every simulator starts with (`sim/fixtures/world.yaml`: one account with
/// agencies `ops` (12 h max) and `readonly` trusting `ci-bot`, permission set ReadOnlyAccess for
/// Identity Center user alice, ...), as JSON for tests to adjust before [`Simulator::start`].
pub fn default_sim_config() -> Value {
    let world: Value = serde_saphyr::from_str(include_str!("../../sim/fixtures/world.yaml"))
        .expect("sim/fixtures/world.yaml is YAML");
    // The names the tests use as constants are the fixture's.
    assert_eq!(world["accounts"][0]["id"], ACCOUNT, "fixture account");
    assert_eq!(world["users"][0]["accessKeyId"], CI_BOT_AK, "fixture user");
    assert_eq!(world["users"][0]["secretAccessKey"], CI_BOT_SK, "fixture user");
    assert_eq!(
        world["identityCenter"]["startUrls"][0], START_URL,
        "fixture start URL"
    );
    let agencies = world["accounts"][0]["agencies"]
        .as_array()
        .expect("fixture agencies");
    assert!(
        agencies.iter().any(|a| a["name"] == AGENCY),
        "fixture agency {AGENCY}"
    );
    world
}

impl Simulator {
    pub async fn start(config: &Value) -> Self {
        Self::start_on(config, "127.0.0.1:0").await
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}/control/{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("simulator control call");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "control {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub async fn stats(&self) -> Value {
        self.control(reqwest::Method::GET, "stats", None).await
    }

    /// Mints counted for one agency URN.
    pub async fn mints(&self, agency_urn: &str) -> u64 {
        self.stats().await["mints"][agency_urn].as_u64().unwrap_or(0)
    }

    pub async fn mints_total(&self) -> u64 {
        self.stats().await["mintsTotal"].as_u64().unwrap_or(0)
    }

    pub async fn set_faults(&self, faults: Value) {
        self.control(reqwest::Method::PUT, "faults", Some(faults)).await;
    }

    pub async fn set_lifetime(&self, seconds: Option<u64>) {
        self.control(
            reqwest::Method::PUT,
            "lifetime",
            Some(json!({"credentialSeconds": seconds})),
        )
        .await;
    }

    pub async fn approve(&self, user_code: &str, user: &str) {
        self.control(
            reqwest::Method::POST,
            "device/approve",
            Some(json!({"userCode": user_code, "user": user})),
        )
        .await;
    }

    pub async fn pending_devices(&self) -> Value {
        self.control(reqwest::Method::GET, "device/pending", None).await
    }

    pub async fn expire_sessions(&self) {
        self.control(reqwest::Method::POST, "sessions/expire", Some(json!({})))
            .await;
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === The operator ===

/// A `tcred controller` process watching one namespace; killed on drop.
pub struct Operator {
    child: Option<Child>,
    pub metrics_url: String,
    pub log: PathBuf,
}

pub struct OperatorOptions<'a> {
    pub namespace: Option<&'a str>,
    pub leader_elect: bool,
    pub lease_namespace: Option<&'a str>,
    pub identity: &'a str,
    pub rust_log: &'a str,
    /// `--min-mint-interval` and `--min-credential-lifetime`. Tests rotate credentials of 30 s
    /// lifetimes and edit or delete Secrets seconds apart, so the defaults here are short; the
    /// attack tests use [`OperatorOptions::production`]'s values.
    pub min_mint_interval: &'a str,
    pub min_credential_lifetime: &'a str,
    pub extra: Vec<String>,
    /// The kubeconfig the operator runs with (an identity with only the RBAC a test grants);
    /// default: the rig's admin.
    pub kubeconfig: Option<&'a std::path::Path>,
}

impl Default for OperatorOptions<'_> {
    fn default() -> Self {
        Self {
            namespace: None,
            leader_elect: false,
            lease_namespace: None,
            identity: "op",
            rust_log: "info",
            min_mint_interval: "5s",
            min_credential_lifetime: "10s",
            extra: vec![],
            kubeconfig: None,
        }
    }
}

impl OperatorOptions<'_> {
    /// The controller's own defaults for the mint-loop guards (30 s between mints, 60 s of
    /// validity at issue), as a production installation runs.
    pub fn production() -> Self {
        Self {
            min_mint_interval: "30s",
            min_credential_lifetime: "60s",
            ..Default::default()
        }
    }
}

impl Operator {
    /// Starts the operator scoped to `namespace`, without leader election.
    pub async fn start(test: &str, namespace: &str) -> Self {
        Self::start_with(
            test,
            OperatorOptions {
                namespace: Some(namespace),
                ..Default::default()
            },
        )
        .await
    }

    pub async fn start_with(test: &str, o: OperatorOptions<'_>) -> Self {
        tcred::cloud::http::install_crypto_provider();
        let port = free_port();
        let log = log_dir(test).join(format!("operator-{}-{port}.log", o.identity));
        let out = std::fs::File::create(&log).expect("log file");
        let mut args = vec![
            "controller".to_owned(),
            format!("--metrics-bind-address=127.0.0.1:{port}"),
            format!("--leader-elect={}", o.leader_elect),
            format!("--identity={}", o.identity),
            "--mint-rate=0".to_owned(),
            "--mint-rate-total=0".to_owned(),
            // The simulators listen on loopback; namespaced sources may name them.
            "--allowed-endpoint-hosts=127.0.0.1,localhost".to_owned(),
            format!("--min-mint-interval={}", o.min_mint_interval),
            format!("--min-credential-lifetime={}", o.min_credential_lifetime),
        ];
        if let Some(ns) = o.namespace {
            args.push(format!("--namespace={ns}"));
        }
        if let Some(ns) = o.lease_namespace {
            args.push(format!("--leader-election-namespace={ns}"));
        }
        args.extend(o.extra);
        let child = Command::new(env!("CARGO_BIN_EXE_tcred"))
            .args(&args)
            .env(
                "KUBECONFIG",
                o.kubeconfig.map_or_else(admin_kubeconfig, PathBuf::from),
            )
            .env("RUST_LOG", o.rust_log)
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_NAME")
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start the operator");
        let op = Self {
            child: Some(child),
            metrics_url: format!("http://127.0.0.1:{port}"),
            log,
        };
        op.wait_ready().await;
        op
    }

    pub async fn wait_ready(&self) {
        let url = format!("{}/readyz", self.metrics_url);
        let log = self.log.clone();
        wait_for(
            Duration::from_secs(60),
            &format!("operator ready (log {})", log.display()),
            || {
                let url = url.clone();
                async move {
                    reqwest::get(&url)
                        .await
                        .ok()
                        .filter(|r| r.status().is_success())
                        .map(|_| ())
                }
            },
        )
        .await;
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.metrics_url))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM and wait for a graceful exit; returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: a crash, no step-down.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

// === tcred objects ===

/// The labels that bind a Secret to the source `kind`/`name` (a source uses no other Secret).
pub fn bound_to<'a>(kind: &'a str, name: &'a str) -> [(&'a str, &'a str); 2] {
    [
        (tcred::session::labels::SOURCE_KIND, kind),
        (tcred::session::labels::SOURCE_NAME, name),
    ]
}

/// An accessKey CredentialSource `name` in `ns` signing as ci-bot, pointed at `sim`; its Secret
/// `<name>-ak` is labelled for it.
pub async fn access_key_source(client: &Client, ns: &str, name: &str, sim: &Simulator) {
    create_labelled_secret(
        client,
        ns,
        &format!("{name}-ak"),
        &bound_to("CredentialSource", name),
        &[("accessKeyId", CI_BOT_AK), ("secretAccessKey", CI_BOT_SK)],
    )
    .await;
    let spec = json!({
        "accessKey": {"region": "ap-southeast-1", "secretRef": {"name": format!("{name}-ak")}},
        "endpoints": {"sts": sim.url},
    });
    credential_source(client, ns, name, spec).await;
}

/// Applies a CredentialSource `name` in `ns` with `spec`.
pub async fn credential_source(client: &Client, ns: &str, name: &str, spec: Value) {
    apply(
        client,
        json!({
            "apiVersion": "tcred.dev/v1alpha1", "kind": "CredentialSource",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }),
    )
    .await;
}

/// A TemporaryCredential `name` in `ns` for agency `ops` through CredentialSource `source`.
pub fn agency_credential(ns: &str, name: &str, source: &str, extra_spec: Value) -> Value {
    let mut spec = json!({"sourceRef": {"name": source}, "agencyUrn": agency_urn(AGENCY), "duration": "1h"});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "tcred.dev/v1alpha1", "kind": "TemporaryCredential", "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

pub async fn get_tc(client: &Client, ns: &str, name: &str) -> tcred::api::TemporaryCredential {
    Api::<tcred::api::TemporaryCredential>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("get TemporaryCredential")
}

/// The Ready condition's (status, reason) of a TemporaryCredential, if any.
pub fn ready_of(tc: &tcred::api::TemporaryCredential) -> Option<(String, String)> {
    let s = tc.status.as_ref()?;
    tcred::api::condition::find(&s.conditions, "Ready").map(|c| (c.status.clone(), c.reason.clone()))
}

/// The message of a TemporaryCredential's Ready condition (empty when there is none).
pub fn ready_message(tc: &tcred::api::TemporaryCredential) -> String {
    let s = tc.status.as_ref();
    s.and_then(|s| tcred::api::condition::find(&s.conditions, "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Waits until the TemporaryCredential's Ready condition has `reason`.
pub async fn wait_ready_reason(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
    timeout: Duration,
) -> tcred::api::TemporaryCredential {
    wait_for(timeout, &format!("{ns}/{name} Ready reason {reason}"), || async {
        let tc = Api::<tcred::api::TemporaryCredential>::namespaced(client.clone(), ns)
            .get(name)
            .await
            .ok()?;
        (ready_of(&tc).map(|(_, r)| r).as_deref() == Some(reason)).then_some(tc)
    })
    .await
}

/// Asks for one rotation of `ns/name`, as a user does: the `tcred.dev/rotate` annotation set to
/// a new `value`.
pub async fn rotate(client: &Client, ns: &str, name: &str, value: &str) {
    let patch = serde_json::json!({"metadata": {"annotations": {tcred::api::annotations::ROTATE: value}}});
    Api::<tcred::api::TemporaryCredential>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("set the rotate annotation");
}

/// The value of the Prometheus series whose line starts with `prefix` (name and labels).
pub fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The Events about the object named `name` in `ns`.
pub async fn events_for(client: &Client, ns: &str, name: &str) -> Vec<k8s_openapi::api::events::v1::Event> {
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

pub fn has_event(events: &[k8s_openapi::api::events::v1::Event], reason: &str) -> bool {
    events.iter().any(|e| e.reason.as_deref() == Some(reason))
}

/// The Events regarding `name` once one has `reason`. tcred publishes a reconcile's Event after
/// its status write, so a test that saw the status waits for the Event rather than reading once.
pub async fn wait_event(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    wait_for(
        Duration::from_secs(30),
        &format!("a {reason} Event for {ns}/{name}"),
        || async {
            let events = events_for(client, ns, name).await;
            has_event(&events, reason).then_some(events)
        },
    )
    .await
}

pub async fn get_secret(client: &Client, ns: &str, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get Secret")
}

/// kubectl matching the control plane (`TCRED_KUBECTL`, set by the Makefile), else the one on PATH.
pub fn kubectl() -> Command {
    let mut c = Command::new(std::env::var_os("TCRED_KUBECTL").unwrap_or_else(|| "kubectl".into()));
    c.env("KUBECONFIG", admin_kubeconfig());
    c
}

/// Runs kubectl with `stdin`, returning (success, stdout + stderr).
pub fn kubectl_with_input(args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = kubectl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("kubectl output");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

// === Identity Center ===

pub const START_URL: &str = "https://idcenter.example.com/d-1234567890/portal";

/// An identityCenter CredentialSource `name` in `ns` whose session lives in Secret
/// `<name>-session`, pointed at `sim`.
pub async fn identity_center_source(client: &Client, ns: &str, name: &str, sim: &Simulator) {
    let spec = json!({
        "identityCenter": {"region": "ap-southeast-1", "sessionSecretRef": {"name": format!("{name}-session")}},
        "endpoints": {"oidc": sim.url, "portal": sim.url},
    });
    credential_source(client, ns, name, spec).await;
}

/// Runs `tcred <args>` with the admin kubeconfig; returns (success, stdout + stderr).
pub fn tcred_cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tcred"))
        .args(args)
        .env("KUBECONFIG", admin_kubeconfig())
        .output()
        .expect("run tcred");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs `tcred login <args>`, approves the device code it prints as `user` through the
/// simulator's control endpoint, and returns its output once it exits.
pub async fn login(args: &[&str], sim: &Simulator, user: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tcred"))
        .arg("login")
        .args(args)
        .env("KUBECONFIG", admin_kubeconfig())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tcred login");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let code = tokio::task::spawn_blocking(move || {
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
            if let Some(code) = line.strip_prefix("User code: ") {
                return Some(code.trim().to_owned());
            }
        }
        None
    })
    .await
    .expect("join")
    .expect("tcred login printed a user code");
    sim.approve(&code, user).await;
    let status = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    let out = reader.join().expect("reader");
    assert!(
        status.status.success(),
        "tcred login failed:\n{out}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    out
}

/// The server URL of the local apiserver (also its ServiceAccount token issuer).
pub fn apiserver_url() -> String {
    let port = std::fs::read_to_string(cluster_dir().join("apiserver.port")).expect("apiserver.port");
    format!("https://127.0.0.1:{}", port.trim())
}

// === Hostile input (tests/hostile.rs, tests/corpus.rs) ===

/// The sum of the counts under `field` of the simulator's stats (`requestsByOperation`,
/// `inFlightByOperation`) for the operations that mint: AssumeAgency, AssumeAgencyWithOIDC and
/// GetAgencyCredentials.
fn mint_operations(stats: &Value, field: &str) -> u64 {
    ["AssumeAgency", "AssumeAgencyWithOIDC", "GetAgencyCredentials"]
        .iter()
        .filter_map(|op| stats[field][op].as_u64())
        .sum()
}

impl Simulator {
    /// A simulator with `config`, listening on `listen` (`127.0.0.1:0` for [`Simulator::start`];
    /// e.g. `[::1]:0`, a loopback address the operator's endpoint allowlist does not name).
    pub async fn start_on(config: &Value, listen: &str) -> Self {
        tcred::cloud::http::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sim.yaml");
        std::fs::write(&path, serde_saphyr::to_string(config).expect("yaml")).expect("write sim config");
        let mut child = Command::new(simulator_binary())
            .args(["--config", path.to_str().expect("path"), "--listen", listen])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the simulator");
        let stdout = child.stdout.take().expect("stdout");
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await
        .expect("join")
        .expect("read simulator address");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Self {
            child,
            url,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// Replaces the simulator's hostile setting (docs/simulator.md, "Hostile mode"); `{}` ends it.
    pub async fn set_hostile(&self, hostile: Value) {
        self.control(reqwest::Method::PUT, "hostile", Some(hostile)).await;
    }

    /// What clients sent: `{idTokens, accessTokens, refreshTokens, clientSecrets}`.
    pub async fn received(&self) -> Value {
        self.control(reqwest::Method::GET, "received", None).await
    }

    /// Every `id_token` the simulator received on AssumeAgencyWithOIDC.
    pub async fn received_id_tokens(&self) -> Vec<String> {
        self.received().await["idTokens"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    pub async fn reset_stats(&self) {
        self.control(reqwest::Method::POST, "reset-stats", None).await;
    }

    /// Calls of the mint operations (AssumeAgency, AssumeAgencyWithOIDC, GetAgencyCredentials)
    /// since the last reset, whatever their answer.
    pub async fn mint_calls(&self) -> u64 {
        mint_operations(&self.stats().await, "requestsByOperation")
    }

    /// Waits until a mint call (held by injected latency) is under way, not yet answered.
    pub async fn wait_mint_in_flight(&self) {
        wait_for(
            Duration::from_secs(30),
            "a mint under way at the simulator",
            || async { (mint_operations(&self.stats().await, "inFlightByOperation") > 0).then_some(()) },
        )
        .await;
    }

    /// Every API request (control calls aside) since the last reset.
    pub async fn api_requests(&self) -> u64 {
        self.stats().await["requests"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0)
    }
}

/// Whether process `pid` still runs (it has not exited; a child that exited is a zombie until
/// reaped).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("State:"))
            .is_some_and(|state| !state.trim_start().starts_with(['Z', 'X']))
    })
}

/// The peak resident set size (`VmHWM`) of process `pid`, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The lines of a process log that report a panic (Rust's `thread '…' panicked at …`, or a
/// contained reconcile panic reported as such).
pub fn panic_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("panicked"))
        .map(str::to_owned)
        .collect()
}

/// The issuer of the API server's ServiceAccount tokens, from its
/// `/.well-known/openid-configuration` (the local apiserver's URL when the document is missing).
pub async fn apiserver_issuer(client: &Client) -> String {
    let req = http::Request::get("/.well-known/openid-configuration")
        .body(Vec::new())
        .expect("request");
    match client.request_text(req).await {
        Ok(text) => serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["issuer"].as_str().map(str::to_owned))
            .unwrap_or_else(apiserver_url),
        Err(_) => apiserver_url(),
    }
}

/// Whether the API server accepts `token` as its own: a TokenReview naming no audiences (so the
/// API server checks against its own).
pub async fn token_accepted(client: &Client, token: &str) -> bool {
    token_review(client, token, None).await
}

/// Whether the API server authenticates `token` for `audience` (a TokenReview; `None`: the API
/// server's own audiences).
pub async fn token_review(client: &Client, token: &str, audience: Option<&str>) -> bool {
    use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_owned(),
            audiences: audience.map(|a| vec![a.to_owned()]),
        },
        ..Default::default()
    };
    let out = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("TokenReview");
    out.status.and_then(|s| s.authenticated).unwrap_or(false)
}

/// Server-side apply like [`apply`], returning the API server's refusal message instead of
/// panicking.
pub async fn try_apply(client: &Client, manifest: &Value) -> Result<(), String> {
    let gvk = kube::core::GroupVersionKind::try_from(&kube::core::TypeMeta {
        api_version: manifest["apiVersion"].as_str().unwrap_or_default().into(),
        kind: manifest["kind"].as_str().unwrap_or_default().into(),
    })
    .map_err(|e| format!("not a Kubernetes object: {e}"))?;
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("unknown kind: {e}"))?;
    let name = manifest["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let api: Api<kube::core::DynamicObject> = match (caps.scope, manifest["metadata"]["namespace"].as_str()) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    };
    match api
        .patch(
            &name,
            &PatchParams::apply("tcred-tests").force(),
            &Patch::Apply(manifest),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) => Err(s.message),
        Err(e) => Err(e.to_string()),
    }
}

/// A namespace with exactly this name (no random suffix).
pub async fn create_named_namespace(client: &Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

/// The Ready condition's (status, reason, message) of any object with conditions in its status
/// (TemporaryCredential, CredentialSource, ClusterCredentialSource).
pub fn ready_condition(obj: &Value) -> Option<(String, String, String)> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("status"), s("reason"), s("message"))
        })
}
