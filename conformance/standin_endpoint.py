"""STAND-IN, not tcred: a tiny credentials endpoint implementing the pod-identity contract
(../shared podid-contract: POST /v1/credentials/{namespace}/{name}, raw token in Authorization,
200 {"credentials": {accessKeyId, secretAccessKey, securityToken, expiration "…​.mmmZ"}}), so the
consumers in this directory can be proven against the simulator without the operator. The real
proof (tests/podidentity_sdk.rs) runs the operator's endpoint and `tcred agent` instead.

It mints from the simulator with AssumeAgency (the ci-bot user of sim-config.yaml) and mints a new
credential every --rotate-seconds. A request is allowed when its Authorization header (a `Bearer `
prefix is accepted) equals the current content of --token-file; anything else is a 401 JSON error.

usage: standin_endpoint.py --sim URL --token-file PATH [--rotate-seconds 20] [--duration 900]
Prints `listening on http://127.0.0.1:<port>` as its first stdout line.
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import AGENCY_URN, CI_BOT_AK, CI_BOT_SK, http_config
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdksts.v1 import AssumeAgencyReqBody, AssumeAgencyRequest, StsClient

PATH_PREFIX = "/v1/credentials/"


class Holder:
    """The credential currently served, replaced every rotate_seconds."""

    def __init__(self, sim_url, rotate_seconds, duration):
        self.client = (
            StsClient.new_builder()
            .with_http_config(http_config())
            .with_credentials(BasicCredentials(CI_BOT_AK, CI_BOT_SK))
            .with_endpoints([sim_url])
            .build()
        )
        self.rotate_seconds = rotate_seconds
        self.duration = duration
        self.lock = threading.Lock()
        self.body = None
        self.minted_at = 0.0
        self.mints = 0

    def current(self):
        with self.lock:
            if self.body is None or time.monotonic() - self.minted_at >= self.rotate_seconds:
                body = AssumeAgencyReqBody(agency_urn=AGENCY_URN, agency_session_name="standin",
                                           duration_seconds=self.duration)
                resp = self.client.assume_agency(AssumeAgencyRequest(body=body))
                c = json.loads(resp.raw_content)["credentials"]
                self.body = json.dumps({"credentials": {
                    "accessKeyId": c["access_key_id"], "secretAccessKey": c["secret_access_key"],
                    "securityToken": c["security_token"], "expiration": c["expiration"],
                }}).encode()
                self.minted_at = time.monotonic()
                self.mints += 1
            return self.body


def make_handler(holder, token_file):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet: never log requests (they carry tokens)
            pass

        def reply(self, status, body):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length > 1024:
                return self.reply(413, b'{"error":"PayloadTooLarge","message":"body over 1 KiB"}')
            self.rfile.read(length)
            if not self.path.startswith(PATH_PREFIX) or self.path.count("/") != 4:
                return self.reply(404, b'{"error":"NotFound","message":"no such path"}')
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
            with open(token_file) as f:
                expected = f.read().strip()
            if not token or token != expected:
                return self.reply(401, b'{"error":"Unauthorized","message":"invalid token"}')
            try:
                body = holder.current()
            except Exception:  # the simulator refused or is down
                return self.reply(503, b'{"error":"Unavailable","message":"no credential yet"}')
            self.reply(200, body)

    return Handler


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--sim", required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--rotate-seconds", type=float, default=20)
    p.add_argument("--duration", type=int, default=900)
    args = p.parse_args(argv)
    holder = Holder(args.sim, args.rotate_seconds, args.duration)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(holder, args.token_file))
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
