//! CodePipeline's two wire protocols through the gateway, in the same run: two gateways on the
//! `aws` upstream in front of one emulator front, one with `--aws-protocol json`, one with
//! `--aws-protocol cbor`, AcknowledgeJob (InProgress again for the job's current nonce) in
//! interleaved rounds at concurrency 1 and 16.

use std::time::Duration;

use codepipeline_gateway::pb::jobworker::job_worker_service_client::JobWorkerServiceClient;

use super::{
    Args, Row, Sizes, channel, claimed_job, emulator_front, latencies, micros, percentile, row,
    sdk_gateway,
};

pub(super) async fn wire_protocols(
    args: &Args,
    sizes: &Sizes,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let emulator = emulator_front(&args.gateway)?;
    let endpoint = format!("http://{}", emulator.addr);
    let json = sdk_gateway(&args.gateway, &endpoint, &[("CPGW_AWS_PROTOCOL", "json")])?;
    let cbor = sdk_gateway(&args.gateway, &endpoint, &[("CPGW_AWS_PROTOCOL", "cbor")])?;
    let ack = claimed_job(json.addr).await?;
    let clients = [
        JobWorkerServiceClient::new(channel(json.addr).await?),
        JobWorkerServiceClient::new(channel(cbor.addr).await?),
    ];
    for (concurrency, calls) in [(1, sizes.latency_calls.0), (16, sizes.latency_calls.0)] {
        let mut samples: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
        let mut added = Vec::with_capacity(sizes.latency_rounds);
        let mut rates = [0f64; 2];
        let per_round = calls.div_ceil(sizes.latency_rounds);
        for round in 0..sizes.latency_rounds {
            // Alternate which goes first, so a noisy moment falls on both.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            let mut p50 = [0f64; 2];
            for which in order {
                let (client, ack) = (clients[which].clone(), ack.clone());
                let started = std::time::Instant::now();
                let mut round_samples = latencies(concurrency, per_round, move || {
                    let (mut client, ack) = (client.clone(), ack.clone());
                    async move {
                        client.acknowledge_job(ack).await.expect("AcknowledgeJob");
                    }
                })
                .await;
                let rate = round_samples.len() as f64 / started.elapsed().as_secs_f64();
                rates[which] = rates[which].max(rate);
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
            &format!(
                "AcknowledgeJob through the gateway, concurrency {concurrency}: --aws-protocol cbor"
            ),
            format!(
                "p50 {:.0} us, best {:.0} calls/s",
                micros(percentile(&samples[1], 0.5)),
                rates[1]
            ),
            format!(
                "p50 {:.0} us, best {:.0} calls/s (--aws-protocol json)",
                micros(percentile(&samples[0], 0.5)),
                rates[0]
            ),
            format!(
                "p50 {:+.0} us vs json (median of {} interleaved rounds); {:.2}x json's rate",
                added[added.len() / 2],
                added.len(),
                rates[1] / rates[0]
            ),
        ));
    }
    Ok(())
}
