//! The gRPC gateway as served: the services, the middleware stack in front of them (built here,
//! one line per layer, with the reason for its place), the HTTP/2 settings, and health turning
//! NOT_SERVING when shutdown starts.

use std::{sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::oneshot};
use tokio_util::sync::CancellationToken;
use tonic::{body::Body, service::Routes};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower_http::{
    catch_panic::CatchPanicLayer, map_response_body::MapResponseBodyLayer,
    validate_request::ValidateRequestHeaderLayer,
};

use super::{GatewayOptions, Server, connections};
use crate::{
    artifacts::Artifacts,
    auth::{Authenticator, ClientTokens, TokenStore},
    feed::{FeedCharges, Feeds},
    limits::{
        ArtifactMemory, ClientConcurrency, ClientLimits, LimitClock, RateLimits, SharedRates,
        UpstreamBudget,
    },
    middleware::{
        authenticate::Authenticate, client_concurrency::ClientConcurrencyLayer,
        deadline::DeadlineLayer, grpc_only::GrpcOnly, instrument::InstrumentLayer,
        load_shed::LoadShedLayer, message_size::MessageSizeLayer, panic,
        rate_limit::RateLimitLayer,
    },
    observability::{
        Metrics,
        metrics::{RateLimitBackend, RateLimitBackendLabels},
    },
    pb::{
        self,
        jobworker::{
            artifact_service_server::ArtifactServiceServer,
            job_worker_service_server::JobWorkerServiceServer,
            third_party_job_worker_service_server::ThirdPartyJobWorkerServiceServer,
        },
    },
    service::{JobWorker, StreamLimits},
    upstream::Upstream,
};
#[cfg(feature = "emulator")]
use crate::{
    emulator::{Emulator, admin::AdminService},
    middleware::audit_admin::Audited,
};

/// What the gateway's layers and handlers share, made once for the whole process.
pub(super) struct Shared {
    /// Where calls go.
    pub upstream: Arc<dyn Upstream>,
    /// The emulator whose admin service is served too (emulator mode only).
    #[cfg(feature = "emulator")]
    pub admin: Option<Arc<Emulator>>,
    /// The token file in force, if any.
    pub tokens: Option<Arc<TokenStore>>,
    /// The client tokens the gateway holds for third-party workers.
    pub client_tokens: Arc<ClientTokens>,
    /// The artifact store.
    pub artifacts: Arc<Artifacts>,
    /// The registry every layer records into.
    pub metrics: Arc<Metrics>,
    /// The limiters' clock.
    pub clock: LimitClock,
}

/// Starts the gRPC gateway on `listener`.
pub(super) async fn start_gateway(
    listener: TcpListener,
    options: &GatewayOptions,
    shared: Shared,
) -> anyhow::Result<Server> {
    let local_addr = listener.local_addr()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    report_serving(&health).await;
    let introspection = Routes::new(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?);

    let metrics = shared.metrics.clone();
    let authenticator = authenticator(options, shared.tokens.clone(), &metrics);
    let limits = EdgeLimits::new(options, shared.clock.clone(), &metrics)?;
    let server = http2_server(options, shared.tokens.is_some())?;
    // The one place the middleware stack is built, outermost first. It is applied to each
    // connection's services; the limits and token sets inside are behind `Arc`s, so they are
    // gateway-wide.
    let mut server = server
        // Every call is resolved (method, deadline), counted and traced, whatever layer below
        // answers it.
        .layer(InstrumentLayer::new(
            metrics.clone(),
            options.default_deadline,
        ))
        // Requests that are not gRPC (another method or content-type) get a plain HTTP refusal.
        .layer(ValidateRequestHeaderLayer::custom(GrpcOnly))
        // Refuse what the gateway cannot take before spending anything on it.
        .layer(LoadShedLayer::new(
            options.max_concurrent_calls,
            metrics.clone(),
        ))
        // Who is calling, and may they call this method; health (and reflection) pass.
        .layer(ValidateRequestHeaderLayer::custom(Authenticate::new(
            Arc::new(authenticator),
        )))
        // Each client's calls in flight, so one client cannot fill the limit above for all.
        .layer(ClientConcurrencyLayer::new(
            limits.client_concurrency.clone(),
        ))
        // Per-client rates, keyed by the identity auth established. (The per-operation upstream
        // budget is spent by the handler, once the call is known to be valid.)
        .layer(RateLimitLayer::new(limits.client.clone()))
        // A call unanswered at its deadline (its body never came, say) answers DEADLINE_EXCEEDED.
        .layer(DeadlineLayer)
        // Oversized request messages are refused from their frame header, before buffering.
        .layer(MessageSizeLayer::new(options.max_message_size))
        // The panic guard answers with a boxed body of its own; the layers above take tonic's.
        .layer(MapResponseBodyLayer::new(Body::new))
        // A panicking handler answers INTERNAL; the connection and the server go on.
        .layer(CatchPanicLayer::custom(panic::internal_error));

    let draining = CancellationToken::new();
    #[cfg(feature = "emulator")]
    let admin = shared.admin.clone();
    let job_worker = job_worker(options, shared, limits, &draining);
    let routes = with_job_worker(introspection, job_worker, options.max_message_size);
    #[cfg(feature = "emulator")]
    let routes = with_emulator_admin(routes, admin, options.max_message_size);
    let router = server.add_routes(routes);

    let (shutdown, shutdown_requested) = oneshot::channel::<()>();
    let stop_serving = stop_serving(shutdown_requested, health, options.lame_duck, draining);
    let incoming = connections::incoming(listener, options.connections, metrics.clone());
    let task = tokio::spawn(serve_connections(router, incoming, stop_serving, metrics));
    Ok(Server::new(local_addr, shutdown, task))
}

