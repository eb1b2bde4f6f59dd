//! The translation of the command line into what the app builds, with the rules that span
//! several flags (the gateway forwards to AWS only if it authenticates its callers). `main` and
//! the tests both go through here, so a test of a flag is a test of the binary.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};

use super::{
    connections::{ConnectionAge, ConnectionLimits},
    tls::TlsFiles,
};
use crate::{
    artifacts::ArtifactSettings,
    aws::{SdkSettings, WireProtocol},
    config::{
        AuthArgs, AwsArgs, AwsProtocol, FeedArgs, LimitArgs, RateLimitBackend, ServeArgs,
        UpstreamKind,
    },
    feed::{FeedConfig, FeedLimits},
    limits::{Rate, SharedRatesConfig},
    upstream::Retries,
};
#[cfg(feature = "emulator")]
use crate::{
    config::{EmulatorArgs, EngineArgs},
    emulator::{
        EmulatorConfig,
        front::{FrontConfig, StaticCredentials},
        s3::StoreConfig,
        store::StoreLimits,
    },
};

/// A secrets file (the token file, the client-token file) and how often it is checked for
/// changes.
#[derive(Debug, Clone)]
pub struct WatchedFilePath {
    /// The file.
    pub path: PathBuf,
    /// How often it is re-read.
    pub poll_interval: Duration,
}

/// Where the gateway forwards calls.
#[derive(Debug, Clone)]
pub enum UpstreamChoice {
    /// The real API through the AWS SDK.
    Aws(SdkSettings),
    /// The in-process emulator, seeded with demo jobs.
    #[cfg(feature = "emulator")]
    Emulator {
        /// The engine.
        config: EmulatorConfig,
        /// Demo jobs queued at start.
        demo_jobs: usize,
    },
}

impl UpstreamChoice {
    /// What the logs call it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Aws(_) => "aws",
            #[cfg(feature = "emulator")]
            Self::Emulator { .. } => "emulator",
        }
    }
}

/// How the gateway serves: its upstream, auth, limits, connection management, shutdown.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Where calls go.
    pub upstream: UpstreamChoice,
    /// Where artifacts are, and how they move.
    pub artifacts: ArtifactSettings,
    /// The token file, if any.
    pub token_file: Option<WatchedFilePath>,
    /// The client-token file, if any.
    pub client_token_file: Option<WatchedFilePath>,
    /// TLS (and mTLS) on the gRPC port.
    pub tls: Option<TlsFiles>,
    /// Whether reflection needs credentials.
    pub reflection_requires_auth: bool,
    /// Each client's default rate.
    pub client_rate: Rate,
    /// The account-wide budget per upstream operation.
    pub upstream_rate: Option<Rate>,
    /// Where the rates are kept: Redis, or (`None`) this process.
    pub shared_rates: Option<SharedRatesConfig>,
    /// Calls handled at once over all connections.
    pub max_concurrent_calls: usize,
    /// Largest request message, in bytes.
    pub max_message_size: usize,
    /// Calls one client may have in flight at once.
    pub max_concurrent_calls_per_client: u32,
    /// The memory artifact transfers may hold.
    pub artifact_memory: ArtifactMemoryLimits,
    /// The deadline of a unary call whose caller sets none.
    pub default_deadline: Duration,
    /// How often and for how long an upstream call is tried.
    pub retries: Retries,
    /// Limits on accepted connections.
    pub connections: ConnectionLimits,
    /// HTTP/2 settings of every connection.
    pub http2: Http2Settings,
    /// How job feeds poll and lease.
    pub feed: FeedConfig,
    /// StreamJobs streams open at once.
    pub job_streams: JobStreamLimits,
    /// HTTP/2 keepalive pings.
    pub http2_keepalive: Keepalive,
    /// After shutdown starts, how long health says NOT_SERVING before the listener closes.
    pub lame_duck: Duration,
    /// How long in-flight calls may take to finish once the listener closed.
    pub shutdown_timeout: Duration,
}

/// How many StreamJobs streams may be open at once.
#[derive(Debug, Clone, Copy)]
pub struct JobStreamLimits {
    /// Over all clients.
    pub gateway: u32,
    /// Per client.
    pub per_client: u32,
}

/// The memory artifact transfers may hold, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct ArtifactMemoryLimits {
    /// Over all clients.
    pub gateway: usize,
    /// Per client.
    pub per_client: usize,
}

/// HTTP/2 keepalive pings of every connection.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    /// How often a ping is sent.
    pub interval: Duration,
    /// How long its answer may take before the connection is closed.
    pub timeout: Duration,
}

