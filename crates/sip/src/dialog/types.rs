//! The dialog's public types: its name, state, sides, why it ended, the
//! snapshot a script and the RPC see, the event, and the errors.

/// A dialog's name: Kamailio's hash entry and id, the pair `dlg.end_dlg`
/// and CGRateS's disconnect take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DlgId {
    /// The hash bucket (of the Call-ID).
    pub h_entry: u32,
    /// The number given in its bucket.
    pub h_id: u32,
}

impl DlgId {
    pub(crate) fn key(self) -> u64 {
        (u64::from(self.h_entry) << 32) | u64::from(self.h_id)
    }

    pub(crate) fn from_key(k: u64) -> DlgId {
        DlgId {
            h_entry: (k >> 32) as u32,
            h_id: k as u32,
        }
    }
}

impl std::fmt::Display for DlgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.h_entry, self.h_id)
    }
}

/// A dialog's state, with Kamailio's numbers (`$dlg(state)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DlgState {
    /// 1: the INVITE went on, no answer yet.
    Unconfirmed = 1,
    /// 2: a provisional with a To tag came (not tracked yet: see the docs).
    Early = 2,
    /// 3: answered (2xx), its ACK not seen yet.
    ConfirmedNa = 3,
    /// 4: answered and acknowledged.
    Confirmed = 4,
    /// 5: ended (BYE seen or sent); our BYEs may still be under way.
    Deleted = 5,
}

/// A side of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Who sent the INVITE.
    Caller = 0,
    /// Who answered it.
    Callee = 1,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Caller => Side::Callee,
            Side::Callee => Side::Caller,
        }
    }

    /// `caller` or `callee`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Caller => "caller",
            Side::Callee => "callee",
        }
    }
}

/// Why a dialog ended (`$dlg(end_reason)`, an evapi extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// A BYE from this side.
    Bye(Side),
    /// Its lifetime ran out.
    Timeout,
    /// `dlg_bye` or `dlg.end_dlg`.
    Command,
    /// It was never answered.
    Failed,
}

impl EndReason {
    /// `bye`, `timeout`, `command` or `failed`.
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Bye(_) => "bye",
            EndReason::Timeout => "timeout",
            EndReason::Command => "command",
            EndReason::Failed => "failed",
        }
    }
}

/// A copy of a dialog's data, as the script and the RPC methods read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogInfo {
    /// Its name.
    pub id: DlgId,
    /// Its state.
    pub state: DlgState,
    /// The Call-ID.
    pub callid: String,
    /// The From URI of the INVITE.
    pub from_uri: String,
    /// The To URI of the INVITE.
    pub to_uri: String,
    /// The caller's tag.
    pub from_tag: String,
    /// The callee's tag ("" until answered).
    pub to_tag: String,
    /// The caller's Contact URI.
    pub caller_contact: String,
    /// The callee's Contact URI ("" until answered).
    pub callee_contact: String,
    /// The highest CSeq seen from the caller.
    pub caller_cseq: u32,
    /// The highest CSeq seen from the callee (0: none).
    pub callee_cseq: u32,
    /// When it was answered (Unix seconds; 0: not yet).
    pub start_ts: u64,
    /// Its lifetime once answered (seconds).
    pub timeout: u32,
    /// Why it ended, once it did.
    pub end_reason: Option<EndReason>,
    /// `$dlg_var` values.
    pub vars: Vec<(String, String)>,
    /// Profiles it is in (name, value).
    pub profiles: Vec<(String, String)>,
}

impl DialogInfo {
    /// A `$dlg_var` value.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Set (`Some`) or remove (`None`) a `$dlg_var` value in this copy.
    pub fn set_var(&mut self, name: &str, value: Option<&str>) {
        self.vars.retain(|(k, _)| k != name);
        if let Some(v) = value {
            self.vars.push((name.to_owned(), v.to_owned()));
        }
    }
}

/// A dialog event for the router: `dialog:start`, `dialog:end` or
/// `dialog:failed`, with the dialog as it was then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogEvent {
    /// The event's name, as Kamailio's.
    pub name: &'static str,
    /// The dialog.
    pub info: DialogInfo,
}

/// Why a dialog operation did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    /// No dialog has these ids (any more).
    #[error("no dialog {0} (h_entry:h_id)")]
    NotFound(DlgId),
    /// The dialog is not answered (or already ending): nothing to end.
    #[error("dialog {0} is not answered (state {state})", state = *.1 as u8)]
    NotAnswered(DlgId, DlgState),
    /// The request cannot start a dialog.
    #[error("cannot start a dialog: {0}")]
    NotInitial(&'static str),
    /// `[dialog] max_dialogs` are tracked already.
    #[error("{0} dialogs are tracked already ([dialog] max_dialogs)")]
    Full(usize),
    /// The request belongs to no known dialog.
    #[error("the request belongs to no known dialog")]
    Unknown,
    /// A `$dlg_var` name or value, or a profile name, that cannot be kept.
    #[error("{0}")]
    BadValue(String),
}

/// Longest `$dlg_var` name or value, profile name or value (bytes).
pub const MAX_VAR_LEN: usize = 1024;
/// Most `$dlg_var` values per dialog.
pub const MAX_VARS: usize = 64;
/// Most profiles a dialog can be put in.
pub const MAX_PROFILES: usize = 16;
