//! L7 route matching: what `L7Route::matches` decides for each kind of match, and that
//! the first matching route of a list wins.

use fulcrum_model::{L7Route, PoolId, host_matches};

fn route(pool: &str, f: impl FnOnce(&mut L7Route)) -> L7Route {
    let mut r = L7Route::to_pool(PoolId::from(pool));
    f(&mut r);
    r
}

/// The pool the first matching route names, as the data plane picks it.
fn pick<'a>(routes: &'a [L7Route], host: Option<&str>, path: &str) -> Option<&'a str> {
    routes
        .iter()
        .find(|r| r.matches(host, path.as_bytes()))
        .map(|r| r.pool_id.as_str())
}

#[test]
fn each_kind_of_match() {
    let cases: &[(L7Route, Option<&str>, &str, bool)] = &[
        (route("p", |_| {}), None, "/anything", true),
        (
            route("p", |r| r.path_prefix = Some("/api".into())),
            None,
            "/api/v1",
            true,
        ),
        (
            route("p", |r| r.path_prefix = Some("/api".into())),
            None,
            "/ap",
            false,
        ),
        (
            route("p", |r| r.path_exact = Some("/api".into())),
            None,
            "/api",
            true,
        ),
        (
            route("p", |r| r.path_exact = Some("/api".into())),
            None,
            "/api/",
            false,
        ),
        (
            route("p", |r| r.path_exact = Some("/api".into())),
            None,
            "/API",
            false,
        ),
        (
            route("p", |r| r.path_suffix = Some(".jpg".into())),
            None,
            "/a/b.jpg",
            true,
        ),
        (
            route("p", |r| r.path_suffix = Some(".jpg".into())),
            None,
            "/a/b.jpeg",
            false,
        ),
        (
            route("p", |r| r.host = Some("a.test".into())),
            Some("A.Test"),
            "/",
            true,
        ),
        (
            route("p", |r| r.host = Some("a.test".into())),
            Some("b.test"),
            "/",
            false,
        ),
        (
            route("p", |r| r.host = Some("a.test".into())),
            None,
            "/",
            false,
        ),
        (
            route("p", |r| r.host = Some("*.a.test".into())),
            Some("x.a.test"),
            "/",
            true,
        ),
        (
            route("p", |r| r.host = Some("*.a.test".into())),
            Some("a.test"),
            "/",
            false,
        ),
        (
            route("p", |r| r.host = Some("*.a.test".into())),
            Some("xa.test"),
            "/",
            false,
        ),
        (
            route("p", |r| {
                r.host = Some("a.test".into());
                r.path_prefix = Some("/api".into());
            }),
            Some("a.test"),
            "/web",
            false,
        ),
        (route("p", |r| r.admin_state_up = false), None, "/", false),
    ];
    for (i, (r, host, path, want)) in cases.iter().enumerate() {
        assert_eq!(
            r.matches(*host, path.as_bytes()),
            *want,
            "case {i}: {r:?} {host:?} {path}"
        );
    }
}

#[test]
fn first_match_wins_in_list_order() {
    let routes = vec![
        route("down", |r| {
            r.admin_state_up = false;
            r.path_prefix = Some("/".into());
        }),
        route("exact", |r| r.path_exact = Some("/api/health".into())),
        route("api", |r| r.path_prefix = Some("/api".into())),
        route("shop-api", |r| {
            r.host = Some("shop.test".into());
            r.path_prefix = Some("/api".into());
        }),
        route("shop", |r| r.host = Some("shop.test".into())),
    ];
    assert_eq!(pick(&routes, None, "/api/health"), Some("exact"));
    assert_eq!(pick(&routes, None, "/api/healthz"), Some("api"));
    // The broader route listed first wins over the narrower one after it.
    assert_eq!(pick(&routes, Some("shop.test"), "/api/x"), Some("api"));
    assert_eq!(pick(&routes, Some("shop.test"), "/cart"), Some("shop"));
    assert_eq!(pick(&routes, Some("other.test"), "/cart"), None);
}

#[test]
fn host_patterns() {
    assert!(host_matches("example.com", Some("EXAMPLE.com")));
    assert!(!host_matches("example.com", Some("www.example.com")));
    assert!(host_matches("*.example.com", Some("www.example.com")));
    assert!(!host_matches("*.example.com", Some("example.com")));
    assert!(!host_matches("*.example.com", Some("wwwexample.com")));
    assert!(!host_matches("example.com", None));
    // A wildcard last label (OCI's `app.*`): one or more labels after the prefix.
    assert!(host_matches("app.*", Some("app.com")));
    assert!(host_matches("app.example.*", Some("APP.example.co.uk")));
    assert!(!host_matches("app.*", Some("app")));
    assert!(!host_matches("app.*", Some("app.")));
    assert!(!host_matches("app.*", Some("apps.com")));
    assert!(!host_matches("app.*", Some("www.app.com")));
}

