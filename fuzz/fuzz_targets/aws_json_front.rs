//! Any bytes as the JSON body of any operation on the emulator's awsJson1_1 front: the answer is
//! a request accepted or an AWS error code, never a panic.

#![no_main]

use codepipeline_gateway::{
    emulator::front::{Protocol, check_request},
    upstream::Operation,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else {
        return;
    };
    let operation = Operation::ALL[usize::from(*selector) % Operation::ALL.len()];
    if let Err(code) = check_request(Protocol::AwsJson, operation, body) {
        assert!(
            code == "ValidationException" || code == "SerializationException",
            "unexpected code {code}"
        );
    }
});
