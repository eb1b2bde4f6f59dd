//! Offered load far beyond capacity: the excess is refused at once, memory stays bounded, the
//! gateway recovers, and a shutdown in the middle of it loses no call it had accepted.

use std::{process::Stdio, time::Duration};

use codepipeline_gateway::{
    pb::jobworker::{self as pb, job_worker_service_client::JobWorkerServiceClient},
    upstream::Operation,
};
use tonic::{Code, transport::Channel};

use crate::support::{Backend, gateway};

const UNKNOWN_JOB: &str = "00000000-0000-4000-8000-000000000000";

fn details() -> pb::GetJobDetailsRequest {
    pb::GetJobDetailsRequest {
        job_id: UNKNOWN_JOB.to_owned(),
    }
}

async fn connections(addr: std::net::SocketAddr, n: usize) -> Vec<JobWorkerServiceClient<Channel>> {
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(JobWorkerServiceClient::new(
            crate::support::connect(addr).await,
        ));
    }
    clients
}

/// Fires `calls` GetJobDetails at once over `clients`; returns each call's code (OK-equivalent
/// answers from the upstream are NOT_FOUND: the job does not exist).
async fn burst(clients: &[JobWorkerServiceClient<Channel>], calls: usize) -> Vec<Code> {
    let tasks: Vec<_> = (0..calls)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            tokio::spawn(async move {
                match client.get_job_details(details()).await {
                    Ok(_) => Code::Ok,
                    Err(status) => status.code(),
                }
            })
        })
        .collect();
    let mut codes = Vec::with_capacity(calls);
    for task in tasks {
        codes.push(task.await.unwrap());
    }
    codes
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn load_far_beyond_capacity_is_shed_memory_stays_bounded_and_the_gateway_recovers() {
    let (mut child, addr) = crate::support::start_binary(
        &[
            "serve",
            "--upstream",
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--demo-jobs",
            "0",
            "--latency",
            "100ms",
            "--max-concurrent-calls",
            "64",
            "--rate-limit-per-second",
            "1000000",
            "--rate-limit-burst",
            "1000000",
            "--log",
            "warn",
        ],
        Stdio::null(),
        "grpc listening on ",
    );
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let pid = child.id();
    let clients = connections(addr, 16).await;
    burst(&clients, 16).await;
    let rss_before = rss_kib(pid);

    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..100 {
            peak = peak.max(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak
    });
    let codes = burst(&clients, 4000).await;
    let peak = sampler.await.unwrap();

    let served = codes.iter().filter(|c| **c == Code::NotFound).count();
    let shed = codes.iter().filter(|c| **c == Code::Unavailable).count();
    assert_eq!(
        served + shed,
        codes.len(),
        "every call was served or shed: {codes:?}"
    );
    assert!(shed > 0, "the excess was refused");
    assert!(
        served >= 64,
        "the gateway kept serving at its limit while overloaded"
    );
    assert!(
        peak < rss_before + 100 * 1024,
        "memory stayed bounded: {rss_before} KiB before, {peak} KiB at peak"
    );
    let after = burst(&clients, 32).await;
    assert!(
        after.iter().all(|c| *c == Code::NotFound),
        "recovered: {after:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn a_shutdown_in_the_middle_of_overload_loses_no_accepted_call() {
    // 1500 calls on 8 connections: every stream opens at once (no per-connection stream cap),
    // so each is refused or answered by the gateway, not queued in the client.
    let gw = gateway(Backend::InProcess)
        .flags(&["--max-concurrent-calls", "50"])
        .flags(&["--http2-max-concurrent-streams", "1000"])
        .engine(&["--latency", "200ms"])
        .spawn()
        .await;
    let emulator = gw.emulator.clone();
    let clients = connections(gw.addr(), 8).await;
    let load = tokio::spawn(async move { burst(&clients, 1500).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    gw.stop().await;
    let codes = load.await.unwrap();

    let answered = codes.iter().filter(|c| **c == Code::NotFound).count() as u64;
    let accepted = emulator.call_counts()[&Operation::GetJobDetails];
    assert!(accepted > 0);
    assert_eq!(
        answered, accepted,
        "every call the upstream took was answered to its caller"
    );
    assert!(
        codes.iter().all(|c| matches!(
            c,
            Code::NotFound | Code::Unavailable | Code::Unknown | Code::Cancelled
        )),
        "refused calls were refused, not failed: {codes:?}"
    );
}
