//! Tables for people; JSON, YAML or bare ids for scripts.

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::Value;

/// Which fields a list shows: (header, JSON pointer).
pub struct Columns(pub &'static [(&'static str, &'static str)]);

pub const LOADBALANCER: Columns = Columns(&[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("VIP", "/vip_address"),
    ("PROVISIONING", "/provisioning_status"),
    ("OPERATING", "/operating_status"),
]);
pub const LISTENER: Columns = Columns(&[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("PROTOCOL", "/protocol"),
    ("PORT", "/port"),
    ("DEFAULT POOL", "/default_pool_id"),
    ("PROVISIONING", "/provisioning_status"),
    ("OPERATING", "/operating_status"),
]);
pub const POOL: Columns = Columns(&[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("PROTOCOL", "/protocol"),
    ("ALGORITHM", "/algorithm"),
    ("PROVISIONING", "/provisioning_status"),
    ("OPERATING", "/operating_status"),
]);
pub const MEMBER: Columns = Columns(&[
    ("ID", "/id"),
    ("ADDRESS", "/address"),
    ("PORT", "/port"),
    ("WEIGHT", "/weight"),
    ("BACKUP", "/backup"),
    ("DRAIN", "/drain"),
    ("OFFLINE", "/offline"),
    ("OPERATING", "/operating_status"),
    ("REQ/S", "/traffic/requests_per_second"),
    ("ERRORS %", "/traffic/error_percent"),
    ("P99 MS", "/traffic/p99_ms"),
    ("IN FLIGHT", "/traffic/in_flight"),
]);
pub const MONITOR: Columns = Columns(&[
    ("ID", "/id"),
    ("POOL", "/pool_id"),
    ("TYPE", "/type"),
    ("INTERVAL MS", "/interval_ms"),
    ("PATH", "/url_path"),
]);
pub const SUBNET: Columns = Columns(&[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("CIDR", "/cidr"),
    ("VPC", "/vpc_id"),
]);
pub const OCI_API_KEY: Columns = Columns(&[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("KEY ID", "/key_id"),
    ("COMPARTMENTS", "/compartments"),
]);
pub const WORK_REQUEST: Columns = Columns(&[
    ("ID", "/id"),
    ("OPERATION", "/operation"),
    ("STATUS", "/status"),
    ("REVISION", "/revision"),
    ("ACCEPTED", "/accepted_at"),
]);

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// How a command prints what it got (`-o`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    // The usual columns (plain comments: doc comments here would turn every command's
    // `--help` into the long layout).
    Table,
    // The usual columns, then every other top-level field.
    Wide,
    Json,
    Yaml,
    // Only the ids, one a line.
    Id,
}

fn print_data(v: &Value, format: Format) -> bool {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(v).unwrap_or_default()),
        _ => return false,
    }
    true
}

fn id_line(v: &Value) -> String {
    cell(v.get("id"))
}

pub fn print_list(cols: &Columns, items: &[Value], format: Format) {
    if print_data(&Value::Array(items.to_vec()), format) {
        return;
    }
    if format == Format::Id {
        for item in items {
            println!("{}", id_line(item));
        }
        return;
    }
    let mut headers: Vec<String> = cols.0.iter().map(|(h, _)| (*h).to_owned()).collect();
    let mut pointers: Vec<String> = cols.0.iter().map(|(_, p)| (*p).to_owned()).collect();
    if format == Format::Wide {
        // Every other top-level field any item has, in name order.
        let shown: Vec<&str> = cols
            .0
            .iter()
            .map(|(_, p)| p.trim_start_matches('/'))
            .collect();
        let mut extra: Vec<String> = items
            .iter()
            .filter_map(Value::as_object)
            .flat_map(|o| o.keys().cloned())
            .filter(|k| !shown.contains(&k.as_str()))
            .collect();
        extra.sort();
        extra.dedup();
        for k in extra {
            headers.push(k.to_uppercase());
            pointers.push(format!("/{k}"));
        }
    }
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY);
    t.set_header(headers);
    for item in items {
        t.add_row(pointers.iter().map(|ptr| cell(item.pointer(ptr))));
    }
    println!("{t}");
}

pub fn print_one(v: &Value, format: Format) {
    if print_data(v, format) {
        return;
    }
    if format == Format::Id {
        println!("{}", id_line(v));
        return;
    }
    match v {
        Value::Object(map) => {
            let mut t = Table::new();
            t.load_style(UTF8_BORDERS_ONLY);
            let mut rows = Vec::new();
            for (k, v) in map {
                flatten(k, v, &mut rows);
            }
            for (k, v) in rows {
                t.add_row(vec![k, v]);
            }
            println!("{t}");
        }
        other => println!("{}", cell(Some(other))),
    }
}

/// One row per leaf: nested objects become dotted keys (`upstream.tls.validate_certificate_name`),
/// so a resource with settings prints as a readable column, not one wide JSON cell. Lists
/// of scalars stay on one row; lists of objects are numbered (`routes[0].pool_id`).
fn flatten(key: &str, v: &Value, rows: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                flatten(&format!("{key}.{k}"), v, rows);
            }
        }
        Value::Array(items) if items.iter().any(Value::is_object) => {
            for (i, item) in items.iter().enumerate() {
                flatten(&format!("{key}[{i}]"), item, rows);
            }
        }
        other => rows.push((key.to_owned(), cell(Some(other)))),
    }
}

#[cfg(test)]
mod tests {
    use super::flatten;
    use serde_json::json;

    #[test]
    fn nested_settings_print_one_leaf_per_row() {
        let mut rows = Vec::new();
        let pool = json!({"name": "web", "upstream": {"scheme": "https", "tls": {"validate_certificate_name": false}},
                          "routes": [{"pool_id": "p1"}], "labels": {}, "tags": ["a", "b"]});
        for (k, v) in pool.as_object().into_iter().flatten() {
            flatten(k, v, &mut rows);
        }
        let rows: Vec<(&str, &str)> = rows.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert!(rows.contains(&("upstream.scheme", "https")), "{rows:?}");
        assert!(
            rows.contains(&("upstream.tls.validate_certificate_name", "false")),
            "{rows:?}"
        );
        assert!(rows.contains(&("routes[0].pool_id", "p1")), "{rows:?}");
        assert!(rows.contains(&("labels", "{}")), "{rows:?}");
        assert!(rows.contains(&("tags", "[\"a\",\"b\"]")), "{rows:?}");
        assert!(rows.iter().all(|(_, v)| v.len() < 80), "{rows:?}");
    }
}
