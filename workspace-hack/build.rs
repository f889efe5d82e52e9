//! Empty: a build script makes cargo resolve (and unify) the build dependencies above.
fn main() {}
