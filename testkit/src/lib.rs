//! What lintas's tests share (a dev-dependency only): a PostgreSQL server that a test
//! starts on a loopback port of its own, a headless Chromium driven over WebDriver, and
//! SoftHSM2 tokens for keys in hardware.

pub mod browser;
pub mod pg;
pub mod softhsm;
