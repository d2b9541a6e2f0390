//! The test node of `hack/node.sh` (docs/rig.md): pods that really run. Its facts come from
//! `target/cluster/node/node.env`; a node that failed to start left one line in `failed`, and
//! every test that needs the node fails with that line.

use std::{
    collections::{BTreeSet, HashMap},
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use serde_json::Value;

use super::{cluster_dir, wait_for};

/// What `hack/node.sh up` wrote about the node it started.
pub struct Node {
    env: HashMap<String, String>,
}

fn node_dir() -> PathBuf {
    cluster_dir().join("node")
}

impl Node {
    /// The running node, or a panic naming why there is none. The only skip is the one every
    /// cluster test makes: a plain `cargo test` with no control plane at all.
    pub fn get() -> Self {
        super::skip_without_control_plane(&super::admin_kubeconfig());
        let dir = node_dir();
        if let Ok(reason) = std::fs::read_to_string(dir.join("failed")) {
            panic!("the test node did not start: {}", reason.trim());
        }
        let text = std::fs::read_to_string(dir.join("node.env")).unwrap_or_else(|_| {
            panic!(
                "no test node ({} is missing): start it with `make node-up` (hack/node.sh up)",
                dir.join("node.env").display()
            )
        });
        let env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self { env }
    }

    fn var(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("node.env has no {key}"))
    }

    pub fn name(&self) -> &str {
        self.var("NODE_NAME")
    }

    /// The node's address on the rig's bridge: pods reach the host there.
    pub fn ip(&self) -> &str {
        self.var("NODE_IP")
    }

    /// The small static consumer (hack/images/consumer), `consumer file|env`.
    pub fn consumer_image(&self) -> &str {
        self.var("CONSUMER_IMAGE")
    }

    /// The operator's own image (hack/image.sh), imported into the node's containerd.
    pub fn operator_image(&self) -> String {
        let dir = node_dir();
        if let Ok(reason) = std::fs::read_to_string(dir.join("operator-image.failed")) {
            panic!("the operator image is not on the node: {}", reason.trim());
        }
        std::fs::read_to_string(dir.join("operator-image"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| panic!("the operator image is not on the node: run `hack/node.sh images`"))
    }

    /// Huawei's Go SDK as a consumer (conformance/consumer-go), when this checkout has it: then
    /// `hack/node.sh up` must have imported it.
    pub fn consumer_go_image(&self) -> Option<String> {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/consumer-go/main.go");
        if !src.exists() {
            return None;
        }
        let image = std::fs::read_to_string(node_dir().join("consumer-go-image")).unwrap_or_else(|_| {
            panic!("conformance/consumer-go is not on the node (see target/cluster/node/images.log)")
        });
        Some(image.trim().to_owned())
    }

    /// Relays `NODE_IP:<port>` to `target` (a loopback address) for as long as the value lives.
    pub fn forward(&self, target: &str) -> Forward {
        let mut child = Command::new(self.var("FORWARD_BIN"))
            .args([&format!("{}:0", self.ip()), target])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the forwarder");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("forwarder address");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected forwarder line {line:?}"))
            .to_owned();
        Forward { child, addr }
    }

    /// SIGKILLs a container through the node's containerd: a crash, no graceful stop.
    /// `container_id` as in the pod status (`containerd://<id>`).
    pub fn kill_container(&self, container_id: &str) {
        let id = container_id.trim_start_matches("containerd://");
        let status = Command::new("ctr")
            .args([
                "--address",
                self.var("CONTAINERD_SOCK"),
                "-n",
                "k8s.io",
                "tasks",
                "kill",
                "-s",
                "SIGKILL",
                id,
            ])
            .status()
            .expect("run ctr");
        assert!(status.success(), "ctr tasks kill {id}: {status}");
    }

    /// The lines a container printed, without the CRI log prefix (read from the kubelet's pod log
    /// directory on this machine).
    pub fn container_log(&self, ns: &str, pod: &str, container: &str) -> Vec<String> {
        let prefix = format!("{ns}_{pod}_");
        let Ok(dirs) = std::fs::read_dir(self.var("POD_LOGS")) else {
            return vec![];
        };
        let mut lines = vec![];
        for dir in dirs.flatten() {
            if !dir.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            let Ok(files) = std::fs::read_dir(dir.path().join(container)) else {
                continue;
            };
            for f in files.flatten() {
                let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                // "<time> stdout F <line>"
                lines.extend(
                    text.lines()
                        .filter_map(|l| l.splitn(4, ' ').nth(3))
                        .map(str::to_owned),
                );
            }
        }
        lines
    }

    /// Access keys `container` in `pod` signed an accepted call with, as `principal`: the JSON
    /// lines of hack/images/consumer (`ak`, `status`, `principal`) and of conformance/consumer-go
    /// (`accessKeyId`, `ok`, `principalUrn`).
    pub fn accepted_keys(&self, ns: &str, pod: &str, container: &str, principal: &str) -> BTreeSet<String> {
        self.consumer_reports(ns, pod, container)
            .iter()
            .filter_map(|r| {
                let ok = (r["status"] == 200 && r["principal"] == principal)
                    || (r["ok"] == true && r["principalUrn"] == principal);
                let ak = r["ak"].as_str().or_else(|| r["accessKeyId"].as_str())?;
                ok.then(|| ak.to_owned())
            })
            .collect()
    }

    /// The consumer's JSON reports (hack/images/consumer) from one container.
    pub fn consumer_reports(&self, ns: &str, pod: &str, container: &str) -> Vec<Value> {
        self.container_log(ns, pod, container)
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// A running `forward` process; killed on drop.
pub struct Forward {
    child: Child,
    pub addr: String,
}

impl Forward {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pod's phase and whether all its containers are ready.
pub fn pod_state(pod: &Pod) -> (String, bool) {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.clone()).unwrap_or_default();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    (phase, ready)
}

/// Waits until the pod `name` is Running and Ready, naming its last state on timeout.
pub async fn wait_pod_ready(client: &Client, ns: &str, name: &str, timeout: Duration) -> Pod {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    wait_for(timeout, &format!("pod {ns}/{name} Running and Ready"), || async {
        let pod = api.get(name).await.ok()?;
        let (phase, ready) = pod_state(&pod);
        (phase == "Running" && ready).then_some(pod)
    })
    .await
}

/// Names of the pods matching `selector` that are Running and Ready.
pub async fn ready_pods(client: &Client, ns: &str, selector: &str) -> Vec<String> {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let Ok(list) = api.list(&kube::api::ListParams::default().labels(selector)).await else {
        return vec![];
    };
    list.items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| pod_state(p) == ("Running".to_owned(), true))
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}
