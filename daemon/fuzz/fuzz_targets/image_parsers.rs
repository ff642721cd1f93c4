//! One target for every parser that reads image bytes: the first input byte selects a layer
//! blob (any compression), a manifest/index/config, or a layer cache file. See
//! `layerguard::fuzz` for the invariants checked; the same function runs in the
//! stable test suite over generated inputs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    layerguard::fuzz::fuzz_image(data);
});
