//! The token file: its schema and one parsed version of it ([`TokenSet`]); [`TokenStore`]
//! re-reads it when it changes.
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
//! action_types = ["Build/Custom/DemoBuilder/1"]   # optional: see super::scope
//! artifact_credentials = false                    # optional: see super::scope
//!
//! [[clients]]
//! id = "ci-runner.example.com"   # the first SAN of its client certificate
//! kind = "certificate"
//! allowed_rpcs = ["PollForJobs", "AcknowledgeJob"]
//! ```
//!
//! An entry is a token client (`kind = "token"`, the default when it has a `token_sha256`) or a
//! certificate client (`kind = "certificate"`, the default without one); a certificate's SAN
//! names only certificate clients, so a certificate can never take a token client's rights.
//!
//! It is re-read when its content changes (see [`super::watched_file`]); a file that does not
//! parse leaves the last good one in force, says so in the log, and sets
//! `gateway_token_file_healthy` to 0.

use std::{collections::HashSet, num::NonZeroU32, sync::Arc};

use enum_map::EnumMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{
    Caller,
    scope::Scope,
    watched_file::{FileContent, FileError, WatchedFile},
};
use crate::{api::Method, limits::Rate};

/// The token file in force, re-read when it changes.
pub type TokenStore = WatchedFile<TokenSet>;

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
    kind: Option<ClientKind>,
    action_types: Option<Vec<String>>,
    partner_client_ids: Option<Vec<String>>,
    artifact_credentials: Option<bool>,
}

/// How a client proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// A bearer token whose digest the entry holds.
    Token,
    /// A client certificate whose first SAN is the entry's id.
    Certificate,
}

/// The RPCs a client may call: the methods its token file entry names, resolved when the file
/// is read, so a call looks its method up rather than matching names.
#[derive(Debug)]
pub(super) struct AllowedRpcs(EnumMap<Method, bool>);

impl AllowedRpcs {
    /// The methods `entries` name (see [`Method::is_named_by`]).
    fn named_by(entries: &[String]) -> Self {
        Self(EnumMap::from_fn(|method: Method| {
            entries.iter().any(|entry| method.is_named_by(entry))
        }))
    }

    /// Whether `method` is one of them.
    pub(super) fn allows(&self, method: Method) -> bool {
        self.0[method]
    }
}

/// One client of the token file.
#[derive(Debug, Clone)]
pub struct Client {
    id: Arc<str>,
    token_sha256: Option<[u8; 32]>,
    allowed: Arc<AllowedRpcs>,
    rate: Option<Rate>,
    kind: ClientKind,
    scope: Arc<Scope>,
}

impl Client {
    fn caller(&self) -> Caller {
        Caller {
            id: self.id.clone(),
            rate: self.rate,
            scope: self.scope.clone(),
        }
    }

    /// The caller and what it may call, both from this one version of the file.
    pub(super) fn identified(&self) -> Identified {
        Identified {
            caller: self.caller(),
            allowed: Some(self.allowed.clone()),
        }
    }
}

/// A caller and its permissions, decided together so a token file reload between the two
/// cannot mix versions.
pub(super) struct Identified {
    pub(super) caller: Caller,
    /// `None`: everything (a certificate of a gateway without a token file: its CA vouched).
    pub(super) allowed: Option<Arc<AllowedRpcs>>,
}

/// The clients of one version of the token file.
#[derive(Debug, Default)]
pub struct TokenSet {
    clients: Vec<Client>,
}

