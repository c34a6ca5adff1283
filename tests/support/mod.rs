//! Shared test support: in-process fakes of the services the agent talks
//! to (each in its own module).
#![allow(dead_code)]

pub mod docker;
pub mod http_endpoints;
