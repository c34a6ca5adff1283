//! The `ops-agent` binary: parse the command line, hand over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    ops_agent::commands::main(ops_agent::cli::Cli::parse())
}
