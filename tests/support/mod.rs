//! Shared test support: the real binary in a sandbox, in-process fakes of
//! the services the agent talks to (each in its own module), the one
//! harness and fault layer they all run on, and the world builder that
//! wires fakes and sandbox together.
#![allow(dead_code)]

pub mod agent;
pub mod docker;
pub mod fault;
pub mod harness;
pub mod heartbeat;
pub mod http_endpoints;
pub mod mattermost;
pub mod ollama;
pub mod pki;
pub mod planka;
pub mod procs;
pub mod tier;
pub mod world;

#[allow(unused_imports)]
pub use harness::in_background;
