//! The chain lock and async runtimes: an apply holds the lock until its
//! block is flushed (tens to hundreds of milliseconds under load), and the
//! tasks that wait for it must not freeze the runtime they run on, or the
//! Raft RPCs and timers scheduled there wait with them (the AppendEntries
//! timeouts seen under load).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use remit_settlement::chain::Chain;
use remit_settlement::replica::state_machine::lock;
use remit_settlement::store::SledLedgerStore;

#[test]
fn tasks_waiting_for_the_chain_lock_do_not_stop_the_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledLedgerStore::open(dir.path()).expect("store opens");
    let chain = Arc::new(Mutex::new(Chain::open(store, Some(&network_config(&validators(4, 1)))).expect("chain")));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");

    // A slow apply: another thread holds the lock for 400 ms.
    let (holding, held) = std::sync::mpsc::channel();
    let release = {
        let chain = chain.clone();
        std::thread::spawn(move || {
            let guard = lock(&chain);
            holding.send(()).expect("the test waits");
            std::thread::sleep(Duration::from_millis(400));
            drop(guard);
        })
    };
    held.recv().expect("the holder took the lock");
    let ticks = Arc::new(AtomicU64::new(0));
    runtime.block_on(async {
        // As many waiters as the runtime has workers, then a timer task.
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let chain = chain.clone();
                tokio::spawn(async move { lock(&chain).validators().len() })
            })
            .collect();
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        // The waiters hold both workers' threads; the timer must tick anyway.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let while_held = ticks.load(Ordering::Relaxed);
        release.join().expect("releases");
        for waiter in waiters {
            assert_eq!(waiter.await.expect("waiter ends"), 4, "each waiter reads the chain once the lock is free");
        }
        ticker.abort();
        // 30 ticks are due in 300 ms; a frozen runtime gives none.
        assert!(while_held >= 5, "the runtime ran only {while_held} timer ticks while the lock was held");
    });
}
