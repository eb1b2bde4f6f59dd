//! The command line: subcommands `serve` and `emulator`, every flag also an environment
//! variable (`CPGW_*`), parsed and checked once at start. What the flags mean together is
//! decided in [`crate::app::options`].

use std::{net::SocketAddr, num::NonZeroU32, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

#[cfg(feature = "emulator")]
use crate::emulator::faults::FaultPlan;
use crate::observability::{logs::LogFormat, traces::TraceSettings};

/// A gRPC gateway for AWS CodePipeline custom-action job workers.
#[derive(Debug, Parser)]
#[command(name = "codepipeline-gateway", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
    /// Tracing.
    #[command(flatten)]
    pub trace: TraceArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the job-worker API over gRPC, forwarding to AWS or to the embedded emulator.
    Serve(Box<ServeArgs>),
    /// Serve the embedded CodePipeline emulator over AWS's own wire protocol (awsJson1_1,
    /// SigV4-checked), for AWS SDKs and the gateway's `aws` upstream; its admin gRPC service
    /// shares the port.
    #[cfg(feature = "emulator")]
    Emulator(Box<EmulatorArgs>),
    /// Bearer tokens for the token file.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The configuration, checked.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the shell completion script for `shell` (e.g. `source <(codepipeline-gateway
    /// completions bash)`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `codepipeline-gateway man | man -l -`.
    Man,
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Read everything `serve` would (flags, environment, the token, client-token and TLS files)
    /// and say what is wrong; serves nothing. Exits 1 when something is.
    Check(Box<CheckArgs>),
}

/// `config check` settings: `serve`'s, and whether to reach what it would talk to.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also reach Redis, the CodePipeline endpoint and the OTLP collector, once each.
    #[arg(long)]
    pub reach: bool,
    /// What `serve` would run with.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new random token, then the token file entry (its SHA-256 digest and what it may
    /// call) to add for it. The token is shown only here: the file keeps the digest.
    New(NewTokenArgs),
}

/// `token new` settings.
#[derive(Debug, Args)]
pub struct NewTokenArgs {
    /// The client id: what metrics, logs and the audit trail name.
    #[arg(long)]
    pub client_id: String,
    /// A method the client may call (`PollForJobs`, a full name, or `*`); repeat for several.
    #[arg(long = "rpc", required = true)]
    pub rpcs: Vec<String>,
    /// An action type the client may work (`category/owner/provider/version`, `*` in any
    /// segment); repeat for several. None: every action type.
    #[arg(long = "action-type")]
    pub action_types: Vec<String>,
}

/// Logging settings.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, env = "CPGW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter, in tracing's EnvFilter syntax (e.g. `info`, `codepipeline_gateway=debug`).
    #[arg(long, env = "CPGW_LOG", default_value = "info", global = true)]
    pub log: String,
}

/// OpenTelemetry tracing settings.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Export traces over OTLP/gRPC to this collector (e.g. `http://otel-collector:4317`); no
    /// traces are made without it.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
    /// The share of traces started by the gateway that are exported (0..=1); a caller's own
    /// sampling decision (the `traceparent` flag) is always followed.
    #[arg(long, env = "CPGW_TRACE_SAMPLING_RATIO", default_value_t = 1.0, value_parser = sampling_ratio, global = true)]
    pub trace_sampling_ratio: f64,
}

impl TraceArgs {
    /// Where traces go, if anywhere.
    pub fn settings(&self) -> Option<TraceSettings> {
        self.otlp_endpoint
            .clone()
            .map(|otlp_endpoint| TraceSettings {
                otlp_endpoint,
                sampling_ratio: self.trace_sampling_ratio,
            })
    }
}

/// A size like `8MiB`, `5242880` or `16 MiB`, at least S3's smallest part (5 MiB): what a
/// transfer buffers.
fn byte_size(text: &str) -> Result<usize, String> {
    let size = any_byte_size(text)?;
    if size < 5 << 20 {
        return Err("at least 5MiB: S3 refuses smaller parts".to_owned());
    }
    Ok(size)
}

