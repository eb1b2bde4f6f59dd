//! Logging with `tracing`, as text or JSON lines on stderr. Request and response bodies are never
//! logged: job data carries AWS credentials, nonces and secret configuration.

use std::io::IsTerminal;

use tracing::{Level, Metadata};

use super::traces::{self, TraceSettings};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{FilterExt, filter_fn},
    fmt,
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber: log lines by `filter` (tracing's EnvFilter syntax), and the
/// OTLP span exporter when `traces` says where to. Whatever the filter asks for,
/// [`prints_bodies`] events stay out.
pub fn init(filter: &str, format: LogFormat, traces: Option<&TraceSettings>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)?.and(filter_fn(|metadata| !prints_bodies(metadata)));
    // Colour codes only for a terminal: a log file or a collector would keep them as text.
    let colours = std::io::stderr().is_terminal();
    let lines = match format {
        LogFormat::Text => fmt::layer()
            .with_ansi(colours)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
    };
    let subscriber = tracing_subscriber::registry().with(lines.with_filter(filter));
    // Not `.with(Option<layer>)`: an absent layer counts as one interested in every callsite,
    // which makes every span of every crate (h2's, the SDK's) a live one, filtered per call.
    match traces {
        Some(settings) => subscriber.with(traces::layer(settings)?).try_init(),
        None => subscriber.try_init(),
    }
    .map_err(|e| anyhow::anyhow!(e))
}

/// Whether events at this place print what AWS calls carry: the AWS SDK's runtime, at TRACE,
/// prints each operation's input and output with `Debug`, which redacts only the members the
/// service model marks sensitive (nonces, client tokens and action configuration are not); and
/// its endpoint resolution (DEBUG) and request signing (TRACE) print the identity in use, a job's
/// artifact credentials among them.
pub fn prints_bodies(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    let level = *metadata.level();
    let sdk = ["aws_smithy_", "aws_sdk_", "aws_config", "aws_sigv4"]
        .iter()
        .any(|prefix| target.starts_with(prefix));
    let prints_identity = target.starts_with("aws_smithy_runtime::client::orchestrator::endpoints")
        || target.starts_with("aws_sigv4");
    sdk && (level == Level::TRACE || (prints_identity && level == Level::DEBUG))
}
