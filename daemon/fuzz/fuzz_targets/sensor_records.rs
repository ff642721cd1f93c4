//! The sensor's ring-buffer record decoder: any bytes decode or fail with a typed error,
//! and nothing decoded claims more than the record carried (`layerguard::fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    layerguard::fuzz::fuzz_sensor_record(data);
});
