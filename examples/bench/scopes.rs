//! What tenant scopes cost: AcknowledgeJob by a client whose token file entry lists its action
//! types, against the same client unscoped, on two production gateways started alike, in the
//! same run. The job is one the gateway handed out itself, so its action type is known (the
//! common case: no lookup upstream). Throughput by h2load, rounds interleaved; latency at
//! concurrency 1, rounds interleaved, the added p50 the median of the rounds' differences.
//!
//! And what a job the gateway never saw costs (another replica polled it): the first
//! AcknowledgeJob of each such job by a scoped client (a GetJobDetails lookup, then the call)
//! against the same by an unscoped client (the call alone), two gateways on the SDK path to one
//! emulator front.

use tonic::transport::Channel;

use codepipeline_gateway::pb::jobworker::{
    self as pb, job_worker_service_client::JobWorkerServiceClient,
};

use super::{
    ACCESS_KEY_ID, Args, Row, SECRET_ACCESS_KEY, Sizes, TOKEN, channel, claimed_job,
    emulator_front, grpc_frame, h2load, latencies, meets, micros, percentile,
    production_gateway_for, row, sdk_gateway, with_token,
};
use codepipeline_gateway::pb::emulator::{
    CreateJobRequest, emulator_admin_service_client::EmulatorAdminServiceClient,
};
use sha2::Digest;

/// The scope the bench client is given: the demo action type only.
const SCOPED: &str = "action_types = [\"Build/Custom/DemoBuilder/1\"]";

pub(super) async fn scopes(args: &Args, sizes: &Sizes, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let unscoped = production_gateway_for(&args.gateway, &[], "")?;
    let scoped = production_gateway_for(&args.gateway, &[], SCOPED)?;
    let unscoped_ack = claimed_job(unscoped.proc.addr).await?;
    let scoped_ack = claimed_job(scoped.proc.addr).await?;

    let dir = tempfile::tempdir()?;
    let unscoped_body = dir.path().join("unscoped.grpc");
    let scoped_body = dir.path().join("scoped.grpc");
    std::fs::write(&unscoped_body, grpc_frame(&unscoped_ack))?;
    std::fs::write(&scoped_body, grpc_frame(&scoped_ack))?;
    let (mut best_off, mut best_on) = (0f64, 0f64);
    for round in 0..sizes.rounds.max(2) {
        let off = || h2load(unscoped.proc.addr, &unscoped_body, sizes.h2load_calls);
        let on = || h2load(scoped.proc.addr, &scoped_body, sizes.h2load_calls);
        if round % 2 == 0 {
            best_off = best_off.max(off()?);
            best_on = best_on.max(on()?);
        } else {
            best_on = best_on.max(on()?);
            best_off = best_off.max(off()?);
        }
    }
    let ratio = best_on / best_off;
    rows.push(row(
        "AcknowledgeJob throughput, client scoped to its action type (h2load; best of rounds)",
        format!("{best_on:.0} calls/s"),
        format!("{best_off:.0} calls/s (the same client unscoped)"),
        format!("{ratio:.3}x: {}", meets(ratio >= 0.98, ">= 0.98x")),
    ));

    let off_client = JobWorkerServiceClient::new(channel(unscoped.proc.addr).await?);
    let on_client = JobWorkerServiceClient::new(channel(scoped.proc.addr).await?);
    let call = |client: &JobWorkerServiceClient<Channel>, ack: &pb::AcknowledgeJobRequest| {
        let (client, ack) = (client.clone(), ack.clone());
        move || {
            let (mut client, ack) = (client.clone(), ack.clone());
            async move {
                client
                    .acknowledge_job(with_token(ack))
                    .await
                    .expect("AcknowledgeJob");
            }
        }
    };
    let calls = sizes.latency_calls.0;
    let per_round = calls.div_ceil(sizes.latency_rounds);
    let (mut all_off, mut all_on, mut added) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..sizes.latency_rounds {
        let off_call = call(&off_client, &unscoped_ack);
        let on_call = call(&on_client, &scoped_ack);
        let (mut off, mut on) = if round % 2 == 0 {
            let off = latencies(1, per_round, off_call).await;
            (off, latencies(1, per_round, on_call).await)
        } else {
            let on = latencies(1, per_round, on_call).await;
            (latencies(1, per_round, off_call).await, on)
        };
        off.sort_unstable();
        on.sort_unstable();
        added.push(micros(percentile(&on, 0.5)) - micros(percentile(&off, 0.5)));
        all_off.extend(off);
        all_on.extend(on);
    }
    all_off.sort_unstable();
    all_on.sort_unstable();
    added.sort_by(f64::total_cmp);
    let added_p50 = added[added.len() / 2];
    rows.push(row(
        "AcknowledgeJob p50 at concurrency 1, client scoped to its action type",
        format!("{:.0} us", micros(percentile(&all_on, 0.5))),
        format!(
            "{:.0} us (the same client unscoped)",
            micros(percentile(&all_off, 0.5))
        ),
        format!(
            "{added_p50:+.1} us p50: {}",
            meets(added_p50 <= 5.0, "<= +5 us")
        ),
    ));
    unseen_jobs(args, sizes, rows).await
}

