//! The dashboard page as the real binary serves it: `/ui` and its assets load without a
//! token, with the content types a browser needs to run them, and reference nothing outside
//! this server; the API behind them still wants the token. (What the page shows and does is
//! tested in a real browser: `e2e/dashboard`.)

mod common;

use common::{Api, Server};

/// The `src` and `href` values of `html`.
fn references(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(at) = rest.find(attr) {
            rest = &rest[at + attr.len()..];
            let end = rest.find('"').expect("a closing quote");
            found.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    found
}

fn assert_no_external_url(what: &str, text: &str) {
    for scheme in ["http://", "https://"] {
        assert!(
            !text.to_ascii_lowercase().contains(scheme),
            "{what} references {scheme}…: the dashboard must load nothing from elsewhere"
        );
    }
}

#[tokio::test]
async fn the_dashboard_loads_without_a_token_and_only_from_this_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.client();
    let anon = api.anonymous();

    let page = anon.raw("GET", "/ui", None, &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        page.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    let html = page.body.as_str().expect("an HTML page").to_owned();
    assert!(html.starts_with("<!doctype html>"));
    assert_no_external_url("/ui", &html);
    assert_eq!(
        anon.raw("GET", "/ui/", None, &[]).await.body.as_str(),
        Some(html.as_str()),
        "/ui/ is the same page"
    );

    // Every asset the page names is served here, with its type; data: URLs load nothing.
    let refs = references(&html);
    let mut assets: Vec<&str> = refs
        .iter()
        .map(String::as_str)
        .filter(|r| !r.starts_with("data:"))
        .collect();
    assets.sort_unstable();
    assert_eq!(assets, ["/ui/app.css", "/ui/app.js"], "{refs:?}");
    for (path, content_type) in [
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
    ] {
        let r = anon.raw("GET", path, None, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type").as_deref(), Some(content_type));
        assert_eq!(
            r.header("x-content-type-options").as_deref(),
            Some("nosniff")
        );
        let text = r.body.as_str().expect("text");
        assert!(text.len() > 1000, "{path} is {} bytes", text.len());
        assert_no_external_url(path, text);
    }

    // The script calls only this server's native API, with the token the operator gives.
    let script = anon.raw("GET", "/ui/app.js", None, &[]).await.body;
    let script = script.as_str().unwrap();
    for call in [
        "/v1/loadbalancers",
        "/v1/listeners",
        "/v1/pools",
        "/v1/work-requests",
        "/v1/nodes",
        "/v1/health",
        "/v1/stats",
    ] {
        assert!(script.contains(call), "app.js never reads {call}");
    }
    assert!(!script.contains("innerHTML"), "values are set as text");

    // A missing asset is a 404, not the API's 401.
    let r = anon.raw("GET", "/ui/nope.js", None, &[]).await;
    assert_eq!(r.status, 404);

    // `/` sends a browser to the page.
    let direct = Api {
        http: common::http_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        ..anon.clone()
    };
    let r = direct.raw("GET", "/", None, &[]).await;
    assert!((300..400).contains(&r.status), "/ answered {}", r.status);
    assert_eq!(r.header("location").as_deref(), Some("/ui"));

    // Serving the page opened nothing else: the API still wants the token.
    assert_eq!(
        anon.call("GET", "/v1/loadbalancers", None).await.status,
        401
    );
    assert_eq!(api.call("GET", "/v1/loadbalancers", None).await.status, 200);
}
