#![allow(dead_code)]
pub mod planka;