/// A size like `2GiB`, `512KiB` or `1048576`.
fn any_byte_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a size like 8MiB"))?;
    let unit = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}: use B, KiB, MiB or GiB")),
    };
    number
        .checked_mul(unit)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn sampling_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err("must be a number from 0 to 1".to_owned()),
    }
}

/// CodePipeline's wire protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AwsProtocol {
    /// awsJson1_1: JSON bodies, `X-Amz-Target`.
    Json,
    /// Smithy RPC v2 CBOR: CBOR bodies, `/service/.../operation/...` paths.
    Cbor,
}

/// Where rate limits are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RateLimitBackend {
    /// In this process: each gateway process has its own.
    Memory,
    /// In Redis: shared by every gateway process using it.
    Redis,
}

/// A Redis URL; it may carry a password, so it is never shown.
#[derive(Clone)]
pub struct RedisUrl(pub String);

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisUrl(<redacted>)")
    }
}

impl std::str::FromStr for RedisUrl {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        if value.starts_with("redis://") || value.starts_with("rediss://") {
            Ok(Self(value.to_owned()))
        } else {
            Err("a Redis URL starts with redis:// or rediss://".to_owned())
        }
    }
}

/// Where `serve` forwards calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UpstreamKind {
    /// The real CodePipeline API through the AWS SDK.
    Aws,
    /// The in-process emulator (no AWS account needed; serves the admin service too).
    #[cfg(feature = "emulator")]
    Emulator,
}

/// `serve` settings.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the gRPC listener (port 0 picks a free port). Default: 0.0.0.0:50051, or
    /// 127.0.0.1:50051 with `--upstream emulator`, whose jobs and admin service are nobody
    /// else's business unless told so.
    #[arg(long, env = "CPGW_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where calls go.
    #[arg(long, env = "CPGW_UPSTREAM", value_enum, default_value_t = UpstreamKind::Aws)]
    pub upstream: UpstreamKind,
    /// The AWS SDK client, for `--upstream aws`.
    #[command(flatten)]
    pub aws: AwsArgs,
    /// The emulator, for `--upstream emulator`.
    #[cfg(feature = "emulator")]
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Authentication and TLS.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Rate limits, overload protection and connection management.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// The job feed (StreamJobs).
    #[command(flatten)]
    pub feed: FeedArgs,
    /// Address of the HTTP listener serving Prometheus metrics at /metrics. Default:
    /// 0.0.0.0:9090, or 127.0.0.1:9090 with `--upstream emulator`.
    #[arg(long, env = "CPGW_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// With `--upstream emulator`: address of the emulator's S3-compatible artifact store (port
    /// 0 picks a free port; `App::emulator_s3_addr` tells which).
    #[cfg(feature = "emulator")]
    #[arg(long, env = "CPGW_EMULATOR_S3_LISTEN", default_value = "127.0.0.1:0")]
    pub emulator_s3_listen: SocketAddr,
    /// After SIGTERM, how long health reports NOT_SERVING while calls are still taken, so load
    /// balancers stop sending new ones before the listener closes.
    #[arg(long, env = "CPGW_LAME_DUCK", default_value = "0s", value_parser = humantime::parse_duration)]
    pub lame_duck: Duration,
    /// How long in-flight calls may take to finish once the listener closed; then the process
    /// exits regardless.
    #[arg(long, env = "CPGW_SHUTDOWN_TIMEOUT", default_value = "25s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
}

