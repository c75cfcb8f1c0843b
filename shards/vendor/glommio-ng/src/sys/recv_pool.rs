// ringmq patch (change 7 in shards/vendor/README.md): an executor's pool of receive buffers,
// registered with its main ring as a provided-buffer ring (Linux 5.19+). A socket receive armed
// with buffer select holds no memory while it waits: the kernel takes a buffer from this ring
// only when data arrives, and the completion says which one. The buffer goes back to the ring
// when the reader has copied its bytes out, so the pool's memory is what one executor has in
// flight at once, whatever the number of connections.

use io_uring::{types::BufRingEntry, Submitter};
use std::{
    alloc::{self, Layout},
    cell::Cell,
    collections::VecDeque,
    io,
    ptr::NonNull,
    rc::Rc,
    sync::atomic::{AtomicU16, Ordering},
};

/// The buffer group id of the pool in its ring (one pool per ring).
pub(crate) const RECV_POOL_GROUP: u16 = 0;

/// Counters of one executor's pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecvPoolStats {
    /// Buffers in the pool.
    pub buffers: usize,
    /// Bytes of each buffer.
    pub buffer_bytes: usize,
    /// Buffers the kernel filled that readers have not given back yet.
    pub held: usize,
    /// Receives completed into a pool buffer.
    pub receives: u64,
    /// Receives that found the pool empty (`ENOBUFS`) and read with a plain `recv` instead.
    pub exhausted: u64,
}

pub(crate) struct RecvPool {
    /// `entries` ring slots of 16 bytes, page aligned; the kernel reads them, we write them.
    ring: NonNull<BufRingEntry>,
    ring_layout: Layout,
    data: NonNull<u8>,
    data_layout: Layout,
    entries: u16,
    buffer_bytes: usize,
    /// Our copy of the ring's tail: slots up to it hold buffers the kernel may take.
    tail: Cell<u16>,
    held: Cell<usize>,
    receives: Cell<u64>,
    exhausted: Cell<u64>,
}

