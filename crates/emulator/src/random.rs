//! The emulator's random secrets: keys, tokens and nonces as unguessable as AWS's.

use rand::{
    RngExt,
    distr::{Alphanumeric, SampleString},
};

/// `len` random letters and digits.
pub fn text(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// A nonce as unguessable as a session key: 128 random bits in decimal.
pub fn nonce() -> String {
    rand::rng().random::<u128>().to_string()
}
