//! Client tokens the gateway holds for its third-party workers, so partner workers never hold
//! the secret: the client-token file, and how a call's client is found.
//!
//! The client-token file is TOML, mounted from a Kubernetes Secret and re-read on change like
//! the token file:
//!
//! ```toml
//! [[clients]]
//! client_id = "5f0c7f5e-8d0b-4f51-a1d4-3c2f9e6b7a10"
//! client_token = "the token CodePipeline gave the partner for this client"
//! ```
//!
//! A third-party call that carries no `client_token` gets the token of its job's client. The
//! gateway learns that client from the request's `client_id` (what the poll returned, which the
//! worker passes on: it works on every replica) or, when the request names none, from what this
//! gateway's own PollForThirdPartyJobs returned for the job (only the replica that polled
//! knows). No token found is FAILED_PRECONDITION, never a call upstream without one.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use serde::Deserialize;

use super::{
    scope::Scope,
    watched_file::{FileContent, FileError, WatchedFile},
};
use crate::{
    domain::{
        ClientCredential, ClientId, ClientToken, ThirdPartyInput, ThirdPartyJob, ThirdPartyJobId,
        ThirdPartyRequest,
    },
    observability::{
        Metrics,
        metrics::{ClientFrom, ClientTokenLabels},
    },
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientTokenFileToml {
    #[serde(default)]
    clients: Vec<ClientTokenToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientTokenToml {
    client_id: String,
    client_token: String,
}

/// The tokens of one version of the client-token file, by client.
#[derive(Default)]
pub struct ClientTokenSet {
    tokens: HashMap<ClientId, ClientToken>,
}

impl ClientTokenSet {
    /// Parses and checks a client-token file. Errors name the client, never its token.
    pub fn parse(text: &str) -> Result<Self, FileError> {
        let file: ClientTokenFileToml = FileError::parse_toml(text)?;
        let mut tokens = HashMap::with_capacity(file.clients.len());
        for entry in file.clients {
            let problem = |problem: &str| FileError::Entry {
                entry: entry.client_id.clone(),
                problem: problem.to_owned(),
            };
            let id = ClientId::parse(&entry.client_id)
                .map_err(|description| problem(&format!("client_id {description}")))?;
            let token = ClientToken::parse(&entry.client_token)
                .map_err(|description| problem(&format!("client_token {description}")))?;
            if tokens.insert(id, token).is_some() {
                return Err(problem("the client_id is listed twice"));
            }
        }
        Ok(Self { tokens })
    }

    /// The token of `client`.
    pub fn token(&self, client: &ClientId) -> Option<&ClientToken> {
        self.tokens.get(client)
    }
}

impl FileContent for ClientTokenSet {
    const NAME: &'static str = "client-token file";

    fn parse(text: &str) -> Result<Self, FileError> {
        Self::parse(text)
    }

    fn entries(&self) -> usize {
        self.tokens.len()
    }
}

/// Why the gateway has no client token for a call that carries none.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoClientToken {
    /// The gateway was started without a client-token file.
    #[error(
        "the request has no client_token and this gateway holds no client tokens (it has no --client-token-file)"
    )]
    NoFile,
    /// The request names no client and this gateway did not poll the job.
    #[error(
        "the request has neither client_token nor client_id, and this gateway did not return job {0} from a poll; send the client_id the poll returned"
    )]
    UnknownClient(ThirdPartyJobId),
    /// The file has no token for the job's client.
    #[error("the client-token file has no token for client {0}")]
    NotInFile(ClientId),
    /// The caller's scope does not include the job's client: its token is not handed over.
    #[error("the caller may not act for client {client}")]
    NotInScope {
        /// The job's client.
        client: ClientId,
        /// Whether the request named it (else the gateway knew it from its poll, and the
        /// refusal must not tell that the job exists).
        named: bool,
    },
}

/// The most jobs whose client a gateway remembers from its polls. Past it, the oldest are
/// forgotten (their workers can still name the client).
const REMEMBERED_POLLS: usize = 65_536;

/// Which client each job a poll returned belongs to, for the most recent polls.
#[derive(Default)]
struct PolledClients {
    clients: HashMap<ThirdPartyJobId, ClientId>,
    order: VecDeque<ThirdPartyJobId>,
}

