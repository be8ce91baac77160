//! The `$filter` of backend lists: the OData subset API Management documents for
//! backends. Fields `name`, `title`, `url`; `eq`, `ne`, `gt`, `ge`, `lt`, `le` against a
//! quoted string; `contains`, `startswith`, `endswith` and `substringof`; clauses joined
//! with `and` or `or` (`and` binds tighter). String comparisons ignore case, as
//! API Management's do.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    Name,
    Title,
    Url,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, PartialEq, Eq)]
struct Clause {
    field: Field,
    op: Op,
    value: String,
}

/// A parsed filter: clauses OR-ed of AND-ed groups.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Filter {
    any_of: Vec<Vec<Clause>>,
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, String> {
        let tokens = tokenize(text)?;
        let mut any_of = vec![Vec::new()];
        let mut i = 0;
        loop {
            let (clause, next) = parse_clause(&tokens, i)?;
            if let Some(group) = any_of.last_mut() {
                group.push(clause);
            }
            i = next;
            match tokens.get(i) {
                None => break,
                Some(Token::Word(w)) if w.eq_ignore_ascii_case("and") => i += 1,
                Some(Token::Word(w)) if w.eq_ignore_ascii_case("or") => {
                    any_of.push(Vec::new());
                    i += 1;
                }
                Some(t) => return Err(format!("expected 'and' or 'or', found {t}")),
            }
        }
        Ok(Filter { any_of })
    }

    /// Whether a backend with these field values passes.
    pub fn matches(&self, value: impl Fn(Field) -> String) -> bool {
        self.any_of
            .iter()
            .any(|group| group.iter().all(|c| c.matches(&value(c.field))))
    }
}

impl Clause {
    fn matches(&self, actual: &str) -> bool {
        let a = actual.to_lowercase();
        let v = self.value.to_lowercase();
        match self.op {
            Op::Eq => a == v,
            Op::Ne => a != v,
            Op::Gt => a > v,
            Op::Ge => a >= v,
            Op::Lt => a < v,
            Op::Le => a <= v,
            Op::Contains => a.contains(&v),
            Op::StartsWith => a.starts_with(&v),
            Op::EndsWith => a.ends_with(&v),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Str(String),
    Open,
    Close,
    Comma,
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Word(w) => write!(f, "{w:?}"),
            Token::Str(s) => write!(f, "'{s}'"),
            Token::Open => f.write_str("'('"),
            Token::Close => f.write_str("')'"),
            Token::Comma => f.write_str("','"),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | ',' => {
                chars.next();
                out.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    _ => Token::Comma,
                });
            }
            '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err("unterminated string".into()),
                        // '' is a quote inside a string.
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            s.push('\'');
                        }
                        Some('\'') => break,
                        Some(ch) => s.push(ch),
                    }
                }
                out.push(Token::Str(s));
            }
            _ => {
                let mut w = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_alphanumeric() || ch == '_' || ch == '/' || ch == '.' {
                        w.push(ch);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if w.is_empty() {
                    return Err(format!("unexpected character {c:?}"));
                }
                out.push(Token::Word(w));
            }
        }
    }
    if out.is_empty() {
        return Err("the filter is empty".into());
    }
    Ok(out)
}

fn field(t: Option<&Token>) -> Result<Field, String> {
    match t {
        Some(Token::Word(w)) => match w.to_ascii_lowercase().as_str() {
            "name" => Ok(Field::Name),
            "title" | "properties/title" => Ok(Field::Title),
            "url" | "properties/url" => Ok(Field::Url),
            _ => Err(format!("cannot filter on {w:?}; use name, title or url")),
        },
        Some(t) => Err(format!("expected a field name, found {t}")),
        None => Err("expected a field name".into()),
    }
}

fn string(t: Option<&Token>) -> Result<String, String> {
    match t {
        Some(Token::Str(s)) => Ok(s.clone()),
        Some(t) => Err(format!("expected a quoted string, found {t}")),
        None => Err("expected a quoted string".into()),
    }
}

fn expect(t: Option<&Token>, want: &Token) -> Result<(), String> {
    match t {
        Some(t) if t == want => Ok(()),
        Some(t) => Err(format!("expected {want}, found {t}")),
        None => Err(format!("expected {want}")),
    }
}

fn parse_clause(tokens: &[Token], i: usize) -> Result<(Clause, usize), String> {
    let function = match tokens.get(i) {
        Some(Token::Word(w)) if tokens.get(i + 1) == Some(&Token::Open) => {
            Some(w.to_ascii_lowercase())
        }
        _ => None,
    };
    if let Some(function) = function {
        // f(field, 'value'), or substringof('value', field).
        let (f, value) = if function == "substringof" {
            let value = string(tokens.get(i + 2))?;
            expect(tokens.get(i + 3), &Token::Comma)?;
            (field(tokens.get(i + 4))?, value)
        } else {
            let f = field(tokens.get(i + 2))?;
            expect(tokens.get(i + 3), &Token::Comma)?;
            (f, string(tokens.get(i + 4))?)
        };
        expect(tokens.get(i + 5), &Token::Close)?;
        let op = match function.as_str() {
            "contains" | "substringof" => Op::Contains,
            "startswith" => Op::StartsWith,
            "endswith" => Op::EndsWith,
            other => return Err(format!("unknown function {other:?}")),
        };
        return Ok((
            Clause {
                field: f,
                op,
                value,
            },
            i + 6,
        ));
    }
    let f = field(tokens.get(i))?;
    let op = match tokens.get(i + 1) {
        Some(Token::Word(w)) => match w.to_ascii_lowercase().as_str() {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            other => return Err(format!("unknown operator {other:?}")),
        },
        Some(t) => return Err(format!("expected an operator, found {t}")),
        None => return Err("expected an operator".into()),
    };
    let value = string(tokens.get(i + 2))?;
    Ok((
        Clause {
            field: f,
            op,
            value,
        },
        i + 3,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn check(filter: &str, name: &str, title: &str) -> bool {
        Filter::parse(filter).unwrap().matches(|f| match f {
            Field::Name => name.into(),
            Field::Title => title.into(),
            Field::Url => "http://10.0.0.1:80".into(),
        })
    }

    #[test]
    fn filters_match_as_documented() {
        assert!(check("name eq 'B1'", "b1", ""));
        assert!(!check("name ne 'b1'", "b1", ""));
        assert!(check("contains(title, 'ma')", "x", "Primary"));
        assert!(check("substringof('PRI', title)", "x", "Primary"));
        assert!(check(
            "startswith(name, 'bac') and endswith(name,'1')",
            "backend1",
            ""
        ));
        assert!(check(
            "name eq 'x' or startswith(url, 'http://10.')",
            "b",
            ""
        ));
        assert!(!check(
            "name eq 'x' or name eq 'y' and title eq 'z'",
            "y",
            "no"
        ));
        assert!(check("name eq 'it''s'", "it's", ""));
        assert!(check("name ge 'b' and name lt 'c'", "backend", ""));
    }

    #[test]
    fn malformed_filters_are_refused() {
        for bad in [
            "",
            "name",
            "name eq",
            "name eq b1",
            "name like 'x'",
            "secret eq 'x'",
            "contains(name 'x')",
            "name eq 'x' nand name eq 'y'",
            "name eq 'unterminated",
            "name eq 'x' and",
            "frob(name, 'x')",
            "name eq 'x' $",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }
}
