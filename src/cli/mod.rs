//! Command-line front end.

/// Entry point used by `src/main.rs`; returns the process exit code.
pub fn main() -> i32 {
    0
}
