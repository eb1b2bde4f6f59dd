//! The gRPC handlers of `codepipeline.jobworker.v1.ArtifactService`: a job's input artifacts
//! streamed to the worker, its output artifacts streamed from it. Each call first asks
//! CodePipeline for the job's details (GetJobDetails, or GetThirdPartyJobDetails with the client
//! token settled as for the other third-party calls): a job CodePipeline does not know is
//! NOT_FOUND there, before any S3 request, and the details carry the artifact's location, the
//! encryption key and fresh credentials, which never leave the gateway.

use std::{pin::Pin, sync::Arc, time::Instant};

use async_trait::async_trait;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::{Called, JobWorker, caller_of, validated};
use crate::{
    api::{Method, Refusal, status},
    artifacts::{DOWNLOAD_HOLDS, DOWNLOAD_QUEUE, Download, FreshCredentials, UploadOptions},
    auth::{Caller, Credentials},
    domain::{
        Artifact, ArtifactJob, DownloadInputArtifactInput, GetJobDetailsInput, JobData, S3Location,
        SessionCredentials, UploadOutputArtifactInput, validate::InvalidRequest,
    },
    middleware::deadline::CallDeadline,
    pb::jobworker::{
        self as pb, artifact_service_server::ArtifactServiceServer,
        download_input_artifact_response::Response as Outbound,
        upload_output_artifact_request::Request as Inbound,
    },
};

/// What a download sends: the metadata, the bytes, and a status if it fails on the way.
pub type DownloadStream =
    Pin<Box<dyn Stream<Item = Result<pb::DownloadInputArtifactResponse, Status>> + Send>>;

impl JobWorker {
    /// The tonic server for the artifact service.
    pub fn into_artifact_server(self) -> ArtifactServiceServer<Self> {
        ArtifactServiceServer::new(self)
    }

    /// The job's data, from CodePipeline, within `deadline` (else the default deadline), if
    /// the job is one the caller may work: a job of another action type, or none, is refused
    /// alike, before any S3 request.
    async fn job_data(
        &self,
        caller: &Caller,
        job: &ArtifactJob,
        deadline: Option<CallDeadline>,
    ) -> Result<JobData, Status> {
        let deadline =
            deadline.unwrap_or_else(|| CallDeadline(Instant::now() + self.default_deadline));
        let check = self.check_before_details(caller, job.id())?;
        let answer = match job {
            ArtifactJob::Custom(job_id) => {
                let input = GetJobDetailsInput {
                    job_id: job_id.clone(),
                };
                self.forward(input, Some(deadline))
                    .await
                    .map(|details| details.data)
            }
            ArtifactJob::ThirdParty(request) => {
                let (input, _) = self.with_client_token(caller, request.clone())?;
                self.forward(input, Some(deadline))
                    .await
                    .map(|details| details.data)
            }
        };
        self.check_details_answer(caller, job.id(), check, answer, |data| Some(data))
    }
}

/// The artifact named `name` among `artifacts`, with the job's credentials: what a transfer needs.
fn artifact_access(
    job: &ArtifactJob,
    data: JobData,
    name: &str,
    direction: &'static str,
) -> Result<(Artifact, S3Location, SessionCredentials, JobData), Status> {
    let artifacts = match direction {
        "input" => &data.input_artifacts,
        _ => &data.output_artifacts,
    };
    let artifact = artifacts
        .iter()
        .find(|artifact| artifact.name.as_deref() == Some(name))
        .cloned()
        .ok_or_else(|| {
            Status::from(Refusal::NoSuchArtifact {
                job_id: job.id().to_owned(),
                name: name.to_owned(),
                direction,
            })
        })?;
    let no_access = || {
        Status::from(Refusal::NoArtifactAccess {
            job_id: job.id().to_owned(),
        })
    };
    let location = artifact.s3_location.clone().ok_or_else(no_access)?;
    let credentials = data.artifact_credentials.clone().ok_or_else(no_access)?;
    Ok((artifact, location, credentials, data))
}

/// Fresh credentials for a transfer: the job's details, asked again for the caller as the token
/// file names it now (a reload that took the job out of its scope ends the transfer here).
struct JobDetailsAgain {
    worker: JobWorker,
    caller: Caller,
    /// The call's credentials, to be authorized again; `None` on an open gateway.
    credentials: Option<Credentials>,
    job: ArtifactJob,
}

