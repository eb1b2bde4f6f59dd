//! The `codepipeline-gateway` binary: parse the command line, start logging, run.

use clap::Parser;
use codepipeline_gateway::{
    app,
    config::{Cli, Command},
    telemetry,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(&cli.log)?;
    match cli.command {
        Command::Serve(args) => app::run_gateway(*args).await,
        Command::Emulator(args) => app::run_emulator(*args).await,
    }
}
