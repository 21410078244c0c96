//! The NAT lab: `lab.sh` builds a small internet in network namespaces (public host, EIM and
//! symmetric NATs, a shared LAN, optional loss); this crate runs the real relay, bootstrap
//! server and nodes in it, measures trials per NAT pair and writes the report. Root only.
//!
//! # Layout
//! - `lab`: `Lab::up()` and teardown; `in_netns`.
//! - `procs`: the real binaries under `ip netns exec`; `Node` wraps one host's `concord`.
//! - `world`: relay and bootstrap server on the public host, accounts, one guild.
//! - `trial`: one trial of a NAT pair.
//! - `report`: the pinned report JSON and its table (`main.rs`: `concord-netlab report`).

pub mod lab;
pub mod procs;
pub mod report;
pub mod trial;
pub mod world;
