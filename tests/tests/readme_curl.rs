//! The README's curl examples work as written.
//!
//! The test takes, from every ```` ```sh ```` block of `README.md`, the
//! statements that call `curl` or set a shell variable from a command
//! (`KEY=$(jq ...)`, `QUOTE=$(curl ... | jq ...)`), with their continuation
//! lines, and runs them in order in one `bash` against a devnet whose node
//! gw-us stands where the README puts it: `devnet/devnet.json` becomes this
//! devnet's file, `127.0.0.1:8100` its operator listener and
//! `127.0.0.1:9100` its wallet API. `curl` is the real binary (a missing one
//! fails the test); a shell function in front of it records every call's
//! status line and body without changing its output. The test then holds
//! each call to what the README says of it: the quote (200, PHP), the
//! remittance (201, a UETR), the wallet's and the operator's view of that
//! UETR (200) and the metrics (200, `remit_` samples).

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context};
use remit_tests::net::{Network, NetworkOptions};
use serde_json::Value;

/// Where the README's examples expect gw-us's listeners.
const README_OPS: &str = "127.0.0.1:8100";
const README_API: &str = "127.0.0.1:9100";
/// The README's devnet file.
const README_DEVNET: &str = "devnet/devnet.json";
/// Bound on the whole script.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// The runnable statements of the README's `sh` blocks, in order.
fn statements(readme: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut in_sh = false;
    let mut current: Option<String> = None;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line.trim() == "```sh";
            current = None;
            continue;
        }
        if !in_sh {
            continue;
        }
        if let Some(statement) = current.as_mut() {
            statement.push('\n');
            statement.push_str(line);
        } else {
            let name_end = line.find("=$(").filter(|&i| line[..i].bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
            if line.starts_with("curl ") || name_end.is_some_and(|i| i > 0) {
                current = Some(line.to_owned());
            }
        }
        if let Some(statement) = &current {
            // A statement goes on past a trailing backslash or an open quote.
            let open_quote = statement.matches('\'').count() % 2 == 1;
            if !(line.trim_end().ends_with('\\') || open_quote) {
                statements.push(statement.clone());
                current = None;
            }
        }
    }
    statements
}

#[test]
fn statements_are_taken_whole_from_sh_blocks_only() {
    let readme = "text\n```sh\nremit send x\nKEY=$(jq -r .k f)\ncurl -s a \\\n  -d '{\n}' | jq .\n```\n\
                  ```toml\ncurl no\n```\n```sh\ncurl -s b   # comment\n```\n";
    assert_eq!(
        statements(readme),
        vec!["KEY=$(jq -r .k f)", "curl -s a \\\n  -d '{\n}' | jq .", "curl -s b   # comment"]
    );
}

/// One recorded `curl` call: its arguments, status and body.
#[derive(Debug)]
struct Call {
    args: String,
    status: u16,
    body: String,
}