/// Authentication and TLS settings.
#[derive(Debug, Args)]
pub struct AuthArgs {
    /// TOML file of clients (id, SHA-256 of the bearer token, allowed RPCs, rate overrides);
    /// re-read when it changes.
    #[arg(long, env = "CPGW_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// How often the token file (and the client-token file) is checked for changes.
    #[arg(long, env = "CPGW_TOKEN_FILE_POLL_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub token_file_poll_interval: Duration,
    /// TOML file of third-party clients' tokens (`[[clients]] client_id, client_token`), which
    /// the gateway supplies to third-party calls that carry none; re-read when it changes.
    #[arg(long, env = "CPGW_CLIENT_TOKEN_FILE")]
    pub client_token_file: Option<PathBuf>,
    /// Serve without authentication (needed for `--upstream aws` with no token file or mTLS).
    #[arg(long, env = "CPGW_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,
    /// Require credentials for server reflection too (health never needs them).
    #[arg(long, env = "CPGW_REFLECTION_REQUIRES_AUTH")]
    pub reflection_requires_auth: bool,
    /// PEM certificate chain: serve gRPC over TLS.
    #[arg(long, env = "CPGW_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "CPGW_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: require client certificates signed by them (mTLS); the first SAN of
    /// a client's certificate is its client id. With a token file too, a certificate is optional.
    #[arg(long, env = "CPGW_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// Rate limits, overload protection and connection management.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Calls per second each client may make, sustained (the token file may override it).
    #[arg(long, env = "CPGW_RATE_LIMIT_PER_SECOND", default_value = "50")]
    pub rate_limit_per_second: NonZeroU32,
    /// Calls each client may make at once after a quiet period.
    #[arg(long, env = "CPGW_RATE_LIMIT_BURST", default_value = "100")]
    pub rate_limit_burst: NonZeroU32,
    /// Where rate limits (per client, and the per-operation upstream budget) are kept: in this
    /// process, or in Redis, shared by every gateway process using it.
    #[arg(long, env = "CPGW_RATE_LIMIT_BACKEND", value_enum, default_value_t = RateLimitBackend::Memory)]
    pub rate_limit_backend: RateLimitBackend,
    /// The Redis of `--rate-limit-backend redis`: `redis://[:password@]host:port[/db]`, or
    /// `rediss://...` for TLS.
    #[arg(
        long,
        env = "CPGW_REDIS_URL",
        required_if_eq("rate_limit_backend", "redis"),
        hide_env_values = true
    )]
    pub redis_url: Option<RedisUrl>,
    /// A file holding the Redis password (a mounted Secret), when the URL carries none.
    #[arg(long, env = "CPGW_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,
    /// PEM CA certificates that sign the Redis server's certificate (`rediss://`), instead of the
    /// system's roots.
    #[arg(long, env = "CPGW_REDIS_TLS_CA")]
    pub redis_tls_ca: Option<PathBuf>,
    /// Every Redis key the gateway writes starts with this; gateways sharing a prefix share
    /// their limits.
    #[arg(
        long,
        env = "CPGW_REDIS_KEY_PREFIX",
        default_value = "codepipeline-gateway:"
    )]
    pub redis_key_prefix: String,
    /// How long a rate-limit check may wait for Redis before the limits fall back to this
    /// process's own.
    #[arg(long, env = "CPGW_REDIS_TIMEOUT", default_value = "25ms", value_parser = humantime::parse_duration)]
    pub redis_timeout: Duration,
    /// While Redis does not answer, refuse job-worker calls (UNAVAILABLE) instead of falling
    /// back to this process's own limits.
    #[arg(long, env = "CPGW_RATE_LIMIT_FAIL_CLOSED")]
    pub rate_limit_fail_closed: bool,
    /// Calls per second per CodePipeline operation over all clients, protecting the account's
    /// quota. Unset: no account-wide budget.
    #[arg(long, env = "CPGW_UPSTREAM_RATE_LIMIT_PER_SECOND")]
    pub upstream_rate_limit_per_second: Option<NonZeroU32>,
    /// Burst of the account-wide budget (default: its rate).
    #[arg(
        long,
        env = "CPGW_UPSTREAM_RATE_LIMIT_BURST",
        requires = "upstream_rate_limit_per_second"
    )]
    pub upstream_rate_limit_burst: Option<NonZeroU32>,
    /// Calls handled at once over all connections; more are refused at once with UNAVAILABLE.
    #[arg(long, env = "CPGW_MAX_CONCURRENT_CALLS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_calls: u32,
    /// Largest request message accepted, in bytes.
    #[arg(long, env = "CPGW_MAX_MESSAGE_SIZE", default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_message_size: u32,
    /// Interval of HTTP/2 keepalive pings to idle clients.
    #[arg(long, env = "CPGW_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub http2_keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered before the connection is closed.
    #[arg(long, env = "CPGW_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub http2_keepalive_timeout: Duration,
    /// Calls one client may have in flight at once (job-worker RPCs, counted until the answer is
    /// delivered); more are refused with RESOURCE_EXHAUSTED, so one client cannot fill the
    /// gateway-wide limit.
    #[arg(long, env = "CPGW_MAX_CONCURRENT_CALLS_PER_CLIENT", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_calls_per_client: u32,
    /// The deadline of a unary call whose caller sets none (no `grpc-timeout`): it bounds reading
    /// the request, the upstream call and answering.
    #[arg(long, env = "CPGW_DEFAULT_DEADLINE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub default_deadline: Duration,
    /// Connections served at once; more are refused (GOAWAY ENHANCE_YOUR_CALM on a plaintext
    /// port, closed on TLS). Keep it below the process's file descriptor limit.
    #[arg(long, env = "CPGW_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// How long a new connection may take to start its first call (TLS handshake and HTTP/2
    /// preface included) before it is closed.
    #[arg(long, env = "CPGW_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// How long a connection may have no call open before it is closed.
    #[arg(long, env = "CPGW_IDLE_TIMEOUT", default_value = "2m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Streams a client may have open at once on one connection (HTTP/2
    /// SETTINGS_MAX_CONCURRENT_STREAMS); more are refused with REFUSED_STREAM.
    #[arg(long, env = "CPGW_HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_concurrent_streams: u32,
    /// Streams a connection may make the server reset for the client's errors (a malformed
    /// frame, a content-length that lies) before it is closed with GOAWAY ENHANCE_YOUR_CALM: the
    /// defence against MadeYouReset (CVE-2025-8671).
    #[arg(long, env = "CPGW_HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_local_error_reset_streams: u32,
    /// Streams a client may reset before the server took them up, before the connection is
    /// closed with GOAWAY ENHANCE_YOUR_CALM: the defence against rapid reset (CVE-2023-44487).
    #[arg(long, env = "CPGW_HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_pending_accept_reset_streams: u32,
    /// Largest header list a request may send (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE), in bytes.
    #[arg(long, env = "CPGW_HTTP2_MAX_HEADER_LIST_SIZE", default_value_t = 16 * 1024, value_parser = clap::value_parser!(u32).range(1024..))]
    pub http2_max_header_list_size: u32,
    /// Connections are closed gracefully after this age, so clients reconnect and load spreads
    /// over new replicas.
    #[arg(long, env = "CPGW_MAX_CONNECTION_AGE", default_value = "5m", value_parser = humantime::parse_duration)]
    pub max_connection_age: Duration,
    /// How long calls on an aged connection may take to finish.
    #[arg(long, env = "CPGW_MAX_CONNECTION_AGE_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub max_connection_age_grace: Duration,
}

