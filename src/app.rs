//! Builds and runs the servers: the gRPC gateway (job-worker service, health, reflection, and
//! the emulator's admin service in emulator mode) behind its middleware stack, the metrics
//! endpoint, and the emulator's HTTP front. Shared by `main` and the tests, which bind port 0 and
//! read the real address from the [`Server`].

use std::{net::SocketAddr, num::NonZeroU32, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::{
    config::{EmulatorArgs, ServeArgs, UpstreamKind},
    metrics::Metrics,
    middleware::{
        GateLayer,
        auth::{Authenticator, Rate, TokenStore},
        deadline::DeadlineReader,
        grpc_only::GrpcOnlyLayer,
        overload::{LoadShedLayer, MessageSizeLayer},
        panic::CatchPanicLayer,
        rate_limit::{RateLimiter, UpstreamBudget},
        telemetry::TelemetryLayer,
    },
    pb::{self, jobworker::job_worker_service_server::JobWorkerServiceServer},
    service::JobWorker,
    upstream::{
        Upstream,
        aws::AwsUpstream,
        emulator::{
            Emulator,
            admin::AdminService,
            http::{self, FrontConfig, StaticCredentials},
        },
    },
};

/// A running server: its address, and the way to stop it.
pub struct Server {
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops taking calls, lets in-flight calls finish, and waits for the server to end.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            // The server may have ended already; then there is nothing to tell.
            let _ = shutdown.send(());
        }
        (&mut self.task).await.context("server task panicked")?
    }

    /// Serves until `signal` arrives, then shuts down within `deadline`; returns at once with
    /// the error if the server fails first.
    pub async fn serve_until_signal(
        mut self,
        mut signal: ShutdownSignal,
        deadline: Duration,
    ) -> anyhow::Result<()> {
        tokio::select! {
            () = signal.received() => {}
            ended = &mut self.task => {
                return ended.context("server task panicked")?.and_then(|()| {
                    anyhow::bail!("the server stopped unexpectedly")
                });
            }
        }
        tracing::info!("shutting down: health is NOT_SERVING");
        self.shutdown_within(deadline).await
    }

    /// Like [`Self::shutdown`], but gives up after `deadline`: calls still running then are cut.
    pub async fn shutdown_within(self, deadline: Duration) -> anyhow::Result<()> {
        tokio::time::timeout(deadline, self.shutdown())
            .await
            .unwrap_or_else(|_| {
                tracing::warn!(
                    ?deadline,
                    "in-flight calls did not finish in time; stopping anyway"
                );
                Ok(())
            })
    }
}

/// TLS files for the gRPC port.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle verifying client certificates (mTLS), if any.
    pub client_ca: Option<PathBuf>,
}

/// How the gateway serves: auth, limits, connection management, shutdown.
#[derive(Clone)]
pub struct GatewayOptions {
    /// The token file in force, if any.
    pub tokens: Option<Arc<TokenStore>>,
    /// TLS (and mTLS) on the gRPC port.
    pub tls: Option<TlsFiles>,
    /// Whether reflection needs credentials.
    pub reflection_requires_auth: bool,
    /// Each client's default rate.
    pub client_rate: Rate,
    /// The account-wide budget per upstream operation.
    pub upstream_rate: Option<Rate>,
    /// Calls handled at once over all connections.
    pub max_concurrent_calls: usize,
    /// Largest request message, in bytes.
    pub max_message_size: usize,
    /// HTTP/2 keepalive ping interval and timeout.
    pub http2_keepalive: (Duration, Duration),
    /// Connection age limit and its grace period.
    pub max_connection_age: (Duration, Duration),
    /// After shutdown starts, how long health says NOT_SERVING before the listener closes.
    pub lame_duck: Duration,
    /// The metrics every layer records into.
    pub metrics: Arc<Metrics>,
}