impl TokenSet {
    /// Parses and checks a token file.
    pub fn parse(text: &str) -> Result<Self, FileError> {
        let file: TokenFileToml = FileError::parse_toml(text)?;
        let known_method = |name: &str| Method::ALL.into_iter().any(|m| m.is_named_by(name));
        let mut ids = HashSet::new();
        let mut digests = HashSet::new();
        let mut clients = Vec::with_capacity(file.clients.len());
        for entry in file.clients {
            let problem = |problem: String| FileError::Entry {
                entry: entry.id.clone(),
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
            let kind = match (entry.kind, token_sha256.is_some()) {
                (Some(ClientKind::Certificate), true) => {
                    return Err(problem(
                        "a certificate client has no token_sha256 (its certificate proves it)"
                            .to_owned(),
                    ));
                }
                (Some(ClientKind::Token), false) => {
                    return Err(problem("a token client needs token_sha256".to_owned()));
                }
                (Some(kind), _) => kind,
                (None, true) => ClientKind::Token,
                (None, false) => ClientKind::Certificate,
            };
            let scope = Scope::parse(
                entry.action_types.as_deref(),
                entry.partner_client_ids.as_deref(),
                entry.artifact_credentials,
            )
            .map_err(problem)?;
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
                allowed: Arc::new(AllowedRpcs::named_by(&entry.allowed_rpcs)),
                rate,
                kind,
                scope: Arc::new(scope),
            });
        }
        Ok(Self { clients })
    }

    /// The client whose token this is. Every entry is compared, in constant time, so how long
    /// this takes says nothing about which digest bytes matched.
    pub(super) fn by_token(&self, token: &str) -> Option<&Client> {
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

    /// The certificate client whose id a certificate's SAN is; never a token client.
    pub(super) fn by_certificate(&self, id: &str) -> Option<&Client> {
        self.clients
            .iter()
            .find(|client| client.kind == ClientKind::Certificate && &*client.id == id)
    }

    /// The clients that may work every action type, for the log when the file is loaded.
    pub fn unscoped_clients(&self) -> impl Iterator<Item = &str> {
        self.clients
            .iter()
            .filter(|client| client.scope.is_unscoped())
            .map(|client| &*client.id)
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

impl FileContent for TokenSet {
    const NAME: &'static str = "token file";

    fn parse(text: &str) -> Result<Self, FileError> {
        Self::parse(text)
    }

    fn entries(&self) -> usize {
        self.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Operation;

    fn digest(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    fn file(entries: &str) -> Result<TokenSet, FileError> {
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
        assert!(client.allows(Method::Upstream(Operation::PollForJobs)));
        assert!(client.allows(Method::Upstream(Operation::AcknowledgeJob)));
        assert!(!client.allows(Method::Upstream(Operation::PutJobSuccessResult)));
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

    #[test]
    fn a_certificate_finds_only_certificate_clients_and_kinds_must_fit_their_proof() {
        let set = file(&format!(
            "[[clients]]\nid = \"tok\"\ntoken_sha256 = \"{}\"\nallowed_rpcs = [\"*\"]\n\
             [[clients]]\nid = \"cert\"\nallowed_rpcs = [\"*\"]\n",
            digest("t")
        ))
        .unwrap();
        assert!(
            set.by_certificate("tok").is_none(),
            "a token client is no certificate's"
        );
        assert_eq!(&*set.by_certificate("cert").unwrap().id, "cert");
        let cases = [
            "[[clients]]\nid = \"a\"\nkind = \"token\"\nallowed_rpcs = []\n",
            "[[clients]]\nid = \"a\"\nkind = \"certificate\"\ntoken_sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\nallowed_rpcs = []\n",
            "[[clients]]\nid = \"a\"\nkind = \"robot\"\nallowed_rpcs = []\n",
        ];
        for text in cases {
            assert!(file(text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_malformed_scope_is_an_error_naming_the_client_and_unscoped_clients_are_listed() {
        let error = file(
            "[[clients]]\nid = \"team-b\"\nallowed_rpcs = []\naction_types = [\"Build/Custom\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("team-b") && error.contains("action_types"),
            "{error}"
        );
        let set = file(
            "[[clients]]\nid = \"scoped\"\nallowed_rpcs = []\naction_types = [\"Build/Custom/*/*\"]\n\
             [[clients]]\nid = \"open\"\nallowed_rpcs = []\n",
        )
        .unwrap();
        assert_eq!(set.unscoped_clients().collect::<Vec<_>>(), ["open"]);
    }
}
