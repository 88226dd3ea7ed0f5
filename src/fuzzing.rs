//! Entry points for the fuzz targets in `fuzz/` into the front ends' flag
//! parsers, which clap reaches through `value_parser` and which are not
//! otherwise public. Not an API: each only forwards, unchanged.

use std::time::Duration;

/// `--memory` / `-m`.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    crate::common::parse_memory(s)
}

/// `--timeout` and `--cpu-time`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::common::parse_duration(s)
}
