//! The embedded emulator, as the app runs it (only with the default `emulator` feature):
//! [`EmulatorApp`] for the `emulator` subcommand (the AWS wire-protocol front and the
//! S3-compatible artifact store), and the in-process engine and store of
//! `serve --upstream emulator`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::oneshot};

use super::{Configured, bind, options::EmulatorOptions, servers};
use crate::{
    config::EmulatorArgs,
    emulator::{
        Emulator, EmulatorConfig,
        faults::DropConnection,
        front::{self, FrontConfig},
        s3::{Store, StoreConfig},
    },
    upstream::Upstream,
};

use servers::Server;

/// The region of the in-process emulator (`serve --upstream emulator`): what its artifact store
/// checks signatures for.
const EMULATOR_REGION: &str = "us-east-1";

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
        let front = start_front(listener, emulator.clone(), options.front)?;
        let s3_store = start_s3_store(s3_listener, emulator.clone(), options.store)?;
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
    pub async fn run_until(self, signal: servers::ShutdownSignal) -> anyhow::Result<()> {
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

/// The upstream of `serve --upstream emulator`: an engine in this process, seeded with demo
/// jobs, whose artifact store the gateway's S3 client signs for.
pub(super) async fn in_process(config: &EmulatorConfig, demo_jobs: usize) -> Configured {
    let emulator = Arc::new(Emulator::new(config.clone()));
    emulator.seed_demo(demo_jobs);
    let sdk_config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(EMULATOR_REGION))
        .load()
        .await;
    Configured {
        upstream: Some(emulator.clone() as Arc<dyn Upstream>),
        emulator: Some(emulator),
        sdk_config,
    }
}

/// The in-process emulator's artifact store, listening on `addr`.
pub(super) async fn start_in_process_store(
    addr: SocketAddr,
    emulator: &Arc<Emulator>,
) -> anyhow::Result<Server> {
    let listener = bind(addr, "the emulator's artifact store").await?;
    let config = StoreConfig {
        region: EMULATOR_REGION.to_owned(),
    };
    start_s3_store(listener, emulator.clone(), config)
}

/// Starts the emulator's AWS wire-protocol front (with the admin service on the same port).
fn start_front(
    listener: TcpListener,
    emulator: Arc<Emulator>,
    config: FrontConfig,
) -> anyhow::Result<Server> {
    use tower::ServiceExt;
    let router = front::router(emulator, config);
    serve_dropping(listener, move |request| {
        let router = router.clone();
        async move {
            router
                .oneshot(request)
                .await
                .unwrap_or_else(|never| match never {})
        }
    })
}

/// Starts the emulator's S3-compatible artifact store, on a listener of its own.
fn start_s3_store(
    listener: TcpListener,
    emulator: Arc<Emulator>,
    config: StoreConfig,
) -> anyhow::Result<Server> {
    let store = Store::new(emulator, config);
    serve_dropping(listener, move |request| {
        let store = store.clone();
        async move { store.handle(request).await }
    })
}

/// Serves HTTP/1.1 and HTTP/2 connections with `handle`. Its connections are served by hyper
/// directly, so an injected `drop` fault (a response marked [`DropConnection`]) can close one
/// without an answer, as a failing network would.
fn serve_dropping<H, F>(listener: TcpListener, handle: H) -> anyhow::Result<Server>
where
    H: Fn(axum::http::Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = axum::http::Response<axum::body::Body>> + Send + 'static,
{
    use hyper_util::{
        rt::{TokioExecutor, TokioIo},
        server::{conn::auto, graceful::GracefulShutdown},
    };

    let local_addr = listener.local_addr()?;
    let service =
        hyper::service::service_fn(move |request: axum::http::Request<hyper::body::Incoming>| {
            let answer = handle(request);
            async move {
                let response = answer.await;
                if response.extensions().get::<DropConnection>().is_some() {
                    // An error instead of a response makes hyper close the connection unanswered.
                    return Err(DropConnection);
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
    Ok(Server::new(local_addr, shutdown, task))
}
