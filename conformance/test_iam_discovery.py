"""The IAM discovery calls Huawei's Python SDK makes when a client has no project or domain id
(KeystoneListProjects, KeystoneListAuthDomains), served by the simulator with signature checks and
counted in `discoveryCalls`: tests/formats.rs relies on that count to prove a client built from
tcred's Secret makes none."""

import pytest
import requests
from huaweicloudsdkcore.auth.credentials import BasicCredentials, GlobalCredentials
from huaweicloudsdkcore.client import Client, ClientBuilder
from huaweicloudsdkcore.region.region import Region

from conftest import ACCOUNT_ID, CI_BOT_AK, CI_BOT_SK, HTTP_TIMEOUT, http_config

REGION = "ap-southeast-1"


@pytest.fixture
def iam_at_sim(sim, monkeypatch):
    # The SDK finds IAM and STS by these variables; no other host is ever contacted.
    monkeypatch.setenv("HUAWEICLOUD_SDK_IAM_ENDPOINT", sim.url)
    monkeypatch.setenv("HUAWEICLOUD_SDK_STS_ENDPOINT", sim.url)
    return sim


def build(sim, credentials):
    kind = type(credentials).__name__
    return ClientBuilder(Client, kind).with_http_config(http_config()).with_credentials(credentials) \
        .with_region(Region(REGION, sim.url)).build()


def discovery(sim):
    return sim.control("GET", "stats")["discoveryCalls"]


def test_a_client_without_ids_looks_them_up_with_signed_calls_that_are_counted(iam_at_sim):
    sim = iam_at_sim
    before = discovery(sim)
    # Distinct AKs per test run are not needed: the SDK caches per AK+region, so use fresh objects
    # and clear its class-level caches.
    BasicCredentials._CACHE.clear()
    GlobalCredentials._CACHE.clear()
    basic = build(sim, BasicCredentials(CI_BOT_AK, CI_BOT_SK)).get_credentials()
    glob = build(sim, GlobalCredentials(CI_BOT_AK, CI_BOT_SK)).get_credentials()
    assert glob.domain_id == ACCOUNT_ID
    assert basic.project_id and len(basic.project_id) == 32
    assert discovery(sim) == before + 2


def test_a_client_given_the_ids_makes_no_discovery_call(iam_at_sim):
    sim = iam_at_sim
    before = discovery(sim)
    build(sim, BasicCredentials(CI_BOT_AK, CI_BOT_SK, "0aa1bb2cc3dd4ee5ff60718293a4b5c6"))
    build(sim, GlobalCredentials(CI_BOT_AK, CI_BOT_SK, ACCOUNT_ID))
    assert discovery(sim) == before


@pytest.mark.parametrize("path", ["/v3/projects?name=ap-southeast-1", "/v3/auth/domains"])
def test_unsigned_discovery_is_refused(sim, path):
    resp = requests.get(f"{sim.url}{path}", timeout=HTTP_TIMEOUT)
    assert resp.status_code == 401, resp.text


def test_a_wrong_secret_key_is_refused(iam_at_sim):
    GlobalCredentials._CACHE.clear()
    with pytest.raises(Exception) as e:
        build(iam_at_sim, GlobalCredentials(CI_BOT_AK, "not-the-secret-key"))
    assert "APIGW.0301" in str(e.value), str(e.value)

