//! Shared test support: the real binary in a sandbox, and in-process fakes
//! of the services the agent talks to (each in its own module).
#![allow(dead_code)]

pub mod agent;
pub mod docker;
pub mod fault;
pub mod harness;
pub mod http_endpoints;
pub mod mattermost;
pub mod ollama;
pub mod planka;

/// Runs an async fake's `start` on a thread of its own with its own
/// runtime, and returns the fake: for tests that drive the real binary
/// with `std::process::Command` while the fake keeps serving.
pub fn in_background<T, F>(start: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime for a background fake");
        rt.block_on(async move {
            tx.send(start().await).expect("fake handed over");
            std::future::pending::<()>().await
        });
    });
    rx.recv().expect("background fake started")
}
