"""Huawei's Java SDK is not served by the Maven registry reachable here (huaweicloud-sdk-core
3.1.219 refused on 2026-12-02), so answers of a credentials endpoint are checked against its parsing
rules, re-implemented with the JDK only in java/PodIdentityResponseCheck.java (see its header for the
rules and where they come from). tests/podidentity_sdk.rs runs the same check on the operator's
answer through the agent.
"""

import json
import os
import shutil
import subprocess

import pytest
from conftest import HERE

CHECK = HERE / "java" / "PodIdentityResponseCheck.java"
JAVA = os.environ.get("TCRED_JAVA") or shutil.which("java")


@pytest.fixture(scope="module")
def check_cmd(tmp_path_factory):
    """The check compiled once (javac next to java), as a command line."""
    if not JAVA:
        pytest.fail("no `java` (a JDK >= 17) to run the Java SDK parsing check; set TCRED_JAVA")
    classes = tmp_path_factory.mktemp("java")
    javac = os.path.join(os.path.dirname(os.path.realpath(JAVA)), "javac")
    subprocess.run([javac, "-d", str(classes), str(CHECK)], check=True, timeout=120)
    return [JAVA, "-cp", str(classes), "PodIdentityResponseCheck"]


def java_check(cmd, body, min_validity=0):
    out = subprocess.run([*cmd, "--min-validity-seconds", str(min_validity)], input=body.encode(),
                         capture_output=True, timeout=120)
    return out.returncode, json.loads(out.stdout)


def test_the_check_knows_the_java_sdks_rules(check_cmd):
    out = subprocess.run([*check_cmd, "--self-test"], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout) == {"ok": True}


@pytest.mark.parametrize("expiration, ok", [
    ("2099-01-02T03:04:05.123Z", True),
    ("2099-01-02T03:04:05.999Z", True),
    ("2099-01-02T03:04:05.000Z", False),  # the SDK turns ".000Z" into ".Z" and cannot parse it
    ("2099-01-02T03:04:05.123456Z", False),  # read as 123456 ms
    ("2099-01-02T03:04:05Z", False),
])
def test_expiration_formats(check_cmd, expiration, ok):
    body = json.dumps({"credentials": {"accessKeyId": "AK", "secretAccessKey": "SECRETVALUE",
                                       "securityToken": "TOKENVALUE", "expiration": expiration}})
    code, answer = java_check(check_cmd, body)
    assert (code == 0) == ok and answer["ok"] == ok, answer
    assert "SECRETVALUE" not in json.dumps(answer) and "TOKENVALUE" not in json.dumps(answer)


def test_the_cce_shaped_answer_with_extra_fields_is_read(check_cmd):
    """The shape of CCE's AssumeAgencyForPodIdentity (extra top-level objects are ignored)."""
    body = json.dumps({"assumedAgency": {"urn": "x", "id": "y"}, "audience": "tcred.dev",
                       "credentials": {"accessKeyId": "AK", "secretAccessKey": "SK", "securityToken": "T",
                                       "expiration": "2099-01-02T03:04:05.120Z"},
                       "subject": {"namespace": "a", "serviceAccount": "b"}})
    code, answer = java_check(check_cmd, body, min_validity=40 * 60)
    assert code == 0 and answer == {"ok": True, "accessKeyId": "AK", "expiresAtMillis": 4071006245120}

