//! Any bytes, decoded as one of the job-worker requests, then validated at the edge: decoding
//! may fail, validation may refuse, nothing may panic.

#![no_main]

use codepipeline_gateway::{
    domain::{
        AcknowledgeJobInput, GetJobDetailsInput, PollForJobsInput, PutJobFailureResultInput,
        PutJobSuccessResultInput,
    },
    pb::jobworker as pb,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn check<P: Message + Default, D: TryFrom<P>>(bytes: &[u8]) {
    if let Ok(request) = P::decode(bytes) {
        let _ = D::try_from(request);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 5 {
        0 => check::<pb::PollForJobsRequest, PollForJobsInput>(bytes),
        1 => check::<pb::AcknowledgeJobRequest, AcknowledgeJobInput>(bytes),
        2 => check::<pb::GetJobDetailsRequest, GetJobDetailsInput>(bytes),
        3 => check::<pb::PutJobSuccessResultRequest, PutJobSuccessResultInput>(bytes),
        _ => check::<pb::PutJobFailureResultRequest, PutJobFailureResultInput>(bytes),
    }
});
