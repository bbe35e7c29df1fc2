//! An evidence bundle as an auditor receives it: verified, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let report = lintas_audit::verify_bytes(data, lintas_fuzz::anchor());
    // Random bytes never verify against a fresh anchor.
    assert!(!report.verified);
});
