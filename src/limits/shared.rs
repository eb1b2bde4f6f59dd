//! Rates kept in Redis, so that every gateway process sharing it enforces one rate per client
//! and one budget per upstream operation, as envoyproxy/ratelimit keeps its counters.
//!
//! - **Exact and atomic.** GCRA in a Lua script on Redis's own clock: a check is one round trip,
//!   and two processes can never both take the last token. Each key holds one number, its
//!   theoretical arrival time, and expires when that time has passed: nothing grows without
//!   bound.
//! - **Cheap.** One multiplexed connection (the `redis` crate's `ConnectionManager`) carries
//!   every check, pipelined. A key takes a lease of tokens per round trip: half of what its
//!   rate refills in 50 ms, at least one, at most its burst and 1,000 (so a slow rate takes one
//!   token a round trip, and is exact). Leased tokens are used locally until they run out or
//!   the 50 ms pass; unused ones are lost, never given twice, so the leases can only
//!   under-admit. A lease of four tokens or more is renewed in the background once half of it
//!   is used, so the calls of a hot key do not queue behind a round trip.
//! - **Never the reason a call fails.** A check Redis does not answer within the timeout falls
//!   back to this process's own limiters at once (`gateway_rate_limit_backend_up` 0, logged
//!   once); a probe every half second brings the shared limits back once Redis runs the script
//!   again (a PING would not do: a Redis out of memory or a read-only replica answers it).
//!   With `fail_closed`, calls are refused UNAVAILABLE instead while Redis is away.

use std::{
    collections::HashMap,
    num::NonZeroU32,
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
const MAX_LEASE: u32 = 1000;
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

/// The smallest lease renewed before it runs out: smaller ones (slow rates) are exact, one
/// token a round trip.
const RENEWED_AHEAD_FROM: u32 = 4;

/// Tokens of one key taken from Redis and not used yet.
#[derive(Debug, Default)]
struct Lease {
    tokens: u32,
    until: Option<Instant>,
    /// How many tokens the last round trip brought.
    size: u32,
}

/// What taking a leased token found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    /// No token: the lease is used up or expired.
    None,
    /// A token.
    Token,
    /// A token, and the lease is half used: time to renew it.
    TokenRenewNow,
}

impl Lease {
    fn take(&mut self, now: Instant) -> Taken {
        let valid = self.until.is_some_and(|until| now < until);
        if !valid || self.tokens == 0 {
            return Taken::None;
        }
        self.tokens -= 1;
        if self.size >= RENEWED_AHEAD_FROM && self.tokens == self.size / 2 {
            Taken::TokenRenewNow
        } else {
            Taken::Token
        }
    }

