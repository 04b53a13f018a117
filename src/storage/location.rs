//! Where the database is: a SQLite file (a path, or `sqlite://PATH`) or a PostgreSQL server
//! (`postgres://…` or `postgresql://…`). Shown with the password hidden, as it goes to logs.

use std::fmt;
use std::path::{Path, PathBuf};

/// A database's location, as `--db` or `database` in the config gives it.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL, as libpq reads it.
    Postgres(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocationError {
    #[error(
        "database URL {0} is not one shipwatch reads; give a file path, sqlite://PATH or postgres://USER@HOST/DB"
    )]
    Scheme(String),
    #[error("database URL {shown} cannot be read: {reason}")]
    Url { shown: String, reason: String },
    #[error("database location is empty; give a file path or postgres://USER@HOST/DB")]
    Empty,
}

impl Location {
    /// Reads a location: `postgres://` and `postgresql://` are PostgreSQL, `sqlite://PATH` and
    /// anything without a scheme are a SQLite file. A relative path is taken as given.
    pub fn parse(text: &str) -> Result<Location, LocationError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(LocationError::Empty);
        }
        let lower = trimmed.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            let url = reqwest::Url::parse(trimmed).map_err(|e| LocationError::Url {
                shown: mask(trimmed),
                reason: e.to_string(),
            })?;
            if url.host_str().is_none_or(str::is_empty)
                && !url.query_pairs().any(|(k, _)| k == "host")
            {
                return Err(LocationError::Url {
                    shown: mask(trimmed),
                    reason: "it names no host; write postgres://USER@HOST/DB".to_owned(),
                });
            }
            return Ok(Location::Postgres(trimmed.to_owned()));
        }
        if let Some(path) = trimmed.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(LocationError::Empty);
            }
            return Ok(Location::Sqlite(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = trimmed.split_once("://") {
            return Err(LocationError::Scheme(format!("{scheme}://…")));
        }
        Ok(Location::Sqlite(PathBuf::from(text)))
    }

    /// The SQLite file, if this is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(path) => Some(path),
            Location::Postgres(_) => None,
        }
    }
}

/// A URL with its password replaced by `****`, for logs and errors.
fn mask(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("****"));
            }
            let masked: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "password" {
                        "****".into()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            if !masked.is_empty() {
                parsed.query_pairs_mut().clear().extend_pairs(masked);
            }
            parsed.to_string()
        }
        // Unreadable: show only the scheme, as anything after it may be a secret.
        Err(_) => format!("{}://…", url.split("://").next().unwrap_or("?")),
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => f.write_str(&mask(url)),
        }
    }
}

/// As shown: never the password.
impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({self})")
    }
}

impl From<&Path> for Location {
    fn from(path: &Path) -> Location {
        Location::Sqlite(path.to_owned())
    }
}

impl From<&PathBuf> for Location {
    fn from(path: &PathBuf) -> Location {
        Location::Sqlite(path.clone())
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Location {
        Location::Sqlite(path)
    }
}

impl From<&Location> for Location {
    fn from(location: &Location) -> Location {
        location.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_is_a_file_unless_it_says_postgres() {
        assert_eq!(
            Location::parse("/var/lib/shipwatch/shipwatch.db").unwrap(),
            Location::Sqlite("/var/lib/shipwatch/shipwatch.db".into())
        );
        assert_eq!(
            Location::parse("sqlite:///tmp/x.db?mode=rwc").unwrap(),
            Location::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            Location::parse("relative.db").unwrap(),
            Location::Sqlite("relative.db".into())
        );
        for url in [
            "postgresql://ship:pw@db.example:5432/ship",
            "postgres://ship@localhost/ship",
            "postgres:///ship?host=/run/postgresql",
        ] {
            assert!(
                matches!(Location::parse(url), Ok(Location::Postgres(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn bad_locations_say_what_is_wrong_in_one_line() {
        assert_eq!(Location::parse("  "), Err(LocationError::Empty));
        let err = Location::parse("mysql://root:secret@db/x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mysql://…") && !err.contains("secret"),
            "{err}"
        );
        let err = Location::parse("postgres://ship:pw@[::1/ship")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot be read") && !err.contains("pw"),
            "{err}"
        );
    }

    #[test]
    fn the_password_is_never_shown() {
        let pg = Location::parse("postgres://ship:hunter2@db.example/ship?password=x2").unwrap();
        let shown = format!("{pg} {pg:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("x2"),
            "{shown}"
        );
        assert!(shown.contains("ship:****@db.example"), "{shown}");
        assert_eq!(
            format!("{pg:?}"),
            "Location(postgres://ship:****@db.example/ship?password=****)"
        );
        let file = Location::parse("/var/lib/shipwatch/shipwatch.db").unwrap();
        assert_eq!(
            format!("{file} {file:?}"),
            "/var/lib/shipwatch/shipwatch.db Location(/var/lib/shipwatch/shipwatch.db)"
        );
    }

    #[test]
    fn only_a_file_location_has_a_file() {
        let file = Location::parse("sqlite:///tmp/x.db").unwrap();
        assert_eq!(file.file(), Some(Path::new("/tmp/x.db")));
        let pg = Location::parse("postgres://ship@localhost/ship").unwrap();
        assert_eq!(pg.file(), None);
    }
}
