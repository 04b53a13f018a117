//! Who else can read the files that hold secrets or buyers' data. `check-config` prints these
//! warnings and `run` logs them at start: a config with an inline key, a secret file or a
//! database that another local user can read is a leak waiting for its reader.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::config::Config;

/// Read permission for the group or for others.
const GROUP_OR_OTHERS: u32 = 0o044;
/// Read permission for others.
const OTHERS: u32 = 0o004;

/// The config file when it holds secrets inline, and every secret file, when the group or
/// others may read them.
pub fn secret_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    let places = &config.secret_places;
    if let Some(path) = &config.source
        && !places.inline.is_empty()
        && let Some(mode) = readable(path, GROUP_OR_OTHERS)
    {
        warnings.push(format!(
            "config {} holds secrets inline ({}) and is readable by group or others (mode {mode:04o}): make it private with `chmod 600 {}` (owned by the service user), or move the secrets to *_file keys or systemd credentials",
            shown_path(path),
            places.inline.join(", "),
            shown_path(path)
        ));
    }
    let mut seen: Vec<&Path> = Vec::new();
    for path in &places.files {
        if seen.contains(&path.as_path()) {
            continue;
        }
        seen.push(path);
        if let Some(mode) = readable(path, GROUP_OR_OTHERS) {
            warnings.push(format!(
                "secret file {} is readable by group or others (mode {mode:04o}): make it private with `chmod 600 {}` (owned by the service user)",
                shown_path(path),
                shown_path(path)
            ));
        }
    }
    warnings
}

/// The database and its write-ahead log when others may read them: they hold buyers' phone
/// numbers and email addresses. shipwatch creates them 0600; an older or copied file may not be.
pub fn database_warnings(database: &Path) -> Vec<String> {
    let wal = std::path::PathBuf::from(format!("{}-wal", database.display()));
    [database, wal.as_path()]
        .into_iter()
        .filter_map(|path| {
            readable(path, OTHERS).map(|mode| {
                format!(
                    "database file {} is readable by others (mode {mode:04o}) and holds buyers' phone numbers and emails: make it private with `chmod 600 {}`",
                    shown_path(path),
                    shown_path(path)
                )
            })
        })
        .collect()
}

/// The file's permission bits when any of `bits` is set; `None` when not, or when it cannot be
/// looked at (a missing file is reported elsewhere).
fn readable(path: &Path, bits: u32) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & bits != 0).then_some(mode)
}

fn shown_path(path: &Path) -> String {
    crate::shown::for_terminal(&path.display().to_string()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_others_can_read_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let rows: &[(u32, u32, bool)] = &[
            (0o600, GROUP_OR_OTHERS, false),
            (0o400, GROUP_OR_OTHERS, false),
            (0o640, GROUP_OR_OTHERS, true),
            (0o604, GROUP_OR_OTHERS, true),
            (0o644, GROUP_OR_OTHERS, true),
            (0o640, OTHERS, false),
            (0o644, OTHERS, true),
            (0o200, OTHERS, false),
        ];
        for (i, (mode, bits, warned)) in rows.iter().enumerate() {
            let path = dir.path().join(format!("f{i}"));
            std::fs::write(&path, "x").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
            assert_eq!(readable(&path, *bits).is_some(), *warned, "{mode:o}");
        }
        assert_eq!(readable(&dir.path().join("missing"), OTHERS), None);
    }
}
