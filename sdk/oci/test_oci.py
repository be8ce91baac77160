"""The unmodified `oci` Python SDK drives fulcrum's OCI dialect end to end.

A key pair is generated at test time and registered in fulcrum.toml's [oci] section;
the SDK's LoadBalancerClient signs every request with it. Traffic goes through the
listener the SDK created to three real local backends.
"""

import base64
import email.utils
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import oci
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oci._vendor import requests  # the SDK's own HTTP client, for hand-altered requests
from oci.load_balancer import models as m

import harness
from harness import (Backend, Fulcrum, Steps, check, free_port, get, spread, taken_port, wait_port,
                     wait_until)

TENANCY = "ocid1.tenancy.oc1..aaaafulcrumtest"
USER = "ocid1.user.oc1..aaaafulcrumtest"
COMPARTMENT = "ocid1.compartment.oc1..aaaafulcrumtest"
# The compartment of a second key, limited to it: it sees nothing of COMPARTMENT.
OTHER_COMPARTMENT = "ocid1.compartment.oc1..aaaaothertenant"
OTHER_USER = "ocid1.user.oc1..aaaaothertenant"
BS = "bs1"

steps = Steps("oci SDK against fulcrum")


class Ctx:
    pass


def new_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    digest = hashlib.md5(public_der).hexdigest()
    fingerprint = ":".join(digest[i : i + 2] for i in range(0, 32, 2))
    return private, public, fingerprint


