//! Every data key of a managed Secret, rendered (pure) from the issued credential and the spec:
//! the Huawei SDK keys, the consumer formats the spec selects and the extra names it gives keys
//! (contract: docs/api.md, "The Secret"; key tables: `api::secret_output`).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;

use crate::{
    api::{
        TemporaryCredential,
        secret_output::{FORMATS, HUAWEICLOUD_SDK, Key, Value},
    },
    cloud::IssuedCredential,
    controller::authorize::parse_agency_urn,
    time::rfc3339,
};

/// The account (domain) id the credential belongs to: the permission set's account, or the
/// account in the agency URN.
pub fn domain_id(tc: &TemporaryCredential) -> Option<String> {
    if let Some(ps) = &tc.spec.permission_set {
        return Some(ps.account_id.clone());
    }
    let urn = tc.spec.agency_urn.as_deref()?;
    parse_agency_urn(urn).map(|(account, _)| account)
}

/// The ids written next to the credential.
struct Ids<'a> {
    domain_id: Option<String>,
    project_id: Option<&'a str>,
    region: Option<&'a str>,
}

/// The keys `tc` has tcred write, in order: the Huawei SDK keys, then each selected format's.
/// Format names the schema would refuse are skipped.
fn selected_keys(tc: &TemporaryCredential) -> impl Iterator<Item = &'static Key> + '_ {
    let formats = &tc.spec.secret.formats;
    HUAWEICLOUD_SDK.iter().chain(
        FORMATS
            .iter()
            .filter(|f| formats.iter().any(|n| n == f.name))
            .flat_map(|f| f.keys.iter()),
    )
}

/// Every data key tcred writes for `tc` holding `cred`. A key whose value the spec does not give
/// (no project id, no region) is left out; an extra name (`spec.secret.keys`) is a copy of its
/// key and never replaces a key tcred writes.
pub fn render(tc: &TemporaryCredential, cred: &IssuedCredential) -> BTreeMap<String, ByteString> {
    let ids = Ids {
        domain_id: domain_id(tc),
        project_id: tc.spec.secret.project_id.as_deref(),
        region: tc.spec.secret.region.as_deref(),
    };
    let mut data: BTreeMap<String, ByteString> = selected_keys(tc)
        .filter_map(|k| value(k.value, cred, &ids).map(|v| (k.name.to_owned(), ByteString(v.into_bytes()))))
        .collect();
    for (from, to) in &tc.spec.secret.keys {
        if data.contains_key(to) {
            continue;
        }
        if let Some(v) = data.get(from).cloned() {
            data.insert(to.clone(), v);
        }
    }
    data
}

fn value(v: Value, c: &IssuedCredential, ids: &Ids) -> Option<String> {
    Some(match v {
        Value::AccessKey => c.access_key_id.clone(),
        Value::SecretKey => c.secret_access_key.expose().to_owned(),
        Value::SecurityToken => c.security_token.expose().to_owned(),
        Value::ExpiresAt => rfc3339(c.expires_at),
        Value::DomainId => ids.domain_id.clone()?,
        Value::ProjectId => ids.project_id?.to_owned(),
        Value::Region => ids.region?.to_owned(),
        Value::HuaweiIni => huawei_ini(c, ids),
        Value::AwsSharedFile => aws_shared_file(c),
        Value::HadoopProperties => hadoop_properties(c),
        Value::HadoopXml => hadoop_xml(c),
    })
}

/// The INI file for `HUAWEICLOUD_SDK_CREDENTIALS_FILE`. Huawei's SDKs look for different
/// sections: the explicit profile providers `[basic]`/`[global]`, the Python and Java default
/// chain `[basiccredentials]`/`[globalcredentials]`, the Go default chain
/// `[basic.credentials]`/`[global.credentials]`. All six are written; the basic ones carry the
/// project id (when set), the global ones the domain id, so no client looks them up at IAM.
fn huawei_ini(c: &IssuedCredential, ids: &Ids) -> String {
    let mut out = String::new();
    let sections = [
        ("basic", false),
        ("global", true),
        ("basiccredentials", false),
        ("globalcredentials", true),
        ("basic.credentials", false),
        ("global.credentials", true),
    ];
    for (section, global) in sections {
        out.push_str(&format!(
            "[{section}]\nak = {}\nsk = {}\nsecurity_token = {}\n",
            c.access_key_id,
            c.secret_access_key.expose(),
            c.security_token.expose()
        ));
        let id = match global {
            true => ids.domain_id.as_deref().map(|d| ("domain_id", d)),
            false => ids.project_id.map(|p| ("project_id", p)),
        };
        if let Some((k, v)) = id {
            out.push_str(&format!("{k} = {v}\n"));
        }
        out.push('\n');
    }
    out
}

