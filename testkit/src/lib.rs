//! What lintas's tests share (a dev-dependency only): a PostgreSQL server that a test
//! starts on a loopback port of its own.

pub mod pg;