/// The job feed: one poller per action type (and query param), shared by its StreamJobs
/// subscribers.
#[derive(Debug, Args)]
pub struct FeedArgs {
    /// The most jobs one feed poll asks for (it asks for no more than its subscribers have room
    /// for).
    #[arg(long, env = "CPGW_FEED_MAX_BATCH_SIZE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub feed_max_batch_size: u32,
    /// The wait before the next poll after one that found jobs but not a full batch, and the first
    /// wait after an empty one (jittered).
    #[arg(long, env = "CPGW_FEED_MIN_IDLE_INTERVAL", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub feed_min_idle_interval: Duration,
    /// The longest wait between polls while subscribers wait for jobs (empty polls double the
    /// wait up to this).
    #[arg(long, env = "CPGW_FEED_MAX_IDLE_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub feed_max_idle_interval: Duration,
    /// How long a delivered job waits for its acknowledgement on the stream before it is
    /// delivered again (with the same nonce), to another subscriber when one has credit. Also how
    /// long a worker whose stream ended may claim back, from a new stream, a job whose
    /// acknowledgement it sent without hearing the answer, and how long a feed outlives its last
    /// subscriber.
    #[arg(long, env = "CPGW_FEED_ACK_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub feed_ack_deadline: Duration,
    /// StreamJobs streams open at once over all clients.
    #[arg(long, env = "CPGW_MAX_JOB_STREAMS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_job_streams: u32,
    /// StreamJobs streams one client may have open at once.
    #[arg(long, env = "CPGW_MAX_JOB_STREAMS_PER_CLIENT", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_job_streams_per_client: u32,
    /// Job feeds (action type and query param pairs, each with its own upstream poller) the
    /// process may have at once.
    #[arg(long, env = "CPGW_MAX_FEEDS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_feeds: u32,
    /// Job feeds one client may be on when it starts another (joining a feed that is open
    /// already is never refused); a feed's polls are charged to the rate of the subscriptions
    /// holding credit, in turn, as well as to the budget.
    #[arg(long, env = "CPGW_MAX_FEEDS_PER_CLIENT", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_feeds_per_client: u32,
}

