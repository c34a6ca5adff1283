//! The one place that builds HTTP clients.
//!
//! Every network call of a cycle must end within the cycle's deadline even
//! when a dependency hangs, so no client is built without a total timeout
//! and a connect timeout.

use std::time::Duration;

use anyhow::{Context, Result};

/// Builds a reqwest client whose every request ends after `timeout`.
///
/// `verify_tls = false` exists only for HTTP health checks that the operator
/// marked as self-signed; every API client passes `true`.
pub fn client(timeout: Duration, verify_tls: bool) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("ops-agent/", env!("CARGO_PKG_VERSION")))
        .danger_accept_invalid_certs(!verify_tls)
        .build()
        .context("building the HTTP client")
}
