//! The client id a verified client certificate proves: its first DNS or URI subject alternative
//! name. (The TLS layer verified the certificate; this only reads it.)

use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer};

/// The first DNS or URI subject alternative name of a verified client certificate (DER).
pub(super) fn client_id(der: &[u8]) -> Option<String> {
    let (_, certificate) = X509Certificate::from_der(der).ok()?;
    let names = certificate.subject_alternative_name().ok()??;
    names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::DNSName(name) | GeneralName::URI(name) => Some((*name).to_owned()),
            _ => None,
        })
}
