//! Rates kept in Redis, so that every gateway process sharing it enforces one rate per client
//! and one budget per upstream operation, as envoyproxy/ratelimit keeps its counters.
//!
//! - **Exact and atomic.** GCRA in a Lua script on Redis's own clock: a check is one round trip,
//!   and two processes can never both take the last token. Each key holds one number, its
//!   theoretical arrival time, and expires when that time has passed: nothing grows without
//!   bound.
//! - **Cheap.** One multiplexed connection (the `redis` crate's `ConnectionManager`) carries
//!   every check, pipelined. A hot key takes a few tokens per round trip (a lease of at most
//!   half of what its rate refills in 50 ms), used locally until they run out or the 50 ms
//!   pass; unused leased tokens are lost, never given twice, so the leases can only
//!   under-admit.
//! - **Never the reason a call fails.** A check Redis does not answer within the timeout falls
//!   back to this process's own limiters at once (`gateway_rate_limit_backend_up` 0, logged
//!   once); a probe every half second brings the shared limits back when Redis answers again.
//!   With `fail_closed`, calls are refused UNAVAILABLE instead while Redis is away.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use redis::{IntoConnectionInfo, Script, aio::ConnectionManager};

use super::{LimitKey, Limited, LocalRates, Rate};
use crate::observability::Metrics;

/// GCRA on Redis's clock, for up to ARGV[3] tokens at once. KEYS[1]: the key. ARGV[1]: the
/// emission interval (microseconds); ARGV[2]: the burst; ARGV[3]: the tokens wanted. Answers
/// `{taken, 0}` with 1 <= taken <= wanted, or `{0, microseconds until a token frees}`.
const GCRA: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local room = math.floor((now + tolerance - tat) / interval)
if room < 1 then
  return {0, tat + interval - tolerance - now}
end
local taken = math.min(tonumber(ARGV[3]), room)
local new_tat = tat + taken * interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {taken, 0}
";

/// How often Redis is asked whether it answers again, while the limits fall back.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// The most tokens one round trip leases.
const MAX_LEASE: u32 = 100;
/// How long leased tokens stay usable: tokens not used by then are lost, so a lease can hold
/// back at most this long's worth of a key's rate.
const LEASE_LIFETIME: Duration = Duration::from_millis(50);

/// Where the shared limits live and how they behave when Redis is away.
#[derive(Clone)]
pub struct SharedRatesConfig {
    /// `redis://` or `rediss://` (TLS), optionally with a password.
    pub url: String,
    /// A file holding the password, if it is not in the URL.
    pub password_file: Option<PathBuf>,
    /// PEM CA certificates to trust for `rediss://` instead of the system's.
    pub tls_ca: Option<PathBuf>,
    /// Every key starts with this.
    pub key_prefix: String,
    /// How long a check may wait for Redis before falling back.
    pub timeout: Duration,
    /// Refuse calls while Redis is away, instead of falling back.
    pub fail_closed: bool,
}

impl std::fmt::Debug for SharedRatesConfig {
    /// The URL may carry a password: it is not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRatesConfig")
            .field("url", &"<redacted>")
            .field("password_file", &self.password_file)
            .field("tls_ca", &self.tls_ca)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("fail_closed", &self.fail_closed)
            .finish()
    }
}

/// Tokens of one key taken from Redis and not used yet.
#[derive(Debug, Default)]
struct Lease {
    tokens: u32,
    until: Option<Instant>,
}

impl Lease {
    fn take(&mut self, now: Instant) -> bool {
        let valid = self.until.is_some_and(|until| now < until);
        if valid && self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            false
        }
    }
}

/// One key's lease, and the right to refill it: one round trip per key at a time, the calls
/// behind it using the tokens it brings.
#[derive(Debug, Default)]
struct KeyLease {
    lease: Mutex<Lease>,
    refill: tokio::sync::Mutex<()>,
}

impl KeyLease {
    fn take(&self) -> bool {
        self.lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(Instant::now())
    }
}

/// The rates in Redis.
pub struct SharedRates {
    connection: ConnectionManager,
    script: Script,
    prefix: String,
    timeout: Duration,
    fail_closed: bool,
    up: AtomicBool,
    probing: AtomicBool,
    leases: Mutex<HashMap<LimitKey, Arc<KeyLease>>>,
    metrics: Arc<Metrics>,
}

