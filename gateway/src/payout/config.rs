//! The `[payout]` section of `node.toml` and the choice of adapter.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{
    HttpPayoutAdapter, HttpPayoutConfig, PayoutAdapter, SimulatedBook, SimulatedPolicy, PAYOUT_TIMEOUT_MS_DEFAULT,
    SIMULATED_BANK_FILE,
};

/// Which payout adapter a node uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutAdapterKind {
    /// The in-memory [`SimulatedBook`].
    #[default]
    Simulated,
    /// The [`HttpPayoutAdapter`].
    Http,
}

impl PayoutAdapterKind {
    /// The name used in `node.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            PayoutAdapterKind::Simulated => "simulated",
            PayoutAdapterKind::Http => "http",
        }
    }
}

/// The `[payout]` section of `node.toml`. Its `Debug` is safe to log: it holds
/// the path of the token file, never the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutSection {
    /// `"simulated"` (default) or `"http"`.
    #[serde(default)]
    pub adapter: PayoutAdapterKind,
    /// Simulated only: accounts refused with `AC04` (closed).
    #[serde(default)]
    pub closed_accounts: Vec<String>,
    /// Simulated only: accounts refused with `AC06` (blocked).
    #[serde(default)]
    pub blocked_accounts: Vec<String>,
    /// Simulated only: refuse accounts the book does not know with `AC01`
    /// instead of opening them on first credit.
    #[serde(default)]
    pub refuse_unknown: bool,
    /// HTTP only (required there): the bank's payout endpoint, `http://` or `https://`.
    #[serde(default)]
    pub url: Option<String>,
    /// HTTP only: a file holding the bearer token sent as `Authorization`.
    #[serde(default)]
    pub auth_token_file: Option<PathBuf>,
    /// HTTP only: timeout of one payout request, 1..=120000 ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    PAYOUT_TIMEOUT_MS_DEFAULT
}