    /// Adds `taken` fresh tokens, `own` of them for the caller to use at once; the ones left
    /// of the last lease stay usable as long.
    fn renew(&mut self, taken: u32, own: u32, now: Instant) {
        let left = if self.until.is_some_and(|until| now < until) {
            self.tokens
        } else {
            0
        };
        *self = Lease {
            tokens: left + taken - own.min(taken),
            until: Some(now + LEASE_LIFETIME),
            size: taken,
        };
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
    fn take(&self) -> Taken {
        self.lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(Instant::now())
    }

    fn renew(&self, taken: u32, own: u32) {
        self.lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .renew(taken, own, Instant::now());
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
        self: &Arc<Self>,
        key: &LimitKey,
        rate: Rate,
        local: &LocalRates,
    ) -> Option<Result<(), Limited>> {
        if !self.is_up() {
            return Some(self.fallback(key, rate, local));
        }
        let lease = self.lease(key);
        match lease.take() {
            Taken::None => None,
            Taken::Token => Some(Ok(())),
            Taken::TokenRenewNow => {
                self.renew_ahead(key.clone(), rate, lease);
                Some(Ok(()))
            }
        }
    }

    /// Renews a half-used lease in the background, unless a round trip for it is on its way.
    fn renew_ahead(self: &Arc<Self>, key: LimitKey, rate: Rate, lease: Arc<KeyLease>) {
        let shared = self.clone();
        tokio::spawn(async move {
            let Ok(_refilling) = lease.refill.try_lock() else {
                return;
            };
            match shared.leased_round_trip(&key, rate).await {
                Ok(Ok(taken)) => lease.renew(taken, 0),
                // Over the rate: the tokens left are used, then calls ask Redis themselves.
                Ok(Err(_)) => {}
                Err(why) => shared.went_down(&why),
            }
        });
    }

    /// One round trip for a lease: the tokens taken, or how long until one frees; `Err` with
    /// the reason when Redis did not answer in time.
    async fn leased_round_trip(
        &self,
        key: &LimitKey,
        rate: Rate,
    ) -> Result<Result<u32, Duration>, String> {
        let started = Instant::now();
        let answer =
            tokio::time::timeout(self.timeout, self.round_trip(key, rate, lease_size(rate))).await;
        self.metrics
            .redis_seconds
            .observe(started.elapsed().as_secs_f64());
        match answer {
            Ok(Ok((taken, _))) if taken > 0 => Ok(Ok(u32::try_from(taken).unwrap_or(1))),
            Ok(Ok((_, wait_micros))) => Ok(Err(Duration::from_micros(
                u64::try_from(wait_micros).unwrap_or(0),
            ))),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("no answer within the timeout".to_owned()),
        }
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
        if lease.take() != Taken::None {
            return Ok(());
        }
        match self.leased_round_trip(key, rate).await {
            Ok(Ok(taken)) => {
                // One of them is this call's.
                lease.renew(taken, 1);
                Ok(())
            }
            Ok(Err(wait)) => Err(Limited::Over(wait)),
            Err(why) => {
                self.went_down(&why);
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
        self.run_script(&format!("{}{key}", self.prefix), rate, wanted)
            .await
    }

    /// The GCRA script on the Redis key `redis_key`.
    async fn run_script(
        &self,
        redis_key: &str,
        rate: Rate,
        wanted: u32,
    ) -> redis::RedisResult<(i64, i64)> {
        let interval = rate.emission_interval().as_micros() as u64;
        let mut connection = self.connection.clone();
        self.script
            .key(redis_key)
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

    /// Starts asking Redis, every [`PROBE_INTERVAL`], whether it runs the limits' script (a
    /// PING is not enough: a Redis out of memory, a read-only replica after a failover or an
    /// ACL answers PING and refuses the script); the shared limits are back in force at the
    /// first script that runs. One probe at a time.
    fn probe(self: &Arc<Self>) {
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last_failure = None;
            loop {
                let Some(this) = shared.upgrade() else {
                    return;
                };
                let answered = tokio::time::timeout(
                    this.timeout.max(Duration::from_millis(100)),
                    this.run_script(&format!("{}probe", this.prefix), PROBE_RATE, 1),
                )
                .await;
                match answered {
                    Ok(Ok(_)) => {
                        // Not probing any more before up: a check failing from now on starts a
                        // new probe (the other order could leave the limits on the fallback
                        // for good).
                        this.probing.store(false, Ordering::Release);
                        this.up.store(true, Ordering::Release);
                        this.metrics.rate_limit_backend_up.set(1);
                        tracing::info!("rate limits are shared in Redis");
                        return;
                    }
                    Ok(Err(error)) => {
                        // Logged when the reason changes, not every half second.
                        let failure = error.to_string();
                        if last_failure.as_ref() != Some(&failure) {
                            tracing::warn!(
                                error = %failure,
                                "Redis refuses the rate-limit script; limits stay this process's own"
                            );
                            last_failure = Some(failure);
                        }
                    }
                    Err(_) => {}
                }
                drop(this);
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
        });
    }
}

/// The rate the probe's own key is checked at: a token every microsecond, so the probe is
/// never refused for its rate, and its key expires at once.
const PROBE_RATE: Rate = Rate {
    per_second: NonZeroU32::new(1_000_000).unwrap(),
    burst: NonZeroU32::new(1).unwrap(),
};

/// How many tokens one round trip asks for: half of what the rate refills in a lease's
/// lifetime, at most the burst and [`MAX_LEASE`], at least one. Slow rates take one token a
/// round trip, and are exact.
fn lease_size(rate: Rate) -> u32 {
    let refilled = rate.per_second.get() as u64 * LEASE_LIFETIME.as_millis() as u64 / 1000;
    ((refilled / 2) as u32)
        .clamp(1, MAX_LEASE)
        .min(rate.burst.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_asks_for_renewal_once_half_used_and_never_gives_a_token_twice() {
        let now = Instant::now();
        let mut lease = Lease::default();
        assert_eq!(lease.take(now), Taken::None, "an empty lease has no token");
        lease.renew(10, 1, now);
        let taken: Vec<Taken> = (0..10).map(|_| lease.take(now)).collect();
        let renew_at: Vec<usize> = (0..taken.len())
            .filter(|&i| taken[i] == Taken::TokenRenewNow)
            .collect();
        assert_eq!(
            renew_at,
            [3],
            "renewal asked once, when half of the 10 (5) are left"
        );
        assert_eq!(
            taken.iter().filter(|t| **t != Taken::None).count(),
            9,
            "10 taken, one of them the renewing caller's: 9 for the others"
        );
        assert_eq!(taken[9], Taken::None);
    }

    #[test]
    fn renewing_keeps_the_tokens_left_and_an_expired_lease_has_none() {
        let now = Instant::now();
        let mut lease = Lease::default();
        lease.renew(8, 0, now);
        for _ in 0..4 {
            assert_ne!(lease.take(now), Taken::None);
        }
        lease.renew(8, 0, now);
        let left = (0..20).filter(|_| lease.take(now) != Taken::None).count();
        assert_eq!(left, 12, "4 left of the first lease and 8 new");

        lease.renew(8, 0, now);
        assert_eq!(lease.take(now + LEASE_LIFETIME), Taken::None, "expired");
        lease.renew(8, 0, now + LEASE_LIFETIME * 2);
        let fresh = (0..20)
            .filter(|_| lease.take(now + LEASE_LIFETIME * 2) != Taken::None)
            .count();
        assert_eq!(fresh, 8, "an expired lease's tokens are not carried over");
    }

    #[test]
    fn slow_rates_lease_one_token_and_are_never_renewed_ahead() {
        let now = Instant::now();
        let mut lease = Lease::default();
        lease.renew(2, 1, now);
        assert_eq!(lease.take(now), Taken::Token);
        assert_eq!(lease.take(now), Taken::None);
    }
}
