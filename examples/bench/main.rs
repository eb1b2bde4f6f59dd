//! The benchmark harness. Every figure is measured beside a baseline run on the same machine in
//! the same run, since these machines are shared and noisy:
//!
//! - throughput of AcknowledgeJob through the gateway (in-process emulator, full production
//!   stack) against a bare tonic server answering a constant, both driven by h2load;
//! - latency added by the gateway: gateway -> SDK -> emulator front, against the SDK calling
//!   the same front directly, at concurrency 1 and 64;
//! - a Python worker's CPU per call: grpcio through the gateway against boto3 to the front;
//! - memory: idle, with 10,000 calls in flight, and growth over 1,000,000 calls;
//! - start-up: process start to health SERVING;
//! - the job feed against polling workers: idle polls, pickup latency, polls per job, jobs per
//!   second (`feed.rs`);
//! - rate limits in Redis against in memory: throughput and added latency (`limits.rs`);
//! - third-party calls with the client token the gateway holds against the worker's own
//!   (`third_party.rs`);
//! - the gateway's upstream calls in Smithy RPC v2 CBOR against awsJson1_1 (`protocols.rs`);
//! - artifacts through the gateway against `aws-sdk-s3` to the same store directly, and the
//!   gateway's RSS while 1 GiB streams (`artifacts.rs`);
//! - AcknowledgeJob by a client scoped to its action type against an unscoped one (`scopes.rs`);
//! - a quiet client's latency and the gateway's memory while a hostile client with a valid token
//!   holds what it can (`tenants.rs`).
//!
//! `bash scripts/bench.sh` builds in release mode and runs it; `--smoke` runs every part for
//! seconds only, to keep the harness working (CI runs that, and asserts nothing on timings).

mod artifacts;
mod feed;
mod floor;
mod limits;
mod protocols;
mod scopes;
mod tenants;
mod third_party;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use codepipeline_gateway::pb::{
    emulator::{SetFaultsRequest, emulator_admin_service_client::EmulatorAdminServiceClient},
    jobworker::{self as pb, job_worker_service_client::JobWorkerServiceClient},
};
use prost::Message;
use sha2::Digest;
use tonic::{Request, transport::Channel};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Run every part briefly (harness check, not a measurement).
    #[arg(long)]
    smoke: bool,
    /// The gateway binary.
    #[arg(long, default_value = "target/release/codepipeline-gateway")]
    gateway: PathBuf,
    /// The Python with grpcio, grpcio-tools and boto3.
    #[arg(long, default_value = ".tools/venv/bin/python")]
    python: PathBuf,
    /// Run only these parts (repeat the flag for several); all of them when not given.
    #[arg(long, value_enum)]
    only: Vec<Part>,
}

