//! Parameters of console requests: query strings and path segments, with their caps. Every
//! rejection is a 400 with a JSON message, never axum's plain-text one.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};

use super::error::ApiError;

/// The query string parsed into `T`, or a 400 saying why not.
pub(crate) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::BadRequest(format!("invalid query: {}", e.body_text())))
}

/// The path parameters parsed into `T` (a segment that does not decode to UTF-8 is refused),
/// or a 400 saying why not.
pub(crate) fn path<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| ApiError::BadRequest(format!("invalid path: {}", e.body_text())))
}

/// `given`, or `default` when absent; a limit of 0 or over `max` is refused, so no request
/// asks for an unbounded answer.
pub(crate) fn limit(given: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    match given {
        None => Ok(default),
        Some(0) => Err(ApiError::BadRequest("limit must be at least 1".into())),
        Some(n) if n > max => Err(ApiError::BadRequest(format!(
            "limit must be at most {max}, not {n}"
        ))),
        Some(n) => Ok(n),
    }
}

/// A comma-separated list (`stores=A,B`), empty items dropped; `None` when absent or empty.
pub(crate) fn list(given: Option<&str>) -> Option<Vec<String>> {
    let items: Vec<String> = given?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    (!items.is_empty()).then_some(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_refuse_zero_and_over_the_cap() {
        assert_eq!(limit(None, 50, 500).unwrap(), 50);
        assert_eq!(limit(Some(500), 50, 500).unwrap(), 500);
        assert!(limit(Some(0), 50, 500).is_err());
        assert!(limit(Some(501), 50, 500).is_err());
    }

    #[test]
    fn lists_split_on_commas_and_drop_empty_items() {
        assert_eq!(list(Some("A, B,,")), Some(vec!["A".into(), "B".into()]));
        assert_eq!(list(Some(",")), None);
        assert_eq!(list(None), None);
    }
}
