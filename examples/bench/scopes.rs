//! What tenant scopes cost: AcknowledgeJob by a client whose token file entry lists its action
//! types, against the same client unscoped, on two production gateways started alike, in the
//! same run. The job is one the gateway handed out itself, so its action type is known (the
//! common case: no lookup upstream). Throughput by h2load, rounds interleaved; latency at
//! concurrency 1, rounds interleaved, the added p50 the median of the rounds' differences.

use tonic::transport::Channel;

use codepipeline_gateway::pb::jobworker::{
    self as pb, job_worker_service_client::JobWorkerServiceClient,
};

use super::{
    Args, Row, Sizes, channel, claimed_job, grpc_frame, h2load, latencies, meets, micros,
    percentile, production_gateway_for, row, with_token,
};

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
    Ok(())
}
