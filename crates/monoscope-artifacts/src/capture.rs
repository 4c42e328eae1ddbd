//! The outputs of a capture stage: `store/`, the activation store (its files are
//! `monoscope-store`'s format).

/// The stage kind whose directory has this layout.
pub const KIND: &str = "capture";
pub const STORE_DIR: &str = "store";
