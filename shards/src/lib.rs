//! shards: the thread-per-core runtime of ringmq. Each CPU core runs one shard; shards talk only by
//! typed messages over bounded lock-free mailboxes. Knows nothing of MQTT, and is the only crate
//! that names the io_uring executor underneath.
