//! The artifact credentials the engine issued: every poll or details call hands out fresh
//! temporary credentials (`ASIA...`, a secret, a session token), as CodePipeline does, and the
//! registry remembers each with its job and expiry so the artifact store can check requests
//! signed with them.
//!
//! Each credential stays valid until it expires, however many were issued after it, as
//! CodePipeline's do. The registry is bounded all the same: a job keeps its [`PER_JOB`] newest
//! credentials (a bound against a runaway caller, far above what workers and the gateway ask
//! for within a credential's lifetime), and credentials expired for longer than
//! [`FORGET_EXPIRED_AFTER`] are dropped. Until then an expired key is still recognised, so the
//! store can answer `ExpiredToken` as S3 does rather than call the key unknown.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant, SystemTime},
};

use codepipeline_job_port::domain::{JobId, SessionCredentials};

/// How many credentials a job keeps: each details call issues new ones, and older ones must stay
/// valid (a worker may still be using them), so this only bounds a runaway caller.
pub const PER_JOB: usize = 1024;

/// How long an expired credential is still recognised (answered `ExpiredToken`).
pub const FORGET_EXPIRED_AFTER: Duration = Duration::from_secs(60 * 60);

/// How often issuing also sweeps out long-expired credentials.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// One issued credential: the job it belongs to, its secret halves and when it expires.
#[derive(Clone)]
pub struct IssuedCredentials {
    /// The access key ID (`ASIA...`).
    pub access_key_id: String,
    /// The job the credential was issued for.
    pub job_id: JobId,
    /// The secret access key.
    pub secret_access_key: String,
    /// The session token requests must carry.
    pub session_token: String,
    /// When it stops working.
    pub expires_at: SystemTime,
}

impl IssuedCredentials {
    /// Whether it has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }
}

impl std::fmt::Debug for IssuedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("job_id", &self.job_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The issued credentials, by access key ID, and per job in issue order.
pub struct Registry {
    ttl: Duration,
    by_key: HashMap<String, IssuedCredentials>,
    by_job: HashMap<JobId, VecDeque<String>>,
    last_sweep: Instant,
}

impl Registry {
    /// An empty registry whose credentials live for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            by_key: HashMap::new(),
            by_job: HashMap::new(),
            last_sweep: Instant::now(),
        }
    }

    /// Issues new credentials for `job` and remembers them.
    pub fn issue(&mut self, job: &JobId, now: SystemTime) -> SessionCredentials {
        self.sweep(now);
        let issued = IssuedCredentials {
            access_key_id: format!("ASIA{}", random_upper(16)),
            job_id: job.clone(),
            secret_access_key: crate::random::text(40),
            session_token: crate::random::text(96),
            expires_at: now + self.ttl,
        };
        let keys = self.by_job.entry(job.clone()).or_default();
        keys.push_back(issued.access_key_id.clone());
        while keys.len() > PER_JOB {
            if let Some(oldest) = keys.pop_front() {
                self.by_key.remove(&oldest);
            }
        }
        let credentials = SessionCredentials {
            access_key_id: issued.access_key_id.clone(),
            secret_access_key: issued.secret_access_key.clone(),
            session_token: issued.session_token.clone(),
        };
        self.by_key.insert(issued.access_key_id.clone(), issued);
        credentials
    }

    /// The credentials with this access key ID, expired or not, while remembered.
    pub fn get(&self, access_key_id: &str) -> Option<&IssuedCredentials> {
        self.by_key.get(access_key_id)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Forgets credentials expired for longer than [`FORGET_EXPIRED_AFTER`], at most every
    /// [`SWEEP_EVERY`].
    fn sweep(&mut self, now: SystemTime) {
        if self.last_sweep.elapsed() < SWEEP_EVERY {
            return;
        }
        self.last_sweep = Instant::now();
        self.forget_expired(now);
    }

    fn forget_expired(&mut self, now: SystemTime) {
        let forgotten = |issued: &IssuedCredentials| {
            now.duration_since(issued.expires_at)
                .is_ok_and(|expired_for| expired_for >= FORGET_EXPIRED_AFTER)
        };
        self.by_key.retain(|_, issued| !forgotten(issued));
        let by_key = &self.by_key;
        self.by_job.retain(|_, keys| {
            keys.retain(|key| by_key.contains_key(key));
            !keys.is_empty()
        });
    }
}

/// Upper-case letters and digits, as AWS access key IDs have.
fn random_upper(len: usize) -> String {
    crate::random::text(len).to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_credentials_are_found_by_key_with_their_job_and_expiry() {
        let mut registry = Registry::new(Duration::from_secs(900));
        let job = JobId::random();
        let now = SystemTime::now();
        let issued = registry.issue(&job, now);
        assert!(issued.access_key_id.starts_with("ASIA"));
        assert_eq!(issued.access_key_id.len(), 20);
        let found = registry.get(&issued.access_key_id).unwrap();
        assert_eq!(found.job_id, job);
        assert_eq!(found.secret_access_key, issued.secret_access_key);
        assert_eq!(found.session_token, issued.session_token);
        assert_eq!(found.expires_at, now + Duration::from_secs(900));
        assert!(!found.is_expired(now));
        assert!(found.is_expired(now + Duration::from_secs(900)));
        assert!(registry.get("ASIANOTISSUED0000000").is_none());
        assert!(
            !format!("{found:?}").contains(&issued.secret_access_key),
            "Debug redacts the secret"
        );
    }

    #[test]
    fn a_job_keeps_only_its_newest_credentials() {
        let mut registry = Registry::new(Duration::from_secs(900));
        let job = JobId::random();
        let now = SystemTime::now();
        let keys: Vec<String> = (0..PER_JOB + 3)
            .map(|_| registry.issue(&job, now).access_key_id)
            .collect();
        assert_eq!(registry.len(), PER_JOB);
        assert!(keys[..3].iter().all(|key| registry.get(key).is_none()));
        assert!(keys[3..].iter().all(|key| registry.get(key).is_some()));
        registry.issue(&JobId::random(), now);
        assert_eq!(registry.len(), PER_JOB + 1, "other jobs have their own");
    }

    #[test]
    fn long_expired_credentials_are_forgotten_recently_expired_ones_kept() {
        let mut registry = Registry::new(Duration::from_secs(1));
        let now = SystemTime::now();
        let old = registry.issue(&JobId::random(), now).access_key_id;
        let later = now + FORGET_EXPIRED_AFTER + Duration::from_secs(2);
        let recent = registry
            .issue(&JobId::random(), later - Duration::from_secs(30))
            .access_key_id;
        registry.forget_expired(later);
        assert!(registry.get(&old).is_none());
        assert!(registry.get(&recent).is_some_and(|c| c.is_expired(later)));
        assert_eq!(registry.by_job.len(), 1);
    }
}
