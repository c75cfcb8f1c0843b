//! The topic index: subscription tries, replicated interest, retained store.