impl GatewayOptions {
    /// The options `serve` runs with; refuses combinations the gateway must not run with.
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Self> {
        refuse_unsafe_combinations(args)?;
        let auth = &args.auth;
        let limits = &args.limits;
        Ok(Self {
            upstream: match args.upstream {
                UpstreamKind::Aws => UpstreamChoice::Aws(sdk_settings(&args.aws)),
                #[cfg(feature = "emulator")]
                UpstreamKind::Emulator => UpstreamChoice::Emulator {
                    config: emulator_config(&args.engine),
                    demo_jobs: args.engine.demo_jobs,
                },
            },
            artifacts: ArtifactSettings {
                part_size: args.aws.artifact_part_size,
                endpoint_url: args.aws.s3_endpoint_url.clone(),
            },
            token_file: watched(auth.token_file.as_ref(), auth),
            client_token_file: watched(auth.client_token_file.as_ref(), auth),
            tls: tls_files(auth),
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
            shared_rates: shared_rates(limits)?,
            max_concurrent_calls: limits.max_concurrent_calls as usize,
            max_message_size: limits.max_message_size as usize,
            max_concurrent_calls_per_client: limits.max_concurrent_calls_per_client,
            artifact_memory: ArtifactMemoryLimits {
                gateway: args.aws.artifact_memory,
                per_client: args.aws.artifact_memory_per_client,
            },
            default_deadline: limits.default_deadline,
            connections: connection_limits(limits, auth),
            http2: http2_settings(limits),
            retries: Retries {
                max_attempts: args.aws.aws_max_attempts,
                within: args.aws.aws_operation_timeout,
            },
            feed: feed_config(&args.feed),
            job_streams: JobStreamLimits {
                gateway: args.feed.max_job_streams,
                per_client: args.feed.max_job_streams_per_client,
            },
            http2_keepalive: Keepalive {
                interval: limits.http2_keepalive_interval,
                timeout: limits.http2_keepalive_timeout,
            },
            lame_duck: args.lame_duck,
            shutdown_timeout: args.shutdown_timeout,
        })
    }
}

/// The rules that span several flags: the gateway forwards to AWS only if it authenticates its
/// callers (or is told to serve openly), and a feed's idle interval grows, never shrinks.
fn refuse_unsafe_combinations(args: &ServeArgs) -> anyhow::Result<()> {
    let auth = &args.auth;
    let authenticates = auth.token_file.is_some() || auth.tls_client_ca.is_some();
    if args.upstream == UpstreamKind::Aws && !authenticates && !auth.allow_unauthenticated {
        bail!(
            "refusing to forward to AWS without authenticating callers: give --token-file or \
             --tls-client-ca, or --allow-unauthenticated to serve openly"
        );
    }
    let feed = &args.feed;
    if feed.feed_min_idle_interval > feed.feed_max_idle_interval {
        bail!("--feed-min-idle-interval must not be longer than --feed-max-idle-interval");
    }
    let aws = &args.aws;
    let part = aws.artifact_part_size.max(crate::artifacts::MIN_PART_SIZE);
    let transfer = part.max(crate::artifacts::DOWNLOAD_HOLDS);
    if aws.artifact_memory_per_client < transfer
        || aws.artifact_memory < aws.artifact_memory_per_client
    {
        bail!(
            "--artifact-memory-per-client must hold at least one transfer (an upload's part, \
             --artifact-part-size, or a download's {} MiB: {transfer} bytes), and \
             --artifact-memory at least one client's share",
            crate::artifacts::DOWNLOAD_HOLDS >> 20
        );
    }
    Ok(())
}

/// A secrets file, checked as often as the auth flags say.
fn watched(path: Option<&PathBuf>, auth: &AuthArgs) -> Option<WatchedFilePath> {
    path.cloned().map(|path| WatchedFilePath {
        path,
        poll_interval: auth.token_file_poll_interval,
    })
}

/// TLS on the gRPC port when a certificate and its key are given; mTLS with a client CA.
fn tls_files(auth: &AuthArgs) -> Option<TlsFiles> {
    auth.tls_cert
        .clone()
        .zip(auth.tls_key.clone())
        .map(|(cert, key)| TlsFiles {
            cert,
            key,
            client_ca: auth.tls_client_ca.clone(),
        })
}

