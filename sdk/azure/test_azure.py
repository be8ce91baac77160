"""Drives fulcrum's Azure API Management dialect with the unmodified azure-mgmt-apimanagement SDK.

Two Single backends on real local servers and a Pool backend over them; a fulcrum listener
bound to the Pool backend's pool; every backend setting checked on real traffic. Then, through
the SDK alone, an API whose policy sends its calls to a Pool backend, called through the
service's gateway (failover by priority included), and taken down in the order a user would. The API
speaks https with a certificate from a test CA, and the SDK keeps every default: its
bearer-token policy (https only) and certificate verification, told of the test CA through
`connection_verify` or `REQUESTS_CA_BUNDLE`. One step shows what plain http needs instead.
"""

import base64
import hashlib
import hmac
import io
import json
import os
import sys
import time
from datetime import timedelta

from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.core.rest import HttpRequest
from azure.mgmt.apimanagement import ApiManagementClient
from azure.mgmt.apimanagement import models as M

from harness import Backend, Fulcrum, Steps, check, free_port, get, spread, wait_port, wait_until

SUB = "00000000-0000-0000-0000-000000000001"
RG = "rg1"
SVC = "apim1"
TOKEN = "azure-sdk-token"
# A token limited to another subscription: ARM's 403 AuthorizationFailed for this one.
OTHER_SUB = "00000000-0000-0000-0000-000000000002"
OTHER_TOKEN = "azure-sdk-other-tenant-token"
JWT_SECRET = "jwt-secret-for-the-sdk-test-0123456789"
JWT_ISSUER = "https://issuer.fulcrum.test/"
JWT_AUDIENCE = "https://management.azure.com/"
# Where every service's gateway listens (at the service's address, from [proxy] vip_ranges).
GATEWAY_PORT = free_port()

CONFIG = f"""
[azure]
gateway_port = {GATEWAY_PORT}
tokens = [
  {{ name = "sdk", token = "{TOKEN}" }},
  {{ name = "other", token = "{OTHER_TOKEN}", subscriptions = ["{OTHER_SUB}"] }},
]

[azure.jwt]
issuer = "{JWT_ISSUER}"
audience = "{JWT_AUDIENCE}"
hs256_secret = "{JWT_SECRET}"
"""


class StaticToken:
    """A TokenCredential that always hands out the same token (azure-identity not needed)."""

    def __init__(self, token):
        self.token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self.token, int(time.time()) + 3600)


class StaticBearer(SansIOHTTPPolicy):
    """Replaces BearerTokenCredentialPolicy, which refuses plain-http endpoints (only the
    plain-http step needs it)."""

    def __init__(self, token):
        super().__init__()
        self.token = token

    def on_request(self, request):
        request.http_request.headers["Authorization"] = f"Bearer {self.token}"


def client(f, token=TOKEN, sub=SUB):
    """The SDK as it comes (its own bearer-token policy), trusting the test CA."""
    return ApiManagementClient(
        StaticToken(token), sub, base_url=f.api_url, retry_total=0,
        connection_verify=f.ca_file,
    )


def jwt(claims, secret=JWT_SECRET):
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def with_headers(pipeline_response, model, headers):
    return model, headers, pipeline_response.http_response.headers


def expect_error(call, status, code, target=None, kind=HttpResponseError):
    try:
        call()
    except kind as e:
        check(e.status_code == status, f"expected {status}, got {e.status_code}: {e}")
        check(e.error is not None and e.error.code == code, f"expected code {code}, got {e.error and e.error.code}: {e}")
        if target is not None:
            check(e.error.target == target, f"expected target {target}, got {e.error.target}")
        return e
    raise AssertionError(f"expected {status} {code}, the call succeeded")


class Ctx:
    pass


steps = Steps("azure-mgmt-apimanagement against fulcrum")


