//! `tcred login`: the IAM Identity Center device authorization flow for an identityCenter
//! source, ending with the session Secret written through the Kubernetes API.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt, api::ObjectMeta};

use super::error::Error;
use crate::{
    api::{ClusterCredentialSource, CredentialSource, IdentityCenterSource, SourceMode, SourceView, labels},
    cloud::{
        HttpClient, endpoints,
        http::Timeouts,
        oidc::{self, DeviceAuthorization, DevicePoll, RegisteredClient, TokenSet},
    },
    session::{self, Session, store},
    time::rfc3339,
};

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The CredentialSource (in --namespace) to log in for.
    #[arg(
        long,
        conflicts_with = "cluster_source",
        required_unless_present = "cluster_source"
    )]
    pub source: Option<String>,
    /// The ClusterCredentialSource to log in for.
    #[arg(long)]
    pub cluster_source: Option<String>,
    /// Namespace of the CredentialSource (default: the kubeconfig's namespace).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// The Identity Center user portal URL (https://.../d-xxxxxxxxxx/portal). Remembered in the
    /// session Secret; needed the first time.
    #[arg(long)]
    pub start_url: Option<String>,
    /// Name the OIDC client is registered under.
    #[arg(long, default_value = "tcred")]
    pub client_name: String,
    /// Give up waiting for approval after this long (default: when the code expires).
    #[arg(long)]
    pub timeout: Option<kube::core::Duration>,
}

/// The source's parts login needs, whichever kind it is.
struct Target {
    desc: String,
    kind: &'static str,
    name: String,
    ic: IdentityCenterSource,
    endpoints: Option<crate::api::Endpoints>,
    secret_namespace: String,
}

fn identity_center(
    view: SourceView<'_>,
    desc: &str,
) -> Result<(IdentityCenterSource, Option<crate::api::Endpoints>), Error> {
    match view.mode {
        Some(SourceMode::IdentityCenter(ic)) => Ok((ic.clone(), view.endpoints.cloned())),
        Some(other) => Err(Error::Usage(format!(
            "{desc} is a {} source; tcred login is for identityCenter sources",
            other.name()
        ))),
        None => Err(Error::Usage(format!("{desc} does not name exactly one mode"))),
    }
}

async fn target(client: &Client, args: &LoginArgs) -> Result<Target, Error> {
    if let Some(name) = &args.cluster_source {
        let src = Api::<ClusterCredentialSource>::all(client.clone())
            .get(name)
            .await?;
        let desc = format!("ClusterCredentialSource {name}");
        let (ic, endpoints) = identity_center(src.spec.view(), &desc)?;
        let secret_namespace = ic
            .session_secret_ref
            .namespace
            .clone()
            .ok_or_else(|| Error::Usage(format!("{desc} names no namespace for its session Secret")))?;
        return Ok(Target {
            desc,
            kind: "ClusterCredentialSource",
            name: name.clone(),
            ic,
            endpoints,
            secret_namespace,
        });
    }
    let name = args.source.clone().unwrap_or_default();
    let ns = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let src = Api::<CredentialSource>::namespaced(client.clone(), &ns)
        .get(&name)
        .await?;
    let desc = format!("CredentialSource {ns}/{name}");
    let (ic, endpoints) = identity_center(src.spec.view(), &desc)?;
    Ok(Target {
        desc,
        kind: "CredentialSource",
        name,
        ic,
        endpoints,
        secret_namespace: ns,
    })
}

