//! Scoped credentials against a real `fulcrum serve`: native tokens with a role and a list
//! of load balancers, Huawei credentials bound to a project, OCI keys limited to
//! compartments, Azure tokens limited to subscriptions. Each scoped principal is shown
//! another tenant's resources through every operation of its front door, and must find
//! nothing there and change nothing, while its own work. With `--features etcd`, the same
//! on a fleet: two nodes on a real etcd, one tenant writing through one node and another
//! looking through the other.

mod common;

use std::path::Path;
use std::time::Duration;

use common::huawei::Huawei;
use common::oci::Oci;
#[cfg(feature = "etcd")]
use common::stack::eventually;
use common::{Api, Resp, Server};
use serde_json::{Value, json};

const READ: &str = "read-token-0123456789";
const OPERATE: &str = "operate-token-0123456789";
const WEB_ADMIN: &str = "web-admin-token-0123456789";
const WEB_OPERATE: &str = "web-operate-token-0123456789";
const DB_ADMIN: &str = "db-admin-token-0123456789";

const P1: &str = "11111111111111111111111111111111";
const P2: &str = "22222222222222222222222222222222";
const HUAWEI_AK: &str = "AKPROJECT1";
const HUAWEI_SK: &str = "SKPROJECT1-0123456789";
const HUAWEI_P2: &str = "huawei-p2-token-0123456789";

const KEY_A: &str =
    "ocid1.tenancy.oc1..t/ocid1.user.oc1..a/00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:01";
const KEY_ALL: &str =
    "ocid1.tenancy.oc1..t/ocid1.user.oc1..all/00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:02";
const COMPARTMENT_A: &str = "ocid1.compartment.oc1..aaaa";
const COMPARTMENT_B: &str = "ocid1.compartment.oc1..bbbb";

const SUB1: &str = "00000000-0000-4000-8000-000000000001";
const SUB2: &str = "00000000-0000-4000-8000-000000000002";
const AZURE_SUB1: &str = "azure-sub1-token-0123456789";
const AZURE_ALL: &str = "azure-all-token-0123456789";
/// An id no resource has.
const NEVER: &str = "00000000-0000-4000-8000-00000000dead";

/// A server with every kind of scoped credential (and the harness's admin token).
fn start(dir: &Path) -> Server {
    let config = write_config(dir);
    Server::start_with(
        &dir.join("data"),
        &["--config", config.to_str().expect("utf-8 path")],
    )
}

/// Writes `fulcrum.toml` with every kind of scoped credential into `dir`; returns its path.
fn write_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("fulcrum.toml");
    let public = common::oci::public_key_pem();
    let text = format!(
        "{api}\n\
         [[api.tokens]]\nname = \"reader\"\ntoken = \"{READ}\"\nrole = \"read\"\n\n\
         [[api.tokens]]\nname = \"operator\"\ntoken = \"{OPERATE}\"\nrole = \"operate\"\n\n\
         [[api.tokens]]\nname = \"web-admin\"\ntoken = \"{WEB_ADMIN}\"\nloadbalancers = [\"web\"]\n\n\
         [[api.tokens]]\nname = \"web-operator\"\ntoken = \"{WEB_OPERATE}\"\nrole = \"operate\"\nloadbalancers = [\"web\"]\n\n\
         [[api.tokens]]\nname = \"db-admin\"\ntoken = \"{DB_ADMIN}\"\nloadbalancers = [\"db\"]\n\n\
         [[huawei.credentials]]\nak = \"{HUAWEI_AK}\"\nsk = \"{HUAWEI_SK}\"\nproject_id = \"{P1}\"\n\n\
         [[huawei.tokens]]\nname = \"p2\"\ntoken = \"{HUAWEI_P2}\"\nproject_id = \"{P2}\"\n\n\
         [[oci.keys]]\nkey_id = \"{KEY_A}\"\nname = \"team-a\"\ncompartments = [\"{COMPARTMENT_A}\"]\npublic_key_pem = \"\"\"\n{public}\"\"\"\n\n\
         [[oci.keys]]\nkey_id = \"{KEY_ALL}\"\nname = \"everyone\"\npublic_key_pem = \"\"\"\n{public}\"\"\"\n\n\
         [[azure.tokens]]\nname = \"sub1\"\ntoken = \"{AZURE_SUB1}\"\nsubscriptions = [\"{SUB1}\"]\n\n\
         [[azure.tokens]]\nname = \"all\"\ntoken = \"{AZURE_ALL}\"\n",
        api = common::UNLIMITED_API,
    );
    std::fs::write(&config, text).expect("write config");
    config
}

fn with_token(api: &Api, token: &str) -> Api {
    Api {
        token: Some(token.to_owned()),
        ..api.clone()
    }
}

fn assert_status(r: &Resp, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
}

