//! A DNS server for tests (feature `test-agent`), on a loopback UDP port:
//! silent (reads every query and answers none: a DNS server that never
//! answers), or answering A queries for a fixed set of names (TTL 300;
//! other names NXDOMAIN, other types no records). Point a host at it with
//! `[sip] dns_servers = ["127.0.0.1:PORT"]`.
//!
//! Only what a test needs: one question per query, names compared without
//! case, no compression in queries (resolvers send none).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A fake DNS server; stops (its thread joined) when dropped.
pub struct FakeDns {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    queries: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDns {
    /// A server that reads queries and never answers.
    pub fn silent() -> std::io::Result<FakeDns> {
        FakeDns::start(Vec::new(), false)
    }

    /// A server that answers A queries for `names` with their address.
    pub fn answering(names: &[(&str, Ipv4Addr)]) -> std::io::Result<FakeDns> {
        let names = names
            .iter()
            .map(|(n, a)| (n.trim_end_matches('.').to_ascii_lowercase(), *a))
            .collect();
        FakeDns::start(names, true)
    }

    fn start(names: Vec<(String, Ipv4Addr)>, answer: bool) -> std::io::Result<FakeDns> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = sock.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicU64::new(0));
        let (s, q) = (Arc::clone(&stop), Arc::clone(&queries));
        let thread = std::thread::Builder::new()
            .name("fake-dns".into())
            .spawn(move || {
                let mut buf = [0u8; 1500];
                while !s.load(Ordering::Relaxed) {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    q.fetch_add(1, Ordering::Relaxed);
                    if !answer {
                        continue;
                    }
                    if let Some(r) = respond(&buf[..n], &names) {
                        let _ = sock.send_to(&r, from);
                    }
                }
            })?;
        Ok(FakeDns {
            addr,
            stop,
            queries,
            thread: Some(thread),
        })
    }

    /// Where it listens: give it as `dns_servers = ["<addr>"]`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queries received so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The answer to one query: the header and question echoed, then an A
/// record for a known name (NXDOMAIN for an unknown one). `None` for
/// what is not a query we can read.
fn respond(q: &[u8], names: &[(String, Ipv4Addr)]) -> Option<Vec<u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut i = 12;
    let mut name = String::new();
    loop {
        let len = usize::from(*q.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        let label = q.get(i..i + len)?;
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question = &q[12..i + 4];
    let addr = names.iter().find(|(n, _)| *n == name).map(|(_, a)| *a);
    let answer = match (addr, qtype) {
        (Some(a), 1) => Some(a),
        _ => None,
    };
    let rcode = if addr.is_none() { 3 } else { 0 };
    let mut r = Vec::with_capacity(64);
    r.extend_from_slice(&q[0..2]); // id
    r.push(0x80 | (q[2] & 0x01)); // QR, and RD as asked
    r.push(0x80 | rcode); // RA, rcode
    r.extend_from_slice(&[0, 1, 0, u8::from(answer.is_some()), 0, 0, 0, 0]);
    r.extend_from_slice(question);
    if let Some(a) = answer {
        // The name as a pointer to the question, A, IN, TTL 300, 4 bytes.
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4]);
        r.extend_from_slice(&a.octets());
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.extend_from_slice(&[0]);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    #[test]
    fn answers_a_for_known_names_only() {
        let names = vec![("callee.test".to_owned(), Ipv4Addr::LOCALHOST)];
        let r = respond(&query(7, "Callee.TEST", 1), &names).unwrap();
        assert_eq!(&r[0..2], &7u16.to_be_bytes());
        assert_eq!((r[2] & 0x80, r[3] & 0x0f), (0x80, 0));
        assert_eq!(&r[6..8], &[0, 1], "one answer");
        assert_eq!(&r[r.len() - 4..], &[127, 0, 0, 1]);
        let nx = respond(&query(8, "other.test", 1), &names).unwrap();
        assert_eq!((nx[3] & 0x0f, &nx[6..8]), (3, &[0u8, 0][..]));
        let aaaa = respond(&query(9, "callee.test", 28), &names).unwrap();
        assert_eq!((aaaa[3] & 0x0f, &aaaa[6..8]), (0, &[0u8, 0][..]));
        assert!(respond(&[0; 5], &names).is_none());
    }
}