/// The parts of the run, in the order they run.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Startup,
    Throughput,
    Latency,
    WorkerCpu,
    Memory,
    Feed,
    RateLimits,
    ClientTokens,
    WireProtocols,
    Artifacts,
    Scopes,
    HostileClient,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the floor (a bare tonic server) on this address.
    Floor {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

const TOKEN: &str = "bench-token";
const ACCESS_KEY_ID: &str = "AKIDBENCH00000000000";
const SECRET_ACCESS_KEY: &str = "bench-secret-access-key";
const ACK_PATH: &str = "/codepipeline.jobworker.v1.JobWorkerService/AcknowledgeJob";

/// How much work each part does.
struct Sizes {
    h2load_calls: u64,
    rounds: usize,
    latency_calls: (usize, usize),
    latency_rounds: usize,
    worker_calls: usize,
    in_flight: usize,
    long_run_calls: u64,
    startups: usize,
    feed_workers: usize,
    feed_idle: Duration,
    feed_pickup_jobs: usize,
    feed_backlog_jobs: usize,
    artifact_bytes: usize,
    artifact_rss_bytes: usize,
}

impl Sizes {
    fn new(smoke: bool) -> Self {
        if smoke {
            Self {
                h2load_calls: 2_000,
                rounds: 1,
                latency_calls: (50, 256),
                latency_rounds: 2,
                worker_calls: 50,
                in_flight: 500,
                long_run_calls: 20_000,
                startups: 2,
                feed_workers: 4,
                feed_idle: Duration::from_secs(2),
                feed_pickup_jobs: 3,
                feed_backlog_jobs: 20,
                artifact_bytes: 16 << 20,
                artifact_rss_bytes: 32 << 20,
            }
        } else {
            Self {
                h2load_calls: 300_000,
                rounds: 3,
                latency_calls: (5_000, 30_000),
                latency_rounds: 10,
                worker_calls: 2_000,
                in_flight: 10_000,
                long_run_calls: 1_000_000,
                startups: 10,
                feed_workers: 20,
                feed_idle: Duration::from_secs(20),
                feed_pickup_jobs: 40,
                feed_backlog_jobs: 400,
                artifact_bytes: 256 << 20,
                artifact_rss_bytes: 1 << 30,
            }
        }
    }
}

/// A process of ours, killed when dropped.
struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `program args` and waits for its `... listening on ADDR` line.
    fn start(
        program: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        ready: &str,
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let addr = stdout
            .lines()
            .map_while(Result::ok)
            .find_map(|line| {
                line.strip_prefix(ready)
                    .map(|addr| addr.trim().trim_start_matches("http://").to_owned())
            })
            .with_context(|| format!("{} printed no address", program.display()))?
            .parse()?;
        Ok(Self { child, addr })
    }

    fn rss_mib(&self) -> f64 {
        rss_of(self.child.id())
    }
}

/// A process's resident memory, MiB.
fn rss_of(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn with_token<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("ascii"),
    );
    request
}

async fn channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?)
}

/// Polls the demo job and acknowledges it once: afterwards AcknowledgeJob with the same nonce
/// answers InProgress every time, which is the call the benchmarks repeat.
async fn claimed_job(addr: SocketAddr) -> anyhow::Result<pb::AcknowledgeJobRequest> {
    let mut client = JobWorkerServiceClient::new(channel(addr).await?);
    let job = client
        .poll_for_jobs(with_token(pb::PollForJobsRequest {
            action_type_id: Some(pb::ActionTypeId {
                category: pb::ActionCategory::Build.into(),
                owner: pb::ActionOwner::Custom.into(),
                provider: "DemoBuilder".to_owned(),
                version: "1".to_owned(),
            }),
            max_batch_size: Some(1),
            query_param: Default::default(),
        }))
        .await?
        .into_inner()
        .jobs
        .pop()
        .context("no demo job to claim")?;
    let ack = pb::AcknowledgeJobRequest {
        job_id: job.id,
        nonce: job.nonce,
    };
    client.acknowledge_job(with_token(ack.clone())).await?;
    Ok(ack)
}

/// A gRPC length-prefixed frame of `message`: the body h2load sends.
fn grpc_frame(message: &impl Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut frame = vec![0];
    frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    frame.extend_from_slice(&bytes);
    frame
}

/// Runs h2load against `addr` and returns requests per second.
fn h2load(addr: SocketAddr, body: &Path, calls: u64) -> anyhow::Result<f64> {
    let output = Command::new("h2load")
        .args(["-n", &calls.to_string(), "-c", "16", "-m", "32", "-t", "1"])
        .args(["-d", body.to_str().expect("utf-8 path")])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .args(["-H", &format!("authorization: Bearer {TOKEN}")])
        .arg(format!("http://{addr}{ACK_PATH}"))
        .output()
        .context("h2load (Debian's nghttp2-client) is needed")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let succeeded = text
        .lines()
        .find(|line| line.starts_with("requests:"))
        .and_then(|line| {
            line.split(", ")
                .find_map(|part| part.strip_suffix(" succeeded"))
        })
        .and_then(|n| n.trim().parse::<u64>().ok());
    if succeeded != Some(calls) {
        bail!("h2load: not every request succeeded:\n{text}");
    }
    text.lines()
        .find_map(|line| line.strip_prefix("finished in "))
        .and_then(|rest| rest.split(", ").nth(1))
        .and_then(|rate| rate.trim_end_matches(" req/s").parse().ok())
        .with_context(|| format!("cannot read h2load's rate:\n{text}"))
}

