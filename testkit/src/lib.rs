//! What lintas's tests share (a dev-dependency only): a PostgreSQL server that a test
//! starts on a loopback port of its own, and a headless Chromium driven over WebDriver.

pub mod browser;
pub mod pg;
