"""The long-lived consumers (Huawei's Python SDK in consumer_podidentity.py, Huawei's Go SDK in
consumer-go/) against the simulator, through the STAND-IN credentials endpoint
(standin_endpoint.py, not tcred): proves the clients themselves — one client per process, a new
credential picked up on every rotation, a rotated token file re-read, no signature failure, and
failures counted. The same clients run against the real operator and `tcred agent` in
tests/podidentity_sdk.rs.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest
from conftest import HERE, ROOT, _read_first_line

GO_BIN = pathlib.Path(os.environ.get("TCRED_CONSUMER_GO_BIN", ROOT / "target" / "consumer-go"))
ROTATE_SECONDS = 2


@pytest.fixture(scope="module")
def go_consumer():
    """The Go consumer binary: $TCRED_CONSUMER_GO_BIN, else built into target/ (static)."""
    if "TCRED_CONSUMER_GO_BIN" not in os.environ:
        if not shutil.which("go"):
            pytest.fail("no `go` to build conformance/consumer-go (or set TCRED_CONSUMER_GO_BIN)")
        env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
        subprocess.run(["go", "build", "-trimpath", "-o", str(GO_BIN), "."], cwd=HERE / "consumer-go",
                       env=env, check=True)
    return GO_BIN


@pytest.fixture
def standin(sim, tmp_path):
    """The stand-in endpoint, minting a new credential every ROTATE_SECONDS; yields (url, token file)."""
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "standin_endpoint.py"), "--sim", sim.url, "--token-file", str(token_file),
         "--rotate-seconds", str(ROTATE_SECONDS)],
        cwd=HERE, stdout=subprocess.PIPE, stderr=open(tmp_path / "standin.log", "wb"),
    )
    try:
        line = _read_first_line(proc.stdout, 20)
        assert line and line.startswith("listening on "), f"stand-in did not start: {line!r}"
        yield line.strip().removeprefix("listening on "), token_file
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


def consumer_env(url, token_file):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUAWEICLOUD_SDK_", "HC_CONTAINER_"))}
    env["HC_CONTAINER_CREDENTIALS_FULL_URI"] = f"{url}/v1/credentials/team-a/app"
    env["HC_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = str(token_file)
    return env


def start_consumers(go_bin, sim, env, calls, interval=0.5, max_failures=1):
    args = ["--endpoint", sim.url, "--calls", str(calls), "--max-failures", str(max_failures)]
    py = subprocess.Popen([sys.executable, str(HERE / "consumer_podidentity.py"), *args, "--interval", str(interval)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    go = subprocess.Popen([str(go_bin), "--mode", "pod-identity", *args, "--interval", f"{interval}s"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return {"python": py, "go": go}


def finish(procs, timeout=120):
    """Waits for every consumer; returns {name: (exit code, [json lines], stderr)}."""
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=timeout)
        out[name] = (p.returncode, [json.loads(line) for line in stdout.decode().splitlines()], stderr.decode())
    return out


def signature_failures(sim, since):
    return [e for e in sim.control("GET", f"events?since={since}") if e["operation"] == "GetCallerIdentity"
            and e["status"] == 401]


def last_seq(sim):
    events = sim.control("GET", "events?since=0")
    return events[-1]["seq"] if events else 0


def test_both_sdks_keep_one_client_across_rotations_and_a_rotated_token(sim, standin, go_consumer):
    url, token_file = standin
    since = last_seq(sim)
    calls = 16  # 8 s at 0.5 s: about four rotations of the stand-in
    procs = start_consumers(go_consumer, sim, consumer_env(url, token_file), calls)
    time.sleep(3)
    token_file.write_text("second-token\n")  # what the kubelet does: the SDKs re-read it on each fetch
    results = finish(procs)
    for name, (code, lines, stderr) in results.items():
        assert code == 0, f"{name} exited {code}: {stderr}"
        assert len(lines) == calls and all(line["ok"] for line in lines), f"{name}: {lines}"
        assert [line["call"] for line in lines] == list(range(1, calls + 1)), "one process, no restart"
        keys = {line["accessKeyId"] for line in lines}
        assert len(keys) >= 3, f"{name} saw {len(keys)} access keys: {keys}"
        assert all(line["principalUrn"].endswith(":assumed-agency:ops-admin/standin") for line in lines)
    assert signature_failures(sim, since) == []


def test_a_refused_token_is_a_failed_call_and_the_consumer_gives_up(sim, standin, go_consumer, tmp_path):
    url, _ = standin
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    results = finish(start_consumers(go_consumer, sim, consumer_env(url, wrong), calls=10, interval=0.1,
                                     max_failures=2))
    for name, (code, lines, stderr) in results.items():
        assert code == 1, f"{name} should give up after 2 failures: {code} {lines}"
        assert len(lines) == 2 and not any(line["ok"] for line in lines), lines
        assert all("401" in line["error"] or "Unauthorized" in line["error"] for line in lines), lines
        assert "giving up" in stderr


def test_go_file_mode_rebuilds_its_client_when_the_file_changes(sim, standin, go_consumer, tmp_path):
    url, token_file = standin
    import requests

    def write_credentials_file():
        token = token_file.read_text().strip()
        c = requests.post(f"{url}/v1/credentials/team-a/app", headers={"Authorization": token}, json={},
                          timeout=10).json()["credentials"]
        tmp = tmp_path / "credentials.tmp"
        tmp.write_text(f"[basic]\nak = {c['accessKeyId']}\nsk = {c['secretAccessKey']}\n"
                       f"security_token = {c['securityToken']}\n")
        tmp.rename(tmp_path / "credentials")  # atomic, as a Secret volume swaps its files
        return c

    first = write_credentials_file()
    since = last_seq(sim)
    go = subprocess.Popen([str(go_consumer), "--mode", "file", "--credentials-file", str(tmp_path / "credentials"),
                           "--endpoint", sim.url, "--calls", "12", "--interval", "0.5s", "--max-failures", "1"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = [first["accessKeyId"]]
    for _ in range(2):
        time.sleep(ROTATE_SECONDS + 0.2)
        seen.append(write_credentials_file()["accessKeyId"])
    code, lines, stderr = finish({"go": go})["go"]
    assert code == 0, stderr
    assert all(line["ok"] for line in lines), lines
    used = [line["accessKeyId"] for line in lines]
    assert set(used) == set(seen) and len(set(seen)) == 3, (used, seen)
    assert used[0] == seen[0] and used[-1] == seen[-1]
    out = json.dumps(lines)
    assert first["secretAccessKey"] not in out and first["securityToken"] not in out
    assert signature_failures(sim, since) == []
