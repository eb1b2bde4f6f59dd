//! Builds and runs the servers: the gRPC gateway (job-worker service, health, reflection, and
//! the emulator's admin service in emulator mode) and the emulator's HTTP front. Shared by
//! `main` and the tests, which bind port 0 and read the real address from the [`Server`].

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

use crate::{
    config::{EmulatorArgs, ServeArgs, UpstreamKind},
    pb,
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

/// Starts the gRPC gateway on `listener`, forwarding to `upstream`. With `admin`, the emulator's
/// admin service is served too (emulator mode only).
pub async fn start_gateway(
    listener: TcpListener,
    upstream: Arc<dyn Upstream>,
    admin: Option<Arc<Emulator>>,
) -> anyhow::Result<Server> {
    let local_addr = listener.local_addr()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::jobworker::job_worker_service_server::JobWorkerServiceServer<JobWorker>>(
        )
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(JobWorker::new(upstream).into_server())
        .add_optional_service(admin.map(|emulator| AdminService::new(emulator).into_server()));

    let (shutdown, shutdown_requested) = oneshot::channel::<()>();
    let stop_serving = async move {
        // Sender dropped or signalled: either way, stop.
        let _ = shutdown_requested.await;
        // Probes see NOT_SERVING while in-flight calls drain.
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        health
            .set_not_serving::<pb::jobworker::job_worker_service_server::JobWorkerServiceServer<JobWorker>>()
            .await;
    };
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop_serving)
            .await
            .context("gRPC server failed")
    });
    Ok(Server {
        local_addr,
        shutdown: Some(shutdown),
        task,
    })
}

/// Starts the emulator's awsJson1_1 HTTP front (with the admin service on the same port).
pub async fn start_emulator_front(
    listener: TcpListener,
    emulator: Arc<Emulator>,
    config: FrontConfig,
) -> anyhow::Result<Server> {
    let local_addr = listener.local_addr()?;
    let (shutdown, shutdown_requested) = oneshot::channel::<()>();
    let router = http::router(emulator, config);
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = shutdown_requested.await;
            })
            .await
            .context("emulator HTTP front failed")
    });
    Ok(Server {
        local_addr,
        shutdown: Some(shutdown),
        task,
    })
}

/// `codepipeline-gateway serve`.
pub async fn run_gateway(args: ServeArgs) -> anyhow::Result<()> {
    let (upstream, admin): (Arc<dyn Upstream>, Option<Arc<Emulator>>) = match args.upstream {
        UpstreamKind::Aws => {
            let upstream = AwsUpstream::load(&args.aws.sdk_settings(), None).await;
            (Arc::new(upstream), None)
        }
        UpstreamKind::Emulator => {
            let emulator = Arc::new(Emulator::new(args.engine.emulator_config()));
            emulator.seed_demo(args.engine.demo_jobs);
            (emulator.clone(), Some(emulator))
        }
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let server = start_gateway(listener, upstream, admin).await?;
    announce("grpc listening on", server.local_addr());
    tracing::info!(addr = %server.local_addr(), upstream = ?args.upstream, "gateway serving");
    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight calls");
    server.shutdown_within(args.shutdown_timeout).await
}

/// `codepipeline-gateway emulator`.
pub async fn run_emulator(args: EmulatorArgs) -> anyhow::Result<()> {
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
    shutdown_signal().await;
    server.shutdown_within(Duration::from_secs(5)).await
}

/// Prints the one line that tells a supervising process (or a person) where the server is.
fn announce(what: &str, addr: impl std::fmt::Display) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    // If stdout is gone nobody is listening for the line; serving matters more.
    let _ = writeln!(stdout, "{what} {addr}");
    let _ = stdout.flush();
}

/// Resolves on SIGTERM (what Kubernetes sends) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on Unix");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
