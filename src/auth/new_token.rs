//! `codepipeline-gateway token new`: a fresh bearer token and the token file entry that lets it
//! in, so nobody hashes a token by hand. The gateway never sees the token again: the file keeps
//! only its SHA-256 digest.

use base64::Engine;
use rand::RngExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{FileError, TokenSet};

/// What a new token's entry grants.
#[derive(Debug, Clone)]
pub struct NewClient {
    /// The client id (what metrics, logs and the audit trail name).
    pub id: String,
    /// Its `allowed_rpcs`: method names, full names or `*`.
    pub rpcs: Vec<String>,
    /// Its `action_types` scope, when it has one.
    pub action_types: Vec<String>,
}

/// A token, and the entry to add to the token file.
pub struct NewToken {
    /// The bearer token, to hand to the client once.
    pub token: String,
    /// The `[[clients]]` entry, TOML.
    pub entry: String,
}

#[derive(Serialize)]
struct File<'a> {
    clients: [Entry<'a>; 1],
}

#[derive(Serialize)]
struct Entry<'a> {
    id: &'a str,
    token_sha256: String,
    allowed_rpcs: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    action_types: &'a [String],
}

/// The prefix of the gateway's tokens, so secret scanners (and people) can tell one on sight.
const PREFIX: &str = "cpgw_";

impl NewClient {
    /// A random 256-bit token and this client's entry for it, checked as the gateway would read
    /// it: an entry the gateway would refuse (an unknown method, a bad pattern) is an error here.
    pub fn token(&self) -> Result<NewToken, FileError> {
        let secret: [u8; 32] = rand::rng().random();
        let token = format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let file = File {
            clients: [Entry {
                id: &self.id,
                token_sha256: hex::encode(Sha256::digest(token.as_bytes())),
                allowed_rpcs: &self.rpcs,
                action_types: &self.action_types,
            }],
        };
        let entry = toml::to_string(&file).map_err(|error| FileError::Entry {
            entry: self.id.clone(),
            problem: error.to_string(),
        })?;
        TokenSet::parse(&entry)?;
        Ok(NewToken { token, entry })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(rpcs: &[&str]) -> NewClient {
        NewClient {
            id: "team-a".to_owned(),
            rpcs: rpcs.iter().map(|&rpc| rpc.to_owned()).collect(),
            action_types: vec!["Build/Custom/TeamA*/1".to_owned()],
        }
    }

    #[test]
    fn the_entry_lets_its_token_in_and_no_other() {
        let new = client(&["PollForJobs", "AcknowledgeJob"]).token().unwrap();
        assert!(new.token.starts_with(PREFIX) && new.token.len() == PREFIX.len() + 43);
        let tokens = TokenSet::parse(&new.entry).unwrap();
        assert!(tokens.by_token(&new.token).is_some());
        assert!(tokens.by_token("cpgw_another").is_none());
        assert!(
            !new.entry.contains(&new.token),
            "the file holds only the digest"
        );
        let again = client(&["PollForJobs"]).token().unwrap();
        assert_ne!(again.token, new.token);
    }

    #[test]
    fn an_entry_the_gateway_would_refuse_is_refused_here() {
        let error = client(&["PollForJob"]).token().err().expect("a typo");
        assert!(error.to_string().contains("PollForJob"), "{error}");
    }
}
