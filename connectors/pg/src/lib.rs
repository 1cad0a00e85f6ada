//! What sluice's PostgreSQL connectors share, so they connect, encrypt and classify errors
//! the same way:
//!
//! * `connection.url` parsing (`postgres://`, `postgresql://`, `jdbc:postgresql://`, libpq
//!   `key=value`), with `connection.user` / `connection.password` overrides;
//! * TLS as libpq's `sslmode` / `sslrootcert` define it (rustls, ring provider);
//! * the deadpool connection pool;
//! * SQLSTATE classification into `ConnectError` kinds, and readable server errors;
//! * identifier quoting and URL redaction.

mod error;
mod tls;
mod url;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use sluice_api::{ConfigIssue, ConnectError};
use tokio_postgres::NoTls;

pub use error::{
    classify, describe_db, is_data_code, is_data_error, is_retriable_code, pool_error, quote_ident,
};
pub use tls::{RootCert, SslMode};
pub use url::{ParsedUrl, parse_connection_url, redact};

/// The connection keys of a connector config, as given.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectOptions<'a> {
    /// `connection.url`.
    pub url: &'a str,
    /// `connection.user`: replaces a user in the URL.
    pub user: Option<&'a str>,
    /// `connection.password`: replaces a password in the URL.
    pub password: Option<&'a str>,
    /// `connection.sslmode`: replaces an `sslmode` in the URL.
    pub sslmode: Option<SslMode>,
    /// `connection.sslrootcert`: replaces an `sslrootcert` in the URL.
    pub sslrootcert: Option<&'a str>,
    /// Reported to the server (`pg_stat_activity`) unless the URL names one.
    pub application_name: Option<&'a str>,
}

/// A resolved connection: the driver config and how TLS is done.
#[derive(Clone)]
pub struct Connection {
    pub config: tokio_postgres::Config,
    /// The effective mode: `require` with a root certificate is `verify-ca`, as in libpq.
    pub sslmode: SslMode,
    pub sslrootcert: Option<RootCert>,
}

/// The driver's Debug already leaves the password out.
impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("config", &self.config)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .finish()
    }
}

/// How long a connection attempt may take when the URL does not say.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl ConnectOptions<'_> {
    /// Parses and combines the keys; every problem names the key it is about.
    pub fn resolve(&self) -> Result<Connection, Vec<ConfigIssue>> {
        let parsed = parse_connection_url(self.url)
            .map_err(|m| vec![ConfigIssue::error("connection.url", m)])?;
        let mut config = parsed.config;
        if let Some(user) = self.user.filter(|u| !u.is_empty()) {
            config.user(user);
        }
        if let Some(password) = self.password {
            config.password(password);
        }
        if config.get_dbname().is_none() {
            // As libpq: the database defaults to the user's name.
            if let Some(user) = config.get_user().map(str::to_string) {
                config.dbname(&user);
            }
        }
        if config.get_application_name().is_none()
            && let Some(name) = self.application_name
        {
            config.application_name(name);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        let sslrootcert = match self.sslrootcert.map(str::trim).filter(|p| !p.is_empty()) {
            Some(path) => Some(RootCert {
                path: path.to_string(),
                key: "connection.sslrootcert",
            }),
            None => parsed.sslrootcert.map(|path| RootCert {
                path,
                key: "connection.url",
            }),
        };
        let mut sslmode = self.sslmode.or(parsed.sslmode).unwrap_or_default();
        if sslmode == SslMode::Require && sslrootcert.is_some() {
            sslmode = SslMode::VerifyCa;
        }
        config.ssl_mode(sslmode.driver_mode());
        Ok(Connection {
            config,
            sslmode,
            sslrootcert,
        })
    }
}

impl Connection {
    /// A pool of up to `max_size` connections. Nothing is connected yet; TLS settings
    /// (the root certificates) are loaded now, so a bad `sslrootcert` fails here.
    pub fn pool(&self, max_size: usize) -> Result<Pool, ConnectError> {
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let config = self.config.clone();
        let manager = match tls::client_config(self.sslmode, self.sslrootcert.as_ref())? {
            None => Manager::from_config(config, NoTls, manager_config),
            Some(tls) => Manager::from_config(
                config,
                tokio_postgres_rustls::MakeRustlsConnect::new(tls),
                manager_config,
            ),
        };
        Pool::builder(manager)
            .max_size(max_size.max(1))
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(30)))
            .recycle_timeout(Some(Duration::from_secs(10)))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| ConnectError::fatal(format!("PostgreSQL connection pool: {e}")))
    }
}

