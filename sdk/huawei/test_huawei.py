"""Drives fulcrum's Huawei dialect with the unmodified huaweicloudsdkelb and
huaweicloudsdkvpc SDKs.

Seed 001 (PUT /v2.0/lbaas/pools/{pool_id}/members) has no SDK method, so it goes through
the SDK's own signed `call_api`; everything else uses the SDK's v2/v3 client methods, and
the VPC SDK's VpcClient makes the VPC and subnets a load balancer is given its address
from. Traffic goes through a real fulcrum listener to real local backends.
"""

import calendar
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request

from harness import (Backend, Fulcrum, Steps, TestCA, UdpBackend, check, free_port, free_udp_port, get,
                     quic_initial, spread, taken_port, udp_ask, wait_port, wait_until)

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkelb import v2, v3
from huaweicloudsdkelb.v3 import model as m3
from huaweicloudsdkvpc.v2 import VpcClient
from huaweicloudsdkvpc.v2 import model as vm

AK = "AKHUAWEITEST0000001"
SK = "sk-huawei-test-secret-0001"
PROJECT = "0123456789abcdef0123456789abcdef"
TOKEN = "huawei-token-0001"
# A credential bound to another project: it sees nothing of PROJECT's.
OTHER_AK = "AKHUAWEIOTHER000001"
OTHER_SK = "sk-huawei-other-tenant-0001"
OTHER_PROJECT = "fedcba9876543210fedcba9876543210"
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

CONFIG = f"""
[huawei]
credentials = [
  {{ ak = "{AK}", sk = "{SK}", project_id = "{PROJECT}" }},
  {{ ak = "{OTHER_AK}", sk = "{OTHER_SK}", project_id = "{OTHER_PROJECT}" }},
]
tokens = [{{ name = "ci", token = "{TOKEN}", project_id = "{PROJECT}" }}]
"""


def client(module, url, sk=SK, ak=AK, project=PROJECT):
    return builder(module.ElbClient, url, sk, ak, project)


def builder(cls, url, sk=SK, ak=AK, project=PROJECT):
    config = HttpConfig.get_default_config()
    config.timeout = (5, 30)
    return (
        cls.new_builder()
        .with_credentials(BasicCredentials(ak, sk, project))
        .with_endpoints([url])
        .with_http_config(config)
        .build()
    )


class Ctx:
    pass


steps = Steps("huawei: huaweicloudsdkelb and huaweicloudsdkvpc against fulcrum")


def expect_error(fn, status, code=None, text=None):
    """Runs fn, which must raise ClientRequestException with this status."""
    try:
        fn()
    except ClientRequestException as e:
        check(e.status_code == status, f"expected {status}, got {e.status_code}: {e.error_msg}")
        if code:
            check(e.error_code == code, f"expected {code}, got {e.error_code}: {e.error_msg}")
        if text:
            check(text in (e.error_msg or ""), f"expected {text!r} in {e.error_msg!r}")
        check(e.request_id, "errors carry a request id (X-Request-Id)")
        if os.environ.get("SHOW_ERRORS"):
            print(f"    {e.status_code} {e.error_code} {e.error_msg}")
        return e
    raise AssertionError(f"expected HTTP {status}, the call succeeded")


def batch(c, body, headers=None):
    """Seed 001 through the SDK's signed call_api."""
    return c.c2.call_api(
        resource_path="/v2.0/lbaas/pools/{pool_id}/members",
        method="PUT",
        path_params={"pool_id": c.pool_id},
        header_params={"Content-Type": "application/json", **(headers or {})},
        body=body,
        response_type="ListMembersResponse",
    )


def member(backend, subnet, weight=None, name=None):
    m = {"address": "127.0.0.1", "protocol_port": backend.port, "subnet_id": subnet}
    if weight is not None:
        m["weight"] = weight
    if name:
        m["name"] = name
    return m


def members(c):
    """The pool's members through the SDK's v2 list_members: {port: member}."""
    resp = c.c2.list_members(v2.ListMembersRequest(pool_id=c.pool_id))
    return {m.protocol_port: m for m in resp.members}


def snapshot(c):
    return sorted((m.id, m.protocol_port, m.weight, m.name) for m in members(c).values())


def lb_url(c):
    return f"http://127.0.0.1:{c.listen_port}/"


def served_by(c, n=24):
    return spread(lb_url(c), n)


def update_pool(c, pool_id=None, **fields):
    return c.c3.update_pool(
        m3.UpdatePoolRequest(
            pool_id=pool_id or c.pool_id, body=m3.UpdatePoolRequestBody(pool=m3.UpdatePoolOption(**fields))
        )
    )


def show_pool(c, pool_id=None):
    return c.c3.show_pool(m3.ShowPoolRequest(pool_id=pool_id or c.pool_id)).pool


@steps.step
def setup(c):
    c.fulcrum = Fulcrum(CONFIG)
    c.backends = {name: Backend(name) for name in ("b1", "b2", "b3")}
    c.c2 = client(v2, c.fulcrum.api_url)
    c.c3 = client(v3, c.fulcrum.api_url)
    subnets = {
        "local": {"name": "local", "cidr": "127.0.0.0/8", "vpc_id": "vpc-1"},
        "other": {"name": "other", "cidr": "10.9.0.0/24", "vpc_id": "vpc-1"},
        "v6": {"name": "v6", "cidr": "fd00::/64", "vpc_id": "vpc-1"},
        "foreign": {"name": "foreign", "cidr": "127.0.0.0/8", "vpc_id": "vpc-2"},
    }
    c.subnet = {}
    for key, body in subnets.items():
        status, out = c.fulcrum.native("POST", "/v1/subnets", body)
        check(status == 201, f"subnet {key}: {status} {out}")
        c.subnet[key] = out["id"]


@steps.step
def v3_create_load_balancer_pool_listener(c):
    resp = c.c3.create_load_balancer(
        m3.CreateLoadBalancerRequest(
            body=m3.CreateLoadBalancerRequestBody(
                loadbalancer=m3.CreateLoadBalancerOption(
                    name="lb-1",
                    vip_subnet_cidr_id=c.subnet["local"],
                    vip_address="127.0.0.1",
                    availability_zone_list=["az-1"],
                )
            )
        )
    )
    lb = resp.loadbalancer
    check(resp.request_id, "v3 bodies carry request_id")
    check(lb.vpc_id == "vpc-1", f"the load balancer takes its subnet's VPC: {lb.vpc_id}")
    check(lb.project_id == PROJECT, lb.project_id)
    check(TIME_RE.match(lb.created_at), f"timestamp format: {lb.created_at}")
    c.lb_id = lb.id
    wait_until(
        lambda: c.c3.show_load_balancer(m3.ShowLoadBalancerRequest(loadbalancer_id=c.lb_id))
        .loadbalancer.provisioning_status
        == "ACTIVE",
        what="load balancer ACTIVE",
    )
    pool = c.c3.create_pool(
        m3.CreatePoolRequest(
            body=m3.CreatePoolRequestBody(
                pool=m3.CreatePoolOption(
                    name="pool-1", protocol="HTTP", lb_algorithm="ROUND_ROBIN", loadbalancer_id=c.lb_id
                )
            )
        )
    ).pool
    c.pool_id = pool.id
    check(pool.protocol == "HTTP" and pool.lb_algorithm == "ROUND_ROBIN", str(pool))
    c.listen_port = free_port()
    listener = c.c3.create_listener(
        m3.CreateListenerRequest(
            body=m3.CreateListenerRequestBody(
                listener=m3.CreateListenerOption(
                    name="http-1",
                    protocol="HTTP",
                    protocol_port=c.listen_port,
                    loadbalancer_id=c.lb_id,
                    default_pool_id=c.pool_id,
                )
            )
        )
    ).listener
    check(listener.default_pool_id == c.pool_id, str(listener))
    wait_port(c.listen_port)
    pool = show_pool(c)
    check([l.id for l in pool.listeners] == [listener.id], f"pool lists its listener: {pool.listeners}")


@steps.step
def seed001_add_replace_delete_with_traffic(c):
    b1, b2, b3 = (c.backends[n] for n in ("b1", "b2", "b3"))
    s = c.subnet["local"]
    r = batch(c, {"action": "add", "members": [member(b1, s, name="m1"), member(b2, s, weight=3)]})
    check(r.status_code == 202, f"add answers 202: {r.status_code}")
    got = members(c)
    check(set(got) == {b1.port, b2.port}, f"members after add: {got}")
    check(got[b1.port].weight == 1 and got[b1.port].name == "m1", "weight defaults to 1")
    check(got[b2.port].weight == 3 and got[b2.port].subnet_id == s, str(got[b2.port]))
    wait_until(lambda: set(served_by(c, 12)) == {"b1", "b2"}, what="traffic to b1 and b2")

    b2_id = got[b2.port].id
    r = batch(c, {"action": "replace", "members": [member(b2, s, weight=1), member(b3, s)]})
    check(r.status_code == 202, str(r.status_code))
    got = members(c)
    check(set(got) == {b2.port, b3.port}, f"members after replace: {got}")
    check(got[b2.port].id == b2_id, "replace keeps the id of a member whose endpoint stays")
    check(got[b2.port].weight == 1, "replace takes the new weight")
    wait_until(lambda: set(served_by(c, 12)) == {"b2", "b3"}, what="traffic to b2 and b3 only")
    b1.reset()
    served_by(c, 12)
    check(b1.hits == 0, "a replaced-away member gets no requests")

    r = batch(c, {"action": "delete", "members": [{"id": b2_id}]})
    check(r.status_code == 202, str(r.status_code))
    check(set(members(c)) == {b3.port}, "delete removes by member id")
    wait_until(lambda: served_by(c, 10) == {"b3": 10}, what="traffic to b3 only")

    # An empty add and an empty delete change nothing; a missing action means replace
    # (gophercloud's BatchUpdateMembers sends none).
    before = snapshot(c)
    batch(c, {"action": "add", "members": []})
    batch(c, {"action": "delete", "members": []})
    check(snapshot(c) == before, "empty add/delete change nothing")
    r = batch(c, {"members": [member(b1, s), member(b3, s)]})
    check(r.status_code == 202 and set(members(c)) == {b1.port, b3.port}, "no action = replace")
    wait_until(lambda: set(served_by(c, 12)) == {"b1", "b3"}, what="traffic to b1 and b3")


