//! The demo work seeded at start: the demo action types and client, and jobs whose input
//! artifacts are in the store, so a new user has work to poll at once.

use std::collections::BTreeMap;

use codepipeline_job_port::domain::{
    ActionCategory, ActionConfiguration, ActionOwner, ActionTypeId, Artifact, ClientId,
    ClientToken, PipelineContext, S3Location,
};

use super::{Emulator, JobSpec, PartnerClient};
use crate::{random, store};

/// The demo action type seeded at start: Build / Custom / DemoBuilder / 1.
pub fn demo_action_type() -> ActionTypeId {
    ActionTypeId {
        category: ActionCategory::Build,
        owner: ActionOwner::Custom,
        provider: "DemoBuilder".to_owned(),
        version: "1".to_owned(),
    }
}

/// The demo third-party action type seeded at start: Build / ThirdParty / DemoPartner / 1.
pub fn demo_third_party_action_type() -> ActionTypeId {
    ActionTypeId {
        category: ActionCategory::Build,
        owner: ActionOwner::ThirdParty,
        provider: "DemoPartner".to_owned(),
        version: "1".to_owned(),
    }
}

/// The client of the demo third-party jobs. Its token is fixed so a demo client-token file
/// (examples/client-tokens.toml) can hold it: a demo, not a secret.
pub const DEMO_CLIENT_ID: &str = "5f0c7f5e-8d0b-4f51-a1d4-3c2f9e6b7a10";

/// The token of [`DEMO_CLIENT_ID`].
pub const DEMO_CLIENT_TOKEN: &str = "demo-partner-client-token";

/// The client of the demo third-party jobs.
pub fn demo_client() -> PartnerClient {
    PartnerClient {
        id: ClientId::parse(DEMO_CLIENT_ID).expect("the demo client ID is a UUID"),
        token: ClientToken::parse(DEMO_CLIENT_TOKEN).expect("the demo token is short"),
    }
}

impl Emulator {
    /// Registers the demo action types and creates `jobs` Queued jobs for each (the
    /// third-party ones for [`demo_client`]), so a new user has work to poll at once.
    pub fn seed_demo(&self, jobs: usize) {
        for (action_type, client) in [
            (demo_action_type(), None),
            (demo_third_party_action_type(), Some(demo_client())),
        ] {
            self.register_action_type(action_type.clone())
                .expect("the demo action types have workers");
            for n in 1..=jobs {
                let input = demo_artifact(&action_type, "SourceOutput", n);
                let spec = JobSpec {
                    configuration: ActionConfiguration(BTreeMap::from([
                        ("ProjectName".to_owned(), "demo-app".to_owned()),
                        ("DeployToken".to_owned(), random::text(24)),
                    ])),
                    pipeline_context: demo_pipeline_context(&self.config.account_id),
                    input_artifacts: vec![input.clone()],
                    output_artifacts: vec![demo_artifact(&action_type, "BuildOutput", n)],
                    encryption_key: None,
                    client: client.clone(),
                };
                self.create_job(&action_type, spec)
                    .expect("the demo action type was just registered");
                if let Some(location) = &input.s3_location {
                    let revision = input.revision.as_deref().unwrap_or_default();
                    // A demo zip is a few hundred bytes; a store too full for it keeps the job
                    // without its input, which a download then reports as missing.
                    if self
                        .objects
                        .put(
                            location,
                            store::Object::new(store::demo_source_zip(revision), "application/zip"),
                        )
                        .is_err()
                    {
                        tracing::warn!("the store is full: a demo job has no source artifact");
                    }
                }
            }
        }
    }
}

/// A pipeline context for jobs created without one.
pub fn demo_pipeline_context(account_id: &str) -> PipelineContext {
    PipelineContext {
        pipeline_name: Some("demo-pipeline".to_owned()),
        stage_name: Some("Build".to_owned()),
        action_name: Some("DemoBuild".to_owned()),
        action_execution_id: Some(uuid::Uuid::new_v4().to_string()),
        pipeline_arn: Some(format!(
            "arn:aws:codepipeline:us-east-1:{account_id}:demo-pipeline"
        )),
        pipeline_execution_id: Some(uuid::Uuid::new_v4().to_string()),
    }
}

/// The bucket of the demo jobs' artifacts.
pub const DEMO_ARTIFACT_BUCKET: &str = "codepipeline-us-east-1-demo-artifacts";

/// A demo job's artifact: one object per action type, artifact and job number.
fn demo_artifact(action_type: &ActionTypeId, name: &str, n: usize) -> Artifact {
    Artifact {
        name: Some(name.to_owned()),
        revision: Some(format!("demo-revision-{n}")),
        s3_location: Some(S3Location {
            bucket_name: DEMO_ARTIFACT_BUCKET.to_owned(),
            object_key: format!("demo-pipeline/{}/{name}/{n}.zip", action_type.provider),
        }),
    }
}
