//! Which client addresses may connect: an allow-list of networks (CIDR).
//! The parser is shared with every other `allow_networks` setting; it
//! lives in the `hostaddr` crate.

pub use hostaddr::network::{AllowList, BadNetwork, Network};