impl SharedRates {
    /// The shared limits `config` describes. A URL that does not parse, or an unreadable
    /// password file, is an error; a Redis that does not answer yet is not: the limits start on
    /// the fallback and move to Redis once it answers.
    pub fn connect(config: SharedRatesConfig, metrics: Arc<Metrics>) -> anyhow::Result<Arc<Self>> {
        let mut info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|_| anyhow::anyhow!("--redis-url is not a redis:// or rediss:// URL"))?;
        if let Some(path) = &config.password_file {
            let password = std::fs::read_to_string(path).with_context(|| {
                format!("cannot read the Redis password file {}", path.display())
            })?;
            let settings = info
                .redis_settings()
                .clone()
                .set_password(password.trim_end_matches(['\r', '\n']));
            info = info.set_redis_settings(settings);
        }
        let client = match &config.tls_ca {
            None => redis::Client::open(info),
            Some(path) => {
                let roots = std::fs::read(path)
                    .with_context(|| format!("cannot read the Redis CA file {}", path.display()))?;
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(roots),
                };
                redis::Client::build_with_tls(info, certificates)
            }
        }
        .context("the Redis connection settings")?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.timeout))
            .set_connection_timeout(Some(config.timeout.max(Duration::from_millis(500))));
        let connection = ConnectionManager::new_lazy_with_config(client, manager_config)
            .context("the Redis connection")?;
        let shared = Arc::new(Self {
            connection,
            script: Script::new(GCRA),
            prefix: config.key_prefix,
            timeout: config.timeout,
            fail_closed: config.fail_closed,
            up: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            leases: Mutex::default(),
            metrics,
        });
        shared.metrics.rate_limit_backend_up.set(0);
        shared.probe();
        Ok(shared)
    }

    /// Whether checks go to Redis now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The verdict without a round trip, if there is one: a leased token, or the fallback
    /// while Redis is away.
    pub(super) fn check_now(
        &self,
        key: &LimitKey,
        rate: Rate,
        local: &LocalRates,
    ) -> Option<Result<(), Limited>> {
        if !self.is_up() {
            return Some(self.fallback(key, rate, local));
        }
        self.lease(key).take().then_some(Ok(()))
    }

    /// The verdict, from a leased token or a round trip to Redis.
    pub(super) async fn check(
        self: &Arc<Self>,
        key: &LimitKey,
        rate: Rate,
        local: &LocalRates,
    ) -> Result<(), Limited> {
        if !self.is_up() {
            return self.fallback(key, rate, local);
        }
        let lease = self.lease(key);
        let _refilling = lease.refill.lock().await;
        // Another call may have refilled the lease while this one waited.
        if lease.take() {
            return Ok(());
        }
        let wanted = lease_size(rate);
        let started = Instant::now();
        let answer = tokio::time::timeout(self.timeout, self.round_trip(key, rate, wanted)).await;
        self.metrics
            .redis_seconds
            .observe(started.elapsed().as_secs_f64());
        match answer {
            Ok(Ok((taken, _))) if taken > 0 => {
                let taken = u32::try_from(taken).unwrap_or(1);
                *lease.lease.lock().unwrap_or_else(|p| p.into_inner()) = Lease {
                    tokens: taken - 1,
                    until: Some(Instant::now() + LEASE_LIFETIME),
                };
                Ok(())
            }
            Ok(Ok((_, wait_micros))) => Err(Limited::Over(Duration::from_micros(
                u64::try_from(wait_micros).unwrap_or(0),
            ))),
            Ok(Err(error)) => {
                self.went_down(&error.to_string());
                self.fallback(key, rate, local)
            }
            Err(_) => {
                self.went_down("no answer within the timeout");
                self.fallback(key, rate, local)
            }
        }
    }

    async fn round_trip(
        &self,
        key: &LimitKey,
        rate: Rate,
        wanted: u32,
    ) -> redis::RedisResult<(i64, i64)> {
        let interval = rate.emission_interval().as_micros() as u64;
        let mut connection = self.connection.clone();
        self.script
            .key(format!("{}{key}", self.prefix))
            .arg(interval.max(1))
            .arg(rate.burst.get())
            .arg(wanted)
            .invoke_async(&mut connection)
            .await
    }

    fn lease(&self, key: &LimitKey) -> Arc<KeyLease> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        leases.entry(key.clone()).or_default().clone()
    }

    fn fallback(&self, key: &LimitKey, rate: Rate, local: &LocalRates) -> Result<(), Limited> {
        if self.fail_closed {
            return Err(Limited::Unavailable);
        }
        local.check(key, rate)
    }

    /// Redis failed a check: the limits fall back, once, and a probe watches for its return.
    fn went_down(self: &Arc<Self>, why: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            self.metrics.rate_limit_backend_up.set(0);
            self.metrics.rate_limit_fallbacks.inc();
            tracing::warn!(
                reason = why,
                fail_closed = self.fail_closed,
                "Redis did not answer a rate-limit check; limits are this process's own until it does"
            );
            // Leased tokens were Redis's; a fresh start is taken when it is back.
            self.leases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        self.probe();
    }

    /// Starts asking Redis, every [`PROBE_INTERVAL`], whether it answers; the shared limits
    /// are back in force at the first answer. One probe at a time.
    fn probe(self: &Arc<Self>) {
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(this) = shared.upgrade() else {
                    return;
                };
                let mut connection = this.connection.clone();
                let ping = redis::cmd("PING");
                let answered = tokio::time::timeout(
                    this.timeout.max(Duration::from_millis(100)),
                    ping.query_async::<String>(&mut connection),
                )
                .await;
                if matches!(answered, Ok(Ok(_))) {
                    this.up.store(true, Ordering::Release);
                    this.probing.store(false, Ordering::Release);
                    this.metrics.rate_limit_backend_up.set(1);
                    tracing::info!("rate limits are shared in Redis");
                    return;
                }
                drop(this);
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
        });
    }
}

/// How many tokens one round trip asks for: half of what the rate refills in a lease's
/// lifetime, at most the burst and [`MAX_LEASE`], at least one. Slow rates take one token a
/// round trip, and are exact.
fn lease_size(rate: Rate) -> u32 {
    let refilled = rate.per_second.get() as u64 * LEASE_LIFETIME.as_millis() as u64 / 1000;
    ((refilled / 2) as u32)
        .clamp(1, MAX_LEASE)
        .min(rate.burst.get())
}
