//! The `breach-notifier` binary: parses the command line, runs the command, turns an error into one
//! clear line on standard error and a non-zero exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = breach_notifier::cli::args::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(breach_notifier::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` joins the cause chain on one line; backtraces only when RUST_BACKTRACE asks.
            eprintln!("error: {e:#}");
            if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
                eprintln!("{}", e.backtrace());
            }
            ExitCode::FAILURE
        }
    }
}
