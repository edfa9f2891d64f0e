//! A kernel module's own metadata: the `.modinfo` ELF section, a list of
//! NUL-separated `key=value` strings (`name=`, `depends=`, `vermagic=`,
//! `softdep=`). Read straight from the section headers so no kmod is needed.
//! Input is untrusted: every offset is checked against the buffer.

use crate::error::FormatError;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModInfo {
    pub name: String,
    /// Hard dependencies, in the order the module lists them.
    pub depends: Vec<String>,
    pub vermagic: Option<String>,
    /// `softdep=` lines, kept for reports; soft dependencies are not loaded.
    pub softdeps: Vec<String>,
}

/// Section headers examined at most; a module has ~60.
const SECTIONS_MAX: usize = 4096;

pub fn parse_module(elf: &[u8]) -> Result<ModInfo, FormatError> {
    parse_modinfo(modinfo_section(elf)?)
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<usize> {
    let value = u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?);
    usize::try_from(value).ok()
}

fn slice<'a>(
    elf: &'a [u8],
    offset: usize,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], FormatError> {
    let bounds = FormatError::ElfBounds {
        what,
        len: elf.len(),
    };
    let end = offset.checked_add(len).ok_or(bounds.clone())?;
    elf.get(offset..end).ok_or(bounds)
}

/// The raw bytes of the `.modinfo` section of an ELF64 little-endian object.
pub fn modinfo_section(elf: &[u8]) -> Result<&[u8], FormatError> {
    // e_ident: magic, ELFCLASS64 (2), ELFDATA2LSB (1).
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        return Err(FormatError::ElfMagic);
    }
    let header = |what| FormatError::ElfBounds {
        what,
        len: elf.len(),
    };
    let shoff = read_u64(elf, 0x28).ok_or(header("section header offset"))?;
    let shentsize = usize::from(read_u16(elf, 0x3a).ok_or(header("section entry size"))?);
    let shnum = usize::from(read_u16(elf, 0x3c).ok_or(header("section count"))?);
    let shstrndx = usize::from(read_u16(elf, 0x3e).ok_or(header("string table index"))?);
    if shentsize < 64 || shnum > SECTIONS_MAX {
        return Err(header("section header table"));
    }
    let table = slice(
        elf,
        shoff,
        shentsize.saturating_mul(shnum),
        "section header table",
    )?;
    let section = |index: usize| -> Result<(u32, &[u8]), FormatError> {
        let entry = table
            .get(index * shentsize..index * shentsize + 64)
            .ok_or(header("section index"))?;
        let name = read_u32(entry, 0).ok_or(header("section name"))?;
        let offset = read_u64(entry, 0x18).ok_or(header("section offset"))?;
        let size = read_u64(entry, 0x20).ok_or(header("section size"))?;
        Ok((name, slice(elf, offset, size, "section data")?))
    };
    let (_, names) = section(shstrndx)?;
    for index in 0..shnum {
        let (name_offset, data) = section(index)?;
        let name = names
            .get(name_offset as usize..)
            .and_then(|rest| rest.split(|b| *b == 0).next());
        if name == Some(b".modinfo") {
            return Ok(data);
        }
    }
    Err(FormatError::NoModinfo)
}

pub fn parse_modinfo(section: &[u8]) -> Result<ModInfo, FormatError> {
    let mut info = ModInfo::default();
    let mut name = None;
    for field in section.split(|b| *b == 0) {
        let Ok(text) = std::str::from_utf8(field) else {
            continue;
        };
        let Some((key, value)) = text.split_once('=') else {
            continue;
        };
        match key {
            "name" => name = Some(value.to_string()),
            "depends" => info.depends.extend(
                value
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .map(|d| d.replace('-', "_")),
            ),
            "vermagic" => info.vermagic = Some(value.to_string()),
            "softdep" => info.softdeps.push(value.to_string()),
            _ => {}
        }
    }
    info.name = name.ok_or(FormatError::ModinfoNoName)?;
    Ok(info)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF64 object with a `.modinfo` section holding `modinfo`.
    pub(crate) fn build_module(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.modinfo\0";
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let modinfo_at = elf.len();
        elf.extend_from_slice(modinfo);
        let strtab_at = elf.len();
        elf.extend_from_slice(shstrtab);
        let shoff = elf.len();
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        let sections = [
            (0u32, 0usize, 0usize),
            (1, strtab_at, shstrtab.len()),
            (11, modinfo_at, modinfo.len()),
        ];
        for (name, offset, size) in sections {
            let mut entry = [0u8; 64];
            entry[0..4].copy_from_slice(&name.to_le_bytes());
            entry[0x18..0x20].copy_from_slice(&(offset as u64).to_le_bytes());
            entry[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&entry);
        }
        elf
    }

    #[test]
    fn reads_name_depends_and_softdeps() {
        let elf = build_module(
            b"license=GPL\0depends=sunrpc,grace\0\0name=lockd\0vermagic=6.1.0 SMP\0softdep=pre: crc32c\0",
        );
        let info = parse_module(&elf).unwrap();
        assert_eq!(info.name, "lockd");
        assert_eq!(info.depends, ["sunrpc", "grace"]);
        assert_eq!(info.vermagic.as_deref(), Some("6.1.0 SMP"));
        assert_eq!(info.softdeps, ["pre: crc32c"]);
    }

    #[test]
    fn empty_depends_and_bad_input() {
        let info = parse_module(&build_module(b"depends=\0name=sunrpc\0")).unwrap();
        assert!(info.depends.is_empty());
        assert_eq!(
            parse_module(&build_module(b"depends=\0")),
            Err(FormatError::ModinfoNoName)
        );
        assert_eq!(parse_module(b"\x7fELF\x01\x01"), Err(FormatError::ElfMagic));
        let mut elf = build_module(b"name=x\0");
        let len = elf.len();
        elf.truncate(len - 10);
        assert!(matches!(
            parse_module(&elf),
            Err(FormatError::ElfBounds { .. })
        ));
    }
}
