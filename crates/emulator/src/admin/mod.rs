//! The emulator's admin gRPC service (`codepipeline.emulator.v1.EmulatorAdminService`): register
//! action types, create jobs, read what workers did, and put or read the objects of the jobs'
//! artifacts in the artifact store (streamed, so tests can use objects of hundreds of MiB).
//! Served only in emulator mode.

use std::{pin::Pin, sync::Arc};

use bytes::Bytes;
use futures_util::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::{
    ArtifactSide, Emulator, JobResult, JobSnapshot, JobSpec, PartnerClient, demo_pipeline_context,
    faults::FaultPlan,
    store::{self, Content, Object},
};
use crate::pb::{
    emulator::{self as pb, emulator_admin_service_server::EmulatorAdminService},
    jobworker as jw,
};
use codepipeline_job_port::domain::{
    ActionConfiguration, ActionOwner, ActionTypeId, ClientId, ClientToken, EncryptionKey, validate,
    validate::{FieldViolation, InvalidRequest, Shown},
};
use codepipeline_job_port::domain::{JobId, S3Location};
use codepipeline_job_port::upstream::{AwsErrorCode, UpstreamError};

mod status;

/// The admin service over a shared emulator.
#[derive(Clone)]
pub struct AdminService {
    emulator: Arc<Emulator>,
}

impl AdminService {
    /// The service for this emulator.
    pub fn new(emulator: Arc<Emulator>) -> Self {
        Self { emulator }
    }

    /// The tonic server for this service.
    pub fn into_server(
        self,
    ) -> pb::emulator_admin_service_server::EmulatorAdminServiceServer<Self> {
        pb::emulator_admin_service_server::EmulatorAdminServiceServer::new(self)
    }
}

/// The size of the chunks ReadOutputArtifact streams.
const READ_CHUNK: usize = 1024 * 1024;

