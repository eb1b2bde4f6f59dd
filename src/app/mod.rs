//! Builds and runs what a subcommand serves, from its command line: [`App`] for `serve` (the gRPC
//! gateway behind its middleware stack, and the metrics endpoint) and `EmulatorApp` for
//! `emulator` (the emulator's AWS wire-protocol front). `main` and the tests build them the same
//! way; tests bind port 0 and read the real addresses back.
//!
//! - [`options`]: the command line translated into what is built, with the cross-flag rules;
//! - [`stack`]: the services and the one middleware stack;
//! - [`servers`]: the server handles, shutdown, the metrics server;
//! - `emulated`: the emulator's servers and the in-process emulator (the `emulator` feature);
//! - `check`: `config check`, what `serve` would read, read without serving;
//! - [`connections`]: the gRPC port's accepted connections, their cap and timers;
//! - [`tls`]: TLS files for the gRPC port.

mod check;
pub mod connections;
#[cfg(feature = "emulator")]
mod emulated;
pub mod options;
mod servers;
mod stack;
mod tls;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use aws_credential_types::provider::SharedCredentialsProvider;
use tokio::net::TcpListener;

pub use check::{Checked, config_check};
#[cfg(feature = "emulator")]
pub use emulated::EmulatorApp;
#[cfg(feature = "emulator")]
pub use options::EmulatorOptions;
pub use options::{GatewayOptions, Http2Settings, UpstreamChoice, WatchedFilePath};
pub use servers::{Server, ShutdownSignal};
pub use tls::TlsFiles;

#[cfg(feature = "emulator")]
use crate::emulator::Emulator;
use crate::{
    artifacts::{ArtifactSettings, Artifacts},
    auth::{
        ClientTokens, TokenStore,
        watched_file::{FileContent, WatchedFile},
    },
    aws::AwsUpstream,
    config::ServeArgs,
    limits::LimitClock,
    observability::{Metrics, metrics::WatchedFileMetrics},
    upstream::Upstream,
};

/// What a test may put in place of the parts the command line would make.
#[derive(Default)]
pub struct Seams {
    /// Forward to this upstream instead of the configured one.
    pub upstream: Option<Arc<dyn Upstream>>,
    /// Credentials for the AWS SDK instead of its default chain.
    pub aws_credentials: Option<SharedCredentialsProvider>,
    /// The limiters' clock instead of real time.
    pub limit_clock: Option<LimitClock>,
}

/// The gateway of `codepipeline-gateway serve`, listening.
pub struct App {
    grpc: Server,
    metrics_server: Server,
    metrics: Arc<Metrics>,
    #[cfg(feature = "emulator")]
    emulator: Option<Arc<Emulator>>,
    /// The emulator's artifact store, with `--upstream emulator`.
    s3_store: Option<Server>,
    options: GatewayOptions,
}

impl App {
    /// Builds the gateway `args` describe and starts listening; `seams` replace parts of it.
    pub async fn build(args: ServeArgs, seams: Seams) -> anyhow::Result<Self> {
        let options = GatewayOptions::from_args(&args)?;
        let metrics = Metrics::new();
        let tokens: Option<Arc<TokenStore>> =
            load_watched(options.token_file.as_ref(), metrics.token_file.clone())?;
        if let Some(tokens) = &tokens {
            let unscoped: Vec<String> = tokens
                .current()
                .unscoped_clients()
                .map(str::to_owned)
                .collect();
            if !unscoped.is_empty() {
                tracing::warn!(
                    clients = ?unscoped,
                    "these token file clients have no action_types and may work every action type's jobs"
                );
            }
        }
        let client_token_file = load_watched(
            options.client_token_file.as_ref(),
            metrics.client_token_file.clone(),
        )?;
        let Configured {
            upstream: configured,
            #[cfg(feature = "emulator")]
            emulator,
            sdk_config,
        } = Configured::new(
            &options.upstream,
            seams.aws_credentials,
            seams.upstream.is_some(),
        )
        .await?;
        let upstream = seams
            .upstream
            .or(configured)
            .expect("an upstream is configured or given");
        let metrics_listener = bind(args.metrics_listen(), "metrics").await?;
        let metrics_server = servers::start_metrics_server(metrics_listener, metrics.clone())?;
        #[cfg(feature = "emulator")]
        let s3_store = match &emulator {
            Some(emulator) => {
                Some(emulated::start_in_process_store(args.emulator_s3_listen, emulator).await?)
            }
            None => None,
        };
        #[cfg(not(feature = "emulator"))]
        let s3_store = None;
        let artifact_settings = artifact_settings(&options, s3_store.as_ref());
        let artifacts = Arc::new(Artifacts::new(&sdk_config, &artifact_settings));
        let grpc_listener = bind(args.grpc_listen(), "gRPC").await?;
        let shared = stack::Shared {
            upstream,
            #[cfg(feature = "emulator")]
            admin: emulator.clone(),
            tokens,
            client_tokens: Arc::new(ClientTokens::new(client_token_file, metrics.clone())),
            artifacts,
            metrics: metrics.clone(),
            clock: seams.limit_clock.unwrap_or_default(),
        };
        let grpc = stack::start_gateway(grpc_listener, &options, shared).await?;
        Ok(Self {
            grpc,
            metrics_server,
            metrics,
            #[cfg(feature = "emulator")]
            emulator,
            s3_store,
            options,
        })
    }

