//! 802.1Q / 802.1ad VLAN types. Pure: no I/O, no unsafe.
#![forbid(unsafe_code)]
