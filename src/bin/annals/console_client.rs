//! A small HTTP/1.1 client for the admin console's API (`annals --url`): plain `http://` on a
//! loopback or tunnelled address, one connection per request, JSON answers, and the live
//! tail's Server-Sent Events read as they arrive.

use std::pin::Pin;

use hyper::body::{Body, Bytes, Incoming};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

use crate::error::{CliError, EXIT_FAILURE, EXIT_NOT_FOUND};

/// The most an answer may hold: the console caps its pages far below this.
const ANSWER_BYTES_MAX: usize = 64 << 20;

/// A console's address: `host:port` and the path it is mounted under.
#[derive(Clone, Debug)]
pub struct Console {
    authority: String,
    prefix: String,
    token: Option<String>,
}

impl Console {
    /// Parses `http://host[:port][/prefix]`.
    pub fn parse(url: &str, token: Option<String>) -> Result<Self, CliError> {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(CliError::failed(format!(
                "--url {url:?}: only http:// is spoken (reach a remote console through an SSH \
                 tunnel: ssh -L 9100:127.0.0.1:9100 host)"
            )));
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(CliError::failed(format!("--url {url:?}: no host")));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'))
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Console {
            authority,
            prefix: path.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// `GET path`, the answer as JSON.
    pub async fn get(&self, path: &str) -> Result<serde_json::Value, CliError> {
        self.json(Method::GET, path).await
    }

    /// A request with the bearer token (mutations), the answer as JSON.
    pub async fn mutate(&self, method: Method, path: &str) -> Result<serde_json::Value, CliError> {
        if self.token.is_none() {
            return Err(CliError::failed("this needs the console's token")
                .hint("pass --token or set ANNALS_CONSOLE_TOKEN"));
        }
        self.json(method, path).await
    }

    async fn json(&self, method: Method, path: &str) -> Result<serde_json::Value, CliError> {
        let (status, mut body) = self.send(method, path, "application/json").await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = next_chunk(&mut body).await? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > ANSWER_BYTES_MAX {
                return Err(CliError::failed("the console's answer is too large"));
            }
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            CliError::failed(format!("the console's answer to {path} is not JSON: {e}"))
        })?;
        if status.is_success() {
            return Ok(value);
        }
        let message = value["message"].as_str().unwrap_or("no message").to_owned();
        let code = if status == StatusCode::NOT_FOUND {
            EXIT_NOT_FOUND
        } else {
            EXIT_FAILURE
        };
        Err(CliError::with_code(code, format!("{status}: {message}")))
    }

    /// `GET path` as Server-Sent Events: calls `each` with the data of every `event` message
    /// until the console closes the stream or `each` fails.
    pub async fn events(
        &self,
        path: &str,
        mut each: impl FnMut(serde_json::Value) -> Result<(), CliError>,
    ) -> Result<(), CliError> {
        let (status, mut body) = self.send(Method::GET, path, "text/event-stream").await?;
        if !status.is_success() {
            return Err(CliError::failed(format!("{status} from {path}")));
        }
        let mut pending = String::new();
        while let Some(chunk) = next_chunk(&mut body).await? {
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find("\n\n") {
                let message: String = pending.drain(..end + 2).collect();
                if !message.lines().any(|l| l == "event: event") {
                    continue;
                }
                let data: String = message
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                let value = serde_json::from_str(&data).map_err(|e| {
                    CliError::failed(format!("an event of the tail is not JSON: {e}"))
                })?;
                each(value)?;
            }
        }
        Ok(())
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        accept: &str,
    ) -> Result<(StatusCode, Incoming), CliError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            CliError::failed(format!(
                "cannot reach the console at {}: {e}",
                self.authority
            ))
        };
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| unreachable(&e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header("host", &self.authority)
            .header("accept", accept);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .body(String::new())
            .map_err(|e| CliError::failed(format!("invalid request {path}: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(&e))?;
        Ok((response.status(), response.into_body()))
    }
}

/// The next data chunk of `body`, `None` at its end (trailers skipped).
async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, CliError> {
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => {
                return Err(CliError::failed(format!(
                    "reading the console's answer: {e}"
                )));
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// `text` percent-encoded for a path segment or a query value.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
