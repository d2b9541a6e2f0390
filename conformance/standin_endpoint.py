"""STAND-IN, not tcred: a tiny credentials endpoint implementing the pod-identity contract
(../shared podid-contract: POST /v1/credentials/{namespace}/{name}, raw token in Authorization,
200 {"credentials": {accessKeyId, secretAccessKey, securityToken, expiration "…​.mmmZ"}}), so the
consumers in this directory can be proven against the simulator without the operator. The real
proof (tests/podidentity_sdk.rs) runs the operator's endpoint and `tcred agent` instead.

Two modes:
- `--sim URL --token-file PATH`: it mints from the simulator with AssumeAgency (the ci-bot user of
  sim-config.yaml), a new credential every --rotate-seconds, and allows a request whose Authorization
  header (a `Bearer ` prefix is accepted) equals the current content of --token-file.
- `--kubeconfig FILE --allow-sa NAME --tls-cert C --tls-key K`: like tcred's endpoint, over TLS, it
  checks the token with a TokenReview for --audience, allows ServiceAccount NAME of the path's
  namespace, and serves the Secret (status.secretName) of the path's TemporaryCredential, which the
  operator keeps rotated. Used to prove tests/podidentity_sdk.rs's harness before the real endpoint.
Anything else is a 401 or 403 JSON error.

Prints `listening on http(s)://127.0.0.1:<port>` as its first stdout line.
"""

import argparse
import base64
import hashlib
import json
import ssl
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
import yaml

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


class Kube:
    """TokenReview and the credential's Secret through the API server (admin kubeconfig)."""

    def __init__(self, kubeconfig, audience, allowed_sa):
        cfg = yaml.safe_load(open(kubeconfig))
        cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
        self.server = cluster["server"]
        ca = tempfile.NamedTemporaryFile(delete=False, suffix=".crt")
        ca.write(base64.b64decode(cluster["certificate-authority-data"]))
        ca.close()
        self.session = requests.Session()
        self.session.verify = ca.name
        self.session.headers["Authorization"] = f"Bearer {user['token']}"
        self.audience, self.allowed_sa = audience, allowed_sa
        self.reviews = {}

    def user(self, token):
        key = hashlib.sha256(token.encode()).hexdigest()
        if key not in self.reviews:
            review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                      "spec": {"token": token, "audiences": [self.audience]}}
            status = self.session.post(f"{self.server}/apis/authentication.k8s.io/v1/tokenreviews", json=review,
                                       timeout=10).json().get("status", {})
            self.reviews[key] = status.get("user", {}).get("username") if status.get("authenticated") else None
        return self.reviews[key]

    def credential(self, ns, name):
        tc = self.session.get(f"{self.server}/apis/tcred.dev/v1alpha1/namespaces/{ns}/temporarycredentials/{name}",
                              timeout=10)
        if tc.status_code != 200 or not tc.json().get("status", {}).get("secretName"):
            return None
        secret = self.session.get(f"{self.server}/api/v1/namespaces/{ns}/secrets/{tc.json()['status']['secretName']}",
                                  timeout=10).json().get("data", {})
        d = {k: base64.b64decode(v).decode() for k, v in secret.items()}
        expires = datetime.strptime(d["HUAWEICLOUD_SDK_EXPIRES_AT"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        # whole seconds: served as .999 of the second before (the Java SDK cannot parse ".000Z")
        expires -= timedelta(milliseconds=1)
        return json.dumps({"credentials": {
            "accessKeyId": d["HUAWEICLOUD_SDK_AK"], "secretAccessKey": d["HUAWEICLOUD_SDK_SK"],
            "securityToken": d["HUAWEICLOUD_SDK_SECURITY_TOKEN"],
            "expiration": expires.strftime("%Y-%m-%dT%H:%M:%S.") + f"{expires.microsecond // 1000:03d}Z",
        }}).encode()


def make_kube_handler(kube):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, status, body):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 1024))
            parts = self.path.split("/")
            if len(parts) != 5 or parts[1:3] != ["v1", "credentials"]:
                return self.reply(404, b'{"error":"NotFound","message":"no such path"}')
            ns, name = parts[3], parts[4]
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
            user = kube.user(token) if token else None
            if not user:
                return self.reply(401, b'{"error":"Unauthorized","message":"invalid token"}')
            if user != f"system:serviceaccount:{ns}:{kube.allowed_sa}":
                return self.reply(403, b'{"error":"Forbidden","message":"not allowed"}')
            body = kube.credential(ns, name)
            if body is None:
                return self.reply(403, b'{"error":"Forbidden","message":"not allowed"}')
            self.reply(200, body)

    return Handler


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
    p.add_argument("--sim")
    p.add_argument("--token-file")
    p.add_argument("--rotate-seconds", type=float, default=20)
    p.add_argument("--duration", type=int, default=900)
    p.add_argument("--kubeconfig")
    p.add_argument("--audience", default="tcred.dev")
    p.add_argument("--allow-sa")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--listen-port", type=int, default=0)
    args = p.parse_args(argv)
    if args.kubeconfig:
        handler = make_kube_handler(Kube(args.kubeconfig, args.audience, args.allow_sa))
    else:
        handler = make_handler(Holder(args.sim, args.rotate_seconds, args.duration), args.token_file)
    server = ThreadingHTTPServer(("127.0.0.1", args.listen_port), handler)
    scheme = "http"
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    print(f"listening on {scheme}://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
