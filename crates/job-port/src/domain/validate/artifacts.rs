//! The validators of the artifact service's requests: DownloadInputArtifact and an upload's
//! header, each naming its job (custom, or third-party with its client).

use super::{
    Constraint, InvalidRequest, Shown,
    fields::{ARTIFACT_NAME, CONTENT_TYPE, Checker, shown},
};
use crate::domain::*;
use crate::pb::jobworker as pb;

impl Checker {
    /// The job of an artifact call, its fields under `field`.
    fn artifact_job(&mut self, field: &str, job: Option<&pb::ArtifactJob>) -> Option<ArtifactJob> {
        use pb::artifact_job::Job;
        match job.and_then(|job| job.job.as_ref()) {
            None => {
                self.violation(field, Constraint::Required, Shown::Null);
                None
            }
            Some(Job::JobId(id)) => JobId::parse(id)
                .map(ArtifactJob::Custom)
                .map_err(|broken| self.violation(format!("{field}.job_id"), broken, shown(id)))
                .ok(),
            Some(Job::ThirdParty(third_party)) => {
                let mut nested = Checker::default();
                let job_id = nested.third_party_job_id(&third_party.job_id);
                let credential =
                    nested.credential(&third_party.client_token, &third_party.client_id);
                for mut violation in nested.violations {
                    violation.field = format!("{field}.third_party.{}", violation.field);
                    self.violations.push(violation);
                }
                Some(ArtifactJob::ThirdParty(ThirdPartyRequest {
                    job_id: job_id?,
                    credential: credential?,
                    call: (),
                }))
            }
        }
    }
}

impl TryFrom<pb::DownloadInputArtifactRequest> for DownloadInputArtifactInput {
    type Error = InvalidRequest;

    fn try_from(request: pb::DownloadInputArtifactRequest) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let job = check.artifact_job("job", request.job.as_ref());
        let artifact_name = check.text("artifact_name", &request.artifact_name, &ARTIFACT_NAME);
        check.finish(|| {
            Some(Self {
                job: job?,
                artifact_name,
            })
        })
    }
}

impl TryFrom<pb::UploadOutputArtifactHeader> for UploadOutputArtifactInput {
    type Error = InvalidRequest;

    fn try_from(header: pb::UploadOutputArtifactHeader) -> Result<Self, InvalidRequest> {
        let mut check = Checker::default();
        let job = check.artifact_job("header.job", header.job.as_ref());
        let artifact_name = check.text(
            "header.artifact_name",
            &header.artifact_name,
            &ARTIFACT_NAME,
        );
        let content_type = if header.content_type.is_empty() {
            "application/zip".to_owned()
        } else {
            check.text("header.content_type", &header.content_type, &CONTENT_TYPE)
        };
        let size_bytes = header.size_bytes.and_then(|size| {
            let valid = u64::try_from(size).ok();
            if valid.is_none() {
                let at_least_zero = Constraint::Range { min: 0, max: None };
                check.violation(
                    "header.size_bytes",
                    at_least_zero,
                    Shown::Value(size.to_string()),
                );
            }
            valid
        });
        check.finish(|| {
            Some(Self {
                job: job?,
                artifact_name,
                content_type,
                size_bytes,
            })
        })
    }
}