/// The first AcknowledgeJob of jobs the gateway never saw: scoped (looked up) against
/// unscoped (not), on two gateways to one emulator front.
async fn unseen_jobs(args: &Args, sizes: &Sizes, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let jobs = sizes.latency_calls.0.min(300);
    let emulator = emulator_front(&args.gateway)?;
    let endpoint = format!("http://{}", emulator.addr);
    let dir = tempfile::tempdir()?;
    let token_file = |name: &str, scope: &str| -> anyhow::Result<String> {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[[clients]]\nid = \"bench\"\ntoken_sha256 = \"{}\"\nallowed_rpcs = [\"*\"]\n{scope}\n",
                hex::encode(sha2::Sha256::digest(TOKEN.as_bytes()))
            ),
        )?;
        Ok(path.to_str().expect("utf-8").to_owned())
    };
    let scoped_tokens = token_file("scoped.toml", SCOPED)?;
    let unscoped_tokens = token_file("unscoped.toml", "")?;
    let scoped = sdk_gateway(
        &args.gateway,
        &endpoint,
        &[("CPGW_TOKEN_FILE", scoped_tokens.as_str())],
    )?;
    let unscoped = sdk_gateway(
        &args.gateway,
        &endpoint,
        &[("CPGW_TOKEN_FILE", unscoped_tokens.as_str())],
    )?;

    // Jobs created, polled and acknowledged behind both gateways' backs (as another replica
    // would), so each gateway first meets them on the benchmark's calls.
    let mut admin = EmulatorAdminServiceClient::new(channel(emulator.addr).await?);
    for _ in 0..jobs {
        admin
            .create_job(CreateJobRequest {
                action_type_id: Some(demo_action_type()),
                ..Default::default()
            })
            .await?;
    }
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
    let mut claimed = Vec::new();
    while claimed.len() < jobs {
        let polled = sdk
            .poll_for_jobs()
            .action_type_id(
                aws_sdk_codepipeline::types::ActionTypeId::builder()
                    .category(aws_sdk_codepipeline::types::ActionCategory::Build)
                    .owner(aws_sdk_codepipeline::types::ActionOwner::Custom)
                    .provider("DemoBuilder")
                    .version("1")
                    .build()?,
            )
            .max_batch_size(100)
            .send()
            .await?;
        let batch = polled.jobs.unwrap_or_default();
        anyhow::ensure!(
            !batch.is_empty(),
            "the front handed out fewer jobs than made"
        );
        for job in batch {
            let (id, nonce) = (job.id.unwrap_or_default(), job.nonce.unwrap_or_default());
            sdk.acknowledge_job()
                .job_id(&id)
                .nonce(&nonce)
                .send()
                .await?;
            claimed.push(pb::AcknowledgeJobRequest { job_id: id, nonce });
        }
    }

    let mut on = JobWorkerServiceClient::new(channel(scoped.addr).await?);
    let mut off = JobWorkerServiceClient::new(channel(unscoped.addr).await?);
    let (mut first_on, mut first_off) = (Vec::new(), Vec::new());
    for (i, ack) in claimed.iter().enumerate() {
        let order = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for scoped_first in order {
            let client = if scoped_first { &mut on } else { &mut off };
            let started = std::time::Instant::now();
            client.acknowledge_job(with_token(ack.clone())).await?;
            let took = started.elapsed();
            if scoped_first {
                first_on.push(took);
            } else {
                first_off.push(took);
            }
        }
    }
    first_on.sort_unstable();
    first_off.sort_unstable();
    let (p50_on, p50_off) = (
        micros(percentile(&first_on, 0.5)),
        micros(percentile(&first_off, 0.5)),
    );
    rows.push(row(
        &format!(
            "first AcknowledgeJob of {jobs} jobs the gateway never saw, scoped client (SDK path)"
        ),
        format!("p50 {p50_on:.0} us"),
        format!("p50 {p50_off:.0} us (the same client unscoped: no lookup)"),
        format!(
            "the lookup (one GetJobDetails) adds {:.0} us p50, once per job per replica",
            p50_on - p50_off
        ),
    ));
    Ok(())
}

fn demo_action_type() -> pb::ActionTypeId {
    pb::ActionTypeId {
        category: pb::ActionCategory::Build.into(),
        owner: pb::ActionOwner::Custom.into(),
        provider: "DemoBuilder".to_owned(),
        version: "1".to_owned(),
    }
}