/// How many AcknowledgeJob calls the gateway answered OK, from its metrics page.
async fn acks_ok(metrics: SocketAddr) -> anyhow::Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(metrics).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut page = String::new();
    stream.read_to_string(&mut page).await?;
    let needle = r#"grpc_method="AcknowledgeJob",grpc_code="OK"} "#;
    Ok(page
        .lines()
        .find_map(|line| {
            line.split_once(needle)
                .map(|(_, n)| n.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0))
}

struct Gateway {
    proc: Proc,
    metrics: SocketAddr,
    _dir: tempfile::TempDir,
}

/// The gateway with its full production stack on the in-process emulator: a token file, rate
/// limits (set high enough not to bind), metrics, info-level logging.
fn production_gateway(binary: &Path, extra: &[&str]) -> anyhow::Result<Gateway> {
    production_gateway_for(binary, extra, "")
}

/// As [`production_gateway`], the bench client's token file entry ending with `client_extra`
/// (a scope, say).
fn production_gateway_for(
    binary: &Path,
    extra: &[&str],
    client_extra: &str,
) -> anyhow::Result<Gateway> {
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[clients]]\nid = \"bench\"\ntoken_sha256 = \"{}\"\nallowed_rpcs = [\"*\"]\n{client_extra}\n",
            hex::encode(sha2::Sha256::digest(TOKEN.as_bytes()))
        ),
    )?;
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let metrics_arg = metrics.to_string();
    let mut args = vec![
        "serve",
        "--upstream",
        "emulator",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        &metrics_arg,
        "--demo-jobs",
        "1",
        "--token-file",
        tokens.to_str().expect("utf-8"),
        "--rate-limit-per-second",
        "100000000",
        "--rate-limit-burst",
        "100000000",
        "--max-concurrent-calls",
        "100000",
        "--max-concurrent-calls-per-client",
        "100000",
        "--log",
        "info",
    ];
    args.extend_from_slice(extra);
    let proc = Proc::start(binary, &args, &[], "grpc listening on ")?;
    Ok(Gateway {
        proc,
        metrics,
        _dir: dir,
    })
}

/// The emulator's awsJson1_1 front, with one demo job and the benchmark's static credentials.
fn emulator_front(binary: &Path) -> anyhow::Result<Proc> {
    Proc::start(
        binary,
        &[
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--s3-listen",
            "127.0.0.1:0",
            "--demo-jobs",
            "1",
            "--access-key-id",
            ACCESS_KEY_ID,
            "--secret-access-key",
            SECRET_ACCESS_KEY,
        ],
        &[],
        "emulator listening on ",
    )
}

struct Row {
    what: String,
    value: String,
    baseline: String,
    verdict: String,
}

fn row(what: &str, value: String, baseline: String, verdict: String) -> Row {
    Row {
        what: what.to_owned(),
        value,
        baseline,
        verdict,
    }
}

fn meets(ok: bool, target: &str) -> String {
    format!("{} (target {target})", if ok { "meets" } else { "MISSES" })
}

