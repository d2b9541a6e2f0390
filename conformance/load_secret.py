"""Loads credentials the way an application in a pod does, from a Secret tcred wrote, and makes a
signed call with them. Used by tests/credentials.rs (the Secret layout is checked by Huawei's code).

usage: load_secret.py MODE STS_URL
  MODE env       the SDK's default chain, from HUAWEICLOUD_SDK_AK/SK/SECURITY_TOKEN (envFrom)
  MODE file      the SDK's default chain, from the file named by HUAWEICLOUD_SDK_CREDENTIALS_FILE
  MODE profile   the explicit profile providers for [basic] and [global]
Prints one JSON line: the access key the SDK loaded and the caller identity STS returned.
"""

import json
import sys

from huaweicloudsdkcore.auth.provider import EnvCredentialProvider, ProfileCredentialProvider
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdksts.v1 import GetCallerIdentityRequest, StsClient


def main():
    mode, url = sys.argv[1], sys.argv[2]
    config = HttpConfig.get_default_config()
    config.timeout = (5, 10)
    builder = StsClient.new_builder().with_http_config(config).with_endpoints([url])
    if mode in ("env", "file"):
        # No credentials passed: the SDK runs its own provider chain (env, then profile file).
        loaded = (EnvCredentialProvider.get_basic() if mode == "env" else ProfileCredentialProvider.get_basic()).get_credentials()
        client = builder.build()
    elif mode == "profile":
        loaded = ProfileCredentialProvider.get_basic().get_credentials()
        global_ak = ProfileCredentialProvider.get_global().get_credentials().ak
        assert global_ak == loaded.ak, "[global] and [basic] hold the same credential"
        client = builder.with_credentials(loaded).build()
    else:
        sys.exit(f"unknown mode {mode}")
    assert loaded.security_token, "a temporary credential carries its security token"
    who = client.get_caller_identity(GetCallerIdentityRequest())
    print(json.dumps({"ak": loaded.ak, "principal_urn": who.principal_urn}))


if __name__ == "__main__":
    main()
