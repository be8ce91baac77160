//! An API's policy document (`.../apis/{apiId}/policies/policy`), parsed with a real XML
//! parser (pure: no I/O).
//!
//! API Management runs many policies; fulcrum honours the ones that say where an API's
//! calls go, and refuses every other element by name and position rather than ignoring
//! it: a policy a user wrote is usually there for a reason (`validate-jwt`, `ip-filter`,
//! `rate-limit`, `check-header` guard the API), and an API that silently lost its guard
//! would be worse than one that is refused. What is accepted:
//!
//! - `<policies>` with at most one each of `<inbound>`, `<backend>`, `<outbound>`,
//!   `<on-error>`, in any order; comments and whitespace anywhere;
//! - `<base />` in any section (fulcrum has no product or global policies to inherit, so it
//!   adds nothing);
//! - in `<inbound>`, one `<set-backend-service>` with `backend-id="…"` (a backend of the
//!   service) or `base-url="…"` (an absolute http(s) URL), and optionally the portal's
//!   `id="…"`; policy expressions (`@(…)`, `@{…}`) are refused;
//! - in `<backend>`, `<forward-request />` without attributes (what fulcrum does anyway).
//!
//! DTDs are refused by the parser (no entity expansion).

use roxmltree::{Document, Node, NodeType, ParsingOptions};

/// Where a policy sends the API's calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BackendRef {
    /// `set-backend-service backend-id="…"`: a backend of the service.
    Id(String),
    /// `set-backend-service base-url="…"`: this URL instead of the API's `serviceUrl`.
    BaseUrl(String),
}

/// What fulcrum takes from a policy document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Policy {
    pub backend: Option<BackendRef>,
}

/// Why a document is refused: the element (or `policies` for the document as a whole),
/// and API Management's wording (`Error in element 'x' on line 3, column 5: …`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PolicyError {
    pub element: String,
    pub message: String,
}

const SECTIONS: [&str; 4] = ["inbound", "backend", "outbound", "on-error"];

const ACCEPTED: &str = "an API policy here may hold <base />, one <set-backend-service backend-id=\"…\" /> \
     or base-url=\"…\" in <inbound>, and <forward-request /> in <backend>";

fn at(node: Node<'_, '_>, message: impl std::fmt::Display) -> PolicyError {
    let pos = node.document().text_pos_at(node.range().start);
    let element = node.tag_name().name().to_owned();
    PolicyError {
        message: format!(
            "Error in element '{element}' on line {}, column {}: {message}",
            pos.row, pos.col
        ),
        element,
    }
}

