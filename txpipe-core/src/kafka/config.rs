//! Kafka client settings from a properties file, the environment and flags —
//! with secrets that never leave the process.
//!
//! Settings are librdkafka properties (`security.protocol`, `sasl.mechanism`,
//! `sasl.username`, `sasl.password`, `ssl.ca.location`, …). They are layered,
//! later layers winning: a properties file (`--kafka-config-file`, the format
//! of Java's `client.properties`), then `TXPIPE_KAFKA_*` environment variables
//! (`TXPIPE_KAFKA_SASL_PASSWORD` is `sasl.password`: lower-cased, `_` becomes
//! `.`, `__` a literal `_`), then `--kafka-config KEY=VALUE` flags.
//!
//! A value whose key names a secret ([`is_secret_key`]) is shown as
//! [`REDACTED`] by [`KafkaConfig::redacted`] and by `Debug`, and
//! [`KafkaConfig::scrub`] removes secret values from any text (librdkafka's
//! errors and log lines) before txpipe prints it.

use std::fmt;
use std::path::Path;

use crate::error::{Error, Result};

/// What a secret value is shown as.
pub const REDACTED: &str = "[redacted]";

/// Prefix of the environment variables that set Kafka properties.
pub const ENV_PREFIX: &str = "TXPIPE_KAFKA_";

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// txpipe's own default for this client.
    Default,
    /// A properties file, with the line number.
    File(String, usize),
    /// An environment variable.
    Env(String),
    /// A `--kafka-config` flag.
    Flag,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("txpipe default"),
            Origin::File(path, line) => write!(f, "{path}:{line}"),
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::Flag => f.write_str("--kafka-config"),
        }
    }
}

/// Whether the value of librdkafka property `key` is a secret (passwords, keys,
/// tokens, OAuth client secrets, inline PEM keys, JAAS-style configs).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k.contains("token")
        || k == "ssl.key.pem"
        || k == "ssl_key"
        || k == "sasl.oauthbearer.config"
        || k == "sasl.jaas.config"
}

/// Layered librdkafka settings; the last setting of a key wins.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaConfig {
    entries: Vec<(String, String, Origin)>,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.redacted().into_iter().map(|(k, v, _)| (k, v)))
            .finish()
    }
}

impl KafkaConfig {
    /// No settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Settings from `KEY=VALUE` pairs given as flags.
    pub fn from_pairs(pairs: &[(String, String)]) -> Self {
        let mut c = Self::new();
        for (k, v) in pairs {
            c.set(k, v, Origin::Flag);
        }
        c
    }

    /// Sets `key` to `value` (overriding earlier settings of `key`).
    pub fn set(&mut self, key: &str, value: &str, origin: Origin) {
        self.entries.retain(|(k, _, _)| k != key);
        self.entries
            .push((key.to_string(), value.to_string(), origin));
    }

    /// Adds every setting of `other`, which wins over these.
    pub fn merge(&mut self, other: &KafkaConfig) {
        for (k, v, o) in &other.entries {
            self.set(k, v, o.clone());
        }
    }

