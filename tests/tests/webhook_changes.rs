//! Webhooks through a running gateway announce every status change.
//!
//! gw-us (node 0) is restarted with a webhook for its wallet client pointing
//! at a receiver in this test (plain HTTP on loopback). One remittance to
//! gw-ph goes to `completed`; the receiver must then have exactly one event
//! per entry of the remittance's history, in order, each carrying that
//! entry's status and time (`created_at_ms == at_ms`). Before, events
//! carried the status at sending time: `received, committed,
//! payout_pending, payout_pending, completed`, without `submitted` or
//! `final`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context};
use remit_tests::net::{stop_and_verify, Acknowledged, Network, NetworkOptions};
use remit_tests::wallet::send_and_complete;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const ORIGIN: usize = 0;
const TIMEOUT: Duration = Duration::from_secs(30);

/// Receives webhook POSTs on loopback and keeps their JSON bodies in order.
async fn receiver() -> anyhow::Result<(String, Arc<Mutex<Vec<serde_json::Value>>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut socket = BufReader::new(socket);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if socket.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0u8; length];
                    if socket.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if let Ok(json) = serde_json::from_slice(&body) {
                        kept.lock().expect("not poisoned").push(json);
                    }
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if socket.get_mut().write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((url, bodies))
}

/// Points node 0's wallet client's webhook at `url`.
fn configure_webhook(net: &Network, url: &str) -> anyhow::Result<()> {
    let path = net.node(ORIGIN).config.clone();
    let secret = path.with_file_name("webhook_secret");
    std::fs::write(&secret, "a-webhook-secret-of-32-characters")?;
    let mut config: toml::Table = std::fs::read_to_string(&path)?.parse()?;
    let client = config
        .get_mut("api")
        .and_then(|api| api.get_mut("clients"))
        .and_then(|clients| clients.as_array_mut())
        .and_then(|clients| clients.first_mut())
        .and_then(|client| client.as_table_mut())
        .context("node.toml has no [[api.clients]]")?;
    client.insert("webhook_url".into(), url.into());
    client.insert("webhook_secret_file".into(), secret.display().to_string().into());
    std::fs::write(&path, toml::to_string(&config)?)?;
    Ok(())
}

async fn scenario(net: &mut Network) -> anyhow::Result<()> {
    net.wait_ready().await?;
    let (url, bodies) = receiver().await?;
    net.stop(ORIGIN)?;
    configure_webhook(net, &url)?;
    net.restart(ORIGIN)?;
    net.wait_ready().await?;

    let done = send_and_complete(net, ORIGIN, 1, ("US", "USD", "PH", "PHP"), "80.00", "webhook-changes").await?;
    let mut acks = Acknowledged::default();
    acks.accepted.insert(done.uetr.parse()?);
    let expected: Vec<(String, u64)> =
        done.history.iter().map(|change| (change.status.clone(), change.at_ms)).collect();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let events = loop {
        let events: Vec<serde_json::Value> =
            bodies.lock().expect("not poisoned").iter().filter(|e| e["uetr"] == done.uetr.as_str()).cloned().collect();
        if events.len() >= expected.len() || tokio::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A moment more: any event beyond the history would show up now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late = bodies.lock().expect("not poisoned").iter().filter(|e| e["uetr"] == done.uetr.as_str()).count();
    let announced: Vec<(String, u64)> = events
        .iter()
        .map(|event| (event["status"].as_str().unwrap_or("?").to_owned(), event["created_at_ms"].as_u64().unwrap_or(0)))
        .collect();
    ensure!(announced == expected, "webhook events {announced:?}, history {expected:?}");
    ensure!(late == expected.len(), "{late} events for {} changes", expected.len());
    let statuses: Vec<&str> = expected.iter().map(|(status, _)| status.as_str()).collect();
    ensure!(statuses.contains(&"submitted") && statuses.contains(&"final"), "history {statuses:?}");

    let everything: Vec<usize> = (0..net.len()).collect();
    let (height, _) = net.wait_settled(&everything, TIMEOUT).await?;
    stop_and_verify(net, height, &acks)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_announce_every_status_change_once() {
    let mut net = Network::start(NetworkOptions::default()).await.expect("the network starts");
    let result = scenario(&mut net).await;
    net.finish(result);
}