async fn throughput(args: &Args, sizes: &Sizes, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let gateway = production_gateway(&args.gateway, &[])?;
    let ack = claimed_job(gateway.proc.addr).await?;
    let body_dir = tempfile::tempdir()?;
    let body = body_dir.path().join("ack.grpc");
    std::fs::write(&body, grpc_frame(&ack))?;
    let floor_binary = std::env::current_exe()?;
    let floor = Proc::start(&floor_binary, &["floor"], &[], "grpc listening on ")?;

    let before = acks_ok(gateway.metrics).await?;
    let (mut best_gateway, mut best_floor) = (0f64, 0f64);
    for _ in 0..sizes.rounds {
        best_floor = best_floor.max(h2load(floor.addr, &body, sizes.h2load_calls)?);
        best_gateway = best_gateway.max(h2load(gateway.proc.addr, &body, sizes.h2load_calls)?);
    }
    let answered_ok = acks_ok(gateway.metrics).await? - before;
    let expected = sizes.h2load_calls * sizes.rounds as u64;
    if answered_ok != expected {
        bail!("the gateway answered {answered_ok} of {expected} AcknowledgeJob calls with OK");
    }
    let ratio = best_gateway / best_floor;
    rows.push(row(
        "AcknowledgeJob throughput (h2load -c16 -m32 -t1; best of rounds)",
        format!("{best_gateway:.0} calls/s, every grpc-status OK"),
        format!("{best_floor:.0} calls/s (bare tonic floor)"),
        format!("{ratio:.2}x floor: {}", meets(ratio >= 0.8, ">= 0.8x")),
    ));
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Runs `calls` calls of `call` from `concurrency` tasks; returns their latencies.
async fn latencies<F, Fut>(concurrency: usize, calls: usize, call: F) -> Vec<Duration>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let per_task = calls.div_ceil(concurrency);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    let start = Instant::now();
                    call().await;
                    samples.push(start.elapsed());
                }
                samples
            })
        })
        .collect();
    let mut all = Vec::with_capacity(calls);
    for task in tasks {
        all.extend(task.await.expect("latency task"));
    }
    all
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Latency samples of one comparison: through the gateway against direct, in interleaved rounds.
struct Comparison {
    direct: Vec<Duration>,
    through: Vec<Duration>,
    hop: Vec<Duration>,
    /// Each round's p50 through minus its p50 direct, sorted.
    added_per_round: Vec<f64>,
}

impl Comparison {
    /// The added p50: the median over rounds of each round's difference.
    fn added_p50(&self) -> f64 {
        self.added_per_round[self.added_per_round.len() / 2]
    }
}

/// Runs AcknowledgeJob `calls` times each way at `concurrency`: through the gateway (`grpc`),
/// directly with the SDK, and against the bare floor (`bare`). The rounds interleave, the order
/// swapped each time, so that a noisy moment on this shared machine falls on both sides rather
/// than on one.
async fn compare(
    sizes: &Sizes,
    concurrency: usize,
    calls: usize,
    sdk: &aws_sdk_codepipeline::Client,
    grpc: &JobWorkerServiceClient<Channel>,
    bare: &JobWorkerServiceClient<Channel>,
    ack: &pb::AcknowledgeJobRequest,
) -> Comparison {
    let direct_call = {
        let (sdk, ack) = (sdk.clone(), ack.clone());
        move || {
            let (sdk, ack) = (sdk.clone(), ack.clone());
            async move {
                sdk.acknowledge_job()
                    .job_id(ack.job_id)
                    .nonce(ack.nonce)
                    .send()
                    .await
                    .expect("direct AcknowledgeJob");
            }
        }
    };
    let grpc_call = |client: &JobWorkerServiceClient<Channel>, what: &'static str| {
        let (client, ack) = (client.clone(), ack.clone());
        move || {
            let (mut client, ack) = (client.clone(), ack.clone());
            async move {
                client.acknowledge_job(ack).await.expect(what);
            }
        }
    };
    let mut result = Comparison {
        direct: Vec::new(),
        through: Vec::new(),
        hop: Vec::new(),
        added_per_round: Vec::with_capacity(sizes.latency_rounds),
    };
    let per_round = calls.div_ceil(sizes.latency_rounds);
    for round in 0..sizes.latency_rounds {
        let through_call = grpc_call(grpc, "AcknowledgeJob through the gateway");
        let (mut direct, mut through) = if round % 2 == 0 {
            let direct = latencies(concurrency, per_round, direct_call.clone()).await;
            (
                direct,
                latencies(concurrency, per_round, through_call).await,
            )
        } else {
            let through = latencies(concurrency, per_round, through_call).await;
            (
                latencies(concurrency, per_round, direct_call.clone()).await,
                through,
            )
        };
        direct.sort_unstable();
        through.sort_unstable();
        result
            .added_per_round
            .push(micros(percentile(&through, 0.5)) - micros(percentile(&direct, 0.5)));
        result.direct.extend(direct);
        result.through.extend(through);
        let hop_call = grpc_call(bare, "AcknowledgeJob from the floor");
        result
            .hop
            .extend(latencies(concurrency, per_round, hop_call).await);
    }
    for samples in [&mut result.direct, &mut result.through, &mut result.hop] {
        samples.sort_unstable();
    }
    result.added_per_round.sort_by(f64::total_cmp);
    result
}