    /// Reads a properties file: `key=value` (or `key: value`) per line, `#` or
    /// `!` comments, blank lines ignored, whitespace around keys and values
    /// trimmed.
    ///
    /// # Errors
    /// The file cannot be read, or a line is not a setting (the error names
    /// the file and line, never the line's value).
    pub fn load_file(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io("reading Kafka config file", path, e))?;
        let shown = path.display().to_string();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let split = line.find(['=', ':']);
            let Some((k, v)) = split.map(|at| (line[..at].trim(), line[at + 1..].trim())) else {
                return Err(Error::Config(format!(
                    "{shown}:{}: not a KEY=VALUE setting",
                    i + 1
                )));
            };
            if k.is_empty() {
                return Err(Error::Config(format!("{shown}:{}: empty key", i + 1)));
            }
            self.set(k, v, Origin::File(shown.clone(), i + 1));
        }
        Ok(())
    }

    /// Reads `TXPIPE_KAFKA_*` variables from `vars` (e.g. `std::env::vars()`).
    pub fn load_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        let mut found: Vec<(String, String, String)> = vars
            .into_iter()
            .filter_map(|(name, value)| {
                let rest = name.strip_prefix(ENV_PREFIX)?;
                (!rest.is_empty()).then(|| (env_key(rest), value, name.clone()))
            })
            .collect();
        found.sort();
        for (k, v, name) in found {
            self.set(&k, &v, Origin::Env(name));
        }
    }

    /// The effective settings, in the order they were first set.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .map(|(k, v, _)| (k.clone(), v.clone()))
            .collect()
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, _)| v.as_str())
    }

    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `(key, value or REDACTED, origin)` for display.
    pub fn redacted(&self) -> Vec<(String, String, Origin)> {
        self.entries
            .iter()
            .map(|(k, v, o)| {
                let shown = if is_secret_key(k) {
                    REDACTED.to_string()
                } else {
                    v.clone()
                };
                (k.clone(), shown, o.clone())
            })
            .collect()
    }

    /// `text` with every secret value replaced by [`REDACTED`] (values shorter
    /// than three characters are left alone: replacing them would garble the
    /// text without hiding anything).
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        let mut secrets: Vec<&str> = self
            .entries
            .iter()
            .filter(|(k, v, _)| is_secret_key(k) && v.len() >= 3)
            .map(|(_, v, _)| v.as_str())
            .collect();
        // Longest first, so a secret that contains another is removed whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for s in secrets {
            out = out.replace(s, REDACTED);
        }
        out
    }
}

/// `SASL_PASSWORD` → `sasl.password`; `__` stands for a literal `_`.
fn env_key(rest: &str) -> String {
    rest.to_ascii_lowercase()
        .split("__")
        .map(|part| part.replace('_', "."))
        .collect::<Vec<_>>()
        .join("_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order_and_secrets_are_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("client.properties");
        std::fs::write(
            &file,
            "# managed cluster\nsecurity.protocol=SASL_SSL\nsasl.mechanism : PLAIN\n\
             sasl.username=alice\nsasl.password=from-file-secret\n\n! old\n",
        )
        .unwrap();
        let mut c = KafkaConfig::new();
        c.load_file(&file).unwrap();
        c.load_env([
            (
                "TXPIPE_KAFKA_SASL_PASSWORD".to_string(),
                "env-secret-1".to_string(),
            ),
            (
                "TXPIPE_KAFKA_SSL_CA_LOCATION".to_string(),
                "/ca.pem".to_string(),
            ),
            ("TXPIPE_KAFKA_SOME__ODD_KEY".to_string(), "x".to_string()),
            ("OTHER".to_string(), "y".to_string()),
        ]);
        c.merge(&KafkaConfig::from_pairs(&[(
            "sasl.username".to_string(),
            "bob".to_string(),
        )]));
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(c.get("sasl.password"), Some("env-secret-1"));
        assert_eq!(c.get("sasl.username"), Some("bob"));
        assert_eq!(c.get("ssl.ca.location"), Some("/ca.pem"));
        assert_eq!(c.get("some_odd.key"), Some("x"));
        let shown = format!("{c:?} {:?}", c.redacted());
        assert!(!shown.contains("env-secret-1"), "{shown}");
        assert!(!shown.contains("from-file-secret"), "{shown}");
        assert!(shown.contains(REDACTED));
        assert_eq!(
            c.scrub("auth failed for bob with env-secret-1!"),
            format!("auth failed for bob with {REDACTED}!")
        );
    }

    #[test]
    fn a_bad_line_names_file_and_line_not_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.properties");
        std::fs::write(&file, "ok=1\nthis-is-a-secret-without-equals\n").unwrap();
        let err = KafkaConfig::new().load_file(&file).unwrap_err().to_string();
        assert!(err.contains("bad.properties:2"), "{err}");
        assert!(!err.contains("this-is-a-secret"), "{err}");
        let missing = KafkaConfig::new()
            .load_file(&dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("nope"), "{missing}");
    }

    #[test]
    fn secret_keys() {
        for k in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
            "sasl.oauthbearer.config",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "sasl.username",
            "security.protocol",
            "ssl.ca.location",
            "bootstrap.servers",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }
}
