//! The Redis rate-limit backend against the memory backend, in the same run: the full
//! production stack on the in-process emulator with limits set high enough not to bind, so what
//! is measured is what checking them costs. A real `redis-server` (Debian's package) is started
//! on a free port for the run.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use codepipeline_gateway::pb::jobworker::job_worker_service_client::JobWorkerServiceClient;

use super::{
    Args, Row, Sizes, channel, claimed_job, grpc_frame, h2load, latencies, meets, micros,
    percentile, production_gateway, row, with_token,
};

/// A redis-server of the run's own, stopped when dropped.
struct Redis {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis() -> anyhow::Result<Redis> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = tempfile::tempdir()?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("redis-server (Debian's redis-server) is needed")?;
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Redis {
        child,
        url: format!("redis://127.0.0.1:{port}"),
        _dir: dir,
    })
}

pub(super) async fn rate_limit_backends(
    args: &Args,
    sizes: &Sizes,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let redis = redis()?;
    let memory = production_gateway(&args.gateway, &[])?;
    let shared = production_gateway(
        &args.gateway,
        &["--rate-limit-backend", "redis", "--redis-url", &redis.url],
    )?;
    // Let the Redis backend's first probe bring the shared limits up.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let body_dir = tempfile::tempdir()?;
    let mut best = [0f64; 2];
    let mut acks = Vec::new();
    for gateway in [&memory, &shared] {
        let ack = claimed_job(gateway.proc.addr).await?;
        let body = body_dir
            .path()
            .join(format!("ack-{}.grpc", gateway.proc.addr.port()));
        std::fs::write(&body, grpc_frame(&ack))?;
        acks.push((ack, body));
    }
    for round in 0..sizes.rounds * 2 {
        // Alternate which goes first, so a noisy moment falls on both.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let gateway = [&memory, &shared][which];
            let rate = h2load(gateway.proc.addr, &acks[which].1, sizes.h2load_calls)?;
            best[which] = best[which].max(rate);
        }
    }
    let ratio = best[1] / best[0];
    rows.push(row(
        "AcknowledgeJob throughput, rate limits in Redis (h2load -c16 -m32 -t1; best of rounds)",
        format!("{:.0} calls/s", best[1]),
        format!("{:.0} calls/s (memory backend)", best[0]),
        format!("{ratio:.2}x memory: {}", meets(ratio >= 0.8, ">= 0.8x")),
    ));

    let clients = [
        JobWorkerServiceClient::new(channel(memory.proc.addr).await?),
        JobWorkerServiceClient::new(channel(shared.proc.addr).await?),
    ];
    let mut added = Vec::new();
    let mut samples: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let per_round = sizes.latency_calls.0.div_ceil(sizes.latency_rounds);
    for round in 0..sizes.latency_rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut p50 = [0f64; 2];
        for which in order {
            let (client, ack) = (clients[which].clone(), acks[which].0.clone());
            let mut round_samples = latencies(1, per_round, move || {
                let (mut client, ack) = (client.clone(), ack.clone());
                async move {
                    client
                        .acknowledge_job(with_token(ack))
                        .await
                        .expect("AcknowledgeJob");
                }
            })
            .await;
            round_samples.sort_unstable();
            p50[which] = micros(percentile(&round_samples, 0.5));
            samples[which].extend(round_samples);
        }
        added.push(p50[1] - p50[0]);
    }
    added.sort_by(f64::total_cmp);
    for samples in &mut samples {
        samples.sort_unstable();
    }
    rows.push(row(
        "AcknowledgeJob latency, concurrency 1, rate limits in Redis",
        format!("p50 {:.0} us", micros(percentile(&samples[1], 0.5))),
        format!(
            "p50 {:.0} us (memory backend)",
            micros(percentile(&samples[0], 0.5))
        ),
        format!(
            "p50 added {:.0} us (median of {} interleaved rounds)",
            added[added.len() / 2],
            added.len()
        ),
    ));
    Ok(())
}
