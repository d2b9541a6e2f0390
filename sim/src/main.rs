//! `tcred-huawei-sim`: an in-memory Huawei Cloud simulator (Identity Center OIDC and portal, STS
//! v5, and a `/control/` API for tests) on one loopback port. This file owns the CLI, startup,
//! routing and shutdown; docs/simulator.md is the user-facing reference.

mod auth;
mod config;
mod control;
mod error;
mod hostile;
mod iam;
mod jwt;
mod lock;
mod middleware;
mod oidc;
mod operation;
mod portal;
mod state;
mod sts;
mod swr;
#[cfg(test)]
mod testing;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Parser;

use crate::error::{ApiError, code};
use crate::state::{Catalog, SharedSim, Sim};

#[derive(Parser, Debug)]
#[command(name = "tcred-huawei-sim", about = "Huawei Cloud simulator for tcred tests")]
struct Cli {
    /// YAML configuration (accounts, agencies, users, OIDC providers, Identity Center).
    #[arg(long)]
    config: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

/// How often expired keys, sessions and device codes are dropped from memory.
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

pub fn router(sim: SharedSim) -> Router {
    let api = Router::new()
        .route("/v1/clients", post(oidc::register_client))
        .route("/v1/device/authorize", post(oidc::start_device_authorization))
        .route("/v1/tokens", post(oidc::create_token))
        .route("/v1/assigned-accounts", get(portal::list_accounts))
        .route("/v1/assigned-agencies", get(portal::list_account_agencies))
        .route("/v1/credentials", get(portal::get_agency_credentials))
        .route("/v1/logout", post(portal::logout))
        .route("/v5/agencies/assume", post(sts::assume_agency))
        .route(
            "/v5/agencies/assume-with-oidc",
            post(sts::assume_agency_with_oidc),
        )
        .route("/v5/caller-identity", get(sts::get_caller_identity))
        .route("/v3/projects", get(iam::list_projects))
        .route("/v3/auth/domains", get(iam::list_auth_domains))
        .route("/v2/manage/utils/secret", post(swr::create_secret))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            middleware::track,
        ));
    let control = Router::new()
        .route("/control/health", get(control::health))
        .route("/control/stats", get(control::stats))
        .route("/control/reset-stats", post(control::reset_stats))
        .route("/control/events", get(control::events))
        .route("/control/sessions", get(control::sessions))
        .route(
            "/control/faults",
            get(control::get_faults).put(control::put_faults),
        )
        .route(
            "/control/lifetime",
            get(control::get_lifetime).put(control::put_lifetime),
        )
        .route(
            "/control/hostile",
            get(control::get_hostile).put(control::put_hostile),
        )
        .route("/control/received", get(control::received))
        .route("/control/received/clear", post(control::clear_received))
        .route("/control/device/approve", post(control::approve))
        .route("/control/device/deny", post(control::deny))
        .route("/control/device/pending", get(control::pending))
        .route("/control/sessions/expire", post(control::expire_sessions))
        .route("/control/swr/verify", post(swr::verify_login))
        .route("/device", get(control::device_page));
    control.merge(api).with_state(sim)
}

async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    ApiError::not_found(code::NOT_FOUND, format!("no API {method} {}", uri.path())).into_response()
}

pub fn load(path: &std::path::Path) -> anyhow::Result<SharedSim> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let cfg = config::Config::from_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let catalog = Catalog::build(cfg).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Arc::new(Sim::new(catalog)))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("listening for SIGINT failed: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("listening for SIGTERM failed: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    // One readable line (no backtrace even with RUST_BACKTRACE set): a bad config is a user error.
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcred-huawei-sim: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let sim = load(&cli.config)?;

    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, "simulator started");

    let pruner = {
        let sim = sim.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_INTERVAL);
            loop {
                tick.tick().await;
                sim.prune(sim.now());
            }
        })
    };
    axum::serve(listener, router(sim))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    pruner.abort();
    tracing::info!("simulator stopped");
    Ok(())
}

