"""Fixtures for the chart checks: the Secrets the value sets name but the chart does not create
(a token file, a client-token file, a cert-manager style TLS Secret, a client CA, a client
certificate, a Redis URL, password and CA), made fresh for the session with the `cryptography`
package, the real redis-server the Redis value sets keep their rate limits in, and the OTLP
receiver the tracing value set exports its spans to."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator

import pytest
from chart_support import SERVICE_HOST, OtlpReceiver, Pki, RedisServer, sha256_hex
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

EXISTING_SECRET_TOKEN = "existing-secret-token"
CLIENT_ID = "python-workers"

# The third-party clients of the `partner-client-tokens` Secret (client_id -> client_token). The
# first is the emulator's demo client, whose demo jobs it seeds with this token; the second has
# no jobs.
DEMO_PARTNER_CLIENT_ID = "5f0c7f5e-8d0b-4f51-a1d4-3c2f9e6b7a10"
PARTNER_CLIENT_TOKENS = {
    DEMO_PARTNER_CLIENT_ID: "demo-partner-client-token",
    "0e1d2c3b-4a59-4687-9a8b-7c6d5e4f3a21": "another-partner-client-token",
}


def client_token_file(tokens: dict[str, str]) -> str:
    """A client-token file (TOML) holding `tokens` (client_id -> client_token)."""
    return "".join(
        f'[[clients]]\nclient_id = "{client}"\nclient_token = "{token}"\n\n' for client, token in tokens.items()
    )


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate(subject: str, key, issuer: str, issuer_key, *, ca: bool, sans=(), usage=None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="session")
def pki() -> Pki:
    ca_key, server_key, client_key = _key(), _key(), _key()
    ca = _certificate("chart-checks CA", ca_key, "chart-checks CA", ca_key, ca=True)
    server = _certificate(
        SERVICE_HOST, server_key, "chart-checks CA", ca_key, ca=False,
        sans=[x509.DNSName(SERVICE_HOST), x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )  # fmt: skip
    client = _certificate(
        CLIENT_ID, client_key, "chart-checks CA", ca_key, ca=False,
        sans=[x509.DNSName(CLIENT_ID)], usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    return Pki(
        ca_cert=ca.public_bytes(pem),
        server_cert=server.public_bytes(pem),
        server_key=_pem_key(server_key),
        client_cert=client.public_bytes(pem),
        client_key=_pem_key(client_key),
        server_name=SERVICE_HOST,
    )


@pytest.fixture(scope="session")
def redis_server(pki: Pki, tmp_path_factory) -> Iterator[RedisServer]:
    """The session's redis-server (plaintext and TLS ports, a password), shared by the gateways
    the Redis value sets start, as the pods of a release share one."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), pki)
    yield server
    server.stop()


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A collector of the test's own, so the spans it holds are the test's gateways'."""
    receiver = OtlpReceiver()
    yield receiver
    receiver.stop()


def redis_secrets(server: RedisServer, pki: Pki) -> dict[str, dict[str, bytes]]:
    """The Secrets `redis-existing-secret.yaml` names, for `server`: its URL (TLS, no password
    in it), its password, and the CA that signed its certificate."""
    return {
        "gateway-redis": {"redis-url": f"rediss://127.0.0.1:{server.tls_port}/0".encode()},
        "gateway-redis-password": {"password": server.password.encode()},
        "redis-ca": {"ca.crt": pki.ca_cert},
    }


@pytest.fixture(scope="session")
def external_secrets(pki: Pki, redis_server: RedisServer) -> dict[str, dict[str, bytes]]:
    """The Secrets the value sets refer to, by name, as a cluster would hold them."""
    token_file = (
        "[[clients]]\n"
        f'id = "{CLIENT_ID}"\n'
        f'token_sha256 = "{sha256_hex(EXISTING_SECRET_TOKEN)}"\n'
        'allowed_rpcs = ["PollForJobs", "AcknowledgeJob", "GetJobDetails",'
        ' "PutJobSuccessResult", "PutJobFailureResult"]\n'
    )
    return {
        "gateway-tokens": {"clients.toml": token_file.encode()},
        # `third-party.yaml`'s client tokens, under the key the value set names
        "partner-client-tokens": {"clients.toml": client_token_file(PARTNER_CLIENT_TOKENS).encode()},
        # cert-manager's layout: tls.crt, tls.key and the issuing CA as ca.crt
        "gateway-tls": {"tls.crt": pki.server_cert, "tls.key": pki.server_key, "ca.crt": pki.ca_cert},
        "workers-ca": {"ca.pem": pki.ca_cert},
        "test-client-tls": {"tls.crt": pki.client_cert, "tls.key": pki.client_key},
        **redis_secrets(redis_server, pki),
    }


@pytest.fixture
def started() -> Iterator[list]:
    """Processes a test starts; each is stopped when the test ends."""
    processes: list = []
    yield processes
    for process in processes:
        process.stop()