#[async_trait]
impl FreshCredentials for JobDetailsAgain {
    async fn fresh(&self) -> Result<SessionCredentials, Status> {
        let caller = match &self.credentials {
            Some(credentials) => credentials.authorize()?,
            None => self.caller.clone(),
        };
        let data = self.worker.job_data(&caller, &self.job, None).await?;
        data.artifact_credentials.ok_or_else(|| {
            Status::from(Refusal::NoArtifactAccess {
                job_id: self.job.id().to_owned(),
            })
        })
    }
}

#[tonic::async_trait]
impl pb::artifact_service_server::ArtifactService for JobWorker {
    type DownloadInputArtifactStream = DownloadStream;

    async fn download_input_artifact(
        &self,
        request: Request<pb::DownloadInputArtifactRequest>,
    ) -> Result<Response<DownloadStream>, Status> {
        let caller = caller_of(&request);
        let call_credentials = request.extensions().get::<Credentials>().cloned();
        let (input, deadline) = validated::<_, DownloadInputArtifactInput>(request)?;
        let data = self.job_data(&caller, &input.job, deadline).await?;
        let (artifact, location, credentials, _) =
            artifact_access(&input.job, data, &input.artifact_name, "input")?;
        let reserved = self.artifact_memory.reserve(&caller.id, DOWNLOAD_HOLDS)?;
        let fresh = Arc::new(JobDetailsAgain {
            worker: self.clone(),
            caller,
            credentials: call_credentials,
            job: input.job.clone(),
        });
        let job_id = input.job.id().to_owned();
        let download = self
            .artifacts
            .download(&location, &credentials, fresh)
            .await
            .map_err(|error| status::artifact_status(error, &job_id, &input.artifact_name))?;
        let metadata = pb::ArtifactMetadata {
            size_bytes: i64::try_from(download.metadata().size).unwrap_or(i64::MAX),
            content_type: download.metadata().content_type.clone(),
            location: Some(pb::S3ArtifactLocation {
                bucket_name: location.bucket_name.clone(),
                object_key: location.object_key.clone(),
            }),
            revision: artifact.revision.unwrap_or_default(),
            sha256: download.metadata().sha256.clone().unwrap_or_default(),
        };
        let (outbound, responses) = mpsc::channel(DOWNLOAD_QUEUE);
        let first = pb::DownloadInputArtifactResponse {
            response: Some(Outbound::Metadata(metadata)),
        };
        outbound.try_send(Ok(first)).expect("a new queue has room");
        tokio::spawn(
            send_bytes(download, outbound, job_id, input.artifact_name)
                .instrument(tracing::Span::current()),
        );
        // The reservation lasts as long as the response stream: the queue it pays for is read
        // (or dropped) after the last chunk was fetched.
        let responses = ReceiverStream::new(responses).map(move |message| {
            let _held = &reserved;
            message
        });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn upload_output_artifact(
        &self,
        request: Request<Streaming<pb::UploadOutputArtifactRequest>>,
    ) -> Result<Response<pb::UploadOutputArtifactResponse>, Status> {
        let called = Called::of(&request);
        let call_credentials = request.extensions().get::<Credentials>().cloned();
        let deadline = request.extensions().get::<CallDeadline>().copied();
        let mut inbound = request.into_inner();
        // A stream that never sends its header holds its place for no longer than a unary
        // call may take.
        let header = tokio::time::timeout(self.default_deadline, inbound.message())
            .await
            .map_err(|_| Status::from(Refusal::DeadlineExceeded))??;
        let header = match header.and_then(|message| message.request) {
            Some(Inbound::Header(header)) => header,
            _ => {
                return Err(Refusal::ArtifactStream {
                    problem: "the first message must be the header",
                }
                .into());
            }
        };
        let input = UploadOutputArtifactInput::try_from(header)
            .map_err(|invalid: InvalidRequest| status::invalid_request(invalid))?;
        let job_id = input.job.id().to_owned();
        let result = self
            .store_upload(&called.caller, call_credentials, input, inbound, deadline)
            .await;
        self.audit(&called, Method::UploadOutputArtifact, &job_id, &result);
        result.map(Response::new)
    }
}

impl JobWorker {
    /// Streams an upload's bytes to its artifact's location, once the job is found in the
    /// caller's scope; stored only once every byte has provably come.
    async fn store_upload(
        &self,
        caller: &Caller,
        call_credentials: Option<Credentials>,
        input: UploadOutputArtifactInput,
        mut inbound: Streaming<pb::UploadOutputArtifactRequest>,
        deadline: Option<CallDeadline>,
    ) -> Result<pb::UploadOutputArtifactResponse, Status> {
        let data = self.job_data(caller, &input.job, deadline).await?;
        let kms_key_id = data.encryption_key.as_ref().map(|key| key.id.clone());
        let (_, location, credentials, _) =
            artifact_access(&input.job, data, &input.artifact_name, "output")?;
        let _reserved = self
            .artifact_memory
            .reserve(&caller.id, self.artifacts.upload_holds())?;
        let fresh = Arc::new(JobDetailsAgain {
            worker: self.clone(),
            caller: caller.clone(),
            credentials: call_credentials,
            job: input.job.clone(),
        });
        let job_id = input.job.id().to_owned();
        let failed = |error| status::artifact_status(error, &job_id, &input.artifact_name);
        let mut upload = self.artifacts.upload(
            &location,
            &credentials,
            fresh,
            UploadOptions {
                content_type: input.content_type.clone(),
                kms_key_id: kms_key_id.clone(),
                declared_size: input.size_bytes,
            },
        );
        // The object is stored only on evidence that every byte came: the end message, or (for
        // a header that declared the size) exactly the declared bytes. tonic reports a worker's
        // RST_STREAM as the stream's clean end, so the end of the stream alone proves nothing.
        let complete = loop {
            let message = match inbound.message().await {
                Ok(Some(message)) => message,
                Ok(None) => break input.size_bytes.is_some(),
                Err(status) => {
                    upload.abort().await;
                    return Err(status);
                }
            };
            match message.request {
                Some(Inbound::Chunk(bytes)) => {
                    if let Err(error) = upload.write(&bytes).await {
                        upload.abort().await;
                        return Err(failed(error));
                    }
                }
                Some(Inbound::End(_)) => match inbound.message().await {
                    Ok(None) => break true,
                    Ok(Some(_)) => {
                        upload.abort().await;
                        return Err(Refusal::ArtifactStream {
                            problem: "nothing may follow the end message",
                        }
                        .into());
                    }
                    Err(status) => {
                        upload.abort().await;
                        return Err(status);
                    }
                },
                Some(Inbound::Header(_)) | None => {
                    upload.abort().await;
                    return Err(Refusal::ArtifactStream {
                        problem: "after the header, every message must be a chunk or the end",
                    }
                    .into());
                }
            }
        };
        if !complete {
            upload.abort().await;
            return Err(Refusal::ArtifactStream {
                problem: "the stream stopped before its end message and the header declared no \
                          size, so it may have been cut: nothing was stored",
            }
            .into());
        }
        let uploaded = upload.finish().await.map_err(failed)?;
        Ok(pb::UploadOutputArtifactResponse {
            location: Some(pb::S3ArtifactLocation {
                bucket_name: location.bucket_name,
                object_key: location.object_key,
            }),
            size_bytes: i64::try_from(uploaded.size).unwrap_or(i64::MAX),
            sha256: uploaded.sha256,
            etag: uploaded.etag,
            kms_key_id: kms_key_id.unwrap_or_default(),
        })
    }
}

/// Streams a download's bytes as the worker takes them; a failure ends the stream with its
/// status.
async fn send_bytes(
    mut download: Download,
    outbound: mpsc::Sender<Result<pb::DownloadInputArtifactResponse, Status>>,
    job_id: String,
    name: String,
) {
    loop {
        // A worker gone (its response stream dropped) ends the fetching at once, and with it
        // what the transfer holds.
        let next = tokio::select! {
            next = download.next_chunk() => next,
            () = outbound.closed() => return,
        };
        let message = match next {
            Ok(Some(chunk)) => Ok(pb::DownloadInputArtifactResponse {
                response: Some(Outbound::Chunk(chunk)),
            }),
            Ok(None) => return,
            Err(error) => Err(status::artifact_status(error, &job_id, &name)),
        };
        let failed = message.is_err();
        // The worker went away: nothing more to fetch.
        if outbound.send(message).await.is_err() || failed {
            return;
        }
    }
}
