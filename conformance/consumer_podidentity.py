"""A long-lived program using Huawei's official Python SDK (huaweicloudsdkcore, pinned in
requirements.txt) the way an application in a pod does with tcred's credentials endpoint.

It builds ONE STS client for the whole process, its credentials from the SDK's own
PodIdentityCredentialProvider (HC_CONTAINER_CREDENTIALS_FULL_URI, HC_CONTAINER_AUTHORIZATION_TOKEN_FILE;
the token file is re-read on every fetch, and the SDK fetches again by itself before a signed call
when less than 40 minutes of validity remain). Every --interval it makes one signed STS
GetCallerIdentity call and prints one JSON line:

    {"ok": true, "call": 1, "time": "...", "accessKeyId": "<public AK id>", "principalUrn": "..."}
    {"ok": false, "call": 2, "time": "...", "accessKeyId": "...", "error": "..."}

The secret key and the security token are never printed. After --max-failures failed calls it exits
1; after --calls calls (0 = forever) it exits 0.

usage: consumer_podidentity.py --endpoint STS_URL [--interval 10] [--max-failures 3] [--calls 0]
"""

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone

from huaweicloudsdkcore.auth.provider import PodIdentityCredentialProvider
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdksts.v1 import GetCallerIdentityRequest, StsClient

MAX_ERROR_LEN = 300


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", default=os.environ.get("TCRED_CONSUMER_STS_ENDPOINT"),
                   help="STS endpoint URL (default $TCRED_CONSUMER_STS_ENDPOINT)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between calls")
    p.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout of one STS call, seconds")
    p.add_argument("--max-failures", type=int, default=3, help="exit 1 after this many failed calls")
    p.add_argument("--calls", type=int, default=0, help="exit 0 after this many calls (0 = forever)")
    args = p.parse_args(argv)
    if not args.endpoint:
        p.error("--endpoint (or $TCRED_CONSUMER_STS_ENDPOINT) is required")
    if args.max_failures < 1 or args.calls < 0 or args.interval < 0:
        p.error("--max-failures must be >= 1, --calls and --interval >= 0")
    return args


class Consumer:
    def __init__(self, args):
        self.args = args
        self.credentials = None
        self.client = None

    def ensure_client(self):
        """Builds the one client on first use (retried on the next call if the endpoint failed)."""
        if self.client is not None:
            return
        credentials = PodIdentityCredentialProvider.get_basic().get_credentials()
        config = HttpConfig.get_default_config()
        config.timeout = (5, self.args.timeout)
        config.retry_times = 0
        self.client = (
            StsClient.new_builder()
            .with_http_config(config)
            .with_credentials(credentials)
            .with_endpoints([self.args.endpoint])
            .build()
        )
        self.credentials = credentials

    def call_once(self):
        line = {"ok": False}
        try:
            self.ensure_client()
            resp = self.client.get_caller_identity(GetCallerIdentityRequest())
            # The SDK refreshed the credential (if needed) before signing: this AK signed the call.
            line.update(ok=True, accessKeyId=self.credentials.ak, principalUrn=resp.principal_urn)
        except Exception as e:  # every failure is reported as a line, the loop decides what to do
            if self.credentials is not None:
                line["accessKeyId"] = self.credentials.ak
            line["error"] = self.scrub(f"{type(e).__name__}: {e}")
        return line

    def scrub(self, msg):
        """Bounds an error message and removes the SK and security token should one quote them."""
        if self.credentials is not None:
            for secret in (self.credentials.sk, self.credentials.security_token):
                if secret:
                    msg = msg.replace(secret, "<redacted>")
        return msg if len(msg) <= MAX_ERROR_LEN else msg[:MAX_ERROR_LEN] + "…"


def main(argv):
    args = parse_args(argv)
    consumer = Consumer(args)
    failures = 0
    call = 0
    while args.calls == 0 or call < args.calls:
        if call:
            time.sleep(args.interval)
        call += 1
        line = consumer.call_once()
        line["call"] = call
        line["time"] = datetime.now(timezone.utc).isoformat()
        print(json.dumps(line), flush=True)
        if not line["ok"]:
            failures += 1
            if failures >= args.max_failures:
                print(f"consumer_podidentity: {failures} failed calls, giving up", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
