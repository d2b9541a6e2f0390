//! What a managed Secret can hold (contract: docs/api.md, "The Secret"): the Huawei SDK keys tcred
//! always writes, the consumer formats a TemporaryCredential may add (`spec.secret.formats`), and
//! the schema rules that keep `spec.secret.formats` and `spec.secret.keys` to names the API server
//! accepts and that never collide with a key tcred writes.

/// What a key holds. The controller renders each from the issued credential and the spec
/// (`controller::credentials::formats`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    AccessKey,
    SecretKey,
    SecurityToken,
    ExpiresAt,
    /// The account (domain) id: from the agency URN or the permission set's account.
    DomainId,
    /// `spec.secret.projectId`; the key is written only when it is set.
    ProjectId,
    /// `spec.secret.region`; the key is written only when it is set.
    Region,
    /// The Huawei SDK INI credentials file.
    HuaweiIni,
    /// The AWS shared-credentials file (`[default]`).
    AwsSharedFile,
    /// `fs.obs.*` as a Java properties file.
    HadoopProperties,
    /// `fs.obs.*` as a Hadoop `<configuration>` XML file.
    HadoopXml,
}

/// One Secret data key and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    pub value: Value,
}

const fn key(name: &'static str, value: Value) -> Key {
    Key { name, value }
}

/// A named key set that `spec.secret.formats` selects.
#[derive(Clone, Copy, Debug)]
pub struct Format {
    pub name: &'static str,
    pub keys: &'static [Key],
}

/// Always written. tcred reads the first five back (the access key id, the expiry, and the data
/// hash over them): they are the credential; every other key is derived from them and the spec.
pub const HUAWEICLOUD_SDK: &[Key] = &[
    key("HUAWEICLOUD_SDK_AK", Value::AccessKey),
    key("HUAWEICLOUD_SDK_SK", Value::SecretKey),
    key("HUAWEICLOUD_SDK_SECURITY_TOKEN", Value::SecurityToken),
    key("HUAWEICLOUD_SDK_EXPIRES_AT", Value::ExpiresAt),
    key("credentials", Value::HuaweiIni),
    key("HUAWEICLOUD_SDK_DOMAIN_ID", Value::DomainId),
    key("HUAWEICLOUD_SDK_PROJECT_ID", Value::ProjectId),
];

/// The formats `spec.secret.formats` may name.
pub const FORMATS: &[Format] = &[
    Format {
        // OBS SDKs (esdk-obs-*) and obsutil.
        name: "obs",
        keys: &[
            key("OBS_ACCESS_KEY_ID", Value::AccessKey),
            key("OBS_SECRET_ACCESS_KEY", Value::SecretKey),
            key("OBS_SECURITY_TOKEN", Value::SecurityToken),
        ],
    },
    Format {
        // The huaweicloud Terraform and Pulumi provider.
        name: "terraform",
        keys: &[
            key("HW_ACCESS_KEY", Value::AccessKey),
            key("HW_SECRET_KEY", Value::SecretKey),
            key("HW_SECURITY_TOKEN", Value::SecurityToken),
            key("HW_DOMAIN_ID", Value::DomainId),
            key("HW_PROJECT_ID", Value::ProjectId),
            key("HW_REGION_NAME", Value::Region),
        ],
    },
    Format {
        // S3-compatible clients pointed at OBS (boto3, Velero, Thanos, Loki).
        name: "aws",
        keys: &[
            key("AWS_ACCESS_KEY_ID", Value::AccessKey),
            key("AWS_SECRET_ACCESS_KEY", Value::SecretKey),
            key("AWS_SESSION_TOKEN", Value::SecurityToken),
            key("aws-credentials", Value::AwsSharedFile),
        ],
    },
    Format {
        // The Hadoop OBS connector (OBSA), Spark, Flink.
        name: "hadoop",
        keys: &[
            key("hadoop-obs.properties", Value::HadoopProperties),
            key("hadoop-obs-site.xml", Value::HadoopXml),
        ],
    },
];