@steps.step
def https_with_the_sdk_defaults(c):
    check(c.f.api_url.startswith("https://"), c.f.api_url)
    missing = lambda api: api.backend.get(RG, SVC, "none-yet")
    # Verification is on: a CA the SDK was not told of is refused.
    untold = ApiManagementClient(StaticToken(TOKEN), SUB, base_url=c.f.api_url, retry_total=0)
    try:
        missing(untold)
        raise AssertionError("a certificate from an unknown CA was accepted")
    except ServiceRequestError as e:
        check("CERTIFICATE_VERIFY_FAILED" in str(e), e)
    # Told through connection_verify (every other step) or REQUESTS_CA_BUNDLE: the token
    # reaches fulcrum (a 404, not a 401).
    expect_error(lambda: missing(c.api), 404, "ResourceNotFound", kind=ResourceNotFoundError)
    os.environ["REQUESTS_CA_BUNDLE"] = c.f.ca_file
    try:
        expect_error(lambda: missing(untold), 404, "ResourceNotFound", kind=ResourceNotFoundError)
    finally:
        del os.environ["REQUESTS_CA_BUNDLE"]


@steps.step
def plain_http_needs_the_https_check_turned_off(c):
    plain = Fulcrum(CONFIG)
    try:
        default = ApiManagementClient(StaticToken(TOKEN), SUB, base_url=plain.api_url, retry_total=0)
        try:
            default.backend.get(RG, SVC, "one")
            raise AssertionError("the SDK sent its token over plain http")
        except ServiceRequestError as e:
            check("https" in str(e), e)
        # The documented alternatives: enforce_https=False per call, or a policy that just
        # sets the header.
        expect_error(lambda: default.backend.get(RG, SVC, "one", enforce_https=False), 404,
                     "ResourceNotFound", kind=ResourceNotFoundError)
        custom = ApiManagementClient(StaticToken(TOKEN), SUB, base_url=plain.api_url,
                                     authentication_policy=StaticBearer(TOKEN), retry_total=0)
        expect_error(lambda: custom.backend.get(RG, SVC, "one"), 404, "ResourceNotFound",
                     kind=ResourceNotFoundError)
    finally:
        plain.stop()


@steps.step
def create_single_backends(c):
    for name, b in (("one", c.b1), ("two", c.b2)):
        result, _, headers = c.api.backend.create_or_update(
            RG, SVC, name,
            M.BackendContract(url=f"http://{b.address}/", protocol="http", title=f"{name} title",
                              description=f"backend {name}"),
            cls=with_headers,
        )
        check(headers.get("ETag", "").startswith('"'), f"quoted ETag, got {headers}")
        check(result.url == f"http://{b.address}", result.url)
        check(result.type_properties_type == "Single" and result.name == name, result)
        check(result.id.endswith(f"/service/{SVC}/backends/{name}"), result.id)
    # Creation answered 201; a second PUT of the same backend is an update.
    _, _, raw = c.api.backend.create_or_update(
        RG, SVC, "two", M.BackendContract(url=f"http://{c.b2.address}/", title="two title"),
        cls=lambda pr, m, h: (m, h, pr.http_response))
    check(raw.status_code == 200, f"update by PUT answers 200, got {raw.status_code}")


@steps.step
def create_pool_backend(c):
    def ref(name):
        return f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ApiManagement/service/{SVC}/backends/{name}"

    pool, _, headers = c.api.backend.create_or_update(
        RG, SVC, "pool",
        M.BackendContract(
            type_properties_type="Pool",
            pool=M.BackendBaseParametersPool(services=[
                M.BackendPoolItem(id=ref("one"), priority=1, weight=1),
                M.BackendPoolItem(id=ref("two"), priority=2, weight=1),
            ]),
        ),
        cls=with_headers,
    )
    check([(s.id.rsplit("/", 1)[1], s.priority) for s in pool.pool.services] == [("one", 1), ("two", 2)],
          pool.pool.services)
    c.lb_id = headers["x-fulcrum-loadbalancer-id"]
    c.pool_id = headers["x-fulcrum-pool-id"]


@steps.step
def bind_listener_through_native_api(c):
    c.port = free_port()
    status, body = c.f.native("POST", f"/v1/loadbalancers/{c.lb_id}/listeners", {
        "name": "apim-pool", "protocol": "HTTP", "port": c.port, "default_pool_id": c.pool_id})
    check(status == 201, f"listener: {status} {body}")
    c.listener_id = body["id"]
    wait_port(c.port)
    c.url = f"http://127.0.0.1:{c.port}/hello"
    counts = spread(c.url, 6)
    check(counts == {"b1": 6}, f"priority 1 takes everything: {counts}")


