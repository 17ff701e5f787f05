//! Blocks the local node applied recently, kept in memory for the ledger
//! follower so it need not read and decode them back from the store. The
//! follower falls back to the store for anything not here (after a restart,
//! a snapshot install, or when it lags more than the cache holds).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use remit_settlement::Block;

/// Most blocks held; older ones are dropped first.
const RECENT_BLOCKS_MAX: usize = 64;

/// A bounded, shared map of height -> applied block.
#[derive(Clone, Debug, Default)]
pub struct RecentBlocks {
    blocks: Arc<Mutex<BTreeMap<u64, Arc<Block>>>>,
}

impl RecentBlocks {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Block>>> {
        self.blocks.lock().expect("the recent-blocks lock is never held across a panic")
    }

    /// Keeps a block the node just applied.
    pub fn insert(&self, block: Arc<Block>) {
        let mut blocks = self.lock();
        blocks.insert(block.height().0, block);
        while blocks.len() > RECENT_BLOCKS_MAX {
            blocks.pop_first();
        }
    }

    /// The block at `height`, if held; forgets every block below it (the
    /// follower reads heights in increasing order).
    pub fn take(&self, height: u64) -> Option<Arc<Block>> {
        let mut blocks = self.lock();
        while blocks.first_key_value().is_some_and(|(h, _)| *h < height) {
            blocks.pop_first();
        }
        blocks.get(&height).cloned()
    }
}
