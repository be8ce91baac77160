//! Completes the OpenAPI document utoipa derives from the handlers, where the derive leaves
//! what a standard tool needs unsaid:
//!
//! - every `{parameter}` of a path template is declared as a path parameter;
//! - every error status an operation can answer is documented with [`ErrorBody`]
//!   (`error_statuses` says which, from what the operation takes: a token, path
//!   parameters, a query, a body, a change);
//! - a resource (`LoadBalancer`) and its view (`LoadBalancerView`, also inlined in
//!   `Page_LoadBalancerView`) are each one object schema. The derive writes a
//!   `#[serde(flatten)]` as `allOf`: the view of the resource of the spec, and a spec
//!   refuses unknown fields (`additionalProperties: false`, right for a request body);
//!   under `allOf` that would refuse the view's own fields (`id`,
//!   `provisioning_status`, …), so each lists its properties itself;
//! - request bodies say what the model checks, so that data a tool generates from them is
//!   data the server takes: integers their type's range (`bound_integers`), the rules a
//!   schema can state (`state_model_rules`), updates as merge patches of their spec
//!   (`describe_patches`), a batch's two shapes of member (`batch_members`), a work
//!   request page's token as the revision it is (`work_request_page_token`).
//!
//! [`ErrorBody`]: super::error::ErrorBody

use serde_json::{Map, Value, json};

const ERROR_BODY: &str = "#/components/schemas/ErrorBody";

/// The served document: utoipa's, completed.
pub(crate) fn complete(doc: &utoipa::openapi::OpenApi) -> Value {
    // utoipa's document is maps with string keys: it always serialises.
    let mut doc = serde_json::to_value(doc).unwrap_or(Value::Null);
    bound_integers(&mut doc);
    state_model_rules(&mut doc);
    describe_patches(&mut doc);
    work_request_page_token(&mut doc);
    batch_members(&mut doc);
    flatten_all_of(&mut doc);
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, operation) in item.iter_mut() {
                if let Some(operation) = operation.as_object_mut() {
                    declare_path_parameters(path, operation);
                    document_errors(path, method, operation);
                }
            }
        }
    }
    doc
}

/// What utoipa writes for a Rust integer type's `format` (feature `non_strict_integers`),
/// and that type's range.
const INTEGER_FORMATS: &[(&str, i128, i128)] = &[
    ("int8", i8::MIN as i128, i8::MAX as i128),
    ("int16", i16::MIN as i128, i16::MAX as i128),
    ("int32", i32::MIN as i128, i32::MAX as i128),
    ("int64", i64::MIN as i128, i64::MAX as i128),
    ("uint8", 0, u8::MAX as i128),
    ("uint16", 0, u16::MAX as i128),
    ("uint32", 0, u32::MAX as i128),
    ("uint64", 0, u64::MAX as i128),
];

