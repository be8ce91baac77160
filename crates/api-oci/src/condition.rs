//! OCI's routing policy condition language, version V1: a pure parser from a rule's
//! `condition` text to a tree, and the mapping of that tree onto what the model's L7 routes
//! match (a host and one path test).
//!
//! The language, as OCI documents it: a condition is a comparison, or `all(…)` / `any(…)`
//! of conditions (nested one level at most). A comparison is an attribute, an optional
//! `not`, an operator (`eq` or `=`, `sw` starts with, `ew` ends with) and a quoted value,
//! `'text'`, or `(i 'text')` to compare ignoring case. Attributes: `http.request.url.path`,
//! `http.request.headers[name]`, `http.request.url.query[name]` and
//! `http.request.cookies[name]`, where the name is quoted the same way.
//!
//! What routes can express: per alternative of the condition (its disjunctive normal
//! form), at most one path comparison (`eq`, `sw`, `ew`, with or without case) and at
//! most one `http.request.headers['Host'] eq '…'`. Anything else (other headers, query
//! parameters, cookies, `not`, two path tests that must both hold) is refused by name,
//! never approximated.

use std::fmt;

/// The deepest nesting OCI allows: a group inside a group, no further.
const MAX_GROUP_DEPTH: usize = 2;

/// Most alternatives one rule's condition may expand to (each becomes a route).
pub(crate) const MAX_ALTERNATIVES: usize = 32;

/// The longest condition text accepted.
pub(crate) const MAX_CONDITION_LEN: usize = 4096;

/// A quoted value: compared with case (`'x'`), or without (`(i 'x')`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Text {
    pub value: String,
    pub ignore_case: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Attribute {
    /// `http.request.url.path`
    Path,
    /// `http.request.headers[name]`
    Header(Text),
    /// `http.request.url.query[name]`
    Query(Text),
    /// `http.request.cookies[name]`
    Cookie(Text),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    StartsWith,
    EndsWith,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Comparison {
    pub attribute: Attribute,
    pub negated: bool,
    pub op: Op,
    pub value: Text,
    /// The comparison as written, for messages.
    pub source: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Compare(Comparison),
}

/// Why a condition does not parse, with the byte offset where it went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParseError {
    pub at: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at character {}", self.message, self.at + 1)
    }
}

/// Parses a whole condition.
pub(crate) fn parse(text: &str) -> Result<Condition, ParseError> {
    if text.len() > MAX_CONDITION_LEN {
        return Err(ParseError {
            at: MAX_CONDITION_LEN,
            message: format!("a condition is at most {MAX_CONDITION_LEN} characters"),
        });
    }
    let mut p = Parser { src: text, at: 0 };
    let c = p.condition(0)?;
    p.skip_space();
    if p.at != text.len() {
        return Err(p.error("unexpected text after the condition"));
    }
    Ok(c)
}

