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
//!   `provisioning_status`, …), so each lists its properties itself.
//!
//! [`ErrorBody`]: super::error::ErrorBody

use serde_json::{Map, Value, json};

const ERROR_BODY: &str = "#/components/schemas/ErrorBody";

/// The served document: utoipa's, completed.
pub(crate) fn complete(doc: &utoipa::openapi::OpenApi) -> Value {
    // utoipa's document is maps with string keys: it always serialises.
    let mut doc = serde_json::to_value(doc).unwrap_or(Value::Null);
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
