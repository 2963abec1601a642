//! Read the datagrams waiting on a UDP socket with one `recvmmsg` system
//! call instead of one `recvfrom` each.
//!
//! The SIP host's router threads read their UDP sockets themselves; when
//! one finds a burst waiting, this takes up to a batch of it at once. It
//! is a crate of its own so that the `sip` crate keeps no `unsafe`: the
//! C call and the reading of the addresses it wrote are here, behind
//! [`recv`], which checks everything it hands to the kernel. Linux only,
//! as the program is.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Most datagrams one call reads.
pub const MAX_BATCH: usize = 16;

/// Read, without blocking, the datagrams waiting on `sock`: at most
/// `out.len()` (and [`MAX_BATCH`]), the `k`th into `bufs[k * slot ..
/// (k + 1) * slot]`. `out[k]` becomes its length as read (a datagram
/// longer than `slot` is cut to `slot`, so a slot one byte larger than the
/// largest datagram wanted tells an oversized one) and its sender (`None`
/// for one that is neither IPv4 nor IPv6). Returns how many were read, in
/// the order they arrived; `WouldBlock` when none was waiting.
///
/// Takes as many slots as fit in `bufs`; an error of kind `InvalidInput`
/// when not even one does (`slot` is 0 or larger than `bufs`).
pub fn recv(
    sock: &UdpSocket,
    bufs: &mut [u8],
    slot: usize,
    out: &mut [(usize, Option<SocketAddr>)],
) -> io::Result<usize> {
    if slot == 0 || slot > bufs.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a read slot of {slot} bytes in a buffer of {}", bufs.len()),
        ));
    }
    let n = out.len().min(MAX_BATCH).min(bufs.len() / slot);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: all-zero is a valid value of these plain C structs.
    let mut addrs: [libc::sockaddr_storage; MAX_BATCH] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    for (k, (chunk, ((iov, hdr), addr))) in bufs
        .chunks_exact_mut(slot)
        .zip(iovs.iter_mut().zip(hdrs.iter_mut()).zip(addrs.iter_mut()))
        .take(n)
        .enumerate()
    {
        debug_assert!(k < n);
        iov.iov_base = chunk.as_mut_ptr().cast();
        iov.iov_len = chunk.len();
        hdr.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
        hdr.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `n` headers each point at one iovec covering a
    // distinct `slot`-byte chunk of `bufs` (borrowed mutably for this
    // call) and at an address buffer of the size they give; the kernel
    // writes within those and into the headers' `msg_len`, and reads at
    // most `n` headers. MSG_DONTWAIT and no timeout: it never blocks.
    let got = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = (got as usize).min(n);
    for (o, (hdr, addr)) in out.iter_mut().zip(hdrs.iter().zip(addrs.iter())).take(got) {
        *o = (
            (hdr.msg_len as usize).min(slot),
            socket_addr(addr, hdr.msg_hdr.msg_namelen),
        );
    }
    Ok(got)
}

/// The address the kernel wrote into `a` (`len` bytes of it): IPv4 or
/// IPv6, else `None`.
fn socket_addr(a: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(a.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, the
            // length says it is all there, and the storage is aligned for
            // every socket address type.
            let a = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a sockaddr_in6.
            let a = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                u32::from_be(a.sin6_flowinfo),
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(addr: &str) -> (UdpSocket, UdpSocket) {
        let rx = UdpSocket::bind(addr).unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind(addr).unwrap();
        (rx, tx)
    }

    /// A burst over real sockets, IPv4 and IPv6: read in the order sent, in
    /// batches of what `out` holds, each with its length and sender; a
    /// datagram longer than its slot is cut to the slot; then WouldBlock.
    #[test]
    fn reads_a_burst_in_order_with_senders_and_lengths() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let (rx, tx) = pair(addr);
            let to = rx.local_addr().unwrap();
            let from = tx.local_addr().unwrap();
            for i in 0..11u8 {
                let len = if i == 7 { 40 } else { 1 + usize::from(i) };
                tx.send_to(&vec![b'a' + i; len], to).unwrap();
            }
            let slot = 32;
            let mut bufs = vec![0u8; slot * MAX_BATCH];
            let mut out = [(0, None); 4];
            let mut seen = Vec::new();
            loop {
                match recv(&rx, &mut bufs, slot, &mut out) {
                    Ok(n) => {
                        assert!((1..=4).contains(&n), "{n}");
                        for (k, &(len, sender)) in out[..n].iter().enumerate() {
                            assert_eq!(sender, Some(from), "{addr}");
                            let data = &bufs[k * slot..k * slot + len];
                            assert!(data.iter().all(|&b| b == data[0]), "{data:?}");
                            seen.push((data[0], len));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{addr}: {e}"),
                }
            }
            let want: Vec<(u8, usize)> = (0..11u8)
                .map(|i| (b'a' + i, if i == 7 { slot } else { 1 + usize::from(i) }))
                .collect();
            assert_eq!(seen, want, "{addr}");
        }
    }

    #[test]
    fn refuses_a_slot_that_does_not_fit() {
        let (rx, _tx) = pair("127.0.0.1:0");
        let mut out = [(0, None); 2];
        for (len, slot) in [(16, 0), (16, 17)] {
            let mut bufs = vec![0u8; len];
            let e = recv(&rx, &mut bufs, slot, &mut out).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        }
    }
}
