//! The alert journal's recovery and reader over one arbitrary segment file: every seq
//! once, in order, or a gap for it (`layerguard::fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    layerguard::fuzz::fuzz_journal_segment(data);
});
