//! The `codepipeline-gateway` binary: parse the command line, start logging, build the app the
//! subcommand names, and serve until SIGTERM.

use clap::Parser;
use codepipeline_gateway::{
    app::{App, Seams, ShutdownSignal, config_check},
    auth::new_token::NewClient,
    config::{Cli, Command, ConfigCommand, TokenCommand},
    observability::{logs, traces},
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Token(TokenCommand::New(args)) = &cli.command {
        // Nothing is logged: the token goes to stdout only.
        let new = NewClient {
            id: args.client_id.clone(),
            rpcs: args.rpcs.clone(),
            action_types: args.action_types.clone(),
        }
        .token()?;
        println!(
            "{}\n\n# The token file entry for it:\n{}",
            new.token, new.entry
        );
        return Ok(());
    }
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
        Command::Token(_) => unreachable!("answered before logging starts"),
        Command::Config(ConfigCommand::Check(args)) => {
            let checked =
                config_check(&args.serve, cli.trace.settings().as_ref(), args.reach).await;
            let failed = checked
                .iter()
                .filter(|check| check.outcome.is_err())
                .count();
            for check in &checked {
                match &check.outcome {
                    Ok(found) => println!("ok    {}: {found}", check.what),
                    Err(wrong) => println!("FAIL  {}: {wrong}", check.what),
                }
            }
            if failed > 0 {
                anyhow::bail!("{failed} of {} checks failed", checked.len());
            }
            Ok(())
        }
    };
    traces::shutdown();
    served
}
