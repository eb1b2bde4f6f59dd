//! `codepipeline-gateway config check`: everything `serve` would read, read the way `serve`
//! reads it (flags, environment, the cross-flag rules, the token and client-token files, the TLS
//! files), and with `--reach` the services it would talk to reached once (Redis through the
//! shared limits' own connection, the CodePipeline and OTLP endpoints by TCP). Nothing listens.

use std::time::Duration;

use anyhow::Context;

use super::{GatewayOptions, UpstreamChoice};
use crate::{
    auth::{ClientTokenSet, TokenSet, watched_file::WatchedFile},
    config::ServeArgs,
    limits::SharedRates,
    observability::{Metrics, traces::TraceSettings},
};

/// How long reaching one service may take.
const REACH_TIMEOUT: Duration = Duration::from_secs(3);

/// One thing checked, and what was found.
#[derive(Debug)]
pub struct Checked {
    /// What was checked.
    pub what: &'static str,
    /// What was found, or what is wrong.
    pub outcome: Result<String, String>,
}

impl Checked {
    fn of(what: &'static str, outcome: anyhow::Result<String>) -> Self {
        Self {
            what,
            outcome: outcome.map_err(|error| format!("{error:#}")),
        }
    }
}

/// Checks what `args` (and `traces`) configure; with `reach`, reaches the services too.
pub async fn config_check(
    args: &ServeArgs,
    traces: Option<&TraceSettings>,
    reach: bool,
) -> Vec<Checked> {
    let options = match GatewayOptions::from_args(args) {
        Ok(options) => options,
        Err(error) => return vec![Checked::of("flags", Err(error))],
    };
    let metrics = Metrics::new();
    let mut checked = vec![Checked::of(
        "flags",
        Ok(format!("upstream {}", options.upstream.name())),
    )];
    if let Some(file) = &options.token_file {
        checked.push(Checked::of(
            "token file",
            WatchedFile::<TokenSet>::load(&file.path, metrics.token_file.clone()).map(|tokens| {
                let tokens = tokens.current();
                let unscoped: Vec<&str> = tokens.unscoped_clients().collect();
                format!(
                    "{} clients in {}; may work every action type: {unscoped:?}",
                    tokens.len(),
                    file.path.display()
                )
            }),
        ));
    }
    if let Some(file) = &options.client_token_file {
        checked.push(Checked::of(
            "client-token file",
            WatchedFile::<ClientTokenSet>::load(&file.path, metrics.client_token_file.clone())
                .map(|_| format!("read {}", file.path.display())),
        ));
    }
    if let Some(tls) = &options.tls {
        checked.push(Checked::of(
            "TLS files",
            tls.server_config(options.token_file.is_some())
                .map(|_| format!("certificate {}", tls.cert.display())),
        ));
    }
    if reach {
        if let Some(config) = &options.shared_rates {
            checked.push(Checked::of(
                "Redis",
                reach_redis(config.clone(), metrics.clone()).await,
            ));
        }
        // Without the `emulator` feature AWS is the only upstream, and the pattern irrefutable.
        #[allow(irrefutable_let_patterns)]
        if let UpstreamChoice::Aws(settings) = &options.upstream {
            let endpoint = match (&settings.endpoint_url, &settings.region) {
                (Some(url), _) => Some(url.clone()),
                (None, Some(region)) => {
                    Some(format!("https://codepipeline.{region}.amazonaws.com"))
                }
                (None, None) => None,
            };
            checked.push(Checked::of(
                "CodePipeline endpoint",
                match endpoint {
                    Some(endpoint) => reach_tcp(&endpoint, 443).await,
                    None => Ok("the region comes from the SDK's chain: not reached".to_owned()),
                },
            ));
        }
        if let Some(traces) = traces {
            checked.push(Checked::of(
                "OTLP collector",
                reach_tcp(&traces.otlp_endpoint, 4317).await,
            ));
        }
    }
    checked
}

/// Redis, through the connection the shared limits use: up once it answers their probe.
async fn reach_redis(
    config: crate::limits::SharedRatesConfig,
    metrics: std::sync::Arc<Metrics>,
) -> anyhow::Result<String> {
    let within = config.timeout.max(REACH_TIMEOUT);
    let shared = SharedRates::connect(config, metrics)?;
    tokio::time::timeout(within, async {
        while !shared.is_up() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .map(|()| "answered".to_owned())
    .map_err(|_| anyhow::anyhow!("no answer within {within:?}"))
}

/// A TCP connection to the host and port of `url` (`default_port` when it names none).
async fn reach_tcp(url: &str, default_port: u16) -> anyhow::Result<String> {
    let uri: http::Uri = url.parse().with_context(|| format!("{url} is not a URL"))?;
    let host = uri.host().with_context(|| format!("{url} names no host"))?;
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("http") if default_port == 443 => 80,
        _ => default_port,
    });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    tokio::time::timeout(REACH_TIMEOUT, tokio::net::TcpStream::connect((host, port)))
        .await
        .map_err(|_| anyhow::anyhow!("{host}:{port} did not answer within {REACH_TIMEOUT:?}"))?
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    Ok(format!("{host}:{port} accepts connections"))
}
