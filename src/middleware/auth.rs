//! Authentication and authorisation: who is calling, and may they call this method.
//!
//! Callers prove who they are with a bearer token (`authorization: Bearer <token>`) listed in
//! the token file, or with a client certificate verified by the mTLS client CA (its first SAN is
//! the client id). The token file holds only SHA-256 digests of tokens; a presented token is
//! hashed and compared with every entry in constant time. Health is always reachable without
//! credentials, and so is reflection unless configured otherwise.
//!
//! The token file is TOML, typically a mounted Kubernetes Secret:
//!
//! ```toml
//! [[clients]]
//! id = "python-workers"
//! token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! allowed_rpcs = ["PollForJobs", "AcknowledgeJob", "GetJobDetails", "PutJobSuccessResult", "PutJobFailureResult"]
//! rate_per_second = 20   # optional: overrides the default rate for this client
//! burst = 40             # optional
//! ```
//!
//! It is re-read when its content changes; a file that does not parse leaves the last good one
//! in force, says so in the log, and sets `gateway_token_file_healthy` to 0.

use std::{
    collections::HashSet,
    num::NonZeroU32,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use http::Request;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{
    Status,
    body::Body,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};

use super::{
    Gate,
    methods::{self, Api, Method},
};
use crate::{error::Refusal, metrics::Metrics};

/// Who is calling, as authentication established it. Later layers and handlers read it from the
/// request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The client's id (token file entry or certificate SAN), or `anonymous`.
    pub id: Arc<str>,
    /// The client's own rate, when the token file sets one.
    pub rate: Option<Rate>,
}

impl Caller {
    /// The caller of a gateway that does not authenticate.
    pub fn anonymous() -> Self {
        static ANONYMOUS: std::sync::LazyLock<Arc<str>> =
            std::sync::LazyLock::new(|| Arc::from("anonymous"));
        Self {
            id: ANONYMOUS.clone(),
            rate: None,
        }
    }
}

/// A sustained rate with a burst allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Calls per second, sustained.
    pub per_second: NonZeroU32,
    /// Calls allowed at once after a quiet period.
    pub burst: NonZeroU32,
}

