//! `vfabric`: run, check and inspect a virtual switch fabric described by a topology file.
//!
//! The binary composes the library's layers: `args` (the command line), `check` (load and
//! validate a topology), `run` (the daemon), `attach` (the VMM arguments printed for each
//! port and disk), `ctl` (the control socket's client and its printing).

use std::process::ExitCode;

use clap::Parser;

mod args;
mod check;
mod ctl;
mod run;

use args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Check { topology, host } => check::check(&topology, host.as_deref()),
        Command::Run {
            topology,
            seccomp,
            http,
            host,
        } => match check::load_local(&topology, host.as_deref()) {
            Some(t) => run::run(&topology, t, seccomp, http),
            None => ExitCode::FAILURE,
        },
        Command::Ctl {
            socket,
            topology,
            host,
            json,
            cmd,
        } => ctl::ctl(socket, topology, host, json, cmd),
    }
}