    /// The address of the emulator's S3-compatible artifact store, with `--upstream emulator`:
    /// the S3 endpoint (path-style) of the jobs' artifacts.
    pub fn emulator_s3_addr(&self) -> Option<SocketAddr> {
        self.s3_store.as_ref().map(Server::local_addr)
    }

    /// The gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr()
    }

    /// The metrics address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_server.local_addr()
    }

    /// The registry every layer records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The in-process emulator, with `--upstream emulator`.
    #[cfg(feature = "emulator")]
    pub fn emulator(&self) -> Option<&Arc<Emulator>> {
        self.emulator.as_ref()
    }

    /// Says where it listens, serves until `signal`, then drains within the lame-duck period and
    /// the shutdown timeout.
    pub async fn run_until(self, signal: ShutdownSignal) -> anyhow::Result<()> {
        servers::announce("metrics listening on", self.metrics_addr());
        if let Some(addr) = self.emulator_s3_addr() {
            servers::announce("s3 store listening on", format!("http://{addr}"));
        }
        servers::announce("grpc listening on", self.grpc_addr());
        tracing::info!(
            addr = %self.grpc_addr(),
            metrics = %self.metrics_addr(),
            upstream = self.options.upstream.name(),
            "gateway serving"
        );
        // The lame-duck period runs inside the server's shutdown, before the drain deadline.
        let drain = self.options.lame_duck + self.options.shutdown_timeout;
        let result = self.grpc.serve_until_signal(signal, drain).await;
        // The store outlives the gRPC drain: calls finishing then may still move artifacts.
        if let Some(store) = self.s3_store {
            store.shutdown_within(Duration::from_secs(1)).await?;
        }
        self.metrics_server
            .shutdown_within(Duration::from_secs(1))
            .await?;
        result
    }

    /// Stops taking calls, lets in-flight calls finish, and stops the artifact store and the
    /// metrics server.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let result = self.grpc.shutdown().await;
        if let Some(store) = self.s3_store {
            store.shutdown().await?;
        }
        self.metrics_server.shutdown().await?;
        result
    }
}

/// A secrets file loaded and watched for changes, when one is configured.
fn load_watched<T: FileContent>(
    file: Option<&WatchedFilePath>,
    metrics: WatchedFileMetrics,
) -> anyhow::Result<Option<Arc<WatchedFile<T>>>> {
    file.map(|file| {
        let loaded = WatchedFile::load(&file.path, metrics)?;
        loaded.watch(file.poll_interval);
        anyhow::Ok(loaded)
    })
    .transpose()
}

/// What the configured upstream is made of.
struct Configured {
    /// The upstream, unless a test gives its own (then the AWS one is not built).
    upstream: Option<Arc<dyn Upstream>>,
    /// The in-process emulator, with `--upstream emulator`.
    #[cfg(feature = "emulator")]
    emulator: Option<Arc<Emulator>>,
    /// The SDK configuration the artifact store's client is made from.
    sdk_config: aws_config::SdkConfig,
}

impl Configured {
    async fn new(
        choice: &UpstreamChoice,
        aws_credentials: Option<SharedCredentialsProvider>,
        replaced: bool,
    ) -> anyhow::Result<Self> {
        Ok(match choice {
            UpstreamChoice::Aws(settings) => {
                let sdk_config = AwsUpstream::sdk_config(settings, aws_credentials).await?;
                let upstream = (!replaced).then(|| {
                    Arc::new(AwsUpstream::new(&sdk_config, settings)) as Arc<dyn Upstream>
                });
                Self {
                    upstream,
                    #[cfg(feature = "emulator")]
                    emulator: None,
                    sdk_config,
                }
            }
            #[cfg(feature = "emulator")]
            UpstreamChoice::Emulator { config, demo_jobs } => {
                emulated::in_process(config, *demo_jobs).await
            }
        })
    }
}

/// Where the artifact client finds the store: the configured endpoint, else the in-process
/// emulator's store when there is one.
fn artifact_settings(options: &GatewayOptions, s3_store: Option<&Server>) -> ArtifactSettings {
    let mut settings = options.artifacts.clone();
    if let Some(store) = s3_store
        && settings.endpoint_url.is_none()
    {
        settings.endpoint_url = Some(format!("http://{}", store.local_addr()));
    }
    settings
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for {what}"))
}
