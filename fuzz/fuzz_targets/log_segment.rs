//! A sealed log segment as an archive holds it.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lintas_log::file::segment_leaves(data);
});