/// ReadOutputArtifact's answer stream.
type OutputStream =
    Pin<Box<dyn Stream<Item = Result<pb::ReadOutputArtifactResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EmulatorAdminService for AdminService {
    type ReadOutputArtifactStream = OutputStream;

    async fn register_action_type(
        &self,
        request: Request<pb::RegisterActionTypeRequest>,
    ) -> Result<Response<pb::RegisterActionTypeResponse>, Status> {
        let request = request.into_inner();
        let action_type =
            validate::action_type_id("action_type_id", request.action_type_id.as_ref())
                .map_err(status::invalid_request)?;
        self.emulator
            .register_action_type(action_type)
            .map_err(status::refused)?;
        Ok(Response::new(pb::RegisterActionTypeResponse {}))
    }

    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::CreateJobResponse>, Status> {
        let request = request.into_inner();
        let action_type =
            validate::action_type_id("action_type_id", request.action_type_id.as_ref())
                .map_err(status::invalid_request)?;
        let client = partner_client(&action_type, &request.client_id, &request.client_token)
            .map_err(status::invalid_request)?;
        let spec = JobSpec {
            configuration: ActionConfiguration(request.configuration.into_iter().collect()),
            pipeline_context: request.pipeline_context.map_or_else(
                || demo_pipeline_context(&self.emulator.config.account_id),
                Into::into,
            ),
            input_artifacts: request
                .input_artifacts
                .into_iter()
                .map(Into::into)
                .collect(),
            output_artifacts: request
                .output_artifacts
                .into_iter()
                .map(Into::into)
                .collect(),
            encryption_key: request
                .encryption_key
                .filter(|key| !key.id.is_empty())
                .map(|key| EncryptionKey { id: key.id }),
            client: client.clone(),
        };
        let job_id = self
            .emulator
            .create_job(&action_type, spec)
            .map_err(status::refused)?;
        let (client_id, client_token) = client
            .map(|client| (client.id.to_string(), client.token.expose().to_owned()))
            .unwrap_or_default();
        Ok(Response::new(pb::CreateJobResponse {
            job_id: job_id.to_string(),
            client_id,
            client_token,
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let job_id =
            validate::job_id(&request.into_inner().job_id).map_err(status::invalid_request)?;
        let job = self.emulator.job(&job_id).ok_or_else(|| {
            status::refused(UpstreamError::service(
                AwsErrorCode::JobNotFound,
                format!("Job {job_id} was not found"),
            ))
        })?;
        Ok(Response::new(pb::GetJobResponse {
            job: Some(job_state(job)),
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let request = request.into_inner();
        let action_type = request
            .action_type_id
            .as_ref()
            .map(|id| validate::action_type_id("action_type_id", Some(id)))
            .transpose()
            .map_err(status::invalid_request)?;
        let jobs = self.emulator.jobs(action_type.as_ref());
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.into_iter().map(job_state).collect(),
        }))
    }

    async fn get_call_counts(
        &self,
        _request: Request<pb::GetCallCountsRequest>,
    ) -> Result<Response<pb::GetCallCountsResponse>, Status> {
        let store_calls = self.emulator.store_call_counts();
        let calls = self
            .emulator
            .call_counts()
            .into_iter()
            .map(|(op, count)| (op.as_str().to_owned(), count))
            .chain(
                store_calls
                    .into_iter()
                    .map(|(op, count)| (op.as_str().to_owned(), count)),
            )
            .collect();
        Ok(Response::new(pb::GetCallCountsResponse { calls }))
    }

    async fn set_faults(
        &self,
        request: Request<pb::SetFaultsRequest>,
    ) -> Result<Response<pb::SetFaultsResponse>, Status> {
        let plan = FaultPlan::parse(&request.into_inner().plan).map_err(|problem| {
            status::invalid_request(InvalidRequest {
                violations: vec![FieldViolation::rule("plan", problem, Shown::Null)],
            })
        })?;
        self.emulator.set_faults(plan);
        Ok(Response::new(pb::SetFaultsResponse {}))
    }

    async fn attach_input_artifact(
        &self,
        request: Request<Streaming<pb::AttachInputArtifactRequest>>,
    ) -> Result<Response<pb::AttachInputArtifactResponse>, Status> {
        use pb::attach_input_artifact_request::Request as Message;
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(pb::AttachInputArtifactRequest {
                request: Some(Message::Header(header)),
            }) => header,
            _ => {
                return Err(status::invalid_request(InvalidRequest {
                    violations: vec![FieldViolation::rule(
                        "header",
                        "the first message must be the header",
                        Shown::Null,
                    )],
                }));
            }
        };
        let (job_id, location) =
            self.artifact(&header.job_id, ArtifactSide::Input, &header.artifact_name)?;
        let mut content = Content::default();
        // What the store could not keep is refused as it comes, not held whole first.
        let room = self.emulator.objects().room();
        while let Some(message) = stream.message().await? {
            match message.request {
                Some(Message::Chunk(chunk)) => {
                    if content.len() + chunk.len() as u64 > room {
                        return Err(status::store_full());
                    }
                    content.push(Bytes::from(chunk));
                }
                Some(Message::Header(_)) | None => {
                    return Err(status::invalid_request(InvalidRequest {
                        violations: vec![FieldViolation::rule(
                            "chunk",
                            "only the first message is a header; the others are chunks",
                            Shown::Null,
                        )],
                    }));
                }
            }
        }
        let content_type = match header.content_type.as_str() {
            "" => "application/zip",
            given => given,
        };
        let object = self
            .emulator
            .objects()
            .put(&location, object_of(content, content_type))
            .map_err(|_full| status::store_full())?;
        tracing::debug!(job_id = %job_id, size = object.content.len(), "input artifact attached");
        Ok(Response::new(pb::AttachInputArtifactResponse {
            location: Some(jw::S3ArtifactLocation {
                bucket_name: location.bucket_name,
                object_key: location.object_key,
            }),
            size_bytes: object.content.len() as i64,
            etag: object.etag.clone(),
            sha256: object.checksums.sha256.clone().unwrap_or_default(),
        }))
    }

    async fn read_output_artifact(
        &self,
        request: Request<pb::ReadOutputArtifactRequest>,
    ) -> Result<Response<Self::ReadOutputArtifactStream>, Status> {
        use pb::read_output_artifact_response::Response as Message;
        let request = request.into_inner();
        let (job_id, location) = self.artifact(
            &request.job_id,
            ArtifactSide::Output,
            &request.artifact_name,
        )?;
        let object = self.emulator.objects().get(&location).ok_or_else(|| {
            status::refused(UpstreamError::service(
                AwsErrorCode::InvalidJobState,
                format!(
                    "Nothing was written at output artifact {} of job {job_id}",
                    request.artifact_name
                ),
            ))
        })?;
        let metadata = pb::OutputArtifactMetadata {
            location: Some(jw::S3ArtifactLocation {
                bucket_name: location.bucket_name,
                object_key: location.object_key,
            }),
            size_bytes: object.content.len() as i64,
            content_type: object.content_type.clone().unwrap_or_default(),
            server_side_encryption: object.encryption.algorithm.clone().unwrap_or_default(),
            kms_key_id: object.encryption.kms_key_id.clone().unwrap_or_default(),
            etag: object.etag.clone(),
            sha256: object.checksums.sha256.clone().unwrap_or_default(),
            parts: object.parts,
        };
        // Slices share the object's memory; each is copied into its message only when sent.
        let slices: Vec<Bytes> = object
            .content
            .chunks()
            .iter()
            .flat_map(|chunk| {
                (0..chunk.len())
                    .step_by(READ_CHUNK)
                    .map(|at| chunk.slice(at..(at + READ_CHUNK).min(chunk.len())))
                    .collect::<Vec<_>>()
            })
            .collect();
        let chunks = slices.into_iter().map(|chunk| {
            Ok(pb::ReadOutputArtifactResponse {
                response: Some(Message::Chunk(chunk.to_vec())),
            })
        });
        let first = Ok(pb::ReadOutputArtifactResponse {
            response: Some(Message::Metadata(metadata)),
        });
        let stream = futures_util::stream::iter(std::iter::once(first).chain(chunks));
        Ok(Response::new(Box::pin(stream)))
    }
}

impl AdminService {
    /// A job's artifact location by name: INVALID_ARGUMENT for a bad job ID or an artifact the
    /// job does not have, NOT_FOUND for a job that does not exist.
    fn artifact(
        &self,
        job_id: &str,
        side: ArtifactSide,
        name: &str,
    ) -> Result<(JobId, S3Location), Status> {
        let job_id = JobId::parse(job_id).map_err(|broken| {
            status::invalid_request(InvalidRequest {
                violations: vec![FieldViolation::new("job_id", broken, Shown::text(job_id))],
            })
        })?;
        let location = self
            .emulator
            .artifact_location(&job_id, side, name)
            .map_err(status::refused)?
            .ok_or_else(|| {
                let side = match side {
                    ArtifactSide::Input => "input",
                    ArtifactSide::Output => "output",
                };
                status::invalid_request(InvalidRequest {
                    violations: vec![FieldViolation::rule(
                        "artifact_name",
                        format!("is not an {side} artifact of the job with an S3 location"),
                        Shown::text(name),
                    )],
                })
            })?;
        Ok((job_id, location))
    }
}

/// An object of these bytes, its ETag and SHA-256 computed as S3 would for a PutObject.
fn object_of(content: Content, content_type: &str) -> Object {
    use md5::Md5;
    use sha2::{Digest, Sha256};
    let (mut md5, mut sha256) = (Md5::new(), Sha256::new());
    for chunk in content.chunks() {
        md5.update(chunk);
        sha256.update(chunk);
    }
    Object {
        etag: store::quoted_hex(&md5.finalize()),
        checksums: store::Checksums {
            sha256: Some(aws_smithy_types::base64::encode(sha256.finalize())),
            crc32: None,
        },
        content,
        content_type: Some(content_type.to_owned()),
        encryption: store::Encryption::default(),
        parts: 0,
        last_modified: std::time::SystemTime::now(),
    }
}

/// The client of a new job: for a third-party action type the one asked for, with a new ID or
/// token for what was left unset; for a custom one none, and asking for one is an error.
fn partner_client(
    action_type: &ActionTypeId,
    client_id: &str,
    client_token: &str,
) -> Result<Option<PartnerClient>, InvalidRequest> {
    let mut violations = Vec::new();
    if action_type.owner != ActionOwner::ThirdParty {
        for (field, value) in [("client_id", client_id), ("client_token", client_token)] {
            if !value.is_empty() {
                violations.push(FieldViolation::rule(
                    field,
                    "is only for a third-party action type",
                    Shown::Null,
                ));
            }
        }
        return if violations.is_empty() {
            Ok(None)
        } else {
            Err(InvalidRequest { violations })
        };
    }
    let random = PartnerClient::random();
    let id = match client_id {
        "" => Some(random.id),
        given => ClientId::parse(given)
            .map_err(|broken| {
                violations.push(FieldViolation::new("client_id", broken, Shown::text(given)));
            })
            .ok(),
    };
    let token = match client_token {
        "" => Some(random.token),
        given => ClientToken::parse(given)
            .map_err(|broken| {
                let secret = Shown::Secret {
                    len: given.chars().count(),
                };
                violations.push(FieldViolation::new("client_token", broken, secret));
            })
            .ok(),
    };
    match (id, token) {
        (Some(id), Some(token)) => Ok(Some(PartnerClient { id, token })),
        _ => Err(InvalidRequest { violations }),
    }
}

fn job_state(job: JobSnapshot) -> pb::JobState {
    let mut state = pb::JobState {
        job_id: job.id.to_string(),
        action_type_id: Some(jw::ActionTypeId::from(&job.action_type_id)),
        status: job.status.to_pb().into(),
        created: Some(job.created.into()),
        dispatch_count: job.dispatch_count,
        acknowledge_count: job.acknowledge_count,
        result_count: job.result_count,
        continuation_token: job.continuation_token,
        continues_job_id: job.continues.map(|id| id.to_string()),
        continued_by_job_id: job.continued_by.map(|id| id.to_string()),
        client_id: job.client_id.map(|id| id.to_string()).unwrap_or_default(),
        ..Default::default()
    };
    match job.result {
        Some(JobResult::Success {
            current_revision,
            execution_details,
            output_variables,
        }) => {
            state.current_revision = current_revision.as_ref().map(Into::into);
            state.execution_details = execution_details.as_ref().map(Into::into);
            state.output_variables = output_variables.into_iter().collect();
        }
        Some(JobResult::Failure(details)) => state.failure_details = Some((&details).into()),
        None => {}
    }
    state
}
