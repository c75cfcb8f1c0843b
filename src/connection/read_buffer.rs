//! The shard's read buffer: a connection with no partial frame owns no read buffer. It waits for
//! data with the shard's buffer lent for one poll at a time (the runtime's receive lands in its
//! own pool and is copied in when it completes, so this buffer is never handed to the kernel
//! while the connection waits), and what a read brings is split off that buffer: the
//! frames decoded from it are `Bytes` slices of the shard's allocation, no copy and no allocation
//! per read. Only a connection left holding a partial frame gets a buffer of its own, on its next
//! read (`read_more`), sized for that frame.
//!
//! A chunk of `CHUNK_BYTES` serves reads until less than a full read fits; then a new chunk is
//! allocated, and the old one is freed when the last frame sliced from it is dropped. One shard
//! is one thread, so the buffer is a thread-local borrowed for one poll, never across an await.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll};

use bytes::BytesMut;

use crate::transport::Reader;

/// Bytes of one allocation of the shard's read buffer (several reads' worth, so that a chunk is
/// not allocated per read).
const CHUNK_BYTES: usize = 64 * 1024;

thread_local! {
    /// Initialized bytes not yet read into; reads take from the front.
    static SHARD_READ_BUFFER: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Reads at most `read_bytes_max` bytes (at least one; none at end of stream) with the shard's
/// buffer; the bytes read, split off it.
pub(super) async fn read(reader: &mut Reader, read_bytes_max: usize) -> io::Result<BytesMut> {
    poll_fn(|cx| poll_read(cx, reader, read_bytes_max)).await
}

/// One poll of `read`: the caller's future keeps nothing between polls.
pub(super) fn poll_read(
    cx: &mut Context<'_>,
    reader: &mut Reader,
    read_bytes_max: usize,
) -> Poll<io::Result<BytesMut>> {
    const { assert!(CHUNK_BYTES >= 2 * super::READ_CHUNK) };
    let read_bytes_max = read_bytes_max.min(CHUNK_BYTES);
    SHARD_READ_BUFFER.with_borrow_mut(|buffer| {
        if buffer.len() < read_bytes_max {
            *buffer = BytesMut::zeroed(CHUNK_BYTES);
        }
        let Some(space) = buffer.get_mut(..read_bytes_max) else {
            return Poll::Ready(Ok(BytesMut::new()));
        };
        match reader.poll_read(cx, space) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(buffer.split_to(n.min(read_bytes_max)))),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    })
}
