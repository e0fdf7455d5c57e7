//! The bearer token that guards the console's mutations (retrying and dropping dead letters).
//!
//! The token is compared in constant time: every byte of the longer of the two inputs is
//! visited whatever their content, so how long a refusal takes tells nothing of how much of a
//! guess was right (at most the token's length).

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

use super::error::ApiError;

/// A configured token: what `Authorization: Bearer <token>` must carry.
#[derive(Clone)]
pub(crate) struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    pub(crate) fn new(token: &str) -> Self {
        Token(token.as_bytes().to_vec())
    }

    fn matches(&self, given: &[u8]) -> bool {
        constant_time_eq(&self.0, given)
    }
}

/// Whether `a == b`, taking the same time for every pair of inputs of the same lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len().max(b.len());
    // Lengths that differ already make the difference non-zero; the loop still runs over the
    // longer input, reading zero past the end of the shorter one.
    let mut difference = (a.len() ^ b.len()) as u64;
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        difference |= u64::from(x ^ y);
    }
    std::hint::black_box(difference) == 0
}

/// Checks that `headers` carry the configured bearer token: 403 when the console has none
/// (mutations are then off), 401 when it is missing or wrong.
pub(crate) fn authorize(token: Option<&Token>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = token else {
        return Err(ApiError::Forbidden(
            "mutations are off: the console has no token configured",
        ));
    };
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
        .ok_or(ApiError::Unauthorized(
            "send the console's token as Authorization: Bearer <token>",
        ))?;
    if token.matches(given) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("wrong token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_byte_for_byte() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret "));
        assert!(!constant_time_eq(b"s3cret", b""));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn a_mutation_needs_a_configured_token_and_the_right_bearer() {
        let token = Token::new("s3cret");
        let mut headers = HeaderMap::new();
        assert!(matches!(
            authorize(None, &headers),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            authorize(Some(&token), &headers),
            Err(ApiError::Unauthorized(_))
        ));
        headers.insert(AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(matches!(
            authorize(Some(&token), &headers),
            Err(ApiError::Unauthorized(_))
        ));
        headers.insert(AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorize(Some(&token), &headers).is_ok());
    }
}
