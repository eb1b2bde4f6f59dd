//! Spawns gateways for the black-box tests, built as `main` builds them (from `serve` flags,
//! listening on port 0), on either upstream:
//! - `Backend::InProcess`: `serve --upstream emulator`, the engine in the gateway's process;
//! - `Backend::RealSdk`: the emulator's AWS wire-protocol front (`emulator`), and a gateway with
//!   the `aws` upstream pointed at it: gateway -> aws-sdk-codepipeline (signing, retries) -> HTTP
//!   (awsJson1_1) -> emulator;
//! - `Backend::RealSdkCbor`: the same, speaking Smithy RPC v2 CBOR (`--aws-protocol cbor`).
//!
//! A test that holds for both backends runs once per backend (rstest cases), so its name says
//! which one broke.

use std::sync::Arc;

use rstest_reuse::template;

use aws_credential_types::{Credentials, provider::SharedCredentialsProvider};
use codepipeline_gateway::{
    app::{App, EmulatorApp, Seams},
    config::Cli,
    emulator::Emulator,
    limits::LimitClock,
    observability::Metrics,
    pb::{
        emulator::{self as admin_pb, emulator_admin_service_client::EmulatorAdminServiceClient},
        jobworker::{
            self as pb, artifact_service_client::ArtifactServiceClient,
            job_worker_service_client::JobWorkerServiceClient,
            third_party_job_worker_service_client::ThirdPartyJobWorkerServiceClient,
        },
    },
    upstream::Upstream,
};
use tonic::transport::Channel;

pub const ACCESS_KEY_ID: &str = "AKIDTEST000000000000";
pub const SECRET_ACCESS_KEY: &str = "test-secret-access-key";
pub const REGION: &str = "us-east-1";

/// Which upstream the gateway under test forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The emulator in the gateway's process.
    InProcess,
    /// The real AWS SDK talking HTTP to the emulator's front, in awsJson1_1.
    RealSdk,
    /// The same in Smithy RPC v2 CBOR.
    RealSdkCbor,
}

