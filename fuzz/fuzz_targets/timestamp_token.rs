//! An RFC 3161 token and a TSA's response.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lintas_timestamp::verify(data, &[0u8; 32], &[], |_, _| Ok(()));
    let _ = lintas_timestamp::token_from_response(data);
});
