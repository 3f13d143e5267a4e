//! The integration tests: one binary, so that a helper no test uses shows
//! as dead code. Run one module with `cargo test --test it MODULE::`.

mod admin_binary;
mod build;
mod cli;
mod download;
mod github_server;
mod module;
mod package;
mod plan;
mod publish;
mod real_spack;
mod recipes;
mod report;
mod s3_server;
mod spack_env;
mod support;
mod verify;
