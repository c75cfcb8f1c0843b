//! The client-id directory: which shard owns each client's session. Partitioned by
//! `home_of(client_id)`; each shard keeps the entries of the ids whose home it is. Claims for one
//! id are serialized at its home, so two connections racing with the same id resolve in the
//! order the home saw them: the later one takes the session over.

use bytestring::ByteString;
use shards::ShardId;

#[derive(Debug, Clone, Copy)]
struct Entry {
    owner: ShardId,
    generation: u64,
}

#[derive(Debug, Default)]
pub struct Directory {
    entries: super::FastMap<ByteString, Entry>,
    next_generation: u64,
}

impl Directory {
    /// Records `claimant` as the owner of `client_id`; returns the claim's generation and the
    /// previous owner, which must hand the session over.
    pub fn claim(&mut self, client_id: ByteString, claimant: ShardId) -> (u64, Option<ShardId>) {
        self.next_generation += 1;
        let generation = self.next_generation;
        let previous = self.entries.insert(
            client_id,
            Entry {
                owner: claimant,
                generation,
            },
        );
        (generation, previous.map(|e| e.owner))
    }

    /// Forgets the owner when the session of that generation ended (a newer claim is kept).
    pub fn release(&mut self, client_id: &str, generation: u64) {
        if self
            .entries
            .get(client_id)
            .is_some_and(|e| e.generation == generation)
        {
            self.entries.remove(client_id);
        }
    }

    pub fn owner(&self, client_id: &str) -> Option<ShardId> {
        self.entries.get(client_id).map(|e| e.owner)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}
