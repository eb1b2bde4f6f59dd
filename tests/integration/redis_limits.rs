//! Rate limits shared in a real Redis (Debian's `redis-server`, started here on a free port):
//! several gateways on one Redis admit one rate between them, and spend one upstream budget;
//! Redis dying, pausing or missing at start never fails a call for any reason but its own
//! limit; the limits are shared again once Redis answers.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::support;
use codepipeline_gateway::{
    app::{App, Seams},
    pb::jobworker::{self as pb, job_worker_service_client::JobWorkerServiceClient},
    upstream::Operation,
};
use tonic::{Code, transport::Channel};
use tonic_types::StatusExt;

const UNKNOWN_JOB: &str = "00000000-0000-4000-8000-000000000000";

/// A `redis-server` of this test's own, on a free port, with no persistence.
struct Redis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Self {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.launch().await;
        redis
    }

    async fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package) must be installed");
        self.child = Some(child);
        let started = Instant::now();
        while !self.answers().await {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn answers(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").await.is_ok()
            && tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut reply))
                .await
                .is_ok_and(|read| read.is_ok())
            && &reply == b"+PONG\r\n"
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.signal_quietly();
        }
        self.kill();
    }
}

impl Redis {
    fn signal_quietly(&self) -> std::io::Result<()> {
        // A paused server would not die of SIGKILL any later than this; resume it first.
        let pid = self
            .child
            .as_ref()
            .map(|c| c.id().to_string())
            .unwrap_or_default();
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .map(drop)
    }
}

/// A gateway built from `flags` (on its own in-process emulator unless `flags` say otherwise).
async fn gateway(flags: &[&str]) -> App {
    support::app(flags, Seams::default()).await
}

/// Gateways on the Redis backend, with a client rate of `per_second` and burst `burst`.
async fn redis_gateways(redis: &Redis, n: usize, per_second: u32, burst: u32) -> Vec<App> {
    let url = redis.url();
    let (rate, burst) = (per_second.to_string(), burst.to_string());
    let flags = [
        "--rate-limit-backend",
        "redis",
        "--redis-url",
        &url,
        "--rate-limit-per-second",
        &rate,
        "--rate-limit-burst",
        &burst,
    ];
    let mut apps = Vec::new();
    for _ in 0..n {
        apps.push(gateway(&flags).await);
    }
    for app in &apps {
        wait_for(|| backend_up(app) == Some(1), "the shared limits are up").await;
    }
    apps
}

async fn client(addr: SocketAddr) -> JobWorkerServiceClient<Channel> {
    JobWorkerServiceClient::new(
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
}

fn ack() -> pb::AcknowledgeJobRequest {
    pb::AcknowledgeJobRequest {
        job_id: UNKNOWN_JOB.to_owned(),
        nonce: "1".to_owned(),
    }
}

fn backend_up(app: &App) -> Option<i64> {
    app.metrics()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix("gateway_rate_limit_backend_up "))
        .and_then(|value| value.trim().parse().ok())
}

async fn wait_for(mut check: impl FnMut() -> bool, what: &str) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Calls AcknowledgeJob on every gateway, `per_gateway_per_second` times a second each, for
/// `duration`: the codes answered.
async fn drive(apps: &[App], per_gateway_per_second: u32, duration: Duration) -> Vec<Code> {
    let mut tasks = Vec::new();
    for app in apps {
        let mut client = client(app.grpc_addr()).await;
        tasks.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            let mut ticks = tokio::time::interval(Duration::from_secs(1) / per_gateway_per_second);
            let started = Instant::now();
            while started.elapsed() < duration {
                ticks.tick().await;
                let code = match client.acknowledge_job(ack()).await {
                    Ok(_) => Code::Ok,
                    Err(status) => status.code(),
                };
                codes.push(code);
            }
            codes
        }));
    }
    let mut codes = Vec::new();
    for task in tasks {
        codes.extend(task.await.unwrap());
    }
    codes
}

fn count(codes: &[Code], code: Code) -> usize {
    codes.iter().filter(|c| **c == code).count()
}