/// A test of the job-worker path runs on every backend: the emulator in process, and the real SDK
/// to the emulator's front in each wire protocol. `#[apply(every_backend)]` on a test taking
/// `#[case] backend: Backend`.
#[template]
#[rstest]
#[case::in_process(Backend::InProcess)]
#[case::real_sdk(Backend::RealSdk)]
#[case::real_sdk_cbor(Backend::RealSdkCbor)]
pub fn every_backend(#[case] backend: Backend) {}

/// What the wire protocol of CodePipeline cannot change (artifacts, credentials, logs) runs in
/// process and on the real SDK in one protocol.
#[template]
#[rstest]
#[case::in_process(Backend::InProcess)]
#[case::real_sdk(Backend::RealSdk)]
pub fn in_process_and_real_sdk(#[case] backend: Backend) {}

impl Backend {
    /// Whether calls go through the real SDK (either protocol).
    pub fn is_real_sdk(self) -> bool {
        self != Self::InProcess
    }
}

/// A gateway to spawn: its backend, flags and seams.
pub struct Spawn {
    backend: Backend,
    flags: Vec<String>,
    engine: Vec<String>,
    seams: Seams,
}

/// A gateway on `backend` with no jobs and the demo action type registered, the flags' defaults
/// otherwise.
pub fn gateway(backend: Backend) -> Spawn {
    Spawn {
        backend,
        flags: Vec::new(),
        engine: Vec::new(),
        seams: Seams::default(),
    }
}

/// A gateway on `backend`, the flags' defaults otherwise.
pub async fn spawn(backend: Backend) -> TestGateway {
    gateway(backend).spawn().await
}

impl Spawn {
    /// `serve` flags.
    pub fn flags(mut self, flags: &[&str]) -> Self {
        self.flags.extend(flags.iter().map(|flag| flag.to_string()));
        self
    }

    /// Emulator engine flags (`--latency`, `--redispatch-after`, ...), for whichever process runs
    /// the engine.
    pub fn engine(mut self, flags: &[&str]) -> Self {
        self.engine
            .extend(flags.iter().map(|flag| flag.to_string()));
        self
    }

    /// Forward to `upstream` instead.
    pub fn upstream(mut self, upstream: Arc<dyn Upstream>) -> Self {
        self.seams.upstream = Some(upstream);
        self
    }

    /// The limiters run on `clock`.
    pub fn limit_clock(mut self, clock: LimitClock) -> Self {
        self.seams.limit_clock = Some(clock);
        self
    }

    /// The real SDK path signs with the emulator's key ID and this secret.
    pub fn signing_secret(self, secret: &str) -> Self {
        self.aws_credentials(signing_with(secret))
    }

    /// The real SDK path takes its credentials from `provider`.
    pub fn aws_credentials(mut self, provider: SharedCredentialsProvider) -> Self {
        self.seams.aws_credentials = Some(provider);
        self
    }

    /// Starts it (and, on the real SDK path, the emulator front first).
    pub async fn spawn(self) -> TestGateway {
        let Self {
            backend,
            flags,
            engine,
            mut seams,
        } = self;
        if backend.is_real_sdk() && seams.aws_credentials.is_none() {
            seams.aws_credentials = Some(signing_with(SECRET_ACCESS_KEY));
        }
        let given = |flag: &str| flags.iter().any(|given| given == flag);
        let mut serve: Vec<String> = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]
            .map(String::from)
            .into();
        let mut engine_flags = engine;
        if !engine_flags.iter().any(|flag| flag == "--demo-jobs") {
            engine_flags.extend(["--demo-jobs", "0"].map(String::from));
        }
        let front = match backend {
            Backend::InProcess => {
                serve.extend(["--upstream", "emulator"].map(String::from));
                serve.extend(engine_flags);
                None
            }
            Backend::RealSdk | Backend::RealSdkCbor => {
                if backend == Backend::RealSdkCbor {
                    serve.extend(["--aws-protocol", "cbor"].map(String::from));
                }
                let engine: Vec<&str> = engine_flags.iter().map(String::as_str).collect();
                let front = emulator_front(&engine).await;
                if !given("--s3-endpoint-url") {
                    let store = format!("http://{}", front.s3_addr());
                    serve.extend(["--s3-endpoint-url".to_owned(), store]);
                }
                serve.extend(aws_upstream_flags(&front));
                for (flag, default) in [
                    ("--aws-connect-timeout", "2s"),
                    ("--aws-operation-timeout", "10s"),
                    ("--aws-attempt-timeout", "5s"),
                    ("--aws-max-attempts", "1"),
                ] {
                    if !given(flag) {
                        serve.extend([flag.to_owned(), default.to_owned()]);
                    }
                }
                if !given("--token-file") && !given("--tls-client-ca") {
                    serve.push("--allow-unauthenticated".to_owned());
                }
                Some(front)
            }
        };
        serve.extend(flags);
        let app = App::build(parse(&serve, Cli::serve), seams)
            .await
            .expect("the gateway starts");
        let (emulator, admin_addr) = match &front {
            Some(front) => (front.emulator().clone(), front.addr()),
            None => (
                app.emulator().expect("an in-process emulator").clone(),
                app.grpc_addr(),
            ),
        };
        TestGateway {
            // Lazy: a TLS gateway's test makes clients of its own and never uses these.
            client: JobWorkerServiceClient::new(connect_lazy(app.grpc_addr())),
            third_party: ThirdPartyJobWorkerServiceClient::new(connect_lazy(app.grpc_addr())),
            artifacts: ArtifactServiceClient::new(connect_lazy(app.grpc_addr())),
            admin: EmulatorAdminServiceClient::new(connect_lazy(admin_addr)),
            emulator,
            metrics: app.metrics().clone(),
            app,
            front,
        }
    }
}

/// The emulator's AWS wire-protocol front and artifact store, on free ports, checking the test
/// credentials; `engine` are flags of its job engine.
pub async fn emulator_front(engine: &[&str]) -> EmulatorApp {
    let mut flags = vec![
        "--listen",
        "127.0.0.1:0",
        "--s3-listen",
        "127.0.0.1:0",
        "--access-key-id",
        ACCESS_KEY_ID,
        "--secret-access-key",
        SECRET_ACCESS_KEY,
        "--region",
        REGION,
    ];
    flags.extend(engine);
    EmulatorApp::build(Cli::emulator(&flags).unwrap_or_else(|e| panic!("bad test flags: {e}")))
        .await
        .expect("the emulator front starts")
}

/// The `serve` flags of a gateway whose `aws` upstream is `front`.
pub fn aws_upstream_flags(front: &EmulatorApp) -> Vec<String> {
    let endpoint = format!("http://{}", front.addr());
    [
        "--upstream",
        "aws",
        "--aws-region",
        REGION,
        "--aws-endpoint-url",
        &endpoint,
    ]
    .map(String::from)
    .into()
}

/// A gateway app built from `flags` as `main` builds it, listening on free ports: on its own
/// in-process emulator (with no demo jobs) unless `flags` name an upstream. For tests that need
/// the [`App`] itself rather than a [`TestGateway`].
pub async fn app(flags: &[&str], seams: Seams) -> App {
    let mut all = vec!["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"];
    if !flags.contains(&"--upstream") {
        all.extend(["--upstream", "emulator", "--demo-jobs", "0"]);
    }
    all.extend_from_slice(flags);
    App::build(
        Cli::serve(&all).unwrap_or_else(|e| panic!("bad test flags: {e}")),
        seams,
    )
    .await
    .expect("the gateway starts")
}

/// The gateway binary, with the test credentials in its environment (for an `aws` upstream on
/// an emulator front).
pub fn binary() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_codepipeline-gateway"));
    command
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY);
    command
}

