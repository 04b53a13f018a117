//! `database`: where the rows live (a SQLite file, or a PostgreSQL server), and where a
//! PostgreSQL daemon keeps its delivery receipts (`storage::receipts`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Config, ConfigError, DEFAULT_DATABASE, invalid};
use crate::storage::Location;

/// `database = "PATH or URL"`, or a `[database]` table with `url` (and, for PostgreSQL,
/// `receipts`).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawDatabase {
    Text(String),
    Table(RawDatabaseTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatabaseTable {
    url: String,
    receipts: Option<PathBuf>,
}

/// The database, and on PostgreSQL the daemon's receipts' file, from what the file says;
/// relative paths are taken from `base`, the config's folder.
pub(super) fn resolve_database(
    raw: Option<RawDatabase>,
    base: &Path,
) -> Result<(Location, Option<PathBuf>), ConfigError> {
    let (database, receipts) = match raw {
        None => (Location::Sqlite(PathBuf::from(DEFAULT_DATABASE)), None),
        Some(RawDatabase::Text(url)) => (
            Location::parse(&url).map_err(|e| invalid(e.to_string()))?,
            None,
        ),
        Some(RawDatabase::Table(RawDatabaseTable { url, receipts })) => (
            Location::parse(&url).map_err(|e| invalid(e.to_string()))?,
            receipts,
        ),
    };
    Ok(match database {
        Location::Sqlite(_) if receipts.is_some() => {
            return Err(invalid(
                "[database] receipts is for PostgreSQL: a SQLite database keeps its delivery receipts beside its file (NAME.sent); remove the key",
            ));
        }
        Location::Sqlite(p) if p.is_relative() => (Location::Sqlite(base.join(p)), None),
        Location::Sqlite(p) => (Location::Sqlite(p), None),
        Location::Postgres(url) => {
            let receipts = match receipts {
                Some(path) if path.as_os_str().is_empty() => {
                    return Err(invalid(
                        "[database] receipts is empty; give the file this daemon keeps its delivery receipts in, or remove the key",
                    ));
                }
                Some(path) => Some(base.join(path)),
                None => state_directory(std::env::var_os("STATE_DIRECTORY"))
                    .map(|dir| dir.join(POSTGRES_RECEIPTS)),
            };
            (Location::Postgres(url), receipts)
        }
    })
}

/// The receipts' file of a PostgreSQL daemon in systemd's `STATE_DIRECTORY`.
const POSTGRES_RECEIPTS: &str = "postgres.sent";

/// The first of the folders systemd gives the service in `STATE_DIRECTORY` (`StateDirectory=`),
/// from the variable's value.
fn state_directory(value: Option<std::ffi::OsString>) -> Option<PathBuf> {
    std::env::split_paths(&value?)
        .next()
        .filter(|dir| dir.is_absolute())
}

impl Config {
    /// Where the daemon keeps its delivery receipts (`storage::receipts`): beside a SQLite
    /// database's file (the file its path resolves to, as the daemon's lock), or the PostgreSQL
    /// daemon's own file, if it has one.
    pub fn receipts_file(&self) -> Option<PathBuf> {
        match &self.database {
            Location::Sqlite(file) => Some(crate::storage::receipts::path_beside(
                &std::fs::canonicalize(file).unwrap_or_else(|_| file.clone()),
            )),
            Location::Postgres(_) => self.postgres_receipts.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::parse;

    #[test]
    fn a_postgresql_daemon_keeps_its_receipts_where_it_is_told_or_in_its_state_directory() {
        let config = Config::parse(
            "[database]\nurl = \"postgres://shipwatch@db/shipwatch\"\nreceipts = \"a.sent\"",
            None,
            Path::new("/etc/shipwatch"),
        )
        .unwrap();
        assert_eq!(
            config.receipts_file(),
            Some(PathBuf::from("/etc/shipwatch/a.sent")),
            "relative to the config's folder"
        );
        let sqlite = parse("database = \"/var/lib/x/s.db\"").unwrap();
        assert_eq!(
            sqlite.receipts_file(),
            Some(PathBuf::from("/var/lib/x/s.db.sent")),
            "a SQLite database's beside its file"
        );
        for (text, says) in [
            (
                "[database]\nurl = \"/var/lib/x/s.db\"\nreceipts = \"a.sent\"",
                "[database] receipts is for PostgreSQL",
            ),
            (
                "[database]\nurl = \"postgres://u@db/s\"\nreceipts = \"\"",
                "[database] receipts is empty",
            ),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
        // systemd's StateDirectory=shipwatch: the first folder of the list, absolute only.
        for (value, dir) in [
            (Some("/var/lib/shipwatch"), Some("/var/lib/shipwatch")),
            (Some("/var/lib/a:/var/lib/b"), Some("/var/lib/a")),
            (Some("relative"), None),
            (Some(""), None),
            (None, None),
        ] {
            assert_eq!(
                state_directory(value.map(Into::into)),
                dir.map(PathBuf::from),
                "{value:?}"
            );
        }
    }
}
