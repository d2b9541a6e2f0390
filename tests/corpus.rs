//! A corpus of bad manifests (`tests/corpus/*.yaml`): every field of every kind a tenant or an
//! administrator can get wrong. Each file starts with comments that record its outcome:
//!
//! ```text
//! # <what is wrong>
//! # expect: refused: <substring of the API server's message>
//! # expect: status: <Reason>                      (the Ready condition of the object below)
//! # expect: refused-or-status: <substring> | <Reason>
//! # object: <Kind>/<name>                          (for status; default: the last document)
//! ```
//!
//! then one or more YAML documents, applied in order (server-side apply, as `kubectl apply
//! --server-side` would) against the real API server with tcred's CRDs. A refused file must be
//! refused at its last document with a readable message containing the substring; a status file
//! must be accepted and its object must reach the reason with an operator watching, which must
//! stay alive with no panic in its log. `refused-or-status` is for defences that may live in the
//! schema or in the controller: either outcome is fine, nothing else is.
//!
//! Placeholders: `${NS}` (this run's namespace), `${OTHER_NS}` (a second namespace holding a
//! CredentialSource `elsewhere`), `${SIM}` (the simulator's URL), `${ACCOUNT}`, `${RUN}` (a
//! random number for cluster-scoped names), `${NAME}` (the file's name without `.yaml`), and
//! `${X300K}` (300 KiB of `x`).

mod support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use kube::{
    Api, Client,
    core::{DynamicObject, GroupVersionKind},
    discovery,
};
use serde_json::Value;
use support::*;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus");
/// How long a status file's object may take to reach its reason.
const STATUS_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Refused(String),
    Status(String),
    RefusedOrStatus(String, String),
}

#[derive(Debug)]
struct Case {
    name: String,
    description: String,
    expect: Expect,
    /// (kind, name) whose Ready condition a status expectation reads.
    object: (String, String),
    docs: Vec<Value>,
}

fn parse_expect(text: &str) -> Result<Expect, String> {
    if let Some(sub) = text.strip_prefix("refused-or-status:") {
        let (sub, reason) = sub
            .split_once('|')
            .ok_or("refused-or-status needs `<substring> | <Reason>`")?;
        return Ok(Expect::RefusedOrStatus(sub.trim().into(), reason.trim().into()));
    }
    if let Some(sub) = text.strip_prefix("refused:") {
        return Ok(Expect::Refused(sub.trim().into()));
    }
    if let Some(reason) = text.strip_prefix("status:") {
        return Ok(Expect::Status(reason.trim().into()));
    }
    Err(format!("unknown expectation {text:?}"))
}

/// Reads one corpus file with `vars` substituted.
fn parse_case(path: &Path, vars: &BTreeMap<&str, String>) -> Result<Case, String> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or("file name")?
        .to_owned();
    let raw = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut text = raw.replace("${NAME}", &name);
    for (k, v) in vars {
        text = text.replace(&format!("${{{k}}}"), v);
    }
    let header: Vec<&str> = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim())
        .collect();
    let description = header.first().copied().unwrap_or_default().to_owned();
    let expect = header
        .iter()
        .find_map(|l| l.strip_prefix("expect:"))
        .ok_or("no `# expect:` line")
        .and_then(|e| parse_expect(e.trim()).map_err(|_| "bad `# expect:` line"))?;
    let mut docs = Vec::new();
    for v in serde_saphyr::from_multiple::<serde_json::Value>(&text).map_err(|e| format!("yaml: {e}"))? {
        if !v.is_null() {
            docs.push(v);
        }
    }
    let last = docs.last().ok_or("no document")?;
    for d in &docs {
        if d["apiVersion"].as_str().is_none()
            || d["kind"].as_str().is_none()
            || d["metadata"]["name"].as_str().is_none()
        {
            return Err("every document needs apiVersion, kind and metadata.name".into());
        }
    }
    let object = match header.iter().find_map(|l| l.strip_prefix("object:")) {
        Some(o) => {
            let (kind, obj) = o.trim().split_once('/').ok_or("`# object: <Kind>/<name>`")?;
            (kind.to_owned(), obj.to_owned())
        }
        None => (
            last["kind"].as_str().unwrap_or_default().to_owned(),
            last["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
        ),
    };
    Ok(Case {
        name,
        description,
        expect,
        object,
        docs,
    })
}