/// A load balancer with one pool and one member, made by the admin; returns their ids.
async fn tenant(admin: &Api, name: &str, labels: Value) -> (String, String, String) {
    let lb = admin
        .ok(
            "POST",
            "/v1/loadbalancers",
            Some(json!({"name": name, "labels": labels})),
        )
        .await
        .id();
    let pool = admin
        .ok(
            "POST",
            &format!("/v1/loadbalancers/{lb}/pools"),
            Some(json!({"name": format!("{name}-pool"), "protocol": "HTTP"})),
        )
        .await
        .id();
    let member = admin
        .ok(
            "POST",
            &format!("/v1/pools/{pool}/members"),
            Some(json!({"address": "10.0.0.5", "port": 8080, "weight": 5})),
        )
        .await
        .id();
    (lb, pool, member)
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn native_roles_allow_only_their_calls() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let admin = server.client();
    let (lb, pool, member) = tenant(&admin, "web", json!({})).await;
    let member_path = format!("/v1/pools/{pool}/members/{member}");

    // read: every GET, and nothing else.
    let reader = with_token(&admin, READ);
    assert_eq!(ids(&reader.items("/v1/loadbalancers").await), [lb.as_str()]);
    reader.read(&member_path).await;
    for (method, path, body) in [
        ("PATCH", member_path.clone(), Some(json!({"drain": true}))),
        ("DELETE", member_path.clone(), None),
        (
            "POST",
            format!("/v1/pools/{pool}/members"),
            Some(json!({"address": "10.0.0.6", "port": 8080})),
        ),
        (
            "PATCH",
            format!("/v1/pools/{pool}"),
            Some(json!({"description": "x"})),
        ),
        (
            "POST",
            "/v1/loadbalancers".into(),
            Some(json!({"name": "x"})),
        ),
        (
            "DELETE",
            format!("/v1/loadbalancers/{lb}?cascade=true"),
            None,
        ),
        (
            "POST",
            "/v1/subnets".into(),
            Some(json!({"name": "s", "cidr": "10.9.0.0/24", "vpc_id": "v"})),
        ),
    ] {
        let r = reader.call(method, &path, body).await;
        assert_status(&r, 403, &format!("read: {method} {path}"));
        assert_eq!(r.body["code"], "forbidden");
        assert!(r.body["request_id"].is_string());
    }

    // operate: the day-to-day member operations, and nothing else.
    let operator = with_token(&admin, OPERATE);
    let r = operator
        .ok(
            "PATCH",
            &member_path,
            Some(json!({"drain": true, "weight": 7, "backup": true})),
        )
        .await;
    assert_eq!(
        (r.body["drain"].clone(), r.body["weight"].clone()),
        (json!(true), json!(7))
    );
    let added = operator
        .ok(
            "POST",
            &format!("/v1/pools/{pool}/members"),
            Some(json!({"address": "10.0.0.6", "port": 8080})),
        )
        .await
        .id();
    operator
        .ok(
            "POST",
            &format!("/v1/pools/{pool}/members/batch"),
            Some(json!({"action": "add", "members": [{"address": "10.0.0.7", "port": 8080}]})),
        )
        .await;
    operator
        .ok("DELETE", &format!("/v1/pools/{pool}/members/{added}"), None)
        .await;
    for (method, path, body) in [
        (
            "PATCH",
            format!("/v1/pools/{pool}"),
            Some(json!({"description": "x"})),
        ),
        ("DELETE", format!("/v1/pools/{pool}"), None),
        (
            "PATCH",
            format!("/v1/loadbalancers/{lb}"),
            Some(json!({"description": "x"})),
        ),
        (
            "POST",
            "/v1/loadbalancers".into(),
            Some(json!({"name": "x"})),
        ),
        (
            "POST",
            format!("/v1/loadbalancers/{lb}/listeners"),
            Some(json!({"protocol": "HTTP", "port": 18080})),
        ),
        (
            "POST",
            "/v1/healthmonitors".into(),
            Some(json!({"pool_id": pool, "type": "TCP"})),
        ),
    ] {
        let r = operator.call(method, &path, body).await;
        assert_status(&r, 403, &format!("operate: {method} {path}"));
        assert_eq!(r.body["code"], "forbidden");
    }
    // The OpenAPI document says so.
    let doc = admin.anonymous().read("/v1/openapi.json").await;
    let paths = &doc["paths"];
    for (path, method) in [
        ("/v1/pools/{id}/members/{member_id}", "patch"),
        ("/v1/loadbalancers", "post"),
        ("/v1/loadbalancers", "get"),
        ("/v1/work-requests/{id}", "get"),
    ] {
        assert!(
            paths[path][method]["responses"]["403"].is_object(),
            "{method} {path}: {}",
            paths[path][method]
        );
    }
    assert!(paths["/v1/health"]["get"]["responses"]["403"].is_null());

    // Nothing the refusals named changed.
    let now = admin.read(&format!("/v1/pools/{pool}")).await;
    assert_eq!(now["description"], "");
    assert_eq!(admin.items("/v1/loadbalancers").await.len(), 1);
}