struct Parser<'a> {
    src: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            at: self.at,
            message: message.into(),
        }
    }

    fn rest(&self) -> &str {
        &self.src[self.at..]
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    /// Consumes `token` (after spaces) if it comes next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.rest().starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), ParseError> {
        match self.eat(token) {
            true => Ok(()),
            false => Err(self.error(format!("expected '{token}'"))),
        }
    }

    /// A run of letters, digits, `_` and `.` (after spaces); may be empty.
    fn word(&mut self) -> &str {
        self.skip_space();
        let start = self.at;
        let len = self
            .rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(self.rest().len());
        self.at += len;
        &self.src[start..self.at]
    }

    fn condition(&mut self, depth: usize) -> Result<Condition, ParseError> {
        self.skip_space();
        let start = self.at;
        let word = self.word().to_owned();
        match word.as_str() {
            "all" | "any" => {
                if depth == MAX_GROUP_DEPTH {
                    self.at = start;
                    return Err(
                        self.error("a nested all() or any() cannot hold further all() or any()")
                    );
                }
                self.expect("(")?;
                let mut items = vec![self.condition(depth + 1)?];
                while self.eat(",") {
                    items.push(self.condition(depth + 1)?);
                }
                self.expect(")")?;
                Ok(match word.as_str() {
                    "all" => Condition::All(items),
                    _ => Condition::Any(items),
                })
            }
            "" => Err(self.error("expected all(…), any(…) or a comparison")),
            _ => {
                self.at = start;
                self.comparison().map(Condition::Compare)
            }
        }
    }

    fn comparison(&mut self) -> Result<Comparison, ParseError> {
        let start = self.at;
        let name = self.word().to_owned();
        let attribute = match name.as_str() {
            "http.request.url.path" => Attribute::Path,
            "http.request.headers" => Attribute::Header(self.key()?),
            "http.request.url.query" => Attribute::Query(self.key()?),
            "http.request.cookies" => Attribute::Cookie(self.key()?),
            _ => {
                self.at = start;
                return Err(self.error(format!(
                    "unknown attribute {name:?} (V1 knows http.request.url.path, http.request.headers[…], http.request.url.query[…] and http.request.cookies[…])"
                )));
            }
        };
        let mut op_word = self.op_word();
        let negated = op_word == "not";
        if negated {
            op_word = self.op_word();
        }
        let op = match op_word.as_str() {
            "eq" | "=" => Op::Eq,
            "sw" => Op::StartsWith,
            "ew" => Op::EndsWith,
            other => {
                return Err(self.error(format!(
                    "unknown operator {other:?} (V1 knows eq or =, sw and ew, each after an optional not)"
                )));
            }
        };
        let value = self.text()?;
        Ok(Comparison {
            attribute,
            negated,
            op,
            value,
            source: self.src[start..self.at].to_owned(),
        })
    }

    fn op_word(&mut self) -> String {
        if self.eat("=") {
            return "=".to_owned();
        }
        self.word().to_owned()
    }

    /// `[text]` after a map attribute.
    fn key(&mut self) -> Result<Text, ParseError> {
        self.expect("[")?;
        let key = self.text()?;
        self.expect("]")?;
        if key.value.is_empty() {
            return Err(self.error("an empty name in […]"));
        }
        Ok(key)
    }

    /// `'…'` or `(i '…')`.
    fn text(&mut self) -> Result<Text, ParseError> {
        if self.eat("(") {
            let flag = self.word();
            if flag != "i" {
                return Err(self.error("expected (i '…')"));
            }
            let value = self.string()?;
            self.expect(")")?;
            return Ok(Text {
                value,
                ignore_case: true,
            });
        }
        Ok(Text {
            value: self.string()?,
            ignore_case: false,
        })
    }

    /// A single-quoted string; `\'` and `\\` stand for `'` and `\`.
    fn string(&mut self) -> Result<String, ParseError> {
        self.expect("'")?;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\'' => {
                    self.at += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, e @ ('\'' | '\\'))) => out.push(e),
                    _ => {
                        self.at += i;
                        return Err(self.error("only \\' and \\\\ may be escaped"));
                    }
                },
                c => out.push(c),
            }
        }
        self.at = self.src.len();
        Err(self.error("a quoted value is not closed"))
    }
}

impl Condition {
    /// How many comparisons it holds.
    pub(crate) fn n_comparisons(&self) -> usize {
        match self {
            Condition::All(items) | Condition::Any(items) => {
                items.iter().map(Condition::n_comparisons).sum()
            }
            Condition::Compare(_) => 1,
        }
    }

    /// The condition as alternatives (any of them), each a list of comparisons (all of
    /// them): its disjunctive normal form, refused beyond [`MAX_ALTERNATIVES`].
    fn alternatives(&self) -> Result<Vec<Vec<&Comparison>>, String> {
        let too_many = || {
            format!(
                "the condition expands to more than {MAX_ALTERNATIVES} alternatives; split it into rules"
            )
        };
        match self {
            Condition::Compare(c) => Ok(vec![vec![c]]),
            Condition::Any(items) => {
                let mut out = Vec::new();
                for item in items {
                    out.extend(item.alternatives()?);
                    if out.len() > MAX_ALTERNATIVES {
                        return Err(too_many());
                    }
                }
                Ok(out)
            }
            Condition::All(items) => {
                let mut out: Vec<Vec<&Comparison>> = vec![Vec::new()];
                for item in items {
                    let alts = item.alternatives()?;
                    if out.len().saturating_mul(alts.len()) > MAX_ALTERNATIVES {
                        return Err(too_many());
                    }
                    out = out
                        .iter()
                        .flat_map(|head| {
                            alts.iter().map(move |alt| {
                                let mut all = head.clone();
                                all.extend(alt.iter().copied());
                                all
                            })
                        })
                        .collect();
                }
                Ok(out)
            }
        }
    }
}

/// One alternative as a route matches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RouteMatch {
    /// The request's host, compared ignoring case.
    pub host: Option<String>,
    pub path: Option<PathMatch>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PathMatch {
    pub op: Op,
    pub value: String,
    pub ignore_case: bool,
}

