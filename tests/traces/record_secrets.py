"""Runs the example Python worker with a grpcio interceptor that writes down every secret the
gateway hands it (nonces, artifact credentials), so a test can look for them in the spans.

    record_secrets.py OUT.json WORKER.py

OUT.json is rewritten after each answer that holds a new one: a JSON object, field name -> the
values seen (e.g. {"nonce": [...], "secret_access_key": [...], "session_token": [...]}). Test-only: the
worker itself records nothing; this wraps the channels it opens and leaves the rest as it is.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import threading

import grpc

SECRET_FIELDS = {"nonce", "secret_access_key", "session_token", "client_token"}

out_path, worker_path = sys.argv[1], sys.argv[2]
secrets: dict[str, set[str]] = {}
lock = threading.Lock()


def collect(message) -> None:
    """Adds the secret fields found anywhere in a protobuf message."""
    for field, value in message.ListFields():
        if field.message_type is None:
            if field.name in SECRET_FIELDS and value:
                secrets.setdefault(field.name, set()).add(value)
        elif field.message_type.GetOptions().map_entry:
            continue  # configuration maps: the test knows the values it set
        elif field.is_repeated:
            for item in value:
                collect(item)
        else:
            collect(value)


class Recorder(grpc.UnaryUnaryClientInterceptor):
    def intercept_unary_unary(self, continuation, details, request):
        call = continuation(details, request)
        try:
            response = call.result()
        except grpc.RpcError:
            return call
        with lock:
            before = sum(map(len, secrets.values()))
            collect(response)
            if sum(map(len, secrets.values())) > before:
                with open(f"{out_path}.tmp", "w") as out:
                    json.dump({name: sorted(values) for name, values in secrets.items()}, out)
                os.replace(f"{out_path}.tmp", out_path)
        return call


original_insecure_channel = grpc.insecure_channel
original_secure_channel = grpc.secure_channel
grpc.insecure_channel = lambda *args, **kwargs: grpc.intercept_channel(
    original_insecure_channel(*args, **kwargs), Recorder()
)
grpc.secure_channel = lambda *args, **kwargs: grpc.intercept_channel(
    original_secure_channel(*args, **kwargs), Recorder()
)

sys.argv = [worker_path]
runpy.run_path(worker_path, run_name="__main__")
