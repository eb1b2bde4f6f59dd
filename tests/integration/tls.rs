//! TLS and mTLS on the gRPC port: a verified client certificate identifies the client by its
//! SAN, a client without one is refused when certificates are required, and tokens work over TLS.

use std::path::Path;

use codepipeline_gateway::pb::jobworker::{
    self as pb, job_worker_service_client::JobWorkerServiceClient,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};
use tonic_types::StatusExt;

use crate::support::{Backend, TestGateway, gateway};

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

/// A CA, a server certificate for `localhost`, and a client certificate whose SAN is `client_san`.
fn pki(client_san: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |san: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![san.to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca: ca.pem(),
        server: leaf("localhost"),
        client: leaf(client_san),
    }
}

fn write(dir: &Path, name: &str, contents: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

async fn start(
    pki: &Pki,
    dir: &Path,
    require_client_certs: bool,
    token_file: Option<&str>,
) -> TestGateway {
    let path = |name: &str, contents: &str| write(dir, name, contents).to_str().unwrap().to_owned();
    let mut flags = vec![
        "--tls-cert".to_owned(),
        path("tls.crt", &pki.server.0),
        "--tls-key".to_owned(),
        path("tls.key", &pki.server.1),
    ];
    if require_client_certs {
        flags.extend(["--tls-client-ca".to_owned(), path("ca.crt", &pki.ca)]);
    }
    if let Some(text) = token_file {
        flags.extend(["--token-file".to_owned(), path("tokens.toml", text)]);
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    gateway(Backend::InProcess)
        .flags(&flags)
        .engine(&["--demo-jobs", "1"])
        .spawn()
        .await
}

async fn client(
    server: &TestGateway,
    pki: &Pki,
    with_certificate: bool,
) -> Result<JobWorkerServiceClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    if with_certificate {
        tls = tls.identity(Identity::from_pem(&pki.client.0, &pki.client.1));
    }
    let channel = Channel::from_shared(format!("https://{}", server.addr()))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(JobWorkerServiceClient::new(channel))
}

fn poll() -> pb::PollForJobsRequest {
    pb::PollForJobsRequest {
        action_type_id: Some(crate::support::demo_action_type()),
        max_batch_size: Some(1),
        query_param: Default::default(),
    }
}

#[tokio::test]
async fn with_mtls_a_verified_certificate_is_the_credential_and_no_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki("worker-a");
    let server = start(&pki, dir.path(), true, None).await;

    let mut with_cert = client(&server, &pki, true).await.unwrap();
    let jobs = with_cert
        .poll_for_jobs(poll())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(jobs.len(), 1);

    let refused = match client(&server, &pki, false).await {
        Err(_) => true,
        Ok(mut anonymous) => anonymous.poll_for_jobs(poll()).await.is_err(),
    };
    assert!(refused, "a client without a certificate gets nothing");
    server.stop().await;
}

#[tokio::test]
async fn the_certificates_san_is_the_client_id_that_the_token_file_authorises() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki("worker-a");
    let tokens = "[[clients]]\nid = \"worker-a\"\nallowed_rpcs = [\"AcknowledgeJob\"]\n";
    let server = start(&pki, dir.path(), true, Some(tokens)).await;
    let mut worker_a = client(&server, &pki, true).await.unwrap();
    let denied = worker_a.poll_for_jobs(poll()).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        denied.get_details_error_info().unwrap().metadata["client_id"],
        "worker-a"
    );
    server.stop().await;
}

/// With a token file, a certificate is an identity only as a certificate client of the file: one
/// it does not list is refused, one whose SAN is a token client's id does not get that client's
/// rights, and a certificate client's scope holds like a token client's.
#[tokio::test]
async fn a_certificate_is_an_identity_only_as_a_certificate_client_of_the_token_file() {
    use sha2::Digest;
    let pki = pki("worker-a");
    let token_client = format!(
        "[[clients]]\nid = \"worker-a\"\ntoken_sha256 = \"{}\"\nallowed_rpcs = [\"*\"]\n",
        hex::encode(sha2::Sha256::digest(b"worker-a-token"))
    );
    let unlisted =
        "[[clients]]\nid = \"someone-else\"\nkind = \"certificate\"\nallowed_rpcs = [\"*\"]\n";
    for (tokens, what) in [
        (token_client.as_str(), "a SAN equal to a token client's id"),
        (unlisted, "a SAN the file does not list"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let server = start(&pki, dir.path(), true, Some(tokens)).await;
        let mut worker_a = client(&server, &pki, true).await.unwrap();
        let refused = worker_a.poll_for_jobs(poll()).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{what}");
        assert_eq!(
            refused.get_details_error_info().unwrap().reason,
            "UNKNOWN_CERTIFICATE",
            "{what}"
        );
        server.stop().await;
    }
    let scoped = "[[clients]]\nid = \"worker-a\"\nkind = \"certificate\"\nallowed_rpcs = [\"*\"]\naction_types = [\"Build/Custom/OtherBuilder/1\"]\n";
    let dir = tempfile::tempdir().unwrap();
    let server = start(&pki, dir.path(), true, Some(scoped)).await;
    let mut worker_a = client(&server, &pki, true).await.unwrap();
    let refused = worker_a.poll_for_jobs(poll()).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(
        refused.get_details_error_info().unwrap().reason,
        "ACTION_TYPE_NOT_ALLOWED"
    );
    server.stop().await;
}

#[tokio::test]
async fn bearer_tokens_work_over_tls() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let pki = pki("unused");
    let tokens = format!(
        "[[clients]]\nid = \"w\"\ntoken_sha256 = \"{}\"\nallowed_rpcs = [\"*\"]\n",
        hex::encode(sha2::Sha256::digest(b"tls-token"))
    );
    let server = start(&pki, dir.path(), false, Some(&tokens)).await;
    let mut client = client(&server, &pki, false).await.unwrap();
    assert_eq!(
        client.poll_for_jobs(poll()).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut request = tonic::Request::new(poll());
    request
        .metadata_mut()
        .insert("authorization", "Bearer tls-token".parse().unwrap());
    assert_eq!(
        client
            .poll_for_jobs(request)
            .await
            .unwrap()
            .into_inner()
            .jobs
            .len(),
        1
    );
    server.stop().await;
}
