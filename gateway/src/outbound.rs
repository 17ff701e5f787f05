//! Error text for the gateway's outbound HTTP calls (the bank payout
//! adapter, webhooks): safe to log and to store, so it never carries the
//! URL (which may hold credentials) nor control characters.

/// What went wrong with a request that got no HTTP answer, with its causes,
/// at most `max` characters.
pub(crate) fn describe_transport_error(error: &reqwest::Error, max: usize) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_builder() {
        "invalid request (check the endpoint URL)"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    truncate_chars(&text, max)
}

/// The first `max` characters of `text`, control characters removed.
pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}
