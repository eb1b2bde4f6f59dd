//! Spawns gateways on port 0 for the black-box tests, on either upstream:
//! - `Backend::InProcess`: `serve --upstream emulator`, the engine in the gateway's process;
//! - `Backend::RealSdk`: the emulator's awsJson1_1 HTTP front, and a gateway with the `aws`
//!   upstream pointed at it: gateway -> aws-sdk-codepipeline (signing, retries) -> HTTP -> emulator.

#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use aws_credential_types::{Credentials, provider::SharedCredentialsProvider};
use codepipeline_gateway::{
    app::{self, Server},
    pb::{
        emulator::{self as admin_pb, emulator_admin_service_client::EmulatorAdminServiceClient},
        jobworker::{self as pb, job_worker_service_client::JobWorkerServiceClient},
    },
    upstream::{
        SdkSettings, Upstream,
        aws::AwsUpstream,
        emulator::{
            Emulator, EmulatorConfig,
            http::{FrontConfig, StaticCredentials},
        },
    },
};
use tokio::net::TcpListener;
use tonic::transport::Channel;

pub const ACCESS_KEY_ID: &str = "AKIDTEST000000000000";
pub const SECRET_ACCESS_KEY: &str = "test-secret-access-key";
pub const REGION: &str = "us-east-1";

/// Which upstream the gateway under test forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The emulator in the gateway's process.
    InProcess,
    /// The real AWS SDK talking HTTP to the emulator's front.
    RealSdk,
}

pub const BACKENDS: [Backend; 2] = [Backend::InProcess, Backend::RealSdk];

/// A gateway under test, with its emulator and clients.
pub struct TestGateway {
    pub client: JobWorkerServiceClient<Channel>,
    pub admin: EmulatorAdminServiceClient<Channel>,
    pub emulator: Arc<Emulator>,
    gateway: Server,
    front: Option<Server>,
}

impl TestGateway {
    pub fn addr(&self) -> std::net::SocketAddr {
        self.gateway.local_addr()
    }

    pub async fn stop(self) {
        self.gateway
            .shutdown()
            .await
            .expect("gateway stops cleanly");
        if let Some(front) = self.front {
            front
                .shutdown()
                .await
                .expect("emulator front stops cleanly");
        }
    }
}

pub fn emulator_config() -> EmulatorConfig {
    EmulatorConfig::default()
}

/// A gateway on `backend` with no jobs, and the demo action type registered.
pub async fn spawn(backend: Backend) -> TestGateway {
    spawn_with(backend, emulator_config(), signing_with(SECRET_ACCESS_KEY)).await
}

/// Credentials for the gateway's `aws` upstream: the emulator's key ID with this secret.
pub fn signing_with(secret: &str) -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Credentials::new(ACCESS_KEY_ID, secret, None, None, "test"))
}

/// A gateway on `backend`; for `RealSdk`, the gateway's SDK client uses `credentials`.
pub async fn spawn_with(
    backend: Backend,
    config: EmulatorConfig,
    credentials: SharedCredentialsProvider,
) -> TestGateway {
    spawn_configured(
        backend,
        config,
        credentials,
        app::GatewayOptions::default(),
        1,
    )
    .await
}

/// A gateway on the real SDK path whose SDK client makes up to `max_attempts` attempts.
pub async fn spawn_real_sdk(config: EmulatorConfig, max_attempts: u32) -> TestGateway {
    spawn_configured(
        Backend::RealSdk,
        config,
        signing_with(SECRET_ACCESS_KEY),
        app::GatewayOptions::default(),
        max_attempts,
    )
    .await
}

/// A gateway on the in-process emulator, serving with `options`.
pub async fn spawn_serving(options: app::GatewayOptions, config: EmulatorConfig) -> TestGateway {
    spawn_configured(
        Backend::InProcess,
        config,
        signing_with(SECRET_ACCESS_KEY),
        options,
        1,
    )
    .await
}