/// Runs the binary with `args` until it prints a line starting with `ready`: the child and the
/// rest of that line.
pub fn start_binary(
    args: &[&str],
    stderr: std::process::Stdio,
    ready: &str,
) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = binary()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("the binary starts");
    let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let rest = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix(ready).map(str::to_owned))
        .expect("the binary says it is ready");
    (child, rest)
}

/// The emulator's key ID with this secret.
pub fn signing_with(secret: &str) -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Credentials::new(ACCESS_KEY_ID, secret, None, None, "test"))
}

fn parse<T>(flags: &[String], parse: fn(&[&str]) -> Result<T, clap::Error>) -> T {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    parse(&flags).unwrap_or_else(|error| panic!("bad test flags {flags:?}: {error}"))
}

fn connect_lazy(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

/// A plaintext channel to `addr`.
pub async fn connect(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A gateway under test, with its emulator and clients.
pub struct TestGateway {
    pub client: JobWorkerServiceClient<Channel>,
    pub third_party: ThirdPartyJobWorkerServiceClient<Channel>,
    pub artifacts: ArtifactServiceClient<Channel>,
    /// The emulator's admin service: on the gateway in process, on the front otherwise.
    pub admin: EmulatorAdminServiceClient<Channel>,
    pub emulator: Arc<Emulator>,
    pub metrics: Arc<Metrics>,
    app: App,
    front: Option<EmulatorApp>,
}

impl TestGateway {
    pub fn addr(&self) -> std::net::SocketAddr {
        self.app.grpc_addr()
    }

    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        self.app.metrics_addr()
    }

    /// The emulator front's address, on the real SDK path.
    pub fn front_addr(&self) -> Option<std::net::SocketAddr> {
        self.front.as_ref().map(EmulatorApp::addr)
    }

    /// The emulator's artifact store (S3): the front's on the real SDK path, the gateway's own
    /// in process.
    pub fn s3_addr(&self) -> std::net::SocketAddr {
        self.front
            .as_ref()
            .map(EmulatorApp::s3_addr)
            .or_else(|| self.app.emulator_s3_addr())
            .expect("an emulator serves the artifact store")
    }

    pub async fn stop(self) {
        self.app.shutdown().await.expect("gateway stops cleanly");
        if let Some(front) = self.front {
            front
                .shutdown()
                .await
                .expect("emulator front stops cleanly");
        }
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

/// The demo third-party action type: Build / ThirdParty / DemoPartner / 1.
pub fn demo_third_party_action_type() -> pb::ActionTypeId {
    pb::ActionTypeId {
        owner: pb::ActionOwner::ThirdParty.into(),
        provider: "DemoPartner".to_owned(),
        ..demo_action_type()
    }
}

/// A third-party job as the emulator's admin service created it.
pub struct PartnerJob {
    pub job_id: String,
    pub client_id: String,
    pub client_token: String,
}

impl TestGateway {
    /// Creates a demo third-party job for this client (a new one where empty).
    pub async fn create_third_party_job(
        &mut self,
        client_id: &str,
        client_token: &str,
    ) -> PartnerJob {
        let created = self
            .admin
            .create_job(admin_pb::CreateJobRequest {
                action_type_id: Some(demo_third_party_action_type()),
                configuration: [("ProjectName".to_owned(), "partner-app".to_owned())].into(),
                client_id: client_id.to_owned(),
                client_token: client_token.to_owned(),
                ..Default::default()
            })
            .await
            .expect("CreateJob")
            .into_inner();
        PartnerJob {
            job_id: created.job_id,
            client_id: created.client_id,
            client_token: created.client_token,
        }
    }

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

    /// Every job the emulator has, oldest first.
    pub async fn admin_jobs(&mut self) -> Vec<admin_pb::JobState> {
        self.admin
            .list_jobs(admin_pb::ListJobsRequest::default())
            .await
            .expect("ListJobs")
            .into_inner()
            .jobs
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

/// The gateway's Prometheus page, as a scraper reads it.
pub async fn scrape_metrics(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}
