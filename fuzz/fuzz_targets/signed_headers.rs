//! The headers a security server reads from a peer, and log records.
#![no_main]
use lintas_proto::exchange::v1 as ex;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lintas_proto::decode_exact::<ex::RequestHeader>(data);
    let _ = lintas_proto::decode_exact::<ex::ResponseHeader>(data);
    let _ = lintas_proto::decode_exact::<ex::MessageHeader>(data);
    let _ = lintas_proto::decode_exact::<ex::SignedRequest>(data);
    let _ = lintas_proto::decode_exact::<lintas_proto::log::v1::Record>(data);
});
