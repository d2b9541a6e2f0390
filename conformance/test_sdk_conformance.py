"""Huawei's official Python SDK (huaweicloudsdk* 3.1.219) against tcred-huawei-sim.

If the SDK can sign for, parse and round-trip everything the simulator answers, the simulator speaks
the same wire protocol as Huawei Cloud, and the operator's tests against it mean something.
"""

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
from conftest import (
    ACCOUNT_ID,
    AGENCY_URN,
    CI_BOT_AK,
    CI_BOT_SK,
    DEVICE_GRANT,
    HTTP_TIMEOUT,
    PROVIDER_URN,
    START_URL,
    oidc_client,
    portal_client,
    sts_client,
)
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkidentitycenteroidc.v1 import (
    CreateTokenReqBody,
    CreateTokenRequest,
    RegisterClientReqBody,
    RegisterClientRequest,
    StartDeviceAuthorizationReqBody,
    StartDeviceAuthorizationRequest,
)
from huaweicloudsdkidentitycenterportalapi.v1 import (
    GetAgencyCredentialsRequest,
    ListAccountAgenciesRequest,
    ListAccountsRequest,
)
from huaweicloudsdksts.v1 import (
    AssumeAgencyReqBody,
    AssumeAgencyRequest,
    AssumeAgencyWithOIDCReqBody,
    AssumeAgencyWithOIDCRequest,
    GetCallerIdentityRequest,
)

STS_EXPIRATION_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

# ES256, kid "conformance", signed offline with the test key whose public half is in
# sim/fixtures/world.yaml; iss https://kubernetes.default.svc, sub system:serviceaccount:team-a:billing,
# aud ["sts.huaweicloud"], exp 2100-01-01.
ID_TOKEN = (
    "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImNvbmZvcm1hbmNlIn0."
    "eyJpc3MiOiJodHRwczovL2t1YmVybmV0ZXMuZGVmYXVsdC5zdmMiLCJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6dGVhbS1h"
    "OmJpbGxpbmciLCJhdWQiOlsic3RzLmh1YXdlaWNsb3VkIl0sImlhdCI6MTc2NzIyNTYwMCwibmJmIjoxNzY3MjI1NjAwLCJleHAi"
    "OjQxMDI0NDQ4MDB9."
    "YcV03h9N9eh-F0kAt9GOGFExuSrucDZJsU6DBXhNVIPFOuNIhXt23JULy1Bd0r5bmOVzLL2pobVuWMzeZYbHkQ"
)


def assume(sim, session_name="conformance", duration=3600, **client_kwargs):
    body = AssumeAgencyReqBody(agency_urn=AGENCY_URN, agency_session_name=session_name, duration_seconds=duration)
    return sts_client(sim, **client_kwargs).assume_agency(AssumeAgencyRequest(body=body))


def raw_credentials(resp):
    """The credentials object exactly as sent (the SDK turns `expiration` into a datetime only when
    python-dateutil is installed)."""
    return json.loads(resp.raw_content)["credentials"]


def assert_envelope(resp, status, error_code):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error_code"] == error_code, body
    assert body["error_msg"]
    assert body["request_id"] == resp.headers["X-Request-Id"]
    return body


# --- STS ----------------------------------------------------------------------------------------


def test_assume_agency_with_permanent_keys(sim):
    before = sim.control("GET", "stats")["mints"].get(AGENCY_URN, 0)
    resp = assume(sim, duration=7200)

    creds = raw_credentials(resp)
    expiration = datetime.strptime(creds["expiration"], STS_EXPIRATION_FORMAT).replace(tzinfo=timezone.utc)
    remaining = expiration - datetime.now(timezone.utc)
    assert timedelta(seconds=7200 - 60) < remaining <= timedelta(seconds=7200 + 5)
    assert len(resp.credentials.access_key_id) == 20 and resp.credentials.access_key_id.isalnum()
    assert len(resp.credentials.secret_access_key) == 40
    assert len(resp.credentials.security_token) > 300
    assert resp.assumed_agency.urn == f"sts::{ACCOUNT_ID}::assumed-agency:ops-admin/conformance"
    assert resp.assumed_agency.id.endswith(":conformance")
    assert sim.control("GET", "stats")["mints"][AGENCY_URN] == before + 1


def test_caller_identity_with_temporary_credentials(sim):
    creds = assume(sim, session_name="who-am-i").credentials
    client = sts_client(
        sim, ak=creds.access_key_id, sk=creds.secret_access_key, security_token=creds.security_token
    )
    who = client.get_caller_identity(GetCallerIdentityRequest())
    assert who.account_id == ACCOUNT_ID
    assert who.principal_urn == f"sts::{ACCOUNT_ID}::assumed-agency:ops-admin/who-am-i"
    assert who.principal_id.endswith(":who-am-i")

    me = sts_client(sim).get_caller_identity(GetCallerIdentityRequest())
    assert me.principal_urn == f"iam::{ACCOUNT_ID}:user:ci-bot"