/// What routes must match for `condition` to hold: any of the returned alternatives, in
/// order. Refuses, naming the comparison, what the model's routes cannot express.
pub(crate) fn route_matches(condition: &Condition) -> Result<Vec<RouteMatch>, String> {
    condition
        .alternatives()?
        .into_iter()
        .map(|all| {
            let mut m = RouteMatch {
                host: None,
                path: None,
            };
            for c in all {
                add(&mut m, c)?;
            }
            Ok(m)
        })
        .collect()
}

fn add(m: &mut RouteMatch, c: &Comparison) -> Result<(), String> {
    let src = &c.source;
    if c.negated {
        return Err(format!(
            "`{src}`: fulcrum's routes cannot match on `not` comparisons yet"
        ));
    }
    match &c.attribute {
        Attribute::Path => {
            let v = &c.value.value;
            let ok = !v.is_empty()
                && v.len() <= fulcrum_model::MAX_ROUTE_PATH
                && !v.bytes().any(|b| b <= b' ' || b == 0x7f)
                && (c.op == Op::EndsWith || v.starts_with('/'));
            if !ok {
                return Err(format!(
                    "`{src}`: a path is compared with a value without spaces or control characters, at most {} characters, starting with '/' unless compared with ew",
                    fulcrum_model::MAX_ROUTE_PATH
                ));
            }
            if m.path.is_some() {
                return Err(format!(
                    "`{src}`: fulcrum's routes match at most one path comparison per alternative (one within all(…))"
                ));
            }
            m.path = Some(PathMatch {
                op: c.op,
                value: v.clone(),
                ignore_case: c.value.ignore_case,
            });
        }
        Attribute::Header(name) if name.value.eq_ignore_ascii_case("host") => {
            let host = c.value.value.to_ascii_lowercase();
            if c.op != Op::Eq || !fulcrum_model::is_host_name(&host, false) {
                return Err(format!(
                    "`{src}`: fulcrum's routes match the Host header only with eq and a host name (without port or wildcard)"
                ));
            }
            match &m.host {
                Some(other) if *other != host => {
                    return Err(format!(
                        "`{src}`: one alternative compares the Host header with two different names"
                    ));
                }
                _ => m.host = Some(host),
            }
        }
        Attribute::Header(_) => {
            return Err(format!(
                "`{src}`: fulcrum's routes cannot match on request headers other than Host yet"
            ));
        }
        Attribute::Query(_) => {
            return Err(format!(
                "`{src}`: fulcrum's routes cannot match on query parameters yet"
            ));
        }
        Attribute::Cookie(_) => {
            return Err(format!(
                "`{src}`: fulcrum's routes cannot match on cookies yet"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn path(op: Op, value: &str, ignore_case: bool) -> Option<PathMatch> {
        Some(PathMatch {
            op,
            value: value.into(),
            ignore_case,
        })
    }

    /// The routes a condition maps to, or the refusal's message.
    fn check(text: &str) -> Result<Vec<RouteMatch>, String> {
        let c = parse(text).map_err(|e| e.to_string())?;
        route_matches(&c)
    }

    #[test]
    fn parses_ocis_documented_forms() {
        let c = parse("any(http.request.url.path eq (i '/documents'))").unwrap();
        let Condition::Any(items) = &c else {
            panic!("{c:?}")
        };
        let Condition::Compare(cmp) = &items[0] else {
            panic!("{c:?}")
        };
        assert_eq!(cmp.attribute, Attribute::Path);
        assert_eq!(cmp.op, Op::Eq);
        assert_eq!(
            cmp.value,
            Text {
                value: "/documents".into(),
                ignore_case: true
            }
        );
        assert_eq!(cmp.source, "http.request.url.path eq (i '/documents')");
        for ok in [
            "http.request.url.path = '/a'",
            "all(http.request.headers[(i 'user-agent')] eq (i 'mobile'), http.request.url.query['department'] eq 'HR')",
            "http.request.cookies['cookie-name'] not eq 'cookie-value'",
            "any(all(http.request.url.path sw '/a', http.request.headers['Host'] eq 'a.test'), http.request.url.path ew '.png')",
            "  all ( http.request.url.path sw '/it\\'s' )  ",
        ] {
            parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn refuses_malformed_conditions_with_a_position() {
        for (bad, what) in [
            ("", "expected all"),
            ("all()", "expected all"),
            ("all(http.request.url.path eq '/a'", "expected ')'"),
            ("http.request.url.path eq '/a", "not closed"),
            ("http.request.url.path like '/a'", "unknown operator"),
            ("http.request.body eq 'x'", "unknown attribute"),
            ("http.request.headers eq 'x'", "expected '['"),
            ("http.request.headers[''] eq 'x'", "empty name"),
            ("http.request.url.path eq (j '/a')", "expected (i"),
            ("http.request.url.path eq '/a' extra", "unexpected text"),
            (
                "all(any(all(http.request.url.path eq '/a')))",
                "cannot hold further",
            ),
            ("http.request.url.path eq '\\n'", "may be escaped"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().contains(what), "{bad}: {e}");
            assert!(e.at <= bad.len(), "{bad}: {e:?}");
        }
        let long = format!(
            "http.request.url.path eq '/{}'",
            "a".repeat(MAX_CONDITION_LEN)
        );
        assert!(parse(&long).is_err());
    }

    #[test]
    fn paths_and_hosts_map_onto_routes_in_order() {
        assert_eq!(
            check("http.request.url.path sw '/api'").unwrap(),
            vec![RouteMatch {
                host: None,
                path: path(Op::StartsWith, "/api", false)
            }]
        );
        // any(): one route per alternative, in order; all(): one route with both tests.
        assert_eq!(
            check("any(http.request.url.path eq (i '/A'), all(http.request.headers[(i 'Host')] eq (i 'Shop.Test'), http.request.url.path ew '.png'))").unwrap(),
            vec![
                RouteMatch { host: None, path: path(Op::Eq, "/A", true) },
                RouteMatch { host: Some("shop.test".into()), path: path(Op::EndsWith, ".png", false) },
            ]
        );
        // all() over any(): distributed.
        assert_eq!(
            check("all(http.request.headers['host'] eq 'a.test', any(http.request.url.path sw '/x', http.request.url.path sw '/y'))").unwrap(),
            vec![
                RouteMatch { host: Some("a.test".into()), path: path(Op::StartsWith, "/x", false) },
                RouteMatch { host: Some("a.test".into()), path: path(Op::StartsWith, "/y", false) },
            ]
        );
        // The same host twice in one alternative is one test.
        assert_eq!(
            check("all(http.request.headers['Host'] eq 'a.test', http.request.headers['Host'] eq 'A.test')").unwrap(),
            vec![RouteMatch { host: Some("a.test".into()), path: None }]
        );
    }

    #[test]
    fn what_routes_cannot_express_is_refused_by_name() {
        for (bad, named) in [
            ("http.request.cookies['c'] eq 'v'", "cookies['c']"),
            ("http.request.url.query['q'] eq 'v'", "query['q']"),
            (
                "http.request.headers['User-Agent'] eq 'v'",
                "headers['User-Agent']",
            ),
            ("http.request.url.path not eq '/a'", "not eq"),
            (
                "all(http.request.url.path sw '/a', http.request.url.path ew '.png')",
                "ew '.png'",
            ),
            ("http.request.headers['Host'] sw 'a'", "sw 'a'"),
            (
                "http.request.headers['Host'] eq 'a.test:8080'",
                "a.test:8080",
            ),
            ("http.request.headers['Host'] eq '*.a.test'", "*.a.test"),
            (
                "all(http.request.headers['Host'] eq 'a.test', http.request.headers['Host'] eq 'b.test')",
                "b.test",
            ),
            ("http.request.url.path eq 'a'", "starting with '/'"),
            ("http.request.url.path sw '/a b'", "/a b"),
        ] {
            let e = check(bad).unwrap_err();
            assert!(e.contains(named), "{bad}: {e}");
        }
        // 5 × 2 alternatives are 10 routes; 5 × 5 × 2 are 50, too many for one rule.
        let five = "any(http.request.url.path sw '/1', http.request.url.path sw '/2', http.request.url.path sw '/3', http.request.url.path sw '/4', http.request.url.path sw '/5')";
        let hosts = "any(http.request.headers['Host'] eq 'a.test', http.request.headers['Host'] eq 'b.test')";
        assert!(check(&format!("all({five}, {hosts})")).is_ok());
        let hosts5 = "any(http.request.headers['Host'] eq 'a.test', http.request.headers['Host'] eq 'b.test', http.request.headers['Host'] eq 'c.test', http.request.headers['Host'] eq 'd.test', http.request.headers['Host'] eq 'e.test')";
        let e = check(&format!("all({five}, {hosts5}, {hosts})")).unwrap_err();
        assert!(e.contains("alternatives"), "{e}");
    }

    #[test]
    fn counts_comparisons() {
        let c = parse("any(http.request.url.path sw '/a', all(http.request.url.path sw '/b', http.request.headers['Host'] eq 'x.test'))").unwrap();
        assert_eq!(c.n_comparisons(), 3);
    }
}
