//! For tests that read what the daemon logs: a subscriber for the current thread that keeps its
//! lines in memory in the text format's shape, without the time and the colours (each line
//! starts with its level).

use std::sync::{Arc, Mutex};

use tracing::subscriber::DefaultGuard;

/// What the subscriber wrote.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Keeps every line logged on this thread, down to debug, until the guard is dropped. A
    /// test on tokio's current-thread runtime (`start_paused`) sees its spawned tasks' lines too.
    pub fn capture() -> (Logs, DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let guard = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .without_time()
                .with_writer(move || writer.clone())
                .finish(),
        );
        (logs, guard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// How many lines at `level` hold `text`.
    pub fn lines(&self, level: &str, text: &str) -> usize {
        self.text()
            .lines()
            .filter(|line| line.trim_start().starts_with(level) && line.contains(text))
            .count()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
