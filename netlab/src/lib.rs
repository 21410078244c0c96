//! The NAT lab: `lab.sh` builds a small internet in network namespaces (public host, EIM and
//! symmetric NATs, a shared LAN, optional loss); this crate runs the real relay, bootstrap
//! server and nodes in it, measures trials per NAT pair and writes the report. Root only.

pub mod lab;
pub mod procs;
pub mod report;
pub mod trial;
pub mod world;
