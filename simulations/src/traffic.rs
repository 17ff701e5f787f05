//! Synthetic settlement traffic: signed transfer batches between the
//! participants of a keyring, with random UETRs, destinations and amounts.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use iso_currency::Currency;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use remit_settlement::hash::Digest32;
use remit_settlement::ids::{ChainId, ParticipantId, Uetr};
use remit_settlement::money::Money;
use remit_settlement::network::NetworkConfig;
use remit_settlement::{Entry, Transfer, TransferBatch};

/// Shape of the generated traffic.
#[derive(Debug, Clone)]
pub struct TrafficConfig {
    /// Settlement currency of every transfer (every devnet participant settles in USD).
    pub currency: Currency,
    /// Smallest amount, in minor units.
    pub amount_minor_units_min: u64,
    /// Largest amount, in minor units.
    pub amount_minor_units_max: u64,
    /// Seed for reproducible traffic.
    pub seed: u64,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        Self { currency: Currency::USD, amount_minor_units_min: 100, amount_minor_units_max: 100_000, seed: 7 }
    }
}

/// Produces signed batches from every participant whose identity key it holds.
pub struct TrafficGenerator {
    chain_id: ChainId,
    senders: Vec<(ParticipantId, SigningKey)>,
    receivers: Vec<ParticipantId>,
    config: TrafficConfig,
    rng: StdRng,
}

impl std::fmt::Debug for TrafficGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrafficGenerator({} senders)", self.senders.len())
    }
}

impl TrafficGenerator {
    /// A generator sending between the network's participants that settle in
    /// `config.currency`, signing with the given identities.
    pub fn new(
        network: &NetworkConfig,
        identities: &BTreeMap<ParticipantId, SigningKey>,
        config: TrafficConfig,
    ) -> Self {
        let receivers: Vec<ParticipantId> =
            network.participants.iter().filter(|p| p.settles_in(config.currency)).map(|p| p.id.clone()).collect();
        let senders = identities
            .iter()
            .filter(|(id, _)| receivers.contains(id))
            .map(|(id, key)| (id.clone(), key.clone()))
            .collect();
        let rng = StdRng::seed_from_u64(config.seed);
        Self { chain_id: network.chain_id.clone(), senders, receivers, config, rng }
    }

    /// Number of participants that can send.
    pub fn sender_count(&self) -> usize {
        self.senders.len()
    }

    /// A fresh random version-4 UETR from the generator's RNG.
    pub fn uetr(&mut self) -> Uetr {
        let bytes: [u8; 16] = self.rng.gen();
        Uetr::from_uuid(uuid::Builder::from_random_bytes(bytes).into_uuid()).expect("builder sets version 4")
    }

    /// One unsigned transfer from `origin` to a random other participant.
    pub fn transfer(&mut self, origin: &ParticipantId, created_at_ms: u64) -> Transfer {
        let destination = loop {
            let candidate = &self.receivers[self.rng.gen_range(0..self.receivers.len())];
            if candidate != origin || self.receivers.len() == 1 {
                break candidate.clone();
            }
        };
        let minor = self.rng.gen_range(self.config.amount_minor_units_min..=self.config.amount_minor_units_max);
        Transfer {
            uetr: self.uetr(),
            origin: origin.clone(),
            destination,
            amount: Money::from_minor_units(minor, self.config.currency, "amount")
                .expect("configured amounts are valid"),
            payload_commitment: Digest32(self.rng.gen()),
            created_at_ms,
        }
    }

    /// `transfers` transfers split evenly into one signed batch per sender.
    pub fn entries(&mut self, transfers: usize, created_at_ms: u64) -> Vec<Entry> {
        let senders = self.senders.len().max(1);
        let mut entries = Vec::with_capacity(senders);
        for s in 0..self.senders.len() {
            let count = transfers / senders + usize::from(s < transfers % senders);
            if count == 0 {
                continue;
            }
            let origin = self.senders[s].0.clone();
            let batch: Vec<Transfer> = (0..count).map(|_| self.transfer(&origin, created_at_ms)).collect();
            let signed = TransferBatch::sign(&self.chain_id, origin, batch, &self.senders[s].1);
            entries.push(Entry::TransferBatch { batch: signed });
        }
        entries
    }
}