#[tokio::test]
async fn native_tokens_limited_to_load_balancers_see_and_change_only_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let admin = server.client();
    let (web, web_pool, web_member) = tenant(&admin, "web", json!({})).await;
    let (db, db_pool, db_member) = tenant(&admin, "db", json!({})).await;
    let db_listener = admin
        .ok(
            "POST",
            &format!("/v1/loadbalancers/{db}/listeners"),
            Some(
                json!({"name": "l", "protocol": "HTTP", "port": common::free_port(),
                "default_pool_id": db_pool}),
            ),
        )
        .await
        .id();
    let db_monitor = admin
        .ok(
            "POST",
            "/v1/healthmonitors",
            Some(json!({"pool_id": db_pool, "type": "TCP"})),
        )
        .await;
    let db_wr = db_monitor.header("x-work-request-id").unwrap();
    let db_monitor = db_monitor.id();
    let before = admin
        .read(&format!("/v1/pools/{db_pool}/members/{db_member}"))
        .await;

    for token in [WEB_ADMIN, WEB_OPERATE] {
        let scoped = with_token(&admin, token);
        // Lists hold only its load balancer's resources.
        assert_eq!(
            ids(&scoped.items("/v1/loadbalancers").await),
            [web.as_str()]
        );
        assert_eq!(ids(&scoped.items("/v1/pools").await), [web_pool.as_str()]);
        assert!(scoped.items("/v1/listeners").await.is_empty());
        assert!(scoped.items("/v1/healthmonitors").await.is_empty());
        // Another's load balancer is not found, as an absent one is.
        for what in ["pools", "listeners"] {
            let path = format!("/v1/loadbalancers/{db}/{what}");
            let r = scoped.call("GET", &path, None).await;
            assert_status(&r, 404, &format!("{token}: GET {path}"));
            let r = scoped
                .call("GET", &format!("/v1/loadbalancers/{NEVER}/{what}"), None)
                .await;
            assert_status(&r, 404, &format!("{token}: GET {what} of no load balancer"));
        }
        let wrs = scoped.items("/v1/work-requests").await;
        assert!(
            wrs.iter().all(|w| w["loadbalancer_id"] == json!(web)),
            "{token}: {wrs:?}"
        );
        let stats = scoped.read("/v1/stats").await;
        assert!(
            stats["pools"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["id"] != json!(db_pool))
        );
        // Another's resources are not found, for reads and changes alike.
        for (method, path, body) in [
            ("GET", format!("/v1/loadbalancers/{db}"), None),
            ("GET", format!("/v1/pools/{db_pool}"), None),
            ("GET", format!("/v1/pools/{db_pool}/members"), None),
            (
                "GET",
                format!("/v1/pools/{db_pool}/members/{db_member}"),
                None,
            ),
            ("GET", format!("/v1/listeners/{db_listener}"), None),
            ("GET", format!("/v1/healthmonitors/{db_monitor}"), None),
            ("GET", format!("/v1/work-requests/{db_wr}"), None),
            (
                "GET",
                format!("/v1/work-requests/{db_wr}/wait?timeout_ms=10"),
                None,
            ),
            ("GET", format!("/v1/stats?loadbalancer_id={db}"), None),
            (
                "PATCH",
                format!("/v1/pools/{db_pool}/members/{db_member}"),
                Some(json!({"drain": true, "weight": 1})),
            ),
            (
                "DELETE",
                format!("/v1/pools/{db_pool}/members/{db_member}"),
                None,
            ),
            (
                "POST",
                format!("/v1/pools/{db_pool}/members"),
                Some(json!({"address": "10.0.0.8", "port": 8080})),
            ),
            (
                "POST",
                format!("/v1/pools/{db_pool}/members/batch"),
                Some(json!({"action": "replace", "members": []})),
            ),
        ] {
            let r = scoped.call(method, &path, body).await;
            assert_status(&r, 404, &format!("{token}: {method} {path}"));
            assert_eq!(r.body["code"], "not_found");
        }
        // Its own member is its to operate.
        scoped
            .ok(
                "PATCH",
                &format!("/v1/pools/{web_pool}/members/{web_member}"),
                Some(json!({"weight": 9})),
            )
            .await;
    }

    // An administrator of "web" only: everything under web, nothing else.
    let scoped = with_token(&admin, WEB_ADMIN);
    for (method, path, body) in [
        (
            "PATCH",
            format!("/v1/loadbalancers/{db}"),
            Some(json!({"description": "x"})),
        ),
        (
            "DELETE",
            format!("/v1/loadbalancers/{db}?cascade=true"),
            None,
        ),
        (
            "PATCH",
            format!("/v1/pools/{db_pool}"),
            Some(json!({"description": "x"})),
        ),
        ("DELETE", format!("/v1/pools/{db_pool}"), None),
        (
            "POST",
            format!("/v1/loadbalancers/{db}/pools"),
            Some(json!({"name": "q", "protocol": "HTTP"})),
        ),
        (
            "POST",
            format!("/v1/loadbalancers/{db}/listeners"),
            Some(json!({"protocol": "HTTP", "port": common::free_port()})),
        ),
        (
            "PATCH",
            format!("/v1/listeners/{db_listener}"),
            Some(json!({"description": "x"})),
        ),
        ("DELETE", format!("/v1/listeners/{db_listener}"), None),
        (
            "PATCH",
            format!("/v1/healthmonitors/{db_monitor}"),
            Some(json!({"interval_ms": 9000})),
        ),
        ("DELETE", format!("/v1/healthmonitors/{db_monitor}"), None),
    ] {
        let r = scoped.call(method, &path, body).await;
        assert_status(&r, 404, &format!("web-admin: {method} {path}"));
        assert_eq!(r.body["code"], "not_found");
    }
    // A monitor for another's pool, named in the body: as for a pool that never existed.
    let monitor = |pool: &str| json!({"pool_id": pool, "type": "HTTP"});
    let r = scoped
        .call("POST", "/v1/healthmonitors", Some(monitor(&db_pool)))
        .await;
    let never = scoped
        .call("POST", "/v1/healthmonitors", Some(monitor(NEVER)))
        .await;
    assert_status(&r, never.status, "a monitor for another's pool");
    assert_eq!(r.body["field"], "pool_id");
    assert_eq!(
        r.body["message"].as_str().unwrap().replace(&db_pool, NEVER),
        never.body["message"]
    );
    // Outside every load balancer, or out of its list: forbidden.
    for (method, path, body) in [
        (
            "POST",
            "/v1/loadbalancers".to_owned(),
            Some(json!({"name": "other"})),
        ),
        (
            "PATCH",
            format!("/v1/loadbalancers/{web}"),
            Some(json!({"name": "renamed"})),
        ),
        (
            "POST",
            "/v1/subnets".into(),
            Some(json!({"name": "s", "cidr": "10.9.0.0/24", "vpc_id": "v"})),
        ),
    ] {
        let r = scoped.call(method, &path, body).await;
        assert_status(&r, 403, &format!("web-admin: {method} {path}"));
        assert_eq!(r.body["code"], "forbidden");
    }
    scoped
        .ok(
            "PATCH",
            &format!("/v1/pools/{web_pool}"),
            Some(json!({"description": "mine"})),
        )
        .await;
    // Its own work requests, even once their load balancer is gone.
    let gone = scoped
        .ok(
            "DELETE",
            &format!("/v1/loadbalancers/{web}?cascade=true"),
            None,
        )
        .await;
    scoped.applied(&gone).await;

    // db is as the admin left it.
    let after = admin
        .read(&format!("/v1/pools/{db_pool}/members/{db_member}"))
        .await;
    assert_eq!(after, before);
    admin.read(&format!("/v1/listeners/{db_listener}")).await;
    admin
        .read(&format!("/v1/healthmonitors/{db_monitor}"))
        .await;
    assert_eq!(ids(&admin.items("/v1/loadbalancers").await), [db]);
}