@steps.step
def seed001_bad_batches_change_nothing(c):
    b1, b2, b3 = (c.backends[n] for n in ("b1", "b2", "b3"))
    s = c.subnet["local"]
    before = snapshot(c)
    many = [{"address": "127.0.0.1", "protocol_port": 20000 + i, "subnet_id": s} for i in range(201)]
    cases = [
        ("201 members", {"action": "add", "members": many}, "at most 200"),
        ("duplicate in request", {"action": "add", "members": [member(b2, s), member(b2, s)]}, "already uses"),
        ("duplicate against pool", {"action": "add", "members": [member(b2, s), member(b1, s)]}, "already uses"),
        (
            "address outside subnet",
            {"action": "add", "members": [member(b2, s), member(b2, c.subnet["other"])]},
            "is not in subnet",
        ),
        ("bad weight", {"action": "replace", "members": [member(b2, s, weight=101)]}, "weight"),
        ("negative weight", {"action": "add", "members": [member(b2, s, weight=-1)]}, "weight"),
        ("IPv6 subnet", {"action": "add", "members": [dict(member(b2, s), subnet_id=c.subnet["v6"])]}, "IPv6"),
        (
            "subnet in another VPC",
            {"action": "add", "members": [dict(member(b2, s), subnet_id=c.subnet["foreign"])]},
            "VPC",
        ),
        ("unknown subnet", {"action": "add", "members": [dict(member(b2, s), subnet_id="nope")]}, "does not exist"),
        ("port 0", {"action": "add", "members": [dict(member(b2, s), protocol_port=0)]}, "protocol_port"),
        ("long name", {"action": "add", "members": [member(b2, s, name="x" * 256)]}, "name"),
        ("unknown action", {"action": "merge", "members": []}, "action"),
        ("unknown member id", {"action": "delete", "members": [{"id": "no-such-member"}]}, "no-such-member"),
        ("missing address", {"action": "add", "members": [{"protocol_port": 80, "subnet_id": s}]}, "address"),
    ]
    for name, body, text in cases:
        e = expect_error(lambda: batch(c, body), 400, "ELB.8902", text)
        check(snapshot(c) == before, f"{name}: nothing changed ({e.error_msg})")
    check(set(served_by(c, 8)) == {"b1", "b3"}, "traffic unchanged")


@steps.step
def seed002_update_pool_algorithm_and_response(c):
    b1, b2, b3 = (c.backends[n] for n in ("b1", "b2", "b3"))
    s = c.subnet["local"]
    batch(c, {"action": "replace", "members": [member(b1, s), member(b2, s), member(b3, s)]})
    wait_until(lambda: set(served_by(c, 15)) == {"b1", "b2", "b3"}, what="three members serving")
    resp = update_pool(c, lb_algorithm="SOURCE_IP", name="pool-1b", description="sticky by source")
    check(resp.status_code == 200, str(resp.status_code))
    check(resp.request_id, "UpdatePool answers with request_id")
    p = resp.pool
    check(p.lb_algorithm == "SOURCE_IP" and p.name == "pool-1b", str(p))
    check(p.description == "sticky by source" and p.protocol == "HTTP", str(p))
    check(p.project_id == PROJECT and p.admin_state_up is True, str(p))
    check([x.id for x in p.loadbalancers] == [c.lb_id], str(p.loadbalancers))
    check(len(p.members) == 3 and len(p.listeners) == 1, str(p))
    check(TIME_RE.match(p.created_at) and TIME_RE.match(p.updated_at), f"{p.created_at} {p.updated_at}")
    check(p.member_deletion_protection_enable is False and p.type == "" and p.vpc_id == "", str(p))
    check(p.protection_status == "nonProtection", str(p))
    seen = served_by(c, 30)
    check(len(seen) == 1, f"SOURCE_IP: every request from 127.0.0.1 lands on one member: {seen}")
    update_pool(c, lb_algorithm="ROUND_ROBIN")
    check(set(served_by(c, 15)) == {"b1", "b2", "b3"}, "round robin spreads again")


@steps.step
def seed002_session_persistence_cookie_flow(c):
    p = update_pool(c, session_persistence=m3.UpdatePoolSessionPersistenceOption(type="HTTP_COOKIE")).pool
    sp = p.session_persistence
    check(sp.type == "HTTP_COOKIE" and sp.persistence_timeout == 1440, f"defaults for HTTP pools: {sp}")
    status, body, headers = get(lb_url(c))
    cookie = headers.get("Set-Cookie") or headers.get("set-cookie")
    check(status == 200 and cookie, f"the listener sets a persistence cookie: {headers}")
    pair = cookie.split(";")[0]
    sticky = spread(lb_url(c), 15, {"Cookie": pair})
    check(sticky == {body: 15}, f"sending the cookie back sticks to {body}: {sticky}")
    update_pool(
        c,
        session_persistence=m3.UpdatePoolSessionPersistenceOption(type="APP_COOKIE", cookie_name="SESSION_ID"),
    )
    sp = show_pool(c).session_persistence
    check(sp.type == "APP_COOKIE" and sp.cookie_name == "SESSION_ID", str(sp))
    # Setting it to null turns persistence off (Huawei's own SDK drops None fields, so
    # this one goes through call_api).
    c.c3.call_api(
        resource_path="/v3/{project_id}/elb/pools/{pool_id}",
        method="PUT",
        path_params={"pool_id": c.pool_id},
        header_params={"Content-Type": "application/json;charset=UTF-8"},
        body={"pool": {"session_persistence": None}},
        response_type="UpdatePoolResponse",
    )
    check(show_pool(c).session_persistence is None, "session_persistence null turns it off")
    check(set(served_by(c, 15)) == {"b1", "b2", "b3"}, "no persistence: spread again")


@steps.step
def seed002_slow_start_and_protection(c):
    p = update_pool(c, slow_start=m3.UpdatePoolSlowStartOption(enable=True, duration=60)).pool
    check(p.slow_start.enable is True and p.slow_start.duration == 60, str(p.slow_start))
    check(show_pool(c).slow_start.duration == 60, "slow start round-trips")
    p = update_pool(c, protection_status="consoleProtection", protection_reason="audit").pool
    check(p.protection_status == "consoleProtection" and p.protection_reason == "audit", str(p))
    p = update_pool(c, protection_status="nonProtection", protection_reason="").pool
    check(p.protection_status == "nonProtection", str(p))
    p = update_pool(c, vpc_id="vpc-1", type="instance").pool
    check(p.vpc_id == "vpc-1" and p.type == "instance", str(p))
    check(set(served_by(c, 15)) == {"b1", "b2", "b3"}, "pool still serves")


@steps.step
def seed002_every_rule_refused(c):
    # A TCP pool and a QUIC pool for the protocol-specific rules.
    def new_pool(name, protocol, **extra):
        return c.c3.create_pool(
            m3.CreatePoolRequest(
                body=m3.CreatePoolRequestBody(
                    pool=m3.CreatePoolOption(
                        name=name, protocol=protocol, lb_algorithm="ROUND_ROBIN", loadbalancer_id=c.lb_id, **extra
                    )
                )
            )
        ).pool.id

    tcp = new_pool("tcp-1", "TCP")
    quic = new_pool(
        "quic-1", "QUIC", session_persistence=m3.CreatePoolSessionPersistenceOption(type="SOURCE_IP")
    )
    sp = m3.UpdatePoolSessionPersistenceOption
    cases = [
        ("admin_state_up false", c.pool_id, dict(admin_state_up=False), 400, "admin_state_up"),
        ("name too long", c.pool_id, dict(name="n" * 256), 400, "name"),
        ("description too long", c.pool_id, dict(description="d" * 256), 400, "description"),
        ("unknown algorithm", c.pool_id, dict(lb_algorithm="RANDOM"), 400, "lb_algorithm"),
        ("QUIC_CID on HTTP", c.pool_id, dict(lb_algorithm="QUIC_CID"), 400, "QUIC_CID"),
        ("cookie_name without APP_COOKIE", c.pool_id,
         dict(session_persistence=sp(type="HTTP_COOKIE", cookie_name="a")), 400, "cookie_name"),
        ("APP_COOKIE without cookie_name", c.pool_id, dict(session_persistence=sp(type="APP_COOKIE")), 400,
         "cookie_name"),
        ("cookie_name characters", c.pool_id,
         dict(session_persistence=sp(type="APP_COOKIE", cookie_name="bad cookie!")), 400, "cookie_name"),
        ("cookie_name too long (dedicated: 255)", c.pool_id,
         dict(session_persistence=sp(type="APP_COOKIE", cookie_name="c" * 256)), 400, "cookie_name"),
        ("persistence_timeout HTTP > 1440", c.pool_id,
         dict(session_persistence=sp(type="HTTP_COOKIE", persistence_timeout=1441)), 400, "persistence_timeout"),
        ("persistence_timeout 0", c.pool_id,
         dict(session_persistence=sp(type="HTTP_COOKIE", persistence_timeout=0)), 400, "persistence_timeout"),
        ("persistence_timeout TCP > 60", tcp,
         dict(session_persistence=sp(type="SOURCE_IP", persistence_timeout=61)), 400, "persistence_timeout"),
        ("unknown persistence type", c.pool_id, dict(session_persistence=sp(type="NONE")), 400, "type"),
        ("QUIC needs SOURCE_IP", quic, dict(session_persistence=sp(type="HTTP_COOKIE")), 400, "SOURCE_IP"),
        ("slow_start on TCP", tcp, dict(slow_start=m3.UpdatePoolSlowStartOption(enable=True, duration=30)), 400,
         "slow_start"),
        ("slow_start below 30", c.pool_id, dict(slow_start=m3.UpdatePoolSlowStartOption(enable=True, duration=29)),
         400, "duration"),
        ("slow_start above 1200", c.pool_id,
         dict(slow_start=m3.UpdatePoolSlowStartOption(enable=True, duration=1201)), 400, "duration"),
        ("vpc_id change once set", c.pool_id, dict(vpc_id="vpc-9"), 400, "vpc_id"),
        ("vpc_id too long", tcp, dict(vpc_id="v" * 37), 400, "vpc_id"),
        ("type back to empty", c.pool_id, dict(type=""), 400, "type"),
        ("type change once set", c.pool_id, dict(type="ip"), 400, "type"),
        ("instance needs vpc_id", tcp, dict(type="instance"), 400, "vpc_id"),
        ("ip forbids vpc_id", tcp, dict(type="ip", vpc_id="vpc-1"), 400, "vpc_id"),
        ("unknown type", tcp, dict(type="vm"), 400, "type"),
        ("protection_reason without consoleProtection", c.pool_id, dict(protection_reason="why"), 400,
         "protection_reason"),
        ("protection_reason too long", c.pool_id,
         dict(protection_status="consoleProtection", protection_reason="r" * 256), 400, "protection_reason"),
        ("unknown protection_status", c.pool_id, dict(protection_status="fullProtection"), 400,
         "protection_status"),
        ("duplicate pool name", tcp, dict(name="pool-1b"), 409, "pool-1b"),
    ]
    for name, pool_id, fields, status, text in cases:
        before = show_pool(c, pool_id).to_dict()
        before.pop("updated_at", None)

        def call():
            c.c3.update_pool(
                m3.UpdatePoolRequest(
                    pool_id=pool_id, body=m3.UpdatePoolRequestBody(pool=m3.UpdatePoolOption(**fields))
                )
            )

        try:
            expect_error(call, status, None, text)
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}")
        after = show_pool(c, pool_id).to_dict()
        after.pop("updated_at", None)
        check(after == before, f"{name}: the pool did not change")
    expect_error(lambda: c.c3.show_pool(m3.ShowPoolRequest(pool_id="no-such-pool")), 404, "ELB.8904")
    c.c3.delete_pool(m3.DeletePoolRequest(pool_id=tcp))
    c.c3.delete_pool(m3.DeletePoolRequest(pool_id=quic))


