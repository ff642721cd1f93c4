//! Struct layouts and enum values read from BTF: of the compiled sensor object (the wire
//! test: Tetragon's alignchecker idea, the truth about the C layout is what clang emitted),
//! and of the running kernel's modules (split BTF on top of vmlinux), for the module types
//! CO-RE cannot relocate (see `overlay`). Only struct member offsets and enum values are
//! read; every other kind is skipped by its size.

use std::collections::HashMap;

#[derive(Debug)]
pub struct MemberLayout {
    pub name: String,
    pub offset_bytes: usize,
}

#[derive(Debug)]
pub struct StructLayout {
    /// Read by the wire test only.
    #[cfg_attr(not(test), allow(dead_code))]
    pub size: usize,
    pub members: Vec<MemberLayout>,
}

pub struct BtfLayouts {
    structs: HashMap<String, StructLayout>,
    /// Enum name -> its values by name (read by the wire test only).
    #[cfg_attr(not(test), allow(dead_code))]
    enums: HashMap<String, HashMap<String, i64>>,
}

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_ENUM: u32 = 6;

impl BtfLayouts {
    /// The BTF of an ELF object (the wire test; `object` is a dev-dependency).
    #[cfg(test)]
    pub fn from_elf(elf: &[u8]) -> Result<Self, String> {
        use object::{Object, ObjectSection};
        let file = object::File::parse(elf).map_err(|e| format!("not an ELF object: {e}"))?;
        let btf = file
            .section_by_name(".BTF")
            .ok_or("the object has no .BTF section (built without -g?)")?;
        let data = btf.data().map_err(|e| format!(".BTF unreadable: {e}"))?;
        Self::parse(data)
    }

    pub fn get(&self, name: &str) -> Option<&StructLayout> {
        self.structs.get(name)
    }

    #[cfg(test)]
    pub fn enum_values(&self, name: &str) -> Option<&HashMap<String, i64>> {
        self.enums.get(name)
    }

    /// A kernel module's split BTF (`/sys/kernel/btf/<module>`): its string offsets count
    /// from the start of `base`'s (vmlinux's) string section.
    pub fn parse_split(data: &[u8], base: &[u8]) -> Result<Self, String> {
        let base_strings = Self::strings(base)?;
        Self::parse_with(data, base_strings)
    }

    /// A complete BTF blob (vmlinux's, or an object's).
    pub fn parse(data: &[u8]) -> Result<Self, String> {
        Self::parse_with(data, &[])
    }

    /// The string section of a BTF blob.
    fn strings(data: &[u8]) -> Result<&[u8], String> {
        let u32_at = |o: usize| -> Result<usize, String> {
            data.get(o..o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or_else(|| format!("BTF truncated at {o}"))
        };
        if data.get(0..2) != Some(&BTF_MAGIC.to_le_bytes()[..]) {
            return Err("bad BTF magic (big-endian BTF is not supported)".into());
        }
        let start = u32_at(4)? + u32_at(16)?;
        data.get(start..start + u32_at(20)?)
            .ok_or_else(|| "BTF string section out of bounds".to_string())
    }

    fn parse_with(data: &[u8], base_strings: &[u8]) -> Result<Self, String> {
        let u16_at = |o: usize| -> Result<u16, String> {
            data.get(o..o + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .ok_or_else(|| format!("BTF truncated at {o}"))
        };
        let u32_at = |o: usize| -> Result<u32, String> {
            data.get(o..o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| format!("BTF truncated at {o}"))
        };
        if u16_at(0)? != BTF_MAGIC {
            return Err("bad BTF magic (big-endian objects are not supported)".into());
        }
        let hdr_len = u32_at(4)? as usize;
        let type_off = hdr_len + u32_at(8)? as usize;
        let type_len = u32_at(12)? as usize;
        let own_strings = Self::strings(data)?;
        // Split BTF: offsets below the base's string section are the base's strings.
        let name = |off: u32| -> String {
            let off = off as usize;
            let bytes = if off < base_strings.len() {
                &base_strings[off..]
            } else {
                own_strings
                    .get(off - base_strings.len()..)
                    .unwrap_or_default()
            };
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            String::from_utf8_lossy(&bytes[..end]).into_owned()
        };

        let mut structs = HashMap::new();
        let mut enums = HashMap::new();
        let mut pos = type_off;
        while pos < type_off + type_len {
            let name_off = u32_at(pos)?;
            let info = u32_at(pos + 4)?;
            let size = u32_at(pos + 8)?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            pos += 12;
            // Each kind is followed by kind-specific data; its size is all we need to skip it.
            let extra = match kind {
                1 | 14 | 17 => 4,     // INT, VAR, DECL_TAG
                3 => 12,              // ARRAY
                4 | 5 => 12 * vlen,   // STRUCT, UNION
                6 | 13 => 8 * vlen,   // ENUM, FUNC_PROTO
                15 | 19 => 12 * vlen, // DATASEC, ENUM64
                2 | 7..=12 | 16 | 18 => 0,
                other => return Err(format!("unknown BTF kind {other}")),
            };
            if kind == KIND_STRUCT && name_off != 0 {
                let mut members = Vec::with_capacity(vlen);
                for i in 0..vlen {
                    let m = pos + 12 * i;
                    let bits = u32_at(m + 8)?;
                    let bit_offset = if kind_flag { bits & 0x00ff_ffff } else { bits };
                    members.push(MemberLayout {
                        name: name(u32_at(m)?),
                        offset_bytes: (bit_offset / 8) as usize,
                    });
                }
                structs.insert(
                    name(name_off),
                    StructLayout {
                        size: size as usize,
                        members,
                    },
                );
            }
            if kind == KIND_ENUM && name_off != 0 {
                let mut values = HashMap::with_capacity(vlen);
                for i in 0..vlen {
                    let m = pos + 8 * i;
                    // kind_flag set: the values are signed.
                    let raw = u32_at(m + 4)?;
                    let value = if kind_flag {
                        i64::from(raw as i32)
                    } else {
                        i64::from(raw)
                    };
                    values.insert(name(u32_at(m)?), value);
                }
                enums.insert(name(name_off), values);
            }
            pos += extra;
        }
        Ok(Self { structs, enums })
    }
}