fn assert_huawei(r: &Resp, status: u16, code: &str, what: &str) {
    assert_status(r, status, what);
    assert_eq!(r.body["error_code"], code, "{what}: {}", r.body);
    assert!(r.body["request_id"].is_string(), "{what}: {}", r.body);
}

#[tokio::test]
async fn huawei_credentials_bound_to_a_project_see_and_change_only_its_resources() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let admin = server.client();
    let subnet = admin
        .ok(
            "POST",
            "/v1/subnets",
            Some(json!({"name": "s", "cidr": "10.0.0.0/24", "vpc_id": "vpc"})),
        )
        .await
        .id();
    // Project 1 signs with an access key, project 2 sends a token.
    let p1 = Huawei::ak_sk(&admin, HUAWEI_AK, HUAWEI_SK);
    let p2 = Huawei::token(&admin, HUAWEI_P2);
    let v3 = |p: &str, rest: &str| format!("/v3/{p}/elb/{rest}");

    // Each project makes its own load balancer, pool and member.
    let mut made = Vec::new();
    for (caller, project) in [(&p1, P1), (&p2, P2)] {
        let r = caller
            .call(
                "POST",
                &v3(project, "loadbalancers"),
                Some(json!({"loadbalancer": {"name": format!("lb-{project}"), "vpc_id": "vpc"}})),
            )
            .await;
        assert_status(&r, 201, "create a load balancer");
        let lb = r.body["loadbalancer"]["id"].as_str().unwrap().to_owned();
        let r = caller
            .call(
                "POST",
                &v3(project, "pools"),
                Some(json!({"pool": {"loadbalancer_id": lb, "protocol": "HTTP",
                    "lb_algorithm": "ROUND_ROBIN", "name": "p"}})),
            )
            .await;
        assert_status(&r, 201, "create a pool");
        let pool = r.body["pool"]["id"].as_str().unwrap().to_owned();
        let r = caller
            .call(
                "POST",
                &v3(project, &format!("pools/{pool}/members")),
                Some(
                    json!({"member": {"address": "10.0.0.5", "protocol_port": 8080,
                    "subnet_cidr_id": subnet, "weight": 5}}),
                ),
            )
            .await;
        assert_status(&r, 201, "create a member");
        let member = r.body["member"]["id"].as_str().unwrap().to_owned();
        made.push((lb, pool, member));
    }
    let (lb1, pool1, _) = made[0].clone();
    let (lb2, pool2, member2) = made[1].clone();
    // An admin's listener and monitor in project 2, and a load balancer of no project.
    let listener2 = admin
        .ok(
            "POST",
            &format!("/v1/loadbalancers/{lb2}/listeners"),
            Some(
                json!({"name": "l", "protocol": "HTTP", "port": common::free_port(),
                "default_pool_id": pool2}),
            ),
        )
        .await
        .id();
    let monitor2 = admin
        .ok(
            "POST",
            "/v1/healthmonitors",
            Some(json!({"pool_id": pool2, "type": "TCP"})),
        )
        .await
        .id();
    let (native_lb, _, _) = tenant(&admin, "native", json!({})).await;
    let before = admin
        .read(&format!("/v1/pools/{pool2}/members/{member2}"))
        .await;

    // Lists: only project 1's, in every API family.
    let r = p1.call("GET", &v3(P1, "loadbalancers"), None).await;
    assert_status(&r, 200, "list");
    let listed: Vec<&str> = r.body["loadbalancers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [lb1.as_str()]);
    for path in [
        format!("/v2/{P1}/elb/pools"),
        "/v2.0/lbaas/pools".to_owned(),
        v3(P1, "pools"),
    ] {
        let r = p1.call("GET", &path, None).await;
        assert_status(&r, 200, &path);
        let pools: Vec<&str> = r.body["pools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        assert_eq!(pools, [pool1.as_str()], "{path}");
    }
    for what in ["listeners", "healthmonitors"] {
        let r = p1.call("GET", &v3(P1, what), None).await;
        assert_eq!(r.body[what], json!([]), "{what}: {}", r.body);
    }

    // Another project's resources are not found, whatever the operation.
    let seed_001 = json!({"action": "replace", "members": []});
    let seed_002 = json!({"pool": {"lb_algorithm": "SOURCE_IP"}});
    for (method, path, body) in [
        ("GET", v3(P1, &format!("loadbalancers/{lb2}")), None),
        ("GET", v3(P1, &format!("loadbalancers/{native_lb}")), None),
        ("GET", v3(P1, &format!("pools/{pool2}")), None),
        ("GET", v3(P1, &format!("pools/{pool2}/members")), None),
        (
            "GET",
            v3(P1, &format!("pools/{pool2}/members/{member2}")),
            None,
        ),
        ("GET", v3(P1, &format!("listeners/{listener2}")), None),
        ("GET", v3(P1, &format!("healthmonitors/{monitor2}")), None),
        ("GET", format!("/v2.0/lbaas/pools/{pool2}"), None),
        (
            "PUT",
            v3(P1, &format!("pools/{pool2}")),
            Some(seed_002.clone()),
        ),
        (
            "PUT",
            format!("/v2.0/lbaas/pools/{pool2}/members"),
            Some(seed_001.clone()),
        ),
        (
            "PUT",
            v3(P1, &format!("loadbalancers/{lb2}")),
            Some(json!({"loadbalancer": {"description": "x"}})),
        ),
        ("DELETE", v3(P1, &format!("loadbalancers/{lb2}")), None),
        (
            "POST",
            v3(P1, &format!("loadbalancers/{lb2}/delete-cascade")),
            None,
        ),
        (
            "DELETE",
            v3(P1, &format!("pools/{pool2}/delete-cascade")),
            None,
        ),
        (
            "PUT",
            v3(P1, &format!("pools/{pool2}/members/{member2}")),
            Some(json!({"member": {"weight": 1}})),
        ),
        (
            "DELETE",
            v3(P1, &format!("pools/{pool2}/members/{member2}")),
            None,
        ),
        (
            "POST",
            v3(P1, &format!("pools/{pool2}/members")),
            Some(
                json!({"member": {"address": "10.0.0.6", "protocol_port": 8080,
                "subnet_cidr_id": subnet}}),
            ),
        ),
        (
            "POST",
            v3(P1, &format!("pools/{pool2}/members/batch-update")),
            Some(json!({"members": [{"id": member2, "weight": 1}]})),
        ),
        (
            "PUT",
            v3(P1, &format!("listeners/{listener2}")),
            Some(json!({"listener": {"description": "x"}})),
        ),
        ("DELETE", v3(P1, &format!("listeners/{listener2}")), None),
        (
            "PUT",
            v3(P1, &format!("healthmonitors/{monitor2}")),
            Some(json!({"healthmonitor": {"max_retries": 5}})),
        ),
        (
            "DELETE",
            v3(P1, &format!("healthmonitors/{monitor2}")),
            None,
        ),
        ("DELETE", v3(P1, &format!("pools/{pool2}")), None),
        // Creating under another project's load balancer or pool, named in the body.
        (
            "POST",
            v3(P1, "pools"),
            Some(json!({"pool": {"loadbalancer_id": lb2, "protocol": "HTTP",
                "lb_algorithm": "ROUND_ROBIN"}})),
        ),
        (
            "POST",
            v3(P1, "listeners"),
            Some(
                json!({"listener": {"loadbalancer_id": lb2, "protocol": "HTTP",
                "protocol_port": common::free_port()}}),
            ),
        ),
        (
            "POST",
            v3(P1, "healthmonitors"),
            Some(
                json!({"healthmonitor": {"pool_id": pool2, "type": "TCP", "delay": 5,
                "timeout": 3, "max_retries": 3}}),
            ),
        ),
    ] {
        let r = p1.call(method, &path, body.clone()).await;
        // Answered exactly as the same call naming resources that never existed.
        let absent = |t: &str| {
            [&lb2, &pool2, &member2, &listener2, &monitor2, &native_lb]
                .iter()
                .fold(t.to_owned(), |t, id| t.replace(id.as_str(), NEVER))
        };
        let never = p1
            .call(
                method,
                &absent(&path),
                body.map(|b| serde_json::from_str(&absent(&b.to_string())).unwrap()),
            )
            .await;
        let what = format!("{method} {path}");
        let code = never.body["error_code"].as_str().unwrap().to_owned();
        assert_huawei(&r, never.status, &code, &what);
        assert_eq!(
            absent(r.body["error_msg"].as_str().unwrap()),
            never.body["error_msg"],
            "{what}"
        );
        assert!(matches!(r.status, 400 | 404), "{what}: {}", r.body);
        if method != "POST" {
            assert_huawei(&r, 404, "ELB.8904", &what);
        }
    }

    // Another project's path is refused outright, creations included.
    for (method, path, body) in [
        ("GET", v3(P2, "loadbalancers"), None),
        (
            "POST",
            v3(P2, "loadbalancers"),
            Some(json!({"loadbalancer": {"name": "intruder", "vpc_id": "vpc"}})),
        ),
    ] {
        let r = p1.call(method, &path, body).await;
        assert_huawei(&r, 401, "APIGW.0301", &format!("{method} {path}"));
    }

    // Project 2 is as it was; project 2 still sees its own.
    let after = admin
        .read(&format!("/v1/pools/{pool2}/members/{member2}"))
        .await;
    assert_eq!(after, before);
    for path in [
        format!("/v1/loadbalancers/{lb2}"),
        format!("/v1/pools/{pool2}"),
        format!("/v1/listeners/{listener2}"),
        format!("/v1/healthmonitors/{monitor2}"),
    ] {
        admin.read(&path).await;
    }
    assert_eq!(
        admin.read(&format!("/v1/pools/{pool2}")).await["algorithm"],
        "ROUND_ROBIN"
    );
    let r = p2
        .call("GET", &v3(P2, &format!("pools/{pool2}")), None)
        .await;
    assert_status(&r, 200, "project 2 reads its pool");
    let r = p2
        .call("GET", &v3(P2, &format!("pools/{pool1}")), None)
        .await;
    assert_huawei(&r, 404, "ELB.8904", "project 2 reads project 1's pool");
}

fn lb_ocid(id: &str) -> String {
    format!("ocid1.loadbalancer.oc1.fulcrum.{id}")
}

fn oci_create(compartment: &str, name: &str) -> Value {
    json!({"compartmentId": compartment, "displayName": name, "shapeName": "flexible",
        "subnetIds": ["ocid1.subnet.oc1..s"],
        "backendSets": {"bs": {"policy": "ROUND_ROBIN",
            "healthChecker": {"protocol": "TCP", "port": 8080},
            "backends": [{"ipAddress": "10.0.0.5", "port": 8080, "weight": 5}]}}})
}

/// Waits until OCI's work request `wr` succeeded, read by `oci`.
async fn oci_succeeded(oci: &Oci, wr: &str) {
    for _ in 0..200 {
        let r = oci
            .call(
                "GET",
                &format!("/20170115/loadBalancerWorkRequests/{wr}"),
                None,
            )
            .await;
        assert_status(&r, 200, "work request");
        if r.body["lifecycleState"] == "SUCCEEDED" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("work request {wr} did not succeed");
}

/// The fulcrum id of the load balancer `name`, from the native API.
async fn lb_named(admin: &Api, name: &str) -> String {
    admin
        .items("/v1/loadbalancers")
        .await
        .iter()
        .find(|l| l["name"] == name)
        .and_then(|l| l["id"].as_str())
        .expect("the load balancer")
        .to_owned()
}

#[tokio::test]
async fn oci_keys_limited_to_compartments_see_and_change_only_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let admin = server.client();
    let team = Oci::new(&admin, KEY_A);
    let everyone = Oci::new(&admin, KEY_ALL);

    let r = team
        .call(
            "POST",
            "/20170115/loadBalancers",
            Some(oci_create(COMPARTMENT_A, "a")),
        )
        .await;
    assert_status(&r, 204, "create in its compartment");
    oci_succeeded(&team, &r.header("opc-work-request-id").unwrap()).await;
    let r = everyone
        .call(
            "POST",
            "/20170115/loadBalancers",
            Some(oci_create(COMPARTMENT_B, "b")),
        )
        .await;
    assert_status(&r, 204, "create in another compartment");
    let b_wr = r.header("opc-work-request-id").unwrap();
    oci_succeeded(&everyone, &b_wr).await;
    let a = lb_ocid(&lb_named(&admin, "a").await);
    let b = lb_ocid(&lb_named(&admin, "b").await);
    let (native_lb, _, _) = tenant(&admin, "native", json!({})).await;
    let before = everyone
        .call("GET", &format!("/20170115/loadBalancers/{b}"), None)
        .await;
    assert_status(&before, 200, "the unlimited key reads b");

    // Its compartment lists its load balancer only; another compartment is not found.
    let r = team
        .call(
            "GET",
            &format!("/20170115/loadBalancers?compartmentId={COMPARTMENT_A}"),
            None,
        )
        .await;
    assert_status(&r, 200, "list its compartment");
    let listed: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [a.as_str()], "not b, nor one made outside OCI");
    let r = team
        .call(
            "GET",
            &format!("/20170115/loadBalancers?compartmentId={COMPARTMENT_B}"),
            None,
        )
        .await;
    assert_status(&r, 404, "list another compartment");
    assert_eq!(r.body["code"], "NotAuthorizedOrNotFound");

    let lb = |rest: &str| format!("/20170115/loadBalancers/{b}{rest}");
    let backend = json!({"weight": 1, "backup": false, "drain": true, "offline": false});
    for (method, path, body) in [
        ("GET", lb(""), None),
        (
            "GET",
            format!("/20170115/loadBalancers/{}", lb_ocid(&native_lb)),
            None,
        ),
        ("PUT", lb(""), Some(json!({"displayName": "mine"}))),
        ("DELETE", lb(""), None),
        ("GET", lb("/backendSets"), None),
        ("GET", lb("/backendSets/bs"), None),
        (
            "POST",
            lb("/backendSets"),
            Some(json!({"name": "bs2", "policy": "ROUND_ROBIN",
                "healthChecker": {"protocol": "TCP", "port": 80}})),
        ),
        (
            "PUT",
            lb("/backendSets/bs"),
            Some(json!({"policy": "ROUND_ROBIN", "backends": [],
                "healthChecker": {"protocol": "TCP", "port": 80}})),
        ),
        ("DELETE", lb("/backendSets/bs"), None),
        ("GET", lb("/backendSets/bs/backends"), None),
        ("GET", lb("/backendSets/bs/backends/10.0.0.5:8080"), None),
        // Seed 000: UpdateBackend.
        (
            "PUT",
            lb("/backendSets/bs/backends/10.0.0.5:8080"),
            Some(backend.clone()),
        ),
        ("DELETE", lb("/backendSets/bs/backends/10.0.0.5:8080"), None),
        (
            "POST",
            lb("/backendSets/bs/backends"),
            Some(json!({"ipAddress": "10.0.0.6", "port": 8080})),
        ),
        ("GET", lb("/backendSets/bs/healthChecker"), None),
        (
            "PUT",
            lb("/backendSets/bs/healthChecker"),
            Some(json!({"protocol": "TCP", "port": 81})),
        ),
        (
            "POST",
            lb("/listeners"),
            Some(
                json!({"name": "l", "defaultBackendSetName": "bs", "port": 8080,
                "protocol": "HTTP"}),
            ),
        ),
        ("GET", lb("/workRequests"), None),
        (
            "GET",
            format!("/20170115/loadBalancerWorkRequests/{b_wr}"),
            None,
        ),
        // Creating into a compartment it may not see.
        (
            "POST",
            "/20170115/loadBalancers".into(),
            Some(oci_create(COMPARTMENT_B, "c")),
        ),
    ] {
        let r = team.call(method, &path, body).await;
        assert_status(&r, 404, &format!("{method} {path}"));
        assert_eq!(r.body["code"], "NotAuthorizedOrNotFound", "{method} {path}");
        assert!(r.header("opc-request-id").is_some());
    }

    // b is as it was; its own load balancer is its to change.
    let after = everyone
        .call("GET", &format!("/20170115/loadBalancers/{b}"), None)
        .await;
    assert_eq!(after.body, before.body);
    assert_eq!(
        admin.items("/v1/loadbalancers").await.len(),
        3,
        "no c was made"
    );
    let r = team
        .call(
            "PUT",
            &format!("/20170115/loadBalancers/{a}/backendSets/bs/backends/10.0.0.5:8080"),
            Some(backend),
        )
        .await;
    assert_status(&r, 204, "seed 000 on its own backend");
    oci_succeeded(&team, &r.header("opc-work-request-id").unwrap()).await;
}

