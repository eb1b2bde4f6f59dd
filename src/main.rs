//! The `codepipeline-gateway` binary: parse the command line; for `serve` and `emulator`, start
//! logging, build the app the subcommand names and serve until SIGTERM; for the tools (`token
//! new`, `config check`, `completions`, `man`), print and exit.

use std::fmt::Write as _;

use clap::{CommandFactory, Parser};
use codepipeline_gateway::{
    app::{App, Seams, ShutdownSignal, config_check},
    auth::new_token::NewClient,
    config::{CheckArgs, Cli, Command, ConfigCommand, TokenCommand},
    observability::{logs, traces},
};

// Many small allocations per call on every worker thread: glibc's arenas contend on their locks
// under load, mimalloc's thread-local heaps do not (the bench's throughput row measures it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        // Nothing is logged: the token goes to stdout only.
        Command::Token(TokenCommand::New(args)) => {
            let new = NewClient {
                id: args.client_id.clone(),
                rpcs: args.rpcs.clone(),
                action_types: args.action_types.clone(),
            }
            .token()?;
            print(
                format!(
                    "{}\n\n# The token file entry for it:\n{}",
                    new.token, new.entry
                )
                .as_bytes(),
            )
        }
        Command::Completions { shell } => {
            let mut printed = Vec::new();
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "codepipeline-gateway",
                &mut printed,
            );
            print(&printed)
        }
        Command::Man => {
            let mut printed = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut printed)?;
            print(&printed)
        }
        _ => serve(cli).await,
    }
}

/// What serves, or reads what would: with logs (and traces) on.
async fn serve(cli: Cli) -> anyhow::Result<()> {
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
        Command::Config(ConfigCommand::Check(args)) => check(&cli.trace, &args).await,
        Command::Token(_) | Command::Completions { .. } | Command::Man => {
            unreachable!("the tools are answered before logging starts")
        }
    };
    traces::shutdown();
    served
}

/// `config check`: each check's line, and an error when one failed.
async fn check(
    trace: &codepipeline_gateway::config::TraceArgs,
    args: &CheckArgs,
) -> anyhow::Result<()> {
    let checked = config_check(&args.serve, trace.settings().as_ref(), args.reach).await;
    let mut report = String::new();
    for check in &checked {
        let _ = match &check.outcome {
            Ok(found) => writeln!(report, "ok    {}: {found}", check.what),
            Err(wrong) => writeln!(report, "FAIL  {}: {wrong}", check.what),
        };
    }
    print(report.as_bytes())?;
    let failed = checked
        .iter()
        .filter(|check| check.outcome.is_err())
        .count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} checks failed", checked.len());
    }
    Ok(())
}

/// Writes `text` to stdout; a reader that stopped early (`| head`) is not an error.
fn print(text: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => Ok(result?),
    }
}
