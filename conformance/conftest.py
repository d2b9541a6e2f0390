"""Starts tcred-huawei-sim for the conformance tests and builds Huawei SDK clients pointed at it.

The simulator binary comes from $TCRED_SIM_BIN (default: target/debug/tcred-huawei-sim, built with
`cargo build --package tcred-huawei-sim`). It runs the test world every consumer shares,
sim/fixtures/world.yaml, and prints `listening on http://127.0.0.1:<port>` as its first stdout line;
everything else it says goes to stderr, which is kept in a log file in a temporary directory.
"""

import os
import pathlib
import subprocess
import threading

import pytest
import requests
import yaml  # PyYAML, a dependency of huaweicloudsdkcore
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkidentitycenteroidc.v1 import IdentityCenterOIDCClient
from huaweicloudsdkidentitycenteroidc.v1.identitycenteroidc_credentials import IdentityCenterOIDCCredentials
from huaweicloudsdkidentitycenterportalapi.v1 import IdentityCenterPortalAPIClient
from huaweicloudsdkidentitycenterportalapi.v1.identitycenterportalapi_credentials import (
    IdentityCenterPortalAPICredentials,
)
from huaweicloudsdksts.v1 import StsClient

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
SIM_BIN = pathlib.Path(os.environ.get("TCRED_SIM_BIN", ROOT / "target" / "debug" / "tcred-huawei-sim"))
STARTUP_TIMEOUT = 20  # seconds to wait for the "listening on" line
HTTP_TIMEOUT = 10

WORLD_FILE = ROOT / "sim" / "fixtures" / "world.yaml"
WORLD = yaml.safe_load(WORLD_FILE.read_text())

# The names the tests use, read from the world.
ACCOUNT_ID = WORLD["accounts"][0]["id"]
CI_BOT_AK = WORLD["users"][0]["accessKeyId"]
CI_BOT_SK = WORLD["users"][0]["secretAccessKey"]
AGENCY = "ops-admin"  # trusts ci-bot, and team-a's ServiceAccounts through the k8s provider
assert AGENCY in [a["name"] for a in WORLD["accounts"][0]["agencies"]], f"{WORLD_FILE} has no agency {AGENCY}"
AGENCY_URN = f"iam::{ACCOUNT_ID}:agency:{AGENCY}"
PROVIDER_URN = WORLD["oidcProviders"][0]["urn"]
START_URL = WORLD["identityCenter"]["startUrls"][0]
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class Simulator:
    def __init__(self, proc, url, log_path):
        self.proc = proc
        self.url = url
        self.log_path = log_path

    def control(self, method, path, json=None, expect=200):
        resp = requests.request(method, f"{self.url}/control/{path}", json=json, timeout=HTTP_TIMEOUT)
        assert resp.status_code == expect, f"control {method} {path}: {resp.status_code} {resp.text}"
        return resp.json() if resp.content else None

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _read_first_line(stream, timeout):
    """Reads one line from the child's stdout, giving up after `timeout` seconds."""
    box = {}

    def reader():
        box["line"] = stream.readline().decode(errors="replace")

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    return box.get("line")


@pytest.fixture(scope="session")
def sim(tmp_path_factory):
    if not SIM_BIN.exists():
        pytest.fail(f"{SIM_BIN} does not exist: run `cargo build --package tcred-huawei-sim` or set TCRED_SIM_BIN")
    log_path = tmp_path_factory.mktemp("sim") / "sim.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(SIM_BIN), "--config", str(WORLD_FILE), "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
    try:
        line = _read_first_line(proc.stdout, STARTUP_TIMEOUT)
        if not line or not line.startswith("listening on http://"):
            proc.kill()
            proc.wait(timeout=10)
            pytest.fail(f"simulator did not start (first line {line!r}); log:\n{log_path.read_text()}")
        simulator = Simulator(proc, line.strip().removeprefix("listening on "), log_path)
        simulator.control("GET", "health")
        yield simulator
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


@pytest.fixture(autouse=True)
def default_knobs(sim):
    """Every test starts without injected faults or lifetime overrides."""
    sim.control("PUT", "faults", {"latencyMs": 0, "errorRate": 0.0, "throttleRate": 0.0, "retryAfterSeconds": 1})
    sim.control("PUT", "lifetime", {"credentialSeconds": None})
    yield


def http_config():
    config = HttpConfig.get_default_config()
    config.timeout = (5, HTTP_TIMEOUT)
    config.retry_times = 0
    return config


def sts_client(sim, ak=CI_BOT_AK, sk=CI_BOT_SK, security_token=None):
    credentials = BasicCredentials(ak, sk)
    if security_token:
        credentials = credentials.with_security_token(security_token)
    return (
        StsClient.new_builder()
        .with_http_config(http_config())
        .with_credentials(credentials)
        .with_endpoints([sim.url])
        .build()
    )


def oidc_client(sim):
    return (
        IdentityCenterOIDCClient.new_builder()
        .with_http_config(http_config())
        .with_credentials(IdentityCenterOIDCCredentials())
        .with_endpoints([sim.url])
        .build()
    )


def portal_client(sim):
    return (
        IdentityCenterPortalAPIClient.new_builder()
        .with_http_config(http_config())
        .with_credentials(IdentityCenterPortalAPICredentials())
        .with_endpoints([sim.url])
        .build()
    )