/// The handlers of the job-worker services, spending `limits` and ending their streams when
/// `draining` is cancelled.
fn job_worker(
    options: &GatewayOptions,
    shared: Shared,
    limits: EdgeLimits,
    draining: &CancellationToken,
) -> JobWorker {
    let Shared {
        upstream,
        client_tokens,
        artifacts,
        metrics,
        ..
    } = shared;
    JobWorker {
        feeds: Feeds::new(
            options.feed,
            upstream.clone(),
            FeedCharges {
                budget: limits.upstream_budget.clone(),
                client_limits: limits.client.clone(),
            },
            metrics.clone(),
            draining.clone(),
        ),
        upstream,
        client_tokens,
        artifacts,
        budget: limits.upstream_budget,
        streams: stream_limits(options, &metrics),
        metrics,
        client_limits: limits.client,
        draining: draining.clone(),
        default_deadline: options.default_deadline,
        retries: options.retries,
        job_owners: Arc::default(),
        artifact_memory: Arc::new(ArtifactMemory::new(
            options.artifact_memory.gateway,
            options.artifact_memory.per_client,
        )),
    }
}

/// Marks the job-worker services SERVING.
async fn report_serving(health: &HealthReporter) {
    health
        .set_serving::<JobWorkerServiceServer<JobWorker>>()
        .await;
    health
        .set_serving::<ThirdPartyJobWorkerServiceServer<JobWorker>>()
        .await;
    health
        .set_serving::<ArtifactServiceServer<JobWorker>>()
        .await;
}

/// Reflection over the gateway's services and health.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Who may call what: the token file (if any), client certificates when TLS asks for them.
fn authenticator(
    options: &GatewayOptions,
    tokens: Option<Arc<TokenStore>>,
    metrics: &Arc<Metrics>,
) -> Authenticator {
    Authenticator::new(
        tokens,
        options
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_ca.is_some()),
        options.reflection_requires_auth,
        metrics.clone(),
    )
}

/// The limits of the edge and the handlers, over one set of rate limiters (in this process, or
/// shared through Redis).
struct EdgeLimits {
    /// Each client's rate.
    client: Arc<ClientLimits>,
    /// Each client's calls in flight.
    client_concurrency: Arc<ClientConcurrency>,
    /// Each upstream operation's budget.
    upstream_budget: Arc<UpstreamBudget>,
}

impl EdgeLimits {
    fn new(
        options: &GatewayOptions,
        clock: LimitClock,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let rates = Arc::new(match &options.shared_rates {
            None => RateLimits::local(clock, metrics.clone()),
            Some(config) => RateLimits::shared(
                SharedRates::connect(config.clone(), metrics.clone())?,
                clock,
                metrics.clone(),
            ),
        });
        let backend = if options.shared_rates.is_some() {
            RateLimitBackend::Redis
        } else {
            metrics.rate_limit_backend_up.set(1);
            RateLimitBackend::Memory
        };
        metrics
            .rate_limit_backend
            .get_or_create(&RateLimitBackendLabels { backend })
            .set(1);
        let client = Arc::new(ClientLimits::new(options.client_rate, rates.clone()));
        let upstream_budget = UpstreamBudget::new(options.upstream_rate, rates);
        let client_concurrency =
            ClientConcurrency::new(options.max_concurrent_calls_per_client, metrics.clone());
        Ok(Self {
            client,
            client_concurrency: Arc::new(client_concurrency),
            upstream_budget: Arc::new(upstream_budget),
        })
    }
}

/// The tonic server with the gateway's HTTP/2 settings, and TLS when configured.
fn http2_server(
    options: &GatewayOptions,
    has_token_file: bool,
) -> anyhow::Result<tonic::transport::Server> {
    let keepalive = options.http2_keepalive;
    let http2 = options.http2;
    // No max_connection_age here: tonic 0.14, given an age and a grace, says nothing at the age
    // and resets the connection at age + grace. Each connection's age is its own, and its
    // GOAWAY comes from `serve_connections`.
    let mut server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(keepalive.interval))
        .http2_keepalive_timeout(Some(keepalive.timeout))
        .max_concurrent_streams(http2.max_concurrent_streams)
        .http2_max_local_error_reset_streams(Some(http2.max_local_error_reset_streams))
        .http2_max_pending_accept_reset_streams(Some(http2.max_pending_accept_reset_streams))
        .http2_max_header_list_size(http2.max_header_list_size);
    if let Some(tls) = &options.tls {
        server = server.tls_config(tls.server_config(has_token_file)?)?;
    }
    Ok(server)
}

