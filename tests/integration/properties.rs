//! Property tests of the edges: whatever arrives, validation answers without panicking, accepts
//! exactly what the model allows, and the other parsers (the awsJson1_1 front, the token file)
//! hold up too. The cargo-fuzz targets in fuzz/ explore the same edges at length.

use codepipeline_gateway::{
    auth::TokenSet,
    domain::{
        AcknowledgeJobInput, FailureType, JobId, PollForJobsInput, PutJobFailureResultInput,
        PutJobSuccessResultInput,
    },
    emulator::front::{Protocol, check_request},
    pb::jobworker as pb,
    upstream::Operation,
};
use proptest::prelude::*;

/// The model's job ID pattern, written independently of `JobId::parse`.
fn is_lowercase_uuid(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(b),
        })
}

fn uuid() -> impl Strategy<Value = String> {
    "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
}

fn char_len(s: &str) -> usize {
    s.chars().count()
}

proptest! {
    #[test]
    fn job_ids_are_accepted_exactly_when_they_match_the_pattern(s in "[0-9a-fA-F-]{0,40}|\\PC{0,40}") {
        prop_assert_eq!(JobId::parse(&s).is_ok(), is_lowercase_uuid(&s));
    }

    #[test]
    fn generated_uuids_are_valid_job_ids(s in uuid()) {
        prop_assert!(JobId::parse(&s).is_ok());
    }

    #[test]
    fn acknowledge_requests_are_accepted_exactly_within_the_model(job_id in prop_oneof![uuid(), "\\PC{0,40}"], nonce in "\\PC{0,60}") {
        let accepted = AcknowledgeJobInput::try_from(pb::AcknowledgeJobRequest { job_id: job_id.clone(), nonce: nonce.clone() }).is_ok();
        prop_assert_eq!(accepted, is_lowercase_uuid(&job_id) && (1..=50).contains(&char_len(&nonce)));
    }

    #[test]
    fn failure_results_are_accepted_exactly_within_the_model(
        job_id in uuid(),
        kind in -2i32..10,
        message in "\\PC{0,20}|x{4990,5010}",
        external in proptest::option::of("\\PC{0,4}|y{1495,1505}"),
    ) {
        let request = pb::PutJobFailureResultRequest {
            job_id,
            failure_details: Some(pb::FailureDetails { r#type: kind, message: message.clone(), external_execution_id: external.clone() }),
        };
        let kind_valid = pb::FailureType::try_from(kind).ok().and_then(FailureType::from_pb).is_some();
        let expected = kind_valid
            && (1..=5000).contains(&char_len(&message))
            && external.as_deref().is_none_or(|e| (1..=1500).contains(&char_len(e)));
        prop_assert_eq!(PutJobFailureResultInput::try_from(request).is_ok(), expected);
    }

    #[test]
    fn success_results_never_panic_and_keep_the_continuation_rule(
        job_id in uuid(),
        token in proptest::option::of("\\PC{0,10}"),
        variables in proptest::collection::btree_map("[A-Za-z0-9@_ -]{0,6}", "\\PC{0,6}", 0..3),
        percent in proptest::option::of(-5i32..110),
        summary in proptest::option::of("\\PC{0,5}"),
    ) {
        let request = pb::PutJobSuccessResultRequest {
            job_id,
            continuation_token: token.clone(),
            output_variables: variables.clone().into_iter().collect(),
            execution_details: Some(pb::ExecutionDetails { summary, external_execution_id: None, percent_complete: percent }),
            current_revision: None,
        };
        if let Ok(input) = PutJobSuccessResultInput::try_from(request) {
            prop_assert!(input.continuation_token.is_none() || input.output_variables.is_empty());
            prop_assert!(input.execution_details.unwrap().percent_complete.is_none_or(|p| p <= 100));
            for key in input.output_variables.keys() {
                prop_assert!(!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || "@_-".contains(c)));
            }
        }
    }

    #[test]
    fn polls_accept_only_custom_action_types_and_positive_batches(
        category in -1i32..9, owner in -1i32..5, provider in "[A-Za-z0-9_-]{0,40}", version in "[A-Za-z0-9_.-]{0,12}", batch in proptest::option::of(-3i32..5),
    ) {
        let request = pb::PollForJobsRequest {
            action_type_id: Some(pb::ActionTypeId { category, owner, provider: provider.clone(), version: version.clone() }),
            max_batch_size: batch,
            query_param: Default::default(),
        };
        let expected = (1..=7).contains(&category)
            && owner == pb::ActionOwner::Custom as i32
            && (1..=35).contains(&provider.len())
            && (1..=9).contains(&version.len()) && !version.contains('.')
            && batch.is_none_or(|b| b >= 1);
        prop_assert_eq!(PollForJobsInput::try_from(request).is_ok(), expected);
    }

    #[test]
    fn the_front_answers_any_body_in_either_protocol_with_an_aws_code(op in 0usize..Operation::ALL.len(), cbor in any::<bool>(), body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let protocol = if cbor { Protocol::RpcV2Cbor } else { Protocol::AwsJson };
        if let Err(code) = check_request(protocol, Operation::ALL[op], &body) {
            prop_assert!(code == "ValidationException" || code == "SerializationException", "{}", code);
        }
    }

    #[test]
    fn the_aws_json_front_validates_what_parses(job_id in prop_oneof![uuid(), "\\PC{0,40}"], nonce in "[a-z0-9]{0,60}") {
        let body = serde_json::json!({ "jobId": job_id, "nonce": nonce }).to_string();
        let expected = is_lowercase_uuid(&job_id) && (1..=50).contains(&nonce.len());
        let result = check_request(Protocol::AwsJson, Operation::AcknowledgeJob, body.as_bytes());
        prop_assert_eq!(result.is_ok(), expected);
        if !expected {
            prop_assert_eq!(result.unwrap_err(), "ValidationException");
        }
    }

    #[test]
    fn token_files_parse_or_are_refused_never_panic(text in "\\PC{0,200}") {
        let _ = TokenSet::parse(&text);
    }
}