impl Default for PayoutSection {
    fn default() -> Self {
        Self {
            adapter: PayoutAdapterKind::default(),
            closed_accounts: Vec::new(),
            blocked_accounts: Vec::new(),
            refuse_unknown: false,
            url: None,
            auth_token_file: None,
            timeout_ms: PAYOUT_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// A `[payout]` setting that cannot be used, naming its key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct PayoutConfigError {
    /// The dotted key, e.g. `payout.url`.
    pub key: &'static str,
    /// Why it was refused.
    pub reason: String,
}

impl PayoutConfigError {
    pub(crate) fn new(key: &'static str, reason: impl Into<String>) -> Self {
        Self { key, reason: reason.into() }
    }
}

/// Builds the adapter the `[payout]` section asks for, checking that only the
/// keys of that adapter are set and reading the token file.
/// The simulated book keeps its file in `data_dir` ([`SIMULATED_BANK_FILE`]).
pub fn build_adapter(section: &PayoutSection, data_dir: &Path) -> Result<Arc<dyn PayoutAdapter>, PayoutConfigError> {
    match section.adapter {
        PayoutAdapterKind::Simulated => {
            let only_http = "only used when payout.adapter = \"http\"";
            if section.url.is_some() {
                return Err(PayoutConfigError::new("payout.url", only_http));
            }
            if section.auth_token_file.is_some() {
                return Err(PayoutConfigError::new("payout.auth_token_file", only_http));
            }
            let policy = SimulatedPolicy::from_section(section)?;
            let path = data_dir.join(SIMULATED_BANK_FILE);
            let book = SimulatedBook::open(&policy, &path)
                .map_err(|e| PayoutConfigError::new("payout.adapter", format!("simulated bank: {e}")))?;
            Ok(Arc::new(book))
        }
        PayoutAdapterKind::Http => {
            let only_simulated = "only used when payout.adapter = \"simulated\"";
            if !section.closed_accounts.is_empty() {
                return Err(PayoutConfigError::new("payout.closed_accounts", only_simulated));
            }
            if !section.blocked_accounts.is_empty() {
                return Err(PayoutConfigError::new("payout.blocked_accounts", only_simulated));
            }
            if section.refuse_unknown {
                return Err(PayoutConfigError::new("payout.refuse_unknown", only_simulated));
            }
            let url = section
                .url
                .clone()
                .ok_or_else(|| PayoutConfigError::new("payout.url", "required when payout.adapter = \"http\""))?;
            let token = section.auth_token_file.as_ref().map(read_token_file).transpose()?;
            let adapter =
                HttpPayoutAdapter::new(HttpPayoutConfig { url, bearer_token: token, timeout_ms: section.timeout_ms })?;
            Ok(Arc::new(adapter))
        }
    }
}

fn read_token_file(path: &PathBuf) -> Result<String, PayoutConfigError> {
    let key = "payout.auth_token_file";
    let text = std::fs::read_to_string(path)
        .map_err(|e| PayoutConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(PayoutConfigError::new(key, format!("{} is empty", path.display())));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(PayoutConfigError::new(
            key,
            format!("{} holds characters a bearer token cannot have", path.display()),
        ));
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::PAYOUT_TIMEOUT_MS_MAX;
    use super::*;

    #[test]
    fn payout_section_parses_with_defaults() {
        let section: PayoutSection = toml::from_str("").expect("empty section");
        assert_eq!(section, PayoutSection::default());
        assert_eq!(section.adapter, PayoutAdapterKind::Simulated);
        assert_eq!(section.timeout_ms, PAYOUT_TIMEOUT_MS_DEFAULT);

        let text = "adapter = \"http\"\nurl = \"https://bank.example/payouts\"\nauth_token_file = \"/etc/remit/bank.token\"\ntimeout_ms = 2500\n";
        let section: PayoutSection = toml::from_str(text).expect("http section");
        assert_eq!(section.adapter, PayoutAdapterKind::Http);
        assert_eq!(section.url.as_deref(), Some("https://bank.example/payouts"));
        assert_eq!(section.timeout_ms, 2500);

        let err = toml::from_str::<PayoutSection>("adaptor = \"http\"").expect_err("unknown key");
        assert!(err.to_string().contains("adaptor"), "{err}");
        let err = toml::from_str::<PayoutSection>("adapter = \"ftp\"").expect_err("unknown adapter");
        assert!(err.to_string().contains("ftp"), "{err}");
    }

    #[test]
    fn build_adapter_names_the_bad_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let empty_token = dir.path().join("empty.token");
        std::fs::write(&empty_token, "  \n").expect("write token");
        let http = PayoutSection {
            adapter: PayoutAdapterKind::Http,
            url: Some("http://127.0.0.1:9/pay".to_owned()),
            ..PayoutSection::default()
        };
        let cases: Vec<(PayoutSection, Result<&str, &str>)> = vec![
            (PayoutSection::default(), Ok("simulated")),
            (http.clone(), Ok("http")),
            (PayoutSection { url: Some("http://x".to_owned()), ..PayoutSection::default() }, Err("payout.url")),
            (
                PayoutSection { auth_token_file: Some(empty_token.clone()), ..PayoutSection::default() },
                Err("payout.auth_token_file"),
            ),
            (
                PayoutSection {
                    closed_accounts: vec!["A".to_owned()],
                    blocked_accounts: vec!["A".to_owned()],
                    ..PayoutSection::default()
                },
                Err("payout.blocked_accounts"),
            ),
            (PayoutSection { url: None, ..http.clone() }, Err("payout.url")),
            (PayoutSection { url: Some("ftp://bank/pay".to_owned()), ..http.clone() }, Err("payout.url")),
            (PayoutSection { url: Some("not a url".to_owned()), ..http.clone() }, Err("payout.url")),
            (PayoutSection { timeout_ms: 0, ..http.clone() }, Err("payout.timeout_ms")),
            (PayoutSection { timeout_ms: PAYOUT_TIMEOUT_MS_MAX + 1, ..http.clone() }, Err("payout.timeout_ms")),
            (PayoutSection { auth_token_file: Some(empty_token), ..http.clone() }, Err("payout.auth_token_file")),
            (
                PayoutSection { auth_token_file: Some(dir.path().join("missing")), ..http.clone() },
                Err("payout.auth_token_file"),
            ),
            (PayoutSection { refuse_unknown: true, ..http.clone() }, Err("payout.refuse_unknown")),
            (PayoutSection { closed_accounts: vec!["A".to_owned()], ..http }, Err("payout.closed_accounts")),
        ];
        for (section, expected) in cases {
            match (build_adapter(&section, dir.path()), expected) {
                (Ok(adapter), Ok(name)) => assert_eq!(adapter.name(), name, "{section:?}"),
                (Err(err), Err(key)) => {
                    assert_eq!(err.key, key, "{section:?}: {err}");
                    assert!(err.to_string().starts_with(key), "{err}");
                }
                (Ok(adapter), Err(key)) => panic!("{section:?}: expected an error on {key}, got {}", adapter.name()),
                (Err(err), Ok(name)) => panic!("{section:?}: expected {name}, got {err}"),
            }
        }
    }
}