impl PolledClients {
    fn remember(&mut self, job: ThirdPartyJobId, client: ClientId) {
        if self.clients.insert(job.clone(), client).is_none() {
            self.order.push_back(job);
        }
        while self.order.len() > REMEMBERED_POLLS {
            if let Some(oldest) = self.order.pop_front() {
                self.clients.remove(&oldest);
            }
        }
    }
}

/// The client tokens the gateway supplies: the client-token file, if any, and the clients of
/// the jobs its polls returned.
pub struct ClientTokens {
    file: Option<Arc<WatchedFile<ClientTokenSet>>>,
    polled: Mutex<PolledClients>,
    metrics: Arc<Metrics>,
}

impl ClientTokens {
    /// The vault over the client-token file (`None`: the gateway holds no tokens).
    pub fn new(file: Option<Arc<WatchedFile<ClientTokenSet>>>, metrics: Arc<Metrics>) -> Self {
        Self {
            file,
            polled: Mutex::default(),
            metrics,
        }
    }

    /// Remembers the client of each job a poll returned.
    pub fn remember(&self, jobs: &[ThirdPartyJob]) {
        let mut polled = self.polled.lock().unwrap_or_else(|p| p.into_inner());
        for job in jobs {
            if let (Ok(id), Ok(client)) = (
                ThirdPartyJobId::parse(&job.job_id),
                ClientId::parse(&job.client_id),
            ) {
                polled.remember(id, client);
            }
        }
    }