/// The AWS shared-credentials file (`AWS_SHARED_CREDENTIALS_FILE`), profile `default`.
fn aws_shared_file(c: &IssuedCredential) -> String {
    format!(
        "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\naws_session_token = {}\n",
        c.access_key_id,
        c.secret_access_key.expose(),
        c.security_token.expose()
    )
}

/// The OBS connector's properties (Hadoop OBSA `fs.obs.*`).
fn hadoop_pairs(c: &IssuedCredential) -> [(&'static str, &str); 3] {
    [
        ("fs.obs.access.key", c.access_key_id.as_str()),
        ("fs.obs.secret.key", c.secret_access_key.expose()),
        ("fs.obs.session.token", c.security_token.expose()),
    ]
}

/// A Java properties file: values escaped so no byte of them ends the line or starts an escape.
fn hadoop_properties(c: &IssuedCredential) -> String {
    hadoop_pairs(c)
        .iter()
        .map(|(k, v)| format!("{k}={}\n", properties_escape(v)))
        .collect()
}

fn properties_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, ch) in v.chars().enumerate() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{c}' => out.push_str("\\f"),
            ' ' if i == 0 => out.push_str("\\ "),
            c if !c.is_ascii() || c.is_ascii_control() => {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// A Hadoop configuration file (`core-site.xml` form), values XML-escaped.
fn hadoop_xml(c: &IssuedCredential) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<configuration>\n");
    for (k, v) in hadoop_pairs(c) {
        out.push_str(&format!(
            "  <property>\n    <name>{k}</name>\n    <value>{}</value>\n  </property>\n",
            xml_escape(v)
        ));
    }
    out.push_str("</configuration>\n");
    out
}

