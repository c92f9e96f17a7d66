//! `txpipe serve`.

use anyhow::Context;
use txpipe_core::lake::Lake;
use txpipe_core::pg::{serve_pg, PgCredentials, PgOptions};
use txpipe_core::serve::{ServeOptions, Token};

/// Environment variable read for the token when `--token` is not given.
const TOKEN_ENV: &str = "TXPIPE_SERVE_TOKEN";

/// Shown after the options in `txpipe serve --help`.
const AFTER_HELP: &str = "\
Endpoints:
  GET /                 the dashboard (refreshes every 10 s)
  GET /api/{daily, fraud_by_rule, categories, countries, ingest, runs/latest, quality}
  GET /api/top_merchants?by=revenue|fraud_rate&limit=1..100
  GET /api/risky_customers?limit=1..100
  GET /metrics          Prometheus text
  GET /healthz          200 \"ok\", never authenticated
  An unknown, repeated or invalid query parameter gets 400 with a JSON message.

Security:
  Listens on 127.0.0.1 by default; a non-loopback --addr (0.0.0.0, [::], a LAN
  address or name) is refused unless --token or --insecure-public is given.
  With a token (--token, or TXPIPE_SERVE_TOKEN, which keeps it out of `ps`),
  every route but /healthz needs `Authorization: Bearer TOKEN`; in a browser,
  open /?token=TOKEN once: it sets an HttpOnly, SameSite=Strict session cookie
  and redirects to /. Without a token only loopback Host names are answered
  (DNS-rebinding guard). More than 32 KiB of headers gets 431, a body over
  64 KiB gets 413. No TLS: put a TLS-terminating proxy in front of a public
  server.

Postgres protocol (--pg-addr, e.g. 127.0.0.1:5433):
  psql -h 127.0.0.1 -p 5433 -d txpipe -c '\\dt'
  Database txpipe, schema public: fact_transaction, quarantine, dim_customer,
  dim_merchant, fx_rate and every mart by its model name, read-only (writes and
  DDL get SQLSTATE 25006). Each statement reads the newest committed version of
  every table it names. Loopback needs no password; any other address needs
  --pg-user and a password (--pg-password-file, or TXPIPE_PG_PASSWORD), checked
  with SCRAM-SHA-256. --pg-tls-cert/--pg-tls-key add TLS (sslmode=require).
  Each statement gets --pg-statement-timeout (57014 when it runs out, result
  streaming included) and --pg-memory-limit; a cancel request stops it.
  A customer's newest transactions (SELECT … FROM fact_transaction WHERE
  customer_id = $1 ORDER BY transaction_ts DESC LIMIT n, n <= 256) are read
  through a customer index, from --pg-lookup-cache when the files are there.";

/// Serve the dashboard, JSON panels and Prometheus metrics of a lake.
///
/// `--help` lists the endpoints and the security model ([`AFTER_HELP`]); the
/// policy itself lives in `txpipe_core::serve`.
#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Lake location: a local folder, file:///path, or an object store URL.
    #[arg(long)]
    lake: String,
    /// Address to listen on; a non-loopback one needs --token or --insecure-public.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Kafka brokers, to show the consumer lag of --topic against the lake.
    #[arg(long, requires = "topic")]
    brokers: Option<String>,
    /// Kafka topic being ingested into the lake.
    #[arg(long, requires = "brokers")]
    topic: Option<String>,
    /// Require `Authorization: Bearer TOKEN` on every route except /healthz
    /// (16-512 visible ASCII characters, e.g. `openssl rand -hex 32`). Default:
    /// the TXPIPE_SERVE_TOKEN environment variable, which is preferable since
    /// command lines are visible to other local users.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Allow a non-loopback --addr without a token: anyone who can reach the
    /// port can read the lake's marts and metrics.
    #[arg(long)]
    insecure_public: bool,
    /// Also serve the lake over the Postgres wire protocol on this address
    /// (psql, Metabase, Grafana, Superset, DBeaver); see below.
    #[arg(long, value_name = "ADDR")]
    pg_addr: Option<String>,
    /// User name Postgres clients log in with when a password is set.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "txpipe",
        requires = "pg_addr"
    )]
    pg_user: String,
    /// File whose first line is the Postgres password (SCRAM-SHA-256). Default:
    /// the TXPIPE_PG_PASSWORD environment variable; neither = no password, which
    /// only a loopback --pg-addr allows.
    #[arg(long, value_name = "PATH", requires = "pg_addr")]
    pg_password_file: Option<std::path::PathBuf>,
    /// PEM certificate chain for TLS on the Postgres endpoint.
    #[arg(long, value_name = "PATH", requires_all = ["pg_addr", "pg_tls_key"])]
    pg_tls_cert: Option<std::path::PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --pg-tls-cert.
    #[arg(long, value_name = "PATH", requires = "pg_tls_cert")]
    pg_tls_key: Option<std::path::PathBuf>,
    /// Postgres connections served at once; one more is refused with 53300.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pg_max_connections: u32,
    /// Longest a Postgres statement may run, streaming its result included.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    pg_statement_timeout: f64,
    /// Memory one Postgres statement may hold, in MiB (0 = no limit).
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    pg_memory_limit: u64,
    /// Decoded fact-table blocks (4096 rows of one column of one file) kept
    /// in memory for point lookups (a customer's newest transactions), in
    /// MiB; filled only by lookups, least recently used out first (0 = none:
    /// each lookup decodes the pages around its rows). Size it to hold the
    /// newest days that lookups read: ~1 GiB for the newest 4 of 30 days at
    /// 10 M rows.
    #[arg(long, value_name = "MIB", default_value_t = 1024, requires = "pg_addr")]
    pg_lookup_cache: u64,
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("lake", &self.lake)
            .field("addr", &self.addr)
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("insecure_public", &self.insecure_public)
            .field("pg_addr", &self.pg_addr)
            .field("pg_user", &self.pg_user)
            .finish_non_exhaustive()
    }
}

