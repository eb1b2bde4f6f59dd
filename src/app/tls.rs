//! TLS on the gRPC port: the certificate files, read once at start into tonic's rustls config.

use std::path::PathBuf;

use anyhow::Context;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// TLS files for the gRPC port.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle verifying client certificates (mTLS), if any.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Reads the files. With `tokens_too` (a token file as well), a client certificate is
    /// optional: a client may prove itself either way.
    pub(super) fn server_config(&self, tokens_too: bool) -> anyhow::Result<ServerTlsConfig> {
        let files = self;
        let read = |path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?));
        if let Some(ca) = &files.client_ca {
            config = config
                .client_ca_root(Certificate::from_pem(read(ca)?))
                // With a token file as well, a client may prove itself either way.
                .client_auth_optional(tokens_too);
        }
        Ok(config)
    }
}