/// States the range of every integer as bounds: a `u8` is 0..255, and a larger number is
/// refused when the body is read. `int32` and `int64` are OpenAPI's own formats and stay;
/// the others are not standard, so their bounds replace them.
fn bound_integers(node: &mut Value) {
    match node {
        Value::Object(object) => {
            let format = object
                .get("format")
                .and_then(Value::as_str)
                // utoipa spells `UInt8` in kebab case.
                .map(|f| f.replace("u-int", "uint"));
            if let Some((name, min, max)) = format
                .as_deref()
                .and_then(|f| INTEGER_FORMATS.iter().find(|(n, _, _)| *n == f))
            {
                let bound = |v: Option<&Value>, pick: fn(i128, i128) -> i128, limit: i128| {
                    let given = v.and_then(|v| {
                        v.as_i64()
                            .map(i128::from)
                            .or_else(|| v.as_u64().map(i128::from))
                    });
                    given.map_or(limit, |g| pick(g, limit))
                };
                let lo = bound(object.get("minimum"), i128::max, *min);
                let hi = bound(object.get("maximum"), i128::min, *max);
                object.insert("minimum".into(), integer(lo));
                object.insert("maximum".into(), integer(hi));
                if !matches!(*name, "int32" | "int64") {
                    object.remove("format");
                }
            }
            for child in object.values_mut() {
                bound_integers(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

fn integer(v: i128) -> Value {
    i64::try_from(v)
        .map(Value::from)
        .or_else(|_| u64::try_from(v).map(Value::from))
        .unwrap_or(Value::Null)
}

/// Characters Rust's `char::is_whitespace` (Unicode White_Space) knows: a name made of
/// nothing else is blank (`str::trim`). Spelled out, since `\s` differs between regex
/// dialects.
const NOT_WHITESPACE: &str =
    "[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

/// An IPv4 address as `ipnet` reads one in a network: four numbers below 256, each of at
/// most three digits (leading zeros allowed, unlike `std::net::Ipv4Addr`).
const NET_IPV4: &str =
    "(25[0-5]|2[0-4][0-9]|[01]?[0-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|[01]?[0-9]?[0-9])){3}";

/// An IPv6 address as `ipnet` reads one in a network: eight groups of at most four hex
/// digits (the last two possibly an IPv4 address), or `h` groups, `::`, and at most
/// `8 - h` more (again ending possibly in an IPv4 address).
fn net_ipv6() -> String {
    let g = "[0-9a-fA-F]{1,4}";
    let mut alternatives = vec![format!("({g}:){{7}}{g}"), format!("({g}:){{6}}{NET_IPV4}")];
    for head in 0..8 {
        let room = 8 - head;
        let head = match head {
            0 => String::new(),
            h => format!("{g}(:{g}){{{}}}", h - 1),
        };
        let mut tails = vec![format!("{g}(:{g}){{0,{}}}", room - 1)];
        if room >= 2 {
            tails.push(format!("({g}:){{0,{}}}{NET_IPV4}", room - 2));
        }
        alternatives.push(format!("{head}::({})?", tails.join("|")));
    }
    alternatives
        .iter()
        .map(|a| format!("({a})"))
        .collect::<Vec<_>>()
        .join("|")
}

/// An IP address (`std::net::IpAddr`).
fn ip_address() -> Value {
    json!({"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]})
}

/// A network in CIDR notation, as `ipnet::IpNet` reads one: an address and a prefix length
/// within its family's bits (at most two digits for IPv4, three for IPv6). Host bits set
/// are refused too, which no pattern states.
fn ip_network() -> Value {
    json!({"anyOf": [
        {"pattern": format!("^{NET_IPV4}/([0-2]?[0-9]|3[0-2])$")},
        {"pattern": format!("^({})/(12[0-8]|1[01][0-9]|0?[0-9]?[0-9])$", net_ipv6())},
    ]})
}

/// A DNS host name (`fulcrum_model::is_host_name`): RFC 1123 labels of 1..63 letters,
/// digits and inner hyphens, at most 253 characters.
const HOST_NAME: &str =
    "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*";

fn host_name() -> Value {
    json!({"pattern": format!("^{HOST_NAME}$"), "maxLength": 253})
}

/// A host name, or one with a leading `*.` label.
fn host_name_or_wildcard() -> Value {
    json!({"anyOf": [
        host_name(),
        {"pattern": format!("^\\*\\.{HOST_NAME}$"), "maxLength": 255},
    ]})
}

/// A virtual host (`fulcrum_model::is_virtual_host_name`): a host name, or one with `*` in
/// place of its first or last label.
fn virtual_host_name() -> Value {
    json!({"anyOf": [
        host_name(),
        {"pattern": format!("^\\*\\.{HOST_NAME}$"), "maxLength": 255},
        {"pattern": format!("^{HOST_NAME}\\.\\*$"), "maxLength": 255},
    ]})
}

/// Text that holds both a PEM certificate's and a private key's armour, in either order
/// (they may share the dashes between them); or the mask reads show for a secret.
const CERTIFICATE_AND_KEY: &str = "^\\*\\*\\*$|-----BEGIN CERTIFICATE-----[\\s\\S]*PRIVATE KEY-----|PRIVATE KEY-----[\\s\\S]*-----BEGIN CERTIFICATE-----|PRIVATE KEY-----+BEGIN CERTIFICATE-----";

/// A private key's armour; or the mask reads show for a secret (`Secrets`).
const PRIVATE_KEY: &str = "^\\*\\*\\*$|PRIVATE KEY-----";

/// An HTTP header name (`fulcrum_model::is_header_name`).
const HEADER_NAME: &str = "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$";
/// An HTTP header value (`fulcrum_model::is_header_value`).
const HEADER_VALUE: &str = "^[\\t -~]*$";

/// The rules of the model's validation (`fulcrum_model`'s `validate` functions) that a
/// schema can state, on the properties they concern: lengths, ranges, patterns, the
/// address and network formats. What stays unsaid depends on other fields or on what is
/// stored (a timeout within its interval, a CIDR's host bits, a referenced pool, a port
/// in use); `scripts/api-fuzz` says where.
fn state_model_rules(doc: &mut Value) {
    use fulcrum_model::{
        MAX_BATCH_MEMBERS, MAX_CERTIFICATE_DOMAINS, MAX_LISTENER_HOSTNAMES, MAX_NAME_LEN,
        MAX_PEM_LEN, MAX_ROUTE_PATH, MAX_ROUTE_SET_SOURCE, MAX_SNI_CERTIFICATES, MAX_WEIGHT,
    };
    let name = json!({"maxLength": MAX_NAME_LEN});
    // An OCID as `OciApiKeySpec` takes one: printable ASCII but '/', at most 255.
    let ocid = json!({"pattern": "^[!-.0-~]+$", "maxLength": 255});
    let port = json!({"minimum": 1, "maximum": 65535});
    let vpc_id = json!({"maxLength": 36});
    let ms_hour = json!({"minimum": 1, "maximum": 3_600_000});
    let path = json!({"pattern": "^/[^\\u0000- \\u007f]*$", "maxLength": MAX_ROUTE_PATH});
    let rules: Vec<(&str, &str, Value)> = vec![
        (
            "LoadBalancerSpec",
            "name",
            json!({"maxLength": MAX_NAME_LEN, "pattern": NOT_WHITESPACE}),
        ),
        ("LoadBalancerSpec", "description", name.clone()),
        ("LoadBalancerSpec", "vip_address", ip_address()),
        ("LoadBalancerSpec", "vpc_id", vpc_id.clone()),
        (
            "LoadBalancerSpec",
            "labels",
            json!({"propertyNames": {"minLength": 1, "maxLength": 128},
                   "additionalProperties": {"type": "string", "maxLength": 1024}}),
        ),
        (
            "RouteSet",
            "name",
            json!({"minLength": 1, "maxLength": MAX_NAME_LEN}),
        ),
        (
            "RouteSet",
            "source",
            json!({"maxLength": MAX_ROUTE_SET_SOURCE}),
        ),
        (
            "Hostname",
            "name",
            json!({"minLength": 1, "maxLength": MAX_NAME_LEN}),
        ),
        ("Hostname", "hostname", virtual_host_name()),
        ("L7Route", "id", name.clone()),
        ("L7Route", "name", name.clone()),
        ("L7Route", "description", name.clone()),
        ("L7Route", "host", host_name_or_wildcard()),
        ("L7Route", "path_prefix", path.clone()),
        ("L7Route", "path_exact", path.clone()),
        (
            "L7Route",
            "path_suffix",
            json!({"pattern": "^[^\\u0000- \\u007f]+$", "maxLength": MAX_ROUTE_PATH}),
        ),
        ("ListenerSpec", "name", name.clone()),
        ("ListenerSpec", "description", name.clone()),
        ("ListenerSpec", "port", port.clone()),
        (
            "ListenerSpec",
            "hostnames",
            json!({"maxItems": MAX_LISTENER_HOSTNAMES, "uniqueItems": true}),
        ),
        ("ListenerSpec", "connection_limit", json!({"minimum": 1})),
        (
            "ListenerTls",
            "sni_certificate_ids",
            json!({"maxItems": MAX_SNI_CERTIFICATES, "uniqueItems": true}),
        ),
        ("SniCertificate", "server_name", host_name_or_wildcard()),
        (
            "SniCertificate",
            "certificate_chain_pem",
            json!({"pattern": "-----BEGIN CERTIFICATE-----"}),
        ),
        (
            "SniCertificate",
            "private_key_pem",
            json!({"pattern": PRIVATE_KEY}),
        ),
        ("ListenerTimeouts", "connect_ms", ms_hour.clone()),
        ("ListenerTimeouts", "client_header_ms", ms_hour.clone()),
        ("ListenerTimeouts", "idle_ms", ms_hour.clone()),
        ("ListenerTimeouts", "upstream_response_ms", ms_hour.clone()),
        (
            "ListenerAccessLog",
            "sample_one_in",
            json!({"minimum": 1, "maximum": 1_000_000}),
        ),
        ("PoolSpec", "name", name.clone()),
        ("PoolSpec", "description", name.clone()),
        ("PoolSpec", "admin_state_up", json!({"const": true})),
        ("PoolSpec", "vpc_id", vpc_id.clone()),
        ("PoolSpec", "protection_reason", name.clone()),
        (
            "PoolSpec",
            "max_connections_per_member",
            json!({"minimum": 1}),
        ),
        // Shared load balancers allow 64 characters and no dots, dedicated ones these.
        (
            "SessionPersistence",
            "cookie_name",
            json!({"pattern": "^[A-Za-z0-9_.-]+$", "maxLength": 255}),
        ),
        // TCP and UDP pools allow 60 minutes, HTTP pools this.
        (
            "SessionPersistence",
            "persistence_timeout",
            json!({"minimum": 1, "maximum": 1440}),
        ),
        (
            "SlowStart",
            "duration",
            json!({"minimum": 30, "maximum": 1200}),
        ),
        ("QuicLb", "config_id", json!({"minimum": 0, "maximum": 6})),
        (
            "QuicLb",
            "server_id_len",
            json!({"minimum": 1, "maximum": 15}),
        ),
        ("QuicLb", "nonce_len", json!({"minimum": 4, "maximum": 18})),
        (
            "OutlierDetection",
            "consecutive_5xx",
            json!({"minimum": 0, "maximum": 10_000}),
        ),
        (
            "OutlierDetection",
            "consecutive_gateway_failures",
            json!({"minimum": 0, "maximum": 10_000}),
        ),
        (
            "OutlierDetection",
            "interval_ms",
            json!({"minimum": 100, "maximum": 3_600_000}),
        ),
        (
            "OutlierDetection",
            "base_ejection_ms",
            json!({"minimum": 100, "maximum": 3_600_000}),
        ),
        // At least base_ejection_ms.
        (
            "OutlierDetection",
            "max_ejection_ms",
            json!({"minimum": 100, "maximum": 3_600_000}),
        ),
        (
            "OutlierDetection",
            "max_ejection_percent",
            json!({"minimum": 0, "maximum": 100}),
        ),
        (
            "OutlierDetection",
            "success_rate_minimum_requests",
            json!({"minimum": 0, "maximum": 1_000_000}),
        ),
        (
            "OutlierDetection",
            "success_rate_minimum_members",
            json!({"minimum": 1, "maximum": 10_000}),
        ),
        (
            "OutlierDetection",
            "success_rate_stdev_factor",
            json!({"minimum": 1, "maximum": 100_000}),
        ),
        ("MemberTimeouts", "first_byte_ms", ms_hour.clone()),
        (
            "MemberTimeouts",
            "total_ms",
            json!({"minimum": 1, "maximum": 86_400_000}),
        ),
        (
            "UpstreamSettings",
            "base_path",
            json!({"pattern": "^(/|$)", "maxLength": 2048}),
        ),
        (
            "Credentials",
            "headers",
            json!({"propertyNames": {"pattern": HEADER_NAME},
                   "additionalProperties": {"type": "array",
                       "items": {"type": "string", "pattern": HEADER_VALUE}}}),
        ),
        (
            "Credentials",
            "query",
            json!({"propertyNames": {"minLength": 1}}),
        ),
        (
            "Credentials",
            "client_certificate_pem",
            json!({"pattern": CERTIFICATE_AND_KEY}),
        ),
        ("Authorization", "scheme", json!({"pattern": HEADER_NAME})),
        (
            "Authorization",
            "parameter",
            json!({"pattern": HEADER_VALUE}),
        ),
        (
            "ForwardProxy",
            "url",
            json!({"pattern": "^http://[^/?#@]+$"}),
        ),
        (
            "CircuitBreakerRule",
            "name",
            json!({"minLength": 1, "maxLength": 128}),
        ),
        (
            "CircuitBreakerRule",
            "trip_duration_ms",
            json!({"minimum": 1, "maximum": 86_400_000}),
        ),
        (
            "FailureCondition",
            "count",
            json!({"minimum": 1, "maximum": 1_000_000}),
        ),
        (
            "FailureCondition",
            "percentage",
            json!({"minimum": 1, "maximum": 100}),
        ),
        (
            "FailureCondition",
            "interval_ms",
            json!({"minimum": 1, "maximum": 86_400_000}),
        ),
        (
            "FailureCondition",
            "error_reasons",
            json!({"items": {"minLength": 1, "maxLength": 200}}),
        ),
        (
            "StatusCodeRange",
            "min",
            json!({"minimum": 100, "maximum": 599}),
        ),
        (
            "StatusCodeRange",
            "max",
            json!({"minimum": 100, "maximum": 599}),
        ),
        ("MemberSpec", "name", name.clone()),
        (
            "MemberSpec",
            "address",
            json!({"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}, host_name()]}),
        ),
        ("MemberSpec", "port", port.clone()),
        (
            "MemberSpec",
            "weight",
            json!({"minimum": 0, "maximum": MAX_WEIGHT}),
        ),
        (
            "MemberSpec",
            "priority",
            json!({"minimum": 0, "maximum": 100}),
        ),
        ("MemberSpec", "max_connections", json!({"minimum": 1})),
        (
            "MemberSpec",
            "server_id",
            json!({"pattern": "^([0-9A-Fa-f]{2})+$"}),
        ),
        ("HealthMonitorSpec", "name", name.clone()),
        (
            "HealthMonitorSpec",
            "interval_ms",
            json!({"minimum": 100, "maximum": 3_600_000}),
        ),
        // At most interval_ms.
        (
            "HealthMonitorSpec",
            "timeout_ms",
            json!({"minimum": 10, "maximum": 3_600_000}),
        ),
        (
            "HealthMonitorSpec",
            "healthy_threshold",
            json!({"minimum": 1, "maximum": 10}),
        ),
        (
            "HealthMonitorSpec",
            "unhealthy_threshold",
            json!({"minimum": 1, "maximum": 10}),
        ),
        ("HealthMonitorSpec", "port", port.clone()),
        (
            "HealthMonitorSpec",
            "http_method",
            json!({"enum": fulcrum_model::HTTP_METHODS}),
        ),
        ("HealthMonitorSpec", "url_path", path.clone()),
        ("HealthMonitorSpec", "domain_name", host_name()),
        ("SubnetSpec", "name", name.clone()),
        ("SubnetSpec", "description", name.clone()),
        ("SubnetSpec", "cidr", ip_network()),
        (
            "SubnetSpec",
            "vpc_id",
            json!({"minLength": 1, "maxLength": 36}),
        ),
        ("SubnetSpec", "gateway_ip", ip_address()),
        ("VpcSpec", "name", name.clone()),
        ("VpcSpec", "description", name.clone()),
        ("VpcSpec", "cidr", ip_network()),
        ("CertificateSpec", "name", name.clone()),
        ("CertificateSpec", "description", name.clone()),
        (
            "CertificateSpec",
            "certificate_chain_pem",
            json!({"pattern": "-----BEGIN CERTIFICATE-----", "maxLength": MAX_PEM_LEN}),
        ),
        (
            "CertificateSpec",
            "domains",
            json!({"maxItems": MAX_CERTIFICATE_DOMAINS, "items": host_name_or_wildcard()}),
        ),
        (
            "CertificateSpec",
            "private_key_pem",
            json!({"pattern": PRIVATE_KEY, "maxLength": MAX_PEM_LEN}),
        ),
        (
            "BatchRequest",
            "members",
            json!({"maxItems": MAX_BATCH_MEMBERS}),
        ),
        ("OciApiKeySpec", "tenancy", ocid.clone()),
        ("OciApiKeySpec", "user", ocid.clone()),
        ("OciApiKeySpec", "name", name.clone()),
        (
            "OciApiKeySpec",
            "public_key_pem",
            json!({"pattern": "-----BEGIN PUBLIC KEY-----", "maxLength": 8 * 1024}),
        ),
        ("OciApiKeySpec", "compartments", json!({"items": ocid})),
    ];
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (schema, property, rule) in rules {
        let Some(target) = schemas
            .get_mut(schema)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(property))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if let Value::Object(rule) = rule {
            for (k, v) in rule {
                // An array's item rules join what the item already is.
                match (k.as_str(), target.get_mut("items"), v) {
                    ("items", Some(Value::Object(items)), Value::Object(more)) => {
                        items.extend(more);
                    }
                    (_, _, v) => {
                        target.insert(k, v);
                    }
                }
            }
        }
    }
}

/// Each resource's update path and the spec its merge patch applies to.
const PATCHED: &[(&str, &str)] = &[
    ("/v1/loadbalancers/{id}", "LoadBalancerSpec"),
    ("/v1/listeners/{id}", "ListenerSpec"),
    ("/v1/pools/{id}", "PoolSpec"),
    ("/v1/pools/{id}/members/{member_id}", "MemberSpec"),
    ("/v1/healthmonitors/{id}", "HealthMonitorSpec"),
    ("/v1/subnets/{id}", "SubnetSpec"),
    ("/v1/vpcs/{id}", "VpcSpec"),
    ("/v1/certificates/{id}", "CertificateSpec"),
];

/// An update's body is a JSON merge patch (RFC 7396) of the spec: any of its fields, or
/// `null` to put an optional one back to its default (never a required field's). Objects
/// within merge into what is stored, so their fields are each optional and nullable too;
/// arrays replace what is stored, so they are as the spec states them. A `null` for a
/// field the spec does not have removes nothing, and is accepted. `{Spec}Patch` (e.g.
/// `MemberSpecPatch`) says so, in place of any object.
fn describe_patches(doc: &mut Value) {
    let schemas = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (path, spec) in PATCHED {
        let Some(schema) = schemas.get(*spec) else {
            continue;
        };
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut properties = Map::new();
        for (k, v) in schema["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default()
        {
            let v = if required.contains(&k.as_str()) {
                v
            } else {
                nullable(merged(&v, &schemas, 0))
            };
            properties.insert(k, v);
        }
        let patch = json!({
            "description": format!("A JSON merge patch of a {spec}: the fields to change, or null to put an optional one back to its default."),
            "type": "object",
            "properties": properties,
            "additionalProperties": {"type": "null"},
        });
        let name = format!("{spec}Patch");
        if let Some(all) = doc
            .pointer_mut("/components/schemas")
            .and_then(Value::as_object_mut)
        {
            all.insert(name.clone(), patch);
        }
        let pointer = format!(
            "/paths/{}/patch/requestBody/content/application~1json/schema",
            path.replace('~', "~0").replace('/', "~1")
        );
        if let Some(body) = doc.pointer_mut(&pointer) {
            *body = json!({"$ref": format!("#/components/schemas/{name}")});
        }
    }
}

fn nullable(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

/// What a merge patch may hold where a value of `schema` is stored: an object's fields
/// each optional and nullable (unknown ones only as `null`), its map values nullable; a
/// reference resolved, since the object it names merges too. `depth` stops a cycle.
fn merged(schema: &Value, schemas: &Map<String, Value>, depth: usize) -> Value {
    if depth > 16 {
        return schema.clone();
    }
    if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
        let Some(resolved) = target
            .strip_prefix("#/components/schemas/")
            .and_then(|name| schemas.get(name))
        else {
            return schema.clone();
        };
        let mut out = merged(resolved, schemas, depth + 1);
        if let (Some(out), Some(d)) = (out.as_object_mut(), schema.get("description")) {
            out.insert("description".into(), d.clone());
        }
        return out;
    }
    let Some(object) = schema.as_object() else {
        return schema.clone();
    };
    let mut out = object.clone();
    // Alternatives that each may now be null: `oneOf` would refuse a null both allow.
    for key in ["oneOf", "anyOf"] {
        if let Some(parts) = out.remove(key).and_then(|p| p.as_array().cloned()) {
            let parts: Vec<Value> = parts
                .iter()
                .map(|p| merged(p, schemas, depth + 1))
                .collect();
            out.insert("anyOf".into(), Value::Array(parts));
        }
    }
    if let Some(properties) = object.get("properties").and_then(Value::as_object) {
        let properties: Map<String, Value> = properties
            .iter()
            .map(|(k, v)| (k.clone(), nullable(merged(v, schemas, depth + 1))))
            .collect();
        out.insert("properties".into(), Value::Object(properties));
        out.remove("required");
        if object.get("additionalProperties") == Some(&Value::Bool(false)) {
            out.insert("additionalProperties".into(), json!({"type": "null"}));
        }
    } else if let Some(values) = object.get("additionalProperties").filter(|v| v.is_object()) {
        // A map: a key given null is removed (whatever its name), others set.
        out.insert("additionalProperties".into(), nullable(values.clone()));
        out.remove("propertyNames");
    }
    Value::Object(out)
}

/// A work request page's token is the revision of its last item (newest first), an
/// integer; the other lists' tokens are ids.
fn work_request_page_token(doc: &mut Value) {
    let Some(parameters) = doc
        .pointer_mut("/paths/~1v1~1work-requests/get/parameters")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for p in parameters {
        if p["name"] == "page_token" && p["in"] == "query" {
            p["schema"] = json!({"type": ["integer", "null"], "format": "int64",
                "minimum": i64::MIN, "maximum": i64::MAX});
            p["description"] = json!("`next_page_token` of the previous page: a revision.");
        }
    }
}

/// A batch's `members` are member specs to add or replace with, or `{"id": …}` objects
/// naming the members to delete.
fn batch_members(doc: &mut Value) {
    let Some(batch) = doc.pointer_mut("/components/schemas/BatchRequest") else {
        return;
    };
    let description = batch.get("description").cloned().unwrap_or(Value::Null);
    let members = batch
        .pointer("/properties/members")
        .cloned()
        .unwrap_or(json!({}));
    let with = |action: Value, item: Value| {
        let mut members = members.clone();
        members["items"] = item;
        json!({
            "type": "object",
            "properties": {"action": action, "members": members},
            "required": ["action", "members"],
            "additionalProperties": false,
        })
    };
    *batch = json!({
        "description": description,
        "oneOf": [
            with(
                json!({"type": "string", "enum": ["add", "replace"]}),
                json!({"$ref": "#/components/schemas/MemberSpec"}),
            ),
            with(
                json!({"type": "string", "enum": ["delete"]}),
                json!({"type": "object", "properties": {"id": {"type": "string"}},
                       "required": ["id"], "additionalProperties": false}),
            ),
        ],
    });
}

/// The names in a path template's braces, in order.
fn template_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

/// What a path parameter names, from the path segment before it.
fn describe_parameter(path: &str, name: &str) -> String {
    let before = path
        .split_once(&format!("/{{{name}}}"))
        .and_then(|(head, _)| head.rsplit('/').next())
        .unwrap_or_default();
    let noun = match before {
        "loadbalancers" => "load balancer",
        "listeners" => "listener",
        "pools" => "pool",
        "members" => "member",
        "healthmonitors" => "health monitor",
        "subnets" => "subnet",
        "certificates" => "certificate",
        "oci-api-keys" => "OCI API key",
        "work-requests" => "work request",
        _ => "resource",
    };
    format!("The {noun}'s id.")
}

fn declare_path_parameters(path: &str, operation: &mut Map<String, Value>) {
    let parameters = operation
        .entry("parameters")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(parameters) = parameters.as_array_mut() else {
        return;
    };
    for name in template_parameters(path) {
        let declared = parameters.iter().any(|p| {
            p.get("in").and_then(Value::as_str) == Some("path")
                && p.get("name").and_then(Value::as_str) == Some(name)
        });
        if !declared {
            parameters.push(json!({
                "name": name,
                "in": "path",
                "required": true,
                "description": describe_parameter(path, name),
                "schema": {"type": "string"},
            }));
        }
    }
}

/// The error statuses an operation can answer, and what each means there.
fn error_statuses(
    path: &str,
    method: &str,
    operation: &Map<String, Value>,
) -> Vec<(u16, &'static str)> {
    let authenticated = operation
        .get("security")
        .and_then(Value::as_array)
        .is_none_or(|s| {
            s.iter()
                .any(|r| r.as_object().is_some_and(|r| !r.is_empty()))
        });
    let has = |place: &str| {
        operation
            .get("parameters")
            .and_then(Value::as_array)
            .is_some_and(|ps| {
                ps.iter()
                    .any(|p| p.get("in").and_then(Value::as_str) == Some(place))
            })
    };
    let has_body = operation.contains_key("requestBody");
    let change = matches!(method, "post" | "put" | "patch" | "delete");
    // Work requests are read from the store when they are not in the view.
    let reads_store = path.starts_with("/v1/work-requests");
    let mut statuses = Vec::new();
    if has("query") || has_body || change {
        statuses.push((
            400,
            "The request is invalid: a parameter, a header or the body (`field` names it).",
        ));
    }
    if authenticated {
        statuses.push((401, "No valid bearer token or client certificate."));
    }
    if has("path") || change {
        statuses.push((404, "The resource, or one it names, does not exist."));
    }
    if has_body {
        statuses.push((408, "The request body did not arrive in time."));
    }
    if change {
        statuses.push((
            409,
            "Conflicts with the current state: a duplicate, a resource still in use, a lock, a reused idempotency key.",
        ));
        statuses.push((
            412,
            "`If-Match` does not match the resource's current ETag.",
        ));
    }
    if has_body {
        statuses.push((413, "The request body is too large."));
    }
    if authenticated {
        statuses.push((
            429,
            "Rate limited, or too many failed authentications from this address (see `Retry-After`).",
        ));
    }
    if change || reads_store {
        statuses.push((500, "An internal error (logged on the server)."));
        statuses.push((
            503,
            "The store cannot be reached or did not confirm the change (see `Retry-After`).",
        ));
    }
    statuses
}

fn document_errors(path: &str, method: &str, operation: &mut Map<String, Value>) {
    let statuses = error_statuses(path, method, operation);
    let responses = operation
        .entry("responses")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(responses) = responses.as_object_mut() else {
        return;
    };
    let error = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": ERROR_BODY}}},
        })
    };
    // A response object must have a description (utoipa leaves it out when the handler
    // gives none).
    for (status, response) in responses.iter_mut() {
        if let Some(response) = response.as_object_mut()
            && response
                .get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            let reason = status
                .parse::<u16>()
                .ok()
                .and_then(|s| http::StatusCode::from_u16(s).ok())
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Response");
            response.insert("description".into(), Value::String(reason.to_owned()));
        }
    }
    for (status, description) in statuses {
        let entry = responses
            .entry(status.to_string())
            .or_insert_with(|| error(description));
        // Errors the handlers declared themselves say what they mean here.
        entry["description"] = Value::String(description.to_owned());
    }
}

/// Rewrites every `allOf` of object schemas (a `#[serde(flatten)]`: the views, the stored
/// resources, and the views inlined in `Page_…`) as one object with all their properties.
fn flatten_all_of(doc: &mut Value) {
    let schemas = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    flatten_within(doc, &schemas);
}

fn flatten_within(node: &mut Value, schemas: &Map<String, Value>) {
    match node {
        Value::Object(object) => {
            if let Some(parts) = object.get("allOf").and_then(Value::as_array)
                && parts.iter().all(|p| is_object_schema(p, schemas))
            {
                let mut properties = Map::new();
                let mut required = Vec::new();
                collect(node, schemas, &mut properties, &mut required, 0);
                let mut flat = Map::new();
                if let Some(description) = node.get("description") {
                    flat.insert("description".into(), description.clone());
                }
                flat.insert("type".into(), json!("object"));
                flat.insert("properties".into(), Value::Object(properties));
                flat.insert("required".into(), Value::Array(required));
                *node = Value::Object(flat);
            }
            if let Value::Object(object) = node {
                for child in object.values_mut() {
                    flatten_within(child, schemas);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                flatten_within(item, schemas);
            }
        }
        _ => {}
    }
}

/// Whether a schema (or the one it refers to) is an object with properties, or an `allOf`.
fn is_object_schema(schema: &Value, schemas: &Map<String, Value>) -> bool {
    let resolved = match schema.get("$ref").and_then(Value::as_str) {
        Some(target) => match target
            .strip_prefix("#/components/schemas/")
            .and_then(|name| schemas.get(name))
        {
            Some(s) => s,
            None => return false,
        },
        None => schema,
    };
    resolved.get("properties").is_some() || resolved.get("allOf").is_some()
}

/// Gathers the properties and required names of an object schema and of every schema its
/// `allOf` names. `depth` stops a reference cycle.
fn collect(
    schema: &Value,
    schemas: &Map<String, Value>,
    properties: &mut Map<String, Value>,
    required: &mut Vec<Value>,
    depth: usize,
) {
    if depth > 16 {
        return;
    }
    if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
        if let Some(resolved) = target
            .strip_prefix("#/components/schemas/")
            .and_then(|name| schemas.get(name))
        {
            collect(resolved, schemas, properties, required, depth + 1);
        }
        return;
    }
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        for part in parts {
            collect(part, schemas, properties, required, depth + 1);
        }
    }
    if let Some(own) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in own {
            properties.insert(k.clone(), v.clone());
        }
    }
    if let Some(own) = schema.get("required").and_then(Value::as_array) {
        for r in own {
            if !required.contains(r) {
                required.push(r.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> Value {
        super::super::openapi_document()
    }

    #[test]
    fn every_path_parameter_is_declared() {
        let doc = document();
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for name in template_parameters(path) {
                    let declared =
                        op["parameters"].as_array().unwrap().iter().any(|p| {
                            p["in"] == "path" && p["name"] == name && p["required"] == true
                        });
                    assert!(declared, "{method} {path}: {{{name}}} is not declared");
                    checked += 1;
                }
            }
        }
        assert!(checked >= 30, "only {checked} path parameters seen");
    }

    #[test]
    fn errors_are_documented_with_the_error_body() {
        let doc = document();
        let op = &doc["paths"]["/v1/pools/{id}/members/{member_id}"]["patch"];
        for status in [
            "400", "401", "404", "408", "409", "412", "413", "429", "503",
        ] {
            assert_eq!(
                op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                ERROR_BODY,
                "PATCH member: {status}"
            );
        }
        let health = &doc["paths"]["/v1/health"]["get"];
        assert!(
            health["responses"].get("401").is_none(),
            "health needs no token"
        );
        let list = &doc["paths"]["/v1/loadbalancers"]["get"];
        assert!(
            list["responses"].get("409").is_none(),
            "a read never conflicts"
        );
        assert!(
            list["responses"].get("400").is_some(),
            "its query can be refused"
        );
    }

    #[test]
    fn views_are_flat_objects_that_allow_their_own_fields() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let listed = &schemas["Page_MemberView"]["properties"]["items"]["items"];
        for (view, schema) in ["LoadBalancerView", "ListenerView", "PoolView", "MemberView"]
            .iter()
            .map(|v| (*v, &schemas[*v]))
            .chain([("Page_MemberView items", listed)])
        {
            assert!(schema.get("allOf").is_none(), "{view}: {schema}");
            assert!(schema.get("additionalProperties").is_none(), "{view}");
            let props = schema["properties"].as_object().unwrap();
            for field in ["id", "provisioning_status", "operating_status", "name"] {
                assert!(props.contains_key(field), "{view} lacks {field}");
            }
        }
        assert!(
            !doc.to_string().contains("allOf"),
            "an allOf is left in the document"
        );
        // Request bodies still refuse unknown fields.
        assert_eq!(
            doc["components"]["schemas"]["MemberSpec"]["additionalProperties"],
            false
        );
    }

    #[test]
    fn enums_list_what_the_wire_carries() {
        let doc = document();
        // utoipa's derive would write `Any` for the variant serde writes as "".
        assert_eq!(
            doc["components"]["schemas"]["PoolType"]["enum"],
            json!(["", "instance", "ip"])
        );
    }

    #[test]
    fn a_page_limit_states_its_range() {
        let doc = document();
        let ops = &doc["paths"]["/v1/pools"]["get"]["parameters"];
        let limit = ops
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!(limit["schema"]["minimum"], 1);
        assert_eq!(limit["schema"]["maximum"], 1000);
    }

    /// Whether `text` matches a schema's `pattern` (searched, as JSON Schema does).
    fn matches(pattern: &str, text: &str) -> bool {
        regex::Regex::new(pattern).unwrap().is_match(text)
    }

    /// Whether `text` is valid for a string schema made of `pattern`s, `maxLength`s and
    /// `anyOf`s of them (and the ip formats, as Rust parses addresses).
    fn admits(schema: &Value, text: &str) -> bool {
        if let Some(parts) = schema.get("anyOf").and_then(Value::as_array)
            && !parts.iter().any(|p| admits(p, text))
        {
            return false;
        }
        let format = match schema.get("format").and_then(Value::as_str) {
            Some("ipv4") => text.parse::<std::net::Ipv4Addr>().is_ok(),
            Some("ipv6") => text.parse::<std::net::Ipv6Addr>().is_ok(),
            _ => true,
        };
        let pattern = schema
            .get("pattern")
            .and_then(Value::as_str)
            .is_none_or(|p| matches(p, text));
        let length = schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_none_or(|n| text.chars().count() as u64 <= n);
        format && pattern && length
    }

    fn property(doc: &Value, schema: &str, name: &str) -> Value {
        doc["components"]["schemas"][schema]["properties"][name].clone()
    }

    /// Names that sit on either side of each rule, and beyond them.
    const NAMES: &[&str] = &[
        "",
        "a",
        "a.b",
        "example.com",
        "*.example.com",
        "app.example.*",
        "*.*",
        "*",
        "-a.com",
        "a-.com",
        "a--b.com",
        "a..b",
        "a.",
        ".a",
        "1.2.3.4",
        "1.2.3.999",
        "xn--bcher-kva.example",
        "a_b.com",
        "ä.com",
        "a b",
        "*.a.*",
        "a.*.b",
        "*a.com",
        "\u{0}",
        "a\u{1c}",
    ];

    #[test]
    fn host_name_patterns_are_the_models_checks() {
        let doc = document();
        let label = "a".repeat(63);
        let long = [label.as_str(); 4].join("."); // 255 characters
        let just = &long[..253];
        let mut names: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
        for n in [long.as_str(), just, &long[..254]] {
            names.push(n.to_owned());
            names.push(format!("*.{n}"));
            names.push(format!("*.{}", &n[2..]));
            names.push(format!("{}.*", &n[2..]));
        }
        names.push(format!("{}b.com", "a".repeat(63)));
        let domain = property(&doc, "HealthMonitorSpec", "domain_name");
        let host = property(&doc, "L7Route", "host");
        let virtual_host = property(&doc, "Hostname", "hostname");
        let address = property(&doc, "MemberSpec", "address");
        for n in &names {
            let n = n.as_str();
            assert_eq!(
                admits(&domain, n),
                fulcrum_model::is_host_name(n, false),
                "{n:?}"
            );
            assert_eq!(
                admits(&host, n),
                fulcrum_model::is_host_name(n, true),
                "{n:?}"
            );
            assert_eq!(
                admits(&virtual_host, n),
                fulcrum_model::is_virtual_host_name(n),
                "{n:?}"
            );
            let ip = n.parse::<std::net::IpAddr>().is_ok();
            assert_eq!(
                admits(&address, n),
                ip || fulcrum_model::is_host_name(n, false),
                "{n:?}"
            );
        }
    }

    #[test]
    fn networks_and_addresses_are_what_rust_parses() {
        let doc = document();
        let cidr = property(&doc, "SubnetSpec", "cidr");
        let vip = property(&doc, "LoadBalancerSpec", "vip_address");
        let addresses = [
            "10.0.0.0",
            "0.0.0.0",
            "255.255.255.255",
            "256.0.0.0",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "::",
            "::1",
            "1::",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1::8",
            "1:2::7:8",
            "::ffff:1.2.3.4",
            "1:2:3:4:5:6:1.2.3.4",
            "1::1.2.3.4",
            "1:2:3:4:5::1.2.3.4",
            "fe80::1%eth0",
            ":::",
            "1:::2",
            "12345::",
            "g::",
            "1:2:3:4:5:6:7:8::",
            "[::1]",
            " ::1",
            "ABCD:ef01::",
            "::1.2.3",
            "1.2.3.4::",
            "1:2:3:4:5:6:7:8:9::",
            "::1:2:3:4:5:6:7:8",
            "1::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::8",
            "1:2:3:4:5:6::1.2.3.4",
            "::1:2:3:4:5:6:1.2.3.4",
            "1:2:3:4:5:6:7:1.2.3.4",
            "001.02.3.4",
            "1::001.2.3.4",
            "1:2:3:4:5:6:7::1.2.3.4",
            "00001::",
            "1.2.3.04",
            "1::1.2.3.4:5",
        ];
        for a in addresses {
            let ip = a.parse::<std::net::IpAddr>().is_ok();
            assert_eq!(admits(&vip, a), ip, "{a:?}");
            for len in [
                "0", "8", "24", "32", "33", "64", "128", "129", "08", "0032", "000", "", "-1",
                "+8", " 8", "1e1", "099", "0128", "100",
            ] {
                let text = format!("{a}/{len}");
                let parses = serde_json::from_value::<fulcrum_model::SubnetSpec>(
                    json!({"cidr": text, "vpc_id": "v"}),
                )
                .is_ok();
                assert_eq!(admits(&cidr, &text), parses, "{text:?}");
            }
        }
    }

    #[test]
    fn integers_state_their_type_and_the_models_ranges() {
        let doc = document();
        for (schema, name, min, max) in [
            ("MemberSpec", "port", json!(1), json!(65535)),
            ("MemberSpec", "priority", json!(0), json!(100)),
            (
                "MemberSpec",
                "weight",
                json!(0),
                json!(fulcrum_model::MAX_WEIGHT),
            ),
            ("MemberSpec", "max_connections", json!(1), json!(u32::MAX)),
            ("QuicLb", "config_id", json!(0), json!(6)),
            (
                "HealthMonitorSpec",
                "healthy_threshold",
                json!(1),
                json!(10),
            ),
            (
                "CircuitBreakerRule",
                "trip_duration_ms",
                json!(1),
                json!(86_400_000),
            ),
        ] {
            let p = property(&doc, schema, name);
            assert_eq!(
                (&p["minimum"], &p["maximum"]),
                (&min, &max),
                "{schema}.{name}"
            );
            assert!(p.get("format").is_none(), "{schema}.{name}: {p}");
        }
        let text = doc.to_string();
        assert!(
            !text.contains("\"uint") && !text.contains("u-int"),
            "a uint format is left"
        );
    }

    #[test]
    fn an_update_is_a_merge_patch_of_its_spec() {
        let doc = document();
        let op = &doc["paths"]["/v1/pools/{id}/members/{member_id}"]["patch"];
        assert_eq!(
            op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/MemberSpecPatch"
        );
        let patch = &doc["components"]["schemas"]["MemberSpecPatch"];
        assert!(patch.get("required").is_none());
        assert_eq!(patch["additionalProperties"], json!({"type": "null"}));
        // A required field cannot be removed; an optional one can.
        assert!(patch["properties"]["port"].get("anyOf").is_none());
        assert_eq!(
            patch["properties"]["weight"]["anyOf"][1],
            json!({"type": "null"})
        );
        // Objects within merge: their fields optional and nullable.
        let upstream = &patch["properties"]["upstream"]["anyOf"][0];
        assert!(upstream.to_string().contains("\"scheme\""), "{upstream}");
        for (path, _) in PATCHED {
            let schema = &doc["paths"][path]["patch"]["requestBody"]["content"]["application/json"]
                ["schema"]["$ref"];
            assert!(
                schema.as_str().is_some_and(|s| s.ends_with("Patch")),
                "{path}"
            );
        }
    }

    #[test]
    fn blank_names_and_texts_are_told_apart_as_rust_does() {
        let doc = document();
        let name = property(&doc, "LoadBalancerSpec", "name");
        for n in [
            "",
            " ",
            "\t\n",
            "\u{a0}\u{3000}",
            "\u{85}",
            "\u{feff}",
            "\u{1c}",
            "a",
            " a ",
        ] {
            assert_eq!(admits(&name, n), !n.trim().is_empty(), "{n:?}");
        }
        let both = property(&doc, "Credentials", "client_certificate_pem");
        let (cert, key) = ("-----BEGIN CERTIFICATE-----", "-----BEGIN PRIVATE KEY-----");
        for text in [
            format!("{cert}\nx\n{key}"),
            format!("{key}\n{cert}"),
            "PRIVATE KEY-----BEGIN CERTIFICATE-----".to_owned(),
            "PRIVATE KEY------BEGIN CERTIFICATE-----".to_owned(),
            cert.to_owned(),
            key.to_owned(),
            String::new(),
            "***".to_owned(),
            "****".to_owned(),
        ] {
            let want = text.contains(cert) && text.contains("PRIVATE KEY-----") || text == "***";
            assert_eq!(admits(&both, &text), want, "{text:?}");
        }
        for (text, want) in [("Accept", true), ("x-a", true), ("a b", false), ("", false)] {
            let scheme = property(&doc, "Authorization", "scheme");
            assert_eq!(admits(&scheme, text), want, "{text:?}");
            assert_eq!(fulcrum_model::is_header_name(text), want, "{text:?}");
        }
        let parameter = property(&doc, "Authorization", "parameter");
        for text in ["", "a b\t~", "a\nb", "\u{7f}", "é"] {
            assert_eq!(
                admits(&parameter, text),
                fulcrum_model::is_header_value(text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn parameter_descriptions_name_the_resource() {
        assert_eq!(
            describe_parameter("/v1/pools/{id}/members/{member_id}", "id"),
            "The pool's id."
        );
        assert_eq!(
            describe_parameter("/v1/pools/{id}/members/{member_id}", "member_id"),
            "The member's id."
        );
    }
}
