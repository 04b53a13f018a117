//! Files and folders made immutable (`chattr +i`) until dropped: the way to make a database
//! unwritable for root, who ignores permission bits. An immutable file outlives the test's temp
//! folder, hence the guard.

use std::path::PathBuf;
use std::process::Command;

pub struct Immutable(Vec<PathBuf>);

impl Immutable {
    /// `None` when `chattr` is missing, this is not root, or the file system has no immutable
    /// flag; whatever was set before the failure is cleared again.
    pub fn try_set(paths: &[PathBuf]) -> Option<Immutable> {
        let mut set = Immutable(Vec::new());
        for path in paths {
            let ok = Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return None;
            }
            set.0.push(path.clone());
        }
        Some(set)
    }

    /// For a test that cannot do without it.
    pub fn set(paths: &[PathBuf]) -> Immutable {
        Immutable::try_set(paths).unwrap_or_else(|| {
            panic!("this test needs root and a file system with chattr +i: {paths:?}")
        })
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(path).status();
        }
    }
}
