//! Shared test support: in-process fakes of the services the agent talks to.
#![allow(dead_code)]

pub mod ollama;