/// Why a token file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// It could not be read.
    #[error("cannot read the token file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not valid TOML of the expected shape. Only the parser's message and the line are
    /// kept: the parser's own rendering quotes the offending line, which could hold a token.
    #[error("the token file is not valid at line {line}: {message}")]
    Syntax {
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An entry is wrong.
    #[error("token file client {client:?}: {problem}")]
    Entry {
        /// The entry's id.
        client: String,
        /// What is wrong.
        problem: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFileToml {
    #[serde(default)]
    clients: Vec<ClientToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientToml {
    id: String,
    token_sha256: Option<String>,
    allowed_rpcs: Vec<String>,
    rate_per_second: Option<NonZeroU32>,
    burst: Option<NonZeroU32>,
}

/// The RPCs a client may call, as its token file entry lists them.
#[derive(Debug)]
struct AllowedRpcs(HashSet<String>);

impl AllowedRpcs {
    /// Whether `method` is listed: by name (`AcknowledgeJob`), by full name
    /// (`codepipeline.jobworker.v1.JobWorkerService/AcknowledgeJob`), or as `*`.
    fn allows(&self, method: &Method) -> bool {
        self.0.contains("*")
            || self.0.contains(method.name)
            || self
                .0
                .contains(&format!("{}/{}", method.service, method.name))
    }
}

/// One client of the token file.
#[derive(Debug, Clone)]
pub struct Client {
    id: Arc<str>,
    token_sha256: Option<[u8; 32]>,
    allowed: Arc<AllowedRpcs>,
    rate: Option<Rate>,
}

impl Client {
    fn caller(&self) -> Caller {
        Caller {
            id: self.id.clone(),
            rate: self.rate,
        }
    }

    /// The caller and what it may call, both from this one version of the file.
    fn identified(&self) -> Identified {
        Identified {
            caller: self.caller(),
            allowed: Some(self.allowed.clone()),
        }
    }
}

/// A caller and its permissions, decided together so a token file reload between the two
/// cannot mix versions.
struct Identified {
    caller: Caller,
    /// `None`: everything (a certificate client the token file does not list; its CA vouched).
    allowed: Option<Arc<AllowedRpcs>>,
}

/// The clients of one version of the token file.
#[derive(Debug, Default)]
pub struct TokenSet {
    clients: Vec<Client>,
}

impl TokenSet {
    /// Parses and checks a token file.
    pub fn parse(text: &str) -> Result<Self, TokenFileError> {
        let file: TokenFileToml = toml::from_str(text).map_err(|error| TokenFileError::Syntax {
            line: error.span().map_or(1, |span| {
                text[..span.start.min(text.len())].lines().count().max(1)
            }),
            message: error.message().to_owned(),
        })?;
        let known_method = |name: &str| {
            name == "*"
                || methods::METHODS
                    .iter()
                    .any(|m| m.name == name || format!("{}/{}", m.service, m.name) == name)
        };
        let mut ids = HashSet::new();
        let mut digests = HashSet::new();
        let mut clients = Vec::with_capacity(file.clients.len());
        for entry in file.clients {
            let problem = |problem: String| TokenFileError::Entry {
                client: entry.id.clone(),
                problem,
            };
            if entry.id.is_empty() || !ids.insert(entry.id.clone()) {
                return Err(problem("the id is empty or used twice".to_owned()));
            }
            let token_sha256 = entry
                .token_sha256
                .as_deref()
                .map(|digest| {
                    let mut bytes = [0u8; 32];
                    hex::decode_to_slice(digest, &mut bytes).map_err(|_| {
                        problem("token_sha256 must be 64 hex digits (a SHA-256 digest)".to_owned())
                    })?;
                    if !digests.insert(bytes) {
                        return Err(problem("token_sha256 is used by another client".to_owned()));
                    }
                    Ok(bytes)
                })
                .transpose()?;
            if let Some(unknown) = entry.allowed_rpcs.iter().find(|name| !known_method(name)) {
                return Err(problem(format!(
                    "allowed_rpcs names an unknown method {unknown:?}"
                )));
            }
            let rate = match (entry.rate_per_second, entry.burst) {
                (Some(per_second), burst) => Some(Rate {
                    per_second,
                    burst: burst.unwrap_or(per_second),
                }),
                (None, Some(_)) => return Err(problem("burst needs rate_per_second".to_owned())),
                (None, None) => None,
            };
            clients.push(Client {
                id: Arc::from(entry.id.as_str()),
                token_sha256,
                allowed: Arc::new(AllowedRpcs(entry.allowed_rpcs.into_iter().collect())),
                rate,
            });
        }
        Ok(Self { clients })
    }

    /// The client whose token this is. Every entry is compared, in constant time, so how long
    /// this takes says nothing about which digest bytes matched.
    fn by_token(&self, token: &str) -> Option<&Client> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for client in &self.clients {
            if let Some(expected) = &client.token_sha256
                && bool::from(expected.ct_eq(&digest))
            {
                found = Some(client);
            }
        }
        found
    }

    fn by_id(&self, id: &str) -> Option<&Client> {
        self.clients.iter().find(|client| &*client.id == id)
    }

    /// How many clients the file lists.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether the file lists no client.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

/// The token file in force, re-read when it changes.
pub struct TokenStore {
    path: PathBuf,
    current: ArcSwap<TokenSet>,
    /// The digest of the file's bytes last read, so an unchanged file is not parsed again.
    last_read: Mutex<[u8; 32]>,
    metrics: Arc<Metrics>,
}

impl TokenStore {
    /// Loads the token file; a gateway does not start on a broken one.
    pub fn load(path: &Path, metrics: Arc<Metrics>) -> Result<Arc<Self>, TokenFileError> {
        let bytes = std::fs::read(path).map_err(|source| TokenFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let set = TokenSet::parse(&String::from_utf8_lossy(&bytes))?;
        metrics
            .token_file_reloads
            .get_or_create(&reload("success"))
            .inc();
        metrics.token_file_healthy.set(1);
        metrics.token_file_clients.set(set.len() as i64);
        tracing::info!(path = %path.display(), clients = set.len(), "token file loaded");
        Ok(Arc::new(Self {
            path: path.to_owned(),
            current: ArcSwap::from_pointee(set),
            last_read: Mutex::new(Sha256::digest(&bytes).into()),
            metrics,
        }))
    }

    /// Re-reads the file if its content changed. A file that cannot be read or parsed keeps
    /// the last good one in force.
    pub fn reload(&self) {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) => {
                // Forget the last content read, so the next good read is parsed again and
                // reported healthy (a Secret's symlink swap can fail one read).
                *self.last_read.lock().unwrap_or_else(|p| p.into_inner()) = [0; 32];
                return self.reload_failed(&error);
            }
        };
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let mut last_read = self.last_read.lock().unwrap_or_else(|p| p.into_inner());
        if *last_read == digest {
            return;
        }
        *last_read = digest;
        match TokenSet::parse(&String::from_utf8_lossy(&bytes)) {
            Ok(set) => {
                tracing::info!(path = %self.path.display(), clients = set.len(), "token file reloaded");
                self.metrics.token_file_clients.set(set.len() as i64);
                self.metrics.token_file_healthy.set(1);
                self.metrics
                    .token_file_reloads
                    .get_or_create(&reload("success"))
                    .inc();
                self.current.store(Arc::new(set));
            }
            Err(error) => self.reload_failed(&error),
        }
    }

    fn reload_failed(&self, error: &(dyn std::error::Error + 'static)) {
        // The error names the file, a line and the problem, never the line's content.
        tracing::error!(
            path = %self.path.display(),
            error = %crate::error::cause_chain(error),
            "token file not reloaded; the last good one stays in force"
        );
        self.metrics.token_file_healthy.set(0);
        self.metrics
            .token_file_reloads
            .get_or_create(&reload("failure"))
            .inc();
    }

    /// Re-reads the file every `interval` in a background task, for as long as the store lives.
    /// Polling the content (rather than watching inodes) follows Kubernetes' atomic symlink swap
    /// of mounted Secrets.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        let store = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(store) = store.upgrade() else { return };
                // File reads block; keep them off the runtime's worker threads.
                if tokio::task::spawn_blocking(move || store.reload())
                    .await
                    .is_err()
                {
                    tracing::error!("token file reload task panicked");
                }
            }
        });
    }

    /// The token set in force.
    pub fn current(&self) -> arc_swap::Guard<Arc<TokenSet>> {
        self.current.load()
    }
}

