//! Fault injection: per operation, added latency and a chance of each way a call to AWS can go
//! wrong, so tests can prove how the gateway behaves when CodePipeline or S3 misbehaves.
//!
//! A plan is written as `OPERATION:fault=value,...` entries separated by `;`, where OPERATION is
//! a CodePipeline operation name, an artifact-store (S3) operation name (`GetObject`,
//! `HeadObject`, `PutObject`, `CreateMultipartUpload`, `UploadPart`, `CompleteMultipartUpload`,
//! `AbortMultipartUpload`), or `*`: every CodePipeline operation without an entry of its own.
//! The store's operations are faulted only when named, so a plan written for CodePipeline calls
//! leaves artifact transfers alone.
//!
//! ```text
//! *:throttling=0.05,http500=0.05;AcknowledgeJob:latency=200ms,drop=0.1;UploadPart:http503=0.5
//! ```
//!
//! | fault | what a CodePipeline caller sees | what an S3 caller sees | did the call take effect? |
//! |---|---|---|---|
//! | `latency=<duration>` | a slower answer | a slower answer | yes |
//! | `http500=<p>` | HTTP 500 `InternalFailure` | HTTP 500 `InternalError` | no |
//! | `http503=<p>` | HTTP 503 `ServiceUnavailable` | HTTP 503 `SlowDown` | no |
//! | `throttling=<p>` | HTTP 400 `ThrottlingException` | HTTP 503 `SlowDown` | no |
//! | `drop=<p>` | the connection closes with no answer | the same | **yes**: the answer is lost |
//! | `truncate=<p>` | the answer stops half-way | the same (no body: as `drop`) | **yes** |
//! | `malformed=<p>` | HTTP 200 with a body that is not JSON | GetObject: one byte of the object flipped; XML answers: not XML | **yes** |
//!
//! The last three are the hard cases: the job changed state (or the object was stored) but the
//! caller cannot know it.

use std::{collections::HashMap, fmt, time::Duration};

use rand::RngExt;

use super::store::StoreOperation;
use codepipeline_job_port::upstream::{AwsErrorCode, Operation, UpstreamError};

/// Marks a response whose connection must be closed instead of answered (an injected `drop`
/// fault); the connection layer of the emulator's HTTP servers acts on it, and returns it as the
/// error that makes hyper close the connection.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("injected fault: connection dropped")]
pub struct DropConnection;

/// What a plan entry names: a CodePipeline operation (the port's [`Operation`]) or one of the
/// artifact store's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultTarget {
    /// A CodePipeline job-worker operation.
    CodePipeline(Operation),
    /// An artifact-store (S3) operation.
    Store(StoreOperation),
}

impl From<Operation> for FaultTarget {
    fn from(operation: Operation) -> Self {
        Self::CodePipeline(operation)
    }
}

impl From<StoreOperation> for FaultTarget {
    fn from(operation: StoreOperation) -> Self {
        Self::Store(operation)
    }
}

impl FaultTarget {
    /// The operation with this AWS name, CodePipeline's or the store's.
    pub fn from_name(name: &str) -> Option<Self> {
        Operation::from_name(name)
            .map(Self::CodePipeline)
            .or_else(|| StoreOperation::from_name(name).map(Self::Store))
    }
}

/// One way a call can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// HTTP 500 InternalFailure, before the call takes effect.
    Http500,
    /// HTTP 503 ServiceUnavailable, before the call takes effect.
    Http503,
    /// ThrottlingException, before the call takes effect.
    Throttling,
    /// The connection is closed without an answer, after the call took effect.
    DropConnection,
    /// The answer is cut short, after the call took effect.
    TruncatedResponse,
    /// The answer is not JSON, after the call took effect.
    MalformedJson,
}

impl Fault {
    const NAMES: [(&'static str, Fault); 6] = [
        ("http500", Fault::Http500),
        ("http503", Fault::Http503),
        ("throttling", Fault::Throttling),
        ("drop", Fault::DropConnection),
        ("truncate", Fault::TruncatedResponse),
        ("malformed", Fault::MalformedJson),
    ];

    /// Whether the engine carries the call out before the fault hides the answer.
    pub fn after_effect(self) -> bool {
        matches!(
            self,
            Self::DropConnection | Self::TruncatedResponse | Self::MalformedJson
        )
    }

    /// What the in-process emulator reports for this fault: what the SDK makes of it on the wire.
    pub fn as_upstream_error(self) -> UpstreamError {
        match self {
            Self::Http500 => UpstreamError::service(
                AwsErrorCode::ServiceFault("InternalFailure".to_owned()),
                "injected fault",
            ),
            Self::Http503 => UpstreamError::service(
                AwsErrorCode::ServiceFault("ServiceUnavailable".to_owned()),
                "injected fault",
            ),
            Self::Throttling => UpstreamError::service(AwsErrorCode::Throttling, "Rate exceeded"),
            Self::DropConnection | Self::TruncatedResponse | Self::MalformedJson => {
                UpstreamError::Unavailable {
                    source: format!("injected fault: {self}").into(),
                }
            }
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = Self::NAMES
            .iter()
            .find(|(_, fault)| fault == self)
            .map_or("?", |(name, _)| name);
        f.write_str(name)
    }
}

/// The faults of one operation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OperationFaults {
    /// Added to every call.
    pub latency: Duration,
    /// Each fault's probability; together at most 1.
    pub chances: Vec<(Fault, f64)>,
}

/// What to inject, per operation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    every_operation: OperationFaults,
    by_operation: HashMap<FaultTarget, OperationFaults>,
}