impl Default for GatewayOptions {
    /// An open gateway (no auth, no TLS) with the command line's default limits.
    fn default() -> Self {
        let rate = |n| NonZeroU32::new(n).expect("non-zero");
        Self {
            tokens: None,
            tls: None,
            reflection_requires_auth: false,
            client_rate: Rate {
                per_second: rate(50),
                burst: rate(100),
            },
            upstream_rate: None,
            max_concurrent_calls: 1024,
            max_message_size: 4 * 1024 * 1024,
            http2_keepalive: (Duration::from_secs(30), Duration::from_secs(10)),
            max_connection_age: (Duration::from_secs(300), Duration::from_secs(30)),
            lame_duck: Duration::ZERO,
            metrics: Metrics::new(),
        }
    }
}

fn tls_config(files: &TlsFiles, tokens_too: bool) -> anyhow::Result<ServerTlsConfig> {
    let read = |path: &PathBuf| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let mut config =
        ServerTlsConfig::new().identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?));
    if let Some(ca) = &files.client_ca {
        config = config
            .client_ca_root(Certificate::from_pem(read(ca)?))
            // With a token file as well, a client may prove itself either way.
            .client_auth_optional(tokens_too);
    }
    Ok(config)
}

/// Starts the gRPC gateway on `listener`, forwarding to `upstream`. With `admin`, the emulator's
/// admin service is served too (emulator mode only).
pub async fn start_gateway(
    listener: TcpListener,
    upstream: Arc<dyn Upstream>,
    admin: Option<Arc<Emulator>>,
    options: GatewayOptions,
) -> anyhow::Result<Server> {
    let local_addr = listener.local_addr()?;
    let metrics = options.metrics.clone();
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<JobWorkerServiceServer<JobWorker>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let authenticator = Authenticator::new(
        options.tokens.clone(),
        options
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_ca.is_some()),
        options.reflection_requires_auth,
        metrics.clone(),
    );
    let rate_limiter = RateLimiter::new(options.client_rate, metrics.clone());
    let upstream_budget = UpstreamBudget::new(options.upstream_rate, metrics.clone());
    let (keepalive_interval, keepalive_timeout) = options.http2_keepalive;
    let (max_age, max_age_grace) = options.max_connection_age;
    let mut server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(keepalive_interval))
        .http2_keepalive_timeout(Some(keepalive_timeout))
        .max_connection_age(max_age)
        .max_connection_age_grace(max_age_grace);
    if let Some(tls) = &options.tls {
        server = server.tls_config(tls_config(tls, options.tokens.is_some())?)?;
    }
    // The one place the middleware stack is built, outermost first. tonic applies it once and
    // shares it by every connection, so the limits and token sets inside are gateway-wide.
    let mut server = server
        // Every call is counted and traced, whatever layer below answers it.
        .layer(TelemetryLayer::new(metrics.clone()))
        // Requests that are not gRPC (another method or content-type) get a plain HTTP refusal.
        .layer(GrpcOnlyLayer)
        // Refuse what the gateway cannot take before spending anything on it.
        .layer(LoadShedLayer::new(
            options.max_concurrent_calls,
            metrics.clone(),
        ))
        // Who is calling, and may they call this method; health (and reflection) pass.
        .layer(GateLayer::new(Arc::new(authenticator)))
        // Per-client rates, keyed by the identity auth established. (The per-operation upstream
        // budget is charged by the handler, once the call is known to be valid.)
        .layer(GateLayer::new(Arc::new(rate_limiter)))
        // The caller's deadline, which handlers bound their upstream call with.
        .layer(GateLayer::new(Arc::new(DeadlineReader)))
        // Oversized request messages are refused from their frame header, before buffering.
        .layer(MessageSizeLayer::new(options.max_message_size))
        // A panicking handler answers INTERNAL; the connection and the server go on.
        .layer(CatchPanicLayer);

    let job_worker = JobWorker::new(upstream, Arc::new(upstream_budget), metrics.clone())
        .into_server()
        .max_decoding_message_size(options.max_message_size);
    let admin = admin.map(|emulator| {
        AdminService::new(emulator)
            .into_server()
            .max_decoding_message_size(options.max_message_size)
    });
    let router = server
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(job_worker)
        .add_optional_service(admin);

    let (shutdown, shutdown_requested) = oneshot::channel::<()>();
    let lame_duck = options.lame_duck;
    let stop_serving = async move {
        // Sender dropped or signalled: either way, stop.
        let _ = shutdown_requested.await;
        // Probes see NOT_SERVING first; calls are still taken during the lame-duck period,
        // while load balancers stop sending new ones.
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        health
            .set_not_serving::<JobWorkerServiceServer<JobWorker>>()
            .await;
        tokio::time::sleep(lame_duck).await;
        tracing::info!("listener closing; draining in-flight calls");
    };
    let task = tokio::spawn(async move {
        router
            // Small gRPC frames must not wait for Nagle's algorithm.
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                stop_serving,
            )
            .await
            .context("gRPC server failed")
    });
    Ok(Server {
        local_addr,
        shutdown: Some(shutdown),
        task,
    })
}