/// Parses a policy document (`format` `xml` or `rawxml`: both are XML to fulcrum, which
/// runs no policy expressions).
pub(crate) fn parse(text: &str) -> Result<Policy, PolicyError> {
    let options = ParsingOptions {
        allow_dtd: false,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(text, options).map_err(|e| PolicyError {
        element: "policies".into(),
        message: format!("The policy document is not well-formed XML: {e}"),
    })?;
    let root = doc.root_element();
    if root.tag_name().name() != "policies" || root.tag_name().namespace().is_some() {
        return Err(at(root, "the document's root element must be <policies>"));
    }
    no_attributes(root)?;
    let mut policy = Policy::default();
    let mut seen: Vec<&str> = Vec::new();
    for section in elements(root)? {
        let name = section.tag_name().name();
        if !SECTIONS.contains(&name) || section.tag_name().namespace().is_some() {
            return Err(at(
                section,
                format!(
                    "<policies> holds only <inbound>, <backend>, <outbound> and <on-error>, not <{name}>"
                ),
            ));
        }
        if seen.contains(&name) {
            return Err(at(section, format!("<{name}> appears twice")));
        }
        seen.push(name);
        no_attributes(section)?;
        for p in elements(section)? {
            match (name, p.tag_name().name()) {
                (_, "base") => {
                    no_attributes(p)?;
                    no_children(p)?;
                }
                ("inbound", "set-backend-service") => {
                    if policy.backend.is_some() {
                        return Err(at(p, "only one <set-backend-service> is supported"));
                    }
                    no_children(p)?;
                    policy.backend = Some(set_backend_service(p)?);
                }
                ("backend", "forward-request") => {
                    if p.attributes().len() > 0 {
                        return Err(at(
                            p,
                            "<forward-request> is supported without attributes only (timeouts are the gateway listener's)",
                        ));
                    }
                    no_children(p)?;
                }
                (_, other) => {
                    return Err(at(
                        p,
                        format!(
                            "fulcrum does not apply the '{other}' policy in <{name}> and refuses it rather than ignore it; {ACCEPTED}"
                        ),
                    ));
                }
            }
        }
    }
    Ok(policy)
}

fn set_backend_service(p: Node<'_, '_>) -> Result<BackendRef, PolicyError> {
    let mut backend_id = None;
    let mut base_url = None;
    for a in p.attributes() {
        let value = a.value().trim();
        if value.starts_with('@') {
            return Err(at(
                p,
                format!(
                    "attribute '{}' holds a policy expression, which fulcrum does not evaluate; give a fixed value",
                    a.name()
                ),
            ));
        }
        match a.name() {
            "backend-id" => backend_id = Some(value.to_owned()),
            "base-url" => base_url = Some(value.to_owned()),
            // The portal marks the policies it generates.
            "id" => {}
            other => {
                return Err(at(
                    p,
                    format!(
                        "attribute '{other}' is not supported; use backend-id=\"…\" or base-url=\"…\""
                    ),
                ));
            }
        }
    }
    match (backend_id, base_url) {
        (Some(id), None) if !id.is_empty() => Ok(BackendRef::Id(id)),
        (None, Some(url)) if !url.is_empty() => Ok(BackendRef::BaseUrl(url)),
        (Some(_), Some(_)) => Err(at(p, "give backend-id or base-url, not both")),
        _ => Err(at(p, "backend-id or base-url is required")),
    }
}

/// The element children of `node`; any other content but whitespace and comments is refused.
fn elements<'a, 'i>(node: Node<'a, 'i>) -> Result<Vec<Node<'a, 'i>>, PolicyError> {
    let mut out = Vec::new();
    for child in node.children() {
        match child.node_type() {
            NodeType::Element => out.push(child),
            NodeType::Comment => {}
            NodeType::Text if child.text().is_none_or(|t| t.trim().is_empty()) => {}
            NodeType::Text => return Err(at(node, "text is not allowed here")),
            NodeType::PI | NodeType::Root => {
                return Err(at(node, "processing instructions are not allowed here"));
            }
        }
    }
    Ok(out)
}

fn no_attributes(node: Node<'_, '_>) -> Result<(), PolicyError> {
    match node.attributes().next() {
        Some(a) => Err(at(
            node,
            format!(
                "attribute '{}' is not supported on <{}>",
                a.name(),
                node.tag_name().name()
            ),
        )),
        None => Ok(()),
    }
}

fn no_children(node: Node<'_, '_>) -> Result<(), PolicyError> {
    match elements(node)?.first() {
        Some(c) => Err(at(
            *c,
            format!("<{}> takes no content", node.tag_name().name()),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const PORTAL_DEFAULT: &str = "<!--\n    IMPORTANT: comments are fine\n-->\n<policies>\r\n\t<inbound>\r\n\t\t<base />\r\n\t\t<set-backend-service id=\"apim-generated-policy\" backend-id=\"pool\" />\r\n\t</inbound>\r\n\t<backend>\r\n\t\t<base />\r\n\t</backend>\r\n\t<outbound>\r\n\t\t<base />\r\n\t</outbound>\r\n\t<on-error>\r\n\t\t<base />\r\n\t</on-error>\r\n</policies>";

    fn check(text: &str, want: Result<Option<BackendRef>, (&str, &str)>) {
        let got = parse(text);
        match want {
            Ok(backend) => assert_eq!(got, Ok(Policy { backend }), "{text}"),
            Err((element, needle)) => {
                let e = got.expect_err(text);
                assert_eq!(e.element, element, "{text}: {e:?}");
                assert!(e.message.contains(needle), "{text}: {}", e.message);
            }
        }
    }

    #[test]
    fn what_a_policy_may_say() {
        let id = |s: &str| Ok(Some(BackendRef::Id(s.into())));
        check(PORTAL_DEFAULT, id("pool"));
        check("<policies/>", Ok(None));
        check("<policies><inbound><base/></inbound></policies>", Ok(None));
        check(
            "<policies><on-error/><inbound><set-backend-service base-url=\"http://10.0.0.5:8080/v1\"/></inbound></policies>",
            Ok(Some(BackendRef::BaseUrl("http://10.0.0.5:8080/v1".into()))),
        );
        check(
            "<policies><backend><forward-request /></backend><inbound><set-backend-service backend-id='b&amp;1' /></inbound></policies>",
            id("b&1"),
        );
    }

    #[test]
    fn what_it_may_not_and_where() {
        let cases: &[(&str, &str, &str)] = &[
            // Guards are refused by name, never ignored.
            (
                "<policies>\n<inbound>\n  <base />\n  <validate-jwt header-name=\"Authorization\" />\n</inbound></policies>",
                "validate-jwt",
                "on line 4, column 3: fulcrum does not apply the 'validate-jwt' policy",
            ),
            (
                "<policies><inbound><ip-filter action=\"allow\"><address>10.0.0.1</address></ip-filter></inbound></policies>",
                "ip-filter",
                "'ip-filter'",
            ),
            (
                "<policies><outbound><set-header name=\"x\" exists-action=\"override\"><value>v</value></set-header></outbound></policies>",
                "set-header",
                "in <outbound>",
            ),
            // set-backend-service elsewhere than inbound, twice, or without a target.
            (
                "<policies><backend><set-backend-service backend-id=\"a\"/></backend></policies>",
                "set-backend-service",
                "in <backend>",
            ),
            (
                "<policies><inbound><set-backend-service backend-id=\"a\"/><set-backend-service backend-id=\"b\"/></inbound></policies>",
                "set-backend-service",
                "only one",
            ),
            (
                "<policies><inbound><set-backend-service/></inbound></policies>",
                "set-backend-service",
                "required",
            ),
            (
                "<policies><inbound><set-backend-service backend-id=\"a\" base-url=\"http://h\"/></inbound></policies>",
                "set-backend-service",
                "not both",
            ),
            (
                "<policies><inbound><set-backend-service backend-id=\"@(context.Variables[&quot;b&quot;])\"/></inbound></policies>",
                "set-backend-service",
                "policy expression",
            ),
            (
                "<policies><inbound><set-backend-service sf-service-instance-name=\"x\" backend-id=\"a\"/></inbound></policies>",
                "set-backend-service",
                "'sf-service-instance-name'",
            ),
            (
                "<policies><backend><forward-request timeout=\"20\"/></backend></policies>",
                "forward-request",
                "without attributes",
            ),
            // The document's shape.
            ("<policy/>", "policy", "root element"),
            (
                "<policies><inbound/><inbound/></policies>",
                "inbound",
                "twice",
            ),
            ("<policies><elsewhere/></policies>", "elsewhere", "only"),
            ("<policies x=\"1\"/>", "policies", "attribute 'x'"),
            (
                "<policies><inbound>text</inbound></policies>",
                "inbound",
                "text",
            ),
            (
                "<policies><inbound><base>x</base></inbound></policies>",
                "base",
                "text",
            ),
            ("<policies><inbound>", "policies", "not well-formed"),
            ("", "policies", "not well-formed"),
            (
                "<!DOCTYPE policies [<!ENTITY x \"y\">]><policies/>",
                "policies",
                "not well-formed",
            ),
        ];
        for (text, element, needle) in cases {
            check(text, Err((element, needle)));
        }
    }
}
