//! The writing side of a connection: takes what the shard buffered for it, writes it (one write
//! per batch), tells the shard the buffer drained, and at the close half-closes. A future written
//! by hand rather than an `async fn`: every idle connection keeps it in its task, and a
//! generator keeps room for its largest await (the write with its buffer) beside the state of
//! the others; this one is a step and what that step needs (`size_tests` in `connection`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;

use super::{CLOSE_LINGER, Ends, OUT_IDLE_BYTES_MAX, READER_DONE};
use crate::packet_trace::{self, Direction};
use crate::protocol;
use crate::server::ShardShell;
use crate::shard::{ConnId, UNSENT_RUNS_IDLE_MAX, UnsentRun};
use crate::transport::Writer;

pub(super) struct WriteSide<'a> {
    shell: &'a ShardShell,
    ends: &'a Ends,
    conn: ConnId,
    /// The deliveries of the write under way; swapped with the connection's list at each take,
    /// so tracking them allocates nothing per write.
    unsent: Vec<UnsentRun>,
    step: Step<'a>,
}

enum Step<'a> {
    /// Waiting to be woken (`Writers`), then taking what the shard buffered.
    Waiting(Writer),
    /// Writing `out`, `written` bytes of it so far. Its bytes count in the shard's write
    /// allowance until the write ends; a side dropped in the middle of it gives them back
    /// (`Drop`).
    Writing {
        writer: Writer,
        out: BytesMut,
        written: usize,
    },
    /// The end: the half-close, or the shutdown after a failure. Rare, and boxed.
    Ending(Pin<Box<dyn Future<Output = ()> + 'a>>),
    Done,
}

impl<'a> WriteSide<'a> {
    pub(super) fn new(
        shell: &'a ShardShell,
        conn: ConnId,
        writer: Writer,
        ends: &'a Ends,
    ) -> WriteSide<'a> {
        WriteSide {
            shell,
            ends,
            conn,
            unsent: Vec::new(),
            step: Step::Waiting(writer),
        }
    }

    /// The writer of a connection that parks: only while it waits for a wake-up, with nothing
    /// under way.
    pub(super) fn take_writer(&mut self) -> Option<Writer> {
        match std::mem::replace(&mut self.step, Step::Done) {
            Step::Waiting(writer) => Some(writer),
            other => {
                self.step = other;
                None
            }
        }
    }

    /// The step after a wake-up or a completed write: takes what is buffered, and writes it,
    /// waits for more, or ends. The shard keeps appending to the rest of the allocation while
    /// this part is on the wire. Drained, a large buffer is let go: an idle connection holds no
    /// write buffer, the next packet allocates one.
    fn take(&mut self, writer: Writer) -> Step<'a> {
        let taken =
            self.shell
                .shard
                .borrow_mut()
                .take_out(self.conn, &mut self.unsent, OUT_IDLE_BYTES_MAX);
        let Some((out, closing)) = taken else {
            tracing::debug!(conn = self.conn, "writer: connection gone");
            return ending(writer, None);
        };
        if out.is_empty() {
            if closing {
                return ending(writer, Some(self.ends));
            }
            return Step::Waiting(writer);
        }
        if packet_trace::enabled() {
            trace_sent(self.shell, self.conn, &out);
        }
        Step::Writing {
            writer,
            out,
            written: 0,
        }
    }

    /// The write of `out` ended: written, or failed.
    fn wrote(&mut self, writer: Writer, out: BytesMut, result: std::io::Result<()>) -> Step<'a> {
        // Written or not, the buffer is let go: no longer held (`shard::writes`).
        self.shell.shard.borrow_mut().written(out.len());
        if result.is_err() {
            return ending(writer, None);
        }
        record_written(self.shell, &mut self.unsent, out.len());
        drop(out);
        // Room in the buffer again: queued deliveries may follow.
        self.shell.drained(self.conn);
        self.take(writer)
    }
}

