//! The Azure dialect's parsers for `fulcrum_api::fuzzing`: `$filter`, backend bodies, API
//! bodies and policy documents.

use fulcrum_model::MemberSpec;

use super::filter::{Field, Filter};
use super::wire::{self, BackendKind, Service};
use crate::fuzzing::validate_member;

pub fn filter(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(f) = Filter::parse(text) {
        let _ = f.matches(|field| match field {
            Field::Name => "backend-1".to_owned(),
            Field::Title => "Backend One".to_owned(),
            Field::Url => "https://10.0.0.1:8443/api".to_owned(),
        });
    }
}

/// What a PUT of a backend does with its body before it plans the change.
pub fn body(data: &[u8]) {
    let Ok(body) = serde_json::from_slice(data) else {
        return;
    };
    let Ok(properties) = super::properties_of(body) else {
        return;
    };
    let Ok(mut props) = super::decode_properties(properties) else {
        return;
    };
    if wire::unmask(&mut props, None).is_err() {
        return;
    }
    let service = Service {
        subscription: "sub".into(),
        resource_group: "rg".into(),
        name: "svc".into(),
    };
    let Ok(t) = wire::translate(&props, &service, "backend-1") else {
        return;
    };
    let _ = t.upstream.validate();
    if t.kind == BackendKind::Single
        && let Some((host, port)) = &t.endpoint
    {
        let mut m = MemberSpec::new(host.clone(), *port);
        m.name = "backend-1".into();
        validate_member(&m);
        // What a read renders back from it.
        let _ = wire::render_url(&t.upstream, &m);
    }
}

/// What a PUT of an API policy or of an API does with its body before it plans the change.
pub fn api(data: &[u8]) {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    if *first == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        let body = super::apis::PolicyBody {
            value: Some(text.to_owned()),
            format: Some("rawxml".into()),
        };
        let _ = super::apis::check_policy(&body);
        return;
    }
    let Ok(body) = serde_json::from_slice(rest) else {
        return;
    };
    let Ok(properties) = super::properties_of(body) else {
        return;
    };
    let Ok(p) = super::apis::api_properties(properties) else {
        return;
    };
    if let Ok(record) = super::apis::translate(&p) {
        let mut labels = std::collections::BTreeMap::new();
        super::apis::set_api(&mut labels, "api-1", Some(&record));
        assert_eq!(
            super::apis::apis_of(&labels).remove("api-1").as_ref(),
            Some(&record),
            "an API reads back as it was kept"
        );
    }
}
