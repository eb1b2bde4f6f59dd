"""What the client tests share: the binary under test, how to run it, the emulator's identity and
boto3 clients for it in either of CodePipeline's wire protocols.

The binary and its launcher are tests/shared/gateway_process.py's.
"""

from __future__ import annotations

import atexit
import functools
import json
import tempfile
from pathlib import Path

import boto3
import botocore.loaders
import botocore.session
import pytest
from botocore.config import Config

from gateway_process import (  # re-exported: the suites that use this module take them from here
    DEMO_ACTION_TYPE,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_TOKEN,
    DEMO_THIRD_PARTY_ACTION_TYPE,
    EMULATOR_ACCESS_KEY_ID,
    EMULATOR_ACCOUNT_ID,
    EMULATOR_READY,
    EMULATOR_REGION,
    EMULATOR_SECRET_ACCESS_KEY,
    GATEWAY_BIN,
    GATEWAY_READY,
    REPO_ROOT,
    TOOLS_BIN,
    RunningBinary,
)

# The wire protocols the emulator's front serves, as botocore's models name them: awsJson1_1
# (`POST /`, X-Amz-Target) and Smithy RPC v2 CBOR (`POST /service/<service>/operation/<op>`).
JSON = "json"
CBOR = "smithy-rpc-v2-cbor"
PROTOCOLS = (JSON, CBOR)
PROTOCOL_IDS = {JSON: "json", CBOR: "cbor"}
# The path prefix of every rpcv2Cbor request to CodePipeline.
CBOR_PATH_PREFIX = "/service/CodePipeline_20150709/operation/"


@functools.cache
def data_path_speaking_only(protocol: str) -> Path:
    """A botocore data directory holding a copy of the installed botocore's own CodePipeline
    model that lists `protocol` as its only protocol.

    botocore picks a service's protocol from the model's `protocols` by a priority of its own,
    which still prefers awsJson1_1 for CodePipeline (whose model lists rpcv2Cbor first since
    botocore 1.44.1). A model naming one protocol leaves it no choice. Made once per test run,
    from the installed model, so no network is needed; removed when the run ends."""
    loader = botocore.loaders.create_loader()
    (api_version,) = loader.list_api_versions("codepipeline", "service-2")
    model = loader.load_service_model("codepipeline", "service-2", api_version)
    available = model["metadata"].get("protocols", [model["metadata"]["protocol"]])
    if protocol not in available:
        pytest.fail(
            f"botocore {botocore.__version__}'s CodePipeline model offers {available}, not {protocol}: "
            "run scripts/install-test-tools.sh"
        )
    model["metadata"] |= {"protocol": protocol, "protocols": [protocol]}
    directory = tempfile.TemporaryDirectory(prefix=f"botocore-codepipeline-{PROTOCOL_IDS[protocol]}-")
    atexit.register(directory.cleanup)
    target = Path(directory.name, "codepipeline", api_version, "service-2.json")
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps(model))
    return Path(directory.name)


def codepipeline_client(
    endpoint_url: str,
    *,
    protocol: str = JSON,
    access_key_id: str = EMULATOR_ACCESS_KEY_ID,
    secret_access_key: str = EMULATOR_SECRET_ACCESS_KEY,
    session_token: str | None = None,
    **config: object,
):
    """A boto3 CodePipeline client for the emulator: its static credentials, no retries, and
    `protocol` on the wire (JSON or CBOR). Extra keyword arguments go to botocore's Config
    (e.g. signature_version=UNSIGNED)."""
    botocore_session = botocore.session.get_session()
    if protocol != JSON:
        botocore_session.get_component("data_loader").search_paths.insert(0, str(data_path_speaking_only(protocol)))
    client = boto3.session.Session(botocore_session=botocore_session).client(
        "codepipeline",
        endpoint_url=endpoint_url,
        region_name=EMULATOR_REGION,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        aws_session_token=session_token,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, **config),
    )
    assert client.meta.service_model.resolved_protocol == protocol, client.meta.service_model.metadata
    return client
