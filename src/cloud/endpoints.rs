//! Endpoint resolution: defaults from the region, overrides from the source, and the rule that
//! endpoints are `https`, or `http` to a loopback host only (local simulators).

use url::{Host, Url};

use super::error::CloudError;
use crate::api::Endpoints;

/// The three service endpoints a source may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedEndpoints {
    pub oidc: Url,
    pub portal: Url,
    pub sts: Url,
}

/// Defaults for `region`, replaced by any override in `endpoints`.
pub fn resolve(region: &str, endpoints: Option<&Endpoints>) -> Result<ResolvedEndpoints, CloudError> {
    let pick = |over: Option<&String>, default: String| match over {
        Some(u) => parse_endpoint(u),
        None => parse_endpoint(&default),
    };
    let e = endpoints.cloned().unwrap_or_default();
    Ok(ResolvedEndpoints {
        oidc: pick(
            e.oidc.as_ref(),
            format!("https://oidc.{region}.myhuaweicloud.com"),
        )?,
        portal: pick(
            e.portal.as_ref(),
            "https://portal-identitycenter.myhuaweicloud.com".to_owned(),
        )?,
        sts: pick(e.sts.as_ref(), format!("https://sts.{region}.myhuaweicloud.com"))?,
    })
}

/// Parses and checks one endpoint URL.
pub fn parse_endpoint(raw: &str) -> Result<Url, CloudError> {
    let url =
        Url::parse(raw).map_err(|e| CloudError::Config(format!("endpoint {raw:?} is not a URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(CloudError::Config(format!(
            "endpoint {raw:?} must not carry credentials"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(CloudError::Config(format!(
            "endpoint {raw:?} must not have a query or fragment"
        )));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(CloudError::Config(format!(
            "endpoint {raw:?} uses http; only https is allowed (http only for loopback hosts)"
        ))),
        other => Err(CloudError::Config(format!(
            "endpoint {raw:?} has unsupported scheme {other:?}"
        ))),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// `base` joined with an API path (keeps any path prefix of an override such as a gateway route).
pub fn join(base: &Url, api_path: &str) -> Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}{api_path}"));
    url
}

/// The `Host` header value a client sends to `url` (port only when not the scheme's default).
pub fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_region() {
        let e = resolve("ap-southeast-1", None).unwrap();
        assert_eq!(e.oidc.as_str(), "https://oidc.ap-southeast-1.myhuaweicloud.com/");
        assert_eq!(
            e.portal.as_str(),
            "https://portal-identitycenter.myhuaweicloud.com/"
        );
        assert_eq!(e.sts.as_str(), "https://sts.ap-southeast-1.myhuaweicloud.com/");
    }

    #[test]
    fn overrides_replace_defaults_one_by_one() {
        let over = Endpoints {
            sts: Some("http://127.0.0.1:8443".into()),
            ..Default::default()
        };
        let e = resolve("cn-north-4", Some(&over)).unwrap();
        assert_eq!(e.sts.as_str(), "http://127.0.0.1:8443/");
        assert_eq!(e.oidc.as_str(), "https://oidc.cn-north-4.myhuaweicloud.com/");
    }

    #[test]
    fn http_is_allowed_for_loopback_hosts_only() {
        for ok in [
            "https://sts.example.com",
            "http://127.0.0.1:1",
            "http://localhost:80",
            "http://[::1]:9",
        ] {
            assert!(parse_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://sts.example.com",
            "http://10.0.0.1",
            "ftp://127.0.0.1",
            "https://u:p@x.com",
            "https://x.com/?a=b",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn api_paths_keep_an_override_prefix_and_host_has_only_non_default_ports() {
        let base = Url::parse("https://gw.example.com/huawei/sts/").unwrap();
        assert_eq!(
            join(&base, "/v5/agencies/assume").path(),
            "/huawei/sts/v5/agencies/assume"
        );
        assert_eq!(host_header(&base), "gw.example.com");
        assert_eq!(
            host_header(&Url::parse("http://127.0.0.1:8080").unwrap()),
            "127.0.0.1:8080"
        );
        assert_eq!(host_header(&Url::parse("https://x.com:443").unwrap()), "x.com");
    }
}