#[tokio::test]
async fn three_gateways_on_one_redis_admit_one_rate_between_them() {
    let redis = Redis::start().await;
    let (rate, burst, seconds) = (20, 20, 5);
    let shared = redis_gateways(&redis, 3, rate, burst).await;
    // One client, three times its rate in all: its own rate on each gateway.
    let codes = drive(&shared, rate, Duration::from_secs(seconds)).await;
    let admitted = count(&codes, Code::NotFound);
    assert_eq!(
        admitted + count(&codes, Code::ResourceExhausted),
        codes.len(),
        "every call was admitted or refused for its rate: {codes:?}"
    );
    let expected = (burst + rate * seconds as u32) as f64;
    let ratio = admitted as f64 / expected;
    eprintln!(
        "redis backend: {admitted} of {} admitted; the rate allows {expected}",
        codes.len()
    );
    assert!(
        (0.9..=1.1).contains(&ratio),
        "admitted {admitted} of {} over three gateways; the rate allows {expected}",
        codes.len()
    );

    let local: Vec<App> = {
        let (rate, burst) = (rate.to_string(), burst.to_string());
        let flags = [
            "--rate-limit-per-second",
            &rate,
            "--rate-limit-burst",
            &burst,
        ];
        vec![
            gateway(&flags).await,
            gateway(&flags).await,
            gateway(&flags).await,
        ]
    };
    let codes = drive(&local, rate, Duration::from_secs(seconds)).await;
    let local_admitted = count(&codes, Code::NotFound);
    eprintln!(
        "memory backend: {local_admitted} of {} admitted",
        codes.len()
    );
    assert!(
        local_admitted as f64 > 2.5 * expected,
        "on the memory backend each gateway has its own rate: {local_admitted} admitted"
    );
    for app in shared.into_iter().chain(local) {
        app.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn three_gateways_on_one_redis_spend_one_upstream_budget_counted_at_the_emulator() {
    let redis = Redis::start().await;
    let front = support::emulator_front(&["--demo-jobs", "0"]).await;
    let url = redis.url();
    let mut flags: Vec<String> = support::aws_upstream_flags(&front);
    flags.extend(
        [
            "--aws-max-attempts",
            "1",
            "--allow-unauthenticated",
            "--rate-limit-backend",
            "redis",
            "--redis-url",
            &url,
            "--rate-limit-per-second",
            "1000",
            "--rate-limit-burst",
            "1000",
            "--upstream-rate-limit-per-second",
            "10",
            "--upstream-rate-limit-burst",
            "10",
        ]
        .map(String::from),
    );
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let credentials = support::signing_with(support::SECRET_ACCESS_KEY);
    let mut apps = Vec::new();
    for _ in 0..3 {
        let seams = Seams {
            aws_credentials: Some(credentials.clone()),
            ..Seams::default()
        };
        apps.push(support::app(&flags, seams).await);
    }
    for app in &apps {
        wait_for(|| backend_up(app) == Some(1), "the shared limits are up").await;
    }
    let seconds = 4;
    let codes = drive(&apps, 10, Duration::from_secs(seconds)).await;
    let reached = front.emulator().call_counts()[&Operation::AcknowledgeJob];
    let expected = (10 + 10 * seconds) as f64;
    eprintln!(
        "upstream budget on redis: {reached} calls reached the emulator; it allows {expected}"
    );
    let ratio = reached as f64 / expected;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "{reached} calls reached the emulator; the budget allows {expected} ({codes:?})"
    );
    assert_eq!(count(&codes, Code::NotFound) as u64, reached);
    for app in apps {
        app.shutdown().await.unwrap();
    }
    front.shutdown().await.unwrap();
}

#[tokio::test]
async fn redis_dying_under_load_fails_no_call_and_its_return_shares_the_limits_again() {
    let mut redis = Redis::start().await;
    // A rate well above the load: no call should be refused, with or without Redis.
    let apps = redis_gateways(&redis, 2, 1000, 1000).await;
    let load = {
        let apps: Vec<SocketAddr> = apps.iter().map(App::grpc_addr).collect();
        tokio::spawn(async move {
            let mut codes = Vec::new();
            let mut clients = Vec::new();
            for addr in apps {
                clients.push(client(addr).await);
            }
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(3) {
                for client in &mut clients {
                    let code = match client.acknowledge_job(ack()).await {
                        Ok(_) => Code::Ok,
                        Err(status) => status.code(),
                    };
                    codes.push(code);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            codes
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill();
    let codes = load.await.unwrap();
    assert!(
        codes.iter().all(|code| *code == Code::NotFound),
        "no call failed but for its own limit: {:?}",
        codes
            .iter()
            .filter(|c| **c != Code::NotFound)
            .collect::<Vec<_>>()
    );
    for app in &apps {
        wait_for(
            || backend_up(app) == Some(0),
            "the metric says Redis is away",
        )
        .await;
        assert!(
            app.metrics()
                .render()
                .contains("gateway_rate_limit_fallbacks_total 1")
        );
    }

    redis.launch().await;
    for app in &apps {
        wait_for(
            || backend_up(app) == Some(1),
            "shared again once Redis answers",
        )
        .await;
    }
    for app in apps {
        app.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn after_redis_returns_one_gateways_burst_is_spent_for_the_others() {
    let mut redis = Redis::start().await;
    let apps = redis_gateways(&redis, 2, 1, 5).await;
    redis.kill();
    redis.launch().await;
    // A gateway learns of the restart at its next check (its connection was reset): that call
    // falls back, and the shared limits are in force again within the probe interval.
    for app in &apps {
        let _ = client(app.grpc_addr()).await.acknowledge_job(ack()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        wait_for(|| backend_up(app) == Some(1), "shared again").await;
    }
    let mut first = client(apps[0].grpc_addr()).await;
    for _ in 0..5 {
        assert_eq!(
            first.acknowledge_job(ack()).await.unwrap_err().code(),
            Code::NotFound
        );
    }
    let mut second = client(apps[1].grpc_addr()).await;
    let refused = second.acknowledge_job(ack()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.get_details_retry_info().is_some());
    for app in apps {
        app.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_paused_redis_holds_no_call_past_the_small_timeout() {
    let redis = Redis::start().await;
    let apps = redis_gateways(&redis, 1, 1000, 1000).await;
    let mut client = client(apps[0].grpc_addr()).await;
    redis.signal("-STOP");
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let code = client.acknowledge_job(ack()).await.unwrap_err().code();
        slowest = slowest.max(started.elapsed());
        assert_eq!(code, Code::NotFound);
    }
    redis.signal("-CONT");
    // 25 ms of timeout, and a generous allowance for a busy machine: a paused Redis would hold
    // a call that waited for it indefinitely.
    assert!(slowest < Duration::from_millis(750), "{slowest:?}");
    assert_eq!(backend_up(&apps[0]), Some(0));
    for app in apps {
        app.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_gateway_started_before_its_redis_serves_then_shares_the_limits() {
    let mut redis = Redis::start().await;
    redis.kill();
    let url = redis.url();
    let app = gateway(&["--rate-limit-backend", "redis", "--redis-url", &url]).await;
    assert_eq!(backend_up(&app), Some(0));
    let mut client = client(app.grpc_addr()).await;
    assert_eq!(
        client.acknowledge_job(ack()).await.unwrap_err().code(),
        Code::NotFound,
        "served on the fallback"
    );
    redis.launch().await;
    wait_for(|| backend_up(&app) == Some(1), "the shared limits come up").await;
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn failing_closed_refuses_calls_unavailable_while_redis_is_away() {
    let mut redis = Redis::start().await;
    redis.kill();
    let url = redis.url();
    let app = gateway(&[
        "--rate-limit-backend",
        "redis",
        "--redis-url",
        &url,
        "--rate-limit-fail-closed",
    ])
    .await;
    let mut client = client(app.grpc_addr()).await;
    let refused = client.acknowledge_job(ack()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(
        refused.get_details_error_info().unwrap().reason,
        "RATE_LIMITS_UNAVAILABLE"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn rediss_connects_with_tls_to_a_server_signed_by_the_given_ca() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (ca_file, cert_file, key_file) = (
        write("ca.pem", &ca.pem()),
        write("redis.crt", &cert.pem()),
        write("redis.key", &key.serialize_pem()),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--tls-auth-clients",
            "no",
        ])
        .arg("--tls-cert-file")
        .arg(&cert_file)
        .arg("--tls-key-file")
        .arg(&key_file)
        .arg("--tls-ca-cert-file")
        .arg(&ca_file)
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("rediss://localhost:{port}");
    let app = gateway(&[
        "--rate-limit-backend",
        "redis",
        "--redis-url",
        &url,
        "--redis-tls-ca",
        ca_file.to_str().unwrap(),
        "--rate-limit-per-second",
        "1",
        "--rate-limit-burst",
        "2",
    ])
    .await;
    wait_for(
        || backend_up(&app) == Some(1),
        "the shared limits are up over TLS",
    )
    .await;
    let mut client = client(app.grpc_addr()).await;
    let codes: Vec<Code> = {
        let mut codes = Vec::new();
        for _ in 0..3 {
            codes.push(client.acknowledge_job(ack()).await.unwrap_err().code());
        }
        codes
    };
    assert_eq!(
        codes,
        [Code::NotFound, Code::NotFound, Code::ResourceExhausted]
    );
    assert!(
        app.metrics()
            .render()
            .contains("gateway_rate_limit_fallbacks_total 0")
    );
    app.shutdown().await.unwrap();
    let _ = server.kill();
    let _ = server.wait();
}

#[tokio::test]
async fn a_malformed_redis_url_stops_the_binary_at_start_with_a_clear_error() {
    for (url, says) in [
        ("http://127.0.0.1:6379", "redis:// or rediss://"),
        ("redis://no port:x", "--redis-url"),
    ] {
        let output = support::binary()
            .args(["serve", "--upstream", "emulator", "--listen", "127.0.0.1:0"])
            .args([
                "--metrics-listen",
                "127.0.0.1:0",
                "--rate-limit-backend",
                "redis",
            ])
            .args(["--redis-url", url])
            .output()
            .unwrap();
        assert!(!output.status.success(), "{url}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{url}: {stderr}");
    }
    let output = support::binary()
        .args([
            "serve",
            "--upstream",
            "emulator",
            "--rate-limit-backend",
            "redis",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--redis-url"),
        "the redis backend needs a URL"
    );
}

/// Sends one command to the test's Redis.
async fn redis_command(redis: &Redis, args: &[&str]) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command.query_async::<()>(&mut connection).await.unwrap();
}

/// A Redis out of memory answers PING and refuses the script (a read-only replica after a
/// failover, or an ACL, does the same). The limits fall back once and stay there, saying so,
/// instead of flapping back on every probe's PING; they are shared again once the script runs.
#[tokio::test]
async fn a_redis_that_answers_ping_but_refuses_the_script_is_one_fallback_not_a_flap() {
    let redis = Redis::start().await;
    let apps = redis_gateways(&redis, 1, 1000, 1000).await;
    let app = &apps[0];
    redis_command(&redis, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]).await;
    redis_command(&redis, &["CONFIG", "SET", "maxmemory", "1"]).await;
    let mut client = client(app.grpc_addr()).await;
    let mut codes = Vec::new();
    for _ in 0..300 {
        codes.push(match client.acknowledge_job(ack()).await {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        codes.iter().all(|code| *code == Code::NotFound),
        "no call failed for Redis: {:?}",
        codes
            .iter()
            .filter(|c| **c != Code::NotFound)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        backend_up(app),
        Some(0),
        "the metric says the limits fell back"
    );
    assert!(
        app.metrics()
            .render()
            .contains("gateway_rate_limit_fallbacks_total 1\n"),
        "one fallback: {}",
        app.metrics().render()
    );

    redis_command(&redis, &["CONFIG", "SET", "maxmemory", "0"]).await;
    wait_for(
        || backend_up(app) == Some(1),
        "shared again once the script runs",
    )
    .await;
    for app in apps {
        app.shutdown().await.unwrap();
    }
}
