//! Endpoint resolution: defaults from the region, overrides from the source, the rule that
//! endpoints are `https`, or `http` to a loopback host only (local simulators), and the
//! administrator's allowlist of hosts a namespaced source may name.

use url::{Host, Url};

use super::error::CloudError;
use crate::api::Endpoints;

/// The flag an administrator sets to let namespaced sources use other hosts.
pub use super::error::ALLOWED_HOSTS_FLAG;

/// Huawei Cloud's own domains: always allowed, and the only hosts trusted by default.
pub const HUAWEI_DOMAINS: [&str; 4] = [
    "myhuaweicloud.com",
    "huaweicloud.com",
    "myhuaweicloud.eu",
    "huaweicloud.eu",
];

/// Whether `host` is one of Huawei Cloud's domains or a name under one (label boundary: so
/// `evilmyhuaweicloud.com` is not).
pub fn is_huawei_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    HUAWEI_DOMAINS.iter().any(|d| is_under(&host, d))
}

/// `host` equals `domain` or ends with `.domain`.
fn is_under(host: &str, domain: &str) -> bool {
    host == domain || host.strip_suffix(domain).is_some_and(|rest| rest.ends_with('.'))
}

/// Which hosts Huawei Cloud calls may go to on behalf of a namespaced source, and whose responses
/// are trusted (their `Date` feeds the clock-skew measurement; their transport errors are reported
/// in full). Huawei Cloud's own domains always are; the administrator adds others with
/// `--allowed-endpoint-hosts` (`host`, `host:port`, `*.domain`, `[::1]`, `[::1]:8443`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    rules: Vec<HostRule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct HostRule {
    host: HostPattern,
    /// `None`: any port.
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    Exact(Host<String>),
    /// `*.domain`: any name strictly under `domain`.
    Under(String),
}

/// An `--allowed-endpoint-hosts` entry that is not `host`, `host:port` or `*.domain`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{ALLOWED_HOSTS_FLAG} entry {entry:?} is not a host, host:port or *.domain: {why}")]
pub struct PolicyError {
    entry: String,
    why: &'static str,
}

impl EndpointPolicy {
    /// The policy for the administrator's entries; Huawei Cloud's domains need no entry.
    pub fn new<S: AsRef<str>>(entries: &[S]) -> Result<Self, PolicyError> {
        let rules = entries
            .iter()
            .map(|e| e.as_ref().trim())
            .filter(|e| !e.is_empty())
            .map(HostRule::parse)
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    /// Whether a request to `url` is allowed for a namespaced source, and a response from it trusted.
    pub fn allows(&self, url: &Url) -> bool {
        let Some(host) = url.host() else {
            return false;
        };
        if let Host::Domain(d) = &host
            && is_huawei_host(d)
        {
            return true;
        }
        let port = url.port_or_known_default();
        self.rules.iter().any(|r| r.matches(&host, port))
    }
}

impl HostRule {
    fn parse(entry: &str) -> Result<Self, PolicyError> {
        let fail = |why| PolicyError {
            entry: entry.to_owned(),
            why,
        };
        let (host, port) = split_port(entry).ok_or_else(|| fail("the port is not a number"))?;
        let host = if let Some(domain) = host.strip_prefix("*.") {
            match Host::parse(domain) {
                Ok(Host::Domain(d)) if !d.is_empty() && !d.contains('*') => {
                    HostPattern::Under(d.trim_end_matches('.').to_owned())
                }
                _ => return Err(fail("a wildcard must be followed by a domain name")),
            }
        } else {
            match Host::parse(host) {
                Ok(Host::Domain(d)) if d.is_empty() || d.contains('*') => {
                    return Err(fail("not a host name"));
                }
                Ok(Host::Domain(d)) => HostPattern::Exact(Host::Domain(d.trim_end_matches('.').to_owned())),
                Ok(h) => HostPattern::Exact(h),
                Err(_) => return Err(fail("not a host name")),
            }
        };
        Ok(Self { host, port })
    }