@steps.step
def member_deletion_protection_holds_in_every_dialect(c):
    update_pool(c, member_deletion_protection_enable=True)
    got = members(c)
    some = next(iter(got.values()))
    expect_error(lambda: batch(c, {"action": "delete", "members": [{"id": some.id}]}), 409, None, "protection")
    expect_error(lambda: batch(c, {"action": "replace", "members": []}), 409, None, "protection")
    expect_error(
        lambda: c.c3.delete_member(m3.DeleteMemberRequest(pool_id=c.pool_id, member_id=some.id)), 409
    )
    expect_error(lambda: c.c2.delete_member(v2.DeleteMemberRequest(pool_id=c.pool_id, member_id=some.id)), 409)
    status, body = c.fulcrum.native("DELETE", f"/v1/pools/{c.pool_id}/members/{some.id}")
    check(status == 409, f"the native API refuses too: {status} {body}")
    check(set(members(c)) == set(got), "no member was removed")
    update_pool(c, member_deletion_protection_enable=False)
    c.c3.delete_member(m3.DeleteMemberRequest(pool_id=c.pool_id, member_id=some.id))
    check(some.protocol_port not in members(c), "removal works once protection is off")


@steps.step
def v3_members_lists_and_monitors(c):
    b1 = c.backends["b1"]
    s = c.subnet["local"]
    batch(c, {"action": "replace", "members": [member(c.backends[n], s) for n in ("b1", "b2", "b3")]})
    resp = c.c3.list_members(m3.ListMembersRequest(pool_id=c.pool_id, limit=2))
    check(len(resp.members) == 2 and resp.page_info.current_count == 2, str(resp.page_info))
    check(resp.page_info.next_marker == resp.members[-1].id, "a next page is announced")
    rest = c.c3.list_members(
        m3.ListMembersRequest(pool_id=c.pool_id, limit=2, marker=resp.page_info.next_marker)
    )
    check(len(rest.members) == 1 and rest.page_info.next_marker is None, str(rest.page_info))
    ids = {m.id for m in resp.members} | {m.id for m in rest.members}
    check(len(ids) == 3, "pages do not overlap")
    m_b1 = next(m for m in resp.members + rest.members if m.protocol_port == b1.port)
    check(m_b1.subnet_cidr_id == s and TIME_RE.match(m_b1.created_at), str(m_b1))
    upd = c.c3.batch_update_members(
        m3.BatchUpdateMembersRequest(
            pool_id=c.pool_id,
            body=m3.BatchUpdateMembersRequestBody(
                members=[m3.BatchUpdateMembersOption(id=m_b1.id, weight=0, name="drained")]
            ),
        )
    )
    check(upd.request_id and upd.members[0].weight == 0, str(upd))
    wait_until(lambda: "b1" not in served_by(c, 12), what="weight 0: no new requests to b1")
    expect_error(
        lambda: c.c3.batch_update_members(
            m3.BatchUpdateMembersRequest(
                pool_id=c.pool_id,
                body=m3.BatchUpdateMembersRequestBody(
                    members=[m3.BatchUpdateMembersOption(id=m_b1.id, weight=5),
                             m3.BatchUpdateMembersOption(id="nope", weight=5)]
                ),
            )
        ),
        400,
    )
    check(members(c)[b1.port].weight == 0, "a failed batch-update changes nothing")
    created = c.c3.create_member(
        m3.CreateMemberRequest(
            pool_id=c.pool_id,
            body=m3.CreateMemberRequestBody(
                member=m3.CreateMemberOption(address="127.0.0.1", protocol_port=free_port(), subnet_cidr_id=s)
            ),
        )
    )
    check(created.member.weight == 1 and created.request_id, str(created))
    expect_error(
        lambda: c.c3.create_member(
            m3.CreateMemberRequest(
                pool_id=c.pool_id,
                body=m3.CreateMemberRequestBody(
                    member=m3.CreateMemberOption(address="127.0.0.1", protocol_port=0, subnet_cidr_id=s)
                ),
            )
        ),
        400,
        "ELB.8902",
        "protocol_port",
    )
    c.c3.delete_member(m3.DeleteMemberRequest(pool_id=c.pool_id, member_id=created.member.id))
    pools = c.c3.list_pools(m3.ListPoolsRequest(loadbalancer_id=[c.lb_id], limit=10))
    check([p.id for p in pools.pools] == [c.pool_id] and pools.request_id, str(pools))
    hm = c.c3.create_health_monitor(
        m3.CreateHealthMonitorRequest(
            body=m3.CreateHealthMonitorRequestBody(
                healthmonitor=m3.CreateHealthMonitorOption(
                    pool_id=c.pool_id, type="HTTP", delay=1, timeout=1, max_retries=2, url_path="/health"
                )
            )
        )
    ).healthmonitor
    check(hm.delay == 1 and hm.url_path == "/health" and hm.pools[0].id == c.pool_id, str(hm))
    check(show_pool(c).healthmonitor_id == hm.id, "the pool names its monitor")
    # Stop a backend: the monitor takes it out; start it: back in.
    c.backends["b3"].stop()
    wait_until(lambda: set(served_by(c, 8)) == {"b2"}, timeout=15, what="b3 marked down")
    c.backends["b3"].start()
    wait_until(lambda: "b3" in served_by(c, 10), timeout=15, what="b3 back")
    v2_pool = c.c2.show_pool(v2.ShowPoolRequest(pool_id=c.pool_id)).pool
    check(v2_pool.healthmonitor_id == hm.id and v2_pool.lb_algorithm == "ROUND_ROBIN", str(v2_pool))


@steps.step
def v2_sdk_shared_load_balancer(c):
    # huaweicloudsdkelb.v2 (shared ELB): its own paths, LBaaS-like shapes.
    lb = c.c2.create_loadbalancer(
        v2.CreateLoadbalancerRequest(
            body=v2.CreateLoadbalancerRequestBody(
                loadbalancer=v2.CreateLoadbalancerReq(vip_subnet_id=c.subnet["local"], name="shared-1")
            )
        )
    ).loadbalancer
    check(lb.vip_subnet_id == c.subnet["local"] and lb.tenant_id == PROJECT, str(lb))
    pool = c.c2.create_pool(
        v2.CreatePoolRequest(
            body=v2.CreatePoolRequestBody(
                pool=v2.CreatePoolReq(protocol="HTTP", lb_algorithm="LEAST_CONNECTIONS", loadbalancer_id=lb.id)
            )
        )
    ).pool
    check(pool.lb_algorithm == "LEAST_CONNECTIONS", str(pool))
    m = c.c2.create_member(
        v2.CreateMemberRequest(
            pool_id=pool.id,
            body=v2.CreateMemberRequestBody(
                member=v2.CreateMemberReq(address="127.0.0.9", protocol_port=8080, subnet_id=c.subnet["local"])
            ),
        )
    ).member
    check(m.subnet_id == c.subnet["local"] and m.weight == 1, str(m))
    expect_error(
        lambda: c.c2.create_member(
            v2.CreateMemberRequest(
                pool_id=pool.id,
                body=v2.CreateMemberRequestBody(
                    member=v2.CreateMemberReq(address="127.0.0.9", protocol_port=8080, subnet_id=c.subnet["local"])
                ),
            )
        ),
        400,
        "ELB.8902",
        "already uses",
    )

    def persist(cookie):
        return c.c2.update_pool(
            v2.UpdatePoolRequest(
                pool_id=pool.id,
                body=v2.UpdatePoolRequestBody(
                    pool=v2.UpdatePoolReq(session_persistence=v2.SessionPersistence(type="APP_COOKIE", cookie_name=cookie))
                ),
            )
        ).pool

    # Shared load balancers: cookie names of letters, digits, '-' and '_' up to 64.
    expect_error(lambda: persist("app.session"), 400, "ELB.8902", "cookie_name")
    expect_error(lambda: persist("c" * 65), 400, "ELB.8902", "cookie_name")
    check(persist("app-session").session_persistence.cookie_name == "app-session", "shared cookie name")
    c.c2.delete_member(v2.DeleteMemberRequest(pool_id=pool.id, member_id=m.id))
    c.c2.delete_pool(v2.DeletePoolRequest(pool_id=pool.id))
    c.c2.delete_loadbalancer(v2.DeleteLoadbalancerRequest(loadbalancer_id=lb.id))
    expect_error(lambda: c.c2.show_loadbalancer(v2.ShowLoadbalancerRequest(loadbalancer_id=lb.id)), 404)


