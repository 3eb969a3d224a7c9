"""An S3-compatible server on loopback (moto's), and a fresh bucket per test: real HTTP, real boto3.

The session's environment gets dummy credentials and no profile, config file or endpoint, so boto3's
own chain (what production uses) finds them and nothing on the machine can reach a real account.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The server's URL; the environment is restored and the server stopped after the session."""
    requests_log = logging.getLogger("werkzeug")  # one INFO line per request would drown test failures
    requests_log_level = requests_log.level
    requests_log.setLevel(logging.WARNING)
    with pytest.MonkeyPatch.context() as env:
        for name, value in ENVIRONMENT.items():
            env.setenv(name, value)
        for name in UNSET:
            env.delenv(name, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()
            requests_log.setLevel(requests_log_level)


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    name = f"babylon-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION).create_bucket(Bucket=name)
    return name
