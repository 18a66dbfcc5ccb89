//! The NAT gateway (frames in, frames out). Not built yet: see issue 8.
#![forbid(unsafe_code)]