/// Escapes text for an XML element. Characters XML 1.0 cannot carry at all are dropped: a
/// credential holding one cannot be written as XML, and a broken file helps no one.
fn xml_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push_str(&format!("&#{};", ch as u32)),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{credential, tc};

    fn text(data: &BTreeMap<String, ByteString>, k: &str) -> String {
        String::from_utf8(data[k].0.clone()).unwrap()
    }

    fn with_formats(formats: &[&str]) -> TemporaryCredential {
        let mut t = tc("billing");
        t.spec.secret.formats = formats.iter().map(|s| s.to_string()).collect();
        t
    }

    #[test]
    fn the_default_writes_the_huawei_sdk_keys_and_the_domain_id_from_the_agency_urn() {
        let data = render(&tc("billing"), &credential("AKID1", 3_600));
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "HUAWEICLOUD_SDK_AK",
                "HUAWEICLOUD_SDK_DOMAIN_ID",
                "HUAWEICLOUD_SDK_EXPIRES_AT",
                "HUAWEICLOUD_SDK_SECURITY_TOKEN",
                "HUAWEICLOUD_SDK_SK",
                "credentials"
            ]
        );
        assert_eq!(
            text(&data, "HUAWEICLOUD_SDK_DOMAIN_ID"),
            "0123456789abcdef0123456789abcdef"
        );
    }

    #[test]
    fn the_ini_file_has_every_section_each_sdk_reads_with_the_ids() {
        let mut t = tc("billing");
        t.spec.secret.project_id = Some("proj1".into());
        let ini = text(&render(&t, &credential("AKID1", 3_600)), "credentials");
        let creds = "ak = AKID1\nsk = SK-for-AKID1\nsecurity_token = token-for-AKID1\n";
        for s in ["basic", "basiccredentials", "basic.credentials"] {
            assert!(
                ini.contains(&format!("[{s}]\n{creds}project_id = proj1\n\n")),
                "{ini}"
            );
        }
        for s in ["global", "globalcredentials", "global.credentials"] {
            assert!(
                ini.contains(&format!(
                    "[{s}]\n{creds}domain_id = 0123456789abcdef0123456789abcdef\n\n"
                )),
                "{ini}"
            );
        }
    }

    /// conformance/consumer-go/ini_test.go reads this file with Huawei's Go SDK.
    #[test]
    fn the_ini_file_is_the_one_the_go_sdk_conformance_test_reads() {
        let mut t = tc("billing");
        t.spec.secret.project_id = Some("proj-golden-1".into());
        let c = IssuedCredential {
            access_key_id: "AKIDTCREDGOLDEN00001".into(),
            secret_access_key: "SKgolden/secret+key=".into(),
            security_token: "token-golden-1".into(),
            ..credential("AKIDTCREDGOLDEN00001", 3_600)
        };
        assert_eq!(
            text(&render(&t, &c), "credentials"),
            include_str!("../../../conformance/consumer-go/testdata/tcred-credentials.ini")
        );
    }

    #[test]
    fn a_permission_set_credential_carries_its_account_as_the_domain_id() {
        let mut t = tc("billing");
        t.spec.agency_urn = None;
        t.spec.permission_set = Some(crate::api::PermissionSetRef {
            account_id: "acct-42".into(),
            name: "Admin".into(),
        });
        let data = render(&t, &credential("AKID1", 3_600));
        assert_eq!(text(&data, "HUAWEICLOUD_SDK_DOMAIN_ID"), "acct-42");
    }

    #[test]
    fn each_format_writes_its_keys_and_region_and_project_only_when_known() {
        let t = with_formats(&["obs", "terraform", "aws", "hadoop"]);
        let data = render(&t, &credential("AKID1", 3_600));
        assert_eq!(text(&data, "OBS_ACCESS_KEY_ID"), "AKID1");
        assert_eq!(text(&data, "OBS_SECRET_ACCESS_KEY"), "SK-for-AKID1");
        assert_eq!(text(&data, "OBS_SECURITY_TOKEN"), "token-for-AKID1");
        assert_eq!(text(&data, "HW_ACCESS_KEY"), "AKID1");
        assert_eq!(text(&data, "HW_SECRET_KEY"), "SK-for-AKID1");
        assert_eq!(text(&data, "HW_SECURITY_TOKEN"), "token-for-AKID1");
        assert_eq!(text(&data, "HW_DOMAIN_ID"), "0123456789abcdef0123456789abcdef");
        assert!(!data.contains_key("HW_REGION_NAME") && !data.contains_key("HW_PROJECT_ID"));
        assert!(!data.contains_key("HUAWEICLOUD_SDK_PROJECT_ID"));
        assert_eq!(text(&data, "AWS_ACCESS_KEY_ID"), "AKID1");
        assert_eq!(text(&data, "AWS_SECRET_ACCESS_KEY"), "SK-for-AKID1");
        assert_eq!(text(&data, "AWS_SESSION_TOKEN"), "token-for-AKID1");
        assert_eq!(
            text(&data, "aws-credentials"),
            "[default]\naws_access_key_id = AKID1\naws_secret_access_key = SK-for-AKID1\naws_session_token = token-for-AKID1\n"
        );
        assert_eq!(
            text(&data, "hadoop-obs.properties"),
            "fs.obs.access.key=AKID1\nfs.obs.secret.key=SK-for-AKID1\nfs.obs.session.token=token-for-AKID1\n"
        );
        assert!(text(&data, "hadoop-obs-site.xml").contains(
            "<property>\n    <name>fs.obs.secret.key</name>\n    <value>SK-for-AKID1</value>\n  </property>"
        ));

        let mut t = t;
        t.spec.secret.region = Some("ap-southeast-1".into());
        t.spec.secret.project_id = Some("proj1".into());
        let data = render(&t, &credential("AKID1", 3_600));
        assert_eq!(text(&data, "HW_REGION_NAME"), "ap-southeast-1");
        assert_eq!(text(&data, "HW_PROJECT_ID"), "proj1");
        assert_eq!(text(&data, "HUAWEICLOUD_SDK_PROJECT_ID"), "proj1");
    }

    #[test]
    fn an_extra_name_copies_a_written_key_and_never_replaces_one() {
        let mut t = with_formats(&["obs"]);
        t.spec.secret.keys = BTreeMap::from([
            ("OBS_ACCESS_KEY_ID".to_owned(), "ak".to_owned()),
            ("HUAWEICLOUD_SDK_SK".to_owned(), "HUAWEICLOUD_SDK_AK".to_owned()),
            ("AWS_ACCESS_KEY_ID".to_owned(), "not-written".to_owned()),
        ]);
        let data = render(&t, &credential("AKID1", 3_600));
        assert_eq!(text(&data, "ak"), "AKID1");
        assert_eq!(text(&data, "OBS_ACCESS_KEY_ID"), "AKID1");
        assert_eq!(text(&data, "HUAWEICLOUD_SDK_AK"), "AKID1", "never overwritten");
        assert!(!data.contains_key("not-written"));
    }

    #[test]
    fn hostile_bytes_cannot_break_out_of_the_xml_or_properties_value() {
        let mut c = credential("AKID1", 3_600);
        c.secret_access_key = "a</value><name>x&\"'\u{0}\nb\\ c".into();
        let xml = hadoop_xml(&c);
        assert!(
            xml.contains("<value>a&lt;/value&gt;&lt;name&gt;x&amp;&quot;&apos;&#10;b\\ c</value>"),
            "{xml}"
        );
        let props = hadoop_properties(&c);
        assert!(
            props.contains("fs.obs.secret.key=a</value><name>x&\"'\\u0000\\nb\\\\ c\n"),
            "{props}"
        );
        assert_eq!(props.lines().count(), 3);
        assert_eq!(properties_escape(" lead é"), "\\ lead \\u00e9");
    }
}
