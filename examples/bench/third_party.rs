//! The client token the gateway supplies against the worker's own, in the same run: one
//! production gateway on the in-process emulator with the demo client-token file, and
//! AcknowledgeThirdPartyJob (which answers InProgress again for the job's current nonce) called
//! with `client_token` set or with only `client_id`, in interleaved rounds. What is measured is
//! what finding the token costs.

use std::time::Duration;

use anyhow::Context;
use codepipeline_gateway::pb::jobworker::{
    self as pb, third_party_job_worker_service_client::ThirdPartyJobWorkerServiceClient,
};

use super::{
    Args, Row, Sizes, channel, latencies, micros, percentile, production_gateway, row, with_token,
};

/// The demo client's pair, as examples/client-tokens.toml holds it.
const DEMO_CLIENT_ID: &str = "5f0c7f5e-8d0b-4f51-a1d4-3c2f9e6b7a10";
const DEMO_CLIENT_TOKEN: &str = "demo-partner-client-token";

pub(super) async fn client_tokens(
    args: &Args,
    sizes: &Sizes,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let gateway = production_gateway(
        &args.gateway,
        &["--client-token-file", "examples/client-tokens.toml"],
    )?;
    let mut client = ThirdPartyJobWorkerServiceClient::new(channel(gateway.proc.addr).await?);
    let job = client
        .poll_for_third_party_jobs(with_token(pb::PollForThirdPartyJobsRequest {
            action_type_id: Some(pb::ActionTypeId {
                category: pb::ActionCategory::Build.into(),
                owner: pb::ActionOwner::ThirdParty.into(),
                provider: "DemoPartner".to_owned(),
                version: "1".to_owned(),
            }),
            max_batch_size: Some(1),
        }))
        .await?
        .into_inner()
        .jobs
        .pop()
        .context("no demo third-party job")?;
    let nonce = client
        .get_third_party_job_details(with_token(pb::GetThirdPartyJobDetailsRequest {
            job_id: job.job_id.clone(),
            client_token: DEMO_CLIENT_TOKEN.to_owned(),
            client_id: String::new(),
        }))
        .await?
        .into_inner()
        .job_details
        .context("no job details")?
        .nonce;
    let ack = |client_token: &str, client_id: &str| pb::AcknowledgeThirdPartyJobRequest {
        job_id: job.job_id.clone(),
        nonce: nonce.clone(),
        client_token: client_token.to_owned(),
        client_id: client_id.to_owned(),
    };
    // [the worker's own token, the token the gateway holds]
    let requests = [ack(DEMO_CLIENT_TOKEN, ""), ack("", DEMO_CLIENT_ID)];

    let mut samples: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut added = Vec::with_capacity(sizes.latency_rounds);
    let per_round = sizes.latency_calls.0.div_ceil(sizes.latency_rounds);
    for round in 0..sizes.latency_rounds {
        // Alternate which goes first, so a noisy moment falls on both.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut p50 = [0f64; 2];
        for which in order {
            let (client, request) = (client.clone(), requests[which].clone());
            let mut round_samples = latencies(1, per_round, move || {
                let (mut client, request) = (client.clone(), request.clone());
                async move {
                    client
                        .acknowledge_third_party_job(with_token(request))
                        .await
                        .expect("AcknowledgeThirdPartyJob");
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
        "AcknowledgeThirdPartyJob latency, concurrency 1, client token supplied by the gateway",
        format!("p50 {:.0} us", micros(percentile(&samples[1], 0.5))),
        format!(
            "p50 {:.0} us (the worker's own token)",
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
