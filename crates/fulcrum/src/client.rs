//! A small client of the native API, shared by the CLI commands and `apply`.

use anyhow::{Context, anyhow};
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// What a call returned: the body and the work request that tracks it, if any.
pub struct Reply {
    pub body: Value,
    pub work_request_id: Option<String>,
    pub etag: Option<String>,
}

impl Client {
    /// `base` is the API's URL; a bare `host:port` means `http://host:port`.
    pub fn new(base: String, token: String) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_owned()
        } else {
            format!("http://{base}")
        };
        Ok(Self {
            base,
            token,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(150))
                .build()?,
        })
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> anyhow::Result<Reply> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(tag) = if_match {
            req = req.header("if-match", tag);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach fulcrum at {}: {}", self.base, root_cause(&e)))?;
        let status = resp.status();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let work_request_id = header("x-work-request-id");
        let etag = header("etag");
        let text = resp.text().await.context("reading the response")?;
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            return Err(api_error(status, &body));
        }
        Ok(Reply {
            body,
            work_request_id,
            etag,
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.call(Method::GET, path, None, None).await?.body)
    }

    /// Every item of a paginated list.
    pub async fn list_all(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = match &token {
                Some(t) => format!("{path}{sep}limit=1000&page_token={t}"),
                None => format!("{path}{sep}limit=1000"),
            };
            let page = self.get(&url).await?;
            if let Some(list) = page.get("items").and_then(Value::as_array) {
                items.extend(list.iter().cloned());
            }
            match page.get("next_page_token").and_then(Value::as_str) {
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(items),
            }
        }
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn api_error(status: StatusCode, body: &Value) -> anyhow::Error {
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string());
    let code = body.get("code").and_then(Value::as_str).unwrap_or("error");
    anyhow!("{message} ({code}, HTTP {})", status.as_u16())
}
