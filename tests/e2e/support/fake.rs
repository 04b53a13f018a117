//! What every fake upstream shares: its state, locked by the handlers and the test alike, and its
//! server on 127.0.0.1:0, stopped when the fake is dropped.

use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;

/// A fake's state, shared by its handlers and the test that drives it.
pub struct Shared<T>(Arc<Mutex<T>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> Shared<T> {
    pub fn new(state: T) -> Self {
        Shared(Arc::new(Mutex::new(state)))
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        // A panicking test thread must not take every later assertion down with it.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A fake's HTTP server on loopback; dropping it stops the server.
pub struct Server {
    /// `http://127.0.0.1:PORT`, without a path.
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `router` on a free loopback port; `name` says which fake failed, should it.
pub async fn serve(router: Router, name: &'static str) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let port = listener.local_addr().expect("local addr").port();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .await
            .unwrap_or_else(|e| panic!("{name} stopped serving: {e}"));
    });
    Server {
        base: format!("http://127.0.0.1:{port}"),
        task,
    }
}
