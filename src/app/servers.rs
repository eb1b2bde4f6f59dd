//! The servers the app runs and how they stop: the [`Server`] handle of each, the shutdown
//! signal and the metrics HTTP server.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use crate::observability::Metrics;

/// A running server: its address, and the way to stop it.
pub struct Server {
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// A server running as `task` on `local_addr`, stopped by `shutdown`.
    pub(super) fn new(
        local_addr: SocketAddr,
        shutdown: oneshot::Sender<()>,
        task: JoinHandle<anyhow::Result<()>>,
    ) -> Self {
        Self {
            local_addr,
            shutdown: Some(shutdown),
            task,
        }
    }

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

/// Serves the metrics registry as Prometheus text at `GET /metrics`.
pub(super) fn start_metrics_server(
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
    Ok(Server::new(local_addr, shutdown, task))
}

/// Prints the one line that tells a supervising process (or a person) where the server is.
pub(super) fn announce(what: &str, addr: impl std::fmt::Display) {
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