def test_temporary_key_without_its_token_is_rejected(sim):
    creds = assume(sim).credentials
    client = sts_client(sim, ak=creds.access_key_id, sk=creds.secret_access_key)
    with pytest.raises(ClientRequestException) as e:
        client.get_caller_identity(GetCallerIdentityRequest())
    assert e.value.status_code == 401
    assert e.value.error_code == "APIGW.0301"


def test_lifetime_override_caps_issued_credentials(sim):
    sim.control("PUT", "lifetime", {"credentialSeconds": 30})
    creds = raw_credentials(assume(sim, duration=3600))
    expiration = datetime.strptime(creds["expiration"], STS_EXPIRATION_FORMAT).replace(tzinfo=timezone.utc)
    assert (expiration - datetime.now(timezone.utc)).total_seconds() <= 30


def test_assume_agency_with_oidc(sim):
    body = AssumeAgencyWithOIDCReqBody(
        provider_urn=PROVIDER_URN,
        agency_urn=AGENCY_URN,
        agency_session_name="k8s-billing",
        id_token=ID_TOKEN,
        duration_seconds=900,
    )
    resp = sts_client(sim).assume_agency_with_oidc(AssumeAgencyWithOIDCRequest(body=body))
    assert resp.subject_from_id_token == "system:serviceaccount:team-a:billing"
    assert resp.provider == PROVIDER_URN
    assert resp.audience == "sts.huaweicloud"
    datetime.strptime(raw_credentials(resp)["expiration"], STS_EXPIRATION_FORMAT)

    tampered = ID_TOKEN[:-2] + ("AA" if not ID_TOKEN.endswith("AA") else "BB")
    body.id_token = tampered
    with pytest.raises(ClientRequestException) as e:
        sts_client(sim).assume_agency_with_oidc(AssumeAgencyWithOIDCRequest(body=body))
    assert e.value.status_code == 403
    assert "signature" in e.value.error_msg


def test_duration_899_is_a_400(sim):
    with pytest.raises(ClientRequestException) as e:
        assume(sim, duration=899)
    assert e.value.status_code == 400
    assert e.value.request_id


def test_unknown_agency_is_sts5_1106(sim):
    body = AssumeAgencyReqBody(agency_urn=f"iam::{ACCOUNT_ID}:agency:nope", agency_session_name="x1")
    with pytest.raises(ClientRequestException) as e:
        sts_client(sim).assume_agency(AssumeAgencyRequest(body=body))
    assert (e.value.status_code, e.value.error_code) == (404, "STS5.1106")


# --- Signature negatives, sent raw after signing with the SDK's own signer ----------------------


def signed_raw_request(sim, sdk_date=None):
    """An AssumeAgency request signed by huaweicloudsdkcore, ready to send with `requests`."""
    scheme, host = sim.url.split("://", 1)
    body = json.dumps({"agency_urn": AGENCY_URN, "agency_session_name": "raw", "duration_seconds": 900})
    headers = {"Content-Type": "application/json"}
    if sdk_date:
        headers["X-Sdk-Date"] = sdk_date
    request = SdkRequest(
        method="POST",
        schema=scheme,
        host=host,
        resource_path="/v5/agencies/assume",
        query_params=[],
        header_params=headers,
        body=body,
    )
    signed = BasicCredentials(CI_BOT_AK, CI_BOT_SK).sign_request(request)
    return signed.url, dict(signed.header_params), signed.body


def send(url, headers, body):
    return requests.post(url, headers=headers, data=body, timeout=HTTP_TIMEOUT)


def test_sdk_signed_raw_request_is_accepted(sim):
    url, headers, body = signed_raw_request(sim)
    resp = send(url, headers, body)
    assert resp.status_code == 200, resp.text


def test_tampered_signature_is_apigw_0301(sim):
    url, headers, body = signed_raw_request(sim)
    auth = headers["Authorization"]
    last = auth[-1]
    headers["Authorization"] = auth[:-1] + ("0" if last != "0" else "1")
    body_json = assert_envelope(send(url, headers, body), 401, "APIGW.0301")
    assert body_json["error_msg"] == "Incorrect IAM authentication information: verify aksk signature fail"


def test_tampered_body_is_apigw_0301(sim):
    url, headers, body = signed_raw_request(sim)
    assert_envelope(send(url, headers, body.replace(b"raw", b"rax")), 401, "APIGW.0301")


def test_stale_sdk_date_is_rejected(sim):
    stale = (datetime.now(timezone.utc) - timedelta(minutes=20)).strftime("%Y%m%dT%H%M%SZ")
    url, headers, body = signed_raw_request(sim, sdk_date=stale)
    body_json = assert_envelope(send(url, headers, body), 401, "APIGW.0301")
    assert "15 minutes" in body_json["error_msg"]