@steps.step
def v2_l7policy_routes_a_path_to_a_second_pool(c):
    """An l7policy with a PATH rule sends /api to a second pool; everything else reaches the
    listener's default pool. Torn down in Huawei's documented order."""
    lb = c.c2.create_loadbalancer(
        v2.CreateLoadbalancerRequest(
            body=v2.CreateLoadbalancerRequestBody(
                loadbalancer=v2.CreateLoadbalancerReq(vip_subnet_id=c.subnet["local"], name="l7-lb")
            )
        )
    ).loadbalancer
    port = free_port()
    listener = c.c2.create_listener(
        v2.CreateListenerRequest(
            body=v2.CreateListenerRequestBody(
                listener=v2.CreateListenerReq(
                    loadbalancer_id=lb.id, protocol="HTTP", protocol_port=port, name="l7-listener"
                )
            )
        )
    ).listener
    web = c.c2.create_pool(
        v2.CreatePoolRequest(
            body=v2.CreatePoolRequestBody(
                pool=v2.CreatePoolReq(protocol="HTTP", lb_algorithm="ROUND_ROBIN", listener_id=listener.id, name="web")
            )
        )
    ).pool
    api = c.c2.create_pool(
        v2.CreatePoolRequest(
            body=v2.CreatePoolRequestBody(
                pool=v2.CreatePoolReq(protocol="HTTP", lb_algorithm="ROUND_ROBIN", loadbalancer_id=lb.id, name="api")
            )
        )
    ).pool
    c.backends["web"] = Backend("web")
    c.backends["api"] = Backend("api")
    members = {}
    for pool, name in ((web, "web"), (api, "api")):
        members[name] = c.c2.create_member(
            v2.CreateMemberRequest(
                pool_id=pool.id,
                body=v2.CreateMemberRequestBody(
                    member=v2.CreateMemberReq(
                        address="127.0.0.1", protocol_port=c.backends[name].port, subnet_id=c.subnet["local"]
                    )
                ),
            )
        ).member
    base = f"http://{lb.vip_address}:{port}"

    def hit(path, host=None):
        status, body, _ = get(base + path, {"Host": host} if host else None)
        return body if status == 200 else f"status:{status}"

    wait_until(lambda: hit("/") == "web", what="the default pool to serve")

    # Only REDIRECT_TO_POOL is served; REGEX rules are refused by name; nothing is made.
    def policy_req(**kw):
        return v2.CreateL7policyRequest(body=v2.CreateL7policyRequestBody(l7policy=v2.CreateL7policyReq(**kw)))

    expect_error(
        lambda: c.c2.create_l7policy(
            policy_req(action="REDIRECT_TO_URL", listener_id=listener.id, redirect_url="http://x.test/")
        ),
        400,
        "ELB.8902",
        "REDIRECT_TO_POOL",
    )
    expect_error(
        lambda: c.c2.create_l7policy(
            policy_req(
                action="REDIRECT_TO_POOL",
                listener_id=listener.id,
                redirect_pool_id=api.id,
                rules=[v2.CreateL7ruleReqInPolicy(type="PATH", compare_type="REGEX", value="^/api.*")],
            )
        ),
        400,
        "ELB.8902",
        "REGEX",
    )
    expect_error(
        lambda: c.c2.create_l7policy(
            policy_req(action="REDIRECT_TO_POOL", listener_id=listener.id, redirect_pool_id="no-such-pool")
        ),
        404,
        "ELB.8904",
    )
    listed = c.c2.list_l7policies(v2.ListL7policiesRequest(listener_id=listener.id)).l7policies
    check(listed == [], f"refused policies left nothing: {listed}")

    # A policy with no rules yet matches nothing.
    policy = c.c2.create_l7policy(
        policy_req(action="REDIRECT_TO_POOL", listener_id=listener.id, redirect_pool_id=api.id, name="to-api")
    ).l7policy
    check(
        policy.redirect_pool_id == api.id and policy.listener_id == listener.id and policy.position == 1,
        str(policy),
    )
    check(policy.rules == [] and policy.action == "REDIRECT_TO_POOL", str(policy))
    check(policy.provisioning_status in ("ACTIVE", "PENDING_CREATE", "PENDING_UPDATE"), str(policy))
    rule = c.c2.create_l7rule(
        v2.CreateL7ruleRequest(
            l7policy_id=policy.id,
            body=v2.CreateL7ruleRequestBody(rule=v2.CreateL7ruleReq(type="PATH", compare_type="STARTS_WITH", value="/api")),
        )
    ).rule
    check(rule.type == "PATH" and rule.compare_type == "STARTS_WITH" and rule.value == "/api", str(rule))
    wait_until(
        lambda: c.c2.show_l7policy(v2.ShowL7policyRequest(l7policy_id=policy.id)).l7policy.provisioning_status
        == "ACTIVE",
        what="the l7policy ACTIVE",
    )
    shown = c.c2.show_l7policy(v2.ShowL7policyRequest(l7policy_id=policy.id)).l7policy
    check([r.id for r in shown.rules] == [rule.id], f"the policy lists its rule: {shown.rules}")
    rules = c.c2.list_l7rules(v2.ListL7rulesRequest(l7policy_id=policy.id)).rules
    check([(r.id, r.value) for r in rules] == [(rule.id, "/api")], str(rules))

    # Traffic: under /api to the api pool's member, the rest to the default pool.
    wait_until(lambda: hit("/api/users") == "api", what="/api routed to the api pool")
    for path, want in (("/api", "api"), ("/api/v1/x?q=1", "api"), ("/", "web"), ("/web/api", "web")):
        got = hit(path)
        check(got == want, f"{path}: expected {want}, got {got}")
    check(c.backends["api"].last_path == "/api/v1/x?q=1", f"the path reaches the member: {c.backends['api'].last_path}")

    # A second PATH rule is a conflict; the rule changes in place instead (EQUAL_TO: exact).
    expect_error(
        lambda: c.c2.create_l7rule(
            v2.CreateL7ruleRequest(
                l7policy_id=policy.id,
                body=v2.CreateL7ruleRequestBody(rule=v2.CreateL7ruleReq(type="PATH", compare_type="EQUAL_TO", value="/x")),
            )
        ),
        409,
        "ELB.8905",
    )
    c.c2.update_l7rule(
        v2.UpdateL7ruleRequest(
            l7policy_id=policy.id,
            l7rule_id=rule.id,
            body=v2.UpdateL7ruleRequestBody(rule=v2.UpdateL7ruleReq(compare_type="EQUAL_TO", value="/api/exact")),
        )
    )
    wait_until(lambda: hit("/api/users") == "web", what="the EQUAL_TO rule in force")
    check(hit("/api/exact") == "api", "the exact path still reaches the api pool")

    # A HOST_NAME rule narrows the policy: both rules must match.
    host_rule = c.c2.create_l7rule(
        v2.CreateL7ruleRequest(
            l7policy_id=policy.id,
            body=v2.CreateL7ruleRequestBody(
                rule=v2.CreateL7ruleReq(type="HOST_NAME", compare_type="EQUAL_TO", value="api.example.test")
            ),
        )
    ).rule
    wait_until(lambda: hit("/api/exact") == "web", what="the host rule in force")
    check(hit("/api/exact", "api.example.test") == "api", "host and path match: the api pool")
    check(hit("/other", "api.example.test") == "web", "host without the path: the default pool")

    # Huawei's delete order: a pool used by a forwarding policy cannot go, nor a listener
    # with policies; the policy goes first (with its rules), then pools, then the listener.
    c.c2.delete_member(v2.DeleteMemberRequest(pool_id=api.id, member_id=members["api"].id))
    expect_error(lambda: c.c2.delete_pool(v2.DeletePoolRequest(pool_id=api.id)), 409, "ELB.8905", policy.id)
    expect_error(
        lambda: c.c2.delete_listener(v2.DeleteListenerRequest(listener_id=listener.id)), 409, "ELB.8905", "l7polic"
    )
    c.c2.delete_l7rule(v2.DeleteL7ruleRequest(l7policy_id=policy.id, l7rule_id=host_rule.id))
    c.c2.delete_l7policy(v2.DeleteL7policyRequest(l7policy_id=policy.id))
    expect_error(lambda: c.c2.show_l7policy(v2.ShowL7policyRequest(l7policy_id=policy.id)), 404, "ELB.8904")
    expect_error(lambda: c.c2.list_l7rules(v2.ListL7rulesRequest(l7policy_id=policy.id)), 404, "ELB.8904")
    c.c2.delete_pool(v2.DeletePoolRequest(pool_id=api.id))
    expect_error(lambda: c.c2.delete_listener(v2.DeleteListenerRequest(listener_id=listener.id)), 409, "ELB.8905")
    c.c2.delete_member(v2.DeleteMemberRequest(pool_id=web.id, member_id=members["web"].id))
    c.c2.delete_pool(v2.DeletePoolRequest(pool_id=web.id))
    c.c2.delete_listener(v2.DeleteListenerRequest(listener_id=listener.id))
    c.c2.delete_loadbalancer(v2.DeleteLoadbalancerRequest(loadbalancer_id=lb.id))
    expect_error(lambda: c.c2.show_loadbalancer(v2.ShowLoadbalancerRequest(loadbalancer_id=lb.id)), 404)


