//! Image signature parsers (cosign `.sig` manifests and payloads, Sigstore bundles, Rekor
//! entries) and the judge over what they parse: never a panic, never `signed` for bytes
//! nobody signed (`layerguard::fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    layerguard::fuzz::fuzz_signature(data);
});
