//! The client id a verified client certificate proves: its first DNS or URI subject alternative
//! name.

use http::Request;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// The first DNS or URI subject alternative name of the verified client certificate.
pub(super) fn client_id<B>(request: &Request<B>) -> Option<String> {
    use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer};
    let certificates = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    let (_, certificate) = X509Certificate::from_der(certificates.first()?.as_ref()).ok()?;
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