@steps.step
def v3_l7policy_with_inline_rules(c):
    """The v3 client's l7policies: rules given with the policy, replaced by an update; v3
    answers once the data plane serves the change."""
    lb = c.c3.create_load_balancer(
        m3.CreateLoadBalancerRequest(
            body=m3.CreateLoadBalancerRequestBody(
                loadbalancer=m3.CreateLoadBalancerOption(
                    name="l7-v3", vip_subnet_cidr_id=c.subnet["local"], availability_zone_list=["az-1"]
                )
            )
        )
    ).loadbalancer
    port = free_port()
    listener = c.c3.create_listener(
        m3.CreateListenerRequest(
            body=m3.CreateListenerRequestBody(
                listener=m3.CreateListenerOption(protocol="HTTP", protocol_port=port, loadbalancer_id=lb.id)
            )
        )
    ).listener
    pools = {}
    for name, where in (("web", {"listener_id": listener.id}), ("api", {"loadbalancer_id": lb.id})):
        pools[name] = c.c3.create_pool(
            m3.CreatePoolRequest(
                body=m3.CreatePoolRequestBody(
                    pool=m3.CreatePoolOption(name=name, protocol="HTTP", lb_algorithm="ROUND_ROBIN", **where)
                )
            )
        ).pool
        c.c3.create_member(
            m3.CreateMemberRequest(
                pool_id=pools[name].id,
                body=m3.CreateMemberRequestBody(
                    member=m3.CreateMemberOption(
                        address="127.0.0.1", protocol_port=c.backends[name].port, subnet_cidr_id=c.subnet["local"]
                    )
                ),
            )
        )
    base = f"http://{lb.vip_address}:{port}"

    def hit(path, host=None):
        status, body, _ = get(base + path, {"Host": host} if host else None)
        return body if status == 200 else f"status:{status}"

    def option(**kw):
        return m3.CreateL7PolicyRequest(body=m3.CreateL7PolicyRequestBody(l7policy=m3.CreateL7PolicyOption(**kw)))

    expect_error(
        lambda: c.c3.create_l7_policy(
            option(action="REDIRECT_TO_POOL", listener_id=listener.id, redirect_pool_id=pools["api"].id, priority=3)
        ),
        400,
        "ELB.8902",
        "priority",
    )
    resp = c.c3.create_l7_policy(
        option(
            action="REDIRECT_TO_POOL",
            listener_id=listener.id,
            redirect_pool_id=pools["api"].id,
            rules=[m3.CreateL7PolicyRuleOption(type="PATH", compare_type="STARTS_WITH", value="/api")],
        )
    )
    policy = resp.l7policy
    check(resp.request_id and len(policy.rules) == 1 and policy.redirect_pool_id == pools["api"].id, str(resp))
    # v3 answered once the change is served: traffic follows at once.
    check(hit("/api/v1") == "api" and hit("/") == "web", "routed as soon as v3 answers")
    rules = c.c3.list_l7_rules(m3.ListL7RulesRequest(l7policy_id=policy.id)).rules
    check([(r.type, r.compare_type, r.value) for r in rules] == [("PATH", "STARTS_WITH", "/api")], str(rules))
    c.c3.update_l7_policy(
        m3.UpdateL7PolicyRequest(
            l7policy_id=policy.id,
            body=m3.UpdateL7PolicyRequestBody(
                l7policy=m3.UpdateL7PolicyOption(
                    rules=[
                        m3.CreateRuleOption(type="HOST_NAME", compare_type="EQUAL_TO", value="v3.example.test"),
                        m3.CreateRuleOption(type="PATH", compare_type="EQUAL_TO", value="/api/only"),
                    ]
                )
            ),
        )
    )
    check(hit("/api/only") == "web", "the host rule must match too")
    check(hit("/api/only", "v3.example.test") == "api", "host and exact path: the api pool")
    check(hit("/api/other", "v3.example.test") == "web", "another path: the default pool")
    shown = c.c3.show_l7_policy(m3.ShowL7PolicyRequest(l7policy_id=policy.id)).l7policy
    check(len(shown.rules) == 2 and shown.provisioning_status == "ACTIVE", str(shown))
    c.c3.delete_l7_policy(m3.DeleteL7PolicyRequest(l7policy_id=policy.id))
    check(hit("/api/only", "v3.example.test") == "web", "the policy is gone")
    r = c.c3.delete_load_balancer_cascade(
        m3.DeleteLoadBalancerCascadeRequest(loadbalancer_id=lb.id, body=m3.DeleteLoadBalancerCascadeRequestBody(
            loadbalancer=m3.DeleteLoadBalancerCascadeOption(unbounded_pool=True)))
    )
    check(r.status_code < 300, str(r.status_code))