pub async fn run(args: LoginArgs) -> Result<(), Error> {
    let client = Client::try_default().await?;
    let t = target(&client, &args).await?;
    let secrets = Api::<Secret>::namespaced(client.clone(), &t.secret_namespace);
    let secret_name = t.ic.session_secret_ref.name.clone();
    let existing = secrets.get_opt(&secret_name).await?;
    if let Some(s) = &existing {
        bound_elsewhere(s.labels(), &t, &secret_name)?;
    }
    let previous = existing.as_ref().and_then(|s| Session::from_secret(s).ok());

    let start_url = args
        .start_url
        .clone()
        .or_else(|| previous.as_ref().and_then(|p| p.start_url.clone()))
        .ok_or_else(|| {
            Error::Usage("--start-url is required for the first login (your user portal URL)".into())
        })?;
    let eps = endpoints::resolve(&t.ic.region, t.endpoints.as_ref(), endpoints::Overrides::Admin)
        .map_err(|e| Error::Usage(e.to_string()))?;
    let http = HttpClient::new(Timeouts::default()).map_err(|e| Error::Usage(e.to_string()))?;
    let now = Timestamp::now();
    let client_reg = registration(&http, &eps.oidc, previous.as_ref(), &t, &args.client_name, now).await?;
    let device = oidc::start_device_authorization(&http, &eps.oidc, &client_reg, &start_url)
        .await
        .map_err(|e| Error::Usage(e.to_string()))?;
    show_code(&t, &device);
    let deadline = match args.timeout {
        Some(d) => (now + jiff::SignedDuration::try_from(Duration::from(d)).unwrap_or_default())
            .min(device.expires_at),
        None => device.expires_at,
    };
    let tokens = approval(&http, &eps.oidc, &client_reg, &device, deadline).await?;

    let session = Session {
        region: t.ic.region.clone(),
        start_url: Some(start_url),
        client_id: Some(client_reg.client_id),
        client_secret: Some(client_reg.client_secret),
        client_secret_expires_at: Some(client_reg.client_secret_expires_at),
        access_token: tokens.access_token,
        access_token_expires_at: tokens.expires_at,
        access_token_issued_at: Some(Timestamp::now()),
        refresh_token: tokens.refresh_token,
    };
    write_session(&secrets, &secret_name, existing, &session, &t).await?;
    println!();
    println!(
        "Logged in. The session is valid until {}{}; stored in Secret {}/{secret_name}.",
        rfc3339(session.access_token_expires_at),
        if session.refresh_token.is_some() {
            " and tcred refreshes it before then"
        } else {
            ""
        },
        t.secret_namespace
    );
    Ok(())
}

/// The registered OIDC client: the previous session's while its secret has more than a day
/// left (in the same region), else a new registration.
async fn registration(
    http: &HttpClient,
    oidc_endpoint: &url::Url,
    previous: Option<&Session>,
    t: &Target,
    client_name: &str,
    now: Timestamp,
) -> Result<RegisteredClient, Error> {
    // A session made by hand may lack the client: then a new one is registered.
    let reusable = previous.filter(|p| p.region == t.ic.region).and_then(|p| {
        let expires = p.client_secret_expires_at?;
        let (id, secret) = p.refresh_client().ok()?;
        (expires > now + jiff::SignedDuration::from_hours(24)).then(|| RegisteredClient {
            client_id: id.to_owned(),
            client_secret: secret.clone(),
            client_secret_expires_at: expires,
        })
    });
    match reusable {
        Some(c) => Ok(c),
        None => oidc::register_client(http, oidc_endpoint, client_name)
            .await
            .map_err(|e| Error::Usage(e.to_string())),
    }
}

/// Tells the person where to approve the login and which code to expect.
fn show_code(t: &Target, device: &DeviceAuthorization) {
    let open = device
        .verification_uri_complete
        .as_deref()
        .unwrap_or(&device.verification_uri);
    println!("Logging in to IAM Identity Center for {}.", t.desc);
    println!();
    println!("Open this page in a browser and sign in:");
    println!();
    println!("    {open}");
    println!();
    println!("Confirm that it shows this code:");
    println!();
    println!("User code: {}", device.user_code);
    println!();
    println!(
        "Waiting for approval (the code expires at {})...",
        rfc3339(device.expires_at)
    );
}

/// Polls until the person approves (or `deadline` passes), slowing down when asked to.
async fn approval(
    http: &HttpClient,
    oidc_endpoint: &url::Url,
    client_reg: &RegisteredClient,
    device: &DeviceAuthorization,
    deadline: Timestamp,
) -> Result<TokenSet, Error> {
    let mut interval = device.interval;
    loop {
        tokio::time::sleep(interval).await;
        if Timestamp::now() >= deadline {
            return Err(Error::Usage(
                "the code was not approved in time; run tcred login again".into(),
            ));
        }
        match oidc::poll_device_token(http, oidc_endpoint, client_reg, device).await {
            Ok(DevicePoll::Pending) => {}
            Ok(DevicePoll::SlowDown) => interval += Duration::from_secs(5),
            Ok(DevicePoll::Issued(tokens)) => return Ok(tokens),
            Err(e) => return Err(Error::Usage(format!("login failed: {e}"))),
        }
    }
}