def test_missing_authorization_is_401(sim):
    resp = requests.post(f"{sim.url}/v5/agencies/assume", json={}, timeout=HTTP_TIMEOUT)
    assert_envelope(resp, 401, "APIGW.0301")


# --- Identity Center: device flow and portal ----------------------------------------------------


def register(sim):
    body = RegisterClientReqBody(
        client_name="tcred-conformance",
        client_type="public",
        token_endpoint_auth_method="client_secret_post",
        grant_types=[DEVICE_GRANT],
        response_types=["code"],
        scopes=["openid"],
    )
    info = oidc_client(sim).register_client(RegisterClientRequest(body=body)).client_info
    assert info.client_secret_expires_at > info.client_id_issued_at > 1_600_000_000
    return info


def start_device(sim, info, start_url=START_URL):
    body = StartDeviceAuthorizationReqBody(
        client_id=info.client_id, client_secret=info.client_secret, start_url=start_url
    )
    return oidc_client(sim).start_device_authorization(StartDeviceAuthorizationRequest(body=body))


def poll(sim, info, device_code):
    body = CreateTokenReqBody(
        client_id=info.client_id, client_secret=info.client_secret, grant_type=DEVICE_GRANT, device_code=device_code
    )
    return oidc_client(sim).create_token(CreateTokenRequest(body=body))


def sign_in(sim, user="alice"):
    """The whole device flow through the SDK, approving through the control API."""
    info = register(sim)
    device = start_device(sim, info)
    assert device.verification_uri_complete.endswith(f"?user_code={device.user_code}")
    pending = [d["userCode"] for d in sim.control("GET", "device/pending")]
    assert device.user_code in pending
    sim.control("POST", "device/approve", {"userCode": device.user_code, "user": user})
    token = poll(sim, info, device.device_code).token_info
    assert token.token_type == "Bearer"
    assert 0 < token.expires_in <= 28800
    return token.access_token


def test_portal_lists_agencies_and_mints_credentials(sim):
    access_token = sign_in(sim)
    portal = portal_client(sim)

    accounts = portal.list_accounts(ListAccountsRequest(access_token=access_token))
    assert [a.account_id for a in accounts.account_list] == [ACCOUNT_ID]

    agencies = portal.list_account_agencies(
        ListAccountAgenciesRequest(access_token=access_token, account_id=ACCOUNT_ID, limit=100)
    )
    assert [a.permission_set_name for a in agencies.agency_list] == ["ReadOnlyAccess"]
    assert agencies.page_info.next_marker is None
    agency_urn = agencies.agency_list[0].agency_urn
    assert agency_urn == f"iam::{ACCOUNT_ID}:agency:IdentityCenter-ReadOnlyAccess"

    creds = portal.get_agency_credentials(
        GetAgencyCredentialsRequest(access_token=access_token, target_account_id=ACCOUNT_ID, agency_urn=agency_urn)
    ).agency_credentials
    assert 3500 < creds.expiration - time.time() <= 3600

    # The portal's temporary key works against STS like any other.
    who = sts_client(
        sim, ak=creds.access_key_id, sk=creds.secret_access_key, security_token=creds.session_token
    ).get_caller_identity(GetCallerIdentityRequest())
    assert who.principal_urn == f"sts::{ACCOUNT_ID}::assumed-agency:IdentityCenter-ReadOnlyAccess/alice"

    with pytest.raises(ClientRequestException) as e:
        portal.get_agency_credentials(
            GetAgencyCredentialsRequest(
                access_token=access_token,
                target_account_id=ACCOUNT_ID,
                agency_urn=f"iam::{ACCOUNT_ID}:agency:IdentityCenter-AdminAccess",
            )
        )
    assert e.value.status_code == 403


def test_portal_rejects_unknown_token(sim):
    with pytest.raises(ClientRequestException) as e:
        portal_client(sim).list_accounts(ListAccountsRequest(access_token="not-a-session"))
    assert e.value.status_code == 401


def test_polling_before_approval_is_authorization_pending(sim):
    info = register(sim)
    device = start_device(sim, info)
    with pytest.raises(ClientRequestException) as e:
        poll(sim, info, device.device_code)
    assert (e.value.status_code, e.value.error_code) == (400, "authorization_pending")

    # Polling again inside the interval earns slow_down.
    with pytest.raises(ClientRequestException) as e:
        poll(sim, info, device.device_code)
    assert e.value.error_code == "slow_down"

    sim.control("POST", "device/deny", {"userCode": device.user_code})
    time.sleep(device.interval + 5 + 0.2)  # slow_down added 5 s to the interval
    with pytest.raises(ClientRequestException) as e:
        poll(sim, info, device.device_code)
    assert e.value.error_code == "access_denied"


def test_wrong_start_url_is_400(sim):
    info = register(sim)
    with pytest.raises(ClientRequestException) as e:
        start_device(sim, info, start_url="https://idcenter.example.com/d-0000000000/portal")
    assert e.value.status_code == 400
