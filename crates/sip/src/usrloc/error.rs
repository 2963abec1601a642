//! Why a registration was refused, with Kamailio's reply for each cause
//! (its registrar's `rerrno` table: status, reason phrase and the
//! `P-Registrar-Error` text).

/// Why a REGISTER (or a lookup's AoR) was refused. [`RegError::code`],
/// [`RegError::reason`] and [`RegError::info`] give the reply Kamailio's
/// registrar sends for it; the `Display` text is for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegError {
    /// The AoR would hold more than `max_contacts` contacts.
    #[error("too many contacts for AoR {aor:?} ({want}, max_contacts = {max})")]
    TooManyContacts {
        /// The AoR.
        aor: String,
        /// Contacts it would hold.
        want: usize,
        /// `[usrloc] max_contacts`.
        max: usize,
    },
    /// A new AoR, and the table already holds `max_aors`.
    #[error("location table full: {max} AoRs (max_aors); AoR {aor:?} refused")]
    TableFull {
        /// The AoR refused.
        aor: String,
        /// `[usrloc] max_aors`.
        max: usize,
    },
    /// A non-zero expires below `min_expires`.
    #[error("expires {asked} is below min_expires = {min}")]
    IntervalTooBrief {
        /// What the REGISTER asked for.
        asked: u32,
        /// `[usrloc] min_expires`, sent back in `Min-Expires`.
        min: u32,
    },
    /// Same Call-ID as the stored contact, and an older (or, past the
    /// retransmission window, the same) CSeq.
    #[error("CSeq {cseq} is not newer than the stored {stored} for contact {uri:?}")]
    InvalidCseq {
        /// The contact URI.
        uri: String,
        /// The REGISTER's CSeq.
        cseq: u32,
        /// The stored CSeq.
        stored: u32,
    },
    /// `Contact: *` without `Expires: 0`.
    #[error("Contact: * with an Expires header other than 0")]
    StarExpires,
    /// `Contact: *` together with other contacts.
    #[error("Contact: * mixed with other contacts")]
    StarMixed,
    /// A Contact value or its URI does not parse.
    #[error("bad Contact {0:?}")]
    BadContact(String),
    /// A `q` parameter that is not 0 to 1 with at most three decimals.
    #[error("bad q value {0:?}")]
    BadQ(String),
    /// An Expires header that is not a number.
    #[error("bad Expires header {0:?}")]
    BadExpires(String),
    /// A Contact URI longer than 512 bytes (Kamailio's `contact_max_size`).
    #[error("contact URI of {0} bytes is longer than 512")]
    ContactTooLong(usize),
    /// A Call-ID longer than 255 bytes.
    #[error("Call-ID of {0} bytes is longer than 255")]
    CallIdTooLong(usize),
    /// An AoR longer than 255 bytes.
    #[error("address-of-record of {0} bytes is longer than 255")]
    AorTooLong(usize),
    /// The URI the AoR is taken from does not parse, or gives no AoR.
    #[error("no address-of-record in {0:?}")]
    BadAor(String),
    /// To, Call-ID or CSeq is missing or unreadable.
    #[error("{0} header missing or unreadable")]
    Missing(&'static str),
}

impl RegError {
    /// The reply's status code (Kamailio's for the cause).
    pub fn code(&self) -> u16 {
        match self {
            RegError::TooManyContacts { .. } | RegError::TableFull { .. } => 503,
            RegError::IntervalTooBrief { .. } => 423,
            RegError::AorTooLong(_) => 500,
            _ => 400,
        }
    }

    /// The reply's reason phrase.
    pub fn reason(&self) -> &'static str {
        match self.code() {
            503 => "Service Unavailable",
            423 => "Interval Too Brief",
            500 => "Server Internal Error",
            _ => "Bad Request",
        }
    }

    /// The reply's `P-Registrar-Error` value (Kamailio's texts; "Location
    /// table full" is ours).
    pub fn info(&self) -> &'static str {
        match self {
            RegError::TooManyContacts { .. } => "Too many registered contacts",
            RegError::TableFull { .. } => "Location table full",
            RegError::IntervalTooBrief { .. } => "Interval too brief",
            RegError::InvalidCseq { .. } => "Invalid CSeq number",
            RegError::StarExpires => "* used in contact and expires is not zero",
            RegError::StarMixed => "* used in contact and more than 1 contact",
            RegError::BadContact(_) => "Contact parse error",
            RegError::BadQ(_) => "Invalid q param in contact",
            RegError::BadExpires(_) => "Expires parse error",
            RegError::ContactTooLong(_) => "Contact/received too long",
            RegError::CallIdTooLong(_) => "Callid too long",
            RegError::AorTooLong(_) => "Address Of Record too long",
            RegError::BadAor(_) => "Error while parsing AOR",
            RegError::Missing("To") => "To header not found",
            RegError::Missing("Call-ID") => "Call-ID header not found",
            RegError::Missing(_) => "CSeq header not found",
        }
    }

    /// What `KSR.registrar.save` returns for it: -2 for too many contacts,
    /// -1 otherwise (Kamailio's convention).
    pub fn kemi(&self) -> i64 {
        match self {
            RegError::TooManyContacts { .. } => -2,
            _ => -1,
        }
    }

    /// The `Min-Expires` value to send, for a 423.
    pub fn min_expires(&self) -> Option<u32> {
        match self {
            RegError::IntervalTooBrief { min, .. } => Some(*min),
            _ => None,
        }
    }
}
