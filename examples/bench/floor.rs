//! The floor: a bare tonic server answering AcknowledgeJob with a constant, no middleware, no
//! upstream. What the gateway's throughput is compared against.

use std::net::SocketAddr;

use codepipeline_gateway::pb::jobworker::{
    self as pb,
    job_worker_service_server::{JobWorkerService, JobWorkerServiceServer},
};
use tonic::{Request, Response, Status};

struct Constant;

#[tonic::async_trait]
impl JobWorkerService for Constant {
    type StreamJobsStream = tonic::codegen::BoxStream<pb::StreamJobsResponse>;

    async fn stream_jobs(
        &self,
        _request: Request<tonic::Streaming<pb::StreamJobsRequest>>,
    ) -> Result<Response<Self::StreamJobsStream>, Status> {
        Err(Status::unimplemented("floor"))
    }

    async fn acknowledge_job(
        &self,
        _request: Request<pb::AcknowledgeJobRequest>,
    ) -> Result<Response<pb::AcknowledgeJobResponse>, Status> {
        Ok(Response::new(pb::AcknowledgeJobResponse {
            status: pb::JobStatus::InProgress.into(),
        }))
    }

    async fn poll_for_jobs(
        &self,
        _request: Request<pb::PollForJobsRequest>,
    ) -> Result<Response<pb::PollForJobsResponse>, Status> {
        Err(Status::unimplemented("floor"))
    }

    async fn get_job_details(
        &self,
        _request: Request<pb::GetJobDetailsRequest>,
    ) -> Result<Response<pb::GetJobDetailsResponse>, Status> {
        Err(Status::unimplemented("floor"))
    }

    async fn put_job_success_result(
        &self,
        _request: Request<pb::PutJobSuccessResultRequest>,
    ) -> Result<Response<pb::PutJobSuccessResultResponse>, Status> {
        Err(Status::unimplemented("floor"))
    }

    async fn put_job_failure_result(
        &self,
        _request: Request<pb::PutJobFailureResultRequest>,
    ) -> Result<Response<pb::PutJobFailureResultResponse>, Status> {
        Err(Status::unimplemented("floor"))
    }
}

/// Serves the floor on `listen` until killed, announcing the address like the gateway does.
pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("grpc listening on {}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(JobWorkerServiceServer::new(Constant))
        // TCP_NODELAY, as the gateway sets it: the comparison is of the gRPC stacks alone.
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await?;
    Ok(())
}