/// Serves the metrics registry as Prometheus text at `GET /metrics`.
pub async fn start_metrics_server(
    listener: TcpListener,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Server> {
    use axum::{Router, http::header, routing::get};
    let local_addr = listener.local_addr()?;
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    serve_axum(listener, router, local_addr)
}

/// Starts the emulator's awsJson1_1 HTTP front (with the admin service on the same port). Its
/// connections are served by hyper directly, so an injected `drop` fault can close one without
/// an answer, as a failing network would.
pub async fn start_emulator_front(
    listener: TcpListener,
    emulator: Arc<Emulator>,
    config: FrontConfig,
) -> anyhow::Result<Server> {
    use hyper_util::{
        rt::{TokioExecutor, TokioIo},
        server::{conn::auto, graceful::GracefulShutdown},
    };
    use tower::ServiceExt;

    let local_addr = listener.local_addr()?;
    let router = http::router(emulator, config);
    let service =
        hyper::service::service_fn(move |request: axum::http::Request<hyper::body::Incoming>| {
            let router = router.clone();
            async move {
                let response = router
                    .oneshot(request)
                    .await
                    .unwrap_or_else(|never| match never {});
                if response
                    .extensions()
                    .get::<http::DropConnection>()
                    .is_some()
                {
                    // An error instead of a response makes hyper close the connection unanswered.
                    return Err(http::DropConnection);
                }
                Ok(response)
            }
        });
    let (shutdown, mut shutdown_requested) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let connections = GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _)) => stream,
                        Err(error) => {
                            // Out of file descriptors, say: wait instead of spinning.
                            tracing::warn!(%error, "accepting a connection failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // Small answers must not wait for Nagle's algorithm.
                    let _ = stream.set_nodelay(true);
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service.clone())
                        .into_owned();
                    let connection = connections.watch(connection);
                    tokio::spawn(async move {
                        // A failed connection (a client gone, an injected drop) ends only itself.
                        let _ = connection.await;
                    });
                }
                _ = &mut shutdown_requested => break,
            }
        }
        connections.shutdown().await;
        Ok(())
    });
    Ok(Server {
        local_addr,
        shutdown: Some(shutdown),
        task,
    })
}

fn serve_axum(
    listener: TcpListener,
    router: axum::Router,
    local_addr: SocketAddr,
) -> anyhow::Result<Server> {
    let (shutdown, shutdown_requested) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = shutdown_requested.await;
            })
            .await
            .context("HTTP server failed")
    });
    Ok(Server {
        local_addr,
        shutdown: Some(shutdown),
        task,
    })
}

/// The gateway options the command line describes; loads the token file.
fn gateway_options(args: &ServeArgs, metrics: Arc<Metrics>) -> anyhow::Result<GatewayOptions> {
    let auth = &args.auth;
    let tls = auth
        .tls_cert
        .clone()
        .zip(auth.tls_key.clone())
        .map(|(cert, key)| TlsFiles {
            cert,
            key,
            client_ca: auth.tls_client_ca.clone(),
        });
    let authenticates = auth.token_file.is_some() || auth.tls_client_ca.is_some();
    if args.upstream == UpstreamKind::Aws && !authenticates && !auth.allow_unauthenticated {
        bail!(
            "refusing to forward to AWS without authenticating callers: give --token-file or \
             --tls-client-ca, or --allow-unauthenticated to serve openly"
        );
    }
    let tokens = auth
        .token_file
        .as_deref()
        .map(|path| TokenStore::load(path, metrics.clone()))
        .transpose()?;
    if let Some(tokens) = &tokens {
        tokens.watch(auth.token_file_poll_interval);
    }
    let limits = &args.limits;
    Ok(GatewayOptions {
        tokens,
        tls,
        reflection_requires_auth: auth.reflection_requires_auth,
        client_rate: Rate {
            per_second: limits.rate_limit_per_second,
            burst: limits.rate_limit_burst,
        },
        upstream_rate: limits
            .upstream_rate_limit_per_second
            .map(|per_second| Rate {
                per_second,
                burst: limits.upstream_rate_limit_burst.unwrap_or(per_second),
            }),
        max_concurrent_calls: limits.max_concurrent_calls as usize,
        max_message_size: limits.max_message_size as usize,
        http2_keepalive: (
            limits.http2_keepalive_interval,
            limits.http2_keepalive_timeout,
        ),
        max_connection_age: (limits.max_connection_age, limits.max_connection_age_grace),
        lame_duck: args.lame_duck,
        metrics,
    })
}

