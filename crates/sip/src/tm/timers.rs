//! The ordered timer map: one entry per pending timer of every
//! transaction, keyed by deadline.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// Server side: retransmit the final reply (RFC 3261 Timer G).
    Retrans = 0,
    /// Server side: no final reply by now gets 408 (fr_timer / fr_inv_timer).
    Fr = 1,
    /// End of the transaction (Timers H, I, J, L / Kamailio's wait_timer).
    Wait = 2,
    /// Branch: retransmit the request (Timers A / E).
    BRetrans = 3,
    /// Branch: no final reply by now times out (Timers B / F, fr timers).
    BTimeout = 4,
    /// Branch: retransmit our CANCEL.
    CRetrans = 5,
}

/// A timer's place in the ordered map: (deadline, sequence number). The
/// sequence makes keys unique, so a transaction can remove exactly its own.
pub(super) type TimerKey = (u64, u64);

/// The ordered timer map and the bookkeeping that wakes its driver.
#[derive(Debug, Default)]
pub(super) struct Timers {
    pub(super) map: BTreeMap<TimerKey, (u64, Timer)>,
    pub(super) seq: u64,
    /// The deadline the driver sleeps until (`u64::MAX`: none); arming an
    /// earlier one must wake it.
    pub(super) armed_at: u64,
    pub(super) wake: bool,
}

impl Timers {
    pub(super) fn arm(&mut self, slots: &mut [Option<TimerKey>; 6], id: u64, kind: Timer, at: u64) {
        // Replacing, never adding: one pending timer per kind and
        // transaction, so a re-arm cannot start a second chain.
        if let Some(old) = slots[kind as usize].take() {
            self.map.remove(&old);
        }
        self.seq += 1;
        let key = (at, self.seq);
        self.map.insert(key, (id, kind));
        slots[kind as usize] = Some(key);
        if at < self.armed_at {
            self.wake = true;
        }
    }

    pub(super) fn disarm(&mut self, slots: &mut [Option<TimerKey>; 6], kind: Timer) {
        if let Some(old) = slots[kind as usize].take() {
            self.map.remove(&old);
        }
    }
}