fn reload(result: &'static str) -> crate::metrics::ReloadLabels {
    crate::metrics::ReloadLabels { result }
}

/// The auth gate.
pub struct Authenticator {
    tokens: Option<Arc<TokenStore>>,
    /// Whether verified client certificates identify callers.
    client_certificates: bool,
    /// Whether reflection needs credentials too.
    reflection_requires_auth: bool,
    metrics: Arc<Metrics>,
}

impl Authenticator {
    /// An authenticator. With neither tokens nor client certificates the gateway is open: every
    /// caller is [`Caller::anonymous`].
    pub fn new(
        tokens: Option<Arc<TokenStore>>,
        client_certificates: bool,
        reflection_requires_auth: bool,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            tokens,
            client_certificates,
            reflection_requires_auth,
            metrics,
        }
    }

    fn is_open(&self) -> bool {
        self.tokens.is_none() && !self.client_certificates
    }

    fn refuse(&self, reason: &'static str, refusal: Refusal) -> Status {
        self.metrics
            .auth_rejected
            .get_or_create(&crate::metrics::AuthRejectedLabels { reason })
            .inc();
        refusal.into()
    }

    /// The client this request's credentials name, if it carries any, with its permissions.
    fn identify(&self, request: &Request<Body>) -> Result<Option<Identified>, Status> {
        if let Some(tokens) = &self.tokens
            && let Some(header) = request.headers().get(http::header::AUTHORIZATION)
        {
            let token = header
                .to_str()
                .ok()
                .and_then(|value| value.split_once(' '))
                .filter(|(scheme, token)| {
                    scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()
                })
                .map(|(_, token)| token.trim())
                .ok_or_else(|| self.refuse("invalid_token", Refusal::MalformedAuthorization))?;
            let set = tokens.current();
            let client = set
                .by_token(token)
                .ok_or_else(|| self.refuse("invalid_token", Refusal::UnknownToken))?;
            return Ok(Some(client.identified()));
        }
        if self.client_certificates
            && let Some(id) = certificate_identity(request)
        {
            let listed = self
                .tokens
                .as_ref()
                .and_then(|tokens| tokens.current().by_id(&id).map(Client::identified));
            return Ok(Some(listed.unwrap_or_else(|| Identified {
                caller: Caller {
                    id: Arc::from(id.as_str()),
                    rate: None,
                },
                allowed: None,
            })));
        }
        Ok(None)
    }
}

impl Gate for Authenticator {
    fn check(&self, request: &mut Request<Body>) -> Result<(), Status> {
        let method = methods::of(request);
        let exempt = method.is_some_and(|method| {
            method.api == Api::Health
                || (method.api == Api::Reflection && !self.reflection_requires_auth)
        });
        if exempt || self.is_open() {
            let caller = Caller::anonymous();
            tracing::Span::current().record("client_id", &*caller.id);
            request.extensions_mut().insert(caller);
            return Ok(());
        }
        let Identified { caller, allowed } = self
            .identify(request)?
            .ok_or_else(|| self.refuse("missing_credentials", Refusal::MissingCredentials))?;
        // An unknown method goes on to be answered UNIMPLEMENTED, once the caller is known.
        if let Some(method) = method
            && !allowed.is_none_or(|allowed| allowed.allows(method))
        {
            return Err(self.refuse(
                "forbidden",
                Refusal::MethodNotAllowed {
                    client_id: caller.id.to_string(),
                    method,
                },
            ));
        }
        tracing::Span::current().record("client_id", &*caller.id);
        request.extensions_mut().insert(caller);
        Ok(())
    }
}

