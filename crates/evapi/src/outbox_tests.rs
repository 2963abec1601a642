//! Tests of the outbox: queueing, batching, copies and shares, the pool, pending relays.

use super::*;

/// `s` as it goes on the wire (not framed again).
fn frame(s: &'static str) -> Frame<'static> {
    Frame::new(s.as_bytes(), false, None)
}

#[test]
fn overflow_closes_and_empties() {
    let out = Outbox::new(10, Arc::default());
    assert_eq!(out.push(&frame("12345")), Push::Queued);
    assert_eq!(out.push(&frame("12345")), Push::Queued);
    assert_eq!(out.queued_bytes(), 10);
    assert_eq!(out.push(&frame("1")), Push::Overflow);
    assert_eq!(out.push(&frame("1")), Push::Closed);
    assert_eq!(out.queued_bytes(), 0);
    let mut batch = VecDeque::new();
    assert!(!out.take(&mut batch));
}

#[tokio::test]
async fn writer_batches_and_resumes() {
    let out = Outbox::new(1 << 20, Arc::default());
    for s in ["3:abc,", "1:x,", "0:,"] {
        out.push(&frame(s));
    }
    out.close_after_test_flush();
    let mut w = Writer::new(Vec::new());
    let counters = Counters::default();
    assert!(matches!(
        w.run(&out, None, &counters).await,
        WriteStop::Closed
    ));
    assert_eq!(w.into_inner(), b"3:abc,1:x,0:,");
    assert_eq!(out.queued_bytes(), 0);
    assert_eq!(counters.frames_written.load(Ordering::Relaxed), 3);
    assert_eq!(counters.bytes_written.load(Ordering::Relaxed), 13);
}

/// Takes at most `max` bytes per call, so every write is partial.
struct Trickle {
    out: Vec<u8>,
    max: usize,
    calls: usize,
}

impl tokio::io::AsyncWrite for Trickle {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let n = buf.len().min(self.max);
        self.out.extend_from_slice(&buf[..n]);
        self.calls += 1;
        std::task::Poll::Ready(Ok(n))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn small_frames_copied_large_shared_partial_writes_resume() {
    let out = Outbox::new(1 << 20, Arc::default());
    let large = vec![b'L'; COPY_MAX + 1];
    let mut want = Vec::new();
    let mut frames = 0;
    let mut push = |data: &[u8]| {
        let f = Frame::new(data, true, None);
        assert_eq!(matches!(f, Frame::Small { .. }), f.len() <= COPY_MAX);
        assert_eq!(f.len(), data.len() + data.len().to_string().len() + 2);
        assert_eq!(out.push(&f), Push::Queued);
        f.put_into(&mut want);
        frames += 1;
    };
    // Three small frames share one copy buffer; the large one is a
    // piece of its own; small frames after it start a new buffer.
    push(b"abc");
    push(b"de");
    push(b"");
    push(&large);
    push(b"f");
    // 327 frames of 100 bytes framed: 163 fit after "1:f," in the
    // third buffer, 163 in a fourth, one in a fifth.
    assert_eq!(CHUNK, 16 * 1024);
    for _ in 0..327 {
        push(&[b's'; 96]);
    }
    assert_eq!(out.pieces(), 5);
    assert_eq!(out.queued_bytes(), want.len());
    out.close_after_test_flush();
    let mut w = Writer::new(Trickle {
        out: Vec::new(),
        max: 7,
        calls: 0,
    });
    let counters = Counters::default();
    assert!(matches!(
        w.run(&out, None, &counters).await,
        WriteStop::Closed
    ));
    let sink = w.into_inner();
    assert_eq!(sink.out, want, "every byte once, in order");
    assert!(sink.calls >= want.len().div_ceil(7), "partial writes");
    assert_eq!(out.queued_bytes(), 0);
    assert_eq!(out.frames_written(), frames);
    assert_eq!(out.bytes_written(), want.len() as u64);
    assert_eq!(counters.frames_written.load(Ordering::Relaxed), frames);
}

#[test]
fn an_idle_client_gets_a_small_buffer_that_grows() {
    let out = Outbox::new(1 << 20, Arc::default());
    out.push(&frame("a small event"));
    assert_eq!(out.first_capacity(), 256);
    let big = Frame::new(&[b'x'; 300], true, None);
    for _ in 0..10 {
        out.push(&big);
    }
    assert_eq!(out.pieces(), 1);
    assert!((3013..=4096).contains(&out.first_capacity()));
}

#[tokio::test]
async fn written_buffers_are_reused_and_the_pool_is_bounded() {
    let pool = Arc::new(ChunkPool::default());
    let out = Outbox::new(1 << 20, pool.clone());
    // 327 frames of 100 bytes: three buffers of 16 KB capacity.
    for _ in 0..327 {
        out.push(&Frame::new(&[b's'; 96], true, None));
    }
    assert_eq!(out.pieces(), 3);
    assert_eq!(pool.len(), 0);
    out.close_after_test_flush();
    let mut w = Writer::new(Vec::new());
    w.run(&out, None, &Counters::default()).await;
    assert_eq!(w.into_inner().len(), 32_700);
    assert_eq!(pool.len(), 3, "written out, kept for reuse");
    // Another client of the socket takes one, even for its first frame.
    let other = Outbox::new(1 << 20, pool.clone());
    other.push(&frame("x"));
    assert_eq!(other.first_capacity(), CHUNK);
    assert_eq!(pool.len(), 2);
    for _ in 0..POOL_MAX + 10 {
        pool.put(Vec::with_capacity(CHUNK));
    }
    pool.put(Vec::with_capacity(CHUNK / 2));
    assert_eq!(pool.len(), POOL_MAX);
}

#[test]
fn tracked_frames_are_shared_and_hold_their_place() {
    let p = Arc::new(PendingRelays::default());
    let slot = Arc::new(p.acquire(1, None).unwrap());
    let f = Frame::new(b"x", true, Some(slot));
    assert!(matches!(f, Frame::Shared(_)));
    let (a, b) = (
        Outbox::new(100, Arc::default()),
        Outbox::new(100, Arc::default()),
    );
    a.push(&f);
    b.push(&f);
    drop(f);
    assert_eq!(p.count(), 1, "queued: the relay is pending");
    a.close();
    assert_eq!(p.count(), 1, "still queued for b");
    b.close();
    assert_eq!(p.count(), 0, "dropped everywhere: the place is free");
    assert_eq!(b.queued_bytes(), 0);
}

#[test]
fn pending_limit_and_wait() {
    let p = Arc::new(PendingRelays::default());
    let a = p.acquire(2, None).unwrap();
    let _b = p.acquire(2, None).unwrap();
    assert!(p.acquire(2, None).is_none());
    assert!(p.acquire(2, Some(Duration::from_millis(5))).is_none());
    let p2 = p.clone();
    let t = std::thread::spawn(move || p2.acquire(2, Some(Duration::from_secs(30))).is_some());
    std::thread::sleep(Duration::from_millis(20));
    drop(a);
    assert!(t.join().unwrap());
    // The waiter's place was freed when it returned; `_b` still holds one.
    assert_eq!(p.count(), 1);
}

/// A connected pair of loopback TCP sockets: (ours, the client's end).
fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (peer, _) = l.accept().unwrap();
    ours.set_nonblocking(true).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (ours, peer)
}

/// Read exactly `n` bytes from the client's end.
fn read_n(peer: &mut std::net::TcpStream, n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut got = vec![0; n];
    peer.read_exact(&mut got).unwrap();
    got
}

/// Nothing more has arrived at the client's end.
fn nothing_more(peer: &std::net::TcpStream) -> bool {
    peer.set_nonblocking(true).unwrap();
    let r = peer.peek(&mut [0; 1]);
    peer.set_nonblocking(false).unwrap();
    matches!(r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[test]
fn an_idle_client_is_written_at_once_and_a_burst_is_queued() {
    use std::os::fd::AsRawFd;
    let (ours, mut peer) = tcp_pair();
    let out = Outbox::new(1 << 20, Arc::default());
    out.write_directly(ours.as_raw_fd());
    let counters = Counters::default();
    let t0 = Instant::now();
    // No writer runs in this test: what arrives was written by deliver.
    let first = Frame::new(b"first", true, None);
    assert_eq!(
        out.deliver_with_clock(&first, true, &counters, || t0),
        Push::Queued
    );
    assert_eq!(read_n(&mut peer, 8), b"5:first,");
    assert_eq!(out.queued_bytes(), 0);
    assert_eq!(out.frames_written(), 1);
    assert_eq!(counters.frames_written.load(Ordering::Relaxed), 1);
    assert_eq!(counters.bytes_written.load(Ordering::Relaxed), 8);
    // Sooner than DIRECT_IDLE after it: queued for the writer.
    let soon = t0 + DIRECT_IDLE / 2;
    out.deliver_with_clock(&Frame::new(b"second", true, None), true, &counters, || soon);
    assert!(nothing_more(&peer));
    assert_eq!(out.queued_bytes(), 9);
    // Idle again, but the queue is not empty: queued behind it, in order.
    let later = soon + DIRECT_IDLE * 2;
    out.deliver_with_clock(&Frame::new(b"third", true, None), true, &counters, || later);
    assert!(nothing_more(&peer));
    let mut batch = VecDeque::new();
    assert!(out.take(&mut batch));
    let queued: Vec<u8> = batch.iter().flat_map(|p| p.bytes().to_vec()).collect();
    assert_eq!(queued, b"6:second,5:third,");
    // The writer holds that batch: even an idle client's frame waits.
    let much_later = later + DIRECT_IDLE * 10;
    let fourth = Frame::new(b"fourth", true, None);
    out.deliver_with_clock(&fourth, true, &counters, || much_later);
    assert!(nothing_more(&peer));
    // Once the writer has nothing in hand, direct writes resume.
    assert!(out.take(&mut batch));
    batch.clear();
    assert!(!out.take(&mut batch));
    let last = much_later + DIRECT_IDLE * 10;
    out.deliver_with_clock(&Frame::new(b"fifth", true, None), true, &counters, || last);
    assert_eq!(read_n(&mut peer, 8), b"5:fifth,");
    // A relay to several clients: queued, however idle this one is.
    let later_still = last + DIRECT_IDLE * 10;
    out.deliver(&Frame::new(b"to all", true, None), false, &counters);
    assert!(nothing_more(&peer));
    assert!(out.take(&mut batch));
    batch.clear();
    assert!(!out.take(&mut batch));
    // Forgotten (the connection ends): queued, never written by deliver.
    out.forget_socket();
    let at = later_still + DIRECT_IDLE * 10;
    out.deliver_with_clock(&Frame::new(b"sixth", true, None), true, &counters, || at);
    assert!(nothing_more(&peer));
    assert!(out.take(&mut batch));
}

#[tokio::test]
async fn a_direct_write_cut_short_is_finished_by_the_writer_before_the_rest() {
    use std::os::fd::AsRawFd;
    let (ours, peer) = tcp_pair();
    let out = Arc::new(Outbox::new(64 << 20, Arc::default()));
    out.write_directly(ours.as_raw_fd());
    let counters = Counters::default();
    // Far more than the socket takes at once: part is written by
    // deliver, the rest queued first for the writer.
    let big: Vec<u8> = (0..8 << 20).map(|i| (i % 251) as u8).collect();
    let t0 = Instant::now();
    out.deliver_with_clock(&Frame::new(&big, true, None), true, &counters, || t0);
    let taken = out.bytes_written() as usize;
    assert!(taken > 0, "the socket took a first part at once");
    assert!(taken < big.len(), "and not all of it");
    assert_eq!(out.frames_written(), 0, "the frame is not whole yet");
    let later = t0 + DIRECT_IDLE * 10;
    out.deliver_with_clock(&Frame::new(b"after", true, None), true, &counters, || later);
    let mut want = Vec::new();
    Frame::new(&big, true, None).put_into(&mut want);
    Frame::new(b"after", true, None).put_into(&mut want);
    let reader = std::thread::spawn(move || {
        let mut peer = peer;
        read_n(&mut peer, want.len()) == want
    });
    out.close_after_test_flush();
    let io = tokio::net::TcpStream::from_std(ours).unwrap();
    let mut w = Writer::new(io);
    let stop = w.run(&out, Some(Duration::from_secs(20)), &counters).await;
    assert!(matches!(stop, WriteStop::Closed), "{stop:?}");
    assert!(reader.join().unwrap(), "every byte once, in order");
    assert_eq!(out.frames_written(), 2);
    assert_eq!(counters.frames_written.load(Ordering::Relaxed), 2);
    assert_eq!(out.queued_bytes(), 0);
}

impl Outbox {
    /// Mark closed without dropping what is queued (tests only).
    fn close_after_test_flush(&self) {
        self.lock().closed = true;
    }

    fn pieces(&self) -> usize {
        self.lock().pieces.len()
    }

    fn first_capacity(&self) -> usize {
        match self.lock().pieces.front() {
            Some(Queued {
                piece: Piece::Copied { buf, .. },
                ..
            }) => buf.capacity(),
            _ => 0,
        }
    }
}

/// Append `frame` to `log` for every outbox in `outs`, as a relay to every
/// client does, cutting those it would take past their limit; the outboxes
/// cut are returned.
fn append_for(log: &FanoutLog, frame: &Frame<'_>, outs: &[&Outbox]) -> (usize, Vec<usize>) {
    let mut cut = Vec::new();
    let readers = log.append(frame, |end| {
        let mut room = u64::MAX;
        for (i, out) in outs.iter().enumerate() {
            match out.log_room(end) {
                Some(r) => room = room.min(r),
                None => cut.push(i),
            }
        }
        room
    });
    (readers, cut)
}

/// Everything queued for `out` (closed first), written by its writer
/// through writes of at most `max` bytes.
async fn drain(out: &Outbox, max: usize) -> Vec<u8> {
    out.close_after_test_flush();
    let mut w = Writer::new(Trickle {
        out: Vec::new(),
        max,
        calls: 0,
    });
    let stop = w.run(out, None, &Counters::default()).await;
    assert!(matches!(stop, WriteStop::Closed), "{stop:?}");
    w.into_inner().out
}

#[tokio::test]
async fn the_fanout_log_keeps_each_clients_order_across_chunks() {
    let log = Arc::new(FanoutLog::default());
    let (a, b) = (
        Outbox::new(64 << 20, Arc::default()),
        Outbox::new(64 << 20, Arc::default()),
    );
    a.subscribe(&log);
    let (mut want_a, mut want_b) = (Vec::new(), Vec::new());
    let (mut frames_a, mut frames_b) = (0, 0);
    // Far more than one chunk of the log; every 10th relay to every
    // client is followed by a frame for `a` alone, a small one copied or
    // a large one shared; `b` joins after 100 relays.
    let body = [b'e'; 150];
    let large = [b'L'; COPY_MAX + 10];
    for i in 0..3_000u32 {
        if i == 100 {
            b.subscribe(&log);
        }
        let mut data = i.to_be_bytes().to_vec();
        data.extend_from_slice(&body[..(i % 150) as usize]);
        let f = Frame::new(&data, true, None);
        let (readers, cut) = append_for(&log, &f, &[&a, &b]);
        assert_eq!((readers, cut.len()), (1 + usize::from(i >= 100), 0));
        f.put_into(&mut want_a);
        frames_a += 1;
        if i >= 100 {
            f.put_into(&mut want_b);
            frames_b += 1;
        }
        if i % 10 == 0 {
            let alone = if i % 20 == 0 { &large[..] } else { &data[..4] };
            let f = Frame::new(alone, true, None);
            assert_eq!(a.push(&f), Push::Queued);
            f.put_into(&mut want_a);
            frames_a += 1;
        }
    }
    assert!(want_b.len() > 2 * log::LOG_CHUNK, "the log spans chunks");
    assert_eq!(a.queued_bytes(), want_a.len());
    assert_eq!(b.queued_bytes(), want_b.len());
    // Partial writes of a prime size, across pieces and chunks.
    assert_eq!(drain(&a, 997).await, want_a, "every byte once, in order");
    assert_eq!(drain(&b, 4096).await, want_b);
    assert_eq!(
        (a.frames_written(), b.frames_written()),
        (frames_a, frames_b)
    );
    assert_eq!((a.queued_bytes(), b.queued_bytes()), (0, 0));
}

#[tokio::test]
async fn the_fanout_log_cuts_a_client_past_its_limit_and_no_other() {
    let log = Arc::new(FanoutLog::default());
    let (reads, stalls) = (
        Outbox::new(1000, Arc::default()),
        Outbox::new(1000, Arc::default()),
    );
    reads.subscribe(&log);
    stalls.subscribe(&log);
    let mut w = Writer::new(Vec::new());
    let counters = Counters::default();
    let data = [b'x'; 96]; // 100 bytes framed
    let f = Frame::new(&data, true, None);
    // Ten relays fill `stalls` to its limit exactly; `reads` is written
    // after each one.
    for _ in 0..10 {
        assert_eq!(append_for(&log, &f, &[&reads, &stalls]), (2, vec![]));
        w.flush(&reads, None, &counters).await.unwrap();
    }
    assert_eq!(stalls.queued_bytes(), 1000);
    // A frame for `stalls` alone would pass it: refused and cut there.
    let other = Outbox::new(1000, Arc::default());
    other.subscribe(&log);
    assert_eq!(stalls.push(&frame("1")), Push::Overflow);
    assert_eq!(stalls.queued_bytes(), 0);
    // The eleventh relay is for the two others; the next one would take
    // `other` past its limit after nine more.
    assert_eq!(
        append_for(&log, &f, &[&reads, &stalls, &other]),
        (2, vec![])
    );
    w.flush(&reads, None, &counters).await.unwrap();
    for _ in 0..9 {
        append_for(&log, &f, &[&reads, &stalls, &other]);
        w.flush(&reads, None, &counters).await.unwrap();
    }
    assert_eq!(other.queued_bytes(), 1000);
    assert_eq!(
        append_for(&log, &f, &[&reads, &stalls, &other]),
        (1, vec![2])
    );
    w.flush(&reads, None, &counters).await.unwrap();
    assert_eq!(other.push(&frame("1")), Push::Closed);
    assert_eq!(reads.frames_written(), 21);
    assert_eq!(w.into_inner().len(), 21 * 100);
    assert_eq!(log.readers(), 1);
}

#[tokio::test]
async fn a_client_that_leaves_gets_the_log_up_to_then_counted_whole() {
    let log = Arc::new(FanoutLog::default());
    let out = Outbox::new(1 << 20, Arc::default());
    out.subscribe(&log);
    let mut want = Vec::new();
    for s in ["1:a,", "2:bc,"] {
        append_for(&log, &frame(s), &[&out]);
        want.extend_from_slice(s.as_bytes());
    }
    out.unsubscribe();
    append_for(&log, &frame("3:not,"), &[&out]);
    assert_eq!(out.queued_bytes(), want.len());
    assert_eq!(drain(&out, 3).await, want);
    assert_eq!(
        out.frames_written(),
        2,
        "the frames up to the leave, counted"
    );
    assert_eq!(log.readers(), 0);
}

#[tokio::test]
async fn a_frame_alone_is_not_written_at_once_ahead_of_the_log() {
    use std::os::fd::AsRawFd;
    let (ours, mut peer) = tcp_pair();
    let log = Arc::new(FanoutLog::default());
    let out = Outbox::new(1 << 20, Arc::default());
    out.subscribe(&log);
    out.write_directly(ours.as_raw_fd());
    let counters = Counters::default();
    let t0 = Instant::now();
    append_for(&log, &frame("4:all1,"), &[&out]);
    // The log's frame is not written yet: this one waits behind it.
    out.deliver_with_clock(&frame("5:alone,"), true, &counters, || t0);
    assert!(nothing_more(&peer));
    let mut w = Writer::new(tokio::net::TcpStream::from_std(ours.try_clone().unwrap()).unwrap());
    w.flush(&out, None, &counters).await.unwrap();
    assert_eq!(read_n(&mut peer, 15), b"4:all1,5:alone,");
    assert_eq!(out.frames_written(), 2);
    out.deliver_with_clock(&frame("3:now,"), true, &counters, || t0 + DIRECT_IDLE * 2);
    assert_eq!(read_n(&mut peer, 6), b"3:now,");
    assert_eq!(out.bytes_written(), 21);
}
