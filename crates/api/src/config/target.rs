//! Where the data lives, and how it is described in logs and errors without the URL.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr as _;

use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;

/// Where the data lives. Its `Debug` and `Display` show only what the driver parsed from the
/// URL (host, port, database, user), never the URL text, which may carry a password in its
/// user part or its query string.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// A `postgres://` URL.
    Postgres(String),
    /// A `mysql://` URL (`mariadb://` is rewritten to `mysql://`).
    MySql(String),
    /// A SQLite file path.
    Sqlite(PathBuf),
}

/// A server URL's parts that are safe to log, read from the driver's own parse of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerTarget {
    host: String,
    port: u16,
    database: Option<String>,
    user: String,
}

impl DatabaseTarget {
    /// Classifies a database URL by its scheme and checks that the driver can parse it;
    /// anything without a known scheme is a SQLite path.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let url = url.trim();
        if url.is_empty() {
            anyhow::bail!("the database URL is empty");
        }
        let target = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::Postgres(url.to_owned())
        } else if url.starts_with("mysql://") {
            Self::MySql(url.to_owned())
        } else if let Some(rest) = url.strip_prefix("mariadb://") {
            // sqlx speaks the MySQL protocol to MariaDB under the mysql:// scheme.
            Self::MySql(format!("mysql://{rest}"))
        } else if let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let path = rest.split('?').next().unwrap_or(rest);
            if path.is_empty() || path == ":memory:" {
                anyhow::bail!("sqlite needs a file path (an in-memory database would lose its data)");
            }
            Self::Sqlite(PathBuf::from(path))
        } else if let Some((scheme, _)) = url.split_once("://") {
            anyhow::bail!(
                "unsupported database scheme {scheme:?}: use postgres://, mysql://, mariadb:// or sqlite://"
            );
        } else {
            Self::Sqlite(PathBuf::from(url))
        };
        // Parsed now, so that a malformed URL is a configuration error (exit 2) rather than a
        // connection error later. sqlx's parse errors name the part that is wrong, not the URL.
        target.server()?;
        Ok(target)
    }

    /// The backend's name, as the store reports it.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::MySql(_) => "mysql",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// Host, port, database and user as the driver parses them (`None` for SQLite).
    fn server(&self) -> anyhow::Result<Option<ServerTarget>> {
        let invalid = |e: sqlx::Error| anyhow::anyhow!("invalid {} URL: {e}", self.backend());
        Ok(match self {
            Self::Postgres(url) => {
                let options = PgConnectOptions::from_str(url).map_err(invalid)?;
                Some(ServerTarget {
                    host: options.get_host().to_owned(),
                    port: options.get_port(),
                    database: options.get_database().map(str::to_owned),
                    user: options.get_username().to_owned(),
                })
            }
            Self::MySql(url) => {
                let options = MySqlConnectOptions::from_str(url).map_err(invalid)?;
                Some(ServerTarget {
                    host: options.get_host().to_owned(),
                    port: options.get_port(),
                    database: options.get_database().map(str::to_owned),
                    user: options.get_username().to_owned(),
                })
            }
            Self::Sqlite(_) => None,
        })
    }
}

impl fmt::Display for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let server = match self {
            Self::Sqlite(path) => return write!(f, "sqlite file {}", path.display()),
            Self::Postgres(_) | Self::MySql(_) => self.server(),
        };
        match server {
            Ok(Some(server)) => {
                write!(f, "{} ", self.backend())?;
                match &server.database {
                    Some(database) => write!(f, "database {database:?}")?,
                    None => f.write_str("default database")?,
                }
                write!(f, " on {}:{} as user {:?}", server.host, server.port, server.user)
            }
            // Only a target built by hand around a bad URL gets here; it is still described
            // without its text.
            _ => write!(f, "{} (unparseable URL)", self.backend()),
        }
    }
}

impl fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseTarget({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_classified_by_scheme() {
        assert!(matches!(
            DatabaseTarget::parse("postgres://u@h/db").unwrap(),
            DatabaseTarget::Postgres(_)
        ));
        assert_eq!(
            DatabaseTarget::parse("mariadb://root@h:3306/db").unwrap(),
            DatabaseTarget::MySql("mysql://root@h:3306/db".into())
        );
        assert_eq!(
            DatabaseTarget::parse("sqlite://data/x.db").unwrap(),
            DatabaseTarget::Sqlite("data/x.db".into())
        );
        assert_eq!(
            DatabaseTarget::parse("x.db").unwrap(),
            DatabaseTarget::Sqlite("x.db".into())
        );
        assert!(DatabaseTarget::parse("redis://h").is_err());
        assert!(DatabaseTarget::parse("sqlite::memory:").is_err());
        assert!(DatabaseTarget::parse("postgres://h:notaport/db").is_err());
    }

    #[test]
    fn targets_are_described_from_parsed_options_without_the_password() {
        for (url, expected) in [
            (
                "postgres://app:hunter2@db.example:6543/shop",
                r#"postgres database "shop" on db.example:6543 as user "app""#,
            ),
            (
                "postgres://db.example/shop?user=app&password=hunter2",
                r#"postgres database "shop" on db.example:5432 as user "app""#,
            ),
            (
                "mariadb://app:hunter2@db.example/shop?password=hunter2",
                r#"mysql database "shop" on db.example:3306 as user "app""#,
            ),
        ] {
            let target = DatabaseTarget::parse(url).unwrap();
            assert_eq!(target.to_string(), expected);
            assert!(!format!("{target:?}").contains("hunter2"));
        }
        let error = DatabaseTarget::parse("postgres://app:hunter2@h:99999/shop").unwrap_err();
        assert!(!format!("{error:#}").contains("hunter2"), "{error:#}");
    }
}
