"""Loads a credential from a Secret tcred wrote, the way each consumer of its formats does
(docs/api.md, "The Secret"). Used by tests/formats.rs, which sets the environment and files from the
Secret it read and compares the answer with it.

usage: load_formats.py MODE [FILE]
  huawei       Huawei's Python SDK: a regional client (BasicCredentials) and a global one
               (GlobalCredentials), both built with no credentials passed (the SDK's default chain:
               HUAWEICLOUD_SDK_* env, else HUAWEICLOUD_SDK_CREDENTIALS_FILE), with a region, so the
               SDK looks up the project and domain ids at IAM unless it was given them. The caller
               points HUAWEICLOUD_SDK_IAM_ENDPOINT and HUAWEICLOUD_SDK_STS_ENDPOINT at the simulator
               and counts the lookups there.
  boto3        boto3's credential chain (AWS_* env or AWS_SHARED_CREDENTIALS_FILE).
  obs          Huawei's OBS SDK (esdk-obs-python) with its ENV security provider (OBS_* env).
  hadoop-xml FILE, hadoop-properties FILE
               the fs.obs.* values of a Hadoop configuration XML file or a Java properties file.
Prints one JSON line: the access key id, and SHA-256 digests of the secret key and the token (never
the secrets themselves), plus the ids the Huawei SDK ended up with. Every mode but `huawei` fails if
it opens any network connection.
"""

import hashlib
import json
import socket
import sys

CONNECTIONS = []


def _refuse(self, address, *args, **kwargs):
    CONNECTIONS.append(str(address))
    raise OSError(f"network call to {address} refused by load_formats.py")


def forbid_network():
    socket.socket.connect = _refuse
    socket.socket.connect_ex = _refuse


def digest(value):
    return hashlib.sha256((value or "").encode()).hexdigest()


def answer(ak, sk, token, **extra):
    return {"ak": ak, "sk_sha256": digest(sk), "token_sha256": digest(token), **extra}


def huawei():
    import os

    from huaweicloudsdkcore.auth.credentials import GlobalCredentials
    from huaweicloudsdkcore.client import Client, ClientBuilder
    from huaweicloudsdkcore.http.http_config import HttpConfig
    from huaweicloudsdkcore.region.region import Region
    from huaweicloudsdksts.v1 import StsClient

    config = HttpConfig.get_default_config()
    config.timeout = (5, 10)
    config.retry_times = 0
    region = Region(os.environ["TCRED_TEST_REGION"], os.environ["HUAWEICLOUD_SDK_IAM_ENDPOINT"])
    regional = StsClient.new_builder().with_http_config(config).with_region(region).build()
    global_ = (
        ClientBuilder(Client, GlobalCredentials.__name__).with_http_config(config).with_region(region).build()
    )
    basic = regional.get_credentials()
    glob = global_.get_credentials()
    assert basic.ak == glob.ak, "both clients load the same credential"
    return answer(
        basic.ak, basic.sk, basic.security_token, project_id=basic.project_id, domain_id=glob.domain_id
    )


def boto3_chain():
    import boto3

    creds = boto3.session.Session().get_credentials().get_frozen_credentials()
    return answer(creds.access_key, creds.secret_key, creds.token)


def obs():
    from obs import ObsClient, loadtoken

    client = ObsClient(
        server="http://127.0.0.1:9", security_providers=[loadtoken.ENV], security_provider_policy="ENV"
    )
    p = client._get_token()
    return answer(p.access_key_id, p.secret_access_key, p.security_token)


def hadoop_xml(path):
    import xml.etree.ElementTree as ET

    conf = {p.findtext("name"): p.findtext("value") for p in ET.parse(path).getroot().iter("property")}
    return answer(conf["fs.obs.access.key"], conf["fs.obs.secret.key"], conf["fs.obs.session.token"])


def hadoop_properties(path):
    # Java's Properties.load rules for what tcred writes: `key=value` lines, backslash escapes.
    conf = {}
    with open(path, encoding="latin-1") as f:
        for line in f.read().splitlines():
            if not line or line[0] in "#!":
                continue
            key, _, value = line.partition("=")
            conf[key] = value.encode("latin-1").decode("unicode_escape")
    return answer(conf["fs.obs.access.key"], conf["fs.obs.secret.key"], conf["fs.obs.session.token"])


def main():
    mode = sys.argv[1]
    if mode != "huawei":
        forbid_network()
    loaders = {
        "huawei": huawei,
        "boto3": boto3_chain,
        "obs": obs,
        "hadoop-xml": lambda: hadoop_xml(sys.argv[2]),
        "hadoop-properties": lambda: hadoop_properties(sys.argv[2]),
    }
    if mode not in loaders:
        sys.exit(f"unknown mode {mode}")
    out = loaders[mode]()
    assert not CONNECTIONS, f"network calls: {CONNECTIONS}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
