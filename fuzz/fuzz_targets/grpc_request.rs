#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| amble_fuzz::grpc_request(data));