/// The faults of an operation no entry names and `*` does not cover.
static NO_FAULTS: OperationFaults = OperationFaults {
    latency: Duration::ZERO,
    chances: Vec::new(),
};

impl FaultPlan {
    /// Parses a plan (see the module docs); the empty string is no faults.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut plan = Self::default();
        for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (operation, faults) = entry
                .split_once(':')
                .ok_or_else(|| format!("{entry:?}: expected OPERATION:fault=value,..."))?;
            let mut parsed = OperationFaults::default();
            for setting in faults.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (name, value) = setting
                    .split_once('=')
                    .ok_or_else(|| format!("{setting:?}: expected fault=value"))?;
                if name == "latency" {
                    parsed.latency = humantime::parse_duration(value)
                        .map_err(|e| format!("latency {value:?}: {e}"))?;
                    continue;
                }
                let fault = Fault::NAMES
                    .iter()
                    .find(|(known, _)| *known == name)
                    .map(|(_, fault)| *fault)
                    .ok_or_else(|| {
                        format!("unknown fault {name:?}; known: latency, http500, http503, throttling, drop, truncate, malformed")
                    })?;
                let chance: f64 = value
                    .parse()
                    .ok()
                    .filter(|p| (0.0..=1.0).contains(p))
                    .ok_or_else(|| format!("{name}={value}: a probability is between 0 and 1"))?;
                parsed.chances.push((fault, chance));
            }
            if parsed.chances.iter().map(|(_, p)| p).sum::<f64>() > 1.0 + f64::EPSILON {
                return Err(format!(
                    "{operation}: the probabilities add up to more than 1"
                ));
            }
            if operation == "*" {
                plan.every_operation = parsed;
            } else {
                let operation = FaultTarget::from_name(operation)
                    .ok_or_else(|| format!("unknown operation {operation:?}"))?;
                plan.by_operation.insert(operation, parsed);
            }
        }
        Ok(plan)
    }

    fn for_operation(&self, operation: impl Into<FaultTarget>) -> &OperationFaults {
        let target = operation.into();
        self.by_operation.get(&target).unwrap_or(match target {
            FaultTarget::CodePipeline(_) => &self.every_operation,
            FaultTarget::Store(_) => &NO_FAULTS,
        })
    }

    /// Draws this call's latency and fault.
    pub fn draw(&self, operation: impl Into<FaultTarget>) -> Drawn {
        let faults = self.for_operation(operation);
        let mut roll: f64 = rand::rng().random();
        let mut fault = None;
        for (candidate, chance) in &faults.chances {
            if roll < *chance {
                fault = Some(*candidate);
                break;
            }
            roll -= chance;
        }
        Drawn {
            latency: faults.latency,
            fault,
        }
    }
}

/// What one call drew from the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drawn {
    /// How long the call waits first.
    pub latency: Duration,
    /// How it fails, if it does.
    pub fault: Option<Fault>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_parses_per_operation_and_default_entries() {
        let plan =
            FaultPlan::parse("*:throttling=0.5; AcknowledgeJob:latency=20ms,drop=1").unwrap();
        assert_eq!(
            plan.draw(Operation::AcknowledgeJob),
            Drawn {
                latency: Duration::from_millis(20),
                fault: Some(Fault::DropConnection)
            }
        );
        let poll = plan.for_operation(Operation::PollForJobs);
        assert_eq!(poll.chances, vec![(Fault::Throttling, 0.5)]);
        assert_eq!(FaultPlan::parse("").unwrap(), FaultPlan::default());
    }

    #[test]
    fn a_plan_names_store_operations_too_and_star_leaves_them_alone() {
        let plan = FaultPlan::parse("*:http500=1;UploadPart:http503=0.5;GetObject:drop=1").unwrap();
        assert_eq!(
            plan.draw(StoreOperation::GetObject),
            Drawn {
                latency: Duration::ZERO,
                fault: Some(Fault::DropConnection)
            }
        );
        assert_eq!(
            plan.for_operation(StoreOperation::UploadPart).chances,
            vec![(Fault::Http503, 0.5)]
        );
        assert_eq!(plan.draw(StoreOperation::PutObject).fault, None);
        assert_eq!(
            plan.draw(Operation::PollForJobs).fault,
            Some(Fault::Http500),
            "the CodePipeline operations keep their names and `*`"
        );
        for name in StoreOperation::ALL.map(StoreOperation::as_str) {
            assert!(
                FaultPlan::parse(&format!("{name}:latency=1ms")).is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn bad_plans_are_refused() {
        for bad in [
            "AcknowledgeJob",
            "Nope:drop=0.1",
            "*:explode=0.1",
            "*:drop=2",
            "*:drop=0.6,http500=0.6",
            "*:latency=soon",
        ] {
            assert!(FaultPlan::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn draws_follow_the_probabilities() {
        let plan = FaultPlan::parse("*:http500=0.25,drop=0.25").unwrap();
        let draws = 4000;
        let faulty = (0..draws)
            .filter(|_| plan.draw(Operation::GetJobDetails).fault.is_some())
            .count();
        // Binomial(4000, 0.5): 6 standard deviations is about 190.
        assert!((1810..=2190).contains(&faulty), "{faulty}");
    }
}
