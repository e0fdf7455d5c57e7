//! Which `Host` a request may name: protection against DNS rebinding.
//!
//! A console on a loopback address is out of other machines' reach, but not out of a
//! browser's on the same machine: a web page whose domain is made to resolve to `127.0.0.1`
//! after it loaded can read from the console as if it were its own origin. Its requests still
//! carry that domain in their `Host` header, so the console answers only requests that name it
//! by a loopback or IP address, `localhost`, or a name the application allowed with
//! [`Console::allow_host`](super::Console::allow_host) (the name a reverse proxy forwards);
//! others get 403. A request without `Host` (HTTP/1.0) is not a browser's and is answered.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::HOST;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// The names allowed besides IP addresses and `localhost`, lowercase.
#[derive(Clone, Debug, Default)]
pub(crate) struct Hosts(pub(crate) Vec<String>);

impl Hosts {
    fn allows(&self, host: &str) -> bool {
        let name = without_port(host);
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        bare.eq_ignore_ascii_case("localhost")
            || bare.parse::<IpAddr>().is_ok()
            || self
                .0
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(name))
    }
}

/// `host` without its `:port`, if it has one (an IPv6 literal keeps its brackets).
fn without_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(colon)
            if !host[colon + 1..].is_empty()
                && host[colon + 1..].bytes().all(|b| b.is_ascii_digit())
                && (!host.starts_with('[') || host[..colon].ends_with(']')) =>
        {
            &host[..colon]
        }
        _ => host,
    }
}

/// The middleware: 403 for a request that names another host.
pub(crate) async fn check(
    State(hosts): State<Arc<Hosts>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request.headers().get(HOST).map(|h| h.to_str());
    match host {
        None => next.run(request).await,
        Some(Ok(host)) if hosts.allows(host) => next.run(request).await,
        Some(_) => ApiError::Forbidden(
            "this host name is not allowed: name the console by its IP address or localhost, \
             or allow the name with Console::allow_host",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_localhost_are_allowed_other_names_only_when_listed() {
        let hosts = Hosts(vec!["admin.internal".into()]);
        for allowed in [
            "127.0.0.1",
            "127.0.0.1:9100",
            "[::1]:9100",
            "[::1]",
            "localhost",
            "LOCALHOST:80",
            "10.1.2.3:8080",
            "admin.internal",
            "Admin.Internal:443",
        ] {
            assert!(hosts.allows(allowed), "{allowed}");
        }
        for refused in [
            "evil.example",
            "evil.example:9100",
            "localhost.evil.example",
            "",
        ] {
            assert!(!hosts.allows(refused), "{refused}");
        }
    }
}
