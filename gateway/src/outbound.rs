//! The gateway's outbound HTTP calls (the bank payout adapter, webhooks):
//! which URLs they may go to, and error text that is safe to log and to
//! store, so it never carries the URL (which may hold credentials) nor
//! control characters.

/// Why `url` may not receive customer data, if it may not: it must be
/// `https://`, except to a loopback host (a bank simulator or a wallet's
/// receiver on the same machine), where `http://` is allowed too.
pub(crate) fn refuse_insecure_url(url: &reqwest::Url) -> Option<String> {
    let loopback = url.host_str().is_some_and(|host| {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    });
    match url.scheme() {
        "https" => None,
        "http" if loopback => None,
        "http" => Some("must be https:// (plain http:// is allowed only to a loopback host)".to_owned()),
        other => Some(format!("scheme {other:?} is not https")),
    }
}

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

#[cfg(test)]
mod url_tests {
    use super::refuse_insecure_url;

    fn check(url: &str, allowed: bool) {
        let parsed = reqwest::Url::parse(url).expect("a URL");
        assert_eq!(refuse_insecure_url(&parsed).is_none(), allowed, "{url}");
    }

    #[test]
    fn https_anywhere_and_http_only_to_loopback() {
        check("https://bank.example/payouts", true);
        check("https://203.0.113.9:8443/hook", true);
        check("http://127.0.0.1:9000/payouts", true);
        check("http://127.8.9.10/payouts", true);
        check("http://localhost:9000/hook", true);
        check("http://[::1]:9000/hook", true);
        check("http://bank.example/payouts", false);
        check("http://10.0.0.5/payouts", false);
        check("http://localhost.bank.example/hook", false);
        check("ftp://127.0.0.1/file", false);
    }

    #[test]
    fn the_bank_adapter_and_webhooks_refuse_plain_http_to_other_hosts() {
        let bank = |url: &str| {
            crate::payout::HttpPayoutAdapter::new(crate::payout::HttpPayoutConfig {
                url: url.to_owned(),
                bearer_token: None,
                timeout_ms: 1_000,
            })
        };
        let refused = bank("http://bank.example/payouts").expect_err("plain http to a bank host");
        assert_eq!(refused.key, "payout.url");
        assert!(refused.reason.contains("https://"), "{}", refused.reason);
        assert!(bank("https://bank.example/payouts").is_ok());
        assert!(bank("http://127.0.0.1:9000/payouts").is_ok());
        let secret = [7u8; crate::webhook::WEBHOOK_SECRET_LEN_MIN];
        let hook = |url: &str| crate::webhook::WebhookEndpoint::new(url, secret.to_vec());
        let refused = hook("http://wallet.example/hook").expect_err("plain http to a wallet host");
        assert!(refused.to_string().contains("https://"), "{refused}");
        assert!(hook("https://wallet.example/hook").is_ok());
        assert!(hook("http://localhost:8080/hook").is_ok());
    }
}
