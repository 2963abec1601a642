//! How a dialog ends: our BYEs to its sides, their replies, the
//! lifetime timer and the BYE timers (the part of [`Shard`] that sends).

use super::*;

impl Shard {
    /// End an answered dialog by sending BYE to `sides`: `dialog:end` now
    /// (with `reason`); the dialog leaves when every BYE has its final
    /// reply or timed out.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn bye(
        &mut self,
        id: DlgId,
        sides: &[Side],
        reason: EndReason,
        cid_hash: u64,
        env: &Env,
        now: u64,
        out: &mut Vec<Out>,
    ) -> Result<(), DialogError> {
        let Some(d) = self.dialogs.get_mut(&id.key()) else {
            return Err(DialogError::NotFound(id));
        };
        if !matches!(d.state, DlgState::ConfirmedNa | DlgState::Confirmed) {
            return Err(DialogError::NotAnswered(id, d.state));
        }
        d.state = DlgState::Deleted;
        d.reason = Some(reason);
        out.push(Out::Event(d.snapshot("dialog:end")));
        if d.life_at != 0 {
            self.timers.remove(&(d.life_at, Due::Life(id.key())));
            d.life_at = 0;
        }
        let mut sent = 0u8;
        for &side in sides {
            let Some(d) = self.get_mut(id) else { break };
            // Our BYE speaks for the other side: its CSeq is the next one.
            let other = side.other() as usize;
            d.legs[other].cseq = d.legs[other].cseq.saturating_add(1);
            let branch = ByeBranch {
                seed: env.seed,
                id,
                side,
            };
            let built = build_bye(d, side, branch, env);
            match built {
                Ok((dest, data)) => {
                    let reliable = dest.transport.is_reliable();
                    let give_up = now + 64 * env.t1;
                    let retrans_at = if reliable { u64::MAX } else { now + env.t1 };
                    let due = retrans_at.min(give_up);
                    out.push(Out::Send {
                        dest: dest.clone(),
                        data: data.clone(),
                    });
                    self.byes.insert(
                        (id.key(), side as u8),
                        ByeTx {
                            data,
                            dest,
                            interval: env.t1,
                            retrans_at,
                            give_up,
                            due,
                        },
                    );
                    self.timers.insert((due, Due::Bye(id.key(), side as u8)));
                    sent += 1;
                }
                Err(why) => {
                    lograte::warn_limited!(h_entry = id.h_entry, h_id = id.h_id, side = side.name(), reason = %why, "dialog: cannot send BYE");
                }
            }
        }
        match self.get_mut(id) {
            Some(d) if sent > 0 => d.byes_pending = sent,
            _ => self.remove(id, cid_hash, out),
        }
        Ok(())
    }

    pub(super) fn bye_done(&mut self, key: u64, side: u8, cid_hash: u64, out: &mut Vec<Out>) {
        if let Some(b) = self.byes.remove(&(key, side)) {
            self.timers.remove(&(b.due, Due::Bye(key, side)));
        } else {
            return;
        }
        let id = DlgId::from_key(key);
        let Some(d) = self.get_mut(id) else { return };
        d.byes_pending = d.byes_pending.saturating_sub(1);
        if d.byes_pending == 0 {
            self.remove(id, cid_hash, out);
        }
    }

    /// A reply to one of our BYEs. A final one ends its transaction (and
    /// the dialog, with the last); a provisional slows retransmissions to
    /// T2.
    pub(crate) fn on_bye_reply(
        &mut self,
        b: ByeBranch,
        code: u16,
        cid_hash: u64,
        env: &Env,
        now: u64,
        out: &mut Vec<Out>,
    ) {
        let key = (b.id.key(), b.side as u8);
        if code >= 200 {
            self.bye_done(key.0, key.1, cid_hash, out);
        } else if let Some(tx) = self.byes.get_mut(&key) {
            if tx.retrans_at != u64::MAX {
                self.timers.remove(&(tx.due, Due::Bye(key.0, key.1)));
                tx.interval = env.t2;
                tx.retrans_at = now + env.t2;
                tx.due = tx.retrans_at.min(tx.give_up);
                self.timers.insert((tx.due, Due::Bye(key.0, key.1)));
            }
        }
    }

    /// Set a dialog's lifetime: from its answer if it is not answered
    /// yet, else from now.
    pub(crate) fn set_timeout(
        &mut self,
        id: DlgId,
        secs: u32,
        now: u64,
    ) -> Result<(), DialogError> {
        let d = self.get_mut(id).ok_or(DialogError::NotFound(id))?;
        d.timeout_s = secs;
        match d.state {
            DlgState::ConfirmedNa | DlgState::Confirmed => {
                self.arm_life(id, now + u64::from(secs) * 1000);
                Ok(())
            }
            DlgState::Deleted => Err(DialogError::NotFound(id)),
            _ => Ok(()),
        }
    }

    /// Fire the timers due at `now`. `hash_of` gives a dialog's Call-ID
    /// hash (the shard does not keep it beside the dialog).
    pub(crate) fn on_timer(
        &mut self,
        env: &Env,
        now: u64,
        hash_of: &dyn Fn(&str) -> u64,
        out: &mut Vec<Out>,
    ) {
        for _ in 0..TIMER_BATCH {
            let Some(&(at, due)) = self.timers.first() else {
                break;
            };
            if at > now {
                break;
            }
            self.timers.remove(&(at, due));
            match due {
                Due::Life(key) => self.life_ended(DlgId::from_key(key), env, now, hash_of, out),
                Due::Bye(key, side) => self.bye_timer(key, side, env, now, hash_of, out),
            }
        }
    }

    pub(super) fn life_ended(
        &mut self,
        id: DlgId,
        env: &Env,
        now: u64,
        hash_of: &dyn Fn(&str) -> u64,
        out: &mut Vec<Out>,
    ) {
        let Some(d) = self.get_mut(id) else { return };
        d.life_at = 0;
        let h = hash_of(&d.callid);
        match d.state {
            DlgState::ConfirmedNa | DlgState::Confirmed => {
                if env.cfg.timeout_bye {
                    let _ = self.bye(
                        id,
                        &[Side::Caller, Side::Callee],
                        EndReason::Timeout,
                        h,
                        env,
                        now,
                        out,
                    );
                } else {
                    d.state = DlgState::Deleted;
                    d.reason = Some(EndReason::Timeout);
                    out.push(Out::Event(d.snapshot("dialog:end")));
                    self.remove(id, h, out);
                }
            }
            DlgState::Unconfirmed | DlgState::Early => {
                d.state = DlgState::Deleted;
                d.reason = Some(EndReason::Failed);
                out.push(Out::Event(d.snapshot("dialog:failed")));
                self.remove(id, h, out);
            }
            DlgState::Deleted => self.remove(id, h, out),
        }
    }

    pub(super) fn bye_timer(
        &mut self,
        key: u64,
        side: u8,
        env: &Env,
        now: u64,
        hash_of: &dyn Fn(&str) -> u64,
        out: &mut Vec<Out>,
    ) {
        let Some(tx) = self.byes.get_mut(&(key, side)) else {
            return;
        };
        if now >= tx.give_up {
            let id = DlgId::from_key(key);
            lograte::warn_limited!(h_entry = id.h_entry, h_id = id.h_id, side = if side == 0 { "caller" } else { "callee" }, to = %tx.dest.addr, "dialog: no reply to our BYE; the dialog ends anyway");
            let h = self.get(id).map(|d| hash_of(&d.callid)).unwrap_or(0);
            self.bye_done(key, side, h, out);
            return;
        }
        if now >= tx.retrans_at {
            out.push(Out::Send {
                dest: tx.dest.clone(),
                data: tx.data.clone(),
            });
            tx.interval = (tx.interval * 2).min(env.t2);
            tx.retrans_at = now + tx.interval;
        }
        tx.due = tx.retrans_at.min(tx.give_up);
        self.timers.insert((tx.due, Due::Bye(key, side)));
    }
}