fn azure(api: &Api, token: &str) -> Api {
    with_token(api, token)
}

fn backends(sub: &str) -> String {
    format!(
        "/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.ApiManagement/service/apim1/backends"
    )
}

#[tokio::test]
async fn azure_tokens_limited_to_subscriptions_see_and_change_only_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let admin = server.client();
    let sub1 = azure(&admin, AZURE_SUB1);
    let all = azure(&admin, AZURE_ALL);
    let v = "api-version=2024-05-01";
    let contract = json!({"properties": {"url": "http://10.0.0.5:8080/api", "protocol": "http"}});
    sub1.ok(
        "PUT",
        &format!("{}/one?{v}", backends(SUB1)),
        Some(contract.clone()),
    )
    .await;
    all.ok(
        "PUT",
        &format!("{}/two?{v}", backends(SUB2)),
        Some(contract.clone()),
    )
    .await;
    let before = all.read(&format!("{}/two?{v}", backends(SUB2))).await;

    let r = sub1.read(&format!("{}?{v}", backends(SUB1))).await;
    assert_eq!(r["value"].as_array().unwrap().len(), 1);
    for (method, path, body, extra) in [
        ("GET", format!("{}?{v}", backends(SUB2)), None, None),
        ("GET", format!("{}/two?{v}", backends(SUB2)), None, None),
        ("HEAD", format!("{}/two?{v}", backends(SUB2)), None, None),
        (
            "PUT",
            format!("{}/two?{v}", backends(SUB2)),
            Some(contract.clone()),
            None,
        ),
        (
            "PUT",
            format!("{}/new?{v}", backends(SUB2)),
            Some(contract.clone()),
            None,
        ),
        (
            "PATCH",
            format!("{}/two?{v}", backends(SUB2)),
            Some(json!({"properties": {"description": "x"}})),
            Some(("if-match", "*")),
        ),
        (
            "DELETE",
            format!("{}/two?{v}", backends(SUB2)),
            None,
            Some(("if-match", "*")),
        ),
    ] {
        let body = body.map(|b: Value| b.to_string());
        let headers: Vec<(&str, &str)> = extra.into_iter().collect();
        let r = sub1.raw(method, &path, body.as_deref(), &headers).await;
        assert_status(&r, 403, &format!("{method} {path}"));
        if method != "HEAD" {
            assert_eq!(
                r.body["error"]["code"], "AuthorizationFailed",
                "{method} {path}"
            );
        }
        assert!(r.header("x-ms-request-id").is_some());
    }
    assert_eq!(
        all.read(&format!("{}/two?{v}", backends(SUB2))).await,
        before
    );
    let r = all
        .call("GET", &format!("{}/new?{v}", backends(SUB2)), None)
        .await;
    assert_status(&r, 404, "no backend was made in subscription 2");
}

