//! keepalive-shim's command-line tool: run a program under the preload library, check a
//! configuration before deploying it, and inspect the keepalive settings of live connections.

// The library's own configuration code, from the policy crate both use (linking the library
// itself would put its socket()/connect() exports into this program).
use keepalive_shim_policy::config;

mod check;
mod fleet;
mod inspect;
mod metrics;
mod os;
mod output;
mod reach;
mod run;
mod supervise;
mod system;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "keepalive-shim",
    version,
    about = "Give every TCP connection of an unmodified program keepalive and a user timeout",
    after_help = "Examples:\n  \
        keepalive-shim run -- python3 tool.py\n  \
        keepalive-shim run --idle 20s --user-timeout 45s -- curl https://service.internal/\n  \
        KEEPALIVE_IDLE=2m keepalive-shim check\n  \
        keepalive-shim inspect $(pidof python3)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(run::Args),
    Check(check::Args),
    CopyLibrary(system::CopyLibraryArgs),
    Inspect(inspect::Args),
    Fleet(fleet::Args),
    Metrics(metrics::Args),
    System(system::Args),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run::main(args),
        Command::Check(args) => check::main(args),
        Command::CopyLibrary(args) => system::copy_library(args),
        Command::Inspect(args) => inspect::main(args),
        Command::Fleet(args) => fleet::main(args),
        Command::Metrics(args) => metrics::main(args),
        Command::System(args) => system::main(args),
    }
}

/// Prints `keepalive-shim: MESSAGE` to stderr; a failing stderr is no panic (`output.rs`).
macro_rules! say {
    ($($arg:tt)*) => { $crate::output::err(format_args!("keepalive-shim: {}", format_args!($($arg)*))) };
}
pub(crate) use say;
