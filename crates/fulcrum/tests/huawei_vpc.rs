//! Huawei's VPC v1 API (VPCs and subnets under Huawei's own authentication) against a real
//! `fulcrum serve`, and the addresses load balancers are given from their subnets within
//! `[proxy] vip_ranges`: allocated, distinct under concurrent creation, bound by their
//! listeners, released with their load balancers, refused when none can be given.

mod common;

use std::collections::HashSet;
use std::net::IpAddr;

use common::backend::Backend;
use common::free_port;
use common::huawei::{HUAWEI_CONFIG, Huawei};
use common::stack::{Fulcrum, client, get, refuses};
use serde_json::{Value, json};

fn vip(r: &common::Resp) -> IpAddr {
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["loadbalancer"]["vip_address"]
        .as_str()
        .expect("vip_address")
        .parse()
        .expect("an IP address")
}

async fn count(h: &Huawei, path: &str, key: &str) -> usize {
    h.expect(200, "GET", path, None).await[key]
        .as_array()
        .expect("list")
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn vpcs_and_subnets_through_the_vpc_api() {
    let f = Fulcrum::start_configured(HUAWEI_CONFIG, &[]);
    let h = Huawei::new(&f);

    // Without Huawei credentials the VPC paths answer the API gateway's 401, not the
    // native API's.
    let anon = f
        .anonymous()
        .call(
            "POST",
            "/v1/0123456789abcdef0123456789abcdef/subnets",
            Some(json!({})),
        )
        .await;
    assert_eq!(anon.status, 401, "{}", anon.body);
    assert_eq!(anon.body["error_code"], "APIGW.0301", "{}", anon.body);

    let vpc = h.create_vpc("vpc-a", "127.0.0.0/8").await;
    let shown = h
        .expect(200, "GET", &format!("/v1/{{p}}/vpcs/{vpc}"), None)
        .await;
    assert_eq!(shown["vpc"]["name"], "vpc-a");
    assert_eq!(shown["vpc"]["cidr"], "127.0.0.0/8");
    assert_eq!(shown["vpc"]["status"], "OK");
    let renamed = h
        .expect(
            200,
            "PUT",
            &format!("/v1/{{p}}/vpcs/{vpc}"),
            Some(json!({"vpc": {"name": "vpc-b", "description": "d"}})),
        )
        .await;
    assert_eq!(renamed["vpc"]["name"], "vpc-b");
    assert_eq!(renamed["vpc"]["description"], "d");
    let listed = h
        .expect(200, "GET", &format!("/v1/{{p}}/vpcs?id={vpc}"), None)
        .await;
    assert_eq!(listed["vpcs"].as_array().map(Vec::len), Some(1), "{listed}");

    let subnet = h.create_subnet(&vpc, "127.3.0.0/24", "127.3.0.1").await;
    let id = subnet["id"].as_str().expect("id").to_owned();
    assert_eq!(subnet["neutron_subnet_id"], id.as_str(), "{subnet}");
    assert_eq!(subnet["neutron_network_id"], id.as_str(), "{subnet}");
    assert_eq!(subnet["status"], "ACTIVE");
    assert_eq!(subnet["gateway_ip"], "127.3.0.1");
    assert_eq!(subnet["vpc_id"], vpc.as_str());
    assert_eq!(subnet["cidr"], "127.3.0.0/24");
    let shown = h
        .expect(200, "GET", &format!("/v1/{{p}}/subnets/{id}"), None)
        .await;
    assert_eq!(shown["subnet"], subnet);
    // One model: the native API sees the same subnet.
    let native = f.read(&format!("/v1/subnets/{id}")).await;
    assert_eq!(native["vpc_id"], vpc.as_str());
    assert_eq!(native["gateway_ip"], "127.3.0.1");
    assert_eq!(f.read(&format!("/v1/vpcs/{vpc}")).await["name"], "vpc-b");
    let made = f
        .ok(
            "POST",
            "/v1/vpcs",
            Some(json!({"name": "native", "cidr": "10.0.0.0/16"})),
        )
        .await;
    f.applied(&made).await;
    let native_vpc = made.id();
    let seen = h
        .expect(200, "GET", &format!("/v1/{{p}}/vpcs/{native_vpc}"), None)
        .await;
    assert_eq!(seen["vpc"]["cidr"], "10.0.0.0/16");
    let r = f
        .call(
            "POST",
            "/v1/vpcs",
            Some(json!({"name": "x", "cidr": "10.0.0.1/16"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("host bits"),
        "{}",
        r.body
    );
    let r = f
        .call("DELETE", &format!("/v1/vpcs/{native_vpc}"), None)
        .await;
    f.applied(&r).await;

    // Refusals, each in the VPC API's shape, none of them creating anything.
    let subnets_path = "/v1/{p}/subnets";
    let bad = |cidr: &str, gw: Option<&str>, vpc: &str| {
        let mut s = json!({"name": "bad", "cidr": cidr, "vpc_id": vpc});
        if let Some(g) = gw {
            s["gateway_ip"] = json!(g);
        }
        Some(json!({ "subnet": s }))
    };
    let cases: Vec<(u16, &str, Option<Value>, &str)> = vec![
        (
            404,
            "VPC.0003",
            bad("127.4.0.0/24", Some("127.4.0.1"), "no-such-vpc"),
            "no-such-vpc",
        ),
        (
            400,
            "VPC.0201",
            bad("10.0.0.0/24", Some("10.0.0.1"), &vpc),
            "not within",
        ),
        (
            409,
            "VPC.0210",
            bad("127.3.0.0/16", Some("127.3.0.1"), &vpc),
            "overlaps",
        ),
        (
            400,
            "VPC.0201",
            bad("127.4.0.0/24", Some("127.5.0.1"), &vpc),
            "gateway_ip",
        ),
        (
            400,
            "VPC.0201",
            bad("127.4.0.0/24", Some("127.4.0.0"), &vpc),
            "network or broadcast",
        ),
        (
            400,
            "VPC.0201",
            bad("127.4.0.0/24", None, &vpc),
            "subnet.gateway_ip is required",
        ),
        (
            400,
            "VPC.0201",
            bad("fd00::/64", Some("fd00::1"), &vpc),
            "IPv4",
        ),
        (
            400,
            "VPC.0201",
            bad("127.4.0.1/24", Some("127.4.0.2"), &vpc),
            "host bits",
        ),
        (
            400,
            "VPC.0201",
            Some(json!({"subnet": {"name": 5}})),
            "subnet.name",
        ),
    ];
    for (status, code, body, text) in cases {
        let msg = h.vpc_error(status, code, "POST", subnets_path, body).await;
        assert!(msg.contains(text), "{code}: {msg:?} should say {text:?}");
    }
    let malformed = h.call("POST", subnets_path, None).await;
    assert_eq!(
        (malformed.status, malformed.body["code"].as_str()),
        (400, Some("VPC.0201"))
    );
    assert_eq!(
        count(&h, &format!("/v1/{{p}}/subnets?vpc_id={vpc}"), "subnets").await,
        1
    );
    h.vpc_error(404, "VPC.0202", "GET", "/v1/{p}/subnets/nope", None)
        .await;
    h.vpc_error(404, "VPC.0003", "GET", "/v1/{p}/vpcs/nope", None)
        .await;
    let msg = h
        .vpc_error(
            409,
            "VPC.0110",
            "DELETE",
            &format!("/v1/{{p}}/vpcs/{vpc}"),
            None,
        )
        .await;
    assert!(msg.contains(&id), "{msg}");
    let other_vpc = h.create_vpc("other", "").await;
    h.vpc_error(
        404,
        "VPC.0202",
        "DELETE",
        &format!("/v1/{{p}}/vpcs/{other_vpc}/subnets/{id}"),
        None,
    )
    .await;

    // Update (Huawei answers with the id and status only), then the order a user tears
    // down in: subnets, then their VPC.
    let updated = h
        .expect(
            200,
            "PUT",
            &format!("/v1/{{p}}/vpcs/{vpc}/subnets/{id}"),
            Some(json!({"subnet": {"name": "renamed", "description": "x"}})),
        )
        .await;
    assert_eq!(updated, json!({"subnet": {"id": id, "status": "ACTIVE"}}));
    let shown = h
        .expect(200, "GET", &format!("/v1/{{p}}/subnets/{id}"), None)
        .await;
    assert_eq!(shown["subnet"]["name"], "renamed");
    assert_eq!(shown["subnet"]["gateway_ip"], "127.3.0.1", "kept: {shown}");
    h.expect(
        204,
        "DELETE",
        &format!("/v1/{{p}}/vpcs/{vpc}/subnets/{id}"),
        None,
    )
    .await;
    h.expect(204, "DELETE", &format!("/v1/{{p}}/vpcs/{vpc}"), None)
        .await;
    h.expect(204, "DELETE", &format!("/v1/{{p}}/vpcs/{other_vpc}"), None)
        .await;
    assert_eq!(count(&h, "/v1/{p}/vpcs", "vpcs").await, 0);
    assert_eq!(count(&h, "/v1/{p}/subnets", "subnets").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn load_balancers_get_addresses_from_their_subnets() {
    let f = Fulcrum::start_configured(HUAWEI_CONFIG, &[]);
    let h = Huawei::new(&f);
    let vpc = h.create_vpc("vpc", "127.0.0.0/8").await;
    let subnet = h.create_subnet(&vpc, "127.3.0.0/24", "127.3.0.1").await;
    let sid = subnet["neutron_subnet_id"].as_str().expect("id").to_owned();

    // The first free host that is not the network, the gateway or another's address.
    let first = h.create_lb("lb-1", &sid, None).await;
    assert_eq!(vip(&first), "127.3.0.2".parse::<IpAddr>().unwrap());
    let lb1 = first.body["loadbalancer"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let second = h.create_lb("lb-2", &sid, None).await;
    assert_eq!(vip(&second), "127.3.0.3".parse::<IpAddr>().unwrap());
    let lb2 = second.body["loadbalancer"]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    // Created at once, they all get different addresses.
    let creates = (0..6).map(|i| {
        let h = &h;
        let sid = &sid;
        async move { h.create_lb(&format!("c{i}"), sid, None).await }
    });
    let addrs: Vec<IpAddr> = futures_util::future::join_all(creates)
        .await
        .iter()
        .map(vip)
        .collect();
    let distinct: HashSet<_> = addrs.iter().collect();
    assert_eq!(distinct.len(), 6, "{addrs:?}");
    for a in &addrs {
        let last = match a {
            IpAddr::V4(v4) => v4.octets(),
            IpAddr::V6(_) => panic!("{a}"),
        };
        assert!(
            last[..3] == [127, 3, 0] && (4..=9).contains(&last[3]),
            "{addrs:?}"
        );
    }

    // A listener binds its load balancer's address, and only it.
    let backend = Backend::start("b1").await;
    let pool = f.pool(&lb1, "HTTP", "ROUND_ROBIN").await;
    f.member(&pool, backend.port(), json!({})).await;
    let port = free_port();
    f.listener(&lb1, "HTTP", port, Some(&pool)).await;
    let (status, body) = get(&client(), &format!("http://127.3.0.2:{port}/")).await;
    assert_eq!((status, body.as_str()), (200, "b1"));
    assert!(refuses(port).await, "nothing listens on 127.0.0.1:{port}");

    // v2 (shared ELB) with only vip_subnet_id is given an address too.
    let v2 = h
        .call(
            "POST",
            "/v2/{p}/elb/loadbalancers",
            Some(json!({"loadbalancer": {"name": "shared", "vip_subnet_id": sid}})),
        )
        .await;
    assert_eq!(vip(&v2), "127.3.0.10".parse::<IpAddr>().unwrap());

    // An address given is kept; one this node cannot bind is refused at once.
    let given = h.create_lb("given", &sid, Some("127.3.0.200")).await;
    assert_eq!(vip(&given), "127.3.0.200".parse::<IpAddr>().unwrap());
    let taken = h.create_lb("taken", &sid, Some("127.3.0.200")).await;
    assert_eq!(taken.status, 409, "{}", taken.body);
    assert!(
        taken.body["error_msg"]
            .as_str()
            .unwrap_or_default()
            .contains("already used")
    );
    let elsewhere = h
        .create_subnet(&h.create_vpc("v2", "").await, "10.20.0.0/24", "10.20.0.1")
        .await;
    let far = elsewhere["id"].as_str().expect("id");
    let r = h.create_lb("far", far, Some("10.20.0.5")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["error_msg"]
            .as_str()
            .unwrap_or_default()
            .contains("vip_ranges"),
        "{}",
        r.body
    );
    let r = h.create_lb("far", far, None).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let msg = r.body["error_msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("10.20.0.0/24") && msg.contains("127.0.0.0/8"),
        "{msg}"
    );

    // A /30 holds one load balancer beside its gateway; the next is refused, not given
    // 0.0.0.0.
    let tiny = h.create_subnet(&vpc, "127.4.0.0/30", "127.4.0.1").await;
    let tiny = tiny["id"].as_str().expect("id");
    assert_eq!(
        vip(&h.create_lb("t1", tiny, None).await),
        "127.4.0.2".parse::<IpAddr>().unwrap()
    );
    let full = h.create_lb("t2", tiny, None).await;
    assert_eq!(full.status, 409, "{}", full.body);
    assert_eq!(full.body["error_code"], "ELB.8905");
    assert!(
        full.body["error_msg"]
            .as_str()
            .unwrap_or_default()
            .contains("no free address")
    );
    let lbs = count(&h, "/v3/{p}/elb/loadbalancers", "loadbalancers").await;
    assert_eq!(lbs, 11, "refused creations created nothing");

    // A subnet a load balancer has its address in is not deleted before the load balancer.
    let msg = h
        .vpc_error(
            409,
            "VPC.0210",
            "DELETE",
            &format!("/v1/{{p}}/vpcs/{vpc}/subnets/{tiny}"),
            None,
        )
        .await;
    assert!(msg.contains("load balancer"), "{msg}");

    // A deleted load balancer's address is given again.
    h.expect(
        204,
        "DELETE",
        &format!("/v3/{{p}}/elb/loadbalancers/{lb2}"),
        None,
    )
    .await;
    let again = h.create_lb("again", &sid, None).await;
    assert_eq!(vip(&again), "127.3.0.3".parse::<IpAddr>().unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn vip_ranges_narrow_what_is_given() {
    let config =
        format!("{HUAWEI_CONFIG}\n[proxy]\nvip_ranges = [\"127.9.9.0/29\", \"127.8.0.0/24\"]\n");
    let f = Fulcrum::start_configured(&config, &[]);
    let h = Huawei::new(&f);
    let vpc = h.create_vpc("vpc", "").await;
    let wide = h.create_subnet(&vpc, "127.0.0.0/8", "127.0.0.1").await;
    let wide = wide["id"].as_str().expect("id");
    // The first range's hosts (.1 to .6), then the second's.
    let mut got = Vec::new();
    for i in 0..7 {
        got.push(vip(&h.create_lb(&format!("w{i}"), wide, None).await).to_string());
    }
    assert_eq!(
        got,
        [
            "127.9.9.1",
            "127.9.9.2",
            "127.9.9.3",
            "127.9.9.4",
            "127.9.9.5",
            "127.9.9.6",
            "127.8.0.1"
        ]
    );
    // Loopback outside the ranges is no longer given.
    let other_vpc = h.create_vpc("other", "").await;
    let other = h
        .create_subnet(&other_vpc, "127.5.0.0/24", "127.5.0.1")
        .await;
    let r = h
        .create_lb("x", other["id"].as_str().expect("id"), None)
        .await;
    assert_eq!(r.status, 400, "{}", r.body);

    // A range with host bits is a configuration error `validate` names.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fulcrum.toml");
    std::fs::write(&path, "[proxy]\nvip_ranges = [\"127.0.0.1/8\"]\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .expect("run fulcrum validate");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did you mean 127.0.0.0/8"), "{err}");
}