#[test]
fn virtual_host_names_take_a_wildcard_first_or_last_label_only() {
    use fulcrum_model::is_virtual_host_name;
    for ok in ["app.example.com", "*.example.com", "app.*", "app.example.*"] {
        assert!(is_virtual_host_name(ok), "{ok}");
    }
    for bad in [
        "",
        "*",
        "*.*",
        "app.*.com",
        "a*.example.com",
        "app.*.*",
        "*.example.*",
        "a b",
    ] {
        assert!(!is_virtual_host_name(bad), "{bad}");
    }
}

#[test]
fn omitted_fields_keep_the_older_shape() {
    // A route as older documents wrote it still reads, enabled, and writes back without
    // the new fields.
    let r: L7Route = serde_json::from_str(r#"{"path_prefix": "/api", "pool_id": "p1"}"#).unwrap();
    assert!(r.admin_state_up && r.id.is_empty() && r.path_exact.is_none());
    let back = serde_json::to_value(&r).unwrap();
    assert_eq!(
        back,
        serde_json::json!({"host": null, "path_prefix": "/api", "admin_state_up": true, "pool_id": "p1"})
    );
}

#[test]
fn paths_may_match_ignoring_case() {
    let r = route("p", |r| {
        r.path_prefix = Some("/Api".into());
        r.path_ignore_case = true;
    });
    assert!(r.matches(None, b"/API/x") && r.matches(None, b"/api") && !r.matches(None, b"/ap"));
    let r = route("p", |r| {
        r.path_suffix = Some(".png".into());
        r.path_ignore_case = true;
    });
    assert!(r.matches(None, b"/a.PNG") && !r.matches(None, b"png"));
    let r = route("p", |r| {
        r.path_exact = Some("/a".into());
        r.path_ignore_case = true;
    });
    assert!(r.matches(None, b"/A") && !r.matches(None, b"/a/"));
}

#[test]
fn route_sets_are_checked_with_the_load_balancer() {
    use fulcrum_model::{LoadBalancerSpec, RouteSet};
    let set = |name: &str, routes: Vec<L7Route>| RouteSet {
        name: name.into(),
        routes,
        source: None,
    };
    let field = |spec: &LoadBalancerSpec| {
        spec.validate()
            .err()
            .map(|e| e.first().field.clone())
            .unwrap_or_default()
    };
    let mut spec = LoadBalancerSpec::new("lb");
    spec.route_sets = vec![set(
        "a",
        vec![route("p", |r| r.path_prefix = Some("/x".into()))],
    )];
    assert_eq!(field(&spec), "");
    spec.route_sets.push(set("a", Vec::new()));
    assert_eq!(field(&spec), "route_sets[1].name", "names are unique");
    spec.route_sets[1] = set("", Vec::new());
    assert_eq!(field(&spec), "route_sets[1].name", "names are not empty");
    spec.route_sets[1] = set("b", vec![route("p", |r| r.path_prefix = Some("x".into()))]);
    assert_eq!(field(&spec), "route_sets[1].routes[0].path_prefix");
}

#[test]
fn a_stripped_prefix_matches_whole_segments_and_says_how_much_to_strip() {
    let orders = route("api", |r| {
        r.path_prefix = Some("/orders".into());
        r.strip_path_prefix = true;
    });
    for (path, want) in [
        ("/orders", true),
        ("/orders/", true),
        ("/orders/1", true),
        ("/ordersx", false),
        ("/order", false),
        ("/", false),
    ] {
        assert_eq!(orders.matches(None, path.as_bytes()), want, "{path}");
    }
    assert_eq!(orders.stripped_len(), "/orders".len());
    // Given with its slash, the prefix means the same segment.
    let slashed = route("api", |r| {
        r.path_prefix = Some("/orders/".into());
        r.strip_path_prefix = true;
    });
    assert!(slashed.matches(None, b"/orders"));
    assert_eq!(slashed.stripped_len(), "/orders".len());
    // The API at the root takes every path and strips nothing.
    let root = route("api", |r| {
        r.path_prefix = Some("/".into());
        r.strip_path_prefix = true;
    });
    assert!(root.matches(None, b"/anything"));
    assert_eq!(root.stripped_len(), 0);
    // Without stripping, a prefix is byte for byte and nothing is stripped.
    let plain = route("api", |r| r.path_prefix = Some("/api".into()));
    assert!(plain.matches(None, b"/apix"));
    assert_eq!(plain.stripped_len(), 0);
}