/// Settings of the AWS SDK client.
#[derive(Debug, Args)]
pub struct AwsArgs {
    /// AWS region; defaults to the SDK's chain (AWS_REGION, profile, instance metadata).
    #[arg(long, env = "CPGW_AWS_REGION")]
    pub aws_region: Option<String>,
    /// CodePipeline endpoint URL to use instead of AWS's (AWS_ENDPOINT_URL and
    /// AWS_ENDPOINT_URL_CODEPIPELINE are honoured too).
    #[arg(long, env = "CPGW_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// The wire protocol of calls to CodePipeline, which serves both.
    #[arg(long, env = "CPGW_AWS_PROTOCOL", value_enum, default_value_t = AwsProtocol::Json)]
    pub aws_protocol: AwsProtocol,
    /// S3 endpoint URL for artifacts, instead of AWS's (path-style requests then); with
    /// `--upstream emulator`, the emulator's own artifact store.
    #[arg(long, env = "CPGW_S3_ENDPOINT_URL")]
    pub s3_endpoint_url: Option<String>,
    /// What an artifact transfer holds in memory: the size of its ranged GETs and upload parts
    /// (at least 5 MiB, S3's smallest part).
    #[arg(long, env = "CPGW_ARTIFACT_PART_SIZE", default_value = "8MiB", value_parser = byte_size)]
    pub artifact_part_size: usize,
    /// The most memory all artifact transfers together may hold: each upload reserves a part,
    /// each download its read-ahead (6 MiB), before its first S3 request; past it a transfer is
    /// refused RESOURCE_EXHAUSTED, to be retried.
    #[arg(long, env = "CPGW_ARTIFACT_MEMORY", default_value = "160MiB", value_parser = byte_size)]
    pub artifact_memory: usize,
    /// The most memory one client's artifact transfers may hold (at least one part).
    #[arg(long, env = "CPGW_ARTIFACT_MEMORY_PER_CLIENT", default_value = "48MiB", value_parser = byte_size)]
    pub artifact_memory_per_client: usize,
    /// Time allowed to open a connection to CodePipeline.
    #[arg(long, env = "CPGW_AWS_CONNECT_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub aws_connect_timeout: Duration,
    /// Time allowed for one attempt of an operation.
    #[arg(long, env = "CPGW_AWS_ATTEMPT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub aws_attempt_timeout: Duration,
    /// Time allowed for a whole operation, retries included.
    #[arg(long, env = "CPGW_AWS_OPERATION_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub aws_operation_timeout: Duration,
    /// Attempts per upstream call, the first included: the gateway's retries, each spending
    /// the upstream budget (and the SDK's, for the artifact store's S3 calls).
    #[arg(long, env = "CPGW_AWS_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub aws_max_attempts: u32,
}

