//! Shared test support: the real binary in a sandbox, and in-process fakes
//! of the services the agent talks to (each in its own module).
#![allow(dead_code)]

pub mod agent;
pub mod docker;
pub mod http_endpoints;
pub mod mattermost;
pub mod ollama;
pub mod planka;
