//! Who may connect: no password on loopback, SCRAM-SHA-256 otherwise.
//!
//! The password is read from a file or the environment, kept only as the
//! SCRAM salted hash, and never printed: [`PgCredentials`]' `Debug` hides it.
//! A wrong user and a wrong password get the same `28P01`
//! (`invalid_password`) error, so the endpoint does not tell which users
//! exist.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{gen_salted_password, ScramAuth};
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use datafusion_postgres::pgwire::api::{ClientInfo, ConnectionManager};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use futures::Sink;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// SCRAM iterations (PostgreSQL's default, and the RFC's minimum).
const ITERATIONS: usize = 4096;

/// Environment variable the password can come from.
pub const PASSWORD_ENV: &str = "TXPIPE_PG_PASSWORD";

/// A user name and password clients must present.
#[derive(Clone)]
pub struct PgCredentials {
    user: String,
    password: String,
}

impl fmt::Debug for PgCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgCredentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl PgCredentials {
    /// Credentials from values.
    ///
    /// # Errors
    /// An empty user or password.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Result<Self> {
        let (user, password) = (user.into(), password.into());
        if user.trim().is_empty() {
            return Err(Error::Config("the Postgres user name is empty".into()));
        }
        if password.is_empty() {
            return Err(Error::Config("the Postgres password is empty".into()));
        }
        Ok(PgCredentials { user, password })
    }

    /// The password from `file` (its first line), else from
    /// `TXPIPE_PG_PASSWORD`; `None` when neither is given.
    ///
    /// # Errors
    /// The file cannot be read or holds an empty password.
    pub fn load(user: &str, file: Option<&Path>) -> Result<Option<Self>> {
        let password = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
                    context: "reading the Postgres password file",
                    path: path.to_path_buf(),
                    source,
                })?;
                text.lines().next().unwrap_or_default().to_string()
            }
            None => match std::env::var(PASSWORD_ENV) {
                Ok(p) => p,
                Err(_) => return Ok(None),
            },
        };
        Self::new(user, password).map(Some)
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }
}

/// The SCRAM verifier of one user: the salted password, computed once.
#[derive(Debug)]
pub(crate) struct ScramSource {
    user: String,
    salt: Vec<u8>,
    salted: Vec<u8>,
    /// Answer for any other user: a hash no password produces.
    decoy: Vec<u8>,
}

impl ScramSource {
    pub(crate) fn new(creds: &PgCredentials) -> Self {
        let salt = uuid::Uuid::new_v4().as_bytes().to_vec();
        let salted = gen_salted_password(&creds.password, &salt, ITERATIONS);
        let decoy = Sha256::digest(uuid::Uuid::new_v4().as_bytes()).to_vec();
        ScramSource {
            user: creds.user.clone(),
            salt,
            salted,
            decoy,
        }
    }
}

// async_trait's signature for this method elides the lifetime.
#[allow(elided_lifetimes_in_paths)]
#[async_trait]
impl AuthSource for ScramSource {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let known = login.user() == Some(self.user.as_str());
        let hash = if known { &self.salted } else { &self.decoy };
        Ok(Password::new(Some(self.salt.clone()), hash.clone()))
    }
}

/// No authentication (loopback without credentials); registers the
/// connection for cancel requests.
pub(crate) struct OpenStartup {
    pub(crate) manager: Arc<ConnectionManager>,
}

#[async_trait]
impl NoopStartupHandler for OpenStartup {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(Arc::clone(&self.manager))
    }
}

/// The startup handler of one connection.
pub(crate) enum Startup {
    /// Anyone who can reach the port.
    Open(OpenStartup),
    /// SCRAM-SHA-256 against the configured user.
    Scram(SASLAuthStartupHandler<DefaultServerParameterProvider>),
}

impl Startup {
    pub(crate) fn new(source: Option<&Arc<ScramSource>>, manager: &Arc<ConnectionManager>) -> Self {
        match source {
            None => Startup::Open(OpenStartup {
                manager: Arc::clone(manager),
            }),
            Some(source) => {
                let mut scram = ScramAuth::new(Arc::clone(source) as Arc<dyn AuthSource>);
                scram.set_iterations(ITERATIONS);
                let params = Arc::new(DefaultServerParameterProvider::default());
                Startup::Scram(
                    SASLAuthStartupHandler::new(params)
                        .with_scram(scram)
                        .with_connection_manager(Arc::clone(manager)),
                )
            }
        }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Open(h) => h.on_startup(client, message).await,
            Startup::Scram(h) => h.on_startup(client, message).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let c = PgCredentials::new("analyst", "s3cr3t-pw").expect("valid");
        let shown = format!("{c:?}");
        assert!(
            shown.contains("analyst") && !shown.contains("s3cr3t-pw"),
            "{shown}"
        );
        let source = ScramSource::new(&c);
        assert!(!format!("{source:?}").contains("s3cr3t-pw"));
    }

    #[test]
    fn empty_user_or_password_is_refused() {
        assert!(PgCredentials::new("", "x").is_err());
        assert!(PgCredentials::new("u", "").is_err());
    }

    #[test]
    fn password_file_first_line_is_the_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("pw");
        std::fs::write(&f, "line-one\nignored\n").expect("write");
        let c = PgCredentials::load("u", Some(&f))
            .expect("loads")
            .expect("some");
        assert_eq!(c.password, "line-one");
        assert!(PgCredentials::load("u", Some(&dir.path().join("missing"))).is_err());
    }
}
