//! No code: this crate exists for its dependency list, which gives every dependency the
//! same features whichever workspace packages a command builds (see Cargo.toml).
#![forbid(unsafe_code)]
