//! JSON request bodies: the content type they must declare, strict parsing (a key given
//! twice is refused) and the JSON error body of every error response.

use std::collections::HashSet;
use std::fmt;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::{DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::error::{ErrorBody, HttpError, shortened};

/// A body that could not be read: over the limit (413), or broken off (400).
pub(crate) fn rejected(rejection: BytesRejection) -> Response {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        HttpError::PayloadTooLarge(rejection.body_text()).into_response()
    } else {
        HttpError::BadRequest(rejection.body_text()).into_response()
    }
}

/// Refuses (415) a request that does not declare a JSON body: `application/json` or
/// `application/<x>+json`, any parameters.
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), HttpError> {
    let declared = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            let essence = value.split(';').next().unwrap_or("").trim();
            let essence = essence.to_ascii_lowercase();
            essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json"))
        });
    match declared {
        Some(true) => Ok(()),
        Some(false) => Err(HttpError::UnsupportedMediaType(
            "the body must be JSON: send Content-Type: application/json".into(),
        )),
        None => Err(HttpError::UnsupportedMediaType(
            "no Content-Type: send Content-Type: application/json, also with an empty body".into(),
        )),
    }
}

/// `body` parsed as `T`, refusing a key that appears twice in any object (serde keeps the
/// last one for maps and `serde_json::Value`, which would silently drop what the client sent).
pub(crate) fn from_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    from_json_with(body, |json| T::deserialize(json))
}

/// [`from_json`] with the reading done by `read` (which may wrap the JSON deserializer), and
/// nothing allowed after the value.
pub(crate) fn from_json_with<'b, T>(
    body: &'b [u8],
    read: impl FnOnce(
        &mut serde_json::Deserializer<serde_json::de::SliceRead<'b>>,
    ) -> Result<T, serde_json::Error>,
) -> Result<T, serde_json::Error> {
    reject_duplicate_keys(body)?;
    let mut json = serde_json::Deserializer::from_slice(body);
    let value = read(&mut json)?;
    json.end()?;
    Ok(value)
}

/// Walks `body` once, without building it, and fails on the first object with a key twice.
pub(crate) fn reject_duplicate_keys(body: &[u8]) -> Result<(), serde_json::Error> {
    let mut json = serde_json::Deserializer::from_slice(body);
    UniqueKeys::deserialize(&mut json)?;
    json.end()
}

/// A JSON value whose objects have no key twice, checked while it is read and then dropped.
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if !seen.insert(key.0.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "the key {} appears twice",
                    shortened(&key.0)
                )));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
}

/// An object key, borrowed from the body when it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(key.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// `router` with a JSON error body on every error response that has none (a wrong method,
/// an unknown path, a rejection of axum's): `{"error": kind, "message": text}`.
pub(crate) fn with_json_errors(router: Router) -> Router {
    router.layer(axum::middleware::map_response(json_error_body))
}

async fn json_error_body(response: Response) -> Response {
    let status = response.status();
    let is_error = status.is_client_error() || status.is_server_error();
    if !is_error || response.headers().contains_key(CONTENT_TYPE) {
        return response;
    }
    let (kind, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this path does not take this method (see the Allow header)",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the body is over the limit"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "send Content-Type: application/json",
        ),
        StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "retry later"),
        s if s.is_client_error() => ("bad_request", s.canonical_reason().unwrap_or("bad request")),
        _ => ("internal", "internal error"),
    };
    let body = ErrorBody {
        error: kind,
        message,
        field: None,
    };
    let Ok(bytes) = serde_json::to_vec(&body) else {
        return response;
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(bytes))
}
