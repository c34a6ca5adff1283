#![allow(dead_code)]
pub mod mattermost;
