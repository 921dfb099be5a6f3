//! `tandem-loadgen`: see the library documentation and `--help`.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = tandem_loadgen::Cli::parse();
    match tandem_loadgen::run(cli) {
        Ok(o) => ExitCode::from(o.exit_code()),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