    /// The request with its client token: its own, or the one the gateway holds for the job's
    /// client, if `scope` lets the caller act for that client.
    pub fn complete<T>(
        &self,
        request: ThirdPartyRequest<T>,
        scope: &Scope,
    ) -> Result<ThirdPartyInput<T>, NoClientToken> {
        let (client, client_from) = match &request.credential {
            ClientCredential::Token(token) => {
                let token = token.clone();
                return Ok(request.with_token(token));
            }
            ClientCredential::Client(client) => (client.clone(), ClientFrom::Request),
            ClientCredential::Unnamed => {
                let polled = self.polled.lock().unwrap_or_else(|p| p.into_inner());
                match polled.clients.get(&request.job_id) {
                    Some(client) => (client.clone(), ClientFrom::Poll),
                    None if self.file.is_none() => return Err(NoClientToken::NoFile),
                    None => return Err(NoClientToken::UnknownClient(request.job_id.clone())),
                }
            }
        };
        if !scope.allows_partner(&client) {
            return Err(NoClientToken::NotInScope {
                client,
                named: client_from == ClientFrom::Request,
            });
        }
        let file = self.file.as_ref().ok_or(NoClientToken::NoFile)?;
        let token = file
            .current()
            .token(&client)
            .cloned()
            .ok_or(NoClientToken::NotInFile(client))?;
        self.metrics
            .client_tokens_supplied
            .get_or_create(&ClientTokenLabels { client_from })
            .inc();
        Ok(request.with_token(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "5f0c7f5e-8d0b-4f51-a1d4-3c2f9e6b7a10";
    const OTHER: &str = "0e1d2c3b-4a59-4687-9a8b-7c6d5e4f3a21";

    fn request(credential: ClientCredential) -> ThirdPartyRequest<()> {
        ThirdPartyRequest {
            job_id: ThirdPartyJobId::parse("job-1").unwrap(),
            credential,
            call: (),
        }
    }

    fn vault(file: &str) -> (ClientTokens, tempfile::NamedTempFile) {
        let mut path = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut path, file.as_bytes()).unwrap();
        let metrics = Metrics::new();
        let file = WatchedFile::load(path.path(), metrics.client_token_file.clone()).unwrap();
        (ClientTokens::new(Some(file), metrics), path)
    }

    fn client(id: &str) -> ClientId {
        ClientId::parse(id).unwrap()
    }

    #[test]
    fn a_partner_token_is_withheld_from_a_client_not_scoped_to_that_partner() {
        let (vault, _file) = vault(&format!(
            "[[clients]]\nclient_id = \"{CLIENT}\"\nclient_token = \"held-by-the-gateway\"\n"
        ));
        let scope = Scope::parse(None, Some(&[OTHER.to_owned()]), None).unwrap();
        assert_eq!(
            vault
                .complete(request(ClientCredential::Client(client(CLIENT))), &scope)
                .unwrap_err(),
            NoClientToken::NotInScope {
                client: client(CLIENT),
                named: true
            }
        );
    }

    #[test]
    fn the_token_of_the_named_client_is_supplied_and_the_workers_own_is_kept() {
        let (vault, _file) = vault(&format!(
            "[[clients]]\nclient_id = \"{CLIENT}\"\nclient_token = \"held-by-the-gateway\"\n"
        ));
        let supplied = vault
            .complete(
                request(ClientCredential::Client(client(CLIENT))),
                &Scope::unscoped(),
            )
            .unwrap();
        assert_eq!(supplied.client_token.expose(), "held-by-the-gateway");
        let own = ClientToken::parse("the-workers-own").unwrap();
        let kept = vault
            .complete(
                request(ClientCredential::Token(own.clone())),
                &Scope::unscoped(),
            )
            .unwrap();
        assert_eq!(kept.client_token, own);
        assert_eq!(
            vault
                .complete(
                    request(ClientCredential::Client(client(OTHER))),
                    &Scope::unscoped()
                )
                .unwrap_err(),
            NoClientToken::NotInFile(client(OTHER))
        );
    }

    #[test]
    fn a_job_this_gateway_polled_needs_no_client_id() {
        let (vault, _file) = vault(&format!(
            "[[clients]]\nclient_id = \"{CLIENT}\"\nclient_token = \"held\"\n"
        ));
        assert!(matches!(
            vault.complete(request(ClientCredential::Unnamed), &Scope::unscoped()),
            Err(NoClientToken::UnknownClient(_))
        ));
        vault.remember(&[ThirdPartyJob {
            client_id: CLIENT.to_owned(),
            job_id: "job-1".to_owned(),
        }]);
        let supplied = vault
            .complete(request(ClientCredential::Unnamed), &Scope::unscoped())
            .unwrap();
        assert_eq!(supplied.client_token.expose(), "held");
    }

    #[test]
    fn without_a_file_only_the_workers_own_token_goes() {
        let vault = ClientTokens::new(None, Metrics::new());
        assert_eq!(
            vault
                .complete(
                    request(ClientCredential::Client(client(CLIENT))),
                    &Scope::unscoped()
                )
                .unwrap_err(),
            NoClientToken::NoFile
        );
        assert_eq!(
            vault
                .complete(request(ClientCredential::Unnamed), &Scope::unscoped())
                .unwrap_err(),
            NoClientToken::NoFile
        );
    }

    #[test]
    fn polls_are_remembered_up_to_a_bound() {
        let mut polled = PolledClients::default();
        for n in 0..REMEMBERED_POLLS + 10 {
            polled.remember(
                ThirdPartyJobId::parse(&n.to_string()).unwrap(),
                client(CLIENT),
            );
        }
        assert_eq!(polled.clients.len(), REMEMBERED_POLLS);
        assert!(
            !polled
                .clients
                .contains_key(&ThirdPartyJobId::parse("0").unwrap())
        );
        assert!(
            polled.clients.contains_key(
                &ThirdPartyJobId::parse(&(REMEMBERED_POLLS + 9).to_string()).unwrap()
            )
        );
    }

    #[test]
    fn broken_files_are_refused_without_quoting_a_token() {
        let cases = [
            (
                "not a uuid",
                "[[clients]]\nclient_id = \"partner\"\nclient_token = \"tok-1\"\n".to_owned(),
            ),
            (
                "empty token",
                format!("[[clients]]\nclient_id = \"{CLIENT}\"\nclient_token = \"\"\n"),
            ),
            (
                "twice",
                format!(
                    "[[clients]]\nclient_id = \"{CLIENT}\"\nclient_token = \"tok-1\"\n[[clients]]\nclient_id = \"{CLIENT}\"\nclient_token = \"tok-2\"\n"
                ),
            ),
            (
                "unknown key",
                format!("[[clients]]\nclient_id = \"{CLIENT}\"\ntoken = \"tok-1\"\n"),
            ),
            (
                "syntax",
                format!("[[clients]]\nclient_id = \"{CLIENT}\"\nclient_token = \"tok-1\n"),
            ),
        ];
        for (name, text) in cases {
            let error = ClientTokenSet::parse(&text)
                .err()
                .unwrap_or_else(|| panic!("{name} parsed"));
            let message = error.to_string();
            assert!(!message.contains("tok-1"), "{name}: {message}");
        }
    }
}
