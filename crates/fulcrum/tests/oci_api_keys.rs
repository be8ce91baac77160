//! OCI API keys registered and removed at run time through the native API and the CLI: a
//! fulcrum started with no `[oci] keys` accepts requests signed with a key from the moment
//! it is registered, keeps it across a restart, limits it to its compartments, and refuses
//! it once removed.

mod common;

use common::oci::Oci;
use common::{Api, Resp, Server};
use serde_json::{Value, json};

const TENANCY: &str = "ocid1.tenancy.oc1..runtime";
const COMPARTMENT_A: &str = "ocid1.compartment.oc1..aaaa";
const COMPARTMENT_B: &str = "ocid1.compartment.oc1..bbbb";
const READ: &str = "reader-token-0123456789";
const WEB_ADMIN: &str = "web-admin-token-0123456789";

fn start(dir: &std::path::Path) -> Server {
    let config = common::unlimited_config_with(
        dir,
        &format!(
            "[[api.tokens]]\nname = \"reader\"\ntoken = \"{READ}\"\nrole = \"read\"\n\n\
             [[api.tokens]]\nname = \"web-admin\"\ntoken = \"{WEB_ADMIN}\"\nloadbalancers = [\"web\"]\n"
        ),
    );
    Server::start_with(&dir.join("data"), &["--config", &config])
}

fn with_token(api: &Api, token: &str) -> Api {
    let mut api = api.unpooled();
    api.token = Some(token.to_owned());
    api
}

fn assert_status(r: &Resp, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
}

fn key(user: &str, compartments: Option<&[&str]>) -> Value {
    let mut k = json!({
        "tenancy": TENANCY,
        "user": user,
        "public_key_pem": common::oci::public_key_pem(),
    });
    if let Some(cs) = compartments {
        k["compartments"] = json!(cs);
    }
    k
}

fn list_in(compartment: &str) -> String {
    format!("/20170115/loadBalancers?compartmentId={compartment}")
}

#[tokio::test]
async fn a_key_registered_at_run_time_signs_requests_until_it_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let api = server.client();

    // Nothing is configured: every key id is a stranger.
    let stranger = Oci::new(&api, &format!("{TENANCY}/ocid1.user.oc1..all/00:11"));
    let r = stranger.call("GET", &list_in(COMPARTMENT_A), None).await;
    assert_status(&r, 401, "no key registered");
    assert_eq!(r.body["code"], "NotAuthenticated", "{}", r.body);

    // Registered: the answer names the key id the SDK's config must hold.
    let mut body = key("ocid1.user.oc1..all", None);
    body["name"] = json!("automation");
    let r = api
        .call("POST", "/v1/oci-api-keys", Some(body.clone()))
        .await;
    assert_status(&r, 201, "register");
    api.applied(&r).await;
    let all_id = r.id();
    let fingerprint = r.body["fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(
        fingerprint.len(),
        47,
        "16 hex pairs joined by ':': {fingerprint}"
    );
    let key_id = format!("{TENANCY}/ocid1.user.oc1..all/{fingerprint}");
    assert_eq!(r.body["key_id"], key_id);
    let all = Oci::new(&api, &key_id);
    let r = all.call("GET", &list_in(COMPARTMENT_A), None).await;
    assert_status(&r, 200, "signed with the registered key");

    // The same key again is a conflict; a bad key is refused naming the field, and
    // neither leaves anything behind.
    let r = api.call("POST", "/v1/oci-api-keys", Some(body)).await;
    assert_status(&r, 409, "registered twice");
    let mut bad = key("ocid1.user.oc1..bad", None);
    bad["public_key_pem"] = json!("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");
    let r = api.call("POST", "/v1/oci-api-keys", Some(bad)).await;
    assert_status(&r, 400, "an unreadable key");
    assert!(r.body.to_string().contains("public_key_pem"), "{}", r.body);
    let r = api
        .call(
            "POST",
            "/v1/oci-api-keys",
            Some(json!({"tenancy": TENANCY, "user": "u", "public_key_pem": "x", "role": "x"})),
        )
        .await;
    assert_status(&r, 400, "an unknown field");
    assert_eq!(api.items("/v1/oci-api-keys").await.len(), 1);

    // Only an unlimited administrator registers or removes keys, and only an unlimited
    // caller sees them.
    let reader = with_token(&api, READ);
    let r = reader
        .call(
            "POST",
            "/v1/oci-api-keys",
            Some(key("ocid1.user.oc1..r", None)),
        )
        .await;
    assert_status(&r, 403, "a read token registers");
    assert_eq!(reader.items("/v1/oci-api-keys").await.len(), 1);
    let web_admin = with_token(&api, WEB_ADMIN);
    let r = web_admin
        .call(
            "POST",
            "/v1/oci-api-keys",
            Some(key("ocid1.user.oc1..w", None)),
        )
        .await;
    assert_status(&r, 403, "an admin limited to one load balancer registers");
    let r = web_admin
        .call("DELETE", &format!("/v1/oci-api-keys/{all_id}"), None)
        .await;
    assert_status(&r, 403, "an admin limited to one load balancer removes");
    assert!(web_admin.items("/v1/oci-api-keys").await.is_empty());

    // A key limited to compartment B does not see A's load balancer.
    let r = api
        .call(
            "POST",
            "/v1/oci-api-keys",
            Some(key("ocid1.user.oc1..b", Some(&[COMPARTMENT_B]))),
        )
        .await;
    assert_status(&r, 201, "register a limited key");
    api.applied(&r).await;
    let only_b = Oci::new(&api, r.body["key_id"].as_str().unwrap());
    let r = all
        .call(
            "POST",
            "/20170115/loadBalancers",
            Some(
                json!({"compartmentId": COMPARTMENT_A, "displayName": "a-lb",
                "shapeName": "flexible", "subnetIds": ["ocid1.subnet.oc1..s"]}),
            ),
        )
        .await;
    assert_status(&r, 204, "create a load balancer in A");
    let listed = all.call("GET", &list_in(COMPARTMENT_A), None).await;
    assert_eq!(
        listed.body.as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.body
    );
    let lb = listed.body[0]["id"].as_str().unwrap().to_owned();
    let r = only_b
        .call("GET", &format!("/20170115/loadBalancers/{lb}"), None)
        .await;
    assert_status(&r, 404, "B's key reads A's load balancer");
    let r = only_b.call("GET", &list_in(COMPARTMENT_B), None).await;
    assert_status(&r, 200, "B's key lists B");

    // Kept across a crash and restart.
    drop(api);
    server.kill9();
    let server = start(dir.path());
    let api = server.client();
    let all = Oci::new(&api, &key_id);
    let r = all
        .call("GET", &format!("/20170115/loadBalancers/{lb}"), None)
        .await;
    assert_status(&r, 200, "after a restart");

    // Removed: refused from the moment the change is served.
    let r = api
        .call("DELETE", &format!("/v1/oci-api-keys/{all_id}"), None)
        .await;
    assert_status(&r, 202, "remove");
    api.applied(&r).await;
    let r = all.call("GET", &list_in(COMPARTMENT_A), None).await;
    assert_status(&r, 401, "signed with a removed key");
    let r = api
        .call("GET", &format!("/v1/oci-api-keys/{all_id}"), None)
        .await;
    assert_status(&r, 404, "read after removal");
}

