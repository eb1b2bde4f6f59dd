//! Any text as the token file: parsed or refused with a reason, never a panic.

#![no_main]

use codepipeline_gateway::auth::TokenSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = TokenSet::parse(&String::from_utf8_lossy(data));
});