/// How many job streams may be open: on the gateway, and per client.
fn stream_limits(options: &GatewayOptions, metrics: &Arc<Metrics>) -> Arc<StreamLimits> {
    let job_streams = options.job_streams;
    Arc::new(StreamLimits::new(
        job_streams.gateway,
        ClientConcurrency::new(job_streams.per_client, metrics.clone()),
    ))
}

/// `routes` and the job-worker services, each taking messages up to `max_message_size`.
fn with_job_worker(routes: Routes, job_worker: JobWorker, max_message_size: usize) -> Routes {
    let third_party_job_worker = job_worker
        .clone()
        .into_third_party_server()
        .max_decoding_message_size(max_message_size);
    let artifact_service = job_worker
        .clone()
        .into_artifact_server()
        .max_decoding_message_size(max_message_size);
    let job_worker = job_worker
        .into_server()
        .max_decoding_message_size(max_message_size);
    routes
        .add_service(job_worker)
        .add_service(third_party_job_worker)
        .add_service(artifact_service)
}

/// `routes` and, in emulator mode, the emulator's admin service (audited), taking messages up
/// to `max_message_size`.
#[cfg(feature = "emulator")]
fn with_emulator_admin(
    routes: Routes,
    admin: Option<Arc<Emulator>>,
    max_message_size: usize,
) -> Routes {
    match admin {
        Some(emulator) => routes.add_service(Audited::new(
            AdminService::new(emulator)
                .into_server()
                .max_decoding_message_size(max_message_size),
        )),
        None => routes,
    }
}

/// Waits for shutdown to be requested, then has probes see NOT_SERVING while calls are still
/// taken during the lame-duck period (load balancers stop sending new ones); then ends the job
/// streams. The listener closes when this resolves.
async fn stop_serving(
    shutdown_requested: oneshot::Receiver<()>,
    health: HealthReporter,
    lame_duck: Duration,
    draining: CancellationToken,
) {
    // Sender dropped or signalled: either way, stop.
    let _ = shutdown_requested.await;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health
        .set_not_serving::<JobWorkerServiceServer<JobWorker>>()
        .await;
    health
        .set_not_serving::<ThirdPartyJobWorkerServiceServer<JobWorker>>()
        .await;
    health
        .set_not_serving::<ArtifactServiceServer<JobWorker>>()
        .await;
    tokio::time::sleep(lame_duck).await;
    tracing::info!("listener closing; draining in-flight calls, ending job streams");
    draining.cancel();
}

/// Serves each accepted connection on its own, so that each can say GOAWAY at its own maximum
/// age, and every one does when `stop_serving` resolves; then waits for them all to close.
/// (The grace after the age is the connection's own timer: see [`connections`].)
async fn serve_connections<L>(
    router: tonic::transport::server::Router<L>,
    incoming: impl futures_util::Stream<Item = std::io::Result<connections::Connection>>,
    stop_serving: impl Future<Output = ()>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()>
where
    tonic::transport::server::Router<L>: Clone + Send + 'static,
    L: Send + 'static,
    L: tower::Layer<tonic::service::Routes>,
    L::Service: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<http::Request<Body>>>::Future: Send + 'static,
    <L::Service as tower::Service<http::Request<Body>>>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    use futures_util::StreamExt;
    let closing = CancellationToken::new();
    let served = tokio_util::task::TaskTracker::new();
    // Boxed, not pinned on the stack, so that dropping it closes the listener.
    let mut incoming = Box::pin(incoming);
    tokio::pin!(stop_serving);
    loop {
        let connection = tokio::select! {
            () = &mut stop_serving => break,
            connection = incoming.next() => match connection {
                Some(Ok(connection)) => connection,
                // Accept failures are waited out inside the stream; it never ends.
                Some(Err(_)) | None => continue,
            },
        };
        let ages_at = connection.ages_at();
        let closing = closing.clone();
        let metrics = metrics.clone();
        let goaway = async move {
            tokio::select! {
                () = tokio::time::sleep_until(ages_at.into()) => {
                    metrics.connections_aged.inc();
                }
                () = closing.cancelled() => {}
            }
        };
        // One connection, and a stream that never ends after it: tonic takes the end of its
        // incoming stream for a shutdown.
        let incoming =
            futures_util::stream::once(std::future::ready(Ok::<_, std::io::Error>(connection)))
                .chain(futures_util::stream::pending());
        let router = router.clone();
        served.spawn(async move {
            if let Err(error) = router.serve_with_incoming_shutdown(incoming, goaway).await {
                tracing::debug!(error = %crate::api::status::cause_chain(&error), "a connection failed");
            }
        });
    }
    // The listener closes with `incoming`; every connection says GOAWAY and drains.
    drop(incoming);
    closing.cancel();
    served.close();
    served.wait().await;
    Ok(())
}