/// The key both nodes of the fleet test seal secrets with (base64 of 32 bytes): nodes of
/// one fleet must share it.
#[cfg(feature = "etcd")]
const FLEET_KEY: &str = "c2NvcGVzLWZsZWV0LWtleS0wMTIzNDU2Nzg5YWJjZGU=";

/// A fleet node: `fulcrum serve` on the shared etcd, with the scoped credentials of
/// [`write_config`].
#[cfg(feature = "etcd")]
fn fleet_node(dir: &Path, id: &str, store: &str) -> Server {
    let config = write_config(dir);
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"));
    command.env("FULCRUM_SECRET_KEY", FLEET_KEY);
    Server::start_through(
        command,
        &dir.join("data"),
        &[
            "--config",
            config.to_str().expect("utf-8 path"),
            "--store",
            store,
            "--node-id",
            id,
        ],
    )
}

/// Waits (up to 15 s) until `api` (an unlimited caller) reads `path`: the node's view
/// holds a change made through another node.
#[cfg(feature = "etcd")]
async fn until_read(api: &Api, path: &str) -> Value {
    let readable = eventually(Duration::from_secs(15), || async {
        api.call("GET", path, None).await.status == 200
    })
    .await;
    assert!(readable, "{path}: not readable within 15 s");
    api.read(path).await
}

