//! What a client may work, from its token file entry: the action types of its jobs, the
//! partner connections (third-party `client_id`s) it may act for, and whether the jobs it is
//! handed carry their artifact credentials.
//!
//! ```toml
//! [[clients]]
//! id = "build-team"
//! token_sha256 = "…"
//! allowed_rpcs = ["*"]
//! action_types = ["Build/Custom/DemoBuilder/1", "Deploy/ThirdParty/Acme*/*"]
//! partner_client_ids = ["5f0c7f5e-8d0b-4f51-a1d4-3c2f9e6b7a10"]
//! artifact_credentials = false
//! ```
//!
//! An action type pattern is `category/owner/provider/version`; each segment matches exactly,
//! or with `*` standing for any run of characters. A client without `action_types` may work
//! every action type, and act for every partner unless it lists `partner_client_ids`: the
//! gateway names such clients when it loads the file. A client with `action_types` acts for
//! the partners it lists, none if it lists none.

use std::sync::{Arc, LazyLock};

use wildmatch::WildMatch;

use crate::domain::{ActionTypeId, ClientId};

/// What one client may work. [`Scope::unscoped`] allows everything, as a gateway without scopes
/// always did.
#[derive(Debug, Clone)]
pub struct Scope {
    /// `None`: every action type.
    action_types: Option<Vec<ActionTypePattern>>,
    /// `None`: every partner connection.
    partners: Option<Vec<WildMatch>>,
    /// Whether the jobs the client is handed keep their `artifactCredentials`.
    artifact_credentials: bool,
}

impl Scope {
    /// The scope of a client the token file does not narrow: every action type, every partner,
    /// artifact credentials handed on.
    pub fn unscoped() -> Arc<Self> {
        static UNSCOPED: LazyLock<Arc<Scope>> = LazyLock::new(|| {
            Arc::new(Scope {
                action_types: None,
                partners: None,
                artifact_credentials: true,
            })
        });
        UNSCOPED.clone()
    }

