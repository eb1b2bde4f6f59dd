//! Builds and runs what a subcommand serves, from its command line: [`App`] for `serve` (the gRPC
//! gateway behind its middleware stack, and the metrics endpoint) and [`EmulatorApp`] for
//! `emulator` (the emulator's AWS wire-protocol front). `main` and the tests build them the same
//! way; tests bind port 0 and read the real addresses back.
//!
//! - [`options`]: the command line translated into what is built, with the cross-flag rules;
//! - [`stack`]: the services and the one middleware stack;
//! - [`servers`]: the server handles, shutdown, the metrics and emulator-front servers;
//! - [`connections`]: the gRPC port's accepted connections, their cap and timers;
//! - [`tls`]: TLS files for the gRPC port.

pub mod connections;
pub mod options;
mod servers;
mod stack;
mod tls;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use aws_credential_types::provider::SharedCredentialsProvider;
use tokio::net::TcpListener;

pub use options::{
    EmulatorOptions, GatewayOptions, Http2Settings, UpstreamChoice, WatchedFilePath,
};
pub use servers::{Server, ShutdownSignal};
pub use tls::TlsFiles;

use crate::{
    artifacts::{ArtifactSettings, Artifacts},
    auth::{
        ClientTokens, TokenStore,
        watched_file::{FileContent, WatchedFile},
    },
    aws::AwsUpstream,
    config::{EmulatorArgs, ServeArgs},
    emulator::{Emulator, s3::StoreConfig},
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

/// The region of the in-process emulator (`serve --upstream emulator`): what its artifact store
/// checks signatures for.
const EMULATOR_REGION: &str = "us-east-1";

/// The gateway of `codepipeline-gateway serve`, listening.
pub struct App {
    grpc: Server,
    metrics_server: Server,
    metrics: Arc<Metrics>,
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
        let s3_store = match &emulator {
            Some(emulator) => Some(start_emulator_store(args.emulator_s3_listen, emulator).await?),
            None => None,
        };
        let artifact_settings = artifact_settings(&options, s3_store.as_ref());
        let artifacts = Arc::new(Artifacts::new(&sdk_config, &artifact_settings));
        let grpc_listener = bind(args.grpc_listen(), "gRPC").await?;
        let shared = stack::Shared {
            upstream,
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
            upstream = if self.emulator.is_some() { "emulator" } else { "aws" },
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

/// The emulator of `codepipeline-gateway emulator`: its AWS wire-protocol front and its
/// S3-compatible artifact store, listening.
pub struct EmulatorApp {
    front: Server,
    s3_store: Server,
    emulator: Arc<Emulator>,
}

impl EmulatorApp {
    /// Builds the emulator `args` describe and starts listening.
    pub async fn build(args: EmulatorArgs) -> anyhow::Result<Self> {
        let options = EmulatorOptions::from_args(&args);
        let emulator = Arc::new(Emulator::new(options.config));
        emulator.seed_demo(options.demo_jobs);
        let listener = bind(args.listen, "the emulator").await?;
        let s3_listener = bind(args.s3_listen(), "the emulator's artifact store").await?;
        let front = servers::start_emulator_front(listener, emulator.clone(), options.front)?;
        let s3_store = servers::start_s3_store(s3_listener, emulator.clone(), options.store)?;
        Ok(Self {
            front,
            s3_store,
            emulator,
        })
    }

    /// The front's address.
    pub fn addr(&self) -> SocketAddr {
        self.front.local_addr()
    }

    /// The artifact store's address: the S3 endpoint (path-style) of the jobs' artifacts.
    pub fn s3_addr(&self) -> SocketAddr {
        self.s3_store.local_addr()
    }

    /// The emulator behind the front.
    pub fn emulator(&self) -> &Arc<Emulator> {
        &self.emulator
    }

    /// Says where it listens and serves until `signal`.
    pub async fn run_until(self, signal: ShutdownSignal) -> anyhow::Result<()> {
        let addr = self.addr();
        let s3_addr = self.s3_addr();
        servers::announce("s3 store listening on", format!("http://{s3_addr}"));
        servers::announce("emulator listening on", format!("http://{addr}"));
        tracing::info!(%addr, %s3_addr, "emulator serving");
        let result = self
            .front
            .serve_until_signal(signal, Duration::from_secs(5))
            .await;
        self.s3_store
            .shutdown_within(Duration::from_secs(5))
            .await?;
        result
    }

    /// Stops the front and the artifact store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let result = self.front.shutdown().await;
        self.s3_store.shutdown().await?;
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
                    emulator: None,
                    sdk_config,
                }
            }
            UpstreamChoice::Emulator { config, demo_jobs } => {
                let emulator = Arc::new(Emulator::new(config.clone()));
                emulator.seed_demo(*demo_jobs);
                // The artifact store's S3 client signs for the emulator's region.
                let sdk_config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(aws_config::Region::new(EMULATOR_REGION))
                    .load()
                    .await;
                Self {
                    upstream: Some(emulator.clone() as Arc<dyn Upstream>),
                    emulator: Some(emulator),
                    sdk_config,
                }
            }
        })
    }
}

/// The in-process emulator's artifact store, listening on `addr`.
async fn start_emulator_store(
    addr: SocketAddr,
    emulator: &Arc<Emulator>,
) -> anyhow::Result<Server> {
    let listener = bind(addr, "the emulator's artifact store").await?;
    let config = StoreConfig {
        region: EMULATOR_REGION.to_owned(),
    };
    servers::start_s3_store(listener, emulator.clone(), config)
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
