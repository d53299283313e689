//! `host-setup`: placeholder binary; its subcommands are not implemented yet (see the open issues).

use clap::Parser;

/// host-setup (not implemented yet: this binary only answers --help).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {}

fn main() -> std::process::ExitCode {
    let _cli = Cli::parse();
    eprintln!("host-setup: no subcommand is implemented yet");
    std::process::ExitCode::from(2)
}