    /// The scope a token file entry names; an `Err` says which entry is malformed.
    pub(super) fn parse(
        action_types: Option<&[String]>,
        partners: Option<&[String]>,
        artifact_credentials: Option<bool>,
    ) -> Result<Self, String> {
        let action_types = action_types
            .map(|patterns| {
                patterns
                    .iter()
                    .map(|pattern| ActionTypePattern::parse(pattern))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let partners = partners
            .map(|patterns| {
                patterns
                    .iter()
                    .map(|pattern| partner_pattern(pattern))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            // A client narrowed to its action types acts for no partner unless it lists some:
            // another team's partner may share an action type with it.
            .or_else(|| action_types.is_some().then(Vec::new));
        Ok(Self {
            action_types,
            partners,
            artifact_credentials: artifact_credentials.unwrap_or(true),
        })
    }

    /// Whether the client may work jobs of `action_type`.
    pub fn allows_action_type(&self, action_type: &ActionTypeId) -> bool {
        self.action_types
            .as_ref()
            .is_none_or(|patterns| patterns.iter().any(|pattern| pattern.matches(action_type)))
    }

    /// Whether the client's action types are narrowed at all: when not, no job needs looking up.
    pub fn limits_action_types(&self) -> bool {
        self.action_types.is_some()
    }

    /// Whether the client may act for the partner connection `client`, and so be handed its
    /// client token.
    pub fn allows_partner(&self, client: &ClientId) -> bool {
        self.partners.as_ref().is_none_or(|patterns| {
            patterns
                .iter()
                .any(|pattern| pattern.matches(client.as_str()))
        })
    }

    /// Whether the jobs the client is handed keep their artifact credentials.
    pub fn hands_artifact_credentials(&self) -> bool {
        self.artifact_credentials
    }

    /// Whether the entry leaves the client unscoped (every action type), for the log at load.
    pub(super) fn is_unscoped(&self) -> bool {
        self.action_types.is_none()
    }
}

impl PartialEq for Scope {
    fn eq(&self, other: &Self) -> bool {
        let patterns = |scope: &Self| {
            scope
                .partners
                .as_ref()
                .map(|partners| partners.iter().map(ToString::to_string).collect::<Vec<_>>())
        };
        self.action_types == other.action_types
            && patterns(self) == patterns(other)
            && self.artifact_credentials == other.artifact_credentials
    }
}

impl Eq for Scope {}

/// One `category/owner/provider/version` pattern.
#[derive(Debug, Clone)]
struct ActionTypePattern {
    text: String,
    segments: [WildMatch; 4],
}

impl PartialEq for ActionTypePattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl ActionTypePattern {
    fn parse(text: &str) -> Result<Self, String> {
        let malformed = || {
            format!(
                "action_types entry {text:?} must be category/owner/provider/version, each of \
                 [0-9A-Za-z_-] or `*`"
            )
        };
        let segments: Vec<&str> = text.split('/').collect();
        let well_formed = segments.len() == 4
            && segments.iter().all(|segment| {
                !segment.is_empty()
                    && segment
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '*'))
            });
        if !well_formed {
            return Err(malformed());
        }
        Ok(Self {
            text: text.to_owned(),
            segments: [0, 1, 2, 3].map(|i| WildMatch::new(segments[i])),
        })
    }

    fn matches(&self, action_type: &ActionTypeId) -> bool {
        let [category, owner, provider, version] = &self.segments;
        category.matches(&action_type.category.to_string())
            && owner.matches(&action_type.owner.to_string())
            && provider.matches(&action_type.provider)
            && version.matches(&action_type.version)
    }
}

/// A partner `client_id`, exactly or with `*`.
fn partner_pattern(text: &str) -> Result<WildMatch, String> {
    let well_formed = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, 'a'..='f' | '-' | '*'));
    if well_formed {
        Ok(WildMatch::new(text))
    } else {
        Err(format!(
            "partner_client_ids entry {text:?} must be a client id (a lowercase UUID), or a \
             pattern of one with `*`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ActionCategory, ActionOwner};

    fn action_type(category: ActionCategory, owner: ActionOwner, provider: &str) -> ActionTypeId {
        ActionTypeId {
            category,
            owner,
            provider: provider.to_owned(),
            version: "1".to_owned(),
        }
    }

    fn scope(action_types: &[&str], partners: &[&str]) -> Scope {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Scope::parse(Some(&owned(action_types)), Some(&owned(partners)), None).unwrap()
    }

    #[test]
    fn an_action_type_is_allowed_by_an_exact_entry_or_a_pattern_and_nothing_else() {
        let scope = scope(
            &["Build/Custom/DemoBuilder/1", "Deploy/ThirdParty/Acme*/*"],
            &[],
        );
        use ActionCategory::{Build, Deploy, Test};
        use ActionOwner::{Custom, ThirdParty};
        assert!(scope.allows_action_type(&action_type(Build, Custom, "DemoBuilder")));
        assert!(scope.allows_action_type(&action_type(Deploy, ThirdParty, "AcmeDeploy")));
        assert!(!scope.allows_action_type(&action_type(Build, Custom, "DemoBuilder2")));
        assert!(!scope.allows_action_type(&action_type(Test, Custom, "DemoBuilder")));
        assert!(!scope.allows_action_type(&action_type(Deploy, Custom, "AcmeDeploy")));
        assert!(scope.limits_action_types());
    }

    #[test]
    fn partners_are_matched_by_id_and_no_list_means_every_partner() {
        let id = ClientId::parse("5f0c7f5e-8d0b-4f51-a1d4-3c2f9e6b7a10").unwrap();
        let other = ClientId::parse("11111111-2222-3333-4444-555555555555").unwrap();
        let listed = scope(&[], &["5f0c7f5e-8d0b-4f51-a1d4-3c2f9e6b7a10"]);
        assert!(listed.allows_partner(&id));
        assert!(!listed.allows_partner(&other));
        assert!(Scope::unscoped().allows_partner(&other));
        assert!(
            !scope(&[], &[]).allows_partner(&id),
            "an empty list allows none"
        );
    }

    #[test]
    fn malformed_entries_are_refused_with_the_entry_named() {
        for bad in [
            "Build/Custom/DemoBuilder",
            "Build/Custom//1",
            "Build/Custom/A B/1",
            "",
        ] {
            let error = Scope::parse(Some(&[bad.to_owned()]), None, None).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
        let error = Scope::parse(None, Some(&["NOT-A-UUID".to_owned()]), None).unwrap_err();
        assert!(error.contains("partner_client_ids"), "{error}");
    }

    #[test]
    fn artifact_credentials_are_handed_on_unless_the_entry_says_not() {
        assert!(Scope::unscoped().hands_artifact_credentials());
        assert!(
            !Scope::parse(None, None, Some(false))
                .unwrap()
                .hands_artifact_credentials()
        );
    }
}