def service_error(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except oci.exceptions.ServiceError as e:
        return e
    raise AssertionError(f"{fn.__name__} succeeded; expected a ServiceError")


def wait_wr(c, resp):
    """Waits for the work request of a mutation's response to succeed.

    oci.wait_until sleeps at least a second between polls; poll faster first so the test
    stays quick, and record how long the change took to be served.
    """
    wr_id = resp.headers["opc-work-request-id"]
    started = time.time()
    deadline = started + 2
    while time.time() < deadline:
        wr = c.lb.get_work_request(wr_id).data
        check(wr.lifecycle_state in ("ACCEPTED", "IN_PROGRESS", "SUCCEEDED"), str(wr))
        if wr.lifecycle_state == "SUCCEEDED":
            c.latencies.append(time.time() - started)
            return wr
        time.sleep(0.02)
    wr = oci.wait_until(
        c.lb, c.lb.get_work_request(wr_id), "lifecycle_state", "SUCCEEDED", max_wait_seconds=20
    )
    return wr.data


def backend_details(b, **kw):
    host, port = b.address.split(":")
    return m.CreateBackendDetails(ip_address=host, port=int(port), **kw)


def update(c, backend, weight=1, backup=False, drain=False, offline=False, **kw):
    details = m.UpdateBackendDetails(weight=weight, backup=backup, drain=drain, offline=offline)
    return c.lb.update_backend(details, c.lb_id, BS, backend.address, **kw)


def traffic(c, n):
    return spread(f"http://127.0.0.1:{c.port}/", n)


@steps.step
def create_load_balancer_with_listener_and_backend_set(c):
    c.port = free_port()
    details = m.CreateLoadBalancerDetails(
        compartment_id=COMPARTMENT,
        display_name="sdk-lb",
        shape_name="flexible",
        shape_details=m.ShapeDetails(minimum_bandwidth_in_mbps=10, maximum_bandwidth_in_mbps=100),
        subnet_ids=["ocid1.subnet.oc1..aaaasubnet"],
        is_private=True,
        listeners={
            "web": m.ListenerDetails(default_backend_set_name=BS, port=c.port, protocol="HTTP")
        },
        backend_sets={
            BS: m.BackendSetDetails(
                policy="ROUND_ROBIN",
                health_checker=m.HealthCheckerDetails(
                    protocol="HTTP", url_path="/", return_code=200, interval_in_millis=1000,
                    timeout_in_millis=500, retries=3,
                ),
            )
        },
    )
    resp = c.lb.create_load_balancer(details, opc_retry_token="create-sdk-lb")
    check(resp.status == 204, f"create answered {resp.status}")
    # A retried create (same token, same body) is the same work request, not a second LB.
    again = c.lb.create_load_balancer(details, opc_retry_token="create-sdk-lb")
    check(again.headers["opc-work-request-id"] == resp.headers["opc-work-request-id"],
          "a retried create made a new work request")
    wr = wait_wr(c, resp)
    c.wr_id = wr.id
    check(wr.type == "CreateLoadBalancer", wr.type)
    c.lb_id = wr.load_balancer_id
    check(c.lb_id.startswith("ocid1.loadbalancer."), c.lb_id)
    check(wr.time_accepted is not None and wr.compartment_id == COMPARTMENT, str(wr))

    got = c.lb.get_load_balancer(c.lb_id)
    lb = got.data
    check(lb.display_name == "sdk-lb" and lb.lifecycle_state == "ACTIVE", str(lb))
    check(lb.compartment_id == COMPARTMENT and lb.is_private is True, str(lb))
    check(lb.listeners["web"].port == c.port and lb.listeners["web"].default_backend_set_name == BS,
          str(lb.listeners))
    check(lb.backend_sets[BS].policy == "ROUND_ROBIN", str(lb.backend_sets))
    # Given an address of this node ([proxy] vip_ranges: loopback by default), not 0.0.0.0.
    check([a.ip_address for a in lb.ip_addresses] == ["127.0.0.1"], str(lb.ip_addresses))
    check(got.headers.get("etag"), "no ETag on GetLoadBalancer")
    listed = oci.pagination.list_call_get_all_results(
        c.lb.list_load_balancers, COMPARTMENT, limit=1
    ).data
    check([x.id for x in listed].count(c.lb_id) == 1 and len(listed) == 1,
          f"the new load balancer is listed once: {[x.id for x in listed]}")
    # The dialect is a translation: the native API sees the same load balancer.
    native_id = c.lb_id.rsplit(".", 1)[1]
    status, body = c.fulcrum.native("GET", f"/v1/loadbalancers/{native_id}")
    check(status == 200 and body["name"] == "sdk-lb", f"native API: {status} {body}")
    wait_port(c.port)


@steps.step
def create_is_all_or_nothing(c):
    before = len(c.lb.list_load_balancers(COMPARTMENT).data)
    good_set = m.BackendSetDetails(
        policy="ROUND_ROBIN", health_checker=m.HealthCheckerDetails(protocol="TCP")
    )
    bad_set = m.BackendSetDetails(
        policy="WEIGHTED_RANDOM", health_checker=m.HealthCheckerDetails(protocol="TCP")
    )
    cases = [
        ({"ok": good_set, "bad": bad_set}, {}, "policy"),
        ({"ok": good_set}, {"l": m.ListenerDetails(default_backend_set_name="nope",
                                                  port=free_port(), protocol="HTTP")}, "nope"),
    ]
    for sets, listeners, mentions in cases:
        e = service_error(
            c.lb.create_load_balancer,
            m.CreateLoadBalancerDetails(
                compartment_id=COMPARTMENT, display_name="broken", shape_name="flexible",
                subnet_ids=["s"], backend_sets=sets, listeners=listeners,
            ),
        )
        check(e.status == 400 and e.code == "InvalidParameter" and mentions in e.message,
              f"{e.status} {e.code} {e.message}")
    e = service_error(c.lb.create_load_balancer,
                      m.CreateLoadBalancerDetails(compartment_id=COMPARTMENT, shape_name="flexible",
                                                  subnet_ids=["s"]))
    check(e.status == 400 and e.code == "MissingParameter" and "displayName" in e.message, str(e))
    check(len(c.lb.list_load_balancers(COMPARTMENT).data) == before, "a refused create wrote something")


@steps.step
def add_three_backends(c):
    ops = oci.load_balancer.LoadBalancerClientCompositeOperations(c.lb)
    for b in c.backends:
        ops.create_backend_and_wait_for_state(
            backend_details(b, weight=1), c.lb_id, BS, wait_for_states=["SUCCEEDED"]
        )
    listed = c.lb.list_backends(c.lb_id, BS).data
    check(sorted(x.name for x in listed) == sorted(b.address for b in c.backends), str(listed))
    e = service_error(c.lb.create_backend, backend_details(c.backends[0]), c.lb_id, BS)
    check(e.status == 409 and e.code == "Conflict", f"duplicate backend: {e.status} {e.code}")
    counts = traffic(c, 150)
    for b in c.backends:
        check(40 <= counts.get(b.name, 0) <= 60, f"round robin over three: {counts}")


@steps.step
def update_backend_weight_and_wait(c):
    a, b, _ = c.backends
    ops = oci.load_balancer.LoadBalancerClientCompositeOperations(c.lb)
    resp = ops.update_backend_and_wait_for_state(
        m.UpdateBackendDetails(weight=3, backup=False, drain=False, offline=False),
        c.lb_id, BS, b.address, wait_for_states=["SUCCEEDED"],
    )
    wr = resp.data
    check(wr.lifecycle_state == "SUCCEEDED" and wr.type == "UpdateBackend", str(wr))
    check(wr.load_balancer_id == c.lb_id and wr.error_details == [], str(wr))
    got = c.lb.get_backend(c.lb_id, BS, b.address).data
    check((got.weight, got.drain, got.offline, got.backup) == (3, False, False, False), str(got))
    # The work request succeeded, so traffic already follows: weight 3 gets about 3x.
    counts = traffic(c, 250)
    ratio = counts.get(b.name, 0) / max(counts.get(a.name, 0), 1)
    check(2.3 <= ratio <= 3.9, f"weight 3 vs 1: ratio {ratio:.2f} in {counts}")
    c.ratio = ratio


@steps.step
def drain_and_offline_take_no_new_requests(c):
    a, b, d = c.backends
    wait_wr(c, update(c, a, drain=True))
    wait_wr(c, update(c, d, offline=True))
    got = c.lb.get_backend(c.lb_id, BS, a.address).data
    check(got.drain is True, str(got))
    counts = traffic(c, 100)
    check(counts == {b.name: 100}, f"drained and offline backends still served: {counts}")
    # A backup takes traffic only while every other backend is out.
    wait_wr(c, update(c, a, backup=True))
    wait_wr(c, update(c, d))
    counts = traffic(c, 100)
    check(counts.get(a.name, 0) == 0 and counts.get(b.name, 0) > 0, f"backup served: {counts}")
    wait_wr(c, update(c, b, offline=True))
    wait_wr(c, update(c, d, offline=True))
    counts = traffic(c, 50)
    check(counts == {a.name: 50}, f"the backup did not take over: {counts}")
    for x in c.backends:
        wait_wr(c, update(c, x))


@steps.step
def stale_if_match_is_412_no_etag_match(c):
    a = c.backends[0]
    etag = c.lb.get_backend(c.lb_id, BS, a.address).headers["etag"]
    # The ETag is the load balancer's: any of its resources gives the same one.
    check(c.lb.get_backend_set(c.lb_id, BS).headers["etag"] == etag, "one ETag per load balancer")
    wait_wr(c, update(c, a, weight=2, if_match=etag))
    e = service_error(update, c, a, weight=5, if_match=etag)
    check(e.status == 412 and e.code == "NoEtagMatch", f"{e.status} {e.code} {e.message}")
    check(e.request_id, "no opc-request-id on the error")
    check(c.lb.get_backend(c.lb_id, BS, a.address).data.weight == 2, "a stale update changed the backend")
    e = service_error(c.lb.get_backend_set, c.lb_id, BS, if_match=etag)
    check(e.status == 412 and e.code == "NoEtagMatch", f"stale if-match on a read: {e.status}")
    fresh = c.lb.get_load_balancer(c.lb_id).headers["etag"]
    check(c.lb.get_backend_set(c.lb_id, BS, if_match=fresh).status == 200, "current if-match on a read")


@steps.step
def replayed_retry_token_acts_once(c):
    a = c.backends[0]
    before = len(c.lb.list_work_requests(c.lb_id, limit=1000).data)
    first = update(c, a, weight=4, opc_retry_token="sdk-retry-1")
    again = update(c, a, weight=4, opc_retry_token="sdk-retry-1")
    check(first.headers["opc-work-request-id"] == again.headers["opc-work-request-id"],
          "a replay got a new work request")
    after = oci.pagination.list_call_get_all_results(c.lb.list_work_requests, c.lb_id, limit=2).data
    check(len(after) == before + 1, f"{len(after)} work requests after one replayed update (was {before})")
    e = service_error(update, c, a, weight=5, opc_retry_token="sdk-retry-1")
    check(e.status == 409 and e.code == "InvalidatedRetryToken", f"{e.status} {e.code}")
    wait_wr(c, first)
    check(c.lb.get_backend(c.lb_id, BS, a.address).data.weight == 4, "weight not 4")


@steps.step
def bad_requests_get_oci_errors(c):
    a = c.backends[0]
    e = service_error(c.lb.update_backend, m.UpdateBackendDetails(weight=1), c.lb_id, BS, a.address)
    check(e.status == 400 and e.code == "MissingParameter" and "backup" in e.message, str(e))
    e = service_error(update, c, a, weight=-1)
    check(e.status == 400 and e.code == "InvalidParameter", str(e))
    e = service_error(c.lb.get_backend, c.lb_id, BS, "10.9.9.9:1")
    check(e.status == 404 and e.code == "NotAuthorizedOrNotFound", str(e))
    e = service_error(c.lb.get_backend_set, c.lb_id, "nope")
    check(e.status == 404 and e.code == "NotAuthorizedOrNotFound", str(e))
    e = service_error(c.lb.get_load_balancer, "ocid1.loadbalancer.oc1.fulcrum.nope")
    check(e.status == 404, str(e))
    # An endpoint with a trailing slash (the SDK then sends //20170115/...) works too.
    slash = oci.load_balancer.LoadBalancerClient(c.sdk_config, service_endpoint=c.fulcrum.api_url + "/")
    check(slash.get_load_balancer(c.lb_id).data.id == c.lb_id, "trailing-slash endpoint")


@steps.step
def locks_and_is_lock_override(c):
    native_id = c.lb_id.rsplit(".", 1)[1]
    status, _ = c.fulcrum.native("PATCH", f"/v1/loadbalancers/{native_id}",
                                 {"locks": [{"type": "FULL"}]})
    check(status == 200, f"lock through the native API: {status}")
    e = service_error(update, c, c.backends[0], weight=1)
    check(e.status == 409 and e.code == "Conflict" and "lock" in e.message, str(e))
    # The SDK has no isLockOverride for UpdateBackend; send it signed by hand.
    url = (f"{c.fulcrum.api_url}/20170115/loadBalancers/{c.lb_id}/backendSets/{BS}"
           f"/backends/{c.backends[0].address.replace(':', '%3A')}?isLockOverride=true")
    body = json.dumps({"weight": 1, "backup": False, "drain": False, "offline": False})
    r = requests.put(url, data=body, auth=c.signer, headers={"content-type": "application/json"})
    check(r.status_code == 204 and r.headers.get("opc-work-request-id"), f"{r.status_code} {r.text}")
    status, _ = c.fulcrum.native("PATCH", f"/v1/loadbalancers/{native_id}", {"locks": []})
    check(status == 200, "unlock")


@steps.step
def tampered_or_skewed_or_unsigned_requests_are_401(c):
    base = f"{c.fulcrum.api_url}/20170115/loadBalancers/{c.lb_id}"

    def expect_401(r, what):
        check(r.status_code == 401, f"{what}: {r.status_code} {r.text}")
        check(r.json()["code"] == "NotAuthenticated", f"{what}: {r.text}")
        check(r.headers.get("opc-request-id"), f"{what}: no opc-request-id")

    ok = requests.get(base, auth=c.signer)
    check(ok.status_code == 200, f"a correctly signed request: {ok.status_code} {ok.text}")

    session = requests.Session()
    # Tampered signature: one character of it changed after signing.
    req = requests.Request("GET", base, auth=c.signer).prepare()
    auth = req.headers["authorization"]
    i = auth.index('signature="') + len('signature="') + 5
    req.headers["authorization"] = auth[:i] + ("A" if auth[i] != "A" else "B") + auth[i + 1:]
    expect_401(session.send(req), "tampered signature")
    # Tampered target: the signature was for another path.
    req = requests.Request("GET", base, auth=c.signer).prepare()
    req.url = base + "/backendSets"
    expect_401(session.send(req), "tampered path")
    # Tampered body under a valid signature.
    url = f"{base}/backendSets/{BS}/backends/{c.backends[0].address.replace(':', '%3A')}"
    body = json.dumps({"weight": 1, "backup": False, "drain": False, "offline": False})
    req = requests.Request("PUT", url, data=body, auth=c.signer,
                           headers={"content-type": "application/json"}).prepare()
    req.body = req.body.replace(b'"weight": 1', b'"weight": 9') if isinstance(req.body, bytes) \
        else req.body.replace('"weight": 1', '"weight": 9')
    expect_401(session.send(req), "tampered body")
    # Skewed date: correctly signed, but ten minutes old.
    old = email.utils.formatdate(time.time() - 600, usegmt=True)
    expect_401(requests.get(base, auth=c.signer, headers={"date": old}), "skewed date")
    # Unsigned, and the native API's bearer token.
    expect_401(requests.get(base), "unsigned")
    expect_401(requests.get(base, headers={"authorization": f"Bearer {harness.TOKEN}"}), "bearer")
    # A key fulcrum does not know.
    other_private, _, fp = new_key()
    stranger = oci.signer.Signer(TENANCY, USER, fp, None, private_key_content=other_private)
    expect_401(requests.get(base, auth=stranger), "unknown key")
    check(c.lb.get_backend(c.lb_id, BS, c.backends[0].address).data.weight == 1,
          "a refused request changed the backend")


@steps.step
def health_checker_and_backend_set_reads(c):
    hc = c.lb.get_health_checker(c.lb_id, BS).data
    check(hc.protocol == "HTTP" and hc.url_path == "/" and hc.interval_in_millis == 1000, str(hc))
    wait_wr(c, c.lb.update_health_checker(
        m.UpdateHealthCheckerDetails(protocol="HTTP", url_path="/healthz", return_code=200,
                                     retries=2, timeout_in_millis=400, interval_in_millis=2000),
        c.lb_id, BS))
    hc = c.lb.get_health_checker(c.lb_id, BS).data
    check((hc.url_path, hc.retries, hc.interval_in_millis) == ("/healthz", 2, 2000), str(hc))
    sets = c.lb.list_backend_sets(c.lb_id).data
    check([s.name for s in sets] == [BS] and len(sets[0].backends) == 3, str(sets))


@steps.step
def more_backend_sets_listeners_and_deletes(c):
    port2 = free_port()
    wait_wr(c, c.lb.create_backend_set(m.CreateBackendSetDetails(
        name="bs2", policy="LEAST_CONNECTIONS",
        backends=[m.BackendDetails(ip_address="127.0.0.1", port=c.backends[2].port)],
        health_checker=m.HealthCheckerDetails(protocol="TCP", interval_in_millis=1000,
                                              timeout_in_millis=500)), c.lb_id))
    check(c.lb.get_backend_set(c.lb_id, "bs2").data.policy == "LEAST_CONNECTIONS", "bs2 policy")
    e = service_error(c.lb.create_backend_set, m.CreateBackendSetDetails(
        name="bs2", policy="ROUND_ROBIN", health_checker=m.HealthCheckerDetails(protocol="TCP")),
        c.lb_id)
    check(e.status == 409 and e.code == "Conflict", f"duplicate backend set: {e.status} {e.code}")
    wait_wr(c, c.lb.create_listener(m.CreateListenerDetails(
        name="second", default_backend_set_name="bs2", port=port2, protocol="HTTP"), c.lb_id))
    wait_port(port2)
    counts = spread(f"http://127.0.0.1:{port2}/", 20)
    check(counts == {c.backends[2].name: 20}, f"second listener: {counts}")
    e = service_error(c.lb.delete_backend_set, c.lb_id, "bs2")
    check(e.status == 409, "a backend set in use was deleted")
    # Move the listener to bs1, then bs2 can go.
    wait_wr(c, c.lb.update_listener(m.UpdateListenerDetails(
        default_backend_set_name=BS, port=port2, protocol="HTTP"), c.lb_id, "second"))
    wait_wr(c, c.lb.delete_backend_set(c.lb_id, "bs2"))
    wait_wr(c, c.lb.delete_listener(c.lb_id, "second"))
    # Delete a backend: traffic stops reaching it.
    b = c.backends[1]
    wait_wr(c, c.lb.delete_backend(c.lb_id, BS, b.address))
    counts = traffic(c, 60)
    check(b.name not in counts and sum(counts.values()) == 60, f"deleted backend served: {counts}")
    lb = c.lb.get_load_balancer(c.lb_id).data
    check(sorted(lb.listeners) == ["web"] and sorted(lb.backend_sets) == [BS], str(lb))


def ssl_listener(name, port, **ssl):
    return m.CreateListenerDetails(name=name, default_backend_set_name=BS, port=port, protocol="HTTP",
                                   ssl_configuration=m.SSLConfigurationDetails(**ssl))


@steps.step
def ssl_listener_with_a_certificate(c):
    ca = harness.TestCA()
    pem, key = ca.issue(["secure.example.test"])
    _, other_key = ca.issue(["other.example.test"])
    check(c.lb.list_certificates(c.lb_id).data == [], "no certificates yet")
    wait_wr(c, c.lb.create_certificate(
        m.CreateCertificateDetails(certificate_name="site", public_certificate=pem, private_key=key), c.lb_id))
    certs = c.lb.list_certificates(c.lb_id).data
    check([(x.certificate_name, x.public_certificate, x.ca_certificate) for x in certs] == [("site", pem, None)],
          str(certs))
    check(sorted(c.lb.get_load_balancer(c.lb_id).data.certificates) == ["site"], "the load balancer lists it")
    e = service_error(c.lb.create_certificate, m.CreateCertificateDetails(
        certificate_name="site", public_certificate=pem, private_key=key), c.lb_id)
    check(e.status == 409 and e.code == "Conflict", f"duplicate name: {e.status} {e.code}")
    e = service_error(c.lb.create_certificate, m.CreateCertificateDetails(
        certificate_name="mismatch", public_certificate=pem, private_key=other_key), c.lb_id)
    check(e.status == 400 and e.code == "InvalidParameter" and "privateKey" in e.message, f"{e.code} {e.message}")
    e = service_error(c.lb.create_certificate, m.CreateCertificateDetails(
        certificate_name="nokey", public_certificate=pem), c.lb_id)
    check(e.status == 400 and e.code == "MissingParameter", f"{e.code} {e.message}")
    check(len(c.lb.list_certificates(c.lb_id).data) == 1, "refused certificates are not made")

    port = free_port()
    for bad, field in [
        (dict(certificate_name="site", verify_peer_certificate=True), "verifyPeerCertificate"),
        (dict(certificate_name="site", protocols=["TLSv1"]), "protocols"),
        (dict(certificate_name="nope"), "certificateName"),
    ]:
        e = service_error(c.lb.create_listener, ssl_listener("tls", port, **bad), c.lb_id)
        check(e.status == 400 and field in e.message, f"{bad}: {e.status} {e.message}")
    wait_wr(c, c.lb.create_listener(ssl_listener(
        "tls", port, certificate_name="site", verify_peer_certificate=False, protocols=["TLSv1.2", "TLSv1.3"],
        cipher_suite_name="oci-default-ssl-cipher-suite-v1"), c.lb_id))
    wait_port(port)
    names = {b.name for b in c.backends}
    for _ in range(4):
        cert, status, body = ca.request(port, "secure.example.test")
        check(status == 200 and body in names, f"TLS request through the listener: {status} {body}")
    served = [v for k, v in cert["subjectAltName"] if k == "DNS"]
    check(served == ["secure.example.test"], f"the certificate served: {served}")
    listener = c.lb.get_load_balancer(c.lb_id).data.listeners["tls"]
    ssl = listener.ssl_configuration
    check(listener.protocol == "HTTP" and ssl.certificate_name == "site", str(listener))
    check(ssl.verify_peer_certificate is False and ssl.protocols == ["TLSv1.2", "TLSv1.3"], str(ssl))
    # In use: not deleted; once the listener is gone, it is.
    e = service_error(c.lb.delete_certificate, c.lb_id, "site")
    check(e.status == 409 and e.code == "Conflict" and "tls" in e.message, f"{e.status} {e.code} {e.message}")
    wait_wr(c, c.lb.delete_listener(c.lb_id, "tls"))
    wait_wr(c, c.lb.delete_certificate(c.lb_id, "site"))
    check(c.lb.list_certificates(c.lb_id).data == [], "the certificate is gone")
    e = service_error(c.lb.delete_certificate, c.lb_id, "site")
    check(e.status == 404, f"deleting it again: {e.status}")
    ca.cleanup()


@steps.step
def path_route_set_sends_paths_to_other_backend_sets(c):
    """A path route set on a listener: a prefix, an exact path and a suffix each reach their
    backend set, in OCI's order of evaluation; the rest goes to the default backend set."""
    named = {n: Backend(n) for n in ("web", "api", "static")}
    c.extra_backends = list(named.values())
    for name, b in named.items():
        wait_wr(c, c.lb.create_backend_set(m.CreateBackendSetDetails(
            name=name, policy="ROUND_ROBIN",
            backends=[m.BackendDetails(ip_address="127.0.0.1", port=b.port)],
            health_checker=m.HealthCheckerDetails(protocol="TCP", interval_in_millis=1000,
                                                  timeout_in_millis=500)), c.lb_id))

    def route(path, match, backend_set):
        return m.PathRoute(path=path, backend_set_name=backend_set,
                           path_match_type=m.PathMatchType(match_type=match))

    routes = [
        route("/api", "PREFIX_MATCH", "api"),
        route("/api/health", "EXACT_MATCH", "static"),
        route(".png", "SUFFIX_MATCH", "static"),
    ]
    # Refused before anything is made: an unknown backend set, an unknown match type.
    e = service_error(c.lb.create_path_route_set, m.CreatePathRouteSetDetails(
        name="routes", path_routes=[route("/x", "PREFIX_MATCH", "nope")]), c.lb_id)
    check(e.status == 400 and e.code == "InvalidParameter" and "nope" in e.message, f"{e.status} {e.code} {e.message}")
    e = service_error(c.lb.create_path_route_set, m.CreatePathRouteSetDetails(
        name="routes", path_routes=[route("/x", "REGEX_MATCH", "api")]), c.lb_id)
    check(e.status == 400 and "matchType" in e.message, f"{e.status} {e.code} {e.message}")
    wr = wait_wr(c, c.lb.create_path_route_set(
        m.CreatePathRouteSetDetails(name="routes", path_routes=routes), c.lb_id))
    check(wr.type == "CreatePathRouteSet", wr.type)
    e = service_error(c.lb.create_path_route_set, m.CreatePathRouteSetDetails(
        name="routes", path_routes=routes), c.lb_id)
    check(e.status == 409, f"a second set of one name: {e.status} {e.code}")
    got = c.lb.get_path_route_set(c.lb_id, "routes").data
    check([(r.path, r.path_match_type.match_type, r.backend_set_name) for r in got.path_routes]
          == [("/api", "PREFIX_MATCH", "api"), ("/api/health", "EXACT_MATCH", "static"),
              (".png", "SUFFIX_MATCH", "static")], f"read back as written: {got}")
    check([x.name for x in c.lb.list_path_route_sets(c.lb_id).data] == ["routes"], "listed")

    port = free_port()
    wait_wr(c, c.lb.create_listener(m.CreateListenerDetails(
        name="routed", default_backend_set_name="web", port=port, protocol="HTTP",
        path_route_set_name="routes"), c.lb_id))
    wait_port(port)
    lb = c.lb.get_load_balancer(c.lb_id).data
    check(lb.listeners["routed"].path_route_set_name == "routes", str(lb.listeners["routed"]))
    check(sorted(lb.path_route_sets) == ["routes"], str(lb.path_route_sets))

    def hit(path):
        status, body, _ = get(f"http://127.0.0.1:{port}{path}")
        return body if status == 200 else f"status:{status}"

    for path, want in (
        ("/", "web"), ("/apix", "api"), ("/api/v1/users?x=1", "api"),
        ("/API/V1", "api"),            # OCI matches paths ignoring case
        ("/api/health", "static"),     # EXACT_MATCH before the prefix listed first
        ("/api/health/x", "api"),
        ("/img/logo.png", "static"), ("/img/logo.PNG", "static"),
        ("/api/logo.png", "api"),      # PREFIX and SUFFIX: the first in the set's order
        ("/other", "web"),
    ):
        got = hit(path)
        check(got == want, f"{path}: expected {want}, got {got}")

    # Replaced whole: the longest forced prefix wins, whatever the order.
    wait_wr(c, c.lb.update_path_route_set(m.UpdatePathRouteSetDetails(path_routes=[
        route("/api", "FORCE_LONGEST_PREFIX_MATCH", "api"),
        route("/api/v2", "FORCE_LONGEST_PREFIX_MATCH", "static"),
    ]), c.lb_id, "routes"))
    for path, want in (("/api/v2/x", "static"), ("/api/v1", "api"), ("/img/a.png", "web")):
        got = hit(path)
        check(got == want, f"after the update, {path}: expected {want}, got {got}")

    # OCI's delete order: not a backend set a path route set sends to, not a path route set
    # a listener uses; the listener lets go first.
    e = service_error(c.lb.delete_backend_set, c.lb_id, "static")
    check(e.status == 409 and "routes" in e.message, f"{e.status} {e.code} {e.message}")
    e = service_error(c.lb.delete_path_route_set, c.lb_id, "routes")
    check(e.status == 409 and "routed" in e.message, f"{e.status} {e.code} {e.message}")
    wait_wr(c, c.lb.update_listener(m.UpdateListenerDetails(
        default_backend_set_name="web", port=port, protocol="HTTP"), c.lb_id, "routed"))
    check(hit("/api/v2/x") == "web", "the listener no longer routes by path")
    wait_wr(c, c.lb.delete_path_route_set(c.lb_id, "routes"))
    e = service_error(c.lb.get_path_route_set, c.lb_id, "routes")
    check(e.status == 404, f"{e.status} {e.code}")
    wait_wr(c, c.lb.delete_listener(c.lb_id, "routed"))
    for name in named:
        wait_wr(c, c.lb.delete_backend_set(c.lb_id, name))


@steps.step
def hostnames_and_a_routing_policy_route_by_host_and_path(c):
    """Hostnames bound to a listener: only their hosts are served (others get 404). A
    routing policy on it sends a path prefix to one backend set and a host to another, the
    first matching rule first; both are updated and taken down in the order a user would."""
    named = {n: Backend(n) for n in ("site", "docs", "shop")}
    c.extra_backends = getattr(c, "extra_backends", []) + list(named.values())
    for name, b in named.items():
        wait_wr(c, c.lb.create_backend_set(m.CreateBackendSetDetails(
            name=name, policy="ROUND_ROBIN",
            backends=[m.BackendDetails(ip_address="127.0.0.1", port=b.port)],
            health_checker=m.HealthCheckerDetails(protocol="TCP", interval_in_millis=1000,
                                                  timeout_in_millis=500)), c.lb_id))

    wr = wait_wr(c, c.lb.create_hostname(
        m.CreateHostnameDetails(name="site", hostname="www.example.test"), c.lb_id))
    check(wr.type == "CreateHostname", wr.type)
    wait_wr(c, c.lb.create_hostname(
        m.CreateHostnameDetails(name="wild", hostname="*.example.org"), c.lb_id))
    e = service_error(c.lb.create_hostname,
                      m.CreateHostnameDetails(name="site", hostname="x.test"), c.lb_id)
    check(e.status == 409 and e.code == "Conflict", f"a second hostname of one name: {e.status} {e.code}")
    e = service_error(c.lb.create_hostname,
                      m.CreateHostnameDetails(name="bad", hostname="a.*.test"), c.lb_id)
    check(e.status == 400 and e.code == "InvalidParameter", f"{e.status} {e.code} {e.message}")
    check(c.lb.get_hostname(c.lb_id, "site").data.hostname == "www.example.test", "read back")
    check(sorted(h.name for h in c.lb.list_hostnames(c.lb_id).data) == ["site", "wild"], "listed")

    def rule(name, condition, backend_set):
        return m.RoutingRule(name=name, condition=condition,
                             actions=[m.ForwardToBackendSet(backend_set_name=backend_set)])

    def policy(name, *rules):
        return m.CreateRoutingPolicyDetails(name=name, condition_language_version="V1",
                                            rules=list(rules))

    # Refused before anything is made, naming what is wrong: a condition routes cannot
    # express, an unknown backend set, a condition that does not parse.
    for bad, named_in_message in (
        (rule("c", "http.request.cookies['beta'] eq 'yes'", "docs"), "cookies"),
        (rule("c", "http.request.url.path sw '/x'", "nope"), "nope"),
        (rule("c", "any(http.request.url.path sw '/x'", "docs"), "rules[0].condition"),
    ):
        e = service_error(c.lb.create_routing_policy, policy("bad", bad), c.lb_id)
        check(e.status == 400 and e.code == "InvalidParameter" and named_in_message in e.message,
              f"{e.status} {e.code} {e.message}")
    rules = [
        rule("docs", "any(http.request.url.path sw (i '/docs'))", "docs"),
        rule("shop", "all(http.request.headers[(i 'Host')] eq (i 'shop.example.org'))", "shop"),
    ]
    wr = wait_wr(c, c.lb.create_routing_policy(policy("routes", *rules), c.lb_id))
    check(wr.type == "CreateRoutingPolicy", wr.type)
    got = c.lb.get_routing_policy(c.lb_id, "routes").data
    check(got.condition_language_version == "V1"
          and [(r.name, r.condition, r.actions[0].name, r.actions[0].backend_set_name)
               for r in got.rules]
          == [("docs", rules[0].condition, "FORWARD_TO_BACKENDSET", "docs"),
              ("shop", rules[1].condition, "FORWARD_TO_BACKENDSET", "shop")],
          f"read back as written: {got}")
    check([p.name for p in c.lb.list_routing_policies(c.lb_id).data] == ["routes"], "listed")

    port = free_port()
    wait_wr(c, c.lb.create_listener(m.CreateListenerDetails(
        name="vhost", default_backend_set_name="site", port=port, protocol="HTTP",
        hostname_names=["site", "wild"], routing_policy_name="routes"), c.lb_id))
    wait_port(port)
    lb = c.lb.get_load_balancer(c.lb_id).data
    listener = lb.listeners["vhost"]
    check(listener.hostname_names == ["site", "wild"] and listener.routing_policy_name == "routes"
          and listener.path_route_set_name is None, str(listener))
    check(sorted(lb.hostnames) == ["site", "wild"] and sorted(lb.routing_policies) == ["routes"],
          f"{lb.hostnames} {lb.routing_policies}")

    def hit(host, path="/"):
        status, body, _ = get(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
        return body if status == 200 else f"status:{status}"

    for host, path, want in (
        ("www.example.test", "/", "site"),
        ("www.example.test", "/docs/intro", "docs"),
        (f"WWW.Example.TEST:{port}", "/DOCS", "docs"),      # host and (i '/docs') ignore case
        ("shop.example.org", "/cart", "shop"),
        ("shop.example.org", "/docs", "docs"),              # the first matching rule wins
        ("a.example.org", "/", "site"),                     # *.example.org
        ("example.org", "/", "status:404"),                 # the wildcard needs a label
        ("other.test", "/docs", "status:404"),              # not a hostname of the listener
    ):
        got = hit(host, path)
        check(got == want, f"{host}{path}: expected {want}, got {got}")

    # One listener per port: OCI's virtual hosting (a second listener on the port, told
    # apart by hostnames) is refused, saying why.
    e = service_error(c.lb.create_listener, m.CreateListenerDetails(
        name="vhost2", default_backend_set_name="shop", port=port, protocol="HTTP",
        hostname_names=["wild"]), c.lb_id)
    check(e.status == 409 and "one listener per port" in e.message, f"{e.status} {e.code} {e.message}")
    # What the listener uses cannot go first.
    e = service_error(c.lb.delete_hostname, c.lb_id, "site")
    check(e.status == 409 and "vhost" in e.message, f"{e.status} {e.code} {e.message}")
    e = service_error(c.lb.delete_routing_policy, c.lb_id, "routes")
    check(e.status == 409 and "vhost" in e.message, f"{e.status} {e.code} {e.message}")
    e = service_error(c.lb.delete_backend_set, c.lb_id, "docs")
    check(e.status == 409 and "routes" in e.message, f"{e.status} {e.code} {e.message}")

    # Updated: the hostname names another host, the policy's second rule a path suffix.
    wr = wait_wr(c, c.lb.update_hostname(
        m.UpdateHostnameDetails(hostname="www2.example.test"), c.lb_id, "site"))
    check(wr.type == "UpdateHostname", wr.type)
    wait_wr(c, c.lb.update_routing_policy(m.UpdateRoutingPolicyDetails(
        condition_language_version="V1",
        rules=[rules[0], rule("images", "http.request.url.path ew '.png'", "shop")]),
        c.lb_id, "routes"))
    for host, path, want in (
        ("www2.example.test", "/", "site"),
        ("www.example.test", "/", "status:404"),
        ("www2.example.test", "/img/a.png", "shop"),
        ("shop.example.org", "/cart", "site"),
        ("shop.example.org", "/docs/a.png", "docs"),
    ):
        got = hit(host, path)
        check(got == want, f"after the updates, {host}{path}: expected {want}, got {got}")

    # The listener lets go first (UpdateListener is the whole listener), then the rest goes.
    wait_wr(c, c.lb.update_listener(m.UpdateListenerDetails(
        default_backend_set_name="site", port=port, protocol="HTTP"), c.lb_id, "vhost"))
    check(hit("other.test", "/docs") == "site", "the listener serves every host, by no policy")
    wait_wr(c, c.lb.delete_routing_policy(c.lb_id, "routes"))
    for name in ("site", "wild"):
        wr = wait_wr(c, c.lb.delete_hostname(c.lb_id, name))
    check(wr.type == "DeleteHostname", wr.type)
    e = service_error(c.lb.get_hostname, c.lb_id, "site")
    check(e.status == 404 and e.code == "NotAuthorizedOrNotFound", f"{e.status} {e.code}")
    e = service_error(c.lb.get_routing_policy, c.lb_id, "routes")
    check(e.status == 404, f"{e.status} {e.code}")
    wait_wr(c, c.lb.delete_listener(c.lb_id, "vhost"))
    for name in named:
        wait_wr(c, c.lb.delete_backend_set(c.lb_id, name))


@steps.step
def a_listener_that_cannot_bind_fails_its_work_request(c):
    # Another program holds the port: the change is accepted, then fails, and says why.
    held = taken_port()
    port = held.getsockname()[1]
    ops = oci.load_balancer.LoadBalancerClientCompositeOperations(c.lb)
    wr = ops.create_listener_and_wait_for_state(
        m.CreateListenerDetails(name="taken", default_backend_set_name=BS, port=port,
                                protocol="HTTP"),
        c.lb_id,
        wait_for_states=["SUCCEEDED", "FAILED"],
        waiter_kwargs={"max_interval_seconds": 1, "max_wait_seconds": 30},
    ).data
    check(wr.lifecycle_state == "FAILED", f"work request: {wr}")
    check(len(wr.error_details) == 1 and wr.error_details[0].error_code == "BAD_INPUT"
          and "cannot bind" in wr.error_details[0].message, f"error details: {wr.error_details}")
    lb = c.lb.get_load_balancer(c.lb_id).data
    check(lb.lifecycle_state == "FAILED", f"load balancer: {lb.lifecycle_state}")
    check("taken" in lb.listeners, "the listener is gone")
    # The port frees: the listener binds by itself, the load balancer turns ACTIVE.
    held.close()
    wait_port(port)
    wait_until(lambda: c.lb.get_load_balancer(c.lb_id).data.lifecycle_state == "ACTIVE",
               what="the load balancer to turn ACTIVE")
    counts = spread(f"http://127.0.0.1:{port}/", 6)
    check(sum(n for k, n in counts.items() if not k.startswith("status:")) == 6, str(counts))
    check(c.lb.get_work_request(wr.id).data.lifecycle_state == "FAILED", "the failure was forgotten")
    wait_wr(c, c.lb.delete_listener(c.lb_id, "taken"))


@steps.step
def update_backend_set_in_one_go(c):
    a, b, d = c.backends
    details = m.UpdateBackendSetDetails(
        policy="IP_HASH",
        backends=[m.BackendDetails(ip_address="127.0.0.1", port=x.port) for x in (a, b, d)],
        health_checker=m.HealthCheckerDetails(protocol="TCP", interval_in_millis=1000,
                                              timeout_in_millis=500),
    )
    # One bad part refuses the whole update.
    bad = m.UpdateBackendSetDetails(policy="IP_HASH", backends=details.backends,
                                    health_checker=m.HealthCheckerDetails(protocol="UDP"))
    e = service_error(c.lb.update_backend_set, bad, c.lb_id, BS)
    check(e.status == 400 and e.code == "InvalidParameter" and "healthChecker.protocol" in e.message,
          str(e))
    check(c.lb.get_backend_set(c.lb_id, BS).data.policy == "ROUND_ROBIN", "a refused update applied")
    wait_wr(c, c.lb.update_backend_set(details, c.lb_id, BS))
    got = c.lb.get_backend_set(c.lb_id, BS).data
    check(got.policy == "IP_HASH" and len(got.backends) == 3, str(got))
    check(got.health_checker.protocol == "TCP", str(got.health_checker))
    # IP_HASH: every request from this one client address goes to the same backend.
    counts = traffic(c, 30)
    check(len(counts) == 1 and sum(counts.values()) == 30, f"IP_HASH spread one client: {counts}")


@steps.step
def update_load_balancer_and_delete_protection(c):
    wait_wr(c, c.lb.update_load_balancer(
        m.UpdateLoadBalancerDetails(display_name="renamed", is_delete_protection_enabled=True,
                                    freeform_tags={"team": "edge"}), c.lb_id))
    lb = c.lb.get_load_balancer(c.lb_id).data
    check((lb.display_name, lb.is_delete_protection_enabled, lb.freeform_tags)
          == ("renamed", True, {"team": "edge"}), str(lb))
    e = service_error(c.lb.delete_load_balancer, c.lb_id)
    check(e.status == 409 and e.code == "Conflict", f"protected delete: {e.status} {e.code}")
    wait_wr(c, c.lb.update_load_balancer(
        m.UpdateLoadBalancerDetails(is_delete_protection_enabled=False), c.lb_id))
    e = service_error(c.lb.list_rule_sets, c.lb_id)
    check(e.status == 404 and e.code == "NotAuthorizedOrNotFound", f"unsupported op: {e}")


@steps.step
def the_oci_cli_updates_a_backend(c):
    """The README's CLI example, run with the real `oci` CLI from the same venv."""
    d = tempfile.mkdtemp(prefix="oci-cli-")
    try:
        cli_update(c, d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def cli_update(c, d):
    key_file = os.path.join(d, "key.pem")
    with open(key_file, "w") as f:
        f.write(c.private_key)
    with open(os.path.join(d, "config"), "w") as f:
        f.write(f"[DEFAULT]\nuser={USER}\nfingerprint={c.fingerprint}\ntenancy={TENANCY}\n"
                f"region=us-ashburn-1\nkey_file={key_file}\n")
    for name in ("key.pem", "config"):
        os.chmod(os.path.join(d, name), 0o600)
    cli = [os.path.join(os.path.dirname(sys.executable), "oci"),
           "--config-file", os.path.join(d, "config"), "--endpoint", c.fulcrum.api_url]
    a = c.backends[0]
    env = {**os.environ, "SUPPRESS_LABEL_WARNING": "True"}
    out = subprocess.run(cli + [
        "lb", "backend", "update", "--load-balancer-id", c.lb_id, "--backend-set-name", BS,
        "--backend-name", a.address, "--weight", "2", "--backup", "false", "--drain", "true",
        "--offline", "false", "--wait-for-state", "SUCCEEDED"], capture_output=True, text=True,
        env=env, timeout=60)
    check(out.returncode == 0, f"oci lb backend update: {out.returncode} {out.stderr[-500:]}")
    wr = json.loads(out.stdout)["data"]
    check(wr["lifecycle-state"] == "SUCCEEDED" and wr["type"] == "UpdateBackend", out.stdout)
    got = c.lb.get_backend(c.lb_id, BS, a.address).data
    check((got.weight, got.drain) == (2, True), str(got))


@steps.step
def a_key_limited_to_another_compartment_sees_and_changes_nothing_here(c):
    other = c.other
    for what, fn, args in [
        ("list", other.list_load_balancers, (COMPARTMENT,)),
        ("get", other.get_load_balancer, (c.lb_id,)),
        ("get backend set", other.get_backend_set, (c.lb_id, BS)),
        ("list backends", other.list_backends, (c.lb_id, BS)),
        ("update backend (seed 000)", other.update_backend,
         (m.UpdateBackendDetails(weight=9, backup=False, drain=False, offline=False),
          c.lb_id, BS, c.backends[0].address)),
        ("delete", other.delete_load_balancer, (c.lb_id,)),
        ("list work requests", other.list_work_requests, (c.lb_id,)),
        ("get work request", other.get_work_request, (c.wr_id,)),
        ("create here", other.create_load_balancer, (m.CreateLoadBalancerDetails(
            compartment_id=COMPARTMENT, display_name="intruder", shape_name="flexible",
            subnet_ids=["ocid1.subnet.oc1..aaaasubnet"]),)),
    ]:
        e = service_error(fn, *args)
        check(e.status == 404 and e.code == "NotAuthorizedOrNotFound", f"{what}: {e}")
    check(other.list_load_balancers(OTHER_COMPARTMENT).data == [], "its own compartment is empty")
    got = c.lb.get_backend(c.lb_id, BS, c.backends[0].address).data
    check(got.weight != 9, f"the other key changed a backend: {got}")
    names = [x.display_name for x in c.lb.list_load_balancers(COMPARTMENT).data]
    check("intruder" not in names, str(names))


@steps.step
def a_key_registered_at_run_time_drives_the_sdk_until_removed(c):
    """A key registered through fulcrum's native API (no restart, no config file) signs
    the SDK's requests; its fingerprint is the one the SDK's config computes (MD5 of the
    DER public key); once removed, the SDK's requests are 401."""
    private, public, fingerprint = new_key()
    user = "ocid1.user.oc1..aaaaruntimekey"
    anonymous = oci.load_balancer.LoadBalancerClient(
        {**c.sdk_config, "user": user, "fingerprint": fingerprint, "key_content": private},
        service_endpoint=c.fulcrum.api_url, retry_strategy=oci.retry.NoneRetryStrategy())
    e = service_error(anonymous.list_load_balancers, COMPARTMENT)
    check(e.status == 401 and e.code == "NotAuthenticated", f"before registering: {e}")
    status, key = c.fulcrum.native("POST", "/v1/oci-api-keys", {
        "tenancy": TENANCY, "user": user, "public_key_pem": public, "name": "runtime"})
    check(status == 201, f"register: {status} {key}")
    check(key["fingerprint"] == fingerprint, f"fingerprint {key['fingerprint']} != {fingerprint}")
    check(key["key_id"] == f"{TENANCY}/{user}/{fingerprint}", str(key))
    ids = [x.id for x in anonymous.list_load_balancers(COMPARTMENT).data]
    check(c.lb_id in ids, f"the registered key lists {ids}")
    status, wr = c.fulcrum.native("DELETE", f"/v1/oci-api-keys/{key['id']}")
    check(status == 202, f"remove: {status} {wr}")
    status, done = c.fulcrum.native("GET", f"/v1/work-requests/{wr['id']}/wait?timeout_ms=10000")
    check(status == 200 and done["status"] == "SUCCEEDED", f"{status} {done}")
    e = service_error(anonymous.list_load_balancers, COMPARTMENT)
    check(e.status == 401 and e.code == "NotAuthenticated", f"after removing: {e}")


@steps.step
def delete_load_balancer(c):
    wait_wr(c, c.lb.delete_load_balancer(c.lb_id))
    e = service_error(c.lb.get_load_balancer, c.lb_id)
    check(e.status == 404 and e.code == "NotAuthorizedOrNotFound", str(e))
    check(c.lb_id not in [x.id for x in c.lb.list_load_balancers(COMPARTMENT).data], "still listed")


def main():
    private, public, fingerprint = new_key()
    key_id = f"{TENANCY}/{USER}/{fingerprint}"
    other_private, other_public, other_fingerprint = new_key()
    config = (
        "[[oci.keys]]\n"
        f'key_id = "{key_id}"\n'
        'name = "sdk-tester"\n'
        f'public_key_pem = """\n{public}"""\n'
        "[[oci.keys]]\n"
        f'key_id = "{TENANCY}/{OTHER_USER}/{other_fingerprint}"\n'
        'name = "other-tenant"\n'
        f'compartments = ["{OTHER_COMPARTMENT}"]\n'
        f'public_key_pem = """\n{other_public}"""\n'
    )
    c = Ctx()
    c.private_key, c.fingerprint = private, fingerprint
    c.latencies = []
    c.backends = [Backend(n) for n in ("a", "b", "c")]
    c.fulcrum = Fulcrum(config)
    ok = False
    try:
        sdk_config = {
            "user": USER, "tenancy": TENANCY, "fingerprint": fingerprint,
            "key_content": private, "region": "us-ashburn-1",
        }
        oci.config.validate_config(sdk_config)
        c.sdk_config = sdk_config
        c.lb = oci.load_balancer.LoadBalancerClient(sdk_config, service_endpoint=c.fulcrum.api_url)
        other_config = {**sdk_config, "user": OTHER_USER, "fingerprint": other_fingerprint,
                        "key_content": other_private}
        c.other = oci.load_balancer.LoadBalancerClient(
            other_config, service_endpoint=c.fulcrum.api_url,
            retry_strategy=oci.retry.NoneRetryStrategy())
        c.signer = oci.signer.Signer(TENANCY, USER, fingerprint, None, private_key_content=private)
        ok = steps.run(c)
        if ok:
            lat = sorted(c.latencies)
            print(f"figures: weight 3 vs weight 1 request ratio {c.ratio:.2f}; work request "
                  f"204 -> SUCCEEDED seen by the SDK: median {lat[len(lat) // 2] * 1000:.0f} ms, "
                  f"max {lat[-1] * 1000:.0f} ms over {len(lat)}")
    finally:
        if not ok:
            c.fulcrum.dump_log()
        c.fulcrum.stop()
        for b in c.backends + getattr(c, "extra_backends", []):
            b.stop()
    return ok


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
