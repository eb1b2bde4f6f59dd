"""The emulator's AWS front at the HTTP level, where no SDK goes: requests by another method than
POST, and POSTs to paths no operation is served at. Each is answered with an AWS error in the
protocol its path suggests, with the request id AWS sends in `x-amzn-RequestId`."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from botocore.parsers import RpcV2CBORParser

from support import CBOR_PATH_PREFIX

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"


def fetch(method: str, url: str) -> tuple[int, dict[str, str], bytes]:
    """Sends a bare request (unsigned, no body) and returns the status, headers and body, the
    error statuses included."""
    request = urllib.request.Request(url, method=method, data=b"" if method in ("POST", "PUT") else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def lower_cased(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_another_method_than_post_on_the_json_path_is_405_with_an_aws_error(emulator, method):
    status, headers, body = fetch(method, emulator.address + "/")
    headers = lower_cased(headers)
    assert status == 405
    assert headers["x-amzn-requestid"]
    assert headers["allow"] == "POST"
    assert headers["content-type"] == JSON_CONTENT_TYPE
    error = json.loads(body)
    assert set(error) == {"__type", "message"}
    assert headers["x-amzn-errortype"] == error["__type"]
    assert method in error["message"]


def test_head_is_405_with_the_headers_of_an_aws_error_and_no_body(emulator):
    status, headers, body = fetch("HEAD", emulator.address + "/")
    headers = lower_cased(headers)
    assert (status, body) == (405, b"")
    assert headers["x-amzn-requestid"]
    assert headers["x-amzn-errortype"]


def test_get_on_an_rpc_v2_cbor_path_is_405_with_a_cbor_aws_error(emulator):
    status, headers, body = fetch("GET", emulator.address + CBOR_PATH_PREFIX + "PollForJobs")
    headers = lower_cased(headers)
    assert status == 405
    assert headers["x-amzn-requestid"]
    assert headers["allow"] == "POST"
    assert headers["content-type"] == "application/cbor"
    assert headers["smithy-protocol"] == "rpc-v2-cbor"
    # botocore's own CBOR decoder reads the body.
    error = RpcV2CBORParser()._initial_body_parse(body)
    assert set(error) == {"__type", "message"}
    assert error["__type"].startswith("com.amazonaws.codepipeline#")
    assert "GET" in error["message"]


def test_a_post_to_a_path_no_operation_is_served_at_is_404_with_an_aws_error(emulator):
    status, headers, body = fetch("POST", emulator.address + "/no/such/path")
    headers = lower_cased(headers)
    assert status == 404
    assert headers["x-amzn-requestid"]
    error = json.loads(body)
    assert headers["x-amzn-errortype"] == error["__type"]
    assert "/no/such/path" in error["message"]