impl RecvPool {
    /// Allocates `buffers` (a power of two, at most 32768) of `buffer_bytes` each and registers
    /// them with the ring of `submitter`. An error (an old kernel, a bad size) leaves nothing
    /// registered, and the caller keeps reading without a pool.
    pub(crate) fn register(
        submitter: &Submitter<'_>,
        buffers: usize,
        buffer_bytes: usize,
    ) -> io::Result<Rc<RecvPool>> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
        let entries = u16::try_from(buffers)
            .ok()
            .filter(|n| n.is_power_of_two() && *n <= 32768)
            .ok_or_else(|| invalid("receive buffers: a power of two from 1 to 32768"))?;
        if buffer_bytes == 0 || u32::try_from(buffer_bytes).is_err() {
            return Err(invalid("receive buffer bytes: from 1 to 4 GiB"));
        }
        let ring_layout = Layout::from_size_align(
            usize::from(entries) * std::mem::size_of::<BufRingEntry>(),
            4096,
        )
        .map_err(|_| invalid("receive buffer ring size"))?;
        let data_layout = Layout::from_size_align(usize::from(entries) * buffer_bytes, 4096)
            .map_err(|_| invalid("receive buffer pool size"))?;
        // SAFETY: both layouts have a non-zero size (entries >= 1, buffer_bytes >= 1).
        let ring = NonNull::new(unsafe { alloc::alloc_zeroed(ring_layout) })
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?
            .cast::<BufRingEntry>();
        let Some(data) = NonNull::new(unsafe { alloc::alloc(data_layout) }) else {
            // SAFETY: allocated just above with this layout.
            unsafe { alloc::dealloc(ring.as_ptr().cast(), ring_layout) };
            return Err(io::ErrorKind::OutOfMemory.into());
        };
        let pool = RecvPool {
            ring,
            ring_layout,
            data,
            data_layout,
            entries,
            buffer_bytes,
            tail: Cell::new(0),
            held: Cell::new(0),
            receives: Cell::new(0),
            exhausted: Cell::new(0),
        };
        // SAFETY: the ring memory lives as long as the pool, which the ring's owner drops only
        // after the ring itself (see `SleepableRing`), and buffers in readers' hands keep it.
        unsafe {
            submitter.register_buf_ring_with_flags(
                ring.as_ptr() as u64,
                entries,
                RECV_POOL_GROUP,
                0,
            )?;
        }
        for bid in 0..entries {
            pool.push(bid);
        }
        pool.publish();
        Ok(Rc::new(pool))
    }

    /// Writes buffer `bid` into the next free slot (not yet visible to the kernel).
    fn push(&self, bid: u16) {
        let tail = self.tail.get();
        let slot = usize::from(tail & (self.entries - 1));
        // SAFETY: `slot < entries`, inside the ring allocation; the kernel reads only slots
        // before the published tail, and this one is after it.
        let entry = unsafe { &mut *self.ring.as_ptr().add(slot) };
        entry.set_addr(self.buffer_ptr(bid) as u64);
        entry.set_len(self.buffer_bytes as u32);
        entry.set_bid(bid);
        self.tail.set(tail.wrapping_add(1));
    }

    /// Makes the slots written so far visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail field sits in the first slot of the live ring allocation, and the
        // kernel reads it with acquire ordering.
        let tail = unsafe { &*(BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16) };
        tail.store(self.tail.get(), Ordering::Release);
    }

    fn buffer_ptr(&self, bid: u16) -> *mut u8 {
        // SAFETY: `bid < entries`, so the offset stays inside the data allocation.
        unsafe { self.data.as_ptr().add(usize::from(bid) * self.buffer_bytes) }
    }

    /// Bytes of each buffer: the most one receive brings.
    pub(crate) fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// The buffer a completion names, holding its `len` bytes, until it is dropped.
    pub(crate) fn take(self: &Rc<Self>, bid: u16, len: usize) -> PooledBuf {
        assert!(
            bid < self.entries,
            "the kernel named a buffer outside the pool"
        );
        assert!(len <= self.buffer_bytes, "a receive longer than its buffer");
        self.held.set(self.held.get() + 1);
        self.receives.set(self.receives.get() + 1);
        PooledBuf {
            pool: Rc::clone(self),
            bid,
            start: 0,
            len,
        }
    }

    pub(crate) fn note_exhausted(&self) {
        self.exhausted.set(self.exhausted.get() + 1);
    }

    fn give_back(&self, bid: u16) {
        self.held.set(self.held.get() - 1);
        self.push(bid);
        self.publish();
    }

    pub(crate) fn stats(&self) -> RecvPoolStats {
        RecvPoolStats {
            buffers: usize::from(self.entries),
            buffer_bytes: self.buffer_bytes,
            held: self.held.get(),
            receives: self.receives.get(),
            exhausted: self.exhausted.get(),
        }
    }
}

impl Drop for RecvPool {
    fn drop(&mut self) {
        // SAFETY: allocated in `register` with these layouts; the ring that used them is gone
        // (it is dropped first) and no `PooledBuf` is left (each holds the pool).
        unsafe {
            alloc::dealloc(self.ring.as_ptr().cast(), self.ring_layout);
            alloc::dealloc(self.data.as_ptr(), self.data_layout);
        }
    }
}

impl std::fmt::Debug for RecvPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.stats().fmt(f)
    }
}

/// One pool buffer a receive completed into: the bytes not yet copied out, and back to the pool
/// when dropped.
#[derive(Debug)]
pub(crate) struct PooledBuf {
    pool: Rc<RecvPool>,
    bid: u16,
    start: usize,
    len: usize,
}

impl PooledBuf {
    /// Copies as much as fits into `buf`; the rest stays for the next call.
    pub(crate) fn copy_to(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.len - self.start);
        // SAFETY: the kernel wrote `len` bytes at the start of buffer `bid`, which no one else
        // uses until this value gives it back.
        let bytes = unsafe {
            std::slice::from_raw_parts(self.pool.buffer_ptr(self.bid).add(self.start), n)
        };
        buf[..n].copy_from_slice(bytes);
        self.start += n;
        n
    }

    /// Whether every byte was copied out.
    pub(crate) fn is_drained(&self) -> bool {
        self.start == self.len
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        self.pool.give_back(self.bid);
    }
}

/// ringmq patch (change 11): how many pool buffers a multishot receive may fill for its stream.
/// It is armed with a limit of this many buffers' bytes in all (the kernel ends it there), and
/// cancelled once its stream holds this many unread where the kernel ignores or refuses the
/// limit. A stream that stops reading (paused by its shard) then stops taking buffers, its
/// bytes stay in the socket, and TCP's flow control holds its peer back.
pub(crate) const MULTISHOT_BUFFERS_MAX: usize = 4;