/// Runs DDL that is meant to be idempotent (`CREATE … IF NOT EXISTS`, `ALTER TABLE … ADD
/// COLUMN IF NOT EXISTS`) so that tasks doing the same at the same moment all succeed.
/// `IF NOT EXISTS` is not atomic in PostgreSQL: two sessions can both find the table
/// missing, and the second then fails on a catalog unique index (23505 on
/// `pg_type_typname_nsp_index`). The statements therefore run in a transaction holding a
/// transaction-scoped advisory lock named after `object`. Call it outside a transaction.
pub async fn run_ddl(
    client: &tokio_postgres::Client,
    object: &str,
    sql: &str,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("BEGIN").await?;
    let result = async {
        let key = format!("sluice ddl {object}");
        client
            .execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&key])
            .await?;
        client.batch_execute(sql).await?;
        client.batch_execute("COMMIT").await
    }
    .await;
    if result.is_err() {
        // The connection may be gone, in which case there is nothing to roll back.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_api::ErrorKind;

    fn resolve(options: ConnectOptions<'_>) -> Connection {
        options.resolve().unwrap()
    }

    #[test]
    fn keys_override_the_url() {
        let c = resolve(ConnectOptions {
            url: "jdbc:postgresql://db:5433/app?user=x&password=y&sslmode=require",
            user: Some("u"),
            password: Some("secret"),
            sslmode: Some(SslMode::VerifyFull),
            sslrootcert: Some("/ca.pem"),
            application_name: Some("sluice-test"),
        });
        assert_eq!(c.config.get_user(), Some("u"));
        assert_eq!(c.config.get_password(), Some(&b"secret"[..]));
        assert_eq!(c.config.get_dbname(), Some("app"));
        assert_eq!(c.config.get_ports(), &[5433]);
        assert_eq!(c.config.get_application_name(), Some("sluice-test"));
        assert_eq!(
            c.config.get_connect_timeout(),
            Some(&DEFAULT_CONNECT_TIMEOUT)
        );
        assert_eq!(c.sslmode, SslMode::VerifyFull);
        assert_eq!(
            c.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(
            c.sslrootcert,
            Some(RootCert {
                path: "/ca.pem".into(),
                key: "connection.sslrootcert"
            })
        );
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn the_url_decides_when_the_keys_are_unset() {
        let c = resolve(ConnectOptions {
            url: "postgres://me@db?sslmode=verify-ca&sslrootcert=/ca.pem&application_name=a&connect_timeout=3",
            application_name: Some("ignored"),
            ..ConnectOptions::default()
        });
        assert_eq!(c.config.get_dbname(), Some("me"));
        assert_eq!(c.config.get_application_name(), Some("a"));
        assert_eq!(
            c.config.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        assert_eq!(c.sslmode, SslMode::VerifyCa);
        assert_eq!(
            c.sslrootcert.as_ref().map(|r| r.key),
            Some("connection.url")
        );

        let c = resolve(ConnectOptions {
            url: "postgres://me@db",
            ..ConnectOptions::default()
        });
        assert_eq!(c.sslmode, SslMode::Prefer);
        assert_eq!(
            c.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Prefer
        );
        assert_eq!(c.sslrootcert, None);

        // As libpq: `require` with a root certificate checks the chain.
        let c = resolve(ConnectOptions {
            url: "postgres://me@db?sslmode=require",
            sslrootcert: Some("/ca.pem"),
            ..ConnectOptions::default()
        });
        assert_eq!(c.sslmode, SslMode::VerifyCa);

        let c = resolve(ConnectOptions {
            url: "postgres://me@db?sslmode=require",
            sslmode: Some(SslMode::Disable),
            sslrootcert: Some(" "),
            ..ConnectOptions::default()
        });
        assert_eq!(c.sslmode, SslMode::Disable);
        assert_eq!(
            c.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        assert_eq!(c.sslrootcert, None);
    }

    #[test]
    fn problems_name_the_key_and_never_the_password() {
        for url in [
            "mysql://u:hunter2@h/db",
            "postgres://u:hunter2@h/db?sslmode=sometimes",
            "postgres://u:hunter2@h:99999/db",
        ] {
            let issues = ConnectOptions {
                url,
                ..ConnectOptions::default()
            }
            .resolve()
            .unwrap_err();
            assert_eq!(issues.len(), 1);
            assert_eq!(issues[0].key.as_deref(), Some("connection.url"), "{url}");
            assert!(!issues[0].to_string().contains("hunter2"), "{}", issues[0]);
        }
    }

    #[test]
    fn a_bad_root_certificate_fails_the_pool_with_its_key() {
        let c = resolve(ConnectOptions {
            url: "postgres://me@db/app?sslmode=verify-full&sslrootcert=/nonexistent.pem",
            ..ConnectOptions::default()
        });
        let err = c.pool(1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().starts_with("connection.url:"), "{err}");
        let c = resolve(ConnectOptions {
            url: "postgres://me@db/app",
            sslmode: Some(SslMode::Disable),
            ..ConnectOptions::default()
        });
        assert!(c.pool(2).is_ok());
    }

    fn database_url() -> String {
        std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
    }

    #[tokio::test]
    async fn unreachable_servers_are_retriable() {
        let pool = resolve(ConnectOptions {
            url: "postgres://u:hunter2@127.0.0.1:1/db",
            ..ConnectOptions::default()
        })
        .pool(1)
        .unwrap();
        let err = pool_error(pool.get().await.err().unwrap());
        assert!(err.is_retriable(), "{err}");
        assert!(!err.message().contains("hunter2"), "{err}");
    }

    /// The test server's certificate (if it has TLS at all) is not signed by a system
    /// root, so `verify-full` fails, and fails for good: retrying would not help.
    #[tokio::test]
    async fn a_certificate_that_does_not_verify_is_fatal() {
        let url = database_url();
        let pool = resolve(ConnectOptions {
            url: &url,
            sslmode: Some(SslMode::VerifyFull),
            ..ConnectOptions::default()
        })
        .pool(1)
        .unwrap();
        let err = pool_error(pool.get().await.err().unwrap());
        assert_eq!(err.kind(), ErrorKind::Fatal, "{err}");
        assert!(err.message().contains("TLS"), "{err}");
    }

    #[tokio::test]
    async fn prefer_connects_whether_or_not_the_server_has_tls() {
        let url = database_url();
        let pool = resolve(ConnectOptions {
            url: &url,
            ..ConnectOptions::default()
        })
        .pool(1)
        .unwrap();
        let client = pool.get().await.map_err(pool_error).unwrap();
        let row = client.query_one("SELECT 1", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 1);
    }
}