/// Settings of the emulator's job engine.
#[cfg(feature = "emulator")]
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// The 12-digit AWS account that owns the emulator's jobs.
    #[arg(long, env = "CPGW_EMULATOR_ACCOUNT_ID", default_value = "123456789012", value_parser = parse_account_id)]
    pub account_id: String,
    /// How long a dispatched job waits for AcknowledgeJob before a poll hands it out again.
    #[arg(long, env = "CPGW_EMULATOR_REDISPATCH_AFTER", default_value = "30s", value_parser = humantime::parse_duration)]
    pub redispatch_after: Duration,
    /// How long a job may run from creation to result before it is TimedOut.
    #[arg(long, env = "CPGW_EMULATOR_JOB_TIMEOUT", default_value = "24h", value_parser = humantime::parse_duration)]
    pub job_timeout: Duration,
    /// Latency added to every job-worker call.
    #[arg(long, env = "CPGW_EMULATOR_LATENCY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// Faults to inject into job-worker calls, e.g. `*:throttling=0.1;AcknowledgeJob:drop=0.05`
    /// (faults: latency, http500, http503, throttling, drop, truncate, malformed); the artifact
    /// store's operations (GetObject, PutObject, UploadPart, ...) may be named too, e.g.
    /// `UploadPart:http503=0.5` (`*` covers only CodePipeline's).
    #[arg(long, env = "CPGW_EMULATOR_FAULTS", default_value = "", value_parser = FaultPlan::parse)]
    pub faults: FaultPlan,
    /// How long the artifact credentials handed out with a job (poll, details) work in the
    /// emulator's artifact store; then ExpiredToken.
    #[arg(long, env = "CPGW_EMULATOR_ARTIFACT_CREDENTIALS_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub artifact_credentials_ttl: Duration,
    /// The most bytes the emulator's artifact store (in memory) holds: its objects and the parts
    /// of uploads in progress together; past it uploads are refused (503).
    #[arg(long, env = "CPGW_EMULATOR_STORE_MAX_BYTES", default_value = "2GiB", value_parser = any_byte_size)]
    pub store_max_bytes: usize,
    /// Multipart uploads the emulator's store keeps in progress at once.
    #[arg(long, env = "CPGW_EMULATOR_STORE_MAX_UPLOADS", default_value_t = 1024)]
    pub store_max_uploads: usize,
    /// How long a multipart upload may stay in progress before the store forgets it, and its
    /// parts, as abandoned.
    #[arg(long, env = "CPGW_EMULATOR_STORE_UPLOAD_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub store_upload_ttl: Duration,
    /// Demo jobs queued at start for the demo action type Build/Custom/DemoBuilder/1.
    #[arg(long, env = "CPGW_EMULATOR_DEMO_JOBS", default_value_t = 3)]
    pub demo_jobs: usize,
}

impl ServeArgs {
    /// Where the gRPC listener binds: as given, else every interface, or only loopback for an
    /// emulator.
    pub fn grpc_listen(&self) -> SocketAddr {
        self.listen.unwrap_or_else(|| self.default_address(50051))
    }

    /// Where the metrics listener binds, decided as for [`Self::grpc_listen`].
    pub fn metrics_listen(&self) -> SocketAddr {
        self.metrics_listen
            .unwrap_or_else(|| self.default_address(9090))
    }

    fn default_address(&self, port: u16) -> SocketAddr {
        let host = match self.upstream {
            UpstreamKind::Aws => std::net::Ipv4Addr::UNSPECIFIED,
            #[cfg(feature = "emulator")]
            UpstreamKind::Emulator => std::net::Ipv4Addr::LOCALHOST,
        };
        SocketAddr::from((host, port))
    }
}