/// The last step: a half-close when the shard closed the connection (`ends` given), else a
/// shutdown.
fn ending<'a>(mut writer: Writer, half_close_with: Option<&'a Ends>) -> Step<'a> {
    Step::Ending(Box::pin(async move {
        match half_close_with {
            Some(ends) => half_close(&mut writer, ends).await,
            None => writer.shutdown().await,
        }
    }))
}

impl Future for WriteSide<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match &mut this.step {
                Step::Waiting(_) => {
                    if this
                        .shell
                        .writers
                        .borrow_mut()
                        .poll_woken(this.conn, cx)
                        .is_pending()
                    {
                        return Poll::Pending;
                    }
                    if let Step::Waiting(writer) = std::mem::replace(&mut this.step, Step::Done) {
                        this.step = this.take(writer);
                        if matches!(this.step, Step::Writing { .. }) {
                            this.ends.set_writing(true);
                        }
                    }
                }
                Step::Writing {
                    writer,
                    out,
                    written,
                } => {
                    let Poll::Ready(result) = writer.poll_write_all(cx, out, written) else {
                        return Poll::Pending;
                    };
                    if let Step::Writing { writer, out, .. } =
                        std::mem::replace(&mut this.step, Step::Done)
                    {
                        this.step = this.wrote(writer, out, result);
                        this.ends
                            .set_writing(matches!(this.step, Step::Writing { .. }));
                    }
                }
                Step::Ending(end) => {
                    if end.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.step = Step::Done;
                }
                Step::Done => return Poll::Ready(()),
            }
        }
    }
}

impl Drop for WriteSide<'_> {
    /// A side dropped in the middle of its write (a close stops waiting after
    /// `CLOSE_FLUSH_TIMEOUT` for a client that does not read, and cancels it) gives its bytes
    /// back, and the connections waiting for room are pumped.
    fn drop(&mut self) {
        let Step::Writing { out, .. } = &self.step else {
            return;
        };
        match self.shell.shard.try_borrow_mut() {
            Ok(mut shard) => shard.write_abandoned(out.len(), Instant::now()),
            Err(_) => tracing::warn!(
                bytes = out.len(),
                "writer dropped while its shard was busy: its write bytes stay counted"
            ),
        }
    }
}

/// The broker closes: its last bytes are out. Half-close, so the client reads them and an end
/// of stream; the reading side lingers (`linger`). A reader still waiting for input (the close
/// came from elsewhere: a takeover, a keepalive) is ended after `CLOSE_LINGER`.
async fn half_close(writer: &mut Writer, ends: &Ends) {
    writer.close_write().await;
    if !ends.raised(READER_DONE, CLOSE_LINGER).await {
        writer.shutdown().await;
    }
}

/// A write just completed: counts its bytes and times the deliveries it carried (one clock
/// reading per write that carried any), then empties `unsent` for the next write.
fn record_written(shell: &ShardShell, unsent: &mut Vec<UnsentRun>, bytes: usize) {
    let metrics = &mut shell.shard.borrow_mut().metrics;
    metrics.bytes_sent(bytes);
    if unsent.is_empty() {
        return;
    }
    let written_at = Instant::now();
    for run in unsent.drain(..) {
        let count = u64::from(run.count);
        let delivery = crate::metrics::micros_between(run.read_at, written_at);
        metrics.record_delivery(run.qos, run.path, delivery, count);
        metrics.record_write(
            crate::metrics::micros_between(run.encoded_at, written_at),
            count,
        );
    }
    if unsent.capacity() > UNSENT_RUNS_IDLE_MAX {
        *unsent = Vec::new();
    }
}

/// Packet trace of bytes about to be written: whole packets, decoded again from a copy (only
/// called with the trace on).
fn trace_sent(shell: &ShardShell, conn: ConnId, out: &[u8]) {
    let Some((client_id, version)) = shell
        .shard
        .borrow()
        .conn(conn)
        .map(|c| (c.client_id.clone(), c.version))
    else {
        return;
    };
    let mut copy = BytesMut::from(out);
    while let Ok(Some(packet)) = protocol::decode(&mut copy, version, usize::MAX) {
        packet_trace::packet(Direction::Sent, conn, &client_id, &packet);
    }
}
