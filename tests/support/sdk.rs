//! Huawei's SDKs as the programs in a pod, for the pod-identity tests: TLS material for the
//! controller's credentials endpoint, ServiceAccount tokens (and an expired one signed with the local
//! control plane's own key), `tcred agent` as a process, and the long-lived SDK consumers of
//! `conformance/` (Python `consumer_podidentity.py`, Go `consumer-go`) with their JSON lines.
//! Included with `#[path]` by the test files that use it, next to `mod support`.
#![allow(dead_code)]

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::support::{admin_kubeconfig, cluster_dir, free_port, log_dir, wait_for};

/// The audience of tcred's credentials endpoint (`--pod-identity-audience`'s default).
pub use super::podidentity::AUDIENCE;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// === TLS for the endpoint ===

/// A CA and a server certificate for 127.0.0.1/localhost, made with the openssl CLI.
pub struct Tls {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn tls_for_loopback() -> Tls {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name);
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
    run(&[&["genpkey"][..], &ec, &["-out", "ca.key"]].concat());
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        "/CN=tcred-test-ca",
        "-days",
        "2",
        "-out",
        "ca.crt",
    ]);
    run(&[&["genpkey"][..], &ec, &["-out", "server.key"]].concat());
    run(&[
        "req",
        "-new",
        "-key",
        "server.key",
        "-subj",
        "/CN=tcred-credentials",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.crt",
    ]);
    Tls {
        ca: p("ca.crt"),
        cert: p("server.crt"),
        key: p("server.key"),
        _dir: dir,
    }
}

// === ServiceAccount tokens ===

/// `token` with its claims kept but its validity moved to `[iat, exp]` (Unix seconds), re-signed
/// with the local control plane's ServiceAccount key (ES256, `target/cluster/pki/sa.key`): a token
/// the API server would accept but for those times. Only the test rig holds that key.
pub fn resigned_with_times(token: &str, iat: i64, exp: i64) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.split('.');
    let (header, payload) = (parts.next().expect("header"), parts.next().expect("payload"));
    let header: Value =
        serde_json::from_slice(&b64.decode(header).expect("b64 header")).expect("json header");
    let mut claims: Value =
        serde_json::from_slice(&b64.decode(payload).expect("b64 payload")).expect("claims");
    claims["iat"] = iat.into();
    claims["nbf"] = iat.into();
    claims["exp"] = exp.into();
    if let Some(k8s) = claims["kubernetes.io"].as_object_mut() {
        k8s.remove("warnafter");
    }
    let mut h = serde_json::json!({"alg": "ES256", "typ": "JWT"});
    if let Some(kid) = header["kid"].as_str() {
        h["kid"] = kid.into();
    }
    // PKCS#8 PEM (hack/cluster.sh makes it with `openssl pkcs8 -topk8`): its base64 body is the DER.
    let pem = std::fs::read_to_string(cluster_dir().join("pki/sa.key")).expect("read the rig's sa.key");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("PEM body");
    let rng = ring::rand::SystemRandom::new();
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &der,
        &rng,
    )
    .expect("the rig's ES256 key");
    let signing_input = format!(
        "{}.{}",
        b64.encode(serde_json::to_vec(&h).expect("header")),
        b64.encode(serde_json::to_vec(&claims).expect("claims"))
    );
    // JWS ES256 is the fixed-size r||s signature, which is what this algorithm produces.
    let sig = key.sign(&rng, signing_input.as_bytes()).expect("sign");
    format!("{signing_input}.{}", b64.encode(sig.as_ref()))
}

/// Replaces the token file in one step, as the kubelet swaps a projected volume: a reader never
/// sees it empty or half written.
pub fn write_token_file(path: &Path, token: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, token).expect("write token");
    std::fs::rename(&tmp, path).expect("swap token file");
}

// === tcred agent ===

