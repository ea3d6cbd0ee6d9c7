//! keepalive-shim's command-line tool: run a program under the preload library, check a
//! configuration before deploying it, and inspect the keepalive settings of live connections.

// The commands, one module each; a command imports engines (the crates), `sys`, and the shared
// modules below, never another command.
mod check;
mod copy_library;
mod fleet;
mod inject;
mod inspect;
mod metrics;
mod run;
mod system;
mod webhook;

// What several commands share: the library's one finder, the preload file's text, which mode
// reaches a program, and the metrics endpoint.
mod endpoint;
mod library;
mod mutation;
mod preload_file;
mod reach;

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
    CopyLibrary(copy_library::Args),
    Inject(inject::Args),
    Inspect(inspect::Args),
    Fleet(fleet::Args),
    Metrics(metrics::Args),
    System(system::Args),
    Webhook(webhook::Args),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run::main(args),
        Command::Check(args) => check::main(args),
        Command::CopyLibrary(args) => copy_library::main(args),
        Command::Inject(args) => inject::main(args),
        Command::Inspect(args) => inspect::main(args),
        Command::Fleet(args) => fleet::main(args),
        Command::Metrics(args) => metrics::main(args),
        Command::System(args) => system::main(args),
        Command::Webhook(args) => webhook::main(args),
    }
}