@steps.step
def get_head_and_resource_group_case(c):
    b = c.api.backend.get(RG, SVC, "one")
    check(b.title == "one title" and b.description == "backend one", b)
    check(b.tls.validate_certificate_chain and b.tls.validate_certificate_name, b.tls)
    etag = c.api.backend.get_entity_tag(RG, SVC, "one", cls=lambda pr, m, h: h["ETag"])
    etag_upper = c.api.backend.get_entity_tag(RG.upper(), SVC, "one", cls=lambda pr, m, h: h["ETag"])
    check(etag == etag_upper, "resource group names ignore case")
    check(c.api.backend.get_entity_tag(RG, SVC, "one") is True, "HEAD")
    try:
        c.api.backend.get_entity_tag(RG, SVC, "nope")
        raise AssertionError("HEAD of a missing backend")
    except ResourceNotFoundError:
        pass
    expect_error(lambda: c.api.backend.get(RG, SVC, "nope"), 404, "ResourceNotFound", kind=ResourceNotFoundError)


@steps.step
def patch_credentials_with_star_and_see_them_at_the_backend(c):
    updated = c.api.backend.update(RG, SVC, "one", "*", M.BackendUpdateParameters(
        credentials=M.BackendCredentialsContract(
            header={"x-api-key": ["k-123"]},
            query={"code": ["q-456"]},
            authorization=M.BackendAuthorizationHeaderCredentials(scheme="Bearer", parameter="s3cret"),
        ),
    ))
    # Secrets are write-only: the answer and every GET mask them.
    check(updated.credentials.authorization.parameter == "***", updated.credentials)
    check(updated.credentials.header == {"x-api-key": ["***"]}, updated.credentials.header)
    check(updated.title == "one title", "PATCH merges: other fields stay")
    status, body, _ = get(c.url)
    check((status, body) == (200, "b1"), (status, body))
    h = c.b1.last_headers
    check(h.get("x-api-key") == "k-123" and h.get("authorization") == "Bearer s3cret", h)
    check("code=q-456" in c.b1.last_path, c.b1.last_path)


@steps.step
def patch_url_title_tls_with_fresh_etag_and_stale_etag_is_412(c):
    etag = c.api.backend.get_entity_tag(RG, SVC, "one", cls=lambda pr, m, h: h["ETag"])
    updated = c.api.backend.update(RG, SVC, "one", etag, M.BackendUpdateParameters(
        url=f"http://{c.b1.address}/base/", title="primary",
        tls=M.BackendTlsProperties(validate_certificate_chain=False, validate_certificate_name=True),
    ))
    check(updated.url == f"http://{c.b1.address}/base" and updated.title == "primary", updated)
    check(updated.tls.validate_certificate_chain is False, updated.tls)
    check(updated.credentials.authorization.parameter == "***", "secrets kept")
    status, body, _ = get(c.url)
    check(body == "b1" and c.b1.last_path.startswith("/base/hello?"), c.b1.last_path)
    check(c.b1.last_headers.get("authorization") == "Bearer s3cret", "credentials survive a PATCH")
    # How long a PATCH takes; it answers once the data plane serves the change.
    took = []
    for i in range(10):
        t0 = time.perf_counter()
        c.api.backend.update(RG, SVC, "two", "*", M.BackendUpdateParameters(title=f"two title {i}"))
        took.append((time.perf_counter() - t0) * 1000)
    took.sort()
    print(f"     PATCH round trip (applied to traffic): median {took[5]:.1f} ms, max {took[-1]:.1f} ms")
    e = expect_error(lambda: c.api.backend.update(RG, SVC, "one", etag, M.BackendUpdateParameters(title="late")),
                     412, "PreconditionFailed")
    check(c.api.backend.get(RG, SVC, "one").title == "primary", f"a 412 writes nothing ({e})")
    expect_error(lambda: c.api.backend.update(RG, SVC, "nope", "*", M.BackendUpdateParameters(title="x")),
                 404, "ResourceNotFound", kind=ResourceNotFoundError)