fn corpus_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(CORPUS)
        .expect("tests/corpus")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn vars(ns: &str, other: &str, sim: &str, run: &str) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("NS", ns.to_owned()),
        ("OTHER_NS", other.to_owned()),
        ("SIM", sim.to_owned()),
        ("ACCOUNT", ACCOUNT.to_owned()),
        ("RUN", run.to_owned()),
        ("X300K", "x".repeat(300 * 1024)),
    ])
}

#[test]
fn the_corpus_has_fifty_readable_cases_covering_every_kind() {
    let vars = vars("corpus-ns", "corpus-other", "http://127.0.0.1:1", "1");
    let cases: Vec<Case> = corpus_files()
        .iter()
        .map(|p| parse_case(p, &vars).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect();
    assert!(cases.len() >= 50, "{} cases", cases.len());
    let refused = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::Refused(_)))
        .count();
    let status = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::Status(_)))
        .count();
    assert!(
        refused >= 30 && status >= 10,
        "{refused} refused, {status} status"
    );
    for kind in [
        "TemporaryCredential",
        "CredentialSource",
        "ClusterCredentialSource",
    ] {
        assert!(
            cases.iter().any(|c| c.docs.iter().any(|d| d["kind"] == kind)),
            "no case for {kind}"
        );
    }
    let reasons = [
        "SourceNotFound",
        "SecretNotBound",
        "SecretInvalid",
        "InvalidSpec",
        "TokenNotAllowed",
        "EndpointNotAllowed",
        "LoginRequired",
        "Denied",
    ];
    for c in &cases {
        assert!(!c.description.is_empty(), "{}: a description line", c.name);
        assert!(
            c.name
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-'),
            "{}: names derive from the file name, so it must be a DNS label",
            c.name
        );
        match &c.expect {
            Expect::Refused(sub) => assert!(!sub.is_empty(), "{}", c.name),
            Expect::Status(r) | Expect::RefusedOrStatus(_, r) => {
                assert!(reasons.contains(&r.as_str()), "{}: unexpected reason {r}", c.name);
                assert!(
                    c.docs
                        .iter()
                        .any(|d| d["kind"] == c.object.0.as_str()
                            && d["metadata"]["name"] == c.object.1.as_str())
                        || c.object.1.starts_with("no-such"),
                    "{}: the object {:?} is one of its documents",
                    c.name,
                    c.object
                );
            }
        }
    }
    assert_eq!(
        parse_expect("refused-or-status: spec.endpoints | EndpointNotAllowed"),
        Ok(Expect::RefusedOrStatus(
            "spec.endpoints".into(),
            "EndpointNotAllowed".into()
        ))
    );
    assert!(parse_expect("maybe: anything").is_err());
}

/// The Ready condition of `kind/name` in `ns` (or cluster-scoped), as (status, reason, message).
async fn ready_of_object(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
) -> Option<(String, String, String)> {
    let api_version = if kind == "ServiceAccount" || kind == "Secret" {
        "v1"
    } else {
        "tcred.dev/v1alpha1"
    };
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = discovery::pinned_kind(client, &gvk).await.ok()?;
    let api: Api<DynamicObject> = match caps.scope {
        discovery::Scope::Namespaced => Api::namespaced_with(client.clone(), ns, &ar),
        discovery::Scope::Cluster => Api::all_with(client.clone(), &ar),
    };
    let obj = api.get_opt(name).await.ok()??;
    ready_condition(&serde_json::to_value(&obj).ok()?)
}

