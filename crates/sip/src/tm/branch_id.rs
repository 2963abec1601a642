//! The branch parameter of every Via we add: written when we relay, read
//! back from the replies, in one type so the two cannot drift apart.

use std::fmt;

/// Prefix of every branch of ours: the RFC 3261 magic cookie, then a tag
/// of ours so a reply's branch can be decoded without a lookup.
const PREFIX: &str = "z9hG4bKev";

/// A branch parameter we wrote.
///
/// `seed` is random per host, so a reply carrying another instance's
/// branch (same format, other seed) is recognised as foreign by the
/// caller comparing it with its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BranchId {
    /// Branch `no` of transaction `index`:`label`, written as
    /// `z9hG4bKev<seed>.<index>.<label>.<no>` (hex, hex, hex, decimal).
    Relay {
        seed: u32,
        index: u32,
        label: u32,
        no: u32,
    },
    /// A statelessly relayed ACK: `hash` is derived from the incoming ACK's
    /// branch, so the same ACK always gets the same branch. Written as
    /// `z9hG4bKev<seed>.a.<hash>`; nothing is ever matched against it.
    Ack { seed: u32, hash: u64 },
}

impl fmt::Display for BranchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BranchId::Relay {
                seed,
                index,
                label,
                no,
            } => write!(f, "{PREFIX}{seed:08x}.{index:x}.{label:x}.{no}"),
            BranchId::Ack { seed, hash } => write!(f, "{PREFIX}{seed:08x}.a.{hash:x}"),
        }
    }
}

impl BranchId {
    /// Read a branch parameter back; `None` when it is not of our format
    /// (another proxy's or a UAC's branch).
    pub(crate) fn parse(branch: &[u8]) -> Option<BranchId> {
        let rest = std::str::from_utf8(branch).ok()?.strip_prefix(PREFIX)?;
        let mut it = rest.split('.');
        let seed = u32::from_str_radix(it.next()?, 16).ok()?;
        let second = it.next()?;
        let third = it.next()?;
        let fourth = it.next();
        if it.next().is_some() {
            return None;
        }
        match fourth {
            Some(no) => Some(BranchId::Relay {
                seed,
                index: u32::from_str_radix(second, 16).ok()?,
                label: u32::from_str_radix(third, 16).ok()?,
                no: no.parse().ok()?,
            }),
            None if second == "a" => Some(BranchId::Ack {
                seed,
                hash: u64::from_str_radix(third, 16).ok()?,
            }),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_branches_parse_back() {
        for b in [
            BranchId::Relay {
                seed: 0,
                index: 0,
                label: 1,
                no: 1,
            },
            BranchId::Relay {
                seed: 0xdead_beef,
                index: 0xffff,
                label: u32::MAX,
                no: u32::MAX,
            },
            BranchId::Ack {
                seed: 7,
                hash: u64::MAX,
            },
            BranchId::Ack { seed: 7, hash: 0 },
        ] {
            let text = b.to_string();
            assert!(text.starts_with("z9hG4bKev"), "{text}");
            assert_eq!(BranchId::parse(text.as_bytes()), Some(b), "{text}");
        }
        assert_eq!(
            BranchId::Relay {
                seed: 0x12,
                index: 0xab,
                label: 0x10,
                no: 3
            }
            .to_string(),
            "z9hG4bKev00000012.ab.10.3"
        );
    }

    #[test]
    fn foreign_branches_are_refused() {
        for b in [
            "",
            "z9hG4bK",
            "z9hG4bK776asdhds",
            "z9hG4bKt1",
            "z9hG4bKev",
            "z9hG4bKev00000012",
            "z9hG4bKev00000012.ab",
            "z9hG4bKev00000012.ab.10",
            "z9hG4bKev00000012.ab.10.3.4",
            "z9hG4bKev00000012.ab.10.x",
            "z9hG4bKev00000012.zz.10.3",
            "z9hG4bKev00000012.a.zz",
            "z9hG4bKevnothex.1.1.1",
            "Z9HG4BKEV00000012.ab.10.3",
            "z9hG4bKev1ffffffff.1.1.1",
        ] {
            assert_eq!(BranchId::parse(b.as_bytes()), None, "{b}");
        }
        assert_eq!(BranchId::parse(b"z9hG4bKev\xff.1.1.1"), None);
    }
}
