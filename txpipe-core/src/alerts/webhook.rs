//! Alerts POSTed to an HTTP endpoint: one JSON array per micro-batch, with
//! retries, backoff, a timeout and an idempotency key.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

use super::message::Alert;
use crate::error::{Error, Result};

/// Retry and timeout settings of a webhook.
#[derive(Debug, Clone)]
pub struct WebhookPolicy {
    /// Attempts per delivery before the ingest fails (its alerts stay
    /// undelivered in the lake's cursor and are re-sent on restart).
    pub attempts: u32,
    /// First wait between attempts; doubled each time up to `max_backoff`.
    pub backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Timeout of one request.
    pub timeout: Duration,
}

impl Default for WebhookPolicy {
    fn default() -> Self {
        Self {
            attempts: 8,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
        }
    }
}

/// An HTTP endpoint receiving alerts.
pub struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
    policy: WebhookPolicy,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Headers may hold credentials: never printed.
        f.debug_struct("Webhook")
            .field("url", &redacted_url(&self.url))
            .finish()
    }
}

/// The URL without its user info and query (they may carry credentials).
pub fn redacted_url(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.query().is_some() {
        u.set_query(Some("redacted"));
    }
    u.to_string()
}

impl Webhook {
    /// A webhook posting to `url` with extra `headers` (`Name: value`, e.g.
    /// `Authorization: Bearer …`; their values are never printed).
    ///
    /// # Errors
    /// The URL or a header is malformed.
    pub fn new(url: &str, headers: &[String], policy: WebhookPolicy) -> Result<Self> {
        let url = reqwest::Url::parse(url)
            .map_err(|e| Error::Config(format!("--alerts-webhook: not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Config(
                "--alerts-webhook: the URL must be http:// or https://".into(),
            ));
        }
        let mut map = HeaderMap::new();
        for h in headers {
            let (name, value) = h.split_once(':').ok_or_else(|| {
                Error::Config("--alerts-webhook-header: expected 'Name: value'".into())
            })?;
            let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                Error::Config(format!(
                    "--alerts-webhook-header: '{}' is not a header name",
                    name.trim()
                ))
            })?;
            let mut value = HeaderValue::from_str(value.trim()).map_err(|_| {
                Error::Config(format!(
                    "--alerts-webhook-header {name}: the value is not a valid header value"
                ))
            })?;
            value.set_sensitive(true);
            map.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(map)
            .timeout(policy.timeout)
            .build()
            .map_err(|e| Error::Config(format!("webhook client: {e}")))?;
        Ok(Self {
            client,
            url,
            policy,
        })
    }

    /// The full URL (credentials included): only hashed into the cursor's
    /// folder name, never shown.
    pub(super) fn target_identity(&self) -> String {
        self.url.to_string()
    }

    /// Where alerts go, without credentials.
    pub fn target(&self) -> String {
        redacted_url(&self.url)
    }

    /// POSTs `alerts` as one JSON array until the endpoint answers 2xx;
    /// every attempt carries the same `Idempotency-Key`. Returns how many
    /// attempts failed before the one that succeeded.
    ///
    /// # Errors
    /// A 4xx answer other than 408/429 (the endpoint refuses the alerts), or
    /// no success within the policy's attempts.
    pub async fn send(&self, alerts: &[Alert], health: &dyn Fn(bool)) -> Result<u32> {
        if alerts.is_empty() {
            return Ok(0);
        }
        let key = idempotency_key(alerts);
        let body =
            serde_json::Value::Array(alerts.iter().map(|a| a.json.clone()).collect()).to_string();
        let mut wait = self.policy.backoff;
        let mut last = String::new();
        for attempt in 0..self.policy.attempts.max(1) {
            if attempt == 1 {
                health(false);
            }
            if attempt > 0 {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(self.policy.max_backoff);
            }
            let sent = self
                .client
                .post(self.url.clone())
                .header("Content-Type", "application/json")
                .header("Idempotency-Key", &key)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    if attempt > 0 {
                        health(true);
                    }
                    return Ok(attempt);
                }
                Ok(r) => {
                    let status = r.status();
                    last = format!("HTTP {status}");
                    if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429
                    {
                        return Err(self.failed(&last));
                    }
                }
                // reqwest's errors name the URL: keep only the cause.
                Err(e) => last = e.without_url().to_string(),
            }
        }
        Err(self.failed(&format!(
            "{last} after {} attempts",
            self.policy.attempts.max(1)
        )))
    }

    fn failed(&self, why: &str) -> Error {
        Error::Alerts {
            target: format!("webhook {}", self.target()),
            reason: why.to_string(),
        }
    }
}

/// The same alerts give the same key (retries and re-deliveries of one batch).
fn idempotency_key(alerts: &[Alert]) -> String {
    let mut h = Sha256::new();
    for a in alerts {
        h.update(a.alert_id.as_bytes());
        h.update(b"\n");
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        let u = reqwest::Url::parse("https://user:secret@example.com/hook?token=abc").unwrap();
        let r = redacted_url(&u);
        assert!(
            !r.contains("secret") && !r.contains("abc") && !r.contains("user"),
            "{r}"
        );
    }

    #[test]
    fn bad_headers_are_refused() {
        let p = WebhookPolicy::default();
        assert!(Webhook::new("http://127.0.0.1:1/", &["no colon".into()], p.clone()).is_err());
        assert!(Webhook::new("ftp://x/", &[], p.clone()).is_err());
        let w = Webhook::new(
            "http://127.0.0.1:1/",
            &["Authorization: Bearer s3cr3t".into()],
            p,
        )
        .unwrap();
        assert!(!format!("{w:?}").contains("s3cr3t"));
    }
}
