//! What the `fulcrum` binary reads from files, parsed and checked without I/O:
//! `fulcrum.toml` ([`config`]) and apply files ([`document`]). The binary's commands use
//! it, and so do the fuzz targets in `fuzz/`.

pub mod config;
pub mod document;