fn describe(sorted: &[Duration]) -> String {
    format!(
        "p50 {:.0} us, p90 {:.0} us, p99 {:.0} us",
        micros(percentile(sorted, 0.5)),
        micros(percentile(sorted, 0.9)),
        micros(percentile(sorted, 0.99))
    )
}

/// The gateway on the `aws` upstream pointed at the emulator front at `endpoint`, with `envs`.
fn sdk_gateway(binary: &Path, endpoint: &str, envs: &[(&str, &str)]) -> anyhow::Result<Proc> {
    let mut all_envs = vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ("AWS_REGION", "us-east-1"),
    ];
    all_envs.extend_from_slice(envs);
    Proc::start(
        binary,
        &[
            "serve",
            "--upstream",
            "aws",
            "--aws-endpoint-url",
            endpoint,
            "--allow-unauthenticated",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--rate-limit-per-second",
            "100000000",
            "--rate-limit-burst",
            "100000000",
            "--max-concurrent-calls",
            "100000",
            "--max-concurrent-calls-per-client",
            "100000",
            "--log",
            "info",
        ],
        &all_envs,
        "grpc listening on ",
    )
}

async fn added_latency(args: &Args, sizes: &Sizes, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let emulator = emulator_front(&args.gateway)?;
    let endpoint = format!("http://{}", emulator.addr);
    let gateway = sdk_gateway(&args.gateway, &endpoint, &[])?;
    let ack = claimed_job(gateway.addr).await?;

    let sdk_config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&endpoint)
        .credentials_provider(aws_credential_types::Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "bench",
        ))
        .load()
        .await;
    let sdk = aws_sdk_codepipeline::Client::new(&sdk_config);
    let grpc = JobWorkerServiceClient::new(channel(gateway.addr).await?);

    // The gRPC hop alone: the same client against a bare tonic server answering a constant. Any
    // gateway adds at least this; shown beside the figure, not subtracted from it.
    let floor = Proc::start(
        &std::env::current_exe()?,
        &["floor"],
        &[],
        "grpc listening on ",
    )?;
    let bare = JobWorkerServiceClient::new(channel(floor.addr).await?);

    for (concurrency, calls) in [(1, sizes.latency_calls.0), (64, sizes.latency_calls.1)] {
        let run = compare(sizes, concurrency, calls, &sdk, &grpc, &bare, &ack).await;
        let hop = format!(
            "median of {} rounds; a bare gRPC hop: {:.0} us",
            run.added_per_round.len(),
            micros(percentile(&run.hop, 0.5))
        );
        let verdict = if concurrency == 1 {
            format!(
                "p50 added {:.0} us ({hop}): {}",
                run.added_p50(),
                meets(run.added_p50() <= 150.0, "<= 150 us")
            )
        } else {
            format!("p50 added {:.0} us ({hop})", run.added_p50())
        };
        rows.push(row(
            &format!(
                "AcknowledgeJob latency, concurrency {concurrency}: gateway -> SDK -> emulator"
            ),
            describe(&run.through),
            format!("{} (Rust SDK -> emulator directly)", describe(&run.direct)),
            verdict,
        ));
    }

    // The same at concurrency 1 with the gateway on one worker thread (tokio reads
    // TOKIO_WORKER_THREADS): on a small machine that also runs the client and the emulator, a
    // second gateway thread competes with them for the cores. Context for the figure above,
    // not the verdict.
    let one_worker = sdk_gateway(&args.gateway, &endpoint, &[("TOKIO_WORKER_THREADS", "1")])?;
    let grpc = JobWorkerServiceClient::new(channel(one_worker.addr).await?);
    let run = compare(sizes, 1, sizes.latency_calls.0, &sdk, &grpc, &bare, &ack).await;
    rows.push(row(
        "AcknowledgeJob latency, concurrency 1, gateway on one worker thread",
        describe(&run.through),
        format!("{} (Rust SDK -> emulator directly)", describe(&run.direct)),
        format!("p50 added {:.0} us (for context)", run.added_p50()),
    ));
    Ok(())
}