@steps.step
def read_modify_write_keeps_secrets(c):
    b = c.api.backend.get(RG, SVC, "one")
    check(b.credentials.authorization.parameter == "***", "masked on read")
    b.description = "rewritten by PUT"
    c.api.backend.create_or_update(RG, SVC, "one", b, if_match="*")
    get(c.url)
    h = c.b1.last_headers
    check(h.get("authorization") == "Bearer s3cret" and h.get("x-api-key") == "k-123",
          f"masks written back keep the secrets: {h}")
    check(c.api.backend.get(RG, SVC, "one").description == "rewritten by PUT", "PUT applied")


@steps.step
def priority_failover_when_the_first_backend_stops(c):
    # Stopping the harness server leaves open connections served: have b1 close the
    # ones fulcrum keeps alive first, so "stopped" means refused. Each of fulcrum's workers
    # keeps its own idle connections, and a new client connection lands on any worker:
    # enough requests that every worker has had its connections to b1 closed.
    c.b1.headers = {"connection": "close"}
    spread(c.url, 24)
    c.b1.stop()
    c.b1.headers = {}
    counts = spread(c.url, 4)
    check(counts == {"b2": 4}, f"priority 2 takes over: {counts}")
    c.b1.start()
    wait_until(lambda: spread(c.url, 1) == {"b1": 1}, timeout=15, what="b1 back")


@steps.step
def patch_pool_priorities_moves_traffic(c):
    def services(first, second):
        ref = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ApiManagement/service/{SVC}/backends/"
        return M.BackendUpdateParameters(pool=M.BackendBaseParametersPool(services=[
            M.BackendPoolItem(id=ref + "one", priority=first), M.BackendPoolItem(id=ref + "two", priority=second)]))

    c.api.backend.update(RG, SVC, "pool", "*", services(2, 1))
    counts = spread(c.url, 4)
    check(counts == {"b2": 4}, f"two preferred now: {counts}")
    c.api.backend.update(RG, SVC, "pool", "*", services(1, 2))
    check(spread(c.url, 2) == {"b1": 2}, "one preferred again")


@steps.step
def circuit_breaker_trips_on_503_for_retry_after(c):
    c.api.backend.update(RG, SVC, "one", "*", M.BackendUpdateParameters(
        circuit_breaker=M.BackendCircuitBreaker(rules=[M.CircuitBreakerRule(
            name="trip-on-5xx", trip_duration=timedelta(seconds=30), accept_retry_after=True,
            failure_condition=M.CircuitBreakerFailureCondition(
                count=3, interval=timedelta(seconds=10),
                status_code_ranges=[M.FailureStatusCodeRange(min=500, max=599)]),
        )]),
    ))
    got = c.api.backend.get(RG, SVC, "one").circuit_breaker.rules[0]
    check(got.trip_duration == timedelta(seconds=30) and got.failure_condition.interval == timedelta(seconds=10), got)
    c.b1.status, c.b1.headers = 503, {"retry-after": "2"}
    c.b1.reset()
    status, body, _ = get(c.url)
    check((status, body) == (503, "b1"), f"the failing answer passes through: {(status, body)}")
    tripped_at = time.time()
    counts = spread(c.url, 5)
    check(counts == {"b2": 5} and c.b1.hits == 1, f"breaker open: {counts}, b1 hits {c.b1.hits}")
    c.b1.status, c.b1.headers = 200, {}
    wait_until(lambda: spread(c.url, 1) == {"b1": 1}, timeout=10, what="breaker to close")
    waited = time.time() - tripped_at
    check(1.5 <= waited < 10, f"open for Retry-After (2 s), not tripDuration (30 s): {waited:.1f}s")


@steps.step
def list_pages_with_next_link_and_filter(c):
    c.api.backend.create_or_update(RG, SVC, "three", M.BackendContract(url="http://127.0.0.1:9/", title="spare"))
    pages = [list(p) for p in c.api.backend.list_by_service(RG, SVC, top=2).by_page()]
    names = [b.name for page in pages for b in page]
    check(len(pages) == 2 and names == ["one", "pool", "three", "two"], f"pages: {pages}")
    check(all(b.credentials is None or b.credentials.authorization.parameter == "***"
              for page in pages for b in page), "lists mask secrets too")
    filtered = [b.name for b in c.api.backend.list_by_service(RG, SVC, filter="startswith(name, 't')")]
    check(filtered == ["three", "two"], filtered)
    by_title = [b.name for b in c.api.backend.list_by_service(RG, SVC, filter="title eq 'PRIMARY'")]
    check(by_title == ["one"], by_title)


