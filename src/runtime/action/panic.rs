//! What a panicking action said: its runners turn a caught panic into a retryable failure
//! that carries the panic's message.

/// The message of a caught panic's payload (a `&str` or a `String`, as `panic!` makes them).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "a non-string panic payload"
    }
}
