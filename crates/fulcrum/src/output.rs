//! Tables for people, JSON for scripts.

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

pub fn print_list(cols: &Columns, items: &[Value], json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(items).unwrap_or_default()
        );
        return;
    }
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY);
    t.set_header(cols.0.iter().map(|(h, _)| *h));
    for item in items {
        t.add_row(cols.0.iter().map(|(_, ptr)| cell(item.pointer(ptr))));
    }
    println!("{t}");
}

pub fn print_one(v: &Value, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    match v {
        Value::Object(map) => {
            let mut t = Table::new();
            t.load_style(UTF8_BORDERS_ONLY);
            for (k, v) in map {
                t.add_row(vec![k.clone(), cell(Some(v))]);
            }
            println!("{t}");
        }
        other => println!("{}", cell(Some(other))),
    }
}