@steps.step
def every_validation_rule_answers_400_with_a_code(c):
    api = c.api
    one = api.backend.get(RG, SVC, "one")

    def put(name, body):
        return lambda: api.backend.create_or_update(RG, SVC, name, io.BytesIO(json.dumps({"properties": body}).encode()))

    expect_error(lambda: api.backend.get(RG, SVC, "one", api_version="1999-01-01"), 400, "InvalidApiVersionParameter")
    raw = api._send_request(HttpRequest(
        "GET", f"{c.f.api_url}/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ApiManagement/service/{SVC}/backends/one"))
    check(raw.status_code == 400 and raw.json()["error"]["code"] == "MissingApiVersionParameter", raw.text())
    expect_error(lambda: client(c.f, sub="not-a-uuid").backend.get(RG, SVC, "one"), 400, "InvalidSubscriptionId")
    expect_error(lambda: api.backend.get(RG, "1-bad-", "one"), 400, "ValidationError", "serviceName")
    expect_error(lambda: api.backend.get("bad!rg", SVC, "one"), 400, "ValidationError", "resourceGroupName")
    expect_error(lambda: api.backend.get(RG, SVC, "a:b"), 400, "ValidationError", "backendId")
    expect_error(put("x", {"url": "http://h", "type": "Other"}), 400, "ValidationError", "properties.type")
    expect_error(put("x", {"url": "not-a-url"}), 400, "ValidationError", "properties.url")
    expect_error(put("x", {"url": "http://h", "protocol": "grpc"}), 400, "ValidationError", "properties.protocol")
    expect_error(put("x", {"url": "http://h", "credentials": {"authorization": {"scheme": "Basic", "parameter": "***"}}}),
                 400, "ValidationError", "properties.credentials.authorization.parameter")
    expect_error(put("x", {"url": 5}), 400, "ValidationError", "properties.url")
    expect_error(put("x", {"type": "Pool", "pool": {"services": [{"id": "missing"}]}}),
                 400, "ValidationError", "properties.pool.services[0].id")
    expect_error(put("x", {"type": "Pool", "pool": {"services": [{"id": "x"}]}}),
                 400, "ValidationError", "properties.pool.services[0].id")
    expect_error(put("x", {"type": "Pool", "pool": {"services": [{"id": "pool"}]}}),
                 400, "ValidationError", "properties.pool.services[0].id")
    expect_error(put("x", {"type": "Pool", "pool": {"services": [{"id": "one", "priority": 101}]}}),
                 400, "ValidationError", "properties.pool.services[0].priority")
    expect_error(put("x", {"type": "Pool", "pool": {"services": [{"id": "one", "weight": 101}]}}),
                 400, "ValidationError", "properties.pool.services[0].weight")
    rule = {"name": "r", "tripDuration": "PT1M",
            "failureCondition": {"count": 1, "interval": "PT1M", "statusCodeRanges": [{"min": 500, "max": 599}]}}
    bad_duration = dict(rule, tripDuration="soon")
    bad_range = dict(rule, failureCondition=dict(rule["failureCondition"], statusCodeRanges=[{"min": 600, "max": 700}]))
    min_over_max = dict(rule, failureCondition=dict(rule["failureCondition"], statusCodeRanges=[{"min": 599, "max": 500}]))
    for bad in (bad_duration, bad_range, min_over_max):
        expect_error(put("x", {"url": "http://h", "circuitBreaker": {"rules": [bad]}}), 400, "ValidationError")
    # A refused PATCH changes nothing, not even the fields that were valid.
    expect_error(lambda: api.backend.update(RG, SVC, "one", "*", M.BackendUpdateParameters(
        title="never", circuit_breaker=M.BackendCircuitBreaker(rules=[M.CircuitBreakerRule(
            name="r", trip_duration=timedelta(seconds=1), failure_condition=M.CircuitBreakerFailureCondition(
                count=1, interval=timedelta(seconds=1), status_code_ranges=[M.FailureStatusCodeRange(min=599, max=500)]))]))),
        400, "ValidationError", "properties.circuitBreaker.rules[0].failureCondition.statusCodeRanges[0]")
    check(api.backend.get(RG, SVC, "one").title == one.title, "nothing half-applied")
    raw = api._send_request(HttpRequest(
        "PATCH", f"{c.f.api_url}/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ApiManagement/service/{SVC}/backends/one?api-version=2024-05-01",
        json={"properties": {"title": "no if-match"}}))
    check(raw.status_code == 400 and raw.json()["error"]["target"] == "If-Match", raw.text())
    expect_error(lambda: api.backend.get(RG, SVC, "x"), 404, "ResourceNotFound", kind=ResourceNotFoundError)