fn fulcrum(server: &Server, args: &[&str]) -> (bool, String, String) {
    let (code, out, err) = common::cli(server, args);
    (code == Some(0), out, err)
}

#[tokio::test]
async fn the_cli_registers_lists_and_removes_keys_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let public = dir.path().join("key.pub.pem");
    std::fs::write(&public, common::oci::public_key_pem()).unwrap();

    let (ok, out, err) = fulcrum(
        &server,
        &[
            "oci-api-key",
            "create",
            "--tenancy",
            TENANCY,
            "--user",
            "ocid1.user.oc1..cli",
            "--public-key-file",
            public.to_str().unwrap(),
            "--name",
            "ci",
            "--compartment",
            COMPARTMENT_A,
            "--wait",
            "-o",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let key_id = created["key_id"].as_str().unwrap().to_owned();
    assert!(
        key_id.starts_with(&format!("{TENANCY}/ocid1.user.oc1..cli/")),
        "{created}"
    );
    assert_eq!(created["compartments"], json!([COMPARTMENT_A]));

    let api = server.client();
    let oci = Oci::new(&api, &key_id);
    let r = oci.call("GET", &list_in(COMPARTMENT_A), None).await;
    assert_status(&r, 200, "signed with the key the CLI registered");

    let (ok, table, err) = fulcrum(&server, &["oci-api-key", "list"]);
    assert!(
        ok && table.contains("ci") && table.contains(&key_id),
        "{table}{err}"
    );
    let (ok, out, err) = fulcrum(&server, &["oci-api-key", "get", "ci", "-o", "json"]);
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["key_id"],
        key_id
    );

    let (ok, out, err) = fulcrum(&server, &["oci-api-key", "delete", "ci", "--wait"]);
    assert!(ok && out.contains("SUCCEEDED"), "{out}{err}");
    let r = oci.call("GET", &list_in(COMPARTMENT_A), None).await;
    assert_status(&r, 401, "signed with the key the CLI removed");
    let (ok, _, err) = fulcrum(
        &server,
        &[
            "oci-api-key",
            "create",
            "--tenancy",
            TENANCY,
            "--user",
            "u",
            "--public-key-file",
            "/nonexistent/key.pem",
        ],
    );
    assert!(!ok && err.contains("/nonexistent/key.pem"), "{err}");
}