/// `codepipeline-gateway serve`.
pub async fn run_gateway(args: ServeArgs) -> anyhow::Result<()> {
    let signal = ShutdownSignal::install()?;
    let metrics = Metrics::new();
    let options = gateway_options(&args, metrics.clone())?;
    let (upstream, admin): (Arc<dyn Upstream>, Option<Arc<Emulator>>) = match args.upstream {
        UpstreamKind::Aws => {
            let upstream = AwsUpstream::load(&args.aws.sdk_settings(), None).await?;
            (Arc::new(upstream), None)
        }
        UpstreamKind::Emulator => {
            let emulator = Arc::new(Emulator::new(args.engine.emulator_config()));
            emulator.seed_demo(args.engine.demo_jobs);
            (emulator.clone(), Some(emulator))
        }
    };
    let metrics_listener = TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {} for metrics", args.metrics_listen))?;
    let metrics_server = start_metrics_server(metrics_listener, metrics).await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let server = start_gateway(listener, upstream, admin, options).await?;
    announce("metrics listening on", metrics_server.local_addr());
    announce("grpc listening on", server.local_addr());
    tracing::info!(
        addr = %server.local_addr(),
        metrics = %metrics_server.local_addr(),
        upstream = ?args.upstream,
        "gateway serving"
    );
    // The lame-duck period runs inside the server's shutdown, before the drain deadline starts.
    let result = server
        .serve_until_signal(signal, args.lame_duck + args.shutdown_timeout)
        .await;
    metrics_server
        .shutdown_within(Duration::from_secs(1))
        .await?;
    result
}

/// `codepipeline-gateway emulator`.
pub async fn run_emulator(args: EmulatorArgs) -> anyhow::Result<()> {
    let signal = ShutdownSignal::install()?;
    let emulator = Arc::new(Emulator::new(args.engine.emulator_config()));
    emulator.seed_demo(args.engine.demo_jobs);
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let config = FrontConfig {
        credentials: StaticCredentials {
            access_key_id: args.access_key_id,
            secret_access_key: args.secret_access_key,
        },
        region: args.region,
    };
    let server = start_emulator_front(listener, emulator, config).await?;
    let addr = server.local_addr();
    announce("emulator listening on", format!("http://{addr}"));
    tracing::info!(%addr, "emulator serving");
    server
        .serve_until_signal(signal, Duration::from_secs(5))
        .await
}

/// Prints the one line that tells a supervising process (or a person) where the server is.
fn announce(what: &str, addr: impl std::fmt::Display) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    // If stdout is gone nobody is listening for the line; serving matters more.
    let _ = writeln!(stdout, "{what} {addr}");
    let _ = stdout.flush();
}

/// SIGTERM (what Kubernetes sends) or Ctrl-C, listened for from the moment it is installed.
///
/// Installed before the process says it is listening: a supervisor that stops the process as
/// soon as it is ready must get a graceful shutdown, not the signal's default action.
pub struct ShutdownSignal {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    /// Starts listening for the signals.
    pub fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
                interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Resolves when one of the signals arrives.
    pub async fn received(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => {}
                _ = self.interrupt.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            // Without a handler Ctrl-C ends the process anyway; waiting on it is the best effort.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