/// `emulator` settings.
#[cfg(feature = "emulator")]
#[derive(Debug, Args)]
pub struct EmulatorArgs {
    /// Address of the HTTP listener (port 0 picks a free port).
    #[arg(long, env = "CPGW_EMULATOR_LISTEN", default_value = "127.0.0.1:4599")]
    pub listen: SocketAddr,
    /// Address of the S3-compatible artifact store's HTTP listener (path-style requests, signed
    /// with a job's artifact credentials; port 0 picks a free port). Default: 127.0.0.1:4598, or
    /// a free port when `--listen` asks for one.
    #[arg(long, env = "CPGW_EMULATOR_S3_LISTEN")]
    pub s3_listen: Option<SocketAddr>,
    /// The access key ID requests must be signed with.
    #[arg(
        long,
        env = "CPGW_EMULATOR_ACCESS_KEY_ID",
        default_value = "AKIDEMULATOR00000000"
    )]
    pub access_key_id: String,
    /// The secret access key requests must be signed with.
    #[arg(
        long,
        env = "CPGW_EMULATOR_SECRET_ACCESS_KEY",
        default_value = "emulator-secret-access-key",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub secret_access_key: String,
    /// The session token requests must carry (`X-Amz-Security-Token`), as with temporary
    /// credentials; without it, a request carrying one is refused, as AWS refuses a token it did
    /// not issue.
    #[arg(long, env = "CPGW_EMULATOR_SESSION_TOKEN", hide_env_values = true)]
    pub session_token: Option<String>,
    /// The region requests must be signed for.
    #[arg(long, env = "CPGW_EMULATOR_REGION", default_value = "us-east-1")]
    pub region: String,
    /// The job engine.
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[cfg(feature = "emulator")]
impl EmulatorArgs {
    /// Where the artifact store listens: as given; else on a free port when the front takes
    /// one (so emulators started side by side never collide); else 127.0.0.1:4598.
    pub fn s3_listen(&self) -> SocketAddr {
        self.s3_listen.unwrap_or_else(|| {
            let port = if self.listen.port() == 0 { 0 } else { 4598 };
            SocketAddr::from(([127, 0, 0, 1], port))
        })
    }
}

impl Cli {
    /// `serve` with these flags, as the binary would parse them (for tests and tools that
    /// build the app in-process).
    pub fn serve(flags: &[&str]) -> Result<ServeArgs, clap::Error> {
        match Self::try_parse_from(["codepipeline-gateway", "serve"].iter().chain(flags))?.command {
            Command::Serve(args) => Ok(*args),
            _ => unreachable!("the subcommand parsed is serve"),
        }
    }

    /// `emulator` with these flags, as the binary would parse them.
    #[cfg(feature = "emulator")]
    pub fn emulator(flags: &[&str]) -> Result<EmulatorArgs, clap::Error> {
        match Self::try_parse_from(["codepipeline-gateway", "emulator"].iter().chain(flags))?
            .command
        {
            Command::Emulator(args) => Ok(*args),
            _ => unreachable!("the subcommand parsed is emulator"),
        }
    }
}

#[cfg(feature = "emulator")]
fn parse_account_id(value: &str) -> Result<String, String> {
    if value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(value.to_owned())
    } else {
        Err("an AWS account ID is 12 digits".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_of_what_serves_has_an_environment_variable() {
        use clap::CommandFactory;
        let cli = Cli::command();
        // What serves is configured in a pod's environment; the tools are run by hand.
        for sub in cli
            .get_subcommands()
            .filter(|sub| matches!(sub.get_name(), "serve" | "emulator"))
        {
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(
                    arg.get_env().is_some(),
                    "{} --{id} has no env var",
                    sub.get_name()
                );
            }
        }
    }
}
