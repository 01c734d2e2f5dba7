//! The `dyngate` command.

use std::process::ExitCode;

use dyngate::config::{self, Command, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dyngate: {e}");
            return ExitCode::from(2);
        }
    };
    let Command::Serve(args) = cli.command;
    let filter = EnvFilter::try_new(&args.log).unwrap_or_else(|e| {
        eprintln!("dyngate: invalid --log filter ({e}); using `info`");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dyngate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dyngate::server::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("dyngate: {e}");
            ExitCode::FAILURE
        }
    }
}