#[tokio::test]
async fn every_bad_manifest_is_refused_with_a_readable_message_or_reported_on_its_status() {
    let client = admin().await;
    let run = format!("{:05}", rand::random::<u32>() % 100_000);
    let ns = create_namespace(&client, "corpus", &[]).await;
    let other = create_namespace(&client, "corpus-other", &[]).await;
    let mut cluster_scoped: Vec<String> = Vec::new();
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async {
        let sim = Simulator::start(&default_sim_config()).await;
        access_key_source(&client, &other, "elsewhere", &sim).await;
        let op = Operator::start("corpus", &ns).await;
        let vars = vars(&ns, &other, &sim.url, &run);
        let mut failures = Vec::new();
        let mut pending = Vec::new();
        for path in corpus_files() {
            let case = parse_case(&path, &vars).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let mut refusal = None;
            let last = case.docs.len() - 1;
            for (i, doc) in case.docs.iter().enumerate() {
                if doc["metadata"]["namespace"].is_null() && doc["kind"] == "ClusterCredentialSource" {
                    cluster_scoped.push(doc["metadata"]["name"].as_str().unwrap_or_default().to_owned());
                }
                if let Err(message) = try_apply(&client, doc).await {
                    refusal = Some((i, message));
                    break;
                }
            }
            let readable = |sub: &str, i: usize, message: &str| -> Result<(), String> {
                if i != last && !matches!(case.expect, Expect::RefusedOrStatus(..)) {
                    return Err(format!("document {i} (not the last) was refused: {message}"));
                }
                if message.trim().is_empty() || !message.contains(sub) {
                    return Err(format!("refused without {sub:?} in the message: {message}"));
                }
                Ok(())
            };
            let verdict = match (&case.expect, &refusal) {
                (Expect::Refused(sub), Some((i, m))) => readable(sub, *i, m).map(|()| None),
                (Expect::Refused(_), None) => Err("accepted, but the schema must refuse it".into()),
                (Expect::RefusedOrStatus(sub, _), Some((i, m))) => readable(sub, *i, m).map(|()| None),
                (Expect::Status(_), Some((i, m))) => Err(format!("document {i} refused: {m}")),
                (Expect::Status(reason) | Expect::RefusedOrStatus(_, reason), None) => {
                    Ok(Some(reason.clone()))
                }
            };
            match verdict {
                Ok(Some(reason)) => pending.push((case, reason)),
                Ok(None) => eprintln!("corpus {}: refused as expected", case.name),
                Err(e) => failures.push(format!("{} ({}): {e}", case.name, case.description)),
            }
        }

        // Every accepted object reaches its reason.
        let deadline = Instant::now() + STATUS_TIMEOUT;
        let mut last_seen: BTreeMap<String, Option<(String, String, String)>> = BTreeMap::new();
        while !pending.is_empty() && Instant::now() < deadline {
            let mut still = Vec::new();
            for (case, reason) in pending {
                let seen = ready_of_object(&client, &ns, &case.object.0, &case.object.1).await;
                if seen
                    .as_ref()
                    .is_some_and(|(_, r, m)| r == &reason && !m.is_empty())
                {
                    eprintln!("corpus {}: {reason} as expected", case.name);
                } else {
                    last_seen.insert(case.name.clone(), seen);
                    still.push((case, reason));
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        for (case, reason) in &pending {
            failures.push(format!(
                "{} ({}): expected {reason} on {}/{}, saw {:?}",
                case.name,
                case.description,
                case.object.0,
                case.object.1,
                last_seen.get(&case.name)
            ));
        }

        let pid = op.pid().expect("operator pid");
        if !process_alive(pid) {
            failures.push(format!("the operator exited (log {})", op.log.display()));
        }
        for line in panic_lines(&op.logs()) {
            failures.push(format!("the operator log reports a panic: {line}"));
        }
        let mints = sim.mints_total().await;
        if mints != 0 {
            failures.push(format!("bad manifests minted {mints} credentials"));
        }
        assert!(
            failures.is_empty(),
            "{} corpus checks failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }))
    .await;
    for name in &cluster_scoped {
        let _ = Api::<tcred::api::ClusterCredentialSource>::all(client.clone())
            .delete(name, &Default::default())
            .await;
    }
    if std::env::var_os("TCRED_KEEP_NAMESPACES").is_none() {
        delete_namespace(&client, &ns).await;
        delete_namespace(&client, &other).await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