    fn matches(&self, host: &Host<&str>, port: Option<u16>) -> bool {
        if self.port.is_some() && self.port != port {
            return false;
        }
        match (&self.host, host) {
            (HostPattern::Exact(Host::Domain(a)), Host::Domain(b)) => {
                a.eq_ignore_ascii_case(b.trim_end_matches('.'))
            }
            (HostPattern::Exact(Host::Ipv4(a)), Host::Ipv4(b)) => a == b,
            (HostPattern::Exact(Host::Ipv6(a)), Host::Ipv6(b)) => a == b,
            (HostPattern::Under(d), Host::Domain(b)) => {
                let b = b.trim_end_matches('.').to_ascii_lowercase();
                b.len() > d.len() && is_under(&b, d)
            }
            _ => false,
        }
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` → (host, port). `None` when a port is not a number.
fn split_port(entry: &str) -> Option<(&str, Option<u16>)> {
    if entry.starts_with('[') {
        return match entry.find(']') {
            Some(end) => {
                let (host, rest) = entry.split_at(end + 1);
                match rest.strip_prefix(':') {
                    Some(p) => p.parse().ok().map(|p| (host, Some(p))),
                    None if rest.is_empty() => Some((host, None)),
                    None => None,
                }
            }
            None => Some((entry, None)),
        };
    }
    match entry.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address, no port.
        Some((host, _)) if host.contains(':') => Some((entry, None)),
        Some((host, p)) => p.parse().ok().map(|p| (host, Some(p))),
        None => Some((entry, None)),
    }
}

/// Who wrote the endpoint overrides being resolved.
#[derive(Clone, Copy, Debug)]
pub enum Overrides<'a> {
    /// An administrator (a ClusterCredentialSource, or the person running `tcred login`): any
    /// host that passes [`parse_endpoint`].
    Admin,
    /// A namespaced CredentialSource: every endpoint must also be allowed by the policy.
    Namespaced(&'a EndpointPolicy),
}

/// The three service endpoints a source may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedEndpoints {
    pub oidc: Url,
    pub portal: Url,
    pub sts: Url,
}

/// Defaults for `region`, replaced by any override in `endpoints`. For namespaced overrides,
/// every resulting host (a default built from a tenant's region too) must be allowed.
pub fn resolve(
    region: &str,
    endpoints: Option<&Endpoints>,
    overrides: Overrides<'_>,
) -> Result<ResolvedEndpoints, CloudError> {
    let pick = |over: Option<&String>, default: String| {
        let url = match over {
            Some(u) => parse_endpoint(u)?,
            None => parse_endpoint(&default)?,
        };
        match overrides {
            Overrides::Namespaced(policy) if !policy.allows(&url) => Err(CloudError::EndpointNotAllowed {
                endpoint: describe_url(&url),
            }),
            _ => Ok(url),
        }
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

/// The SWR endpoint for `region` (`https://swr-api.<region>.myhuaweicloud.com`), or the
/// source's `swr` override, checked like every other endpoint.
pub fn resolve_swr(
    region: &str,
    endpoints: Option<&Endpoints>,
    overrides: Overrides<'_>,
) -> Result<Url, CloudError> {
    let url = match endpoints.and_then(|e| e.swr.as_ref()) {
        Some(u) => parse_endpoint(u)?,
        None => parse_endpoint(&format!("https://swr-api.{region}.myhuaweicloud.com"))?,
    };
    match overrides {
        Overrides::Namespaced(policy) if !policy.allows(&url) => Err(CloudError::EndpointNotAllowed {
            endpoint: describe_url(&url),
        }),
        _ => Ok(url),
    }
}

/// Parses and checks one endpoint URL. Messages name at most the scheme and host of `raw`,
/// never its userinfo, path or query.
pub fn parse_endpoint(raw: &str) -> Result<Url, CloudError> {
    let url = Url::parse(raw)
        .map_err(|e| CloudError::Config(format!("endpoint {} is not a URL: {e}", describe_raw(raw))))?;
    let shown = describe_url(&url);
    if !url.username().is_empty() || url.password().is_some() {
        return Err(CloudError::Config(format!(
            "endpoint {shown} must not carry credentials"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(CloudError::Config(format!(
            "endpoint {shown} must not have a query or fragment"
        )));
    }
    if url.host().is_none() {
        return Err(CloudError::Config(format!("endpoint {shown} has no host")));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(CloudError::Config(format!(
            "endpoint {shown} uses http; only https is allowed (http only for loopback hosts)"
        ))),
        other => Err(CloudError::Config(format!(
            "endpoint {shown} has unsupported scheme {other:?}"
        ))),
    }
}

/// `scheme://host` of a URL, for messages.
pub fn describe_url(url: &Url) -> String {
    format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default())
}

/// A raw endpoint string that did not parse, for messages: quoted when it cannot carry userinfo
/// (no `@`) and is short, else a placeholder.
fn describe_raw(raw: &str) -> String {
    const MAX: usize = 100;
    if raw.contains('@') || raw.chars().count() > MAX {
        "(not shown)".to_owned()
    } else {
        format!("{raw:?}")
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
    use proptest::prelude::*;

    use super::*;

    fn policy(entries: &[&str]) -> EndpointPolicy {
        EndpointPolicy::new(entries).expect("valid entries")
    }

    fn allows(p: &EndpointPolicy, url: &str) -> bool {
        p.allows(&Url::parse(url).unwrap())
    }

    #[test]
    fn defaults_come_from_the_region() {
        let e = resolve("ap-southeast-1", None, Overrides::Admin).unwrap();
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
        let e = resolve("cn-north-4", Some(&over), Overrides::Admin).unwrap();
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

    #[test]
    fn huawei_domains_are_matched_on_a_label_boundary() {
        for ok in [
            "sts.ap-southeast-1.myhuaweicloud.com",
            "myhuaweicloud.com",
            "IAM.MyHuaweiCloud.com",
            "sts.eu-west-101.myhuaweicloud.eu",
            "x.huaweicloud.com",
            "x.huaweicloud.eu.",
        ] {
            assert!(is_huawei_host(ok), "{ok}");
        }
        for bad in [
            "evilmyhuaweicloud.com",
            "myhuaweicloud.com.evil.example",
            "huaweicloud.co",
            "",
        ] {
            assert!(!is_huawei_host(bad), "{bad}");
        }
    }

    #[test]
    fn the_default_policy_allows_huawei_cloud_only() {
        let p = EndpointPolicy::default();
        assert!(allows(&p, "https://sts.cn-north-4.myhuaweicloud.com"));
        assert!(allows(
            &p,
            "https://portal-identitycenter.myhuaweicloud.com:8443/x"
        ));
        assert!(!allows(&p, "https://evilmyhuaweicloud.com"));
        assert!(!allows(&p, "https://collector.example"));
        assert!(!allows(&p, "http://127.0.0.1:8443"));
    }

    #[test]
    fn administrator_entries_are_hosts_host_ports_wildcards_and_ipv6() {
        let p = policy(&[
            "127.0.0.1",
            "LocalHost",
            "gw.example.com:8443",
            "*.corp.example",
            "[::1]:9",
        ]);
        assert!(allows(&p, "http://127.0.0.1:1234"));
        assert!(allows(&p, "http://localhost:80"));
        assert!(allows(&p, "https://gw.example.com:8443/huawei"));
        assert!(!allows(&p, "https://gw.example.com"));
        assert!(allows(&p, "https://sts.corp.example"));
        assert!(allows(&p, "https://a.b.corp.example:444"));
        assert!(!allows(&p, "https://corp.example"));
        assert!(!allows(&p, "https://evilcorp.example"));
        assert!(allows(&p, "http://[::1]:9"));
        assert!(!allows(&p, "http://[::1]:10"));
        assert!(!allows(&p, "http://127.0.0.2"));
        let bracketed = policy(&["[::1]", " ", ""]);
        assert!(allows(&bracketed, "http://[0:0:0:0:0:0:0:1]:1"));
    }

    #[test]
    fn malformed_entries_are_refused_at_startup() {
        for bad in ["*.", "*", "host:port", "[::1", "[::1]x", "a b", "host:99999"] {
            let e = EndpointPolicy::new(&[bad]).unwrap_err();
            assert!(e.to_string().contains(ALLOWED_HOSTS_FLAG), "{e}");
        }
    }

    #[test]
    fn namespaced_overrides_must_be_allowed_and_cluster_overrides_need_not() {
        let over = Endpoints {
            sts: Some("https://collector.example/x".into()),
            ..Default::default()
        };
        let p = policy(&["127.0.0.1"]);
        let e = resolve("cn-north-4", Some(&over), Overrides::Namespaced(&p)).unwrap_err();
        assert!(matches!(e, CloudError::EndpointNotAllowed { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("https://collector.example"), "{text}");
        assert!(!text.contains("/x"), "{text}");
        assert!(text.contains("not allowed by the administrator"), "{text}");
        assert!(text.contains(ALLOWED_HOSTS_FLAG), "{text}");
        assert!(resolve("cn-north-4", Some(&over), Overrides::Admin).is_ok());

        let local = Endpoints {
            sts: Some("http://127.0.0.1:8443".into()),
            ..Default::default()
        };
        let e = resolve("cn-north-4", Some(&local), Overrides::Namespaced(&p)).unwrap();
        assert_eq!(e.sts.as_str(), "http://127.0.0.1:8443/");
        // Huawei's own hosts need no entry
        assert!(
            resolve(
                "cn-north-4",
                None,
                Overrides::Namespaced(&EndpointPolicy::default())
            )
            .is_ok()
        );
    }

    #[test]
    fn a_tenant_region_cannot_steer_the_default_endpoints_elsewhere() {
        let p = EndpointPolicy::default();
        for region in [
            "evil.example:443/",
            "x@evil.example",
            "evil.example#",
            "evil.example?",
        ] {
            assert!(
                resolve(region, None, Overrides::Namespaced(&p)).is_err(),
                "{region}"
            );
        }
    }

    #[test]
    fn endpoint_errors_never_repeat_userinfo() {
        for raw in [
            "https://u:hunter2@x.com",
            "http://admin:hunter2@10.0.0.1/",
            "https://u:hunter2@[bad",
            "ftp://u:hunter2@x.com",
        ] {
            let e = parse_endpoint(raw).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(!e.contains("u:"), "{e}");
        }
        let e = parse_endpoint("https://u:hunter2@x.com/path")
            .unwrap_err()
            .to_string();
        assert!(e.contains("https://x.com"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn endpoint_parsing_never_panics_and_accepts_only_clean_urls(
            scheme in prop_oneof![
                Just("https".to_owned()), Just("http".to_owned()), Just("ftp".to_owned()), "[a-z]{1,5}"
            ],
            password in proptest::option::of("pw[a-z0-9]{8}"),
            host in prop_oneof![
                Just("127.0.0.1".to_owned()), Just("localhost".to_owned()), Just("[::1]".to_owned()),
                "[a-z0-9.-]{1,20}", "\\PC{0,12}"
            ],
            port in proptest::option::of(any::<u16>()),
            rest in "[/?#a-z%.:@\\[]{0,12}",
            raw in "\\PC{0,40}",
        ) {
            let userinfo = password.as_ref().map(|p| format!("user:{p}@")).unwrap_or_default();
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            for candidate in [format!("{scheme}://{userinfo}{host}{port}{rest}"), raw] {
                match parse_endpoint(&candidate) {
                    Ok(url) => {
                        prop_assert!(url.username().is_empty() && url.password().is_none());
                        prop_assert!(url.query().is_none() && url.fragment().is_none());
                        prop_assert!(
                            url.scheme() == "https" || (url.scheme() == "http" && is_loopback(&url))
                        );
                    }
                    Err(e) => {
                        if let Some(p) = &password {
                            prop_assert!(!e.to_string().contains(p.as_str()), "{}", e);
                        }
                    }
                }
            }
        }

        #[test]
        fn the_policy_never_panics_and_refuses_hosts_it_does_not_list(
            entries in proptest::collection::vec("\\PC{0,16}|[a-z.*:\\[\\]0-9]{1,16}", 0..4),
            label in "[a-z]{1,10}",
        ) {
            if let Ok(p) = EndpointPolicy::new(&entries) {
                let stranger = format!("https://{label}.not-listed.invalid");
                let listed = entries.iter().any(|e| e.contains("not-listed.invalid") || e.contains("invalid"));
                if !listed {
                    prop_assert!(!allows(&p, &stranger));
                    let over = Endpoints { sts: Some(stranger.clone()), ..Default::default() };
                    let refused = matches!(
                        resolve("cn-north-4", Some(&over), Overrides::Namespaced(&p)),
                        Err(CloudError::EndpointNotAllowed { .. })
                    );
                    prop_assert!(refused);
                }
            }
        }
    }
}