@steps.step
def authentication_failures_are_401(c):
    bad = client(v3, c.fulcrum.api_url, sk="not-the-secret")
    e = expect_error(lambda: bad.show_pool(m3.ShowPoolRequest(pool_id=c.pool_id)), 401, "APIGW.0301")
    check("signature" in e.error_msg, e.error_msg)
    # The SDK signs with an X-Sdk-Date it finds in the headers: an old one is refused.
    e = expect_error(
        lambda: batch(c, {"action": "add", "members": []}, {"X-Sdk-Date": "20200101T000000Z"}), 401, "APIGW.0301"
    )
    check("minutes" in e.error_msg, e.error_msg)
    skew = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() + 20 * 60))
    expect_error(lambda: batch(c, {"action": "add", "members": []}, {"X-Sdk-Date": skew}), 401, "APIGW.0301")
    # Another project than the credential's.
    other = (
        v3.ElbClient.new_builder()
        .with_credentials(BasicCredentials(AK, SK, "ffffffffffffffffffffffffffffffff"))
        .with_endpoints([c.fulcrum.api_url])
        .build()
    )
    expect_error(lambda: other.show_pool(m3.ShowPoolRequest(pool_id=c.pool_id)), 401)

    def raw(headers):
        req = urllib.request.Request(
            f"{c.fulcrum.api_url}/v3/{PROJECT}/elb/pools/{c.pool_id}", headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    status, body = raw({"X-Auth-Token": TOKEN})
    check(status == 200 and c.pool_id in body and "request_id" in body, f"X-Auth-Token works: {status}")
    status, body = raw({"X-Auth-Token": "wrong"})
    check(status == 401 and "APIGW.0301" in body, f"{status} {body}")
    status, body = raw({"Authorization": "Bearer sdk-test-token"})
    check(status == 401, f"native bearer tokens are not valid here: {status} {body}")
    status, body = raw({})
    check(status == 401, f"no credentials: {status}")


@steps.step
def a_credential_of_another_project_sees_and_changes_nothing_here(c):
    o3 = client(v3, c.fulcrum.api_url, ak=OTHER_AK, sk=OTHER_SK, project=OTHER_PROJECT)
    o2 = client(v2, c.fulcrum.api_url, ak=OTHER_AK, sk=OTHER_SK, project=OTHER_PROJECT)
    before = snapshot(c)
    algorithm = show_pool(c).lb_algorithm
    check(o3.list_load_balancers(m3.ListLoadBalancersRequest()).loadbalancers == [], "listed")
    check(o3.list_pools(m3.ListPoolsRequest()).pools == [], "pools listed")
    check(o2.list_pools(v2.ListPoolsRequest()).pools == [], "v2 pools listed")
    for what, call in [
        ("show load balancer", lambda: o3.show_load_balancer(
            m3.ShowLoadBalancerRequest(loadbalancer_id=c.lb_id))),
        ("show pool", lambda: o3.show_pool(m3.ShowPoolRequest(pool_id=c.pool_id))),
        ("list members", lambda: o3.list_members(m3.ListMembersRequest(pool_id=c.pool_id))),
        ("seed 002", lambda: o3.update_pool(m3.UpdatePoolRequest(
            pool_id=c.pool_id,
            body=m3.UpdatePoolRequestBody(pool=m3.UpdatePoolOption(lb_algorithm="SOURCE_IP"))))),
        ("seed 001", lambda: o2.call_api(
            resource_path="/v2.0/lbaas/pools/{pool_id}/members", method="PUT",
            path_params={"pool_id": c.pool_id},
            header_params={"Content-Type": "application/json"},
            body={"action": "replace", "members": []}, response_type="ListMembersResponse")),
        ("delete load balancer", lambda: o3.delete_load_balancer(
            m3.DeleteLoadBalancerRequest(loadbalancer_id=c.lb_id))),
    ]:
        e = expect_error(call, 404, "ELB.8904")
        check("not found" in e.error_msg, f"{what}: {e.error_msg}")
    check(snapshot(c) == before, "the other project changed the members")
    check(show_pool(c).lb_algorithm == algorithm, "the other project changed the pool")


@steps.step
def a_pool_created_for_a_listener_becomes_its_default(c):
    port = free_port()
    listener = c.c3.create_listener(
        m3.CreateListenerRequest(
            body=m3.CreateListenerRequestBody(
                listener=m3.CreateListenerOption(
                    name="no-pool-yet", protocol="HTTP", protocol_port=port, loadbalancer_id=c.lb_id,
                )
            )
        )
    ).listener
    check(not listener.default_pool_id, str(listener))
    pool = c.c3.create_pool(
        m3.CreatePoolRequest(
            body=m3.CreatePoolRequestBody(
                pool=m3.CreatePoolOption(
                    name="for-listener", protocol="HTTP", lb_algorithm="ROUND_ROBIN", listener_id=listener.id
                )
            )
        )
    ).pool
    check([lb.id for lb in pool.loadbalancers] == [c.lb_id], f"on the listener's load balancer: {pool}")
    check([l.id for l in pool.listeners] == [listener.id], f"the listener's pool: {pool.listeners}")
    shown = c.c3.show_listener(m3.ShowListenerRequest(listener_id=listener.id)).listener
    check(shown.default_pool_id == pool.id, f"the listener's default pool now: {shown.default_pool_id}")
    # A listener has one default pool: a second one for it is a conflict, and nothing is made.
    before = len(c.c3.list_pools(m3.ListPoolsRequest()).pools)
    e = expect_error(
        lambda: c.c3.create_pool(
            m3.CreatePoolRequest(
                body=m3.CreatePoolRequestBody(
                    pool=m3.CreatePoolOption(
                        name="second", protocol="HTTP", lb_algorithm="ROUND_ROBIN", listener_id=listener.id
                    )
                )
            )
        ),
        409,
    )
    check(len(c.c3.list_pools(m3.ListPoolsRequest()).pools) == before, f"no pool made: {e}")
    # Huawei's delete order: not the listener while a pool is bound to it; the pool goes
    # first, unbinding itself, then the listener.
    expect_error(lambda: c.c3.delete_listener(m3.DeleteListenerRequest(listener_id=listener.id)), 409)
    c.c3.delete_pool(m3.DeletePoolRequest(pool_id=pool.id))
    shown = c.c3.show_listener(m3.ShowListenerRequest(listener_id=listener.id)).listener
    check(not shown.default_pool_id, f"the deleted pool is unbound: {shown.default_pool_id}")
    c.c3.delete_listener(m3.DeleteListenerRequest(listener_id=listener.id))


@steps.step
def a_listener_that_cannot_bind_turns_the_load_balancer_error(c):
    held = taken_port()
    port = held.getsockname()[1]
    listener = c.c3.create_listener(
        m3.CreateListenerRequest(
            body=m3.CreateListenerRequestBody(
                listener=m3.CreateListenerOption(
                    name="taken", protocol="HTTP", protocol_port=port, loadbalancer_id=c.lb_id,
                )
            )
        )
    ).listener

    def lb_status():
        return c.c3.show_load_balancer(
            m3.ShowLoadBalancerRequest(loadbalancer_id=c.lb_id)
        ).loadbalancer.provisioning_status

    wait_until(lambda: lb_status() == "ERROR", what="provisioning_status ERROR")
    # The port frees: the listener binds by itself and the load balancer is ACTIVE again.
    held.close()
    wait_port(port)
    wait_until(lambda: lb_status() == "ACTIVE", what="provisioning_status ACTIVE again")
    c.c3.delete_listener(m3.DeleteListenerRequest(listener_id=listener.id))
    wait_until(lambda: lb_status() == "ACTIVE", what="the listener deleted")


def create_certificate(c, client=None, **fields):
    client = client or c.c3
    return client.create_certificate(
        m3.CreateCertificateRequest(
            body=m3.CreateCertificateRequestBody(certificate=m3.CreateCertificateOption(**fields))
        )
    ).certificate


@steps.step
def https_listener_with_default_and_sni_certificates(c):
    ca = c.ca = TestCA()
    www_pem, www_key = ca.issue(["www.example.test"])
    api_pem, api_key = ca.issue(["api.example.test", "*.apps.example.test"])
    default = create_certificate(c, name="www", certificate=www_pem, private_key=www_key, type="server")
    check(default.type == "server" and default.name == "www", str(default))
    check(default.private_key == "***", "the private key is never read back")
    check(default.certificate == www_pem and default.project_id == PROJECT, str(default))
    check(TIME_RE.match(default.expire_time), f"expire_time format: {default.expire_time}")
    expires = calendar.timegm(time.strptime(default.expire_time, "%Y-%m-%dT%H:%M:%SZ"))
    check(abs(expires - (time.time() + 2 * 86400)) < 3600, f"expire_time read from the PEM: {default.expire_time}")
    check(default.subject_alternative_names == ["www.example.test"], str(default.subject_alternative_names))
    sni = create_certificate(
        c, name="api", certificate=api_pem, private_key=api_key, domain="api.example.test,*.apps.example.test"
    )
    check(sni.domain == "api.example.test,*.apps.example.test", sni.domain)
    with open(ca.cert) as f:
        ca_cert = create_certificate(c, name="ca", certificate=f.read(), type="client")
    check(ca_cert.type == "client" and ca_cert.private_key == "", str(ca_cert))
    # Bad certificates are refused, naming Huawei's fields; nothing is made.
    before = len(c.c3.list_certificates(m3.ListCertificatesRequest()).certificates)
    expect_error(lambda: create_certificate(c, certificate=www_pem, private_key=api_key), 400, "ELB.8902",
                 "private_key")
    expect_error(lambda: create_certificate(c, certificate="-----BEGIN CERTIFICATE-----\nAAAA\n"
                                            "-----END CERTIFICATE-----\n", private_key=www_key),
                 400, "ELB.8902", "certificate")
    expect_error(lambda: create_certificate(c, certificate=www_pem, type="server"), 400, "ELB.8902", "private_key")
    expect_error(lambda: create_certificate(c, certificate=www_pem, private_key=www_key, type="server_sm"),
                 400, "ELB.8902", "type")
    listed = c.c3.list_certificates(m3.ListCertificatesRequest()).certificates
    check(len(listed) == before, "no certificate made by a refused call")
    check({x.id for x in listed} >= {default.id, sni.id, ca_cert.id}, str([x.id for x in listed]))
    by_name = c.c3.list_certificates(m3.ListCertificatesRequest(name=["api"])).certificates
    check([x.id for x in by_name] == [sni.id], str(by_name))
    shown = c.c3.show_certificate(m3.ShowCertificateRequest(certificate_id=sni.id)).certificate
    check(shown.id == sni.id and shown.certificate == api_pem, str(shown))
    v2_listed = c.c2.list_certificates(v2.ListCertificatesRequest()).certificates
    check(sni.id in [x.id for x in v2_listed], "v2 lists them too")
    # Another project's credential sees none of them.
    o3 = client(v3, c.fulcrum.api_url, ak=OTHER_AK, sk=OTHER_SK, project=OTHER_PROJECT)
    expect_error(lambda: o3.show_certificate(m3.ShowCertificateRequest(certificate_id=sni.id)), 404, "ELB.8904")
    check(o3.list_certificates(m3.ListCertificatesRequest()).certificates == [], "another project lists none")

    # An HTTPS listener terminating TLS with both, its pool created for it, one member.
    port = free_port()
    ca_only = lambda: c.c3.create_listener(m3.CreateListenerRequest(body=m3.CreateListenerRequestBody(
        listener=m3.CreateListenerOption(name="bad", protocol="HTTPS", protocol_port=port,
                                         loadbalancer_id=c.lb_id, default_tls_container_ref=ca_cert.id))))
    expect_error(ca_only, 400, "ELB.8902", "default_tls_container_ref")
    no_cert = lambda: c.c3.create_listener(m3.CreateListenerRequest(body=m3.CreateListenerRequestBody(
        listener=m3.CreateListenerOption(name="bad", protocol="HTTPS", protocol_port=port,
                                         loadbalancer_id=c.lb_id))))
    expect_error(no_cert, 400, "ELB.8902", "default_tls_container_ref")
    listener = c.c3.create_listener(m3.CreateListenerRequest(body=m3.CreateListenerRequestBody(
        listener=m3.CreateListenerOption(name="https", protocol="HTTPS", protocol_port=port,
                                         loadbalancer_id=c.lb_id, default_tls_container_ref=default.id,
                                         sni_container_refs=[sni.id])))).listener
    check(listener.protocol == "HTTPS" and listener.default_tls_container_ref == default.id, str(listener))
    check(listener.sni_container_refs == [sni.id], str(listener.sni_container_refs))
    pool = c.c3.create_pool(m3.CreatePoolRequest(body=m3.CreatePoolRequestBody(pool=m3.CreatePoolOption(
        name="https-pool", protocol="HTTP", lb_algorithm="ROUND_ROBIN", listener_id=listener.id)))).pool
    b2 = c.backends["b2"]
    member = c.c3.create_member(m3.CreateMemberRequest(pool_id=pool.id, body=m3.CreateMemberRequestBody(
        member=m3.CreateMemberOption(address="127.0.0.1", protocol_port=b2.port,
                                     subnet_cidr_id=c.subnet["local"])))).member
    wait_port(port)

    def served(name, verify=True):
        cert, status, body = ca.request(port, name, verify_name=verify)
        names = [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]
        return names, cert.get("serialNumber"), status, body

    names, _, status, body = served("www.example.test")
    check(names == ["www.example.test"] and (status, body) == (200, "b2"), f"default: {names} {status} {body}")
    names, _, status, body = served("api.example.test")
    check(names == ["api.example.test", "*.apps.example.test"] and body == "b2", f"SNI: {names} {body}")
    names, _, _, body = served("x.apps.example.test")
    check("*.apps.example.test" in names and body == "b2", f"SNI wildcard: {names}")
    names, _, _, _ = served("unknown.test", verify=False)
    check(names == ["www.example.test"], f"an unknown name gets the default certificate: {names}")

    # Replacing the default certificate re-keys the listener, with no listener change.
    _, old_serial, _, _ = served("www.example.test")
    new_pem, new_key = ca.issue(["www.example.test"])
    updated = c.c3.update_certificate(m3.UpdateCertificateRequest(
        certificate_id=default.id, body=m3.UpdateCertificateRequestBody(
            certificate=m3.UpdateCertificateOption(certificate=new_pem, private_key=new_key, name="www2")))
    ).certificate
    check(updated.name == "www2" and updated.certificate == new_pem, str(updated))
    wait_until(lambda: served("www.example.test")[1] != old_serial, what="the new certificate served")
    expect_error(lambda: c.c3.update_certificate(m3.UpdateCertificateRequest(
        certificate_id=default.id, body=m3.UpdateCertificateRequestBody(
            certificate=m3.UpdateCertificateOption(private_key=api_key)))), 400, "ELB.8902", "private_key")

    # In use: not deleted. The SNI list changes through update_listener.
    e = expect_error(lambda: c.c3.delete_certificate(m3.DeleteCertificateRequest(certificate_id=sni.id)), 409,
                     "ELB.8905")
    check("in use" in e.error_msg, e.error_msg)
    shown = c.c3.update_listener(m3.UpdateListenerRequest(listener_id=listener.id, body=m3.UpdateListenerRequestBody(
        listener=m3.UpdateListenerOption(sni_container_refs=[])))).listener
    check(shown.sni_container_refs == [], str(shown.sni_container_refs))
    wait_until(lambda: served("api.example.test", verify=False)[0] == ["www.example.test"],
               what="the SNI certificate no longer served")
    c.c3.delete_certificate(m3.DeleteCertificateRequest(certificate_id=sni.id))
    expect_error(lambda: c.c3.show_certificate(m3.ShowCertificateRequest(certificate_id=sni.id)), 404, "ELB.8904")
    # Huawei's order: the member, the pool, the listener, then its certificate.
    expect_error(lambda: c.c3.delete_certificate(m3.DeleteCertificateRequest(certificate_id=default.id)), 409)
    c.c3.delete_member(m3.DeleteMemberRequest(pool_id=pool.id, member_id=member.id))
    c.c3.delete_pool(m3.DeletePoolRequest(pool_id=pool.id))
    c.c3.delete_listener(m3.DeleteListenerRequest(listener_id=listener.id))
    for cert in (default, ca_cert):
        c.c3.delete_certificate(m3.DeleteCertificateRequest(certificate_id=cert.id))
    left = {x.id for x in c.c3.list_certificates(m3.ListCertificatesRequest()).certificates}
    check(not left & {default.id, sni.id, ca_cert.id}, f"certificates left: {left}")
    ca.cleanup()


@steps.step
def vpc_subnet_load_balancer_traffic_and_teardown(c):
    # A Huawei user's whole path with Huawei's own SDKs and credentials: a VPC and
    # subnets (VPC client), a load balancer on a subnet given an address from it, a
    # listener on that address, traffic, then everything deleted in the order a user would.
    vpc_client = builder(VpcClient, c.fulcrum.api_url)
    vpc = vpc_client.create_vpc(
        vm.CreateVpcRequest(body=vm.CreateVpcRequestBody(vpc=vm.CreateVpcOption(name="vpc-sdk", cidr="127.0.0.0/8")))
    ).vpc
    check(vpc.status == "OK" and vpc.cidr == "127.0.0.0/8", str(vpc))

    def subnet(name, cidr, gateway):
        return vpc_client.create_subnet(
            vm.CreateSubnetRequest(
                body=vm.CreateSubnetRequestBody(
                    subnet=vm.CreateSubnetOption(name=name, cidr=cidr, gateway_ip=gateway, vpc_id=vpc.id)
                )
            )
        ).subnet

    front = subnet("front", "127.77.0.0/24", "127.77.0.1")
    check(front.status == "ACTIVE" and front.vpc_id == vpc.id and front.gateway_ip == "127.77.0.1", str(front))
    check(front.neutron_subnet_id == front.id, f"one id for the subnet: {front}")
    backs = subnet("backends", "127.0.0.0/24", "127.0.0.254")
    listed = vpc_client.list_subnets(vm.ListSubnetsRequest(vpc_id=vpc.id)).subnets
    check(sorted(s.name for s in listed) == ["backends", "front"], str(listed))
    shown = vpc_client.show_subnet(vm.ShowSubnetRequest(subnet_id=front.id)).subnet
    check(shown.cidr == "127.77.0.0/24", str(shown))
    renamed = vpc_client.update_subnet(
        vm.UpdateSubnetRequest(
            vpc_id=vpc.id,
            subnet_id=front.id,
            body=vm.UpdateSubnetRequestBody(subnet=vm.UpdateSubnetOption(name="front-1")),
        )
    ).subnet
    check(renamed.id == front.id and renamed.status == "ACTIVE", str(renamed))
    check(vpc_client.show_vpc(vm.ShowVpcRequest(vpc_id=vpc.id)).vpc.name == "vpc-sdk", "show_vpc")
    check(vpc.id in [v.id for v in vpc_client.list_vpcs(vm.ListVpcsRequest()).vpcs], "list_vpcs")
    # Errors in the VPC API's own shape, which the SDK reads.
    expect_error(lambda: subnet("outside", "10.0.0.0/24", "10.0.0.1"), 400, "VPC.0201", "not within")
    expect_error(lambda: subnet("overlap", "127.77.0.0/16", "127.77.0.1"), 409, "VPC.0210", "overlaps")
    expect_error(lambda: vpc_client.delete_vpc(vm.DeleteVpcRequest(vpc_id=vpc.id)), 409, "VPC.0110")
    expect_error(lambda: vpc_client.show_subnet(vm.ShowSubnetRequest(subnet_id="nope")), 404, "VPC.0202")

    # ELB v3 on the subnet, naming it by neutron_subnet_id as Huawei's API wants, with no
    # address: it is given the subnet's first free one (not its network or gateway).
    lb = c.c3.create_load_balancer(
        m3.CreateLoadBalancerRequest(
            body=m3.CreateLoadBalancerRequestBody(
                loadbalancer=m3.CreateLoadBalancerOption(name="on-subnet", vip_subnet_cidr_id=front.neutron_subnet_id)
            )
        )
    ).loadbalancer
    check(lb.vip_address == "127.77.0.2", f"an address from the subnet: {lb.vip_address}")
    check(lb.vpc_id == vpc.id and lb.vip_subnet_cidr_id == front.neutron_subnet_id, str(lb))
    pool = c.c3.create_pool(
        m3.CreatePoolRequest(
            body=m3.CreatePoolRequestBody(
                pool=m3.CreatePoolOption(name="p", protocol="HTTP", lb_algorithm="ROUND_ROBIN", loadbalancer_id=lb.id)
            )
        )
    ).pool
    b1 = c.backends["b1"]
    member_ = c.c3.create_member(
        m3.CreateMemberRequest(
            pool_id=pool.id,
            body=m3.CreateMemberRequestBody(
                member=m3.CreateMemberOption(
                    address="127.0.0.1", protocol_port=b1.port, subnet_cidr_id=backs.neutron_subnet_id
                )
            ),
        )
    ).member
    port = free_port()
    listener = c.c3.create_listener(
        m3.CreateListenerRequest(
            body=m3.CreateListenerRequestBody(
                listener=m3.CreateListenerOption(
                    name="on-vip", protocol="HTTP", protocol_port=port, loadbalancer_id=lb.id, default_pool_id=pool.id
                )
            )
        )
    ).listener
    url = f"http://{lb.vip_address}:{port}/"
    wait_until(lambda: served(url), what=f"traffic through {url}")
    counts = spread(url, 6)
    check(counts == {"b1": 6}, f"served by the member: {counts}")
    check(not served(f"http://127.0.0.1:{port}/"), "the listener binds the load balancer's address only")

    # Teardown as a user does it: the member, the pool (which unbinds it from the
    # listener), the listener, the load balancer, then the subnets and the VPC.
    c.c3.delete_member(m3.DeleteMemberRequest(pool_id=pool.id, member_id=member_.id))
    c.c3.delete_pool(m3.DeletePoolRequest(pool_id=pool.id))
    c.c3.delete_listener(m3.DeleteListenerRequest(listener_id=listener.id))
    c.c3.delete_load_balancer(m3.DeleteLoadBalancerRequest(loadbalancer_id=lb.id))
    wait_until(lambda: not served(url), what="the listener closed")
    for s in (front, backs):
        vpc_client.delete_subnet(vm.DeleteSubnetRequest(vpc_id=vpc.id, subnet_id=s.id))
    vpc_client.delete_vpc(vm.DeleteVpcRequest(vpc_id=vpc.id))
    expect_error(lambda: vpc_client.show_vpc(vm.ShowVpcRequest(vpc_id=vpc.id)), 404, "VPC.0003")


@steps.step
def huaweis_example_order_listener_then_pool_by_listener_id(c):
    # The order of Huawei's own ELB v3 examples: a load balancer with no address, a listener
    # with no pool, a pool created *for the listener* (listener_id, no loadbalancer_id),
    # members, a health monitor; traffic; then teardown in Huawei's order.
    lb = c.c3.create_load_balancer(
        m3.CreateLoadBalancerRequest(
            body=m3.CreateLoadBalancerRequestBody(
                loadbalancer=m3.CreateLoadBalancerOption(
                    name="example", vip_subnet_cidr_id=c.subnet["local"], availability_zone_list=["az-1"]
                )
            )
        )
    ).loadbalancer
    check(lb.vip_address and lb.vip_address != "0.0.0.0", f"an address of its own: {lb.vip_address}")
    port = free_port()
    listener = c.c3.create_listener(
        m3.CreateListenerRequest(
            body=m3.CreateListenerRequestBody(
                listener=m3.CreateListenerOption(name="example-http", protocol="HTTP", protocol_port=port,
                                                 loadbalancer_id=lb.id)
            )
        )
    ).listener
    pool = c.c3.create_pool(
        m3.CreatePoolRequest(
            body=m3.CreatePoolRequestBody(
                pool=m3.CreatePoolOption(name="example-pool", protocol="HTTP", lb_algorithm="ROUND_ROBIN",
                                         listener_id=listener.id)
            )
        )
    ).pool
    check([l.id for l in pool.loadbalancers] == [lb.id], f"the pool is on the listener's load balancer: {pool}")
    created = []
    for name in ("b1", "b2"):
        created.append(
            c.c3.create_member(
                m3.CreateMemberRequest(
                    pool_id=pool.id,
                    body=m3.CreateMemberRequestBody(
                        member=m3.CreateMemberOption(address="127.0.0.1", protocol_port=c.backends[name].port,
                                                     subnet_cidr_id=c.subnet["local"])
                    ),
                )
            ).member
        )
    hm = c.c3.create_health_monitor(
        m3.CreateHealthMonitorRequest(
            body=m3.CreateHealthMonitorRequestBody(
                healthmonitor=m3.CreateHealthMonitorOption(pool_id=pool.id, type="HTTP", delay=1, timeout=1,
                                                           max_retries=2, url_path="/")
            )
        )
    ).healthmonitor
    url = f"http://{lb.vip_address}:{port}/"
    wait_until(lambda: served(url), what=f"traffic through {url}")
    counts = spread(url, 8)
    check(counts == {"b1": 4, "b2": 4}, f"round robin over the listener's pool: {counts}")

    c.c3.delete_health_monitor(m3.DeleteHealthMonitorRequest(healthmonitor_id=hm.id))
    for m in created:
        c.c3.delete_member(m3.DeleteMemberRequest(pool_id=pool.id, member_id=m.id))
    c.c3.delete_pool(m3.DeletePoolRequest(pool_id=pool.id))
    c.c3.delete_listener(m3.DeleteListenerRequest(listener_id=listener.id))
    c.c3.delete_load_balancer(m3.DeleteLoadBalancerRequest(loadbalancer_id=lb.id))
    wait_until(lambda: not served(url), what="the listener closed")
    expect_error(lambda: c.c3.show_load_balancer(m3.ShowLoadBalancerRequest(loadbalancer_id=lb.id)), 404)


def served(url):
    """True if `url` answers at all (any HTTP status)."""
    try:
        get(url, timeout=1)
        return True
    except OSError:
        return False


@steps.step
def udp_listener_udp_pool_then_quic_cid_pool_with_traffic(c):
    """A v3 UDP listener and UDP pool, then a QUIC pool with QUIC_CID (created so, and
    changed and switched back with update_pool, seed 002) behind the same listener, with
    real datagrams through fulcrum to UDP members that answer with their names."""
    c.udp_backends = {name: UdpBackend(name) for name in ("u1", "u2", "u3")}
    s = c.subnet["local"]

    def new_pool(name, protocol, algorithm, **extra):
        return c.c3.create_pool(
            m3.CreatePoolRequest(
                body=m3.CreatePoolRequestBody(
                    pool=m3.CreatePoolOption(
                        name=name, protocol=protocol, lb_algorithm=algorithm, loadbalancer_id=c.lb_id, **extra
                    )
                )
            )
        ).pool

    def add_members(pool_id, names):
        for name in names:
            m = c.c3.create_member(
                m3.CreateMemberRequest(
                    pool_id=pool_id,
                    body=m3.CreateMemberRequestBody(
                        member=m3.CreateMemberOption(
                            address="127.0.0.1", protocol_port=c.udp_backends[name].port, subnet_cidr_id=s, name=name
                        )
                    ),
                )
            ).member
            check(m.protocol_port == c.udp_backends[name].port, str(m))

    udp = new_pool("udp-1", "UDP", "ROUND_ROBIN")
    check(udp.protocol == "UDP" and udp.lb_algorithm == "ROUND_ROBIN", str(udp))
    add_members(udp.id, ("u1", "u2"))
    port = free_udp_port()
    listener = c.c3.create_listener(
        m3.CreateListenerRequest(
            body=m3.CreateListenerRequestBody(
                listener=m3.CreateListenerOption(
                    name="udp-1", protocol="UDP", protocol_port=port, loadbalancer_id=c.lb_id, default_pool_id=udp.id
                )
            )
        )
    ).listener
    check(listener.protocol == "UDP" and listener.default_pool_id == udp.id, str(listener))
    got = c.c3.show_listener(m3.ShowListenerRequest(listener_id=listener.id)).listener
    check(got.protocol == "UDP" and got.protocol_port == port, str(got))
    wait_until(lambda: udp_ask(port, timeout=0.3), what="the UDP listener answering")

    # Each new socket is a new flow: round robin spreads flows over both members, and
    # every datagram of one flow goes to its member.
    names = [udp_ask(port, f"flow {i}".encode()) for i in range(20)]
    check(None not in names, f"every datagram through the UDP listener is answered: {names}")
    check(set(names) == {"u1", "u2"}, f"round robin spreads flows over both members: {names}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flow:
        flow.bind(("127.0.0.1", 0))
        answers = [udp_ask(port, f"datagram {i}".encode(), sock=flow) for i in range(10)]
    check(len(set(answers)) == 1 and answers[0] in ("u1", "u2"), f"one flow, one member: {answers}")
    # A datagram far larger than the one-line answers still goes through whole.
    check(udp_ask(port, bytes(8000)) in ("u1", "u2"), "an 8000-byte datagram is relayed")

    # A QUIC pool with QUIC_CID needs SOURCE_IP persistence (seed 002's rule).
    quic = new_pool(
        "quic-cid",
        "QUIC",
        "QUIC_CID",
        session_persistence=m3.CreatePoolSessionPersistenceOption(type="SOURCE_IP", persistence_timeout=1),
    )
    check(quic.protocol == "QUIC" and quic.lb_algorithm == "QUIC_CID", str(quic))
    check(quic.session_persistence.type == "SOURCE_IP", str(quic.session_persistence))
    add_members(quic.id, ("u1", "u2", "u3"))
    c.c3.update_listener(
        m3.UpdateListenerRequest(
            listener_id=listener.id,
            body=m3.UpdateListenerRequestBody(listener=m3.UpdateListenerOption(default_pool_id=quic.id)),
        )
    )

    # Source ports never used before in this run (below Linux's ephemeral range), so no
    # datagram falls into a flow an earlier one left behind (flows live for the listener's
    # keepalive_timeout): every Initial comes from a new address, as after a NAT rebinding.
    unused_ports = iter(range(20000 + os.getpid() % 4000, 32768))

    def fresh_socket():
        while True:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind(("127.0.0.1", next(unused_ports)))
                return sock
            except OSError:
                sock.close()

    def initial_lands(dcid):
        with fresh_socket() as sock:
            return udp_ask(port, quic_initial(dcid), sock=sock)

    def dcids(n):
        return [bytes([i, 0xC1, 0xD0, 7, 6, 5, 4, i]) for i in range(n)]

    # The listener now serves the QUIC pool: Initials (client-chosen DCIDs) are hashed by
    # DCID, so different connections spread while one DCID keeps its member across ports.
    # Where a DCID lands depends on the members' places on the hash ring, new each run:
    # 12 DCIDs miss u3 (a third of the ring) in about 1 run in 130, 64 in 1 in 10^11.
    wait_until(
        lambda: "u3" in {initial_lands(d) for d in dcids(64)},
        what="the listener serving the QUIC_CID pool (u3 is only in it)",
    )

    def each_dcid_sticks(tag):
        placed = {}
        for dcid in dcids(12):
            seen = [initial_lands(dcid) for _ in range(6)]
            check(None not in seen, f"{tag}: every Initial is answered: {seen}")
            check(len(set(seen)) == 1, f"{tag}: DCID {dcid.hex()} keeps its member across source ports: {seen}")
            placed[dcid] = seen[0]
        check(len(set(placed.values())) >= 2, f"{tag}: connections spread over members: {placed}")
        return placed

    def settled(tag):
        # Each worker (each SO_REUSEPORT socket, picked by source port) takes a change on its
        # own: wait until all of them serve it, then check once more.
        def attempt():
            try:
                return each_dcid_sticks(tag)
            except AssertionError:
                return None

        wait_until(attempt, what=f"{tag}: every worker serving the change")
        return each_dcid_sticks(tag)

    before = settled("QUIC_CID")

    # update_pool (seed 002): to SOURCE_IP, where every datagram from 127.0.0.1 lands on one
    # member whatever its DCID, then back to QUIC_CID, where the hash places DCIDs as before.
    p = update_pool(c, pool_id=quic.id, lb_algorithm="SOURCE_IP", description="by source")
    check(p.pool.lb_algorithm == "SOURCE_IP" and p.pool.protocol == "QUIC", str(p.pool))
    wait_until(
        lambda: len({initial_lands(d) for d in dcids(12) * 2}) == 1 and initial_lands(b"x" * 8),
        what="SOURCE_IP: every connection from 127.0.0.1 on one member",
    )
    p = update_pool(
        c,
        pool_id=quic.id,
        lb_algorithm="QUIC_CID",
        name="quic-cid-b",
        session_persistence=m3.UpdatePoolSessionPersistenceOption(type="SOURCE_IP", persistence_timeout=2),
    )
    check(p.pool.lb_algorithm == "QUIC_CID" and p.pool.name == "quic-cid-b", str(p.pool))
    check(p.pool.session_persistence.persistence_timeout == 2, str(p.pool.session_persistence))
    check(show_pool(c, quic.id).lb_algorithm == "QUIC_CID", "QUIC_CID reads back")
    wait_until(
        lambda: len({initial_lands(d) for d in dcids(12)} - {None}) > 1,
        what="QUIC_CID again: Initials spread by DCID",
    )
    after = settled("QUIC_CID after update_pool")
    check(after == before, f"the DCID hash places connections as before: {before} vs {after}")
    # A 1-RTT short-header packet carries no member's server ID (Huawei members have none):
    # from a flow that exists it stays on the flow's member.
    with fresh_socket() as flow:
        first = udp_ask(port, quic_initial(dcids(1)[0]), sock=flow)
        short = bytes([0x40]) + bytes(range(8)) + bytes(40)
        check(udp_ask(port, short, sock=flow) == first == before[dcids(1)[0]], "a short header follows its flow")

    # Tidy up: the listener keeps its default pool, so the pools go first (their members
    # before them), then the listener, which stops answering.
    expect_error(lambda: c.c3.delete_listener(m3.DeleteListenerRequest(listener_id=listener.id)), 409, "ELB.8905")
    for pool_id in (udp.id, quic.id):
        for m in c.c3.list_members(m3.ListMembersRequest(pool_id=pool_id)).members:
            c.c3.delete_member(m3.DeleteMemberRequest(pool_id=pool_id, member_id=m.id))
        c.c3.delete_pool(m3.DeletePoolRequest(pool_id=pool_id))
    c.c3.delete_listener(m3.DeleteListenerRequest(listener_id=listener.id))
    wait_until(lambda: udp_ask(port, timeout=0.2) is None, what="the UDP listener closed")


@steps.step
def v2_sdk_and_cleanup(c):
    lbs = c.c2.list_loadbalancers(v2.ListLoadbalancersRequest())
    check(any(lb.id == c.lb_id for lb in lbs.loadbalancers), "v2 lists the load balancer")
    m = c.c2.update_member(
        v2.UpdateMemberRequest(
            pool_id=c.pool_id,
            member_id=members(c)[c.backends["b2"].port].id,
            body=v2.UpdateMemberRequestBody(member=v2.UpdateMemberReq(weight=7)),
        )
    ).member
    check(m.weight == 7, str(m))
    # The LBaaS v2.0 paths (no project in the path: it comes from X-Project-Id).
    r = c.c2.call_api(
        resource_path="/v2.0/lbaas/pools/{pool_id}",
        method="GET",
        path_params={"pool_id": c.pool_id},
        header_params={"Content-Type": "application/json"},
        response_type="ShowPoolResponse",
    )
    check(r.pool.id == c.pool_id and r.pool.project_id == PROJECT, str(r.pool))
    r = c.c2.call_api(
        resource_path="/v2.0/lbaas/loadbalancers",
        method="GET",
        header_params={"Content-Type": "application/json"},
        response_type="ListLoadbalancersResponse",
    )
    check([lb.id for lb in r.loadbalancers] == [c.lb_id], str(r))
    e = expect_error(
        lambda: c.c2.call_api(
            resource_path="/v3/{project_id}/elb/no-such-thing",
            method="GET",
            header_params={"Content-Type": "application/json"},
            response_type="ShowPoolResponse",
        ),
        404,
        "ELB.8904",
    )
    expect_error(lambda: c.c3.delete_pool(m3.DeletePoolRequest(pool_id=c.pool_id)), 409)
    expect_error(
        lambda: c.c3.delete_load_balancer(m3.DeleteLoadBalancerRequest(loadbalancer_id=c.lb_id)), 409
    )
    expect_error(
        lambda: c.c3.create_health_monitor(
            m3.CreateHealthMonitorRequest(
                body=m3.CreateHealthMonitorRequestBody(
                    healthmonitor=m3.CreateHealthMonitorOption(
                        pool_id=c.pool_id, type="TCP", delay=51, timeout=1, max_retries=2
                    )
                )
            )
        ),
        400,
        "ELB.8902",
        "delay",
    )
    # LBaaS cascade delete takes everything along; the listener stops serving.
    r = c.c2.call_api(
        resource_path="/v2.0/lbaas/loadbalancers/{loadbalancer_id}",
        method="DELETE",
        path_params={"loadbalancer_id": c.lb_id},
        query_params=[("cascade", True)],
        header_params={"Content-Type": "application/json"},
        response_type="DeleteLoadbalancerResponse",
    )
    check(r.status_code == 204, str(r.status_code))
    expect_error(lambda: c.c3.show_pool(m3.ShowPoolRequest(pool_id=c.pool_id)), 404)

    def closed():
        # Closed means refused: a read that timed out proves nothing.
        try:
            get(lb_url(c), timeout=1)
            return False
        except urllib.error.URLError as e:
            return isinstance(e.reason, ConnectionRefusedError)
        except ConnectionRefusedError:
            return True
        except OSError:
            return False

    wait_until(closed, what="the listener to close")


def main():
    c = Ctx()
    ok = False
    try:
        ok = steps.run(c)
    finally:
        if getattr(c, "fulcrum", None):
            if not ok:
                c.fulcrum.dump_log()
            c.fulcrum.stop()
        for b in getattr(c, "backends", {}).values():
            b.stop()
        for b in getattr(c, "udp_backends", {}).values():
            b.stop()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