/// Where the rates are kept: Redis (which needs its URL), or (`None`) this process.
fn shared_rates(limits: &LimitArgs) -> anyhow::Result<Option<SharedRatesConfig>> {
    Ok(match limits.rate_limit_backend {
        RateLimitBackend::Memory => None,
        RateLimitBackend::Redis => Some(SharedRatesConfig {
            url: limits
                .redis_url
                .clone()
                .context("--rate-limit-backend redis needs --redis-url")?
                .0,
            password_file: limits.redis_password_file.clone(),
            tls_ca: limits.redis_tls_ca.clone(),
            key_prefix: limits.redis_key_prefix.clone(),
            timeout: limits.redis_timeout,
            fail_closed: limits.rate_limit_fail_closed,
        }),
    })
}

fn connection_limits(limits: &LimitArgs, auth: &AuthArgs) -> ConnectionLimits {
    ConnectionLimits {
        max_connections: limits.max_connections as usize,
        handshake_timeout: limits.handshake_timeout,
        idle_timeout: limits.idle_timeout,
        age: ConnectionAge {
            max: limits.max_connection_age,
            grace: limits.max_connection_age_grace,
        },
        plaintext: auth.tls_cert.is_none(),
    }
}

fn http2_settings(limits: &LimitArgs) -> Http2Settings {
    Http2Settings {
        max_concurrent_streams: limits.http2_max_concurrent_streams,
        max_local_error_reset_streams: limits.http2_max_local_error_reset_streams as usize,
        max_pending_accept_reset_streams: limits.http2_max_pending_accept_reset_streams as usize,
        max_header_list_size: limits.http2_max_header_list_size,
    }
}

fn feed_config(args: &FeedArgs) -> FeedConfig {
    FeedConfig {
        max_batch_size: args.feed_max_batch_size,
        min_idle_interval: args.feed_min_idle_interval,
        max_idle_interval: args.feed_max_idle_interval,
        ack_deadline: args.feed_ack_deadline,
        limits: FeedLimits {
            per_process: args.max_feeds as usize,
            per_client: args.max_feeds_per_client as usize,
        },
    }
}

/// The HTTP/2 settings the gRPC port serves with, each set explicitly: tonic's defaults leave
/// several unset, which replaces hyper's safe defaults with none at all.
#[derive(Debug, Clone, Copy)]
pub struct Http2Settings {
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_concurrent_streams: u32,
    /// Server-side resets for the client's errors before GOAWAY (MadeYouReset).
    pub max_local_error_reset_streams: usize,
    /// Client resets of streams not yet taken up before GOAWAY (rapid reset).
    pub max_pending_accept_reset_streams: usize,
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub max_header_list_size: u32,
}

#[cfg(feature = "emulator")]
/// What the `emulator` subcommand serves: the engine, and what its front accepts.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// The engine.
    pub config: EmulatorConfig,
    /// Demo jobs queued at start.
    pub demo_jobs: usize,
    /// The credentials and region requests must be signed with.
    pub front: FrontConfig,
    /// The artifact store: the region its requests must be signed for (the front's).
    pub store: StoreConfig,
}

#[cfg(feature = "emulator")]
impl EmulatorOptions {
    /// The options `emulator` runs with.
    pub fn from_args(args: &EmulatorArgs) -> Self {
        Self {
            config: emulator_config(&args.engine),
            demo_jobs: args.engine.demo_jobs,
            front: FrontConfig {
                credentials: StaticCredentials {
                    access_key_id: args.access_key_id.clone(),
                    secret_access_key: args.secret_access_key.clone(),
                    session_token: args.session_token.clone(),
                },
                region: args.region.clone(),
            },
            store: StoreConfig {
                region: args.region.clone(),
            },
        }
    }
}

fn sdk_settings(args: &AwsArgs) -> SdkSettings {
    SdkSettings {
        region: args.aws_region.clone(),
        endpoint_url: args.aws_endpoint_url.clone(),
        protocol: match args.aws_protocol {
            AwsProtocol::Json => WireProtocol::AwsJson,
            AwsProtocol::Cbor => WireProtocol::RpcV2Cbor,
        },
        connect_timeout: args.aws_connect_timeout,
        operation_timeout: args.aws_operation_timeout,
        attempt_timeout: args.aws_attempt_timeout,
        max_attempts: args.aws_max_attempts,
    }
}

#[cfg(feature = "emulator")]
fn emulator_config(args: &EngineArgs) -> EmulatorConfig {
    EmulatorConfig {
        account_id: args.account_id.clone(),
        redispatch_after: args.redispatch_after,
        job_timeout: args.job_timeout,
        latency: args.latency,
        faults: args.faults.clone(),
        artifact_credentials_ttl: args.artifact_credentials_ttl,
        store: StoreLimits {
            max_bytes: args.store_max_bytes as u64,
            max_uploads: args.store_max_uploads,
            upload_ttl: args.store_upload_ttl,
        },
    }
}