/// A `tcred agent` process on loopback in front of `upstream`; killed on drop.
pub struct Agent {
    child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl Agent {
    pub async fn start(test: &str, upstream: &str, ca: &Path) -> Self {
        let port = free_port();
        let log = log_dir(test).join(format!("agent-{port}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_tcred"))
            .args([
                "agent",
                &format!("--listen=127.0.0.1:{port}"),
                &format!("--upstream={upstream}"),
                &format!("--ca-file={}", ca.display()),
            ])
            .env("KUBECONFIG", admin_kubeconfig())
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start tcred agent");
        let agent = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let healthz = format!("{}/healthz", agent.url);
        wait_for(Duration::from_secs(30), "tcred agent listening", || {
            let url = healthz.clone();
            async move { reqwest::get(&url).await.ok().map(|_| ()) }
        })
        .await;
        agent
    }

    pub fn credentials_uri(&self, ns: &str, name: &str) -> String {
        format!("{}/v1/credentials/{ns}/{name}", self.url)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What an SDK sends: `POST uri`, body `{}`, the raw token as Authorization. Returns the status and
/// the body as JSON (`Null` when it is not JSON).
pub async fn fetch_credentials(uri: &str, token: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(uri)
        .header("Authorization", token)
        .header("Content-Type", "application/json")
        .body("{}")
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("request to the credentials endpoint");
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap_or_default();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

// === the SDK consumers ===

fn python() -> PathBuf {
    std::env::var_os("TCRED_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|| root().join(".venv/bin/python"))
}

/// The Go consumer: `$TCRED_CONSUMER_GO_BIN` (set by `make`), else built once into target/.
fn go_consumer() -> PathBuf {
    if let Some(bin) = std::env::var_os("TCRED_CONSUMER_GO_BIN") {
        return bin.into();
    }
    let bin = root().join("target/consumer-go");
    let status = Command::new("go")
        .args(["build", "-trimpath", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(root().join("conformance/consumer-go"))
        .env("CGO_ENABLED", "0")
        .env("GOTOOLCHAIN", "local")
        .status()
        .expect("run `go build` for conformance/consumer-go (or set TCRED_CONSUMER_GO_BIN)");
    assert!(status.success(), "go build of conformance/consumer-go failed");
    bin
}

/// Which SDK a consumer runs.
#[derive(Clone, Copy, Debug)]
pub enum Sdk {
    Python,
    Go,
}

/// A long-lived consumer process in pod-identity mode; its JSON lines go to a file. Killed on drop.
pub struct Consumer {
    pub sdk: Sdk,
    child: Option<Child>,
    pub out: PathBuf,
    pub err: PathBuf,
}

impl Consumer {
    /// Starts `sdk`'s consumer: one signed STS call to `sts_url` every `interval`, credentials
    /// from `credentials_uri` with the token in `token_file`, exit after the first failed call.
    pub fn start(
        test: &str,
        sdk: Sdk,
        sts_url: &str,
        credentials_uri: &str,
        token_file: &Path,
        interval: Duration,
    ) -> Self {
        let dir = log_dir(test);
        let name = format!("{sdk:?}").to_lowercase();
        let (out, err) = (
            dir.join(format!("consumer-{name}.jsonl")),
            dir.join(format!("consumer-{name}.err")),
        );
        let secs = interval.as_secs_f64();
        let mut cmd = match sdk {
            Sdk::Python => {
                let mut c = Command::new(python());
                c.arg(root().join("conformance/consumer_podidentity.py"))
                    .args(["--interval", &secs.to_string()]);
                c
            }
            Sdk::Go => {
                let mut c = Command::new(go_consumer());
                c.args(["--mode", "pod-identity", "--interval", &format!("{secs}s")]);
                c
            }
        };
        cmd.args(["--endpoint", sts_url, "--max-failures", "1", "--calls", "0"]);
        for k in [
            "HUAWEICLOUD_SDK_AK",
            "HUAWEICLOUD_SDK_SK",
            "HUAWEICLOUD_SDK_SECURITY_TOKEN",
            "HUAWEICLOUD_SDK_CREDENTIALS_FILE",
        ] {
            cmd.env_remove(k);
        }
        let child = cmd
            .env("HOME", std::env::temp_dir())
            .env("HC_CONTAINER_CREDENTIALS_FULL_URI", credentials_uri)
            .env("HC_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file)
            .stdout(Stdio::from(std::fs::File::create(&out).expect("out file")))
            .stderr(Stdio::from(std::fs::File::create(&err).expect("err file")))
            .spawn()
            .unwrap_or_else(|e| panic!("start the {sdk:?} consumer: {e} (make venv / make consumer-go)"));
        Self {
            sdk,
            child: Some(child),
            out,
            err,
        }
    }

    /// Every JSON line printed so far (a partial last line is left for later).
    pub fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Still the process that was started (it has not exited).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The access key ids of the successful calls, in the order first seen.
pub fn access_keys(lines: &[Value]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    lines
        .iter()
        .filter(|l| l["ok"] == true)
        .filter_map(|l| l["accessKeyId"].as_str())
        .filter(|k| seen.insert((*k).to_owned()))
        .map(str::to_owned)
        .collect()
}

/// The failed calls.
pub fn failures(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l["ok"] != true).collect()
}

// === Huawei's Java SDK parsing rules ===

/// Checks an endpoint answer against Huawei's Java SDK's parsing rules with
/// `conformance/java/PodIdentityResponseCheck.java` (the Java SDK itself is not served by the
/// reachable Maven registry). Returns the check's JSON line (`{"ok":true,...}` or an error).
pub fn java_sdk_check(body: &Value) -> Value {
    use std::io::Write as _;
    let java = std::env::var_os("TCRED_JAVA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("java"));
    let mut child = Command::new(&java)
        .arg(root().join("conformance/java/PodIdentityResponseCheck.java"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {} (a JDK ≥ 17, or set TCRED_JAVA): {e}", java.display()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.to_string().as_bytes())
        .expect("write body");
    let out = child.wait_with_output().expect("java check");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "java check printed no JSON: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