async fn spawn_configured(
    backend: Backend,
    config: EmulatorConfig,
    credentials: SharedCredentialsProvider,
    options: app::GatewayOptions,
    max_attempts: u32,
) -> TestGateway {
    let emulator = Arc::new(Emulator::new(config));
    emulator.seed_demo(0);
    let (upstream, front): (Arc<dyn Upstream>, Option<Server>) = match backend {
        Backend::InProcess => (emulator.clone(), None),
        Backend::RealSdk => {
            let front = app::start_emulator_front(
                TcpListener::bind("127.0.0.1:0").await.unwrap(),
                emulator.clone(),
                FrontConfig {
                    credentials: StaticCredentials {
                        access_key_id: ACCESS_KEY_ID.to_owned(),
                        secret_access_key: SECRET_ACCESS_KEY.to_owned(),
                    },
                    region: REGION.to_owned(),
                },
            )
            .await
            .unwrap();
            let settings = SdkSettings {
                region: Some(REGION.to_owned()),
                endpoint_url: Some(format!("http://{}", front.local_addr())),
                connect_timeout: Duration::from_secs(2),
                operation_timeout: Duration::from_secs(10),
                attempt_timeout: Duration::from_secs(5),
                max_attempts,
            };
            let upstream = AwsUpstream::load(&settings, Some(credentials))
                .await
                .unwrap();
            (Arc::new(upstream), Some(front))
        }
    };
    let gateway = app::start_gateway(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        upstream,
        Some(emulator.clone()),
        options,
    )
    .await
    .unwrap();
    let channel = Channel::from_shared(format!("http://{}", gateway.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    TestGateway {
        client: JobWorkerServiceClient::new(channel.clone()),
        admin: EmulatorAdminServiceClient::new(channel),
        emulator,
        gateway,
        front,
    }
}

pub fn demo_action_type() -> pb::ActionTypeId {
    pb::ActionTypeId {
        category: pb::ActionCategory::Build.into(),
        owner: pb::ActionOwner::Custom.into(),
        provider: "DemoBuilder".to_owned(),
        version: "1".to_owned(),
    }
}

impl TestGateway {
    /// Creates a demo job with this configuration; returns its ID.
    pub async fn create_job(&mut self, configuration: &[(&str, &str)]) -> String {
        self.admin
            .create_job(admin_pb::CreateJobRequest {
                action_type_id: Some(demo_action_type()),
                configuration: configuration
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            })
            .await
            .expect("CreateJob")
            .into_inner()
            .job_id
    }

    /// Polls the demo action type for up to `max` jobs.
    pub async fn poll(&mut self, max: i32) -> Vec<pb::Job> {
        self.client
            .poll_for_jobs(pb::PollForJobsRequest {
                action_type_id: Some(demo_action_type()),
                max_batch_size: Some(max),
                query_param: Default::default(),
            })
            .await
            .expect("PollForJobs")
            .into_inner()
            .jobs
    }

    pub async fn acknowledge(
        &mut self,
        job_id: &str,
        nonce: &str,
    ) -> Result<pb::JobStatus, tonic::Status> {
        self.client
            .acknowledge_job(pb::AcknowledgeJobRequest {
                job_id: job_id.to_owned(),
                nonce: nonce.to_owned(),
            })
            .await
            .map(|r| r.into_inner().status())
    }

    /// Creates a job, polls it and acknowledges it: an InProgress job and its nonce.
    pub async fn in_progress_job(&mut self) -> (String, String) {
        let id = self.create_job(&[]).await;
        let job = self
            .poll(10)
            .await
            .into_iter()
            .find(|job| job.id == id)
            .expect("the new job is handed out");
        self.acknowledge(&job.id, &job.nonce)
            .await
            .expect("AcknowledgeJob");
        (job.id, job.nonce)
    }

    pub async fn job_state(&mut self, job_id: &str) -> admin_pb::JobState {
        self.admin
            .get_job(admin_pb::GetJobRequest {
                job_id: job_id.to_owned(),
            })
            .await
            .expect("GetJob")
            .into_inner()
            .job
            .expect("a job state")
    }
}
