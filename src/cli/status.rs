//! `tcred status`: a table of TemporaryCredentials — ready, target, expiry, renewal, last error.

use jiff::Timestamp;
use kube::{Api, Client, ResourceExt, api::ListParams};

use super::error::Error;
use crate::api::{
    TemporaryCredential,
    condition::{find, types},
};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Namespace to list (default: the kubeconfig's namespace).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// List every namespace.
    #[arg(long, short = 'A', conflicts_with = "namespace")]
    pub all_namespaces: bool,
}

/// "in 39m", "3h ago": a time relative to now.
pub fn relative(t: Timestamp, now: Timestamp) -> String {
    let secs = t.as_second() - now.as_second();
    let mag = secs.unsigned_abs();
    let text = match mag {
        0..60 => format!("{mag}s"),
        60..3600 => format!("{}m", mag / 60),
        3600..86_400 => format!("{}h{}m", mag / 3600, (mag % 3600) / 60),
        _ => format!("{}d{}h", mag / 86_400, (mag % 86_400) / 3600),
    };
    if secs >= 0 {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// One table row per credential.
pub fn rows(items: &[TemporaryCredential], now: Timestamp, with_namespace: bool) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut header = vec![
        "NAME",
        "READY",
        "REASON",
        "TARGET",
        "EXPIRES",
        "RENEWAL",
        "LAST ERROR",
    ];
    if with_namespace {
        header.insert(0, "NAMESPACE");
    }
    out.push(header.into_iter().map(str::to_owned).collect());
    for tc in items {
        let s = tc.status.clone().unwrap_or_default();
        let ready = find(&s.conditions, types::READY);
        let when = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
            t.map(|t| relative(t.0, now)).unwrap_or_else(|| "-".into())
        };
        let last_error = match ready {
            Some(c) if c.status != "True" => c.message.clone(),
            _ => "-".into(),
        };
        let mut row = vec![
            tc.name_any(),
            ready
                .map(|c| c.status.clone())
                .unwrap_or_else(|| "Unknown".into()),
            ready.map(|c| c.reason.clone()).unwrap_or_else(|| "-".into()),
            s.target.clone().unwrap_or_else(|| "-".into()),
            when(s.expires_at.as_ref()),
            when(s.renewal_time.as_ref()),
            last_error,
        ];
        if with_namespace {
            row.insert(0, tc.namespace().unwrap_or_default());
        }
        out.push(row);
    }
    out
}

/// Aligned columns; the last column is not padded.
pub fn render(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map(Vec::len).unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == cols {
                    c.clone()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

pub async fn run(args: StatusArgs) -> Result<(), Error> {
    let client = Client::try_default().await?;
    let api: Api<TemporaryCredential> = if args.all_namespaces {
        Api::all(client.clone())
    } else {
        let ns = args
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        Api::namespaced(client, &ns)
    };
    let mut items = api.list(&ListParams::default()).await?.items;
    items.sort_by_key(|t| (t.namespace(), t.name_any()));
    if items.is_empty() {
        println!("No TemporaryCredentials found.");
        return Ok(());
    }
    print!("{}", render(&rows(&items, Timestamp::now(), args.all_namespaces)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_relative_to_now() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let at = |d: i64| Timestamp::from_second(1_000_000 + d).unwrap();
        assert_eq!(relative(at(42), now), "in 42s");
        assert_eq!(relative(at(39 * 60), now), "in 39m");
        assert_eq!(relative(at(-3 * 3600 - 120), now), "3h2m ago");
        assert_eq!(relative(at(2 * 86_400 + 3600), now), "in 2d1h");
    }

    #[test]
    fn the_table_is_aligned_and_shows_the_last_error_of_unready_credentials() {
        let mut good = crate::controller::fixtures::tc("good");
        let mut bad = crate::controller::fixtures::tc("bad");
        let now = Timestamp::from_second(10_000).unwrap();
        let mut conds = vec![];
        crate::api::condition::set_condition(
            &mut conds,
            crate::api::condition::ConditionUpdate {
                type_: "Ready",
                status: true,
                reason: "Issued",
                message: "ok".into(),
            },
            None,
            now,
        );
        good.status = Some(crate::api::TemporaryCredentialStatus {
            conditions: conds,
            target: Some("iam::acct:agency:ops".into()),
            expires_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::from_second(13_600).unwrap(),
            )),
            ..Default::default()
        });
        let mut conds = vec![];
        crate::api::condition::set_condition(
            &mut conds,
            crate::api::condition::ConditionUpdate {
                type_: "Ready",
                status: false,
                reason: "Denied",
                message: "namespace not allowed".into(),
            },
            None,
            now,
        );
        bad.status = Some(crate::api::TemporaryCredentialStatus {
            conditions: conds,
            ..Default::default()
        });
        let table = render(&rows(&[good, bad], now, true));
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("NAMESPACE   NAME   READY   REASON"),
            "{table}"
        );
        assert!(
            lines[1].contains("good") && lines[1].contains("in 1h0m") && lines[1].ends_with('-'),
            "{table}"
        );
        assert!(
            lines[2].contains("Denied") && lines[2].ends_with("namespace not allowed"),
            "{table}"
        );
    }
}