/// Refuses to take over a session Secret labelled for another source: its registered client
/// would go to this source's endpoints, and the other source would lose its session. A Secret
/// without binding labels (written before they existed, or by hand) is taken over.
fn bound_elsewhere(
    existing_labels: &std::collections::BTreeMap<String, String>,
    t: &Target,
    secret_name: &str,
) -> Result<(), Error> {
    let kind = existing_labels.get(session::labels::SOURCE_KIND);
    let name = existing_labels.get(session::labels::SOURCE_NAME);
    match (kind, name) {
        (None, None) => Ok(()),
        (Some(k), Some(n)) if k == t.kind && *n == t.name => Ok(()),
        _ => Err(Error::Usage(format!(
            "Secret {}/{secret_name} holds the session of {} {}, not of {}: point this source at its own \
             sessionSecretRef, or delete that Secret first",
            t.secret_namespace,
            kind.map_or("another", String::as_str),
            name.map_or("source", String::as_str),
            t.desc
        ))),
    }
}

/// Creates or replaces the whole session Secret (every key from this login, nothing stale). The
/// replace is made at the version read; if the controller refreshed the old session meanwhile,
/// the Secret is read again and replaced again: a new login is always newer than a refresh.
async fn write_session(
    secrets: &Api<Secret>,
    name: &str,
    existing: Option<Secret>,
    session: &Session,
    t: &Target,
) -> Result<(), Error> {
    let build = |existing: Option<&Secret>, _reread: bool| {
        let mut labels_out = existing.map(|s| s.labels().clone()).unwrap_or_default();
        labels_out.insert(labels::MANAGED_BY.into(), labels::MANAGED_BY_VALUE.into());
        labels_out.insert(session::labels::SOURCE_KIND.into(), t.kind.into());
        labels_out.insert(session::labels::SOURCE_NAME.into(), t.name.clone());
        store::Next::Write(Box::new(Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(t.secret_namespace.clone()),
                labels: Some(labels_out),
                annotations: existing.and_then(|s| s.metadata.annotations.clone()),
                resource_version: existing.and_then(|s| s.resource_version()),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(session.to_data()),
            ..Default::default()
        }))
    };
    match store::write(secrets, name, "tcred-login", existing, build).await {
        Ok(_) => Ok(()),
        Err(store::WriteError::Reread(e) | store::WriteError::Write(e)) => Err(e.into()),
        Err(store::WriteError::Conflicting) => Err(Error::Usage(format!(
            "the session Secret {name} kept changing while writing it; run tcred login again"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::SecretReference;

    fn target(kind: &'static str, name: &str) -> Target {
        Target {
            desc: format!("{kind} {name}"),
            kind,
            name: name.into(),
            ic: IdentityCenterSource {
                region: "ap-southeast-1".into(),
                session_secret_ref: SecretReference {
                    name: "corp-session".into(),
                    namespace: None,
                },
            },
            endpoints: None,
            secret_namespace: "team-a".into(),
        }
    }

    fn labels(kind: &str, name: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (session::labels::SOURCE_KIND.to_owned(), kind.to_owned()),
            (session::labels::SOURCE_NAME.to_owned(), name.to_owned()),
        ])
    }

    #[test]
    fn login_keeps_to_its_own_session_secret() {
        let corp = target("CredentialSource", "corp");
        assert!(bound_elsewhere(&labels("CredentialSource", "corp"), &corp, "corp-session").is_ok());
        assert!(bound_elsewhere(&BTreeMap::new(), &corp, "corp-session").is_ok());
        let Err(Error::Usage(msg)) =
            bound_elsewhere(&labels("CredentialSource", "official"), &corp, "corp-session")
        else {
            panic!("a session bound to another source was taken over");
        };
        assert!(
            msg.contains("Secret team-a/corp-session holds the session of CredentialSource official"),
            "{msg}"
        );
        assert!(bound_elsewhere(&labels("ClusterCredentialSource", "corp"), &corp, "corp-session").is_err());
        let half = BTreeMap::from([(session::labels::SOURCE_NAME.to_owned(), "corp".to_owned())]);
        assert!(bound_elsewhere(&half, &corp, "corp-session").is_err());
    }
}
