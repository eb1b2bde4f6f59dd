//! The `codepipeline-gateway` binary: parse the command line, start logging, build the app the
//! subcommand names, and serve until SIGTERM.

use clap::Parser;
use codepipeline_gateway::{
    app::{App, Seams, ShutdownSignal},
    config::{Cli, Command},
    observability::{logs, traces},
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logs::init(
        &cli.log.log,
        cli.log.log_format,
        cli.trace.settings().as_ref(),
    )?;
    // Before anything listens: a supervisor may send SIGTERM as soon as the address is printed.
    let signal = ShutdownSignal::install()?;
    let served = match cli.command {
        Command::Serve(args) => {
            App::build(*args, Seams::default())
                .await?
                .run_until(signal)
                .await
        }
        #[cfg(feature = "emulator")]
        Command::Emulator(args) => {
            codepipeline_gateway::app::EmulatorApp::build(*args)
                .await?
                .run_until(signal)
                .await
        }
    };
    traces::shutdown();
    served
}