/// The same scopes on a fleet: two nodes on one real etcd. What one tenant writes through
/// node A, another finds nowhere through node B, and cannot change there; each tenant
/// reads and changes its own through either node. Native tokens limited to load balancers,
/// and Huawei credentials bound to projects.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_keeps_scoped_tenants_apart_on_every_node() {
    use fulcrum_store_etcd::testing::{EtcdCluster, require_etcd};
    require_etcd();
    let etcd = EtcdCluster::start(1).await;
    let hosts: Vec<String> = etcd
        .endpoints()
        .iter()
        .map(|e| e.trim_start_matches("http://").to_owned())
        .collect();
    let store = format!("etcd://{}", hosts.join(","));
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = fleet_node(dir_a.path(), "node-a", &store);
    let b = fleet_node(dir_b.path(), "node-b", &store);
    let (admin_a, admin_b) = (a.client().unpooled(), b.client().unpooled());

    // ---- native tokens limited to load balancers ----------------------------------------
    let (web, web_pool, web_member) = tenant(&admin_a, "web", json!({})).await;
    let (db, db_pool, db_member) = tenant(&admin_a, "db", json!({})).await;
    let (web_a, web_b) = (
        with_token(&admin_a, WEB_ADMIN),
        with_token(&admin_b, WEB_ADMIN),
    );
    let db_b = with_token(&admin_b, DB_ADMIN);
    // web writes through node A: a pool of its own, and its member's weight.
    let extra = web_a
        .ok(
            "POST",
            &format!("/v1/loadbalancers/{web}/pools"),
            Some(json!({"name": "web-extra", "protocol": "HTTP"})),
        )
        .await
        .id();
    web_a
        .ok(
            "PATCH",
            &format!("/v1/pools/{web_pool}/members/{web_member}"),
            Some(json!({"weight": 9})),
        )
        .await;
    let web_member_path = format!("/v1/pools/{web_pool}/members/{web_member}");
    until_read(&admin_b, &format!("/v1/pools/{extra}")).await;
    eventually(Duration::from_secs(15), || async {
        admin_b.read(&web_member_path).await["weight"] == 9
    })
    .await;
    // web sees it through node B, as it wrote it.
    assert_eq!(web_b.read(&web_member_path).await["weight"], 9);
    web_b.read(&format!("/v1/pools/{extra}")).await;
    let mut web_pools = ids(&web_b.items("/v1/pools").await);
    web_pools.sort();
    let mut want = vec![web_pool.clone(), extra.clone()];
    want.sort();
    assert_eq!(web_pools, want);
    assert_eq!(ids(&web_b.items("/v1/loadbalancers").await), [web.as_str()]);

    // db, through node B, finds none of web's and changes nothing of it.
    assert_eq!(ids(&db_b.items("/v1/loadbalancers").await), [db.as_str()]);
    assert_eq!(ids(&db_b.items("/v1/pools").await), [db_pool.as_str()]);
    let web_before = admin_b.read(&web_member_path).await;
    for (method, path, body) in [
        ("GET", format!("/v1/loadbalancers/{web}"), None),
        ("GET", format!("/v1/pools/{extra}"), None),
        ("GET", web_member_path.clone(), None),
        ("PATCH", web_member_path.clone(), Some(json!({"weight": 1}))),
        ("DELETE", web_member_path.clone(), None),
        (
            "PATCH",
            format!("/v1/pools/{extra}"),
            Some(json!({"description": "db was here"})),
        ),
        ("DELETE", format!("/v1/pools/{extra}"), None),
        (
            "POST",
            format!("/v1/loadbalancers/{web}/pools"),
            Some(json!({"name": "intruder", "protocol": "HTTP"})),
        ),
        (
            "DELETE",
            format!("/v1/loadbalancers/{web}?cascade=true"),
            None,
        ),
    ] {
        let r = db_b.call(method, &path, body).await;
        assert_status(&r, 404, &format!("db through node B: {method} {path}"));
        assert_eq!(r.body["code"], "not_found");
    }
    // Nor web of db's, through node B.
    let db_member_path = format!("/v1/pools/{db_pool}/members/{db_member}");
    let db_before = admin_a.read(&db_member_path).await;
    for (method, path, body) in [
        ("GET", db_member_path.clone(), None),
        (
            "PATCH",
            db_member_path.clone(),
            Some(json!({"drain": true})),
        ),
        ("DELETE", format!("/v1/pools/{db_pool}"), None),
    ] {
        let r = web_b.call(method, &path, body).await;
        assert_status(&r, 404, &format!("web through node B: {method} {path}"));
    }
    // What the refusals named is as it was, on both nodes.
    for admin in [&admin_a, &admin_b] {
        assert_eq!(admin.read(&web_member_path).await, web_before);
        assert_eq!(admin.read(&db_member_path).await, db_before);
        assert_eq!(
            admin.read(&format!("/v1/pools/{extra}")).await["description"],
            ""
        );
        assert_eq!(admin.items("/v1/loadbalancers").await.len(), 2);
    }

    // ---- Huawei credentials bound to projects -------------------------------------------
    let v3 = |p: &str, rest: &str| format!("/v3/{p}/elb/{rest}");
    let p1_a = Huawei::ak_sk(&admin_a, HUAWEI_AK, HUAWEI_SK);
    let (p1_b, p2_b) = (
        Huawei::ak_sk(&admin_b, HUAWEI_AK, HUAWEI_SK),
        Huawei::token(&admin_b, HUAWEI_P2),
    );
    let r = p1_a
        .call(
            "POST",
            &v3(P1, "loadbalancers"),
            Some(json!({"loadbalancer": {"name": "lb-p1", "vpc_id": "vpc"}})),
        )
        .await;
    assert_status(&r, 201, "project 1 creates a load balancer through node A");
    let lb1 = r.body["loadbalancer"]["id"].as_str().unwrap().to_owned();
    let r = p1_a
        .call(
            "POST",
            &v3(P1, "pools"),
            Some(json!({"pool": {"loadbalancer_id": lb1, "protocol": "HTTP",
                "lb_algorithm": "ROUND_ROBIN", "name": "p"}})),
        )
        .await;
    assert_status(&r, 201, "project 1 creates a pool through node A");
    let pool1 = r.body["pool"]["id"].as_str().unwrap().to_owned();
    until_read(&admin_b, &format!("/v1/pools/{pool1}")).await;
    let r = p1_b
        .call("GET", &v3(P1, &format!("pools/{pool1}")), None)
        .await;
    assert_status(&r, 200, "project 1 reads its pool through node B");
    let r = p2_b.call("GET", &v3(P2, "loadbalancers"), None).await;
    assert_status(&r, 200, "project 2 lists through node B");
    assert_eq!(r.body["loadbalancers"], json!([]), "{}", r.body);
    let r = p2_b.call("GET", &v3(P2, "pools"), None).await;
    assert_eq!(r.body["pools"], json!([]), "{}", r.body);
    for (method, path, body) in [
        ("GET", v3(P2, &format!("loadbalancers/{lb1}")), None),
        ("GET", v3(P2, &format!("pools/{pool1}")), None),
        (
            "PUT",
            v3(P2, &format!("pools/{pool1}")),
            Some(json!({"pool": {"lb_algorithm": "SOURCE_IP"}})),
        ),
        ("DELETE", v3(P2, &format!("pools/{pool1}")), None),
        (
            "PUT",
            v3(P2, &format!("loadbalancers/{lb1}")),
            Some(json!({"loadbalancer": {"description": "p2 was here"}})),
        ),
    ] {
        let r = p2_b.call(method, &path, body).await;
        assert_huawei(
            &r,
            404,
            "ELB.8904",
            &format!("project 2 through node B: {method} {path}"),
        );
    }
    for admin in [&admin_a, &admin_b] {
        let pool = admin.read(&format!("/v1/pools/{pool1}")).await;
        assert_eq!(pool["algorithm"], "ROUND_ROBIN");
        let lb = admin.read(&format!("/v1/loadbalancers/{lb1}")).await;
        assert_eq!(lb["description"], "");
    }
    drop((a, b, etcd));
}
