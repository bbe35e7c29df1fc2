//! A signed global configuration as a security server fetches it.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lintas_globalconf::verify(data, lintas_fuzz::anchor(), std::time::SystemTime::now());
    let _ = lintas_globalconf::expiry_of(data);
});
