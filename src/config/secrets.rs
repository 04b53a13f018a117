//! Where a secret comes from: inline, a `*_file`, or a systemd credential; read with a bound,
//! and every place remembered so that the daemon can warn about who else may read it.

use std::path::{Path, PathBuf};

use super::{ConfigError, invalid};
use crate::domain::Secret;

/// The keys whose secrets the config file holds inline, and the files secrets were read from.
#[derive(Debug, Default, Clone)]
pub struct SecretPlaces {
    /// `[section] key`, one per secret written in the config itself.
    pub inline: Vec<String>,
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Secrets {
    Required,
    /// Secrets that cannot be read are replaced by a placeholder.
    Skipped,
}

/// Finds a secret inline, in a `*_file`, or among systemd credentials.
pub(super) struct SecretResolver {
    base: PathBuf,
    credentials: Option<PathBuf>,
    pub(super) mode: Secrets,
    pub(super) places: std::cell::RefCell<SecretPlaces>,
}

impl SecretResolver {
    pub(super) fn from_env(base: &Path, mode: Secrets) -> Self {
        SecretResolver {
            mode,
            places: Default::default(),
            base: base.to_owned(),
            credentials: std::env::var_os("CREDENTIALS_DIRECTORY")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
        }
    }

    /// `key` inline wins; then `key_file` (relative paths are looked up in
    /// `$CREDENTIALS_DIRECTORY` first, then beside the config); then a credential named
    /// `{name}.{key}` (systemd `LoadCredential=taobao.app_secret:…`).
    pub(super) fn resolve(
        &self,
        section: &str,
        name: &str,
        key: &str,
        inline: Option<String>,
        file: Option<PathBuf>,
    ) -> Result<Secret, ConfigError> {
        match self.find(section, name, key, inline, file) {
            Err(_) if self.mode == Secrets::Skipped => Ok(Secret::new("(not loaded)")),
            found => found,
        }
    }

    fn find(
        &self,
        section: &str,
        name: &str,
        key: &str,
        inline: Option<String>,
        file: Option<PathBuf>,
    ) -> Result<Secret, ConfigError> {
        if inline.is_some() && file.is_some() {
            return Err(invalid(format!(
                "{section} gives both {key} and {key}_file; keep one"
            )));
        }
        if let Some(value) = inline {
            if value.is_empty() {
                return Err(invalid(format!("{section} {key} is empty")));
            }
            self.note_inline(section, key);
            return Ok(Secret::new(value));
        }
        if let Some(file) = file {
            let path = if file.is_absolute() {
                file
            } else {
                match &self.credentials {
                    Some(dir) if dir.join(&file).is_file() => dir.join(&file),
                    _ => self.base.join(&file),
                }
            };
            self.note_file(&path);
            return read_secret(section, &format!("{key}_file"), &path);
        }
        if let Some(dir) = &self.credentials {
            let path = dir.join(format!("{name}.{key}"));
            if path.is_file() {
                self.note_file(&path);
                return read_secret(section, "credential", &path);
            }
        }
        Err(invalid(format!(
            "{section} needs {key} (inline, as {key}_file, or as the systemd credential {name}.{key})"
        )))
    }
}

impl SecretResolver {
    pub(super) fn note_inline(&self, section: &str, key: &str) {
        self.places
            .borrow_mut()
            .inline
            .push(format!("{section} {key}"));
    }

    /// A secret file whose mode is worth a warning. Files in `$CREDENTIALS_DIRECTORY` are not:
    /// systemd makes that folder accessible to the service's user only (systemd.exec(5),
    /// "Credentials",
    /// https://www.freedesktop.org/software/systemd/man/latest/systemd.exec.html#Credentials),
    /// whatever the files' own modes say.
    fn note_file(&self, path: &Path) {
        if self
            .credentials
            .as_ref()
            .is_some_and(|dir| path.starts_with(dir))
        {
            return;
        }
        self.places.borrow_mut().files.push(path.to_owned());
    }

    /// A URL with a password or a query may carry a secret in the config itself.
    pub(super) fn note_url(&self, section: &str, key: &str, url: &str) {
        if let Ok(u) = reqwest::Url::parse(url)
            && (u.password().is_some() || u.query().is_some())
        {
            self.note_inline(section, key);
        }
    }

    /// A secret that may be absent: from `key_file`, else the systemd credential `{name}.{key}`.
    pub(super) fn optional(
        &self,
        section: &str,
        name: &str,
        key: &str,
        file: Option<PathBuf>,
    ) -> Result<Option<Secret>, ConfigError> {
        let credential = self
            .credentials
            .as_ref()
            .is_some_and(|dir| dir.join(format!("{name}.{key}")).is_file());
        if file.is_none() && !credential {
            return Ok(None);
        }
        match self.find(section, name, key, None, file) {
            Ok(secret) => Ok(Some(secret)),
            Err(_) if self.mode == Secrets::Skipped => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The longest secret file read: keys and tokens are short, and a path that names a device or
/// a huge file by mistake must not cost the daemon its memory.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

fn read_secret(section: &str, what: &str, path: &Path) -> Result<Secret, ConfigError> {
    use std::io::Read;
    let cannot = |e: std::io::Error| {
        invalid(format!(
            "{section} {what}: cannot read {}: {}",
            path.display(),
            io_reason(&e)
        ))
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_SECRET_BYTES + 1).read_to_string(&mut text))
        .map_err(cannot)?;
    if text.len() as u64 > MAX_SECRET_BYTES {
        return Err(invalid(format!(
            "{section} {what}: {} is over {MAX_SECRET_BYTES} bytes; is it the right file?",
            path.display()
        )));
    }
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(invalid(format!(
            "{section} {what}: {} is empty",
            path.display()
        )));
    }
    Ok(Secret::new(value))
}

/// `No such file or directory` without the `(os error 2)` tail.
pub fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AdapterSettings, Config};

    #[test]
    fn secrets_come_from_files_beside_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tb.secret"), "s3cret\n").unwrap();
        let config = Config::parse(
            "[providers.t]\nkind = \"taobao\"\napp_key = \"1\"\napp_secret_file = \"tb.secret\"\nsession = \"s\"",
            None,
            dir.path(),
        )
        .unwrap();
        match &config.providers["t"].adapter {
            AdapterSettings::Taobao(t) => assert_eq!(t.app_secret.expose(), "s3cret"),
            other => panic!("{other:?}"),
        }
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
