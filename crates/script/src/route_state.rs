//! What one SIP route run keeps beside its message: the drop mark of
//! `KSR.drop()`, the last internal error for `KSR.sl.sl_reply_error()`,
//! `$avp` and `$xavp` values and the message time of `$Ts`.
//!
//! It lives in the route's context ([`crate::context`]) and ends with the
//! route: a failure or resumed route of the same transaction starts with
//! a fresh one. (Kamailio keeps AVPs with the transaction; ours are per
//! route run. Message and branch flags do travel with the transaction:
//! they are on the [`sip::Request`].)

use crate::pv::PvValue;
use sip::TmError;
use std::collections::HashMap;

/// Most `$avp` and `$xavp` values one route run may hold: a script that
/// adds values in a loop without end is refused rather than allowed to
/// grow the process (this memory is outside the Lua memory limit).
pub(crate) const MAX_VALUES: usize = 4096;

/// The reply of `sl_reply_error` when no error was recorded.
pub(crate) const DEFAULT_ERROR: (u16, &str) = (500, "Server Internal Error");

/// State of one SIP route run.
#[derive(Debug, Default)]
pub(crate) struct RouteState {
    /// `KSR.drop()` was called: the route goes on, and the message is
    /// dropped when it ends.
    pub drop: bool,
    /// The reply for the last internal error (code, reason).
    pub last_error: Option<(u16, String)>,
    /// `$avp(name)`: values by name, the last added on top.
    avps: HashMap<String, Vec<PvValue>>,
    /// `$xavp(name=>key)`: one item per name, its fields by key.
    xavps: HashMap<String, HashMap<String, PvValue>>,
    /// Values held in `avps` and `xavps`.
    values: usize,
    /// `$Ts`: the message's time, fixed when first read.
    pub time: Option<i64>,
}

/// Why a value was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this route holds {MAX_VALUES} $avp/$xavp values already")]
pub(crate) struct TooManyValues;

impl RouteState {
    /// Record `e` as the last error, as the reply Kamailio's
    /// `sl_reply_error` would send for it.
    pub fn set_error(&mut self, e: &TmError) {
        self.last_error = Some(error_reply(e));
    }

    /// `$avp(name)`: the value on top.
    pub fn avp(&self, name: &str) -> Option<PvValue> {
        self.avps.get(name)?.last().cloned()
    }

    /// Add a value on top of `$avp(name)`.
    pub fn push_avp(&mut self, name: &str, v: PvValue) -> Result<(), TooManyValues> {
        self.count_one()?;
        self.avps.entry(name.to_owned()).or_default().push(v);
        Ok(())
    }

    /// Remove every value of `$avp(name)`.
    pub fn unset_avp(&mut self, name: &str) {
        if let Some(v) = self.avps.remove(name) {
            self.values -= v.len();
        }
    }

    /// `$xavp(name=>key)`.
    pub fn xavp(&self, name: &str, key: &str) -> Option<PvValue> {
        self.xavps.get(name)?.get(key).cloned()
    }

    /// Set `$xavp(name=>key)` (replacing its value).
    pub fn set_xavp(&mut self, name: &str, key: &str, v: PvValue) -> Result<(), TooManyValues> {
        let had = self.xavps.get(name).is_some_and(|i| i.contains_key(key));
        if !had {
            self.count_one()?;
        }
        self.xavps
            .entry(name.to_owned())
            .or_default()
            .insert(key.to_owned(), v);
        Ok(())
    }

    /// Remove `$xavp(name=>key)`.
    pub fn unset_xavp(&mut self, name: &str, key: &str) {
        if let Some(item) = self.xavps.get_mut(name) {
            if item.remove(key).is_some() {
                self.values -= 1;
            }
            if item.is_empty() {
                self.xavps.remove(name);
            }
        }
    }

    fn count_one(&mut self) -> Result<(), TooManyValues> {
        if self.values >= MAX_VALUES {
            return Err(TooManyValues);
        }
        self.values += 1;
        Ok(())
    }
}

/// The reply for a failed transaction operation, with Kamailio's codes
/// for the internal errors it names (478 for a destination that cannot
/// be resolved, 400 for a request unusable for a transaction, 487 for a
/// cancelled one); anything else is 500.
pub(crate) fn error_reply(e: &TmError) -> (u16, String) {
    let (code, text) = match e {
        TmError::BadDestination { .. } => (478, "Unresolvable destination"),
        TmError::BadRequest(_) => (400, "Bad Request"),
        TmError::Canceled { .. } => (487, "Transaction canceled"),
        _ => return (DEFAULT_ERROR.0, DEFAULT_ERROR.1.to_owned()),
    };
    (code, format!("{text} ({code}/SL)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avps_stack_and_unset() {
        let mut s = RouteState::default();
        assert_eq!(s.avp("a"), None);
        s.push_avp("a", PvValue::Int(1)).unwrap();
        s.push_avp("a", "two".into()).unwrap();
        assert_eq!(s.avp("a"), Some("two".into()));
        s.unset_avp("a");
        assert_eq!((s.avp("a"), s.values), (None, 0));
    }

    #[test]
    fn xavps_set_fields_and_count_once() {
        let mut s = RouteState::default();
        s.set_xavp("r", "k", PvValue::Int(1)).unwrap();
        s.set_xavp("r", "k", PvValue::Int(2)).unwrap();
        assert_eq!((s.xavp("r", "k"), s.values), (Some(PvValue::Int(2)), 1));
        assert_eq!(s.xavp("r", "other"), None);
        s.unset_xavp("r", "k");
        assert_eq!((s.xavp("r", "k"), s.values), (None, 0));
    }

    #[test]
    fn values_are_capped() {
        let mut s = RouteState::default();
        for i in 0..MAX_VALUES {
            s.push_avp("a", PvValue::Int(i as i64)).unwrap();
        }
        assert_eq!(s.push_avp("b", PvValue::Int(0)), Err(TooManyValues));
        assert_eq!(s.set_xavp("x", "k", PvValue::Int(0)), Err(TooManyValues));
        s.unset_avp("a");
        assert!(s.push_avp("b", PvValue::Int(0)).is_ok());
    }

    #[test]
    fn errors_map_to_kamailio_codes() {
        let e = TmError::Canceled { index: 1, label: 2 };
        assert_eq!(
            error_reply(&e),
            (487, "Transaction canceled (487/SL)".into())
        );
        let e = TmError::TableFull { max: 1 };
        assert_eq!(error_reply(&e), (500, "Server Internal Error".into()));
    }
}