fn recorded_calls(dir: &Path) -> anyhow::Result<Vec<Call>> {
    let count: usize = std::fs::read_to_string(dir.join("n")).map_or(Ok(0), |n| n.trim().parse())?;
    (1..=count)
        .map(|i| {
            let read = |name: &str| std::fs::read_to_string(dir.join(format!("{name}.{i}")));
            let headers = read("headers").with_context(|| format!("headers of call {i}"))?;
            // The last status line (curl writes one per response, e.g. after a 100).
            let status = headers
                .lines()
                .rev()
                .find(|l| l.starts_with("HTTP/"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|code| code.parse().ok())
                .with_context(|| format!("status of call {i}: {headers}"))?;
            Ok(Call { args: read("args")?, status, body: read("body")? })
        })
        .collect()
}

async fn scenario(net: &mut Network) -> anyhow::Result<()> {
    net.wait_ready().await?;
    let node = net.node(0).clone();
    ensure!(node.name == "gw-us", "the README's examples use gw-us as node 0, not {}", node.name);
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("the workspace root")?;
    let readme = std::fs::read_to_string(workspace.join("README.md")).context("reading README.md")?;
    let statements = statements(&readme);
    ensure!(statements.len() >= 7, "only {} curl statements found in README.md: {statements:?}", statements.len());
    let curl = std::process::Command::new("curl").arg("--version").output();
    ensure!(curl.is_ok_and(|o| o.status.success()), "the curl binary is required (and missing)");

    // devnet.json as `remit devnet` writes it: what the README's jq reads.
    let devnet = remit_gateway::devnet::DevnetFile {
        network: net.keys_dir.join("network.json"),
        tls: false,
        nodes: (0..net.len()).map(|i| net.node(i).clone()).collect(),
        api_keys: net.api_keys.clone(),
        operator_tokens: net.operator_tokens.clone(),
        governance_keys: Vec::new(),
    };
    devnet.write(net.dir())?;
    let devnet_json = net.dir().join(remit_gateway::devnet::DEVNET_FILE);
    let record = tempfile::tempdir()?;
    let mut script = String::from("set -euo pipefail\n");
    script.push_str(&format!("RECORD={}\n", record.path().display()));
    // Counts calls in a file: a call inside $(...) runs in a subshell.
    script.push_str(
        "curl() {\n  local n=$(( $(cat \"$RECORD/n\" 2>/dev/null || echo 0) + 1 ))\n  echo \"$n\" > \"$RECORD/n\"\n  \
         printf '%s\\n' \"$*\" > \"$RECORD/args.$n\"\n  \
         command curl -D \"$RECORD/headers.$n\" \"$@\" | tee \"$RECORD/body.$n\"\n}\n",
    );
    for statement in &statements {
        let text = statement
            .replace(README_DEVNET, &devnet_json.display().to_string())
            .replace(README_OPS, node.ops_url.trim_start_matches("http://"))
            .replace(README_API, node.api_url.trim_start_matches("http://"));
        script.push_str(&text);
        script.push('\n');
    }
    println!("script:\n{script}");
    let run = tokio::process::Command::new("bash").arg("-c").arg(&script).kill_on_drop(true).output();
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, run).await.context("the README's commands hang")??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.success(), "the README's commands failed ({}):\n{stdout}\n{stderr}", output.status);

    let calls = recorded_calls(record.path())?;
    ensure!(calls.len() == 5, "expected 5 curl calls, ran {}: {calls:?}", calls.len());
    let json = |call: &Call| -> anyhow::Result<Value> {
        serde_json::from_str(&call.body).with_context(|| format!("JSON from `curl {}`: {}", call.args, call.body))
    };
    let find = |path: &str| {
        calls.iter().find(|c| c.args.contains(path)).with_context(|| format!("no call of {path}: {calls:?}"))
    };
    let quote = find("/v1/quotes")?;
    ensure!(quote.status == 200, "quote: {} {}", quote.status, quote.body);
    let quote = json(quote)?;
    ensure!(quote["receive_amount"]["currency"] == "PHP" && quote["send_amount"]["value"] == "100.00", "{quote}");
    let create = calls.iter().find(|c| c.args.contains("/v1/remittances ")).context("no create call")?;
    ensure!(create.status == 201, "create: {} {}", create.status, create.body);
    let created = json(create)?;
    let uetr = created["uetr"].as_str().context("a UETR")?;
    ensure!(created["quote_id"] == quote["quote_id"] && created["status"].is_string(), "{created}");
    let view = find(&format!("/v1/remittances/{uetr}"))?;
    ensure!(view.status == 200 && json(view)?["uetr"] == uetr, "wallet view: {} {}", view.status, view.body);
    let ops = find(&format!("/ops/remittances/{uetr}"))?;
    ensure!(ops.status == 200 && json(ops)?["uetr"] == uetr, "operator view: {} {}", ops.status, ops.body);
    let metrics = find("/metrics")?;
    ensure!(metrics.status == 200 && metrics.body.contains("remit_"), "metrics: {}", metrics.status);
    ensure!(stdout.lines().any(|l| l.starts_with("remit_")), "grep ^remit_ printed nothing: {stdout}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_curl_examples_work_as_written() {
    // The README's devnet: four validators (gw-us, gw-ph, ...).
    let options = NetworkOptions::default();
    let mut net = Network::start(options).await.expect("the network starts");
    let result = scenario(&mut net).await;
    net.finish(result);
}