@steps.step
def authentication(c):
    expect_error(lambda: client(c.f, token="wrong").backend.get(RG, SVC, "one"), 401,
                 "InvalidAuthenticationToken", kind=ClientAuthenticationError)
    now = int(time.time())
    good = jwt({"iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "exp": now + 600, "sub": "alice"})
    check(client(c.f, token=good).backend.get(RG, SVC, "one").name == "one", "a verified JWT works")
    for bad in (
        jwt({"iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "exp": now - 600, "sub": "alice"}),
        jwt({"iss": JWT_ISSUER, "aud": "someone-else", "exp": now + 600}),
        jwt({"iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "exp": now + 600}, secret="not-the-secret-not-the-secret-xx"),
    ):
        expect_error(lambda: client(c.f, token=bad).backend.get(RG, SVC, "one"), 401,
                     "InvalidAuthenticationToken", kind=ClientAuthenticationError)


@steps.step
def a_token_limited_to_another_subscription_is_refused_here(c):
    other = client(c.f, token=OTHER_TOKEN)
    before = c.api.backend.get(RG, SVC, "one")
    for what, call in [
        ("get", lambda: other.backend.get(RG, SVC, "one")),
        ("list", lambda: list(other.backend.list_by_service(RG, SVC))),
        ("create", lambda: other.backend.create_or_update(
            RG, SVC, "intruder", M.BackendContract(url="http://10.0.0.9:8080", protocol="http"))),
        ("update (seed 003)", lambda: other.backend.update(
            RG, SVC, "one", "*", M.BackendUpdateParameters(description="not yours"))),
        ("delete", lambda: other.backend.delete(RG, SVC, "one", "*")),
    ]:
        e = expect_error(call, 403, "AuthorizationFailed")
        check(SUB in str(e), f"{what}: the message names the scope: {e}")
    after = c.api.backend.get(RG, SVC, "one")
    check(after.description == before.description, f"changed: {after.description}")
    names = [b.name for b in c.api.backend.list_by_service(RG, SVC)]
    check("intruder" not in names, names)
    # Its own subscription works as usual.
    theirs = ApiManagementClient(StaticToken(OTHER_TOKEN), OTHER_SUB, base_url=c.f.api_url,
                                 retry_total=0, connection_verify=c.f.ca_file)
    check(list(theirs.backend.list_by_service(RG, SVC)) == [], "its own subscription is empty")


def arm(kind, name):
    return f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ApiManagement/service/{SVC}/{kind}/{name}"


ORDERS_POLICY = """<policies>
    <inbound>
        <base />
        <set-backend-service backend-id="orders-pool" />
    </inbound>
    <backend>
        <base />
    </backend>
    <outbound>
        <base />
    </outbound>
    <on-error>
        <base />
    </on-error>
</policies>"""


@steps.step
def publish_an_api_whose_policy_routes_to_a_pool_backend(c):
    api = c.api
    # The members of the pool and the API's own serviceUrl, on servers of their own.
    for name, b in (("m1", c.m1), ("m2", c.m2)):
        api.backend.create_or_update(RG, SVC, name, M.BackendContract(url=f"http://{b.address}/base", protocol="http"))
    api.backend.create_or_update(RG, SVC, "orders-pool", M.BackendContract(
        type_properties_type="Pool",
        pool=M.BackendBaseParametersPool(services=[
            M.BackendPoolItem(id=arm("backends", "m1"), priority=1, weight=1),
            M.BackendPoolItem(id=arm("backends", "m2"), priority=2, weight=1),
        ]),
    ))
    # Where the gateway is: the service's gatewayUrl, from the configuration.
    service = api.api_management_service.get(RG, SVC)
    check(service.gateway_url.startswith("http://127.") and service.gateway_url.endswith(f":{GATEWAY_PORT}"),
          f"gatewayUrl: {service.gateway_url}")
    c.gateway = service.gateway_url

    def orders_api():
        return api.api.begin_create_or_update(RG, SVC, "orders", M.ApiCreateOrUpdateParameter(
            display_name="Orders", path="orders", service_url=f"http://{c.m3.address}/legacy",
            protocols=["http"], subscription_required=False,
        )).result()

    # A gateway port another listener holds is refused by that listener's name, before anything.
    status, blocker = c.f.native("POST", f"/v1/loadbalancers/{c.lb_id}/listeners", {
        "name": "blocker", "protocol": "HTTP", "port": GATEWAY_PORT, "default_pool_id": c.pool_id})
    check(status == 201, f"blocker: {status} {blocker}")
    e = expect_error(orders_api, 409, "Conflict", kind=ResourceExistsError)
    check("'blocker'" in e.error.message and c.lb_id not in e.error.message, e.error.message)
    check(list(api.api.list_by_service(RG, SVC)) == [], "a refused API is not half made")
    status, _ = c.f.native("DELETE", f"/v1/listeners/{blocker['id']}")
    check(status == 202, status)

    def port_free():
        try:
            get(f"{c.gateway}/", timeout=1)
            return False
        except OSError:
            return True

    wait_until(port_free, timeout=10, what="the blocker to stop listening")
    created = orders_api()
    check(created.path == "orders" and created.service_url == f"http://{c.m3.address}/legacy", created)
    check(created.display_name == "Orders" and created.subscription_required is False, created)
    wait_port(GATEWAY_PORT)
    # No policy yet: the API's serviceUrl, with the API's path taken off (APIM's rule).
    status, body, _ = get(f"{c.gateway}/orders/42?x=1")
    check((status, body) == (200, "m3") and c.m3.last_path == "/legacy/42?x=1", (status, body, c.m3.last_path))
    # A policy fulcrum cannot honour is refused by element and place, not ignored.
    guarded = ORDERS_POLICY.replace("<base />\n        <set", '<validate-jwt header-name="Authorization" />\n        <set', 1)
    e = expect_error(lambda: api.api_policy.create_or_update(RG, SVC, "orders", "policy", M.PolicyContract(
        value=guarded, format="rawxml")), 400, "ValidationError", "validate-jwt")
    check("line 3, column 9" in e.error.details[0].message, e.error.details[0].message)
    expect_error(lambda: api.api_policy.create_or_update(RG, SVC, "orders", "policy", M.PolicyContract(
        value=ORDERS_POLICY.replace("orders-pool", "nope"), format="rawxml")),
        400, "ValidationError", "set-backend-service")
    policy = api.api_policy.create_or_update(RG, SVC, "orders", "policy", M.PolicyContract(
        value=ORDERS_POLICY, format="rawxml"))
    check(policy.value == ORDERS_POLICY, policy.value)
    got = api.api_policy.get(RG, SVC, "orders", "policy")
    check(got.value == ORDERS_POLICY and got.format == "xml", got)
    # Calls under /orders reach the priority-1 member, with the backend's URL path.
    counts = spread(f"{c.gateway}/orders/42", 6)
    check(counts == {"m1": 6}, f"priority 1 takes everything: {counts}")
    check(c.m1.last_path == "/base/42", c.m1.last_path)
    get(f"{c.gateway}/orders")
    check(c.m1.last_path == "/base/", c.m1.last_path)
    status, _, _ = get(f"{c.gateway}/ordersx")
    check(status == 503, f"/ordersx is not under /orders: {status}")
    listed = [a.name for a in api.api.list_by_service(RG, SVC)]
    check(listed == ["orders"], listed)


@steps.step
def gateway_fails_over_by_priority(c):
    url = f"{c.gateway}/orders/7"
    # As in priority_failover_when_the_first_backend_stops: close kept-alive connections first.
    c.m1.headers = {"connection": "close"}
    spread(url, 24)
    c.m1.stop()
    c.m1.headers = {}
    counts = spread(url, 4)
    check(counts == {"m2": 4}, f"priority 2 takes over: {counts}")
    check(c.m2.last_path == "/base/7", c.m2.last_path)
    c.m1.start()
    wait_until(lambda: spread(url, 1) == {"m1": 1}, timeout=15, what="m1 back")


@steps.step
def api_and_backends_go_in_the_order_a_user_would(c):
    api = c.api
    # A backend a policy still names is kept, as API Management keeps it.
    e = expect_error(lambda: api.backend.delete(RG, SVC, "orders-pool", "*"), 400, "ValidationError")
    check("/apis/orders/policies/policy" in e.error.message and c.lb_id not in e.error.message, e.error.message)
    # The policy goes: the API's serviceUrl serves again.
    etag = api.api_policy.get_entity_tag(RG, SVC, "orders", "policy", cls=lambda pr, m, h: h["ETag"])
    api.api_policy.delete(RG, SVC, "orders", "policy", if_match=etag)
    check(spread(f"{c.gateway}/orders/1", 2) == {"m3": 2}, "serviceUrl after the policy is gone")
    # A PATCH of the API moves it.
    api.api.update(RG, SVC, "orders", "*", M.ApiUpdateContract(path="sales"))
    status, _, _ = get(f"{c.gateway}/orders/1")
    check(status == 503, f"nothing at the old path: {status}")
    check(get(f"{c.gateway}/sales/1")[1] == "m3", "the new path")
    # The API goes: so does its gateway.
    api.api.begin_delete(RG, SVC, "orders", if_match="*").result()
    check(list(api.api.list_by_service(RG, SVC)) == [], "no API left")
    expect_error(lambda: api.api.get(RG, SVC, "orders"), 404, "ResourceNotFound", kind=ResourceNotFoundError)
    def refused():
        try:
            get(f"{c.gateway}/sales/1", timeout=2)
            return False
        except OSError:
            return True

    wait_until(refused, timeout=10, what="the gateway to close with its last API")
    # Then the backends, the pool before its members.
    for name in ("orders-pool", "m1", "m2"):
        api.backend.delete(RG, SVC, name, "*")
    names = [b.name for b in api.backend.list_by_service(RG, SVC)]
    check(not {"orders-pool", "m1", "m2"} & set(names), names)


@steps.step
def delete_backends(c):
    expect_error(lambda: c.api.backend.delete(RG, SVC, "one", "*"), 409, "Conflict", kind=ResourceExistsError)
    expect_error(lambda: c.api.backend.delete(RG, SVC, "pool", "*"), 409, "Conflict", kind=ResourceExistsError)
    status, _ = c.f.native("DELETE", f"/v1/listeners/{c.listener_id}")
    check(status == 202, status)
    expect_error(lambda: c.api.backend.delete(RG, SVC, "pool", '"0"'), 412, "PreconditionFailed")
    c.api.backend.delete(RG, SVC, "pool", "*")
    etag = c.api.backend.get_entity_tag(RG, SVC, "one", cls=lambda pr, m, h: h["ETag"])
    status_of = {"cls": lambda pipeline_response, _d, _h: pipeline_response.http_response.status_code}
    status = c.api.backend.delete(RG, SVC, "one", etag, **status_of)
    check(status == 200, f"deleting an existing backend: {status}")
    status = c.api.backend.delete(RG, SVC, "one", "*", **status_of)
    check(status == 204, f"deleting a backend already gone: {status}, not 204")
    names = [b.name for b in c.api.backend.list_by_service(RG, SVC)]
    check(names == ["three", "two"], names)
    status, pools = c.f.native("GET", f"/v1/loadbalancers/{c.lb_id}/pools")
    check(sorted(p["name"] for p in pools["items"]) == ["three", "two"], pools)


def main():
    c = Ctx()
    c.b1, c.b2 = Backend("b1"), Backend("b2")
    c.m1, c.m2, c.m3 = Backend("m1"), Backend("m2"), Backend("m3")
    c.f = Fulcrum(CONFIG, tls=True)
    ok = False
    try:
        c.api = client(c.f)
        ok = steps.run(c)
    finally:
        if not ok:
            c.f.dump_log()
        c.f.stop()
        for b in (c.b1, c.b2, c.m1, c.m2, c.m3):
            b.stop()
    return ok


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
