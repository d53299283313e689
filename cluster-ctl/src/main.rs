//! `cluster-ctl`: placeholder binary; its subcommands are not implemented yet (see the open issues).

use clap::Parser;

/// cluster-ctl (not implemented yet: this binary only answers --help).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {}

fn main() -> std::process::ExitCode {
    let _cli = Cli::parse();
    eprintln!("cluster-ctl: no subcommand is implemented yet");
    std::process::ExitCode::from(2)
}