pub const MAX_FORMATS: usize = 8;
pub const MAX_KEY_ALIASES: usize = 16;

/// Every key tcred can write, whatever the spec.
pub fn all_key_names() -> impl Iterator<Item = &'static str> {
    HUAWEICLOUD_SDK
        .iter()
        .chain(FORMATS.iter().flat_map(|f| f.keys.iter()))
        .map(|k| k.name)
}

/// A CEL list literal of every key tcred can write.
fn cel_key_list() -> String {
    let quoted: Vec<String> = all_key_names().map(|k| format!("'{k}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Secret data keys as the API server accepts them (`IsConfigMapKey`).
const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";

pub fn formats_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = FORMATS.iter().map(|f| f.name).collect();
    schemars::json_schema!({
        "type": "array",
        "maxItems": MAX_FORMATS,
        "x-kubernetes-list-type": "set",
        "items": {"type": "string", "enum": names},
    })
}

pub fn key_aliases_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let all = cel_key_list();
    schemars::json_schema!({
        "type": "object",
        "maxProperties": MAX_KEY_ALIASES,
        "additionalProperties": {
            "type": "string",
            "minLength": 1,
            "maxLength": 253,
            "pattern": SECRET_KEY_PATTERN,
        },
        "x-kubernetes-validations": [
            {
                "rule": format!("self.all(k, k in {all})"),
                "message": "keys: each key must be a key tcred writes (docs/api.md, \"The Secret\")",
            },
            {
                "rule": format!("self.all(k, !(self[k] in {all}))"),
                "message": "keys: a new name must not be a key tcred writes",
            },
            {
                "rule": "self.all(k, self[k] != '.' && self[k] != '..' && !self[k].startsWith('..'))",
                "message": "keys: a new name must not be '.', '..' or start with '..'",
            },
            {
                "rule": "self.all(a, self.all(b, a == b || self[a] != self[b]))",
                "message": "keys: two keys must not get the same new name",
            },
        ],
    })
}

/// CEL on `spec.secret`: a key given a new name must be one tcred writes for this spec (its
/// format selected, its value set), so a rename never silently writes nothing.
pub fn alias_source_rule() -> String {
    let condition = |v: Value| match v {
        Value::ProjectId => " && has(self.projectId)",
        Value::Region => " && has(self.region)",
        _ => "",
    };
    let mut clauses: Vec<String> = HUAWEICLOUD_SDK
        .iter()
        .map(|k| format!("(k == '{}'{})", k.name, condition(k.value)))
        .collect();
    for f in FORMATS {
        for k in f.keys {
            clauses.push(format!(
                "(k == '{}' && has(self.formats) && '{}' in self.formats{})",
                k.name,
                f.name,
                condition(k.value)
            ));
        }
    }
    format!("!has(self.keys) || self.keys.all(k, {})", clauses.join(" || "))
}

pub const ALIAS_SOURCE_MESSAGE: &str = "keys: each key given a new name must be written for this credential: \
     its format listed in formats, projectId or region set for the keys that carry them";

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn no_two_formats_write_the_same_key_and_every_name_is_a_valid_secret_key() {
        let names: Vec<&str> = all_key_names().collect();
        let unique: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(names.len(), unique.len(), "{names:?}");
        let pattern = regex_lite_match;
        for n in names {
            assert!(pattern(n), "{n}");
        }
    }

    fn regex_lite_match(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    }

    #[test]
    fn the_alias_rule_names_every_conditional_key_with_its_condition() {
        let rule = alias_source_rule();
        assert!(rule.contains("(k == 'HUAWEICLOUD_SDK_PROJECT_ID' && has(self.projectId))"));
        assert!(rule.contains(
            "(k == 'HW_REGION_NAME' && has(self.formats) && 'terraform' in self.formats && has(self.region))"
        ));
        assert!(rule.contains("(k == 'HUAWEICLOUD_SDK_AK')"));
    }
}