/// The first DNS or URI subject alternative name of the verified client certificate.
fn certificate_identity(request: &Request<Body>) -> Option<String> {
    use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer};
    let certificates = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    let (_, certificate) = X509Certificate::from_der(certificates.first()?.as_ref()).ok()?;
    let names = certificate.subject_alternative_name().ok()??;
    names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::DNSName(name) | GeneralName::URI(name) => Some((*name).to_owned()),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    fn file(entries: &str) -> Result<TokenSet, TokenFileError> {
        TokenSet::parse(entries)
    }

    #[test]
    fn a_token_finds_its_client_and_another_does_not() {
        let set = file(&format!(
            "[[clients]]\nid = \"a\"\ntoken_sha256 = \"{}\"\nallowed_rpcs = [\"*\"]\n\
             [[clients]]\nid = \"b\"\ntoken_sha256 = \"{}\"\nallowed_rpcs = [\"AcknowledgeJob\"]\nrate_per_second = 5\n",
            digest("token-a"),
            digest("token-b")
        ))
        .unwrap();
        assert_eq!(&*set.by_token("token-a").unwrap().id, "a");
        let b = set.by_token("token-b").unwrap();
        assert_eq!(b.rate.unwrap().burst.get(), 5, "burst defaults to the rate");
        assert!(set.by_token("token-c").is_none());
        assert!(set.by_token("").is_none());
    }

    #[test]
    fn allowed_rpcs_are_matched_by_name_full_name_or_star() {
        let set = file(&format!(
            "[[clients]]\nid = \"a\"\ntoken_sha256 = \"{}\"\nallowed_rpcs = [\"PollForJobs\", \"codepipeline.jobworker.v1.JobWorkerService/AcknowledgeJob\"]\n",
            digest("t")
        ))
        .unwrap();
        let client = &set.by_token("t").unwrap().allowed;
        let method = |path| methods::lookup(path).unwrap();
        assert!(client.allows(method(
            "/codepipeline.jobworker.v1.JobWorkerService/PollForJobs"
        )));
        assert!(client.allows(method(
            "/codepipeline.jobworker.v1.JobWorkerService/AcknowledgeJob"
        )));
        assert!(!client.allows(method(
            "/codepipeline.jobworker.v1.JobWorkerService/PutJobSuccessResult"
        )));
    }

    #[test]
    fn a_syntax_error_names_the_line_but_never_quotes_it() {
        let text = "[[clients]]\nid = \"a\"\nallowed_rpcs = []\ntoken = \"plaintext-secret-token\n";
        let error = file(text).unwrap_err().to_string();
        assert!(error.contains("line 4"), "{error}");
        assert!(!error.contains("plaintext-secret-token"), "{error}");
    }

    #[test]
    fn broken_files_are_refused_with_the_reason() {
        let cases = [
            ("not toml", "[[clients"),
            (
                "unknown key",
                "[[clients]]\nid = \"a\"\nallowed_rpcs = []\ntoken = \"plain\"\n",
            ),
            (
                "bad digest",
                "[[clients]]\nid = \"a\"\ntoken_sha256 = \"xyz\"\nallowed_rpcs = []\n",
            ),
            (
                "unknown method",
                "[[clients]]\nid = \"a\"\nallowed_rpcs = [\"DeletePipeline\"]\n",
            ),
            (
                "duplicate id",
                "[[clients]]\nid = \"a\"\nallowed_rpcs = []\n[[clients]]\nid = \"a\"\nallowed_rpcs = []\n",
            ),
            (
                "burst without rate",
                "[[clients]]\nid = \"a\"\nallowed_rpcs = []\nburst = 3\n",
            ),
            (
                "zero rate",
                "[[clients]]\nid = \"a\"\nallowed_rpcs = []\nrate_per_second = 0\n",
            ),
        ];
        for (name, text) in cases {
            assert!(file(text).is_err(), "{name}");
        }
        let same = digest("same");
        let twice = format!(
            "[[clients]]\nid = \"a\"\ntoken_sha256 = \"{same}\"\nallowed_rpcs = []\n[[clients]]\nid = \"b\"\ntoken_sha256 = \"{same}\"\nallowed_rpcs = []\n"
        );
        assert!(file(&twice).is_err(), "one token for two clients");
    }
}