/// The token from --token, else from TXPIPE_SERVE_TOKEN (empty = unset).
fn token(flag: Option<String>) -> anyhow::Result<Option<Token>> {
    let (value, from) = match flag {
        Some(t) => (t, "--token"),
        None => match std::env::var(TOKEN_ENV) {
            Ok(t) if !t.is_empty() => (t, TOKEN_ENV),
            Ok(_) | Err(std::env::VarError::NotPresent) => return Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                anyhow::bail!("{TOKEN_ENV} is not valid UTF-8")
            }
        },
    };
    Token::new(value)
        .map(Some)
        .with_context(|| format!("checking {from}"))
}

/// The Postgres endpoint's options from the flags.
fn pg_options(a: &Args, addr: &str) -> anyhow::Result<PgOptions> {
    let mut opts = PgOptions::new(addr);
    opts.credentials = PgCredentials::load(&a.pg_user, a.pg_password_file.as_deref())
        .context("reading the Postgres password")?;
    opts.tls = a.pg_tls_cert.clone().zip(a.pg_tls_key.clone());
    opts.max_connections = a.pg_max_connections as usize;
    if !(a.pg_statement_timeout.is_finite() && a.pg_statement_timeout > 0.0) {
        anyhow::bail!("--pg-statement-timeout must be a positive number of seconds");
    }
    opts.limits.timeout = std::time::Duration::from_secs_f64(a.pg_statement_timeout);
    opts.limits.memory = (a.pg_memory_limit > 0).then(|| (a.pg_memory_limit as usize) << 20);
    opts.lookup_cache = usize::try_from(a.pg_lookup_cache)
        .ok()
        .and_then(|m| m.checked_mul(1 << 20))
        .context("--pg-lookup-cache is too large")?;
    Ok(opts)
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let token = token(a.token.clone())?;
    let lake = Lake::open(&a.lake).with_context(|| format!("opening lake {}", a.lake))?;
    let with_token = token.is_some();
    let mut opts = ServeOptions::new(a.addr.clone());
    opts.kafka = a.brokers.clone().zip(a.topic.clone());
    opts.token = token;
    opts.insecure_public = a.insecure_public;
    let serving = txpipe_core::serve::serve_with(lake, opts)
        .await
        .context("starting the dashboard server")?;
    let addr = serving.server.addr;
    if serving.public_unauthenticated {
        eprintln!(
            "txpipe: WARNING: --insecure-public: serving {addr} without authentication; anyone \
             who can reach this port can read the lake's marts and metrics (use --token)"
        );
    }
    // One write: a reader may stop reading after the first line.
    let auth = if with_token {
        format!(
            "\nbearer token required on every route but /healthz; in a browser open \
             http://{addr}/?token=<token> once"
        )
    } else {
        String::new()
    };
    let pg = match &a.pg_addr {
        Some(pg_addr) => {
            let opts = pg_options(&a, pg_addr)?;
            let pg_lake =
                Lake::open(&a.lake).with_context(|| format!("opening lake {}", a.lake))?;
            Some(
                serve_pg(pg_lake, opts)
                    .await
                    .with_context(|| format!("starting the Postgres endpoint on {pg_addr}"))?,
            )
        }
        None => None,
    };
    let pg_line = match &pg {
        Some(s) => format!(
            "\npostgres on {} (database txpipe{}{}): psql -h {} -p {} -d txpipe",
            s.addr,
            if s.authenticated {
                ", password required"
            } else {
                ", no password"
            },
            if s.tls { ", TLS offered" } else { "" },
            s.addr.ip(),
            s.addr.port()
        ),
        None => String::new(),
    };
    println!("dashboard on http://{addr}/ (metrics at /metrics); Ctrl-C to stop{auth}{pg_line}");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    serving.server.task.abort();
    if let Some(s) = pg {
        s.stop();
    }
    Ok(())
}