async fn worker_cpu(args: &Args, sizes: &Sizes, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let emulator = emulator_front(&args.gateway)?;
    let gateway = production_gateway(&args.gateway, &[])?;
    let output = Command::new(&args.python)
        .arg("bench/worker_cpu.py")
        .args([
            "--gateway",
            &gateway.proc.addr.to_string(),
            "--token",
            TOKEN,
        ])
        .args(["--emulator", &format!("http://{}", emulator.addr)])
        .args([
            "--access-key-id",
            ACCESS_KEY_ID,
            "--secret-access-key",
            SECRET_ACCESS_KEY,
        ])
        .args(["--calls", &sizes.worker_calls.to_string()])
        .output()
        .context("running bench/worker_cpu.py")?;
    if !output.status.success() {
        bail!(
            "worker_cpu.py failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let result: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let grpc_us = result["grpcio_cpu_us_per_call"]
        .as_f64()
        .context("grpcio figure")?;
    let boto_us = result["boto3_cpu_us_per_call"]
        .as_f64()
        .context("boto3 figure")?;
    let ratio = grpc_us / boto_us;
    rows.push(row(
        "Python worker CPU per AcknowledgeJob",
        format!("{grpc_us:.0} us (grpcio -> gateway)"),
        format!("{boto_us:.0} us (boto3 -> emulator front)"),
        format!("{ratio:.2}x boto3: {}", meets(ratio <= 0.3, "<= 0.3x")),
    ));
    Ok(())
}

async fn memory(args: &Args, sizes: &Sizes, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let gateway = production_gateway(&args.gateway, &[])?;
    let ack = claimed_job(gateway.proc.addr).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = gateway.proc.rss_mib();

    let admin_channel = channel(gateway.proc.addr).await?;
    let mut admin = EmulatorAdminServiceClient::new(admin_channel);
    admin
        .set_faults(with_token(SetFaultsRequest {
            plan: "*:latency=3s".to_owned(),
        }))
        .await?;
    // h2 streams per connection are limited; spread the calls in flight over connections.
    let mut clients = Vec::new();
    for _ in 0..sizes.in_flight.div_ceil(100) {
        clients.push(JobWorkerServiceClient::new(
            channel(gateway.proc.addr).await?,
        ));
    }
    let calls: Vec<_> = (0..sizes.in_flight)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            let ack = ack.clone();
            tokio::spawn(async move { client.acknowledge_job(with_token(ack)).await.is_ok() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let in_flight = gateway.proc.rss_mib();
    let mut ok = 0;
    for call in calls {
        ok += usize::from(call.await?);
    }
    if ok != sizes.in_flight {
        bail!("only {ok} of {} in-flight calls succeeded", sizes.in_flight);
    }
    admin
        .set_faults(with_token(SetFaultsRequest::default()))
        .await?;

    let body_dir = tempfile::tempdir()?;
    let body = body_dir.path().join("ack.grpc");
    std::fs::write(&body, grpc_frame(&ack))?;
    let warm_up = sizes.long_run_calls / 10;
    h2load(gateway.proc.addr, &body, warm_up)?;
    let after_warm_up = gateway.proc.rss_mib();
    h2load(gateway.proc.addr, &body, sizes.long_run_calls - warm_up)?;
    let after_long_run = gateway.proc.rss_mib();
    let growth = after_long_run / after_warm_up - 1.0;

    rows.push(row(
        "RSS idle",
        format!("{idle:.1} MiB"),
        "-".to_owned(),
        meets(idle <= 20.0, "<= 20 MiB"),
    ));
    rows.push(row(
        &format!("RSS with {} calls in flight", sizes.in_flight),
        format!("{in_flight:.1} MiB"),
        format!("{idle:.1} MiB idle"),
        meets(in_flight <= 100.0, "<= 100 MiB"),
    ));
    rows.push(row(
        &format!("RSS after {} calls", sizes.long_run_calls),
        format!("{after_long_run:.1} MiB"),
        format!("{after_warm_up:.1} MiB after the first {warm_up}"),
        format!(
            "{:+.1}%: {}",
            growth * 100.0,
            meets(growth <= 0.10, "<= 10% growth")
        ),
    ));
    Ok(())
}

async fn startup(args: &Args, sizes: &Sizes, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let mut times = Vec::new();
    for _ in 0..sizes.startups {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen = format!("127.0.0.1:{port}");
        let started = Instant::now();
        let child = Command::new(&args.gateway)
            .args(["serve", "--upstream", "emulator", "--listen", &listen])
            .args(["--metrics-listen", "127.0.0.1:0", "--log", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let guard = Proc {
            child,
            addr: listen.parse()?,
        };
        loop {
            if let Ok(channel) = channel(guard.addr).await
                && let Ok(answer) = HealthClient::new(channel)
                    .check(HealthCheckRequest::default())
                    .await
                && answer.into_inner().status() == ServingStatus::Serving
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("the gateway did not report SERVING within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(started.elapsed());
    }
    times.sort_unstable();
    let median = times[times.len() / 2];
    rows.push(row(
        "Start-up: process start to health SERVING (median)",
        format!("{:.1} ms", median.as_secs_f64() * 1e3),
        format!(
            "max {:.1} ms over {} starts",
            times[times.len() - 1].as_secs_f64() * 1e3,
            times.len()
        ),
        meets(median <= Duration::from_millis(100), "<= 100 ms"),
    ));
    Ok(())
}

fn print_table(rows: &[Row], smoke: bool) {
    if smoke {
        println!("(smoke run: sizes too small to mean anything)\n");
    }
    println!("| measure | gateway | baseline (same run) | result |");
    println!("|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} |",
            r.what, r.value, r.baseline, r.verdict
        );
    }
}

// The allocator the gateway runs on, so the floor the gateway is compared with is as fast as a
// bare tonic server can be made here, not one the gateway beats by its allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Cmd::Floor { listen }) = args.command {
        return floor::serve(listen).await;
    }
    let sizes = Sizes::new(args.smoke);
    let mut rows = Vec::new();
    let runs = |part| args.only.is_empty() || args.only.contains(&part);
    if runs(Part::Startup) {
        startup(&args, &sizes, &mut rows).await?;
    }
    if runs(Part::Throughput) {
        throughput(&args, &sizes, &mut rows).await?;
    }
    if runs(Part::Latency) {
        added_latency(&args, &sizes, &mut rows).await?;
    }
    if runs(Part::WorkerCpu) {
        worker_cpu(&args, &sizes, &mut rows).await?;
    }
    if runs(Part::Memory) {
        memory(&args, &sizes, &mut rows).await?;
    }
    if runs(Part::Feed) {
        feed::feed(&args, &sizes, &mut rows).await?;
    }
    if runs(Part::RateLimits) {
        limits::rate_limit_backends(&args, &sizes, &mut rows).await?;
    }
    if runs(Part::ClientTokens) {
        third_party::client_tokens(&args, &sizes, &mut rows).await?;
    }
    if runs(Part::WireProtocols) {
        protocols::wire_protocols(&args, &sizes, &mut rows).await?;
    }
    if runs(Part::Artifacts) {
        artifacts::artifacts(&args, &sizes, &mut rows).await?;
    }
    if runs(Part::Scopes) {
        scopes::scopes(&args, &sizes, &mut rows).await?;
    }
    if runs(Part::HostileClient) {
        tenants::hostile_client(&args, &sizes, &mut rows).await?;
    }
    print_table(&rows, args.smoke);
    Ok(())
}
