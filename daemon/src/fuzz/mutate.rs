//! The stable test suite's stand-in for libFuzzer: a deterministic generator and a byte
//! mutator, so that every parser under fuzzing also runs over thousands of mutated inputs
//! in CI, without nightly. A failure reproduces from its iteration number.

/// xorshift64*.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Mutates `input` in place, leaving its first byte (a target selector) alone. `fields`
/// are offsets worth hitting (length fields, flags, header checksums).
pub fn mutate(rng: &mut Rng, input: &mut Vec<u8>, fields: &[usize]) {
    for _ in 0..1 + rng.below(8) {
        if input.len() < 2 {
            input.push(rng.next() as u8);
            continue;
        }
        let at = 1 + rng.below(input.len() - 1);
        match rng.below(7) {
            0 => input[at] ^= 1 << rng.below(8),
            1 => input[at] = rng.next() as u8,
            2 => input.truncate(at),
            3 => {
                let len = rng.below(64).min(input.len() - at);
                input.drain(at..at + len);
            }
            4 => {
                let byte = [0u8, 0xff, b'/', b'.', b'0', b'7', b' ', b'\n'][rng.below(8)];
                input.insert(at, byte);
            }
            5 if !fields.is_empty() => {
                let field = fields[rng.below(fields.len())];
                if field < input.len() {
                    input[field] = rng.next() as u8;
                }
            }
            _ => {
                let from = rng.below(input.len());
                let len = rng.below(512).min(input.len() - from);
                let chunk = input[from..from + len].to_vec();
                let to = rng.below(input.len());
                input.splice(to..to, chunk);
            }
        }
    }
}