#[cfg(test)]
mod http_tests {
    //! The whole app on a real socket, driven with reqwest and our own signer.
    use super::*;
    use crate::jwt::tests::{EC_PKCS8_B64, claims, sign_with};
    use crate::testing::{ACCOUNT as ACCT, AGENCY, KID, PROVIDER, START_URL, ci_bot, world};
    use serde_json::{Value, json};
    use tcred::cloud::signer::{AccessKey, Request, sign};

    struct Harness {
        base: String,
        host: String,
        http: reqwest::Client,
    }

    async fn start() -> Harness {
        tcred::cloud::http::install_crypto_provider();
        // The test world, with refresh tokens and without the device flow's poll interval.
        let mut cfg = world();
        cfg.identity_center.issue_refresh_tokens = true;
        cfg.identity_center.poll_interval_seconds = 0;
        let sim = Arc::new(crate::testing::sim(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(sim)).await });
        Harness {
            base: format!("http://{addr}"),
            host: addr.to_string(),
            http: reqwest::Client::new(),
        }
    }

    impl Harness {
        async fn signed(&self, key: &AccessKey, method: &str, path: &str, body: &Value) -> (u16, Value) {
            let body = if method == "GET" {
                Vec::new()
            } else {
                serde_json::to_vec(body).unwrap()
            };
            let headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
            let req = Request {
                method,
                host: &self.host,
                path,
                query: &[],
                headers: &headers,
                body: &body,
            };
            let signed = sign(key, &req, jiff::Timestamp::now());
            let mut rb = self
                .http
                .request(method.parse().unwrap(), format!("{}{path}", self.base));
            for (k, v) in &signed.headers {
                if !k.eq_ignore_ascii_case("host") {
                    rb = rb.header(k, v);
                }
            }
            let resp = rb.body(body).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        }

        async fn post(&self, path: &str, body: Value) -> (u16, Value) {
            self.send_json(reqwest::Method::POST, path, body).await
        }

        /// Sets the fault knobs (`PUT /control/faults`): the status and the knobs as answered.
        async fn put_faults(&self, faults: Value) -> (u16, Value) {
            self.send_json(reqwest::Method::PUT, "/control/faults", faults)
                .await
        }

        async fn send_json(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
            let resp = self
                .http
                .request(method, format!("{}{path}", self.base))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        }

        async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
            let mut rb = self.http.get(format!("{}{path}", self.base));
            if let Some(t) = token {
                rb = rb.header("access-token", t);
            }
            let resp = rb.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        }
    }

    fn user() -> AccessKey {
        ci_bot()
    }

    fn temp_key(v: &Value) -> AccessKey {
        let c = &v["credentials"];
        AccessKey {
            id: c["access_key_id"].as_str().unwrap().into(),
            secret: c["secret_access_key"].as_str().unwrap().into(),
            security_token: Some(c["security_token"].as_str().unwrap().into()),
        }
    }

    #[tokio::test]
    async fn assume_agency_then_caller_identity_and_chaining() {
        let h = start().await;
        let (status, v) = h
            .signed(
                &user(),
                "POST",
                "/v5/agencies/assume",
                &json!({"agency_urn": AGENCY, "agency_session_name": "op"}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            v["assumed_agency"]["urn"],
            format!("sts::{ACCT}::assumed-agency:ops-admin/op")
        );
        let key = temp_key(&v);
        assert_eq!(key.id.len(), 20);

        let (status, who) = h.signed(&key, "GET", "/v5/caller-identity", &Value::Null).await;
        assert_eq!(status, 200, "{who}");
        assert_eq!(
            who["principal_urn"],
            format!("sts::{ACCT}::assumed-agency:ops-admin/op")
        );
        let (_, me) = h
            .signed(&user(), "GET", "/v5/caller-identity", &Value::Null)
            .await;
        assert_eq!(me["principal_urn"], format!("iam::{ACCT}:user:ci-bot"));

        // A session is trusted only by "*" agencies, and chaining caps the duration at 1 h.
        let ops = json!({"agency_urn": AGENCY, "agency_session_name": "again"});
        let (status, v) = h.signed(&key, "POST", "/v5/agencies/assume", &ops).await;
        assert_eq!(status, 403, "{v}");
        assert!(v["encoded_authorization_message"].is_string());
        let chained = format!("iam::{ACCT}:agency:chained");
        let long = json!({"agency_urn": chained, "agency_session_name": "c2", "duration_seconds": 3601});
        let (status, v) = h.signed(&key, "POST", "/v5/agencies/assume", &long).await;
        assert_eq!(status, 400);
        assert!(v["error_msg"].as_str().unwrap().contains("chaining"), "{v}");
        let ok = json!({"agency_urn": chained, "agency_session_name": "c2", "duration_seconds": 3600});
        assert_eq!(h.signed(&key, "POST", "/v5/agencies/assume", &ok).await.0, 200);

        let missing = json!({"agency_urn": format!("iam::{ACCT}:agency:nope"), "agency_session_name": "x1"});
        let (status, v) = h.signed(&user(), "POST", "/v5/agencies/assume", &missing).await;
        assert_eq!((status, v["error_code"].as_str()), (404, Some("STS5.1106")));

        let (_, stats) = h.get("/control/stats", None).await;
        assert_eq!(stats["mintsTotal"], 2);
        assert_eq!(stats["mints"][AGENCY], 1);
        assert_eq!(stats["requests"]["403"], 1);
        assert_eq!(stats["requestsByOperation"]["GetCallerIdentity"], 2);
        assert_eq!(stats["activeTemporaryKeys"], 2);
    }

    #[tokio::test]
    async fn swr_logins_for_a_temporary_key_verify_and_swr_faults_leave_sts_alone() {
        let h = start().await;
        let assume = json!({"agency_urn": AGENCY, "agency_session_name": "pull"});
        let (status, v) = h.signed(&user(), "POST", "/v5/agencies/assume", &assume).await;
        assert_eq!(status, 200, "{v}");
        let key = temp_key(&v);
        // tcred's own client against the simulator: signing, parsing and checks end to end.
        let http = tcred::cloud::HttpClient::new(tcred::cloud::http::Timeouts::default()).unwrap();
        let endpoint = tcred::cloud::endpoints::parse_endpoint(&h.base).unwrap();
        let login = tcred::cloud::swr::create_secret(&http, &endpoint, &key, "cn-north-4", 900)
            .await
            .unwrap();
        assert_eq!(login.host, "swr.cn-north-4.myhuaweicloud.com");
        assert!(login.username.starts_with("cn-north-4@"), "{}", login.username);
        let left = login.expires_at.duration_since(jiff::Timestamp::now()).as_secs();
        assert!((895..=900).contains(&left), "{left}");
        let check = |password: &str| json!({"username": login.username, "password": password});
        let (_, v) = h
            .post("/control/swr/verify", check(login.password.expose()))
            .await;
        assert_eq!(v["valid"], true, "{v}");
        let (_, v) = h.post("/control/swr/verify", check("wrong")).await;
        assert_eq!(v["valid"], false, "{v}");

        // Unsigned: the gateway's 401.
        let resp = h
            .http
            .post(format!(
                "{}/v2/manage/utils/secret?projectname=cn-north-4",
                h.base
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);

        // Scope swr: CreateSecret fails, STS still answers.
        let (status, _) = h.put_faults(json!({"errorRate": 1.0, "scope": "swr"})).await;
        assert_eq!(status, 200);
        let e = tcred::cloud::swr::create_secret(&http, &endpoint, &key, "cn-north-4", 900)
            .await
            .unwrap_err();
        assert_eq!(e.class(), tcred::cloud::ErrorClass::Server, "{e}");
        assert_eq!(
            h.signed(&user(), "POST", "/v5/agencies/assume", &assume).await.0,
            200
        );
        let (_, stats) = h.get("/control/stats", None).await;
        assert_eq!(stats["requestsByOperation"]["CreateSecret"], 3);
    }

    #[tokio::test]
    async fn faults_and_lifetime_override() {
        let h = start().await;
        let body = json!({"agency_urn": AGENCY, "agency_session_name": "op", "duration_seconds": 3600});
        let (status, _) = h
            .put_faults(json!({"throttleRate": 1.0, "retryAfterSeconds": 7}))
            .await;
        assert_eq!(status, 200);
        let headers = {
            let payload = serde_json::to_vec(&body).unwrap();
            let hdrs = vec![("Content-Type".to_owned(), "application/json".to_owned())];
            let req = Request {
                method: "POST",
                host: &h.host,
                path: "/v5/agencies/assume",
                query: &[],
                headers: &hdrs,
                body: &payload,
            };
            (sign(&user(), &req, jiff::Timestamp::now()).headers, payload)
        };
        let mut rb = h.http.post(format!("{}/v5/agencies/assume", h.base));
        for (k, v) in &headers.0 {
            if !k.eq_ignore_ascii_case("host") {
                rb = rb.header(k, v);
            }
        }
        let resp = rb.body(headers.1).send().await.unwrap();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "7");
        assert!(resp.headers().contains_key("x-request-id"));
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error_code"], "APIGW.0308");

        h.put_faults(json!({"throttleRate": 0.0})).await;
        h.http
            .put(format!("{}/control/lifetime", h.base))
            .json(&json!({"credentialSeconds": 30}))
            .send()
            .await
            .unwrap();
        let (status, v) = h.signed(&user(), "POST", "/v5/agencies/assume", &body).await;
        assert_eq!(status, 200);
        let exp: jiff::Timestamp = v["credentials"]["expiration"].as_str().unwrap().parse().unwrap();
        let left = exp.duration_since(jiff::Timestamp::now()).as_secs();
        assert!((25..=30).contains(&left), "{left}");
    }

    #[tokio::test]
    async fn latency_jitter_is_a_fault_knob_that_delays_mints_and_keeps_signatures_checked() {
        let h = start().await;
        assert_eq!(h.put_faults(json!({"latencyJitterMs": 600_001})).await.0, 400);
        let (status, v) = h
            .put_faults(json!({"latencyMs": 150, "latencyJitterMs": 100}))
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            (v["latencyMs"].as_u64(), v["latencyJitterMs"].as_u64()),
            (Some(150), Some(100))
        );
        let (_, v) = h.get("/control/faults", None).await;
        assert_eq!(v["latencyJitterMs"], 100);

        let body = json!({"agency_urn": AGENCY, "agency_session_name": "op", "duration_seconds": 3600});
        for _ in 0..3 {
            let started = std::time::Instant::now();
            let (status, _) = h.signed(&user(), "POST", "/v5/agencies/assume", &body).await;
            assert_eq!(status, 200);
            let took = started.elapsed().as_millis();
            assert!(took >= 150, "a mint answered after {took} ms, before latencyMs");
        }
        // The delay is in front of the handlers, not instead of them: a wrong key is still refused.
        let wrong = AccessKey {
            secret: "not-the-secret-key-000000000000000000000".into(),
            ..user()
        };
        let (status, v) = h.signed(&wrong, "POST", "/v5/agencies/assume", &body).await;
        assert_eq!((status, v["error_code"].as_str()), (401, Some("APIGW.0301")));
    }

    #[tokio::test]
    async fn a_delayed_mint_is_counted_in_flight_until_answered_or_abandoned() {
        let h = start().await;
        let (status, _) = h.put_faults(json!({"latencyMs": 60_000, "scope": "mint"})).await;
        assert_eq!(status, 200);
        let in_flight = || async {
            let (_, stats) = h.get("/control/stats", None).await;
            stats["inFlightByOperation"]["AssumeAgency"].as_u64().unwrap_or(0)
        };
        assert_eq!(in_flight().await, 0);
        let body = json!({"agency_urn": AGENCY, "agency_session_name": "op"});
        let key = user();
        let call = h.signed(&key, "POST", "/v5/agencies/assume", &body);
        // Dropped when the stats say it is under way: the client abandons the call.
        let seen = tokio::select! {
            _ = call => false,
            seen = async {
                while in_flight().await == 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                true
            } => seen,
        };
        assert!(seen, "the mint was never counted in flight");
        let mut left = in_flight().await;
        for _ in 0..100 {
            if left == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            left = in_flight().await;
        }
        assert_eq!(left, 0, "an abandoned call stays counted");

        // Answered: counted while delayed, gone once answered.
        h.put_faults(json!({"latencyMs": 300, "scope": "mint"})).await;
        let (status, _) = h.signed(&user(), "POST", "/v5/agencies/assume", &body).await;
        assert_eq!(status, 200);
        assert_eq!(in_flight().await, 0);
    }

    #[tokio::test]
    async fn assume_agency_with_oidc() {
        let h = start().await;
        let token = sign_with(
            EC_PKCS8_B64,
            KID,
            &claims(
                "system:serviceaccount:team-a:billing",
                json!("sts.huaweicloud"),
                600,
            ),
        );
        let req = |token: &str| json!({"provider_urn": PROVIDER, "agency_urn": AGENCY, "agency_session_name": "k8s", "id_token": token});
        let (status, v) = h.post("/v5/agencies/assume-with-oidc", req(&token)).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["subject_from_id_token"], "system:serviceaccount:team-a:billing");
        assert_eq!(v["audience"], "sts.huaweicloud");
        assert_eq!(v["provider"], PROVIDER);

        let other_sub = sign_with(
            EC_PKCS8_B64,
            KID,
            &claims("system:serviceaccount:team-b:x", json!("sts.huaweicloud"), 600),
        );
        let (status, v) = h.post("/v5/agencies/assume-with-oidc", req(&other_sub)).await;
        assert_eq!(status, 403);
        assert!(v["error_msg"].as_str().unwrap().contains("subject"), "{v}");
        let other_aud = sign_with(
            EC_PKCS8_B64,
            KID,
            &claims("system:serviceaccount:team-a:x", json!("other"), 600),
        );
        let (status, v) = h.post("/v5/agencies/assume-with-oidc", req(&other_aud)).await;
        assert_eq!(status, 403);
        assert!(v["error_msg"].as_str().unwrap().contains("audiences"), "{v}");
        let (status, _) = h.post("/v5/agencies/assume-with-oidc", req("abc.def.ghi")).await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn device_flow_portal_and_refresh() {
        let h = start().await;
        let (status, reg) = h
            .post(
                "/v1/clients",
                json!({"client_name": "tcred", "client_type": "public", "token_endpoint_auth_method": "client_secret_post",
                       "grant_types": ["urn:ietf:params:oauth:grant-type:device_code"], "response_types": ["code"]}),
            )
            .await;
        assert_eq!(status, 200, "{reg}");
        let client = json!({"client_id": reg["client_info"]["client_id"], "client_secret": reg["client_info"]["client_secret"]});
        let mut start_body = client.clone();
        start_body["start_url"] = json!("https://elsewhere.example.com/portal");
        assert_eq!(h.post("/v1/device/authorize", start_body.clone()).await.0, 400);
        start_body["start_url"] = json!(START_URL);
        let (status, dev) = h.post("/v1/device/authorize", start_body).await;
        assert_eq!(status, 200, "{dev}");

        let mut poll = client.clone();
        poll["grant_type"] = json!("urn:ietf:params:oauth:grant-type:device_code");
        poll["device_code"] = dev["device_code"].clone();
        let (status, v) = h.post("/v1/tokens", poll.clone()).await;
        assert_eq!(
            (status, v["error_code"].as_str()),
            (400, Some("authorization_pending"))
        );

        let (_, pending) = h.get("/control/device/pending", None).await;
        assert_eq!(pending[0]["userCode"], dev["user_code"]);
        let (status, _) = h
            .post(
                "/control/device/approve",
                json!({"userCode": dev["user_code"], "user": "alice"}),
            )
            .await;
        assert_eq!(status, 200);
        let (status, tok) = h.post("/v1/tokens", poll.clone()).await;
        assert_eq!(status, 200, "{tok}");
        let access = tok["token_info"]["access_token"].as_str().unwrap().to_owned();
        assert_eq!(
            h.post("/v1/tokens", poll).await.0,
            400,
            "a device code is exchanged once"
        );

        let (status, accounts) = h.get("/v1/assigned-accounts", Some(&access)).await;
        assert_eq!(status, 200);
        assert_eq!(accounts["account_list"][0]["account_id"], ACCT);
        let (_, agencies) = h
            .get(
                &format!("/v1/assigned-agencies?account_id={ACCT}&limit=1"),
                Some(&access),
            )
            .await;
        assert_eq!(agencies["agency_list"].as_array().unwrap().len(), 1);
        assert!(agencies["page_info"]["next_marker"].is_null());
        let urn = agencies["agency_list"][0]["agency_urn"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, creds) = h
            .get(
                &format!("/v1/credentials?target_account_id={ACCT}&agency_urn={urn}"),
                Some(&access),
            )
            .await;
        assert_eq!(status, 200, "{creds}");
        assert!(creds["agency_credentials"]["expiration"].as_i64().unwrap() < 10_000_000_000);
        let admin = format!("iam::{ACCT}:agency:IdentityCenter-AdminAccess");
        let (status, _) = h
            .get(
                &format!("/v1/credentials?target_account_id={ACCT}&agency_urn={admin}"),
                Some(&access),
            )
            .await;
        assert_eq!(status, 403);
        let nope = format!("iam::{ACCT}:agency:nope");
        assert_eq!(
            h.get(
                &format!("/v1/credentials?target_account_id={ACCT}&agency_urn={nope}"),
                Some(&access)
            )
            .await
            .0,
            404
        );

        // Refresh rotates: the new token works, the old refresh token does not.
        let mut refresh = client.clone();
        refresh["grant_type"] = json!("refresh_token");
        refresh["refresh_token"] = tok["token_info"]["refresh_token"].clone();
        let (status, tok2) = h.post("/v1/tokens", refresh.clone()).await;
        assert_eq!(status, 200, "{tok2}");
        assert_ne!(
            tok2["token_info"]["refresh_token"],
            tok["token_info"]["refresh_token"]
        );
        let (status, v) = h.post("/v1/tokens", refresh).await;
        assert_eq!((status, v["error_code"].as_str()), (400, Some("invalid_grant")));

        let (status, _) = h.post("/control/sessions/expire", json!({"user": "alice"})).await;
        assert_eq!(status, 200);
        let (status, v) = h.get("/v1/assigned-accounts", Some(&access)).await;
        assert_eq!(
            (status, v["error_code"].as_str()),
            (401, Some("IdentityCenter.401"))
        );
        assert_eq!(h.get("/v1/assigned-accounts", None).await.0, 401);
    }

    #[tokio::test]
    async fn hostile_mode_rewrites_answers_and_records_what_it_received() {
        let h = start().await;
        let put = |body: Value| {
            let http = h.http.clone();
            let url = format!("{}/control/hostile", h.base);
            async move { http.put(url).json(&body).send().await.unwrap() }
        };
        let assume = json!({"agency_urn": AGENCY, "agency_session_name": "op"});

        // A raw expiry override and a Date header 50 minutes ahead, on STS only.
        let resp = put(
            json!({"operations": ["AssumeAgency"], "expiration": "-009999-01-02T01:59:59Z",
                              "dateOffsetSeconds": 3000}),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let (status, v) = h.signed(&user(), "POST", "/v5/agencies/assume", &assume).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["credentials"]["expiration"], "-009999-01-02T01:59:59Z");
        assert_eq!(v["credentials"]["access_key_id"].as_str().map(str::len), Some(20));

        let resp = put(json!({"dateOffsetSeconds": 3000})).await;
        assert_eq!(resp.status(), 200);
        let payload = serde_json::to_vec(&assume).unwrap();
        let hdrs = vec![("Content-Type".to_owned(), "application/json".to_owned())];
        let req = Request {
            method: "POST",
            host: &h.host,
            path: "/v5/agencies/assume",
            query: &[],
            headers: &hdrs,
            body: &payload,
        };
        let mut rb = h.http.post(format!("{}/v5/agencies/assume", h.base));
        for (k, v) in &sign(&user(), &req, jiff::Timestamp::now()).headers {
            if !k.eq_ignore_ascii_case("host") {
                rb = rb.header(k, v);
            }
        }
        let resp = rb.body(payload).send().await.unwrap();
        let date = resp.headers()["date"].to_str().unwrap().to_owned();
        let date = jiff::fmt::rfc2822::parse(&date).unwrap().timestamp();
        let ahead = date.duration_since(jiff::Timestamp::now()).as_secs();
        assert!((2990..=3001).contains(&ahead), "Date is {ahead} s ahead");

        // Malformed JSON on a 200.
        put(json!({"malformedJson": true})).await;
        let (status, v) = h.signed(&user(), "POST", "/v5/agencies/assume", &assume).await;
        assert_eq!((status, v), (200, Value::Null), "the body does not parse");

        // A huge body: exactly N bytes, streamed without Content-Length.
        put(json!({"hugeBodyBytes": 5_000_000})).await;
        let (status, _) = h.signed(&user(), "POST", "/v5/agencies/assume", &assume).await;
        assert_eq!(status, 200);
        let token = sign_with(
            EC_PKCS8_B64,
            KID,
            &claims(
                "system:serviceaccount:team-a:billing",
                json!("sts.huaweicloud"),
                600,
            ),
        );
        let oidc = json!({"provider_urn": PROVIDER, "agency_urn": AGENCY, "agency_session_name": "k8s", "id_token": token});
        let resp = h
            .http
            .post(format!("{}/v5/agencies/assume-with-oidc", h.base))
            .json(&oidc)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("content-length").is_none());
        assert_eq!(resp.bytes().await.unwrap().len(), 5_000_000);

        // A slow body still arrives whole.
        put(json!({"slowBodySeconds": 1})).await;
        let started = std::time::Instant::now();
        let (status, v) = h.signed(&user(), "POST", "/v5/agencies/assume", &assume).await;
        assert_eq!(status, 200, "{v}");
        assert!(v["credentials"]["expiration"].is_string());
        assert!(started.elapsed() >= std::time::Duration::from_millis(600));

        // Bad settings are refused; {} turns hostile mode off.
        assert_eq!(put(json!({"slowBodySeconds": 100000})).await.status(), 400);
        assert_eq!(put(json!({"operations": ["Nope"]})).await.status(), 400);
        assert_eq!(put(json!({})).await.status(), 200);
        let (_, current) = h.get("/control/hostile", None).await;
        assert_eq!(current, json!({}));
        let (status, v) = h.signed(&user(), "POST", "/v5/agencies/assume", &assume).await;
        assert_eq!(status, 200);
        assert!(v["credentials"]["expiration"].as_str().unwrap().starts_with("20"));

        // What the hostile endpoint received, for TokenReview.
        h.get("/v1/assigned-accounts", Some("portal-token-1")).await;
        let (_, received) = h.get("/control/received", None).await;
        assert_eq!(received["idTokens"], json!([token]));
        assert_eq!(received["accessTokens"], json!(["portal-token-1"]));
        h.post("/control/received/clear", json!({})).await;
        let (_, received) = h.get("/control/received", None).await;
        assert_eq!(received["idTokens"], json!([]));
    }
}