/// ringmq patch (change 11): what a multishot receive brought that its stream has not read yet,
/// in arrival order.
#[derive(Debug, Default)]
pub(crate) struct MultishotReceived {
    pub(crate) buffers: VecDeque<PooledBuf>,
    /// The cancel was asked for (the stream holds `MULTISHOT_BUFFERS_MAX` unread buffers).
    pub(crate) cancelled: bool,
    /// Armed with a limit on the bytes it takes in all (`sqe.optlen`).
    pub(crate) limited: bool,
}

/// ringmq patch: the message header of a receive that asks for the kernel's receive timestamp
/// (`SO_TIMESTAMPNS` on the socket): `recvmsg` with room for the control message, for a pooled
/// receive in the ring (`IORING_OP_RECVMSG` with buffer select: the kernel ignores the iovec's
/// base and takes its length as the most to receive) and for a plain `recvmsg` on a busy socket.
/// A stream owns one and lends it to each receive it arms, so a receive allocates nothing; the
/// header points into itself, so it lives boxed and stays put while the kernel holds it.
pub(crate) struct ReceiveHeader {
    header: libc::msghdr,
    iov: libc::iovec,
    /// Room for one `SCM_TIMESTAMPNS` (a `timespec`) and a spare control message, aligned for
    /// `cmsghdr`.
    control: [u64; 8],
}

const _: () = assert!(
    std::mem::size_of::<[u64; 8]>()
        >= 2 * (std::mem::size_of::<libc::cmsghdr>() + std::mem::size_of::<libc::timespec>())
);

impl ReceiveHeader {
    pub(crate) fn new() -> Box<ReceiveHeader> {
        Box::new(ReceiveHeader {
            // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
            header: unsafe { std::mem::zeroed() },
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            control: [0; 8],
        })
    }

    /// The header for one receive of at most `len` bytes into `buf` (null for buffer select),
    /// its pointers aimed at this value's own fields.
    pub(crate) fn prepare(&mut self, buf: *mut u8, len: usize) -> *mut libc::msghdr {
        self.iov = libc::iovec {
            iov_base: buf.cast(),
            iov_len: len,
        };
        self.control = [0; 8];
        // SAFETY: an all-zero msghdr is valid; the fields set below point into `self`.
        self.header = unsafe { std::mem::zeroed() };
        self.header.msg_iov = &mut self.iov;
        self.header.msg_iovlen = 1;
        self.header.msg_control = self.control.as_mut_ptr().cast();
        self.header.msg_controllen = std::mem::size_of_val(&self.control) as _;
        &mut self.header
    }

    /// The kernel's receive timestamp (`CLOCK_REALTIME`) of the last byte the receive returned,
    /// if its control messages carry one. The kernel sets `msg_controllen` to what it wrote,
    /// and the cmsg walk reads only that much.
    pub(crate) fn timestamp(&self) -> Option<libc::timespec> {
        let mut stamp = None;
        // SAFETY: `header` was prepared by `prepare` and filled in by the kernel; its control
        // pointer and length describe `self.control`, and the cmsg macros stay inside them.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&self.header);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
                {
                    stamp = Some(std::ptr::read_unaligned(
                        libc::CMSG_DATA(cmsg).cast::<libc::timespec>(),
                    ));
                }
                cmsg = libc::CMSG_NXTHDR(&self.header, cmsg);
            }
        }
        stamp
    }

    /// A non-blocking `recvmsg` into `buf` through this header: the bytes read and their
    /// receive timestamp; `None` when the socket had nothing.
    pub(crate) fn recv(
        &mut self,
        fd: std::os::unix::io::RawFd,
        buf: &mut [u8],
    ) -> Option<io::Result<(usize, Option<libc::timespec>)>> {
        let header = self.prepare(buf.as_mut_ptr(), buf.len());
        // SAFETY: `header` points at this value's iovec (over `buf`) and control buffer, all
        // alive for the call.
        let read = unsafe { libc::recvmsg(fd, header, libc::MSG_DONTWAIT) };
        if read < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock => None,
                _ => Some(Err(error)),
            };
        }
        Some(Ok((read as usize, self.timestamp())))
    }
}

impl std::fmt::Debug for ReceiveHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReceiveHeader")
    }
}
