//! Reader of the Unix `ar` archive format, the outer layer of a Debian
//! package (`debian-binary`, `control.tar.*`, `data.tar.*`). Only what
//! dpkg writes is needed: common-format headers, GNU-style `name/` endings.
//! Input is untrusted: every length is checked before it is used.

use crate::error::FormatError;

const MAGIC: &[u8] = b"!<arch>\n";
const HEADER_LEN: usize = 60;
/// A .deb has three members; a few more are tolerated (signatures).
pub const MEMBERS_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArMember<'a> {
    pub name: String,
    pub data: &'a [u8],
}

/// Splits an ar archive into its members, in archive order.
pub fn parse_ar(bytes: &[u8]) -> Result<Vec<ArMember<'_>>, FormatError> {
    let mut rest = bytes.strip_prefix(MAGIC).ok_or(FormatError::ArMagic)?;
    let mut members = Vec::new();
    while !rest.is_empty() {
        let offset = bytes.len() - rest.len();
        // A lone padding newline may end the archive.
        if rest == b"\n" {
            break;
        }
        if members.len() == MEMBERS_MAX {
            return Err(FormatError::ArTooManyMembers {
                members_max: MEMBERS_MAX,
            });
        }
        let header = rest
            .get(..HEADER_LEN)
            .ok_or(FormatError::ArHeader { offset })?;
        if &header[58..60] != b"`\n" {
            return Err(FormatError::ArHeader { offset });
        }
        let name = parse_name(&header[..16]).ok_or(FormatError::ArHeader { offset })?;
        let size = parse_decimal(&header[48..58]).ok_or(FormatError::ArHeader { offset })?;
        let body = &rest[HEADER_LEN..];
        let data_len = usize::try_from(size)
            .ok()
            .filter(|len| *len <= body.len())
            .ok_or_else(|| FormatError::ArTruncated {
                name: name.clone(),
                size,
                available: body.len(),
            })?;
        members.push(ArMember {
            name,
            data: &body[..data_len],
        });
        // Members start on even offsets.
        let next = data_len + (data_len % 2);
        rest = body.get(next..).unwrap_or(&[]);
    }
    Ok(members)
}

fn parse_name(field: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(field).ok()?;
    let trimmed = text.trim_end_matches(' ');
    let name = trimmed.strip_suffix('/').unwrap_or(trimmed);
    (!name.is_empty()).then(|| name.to_string())
}

fn parse_decimal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?.trim_end_matches(' ');
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
pub(crate) fn build_ar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (name, data) in members {
        let header = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name,
            0,
            0,
            0,
            "100644",
            data.len()
        );
        assert_eq!(header.len(), HEADER_LEN);
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_odd_sizes_and_gnu_names() {
        let bytes = build_ar(&[("debian-binary", b"2.0\n"), ("data.tar.xz/", b"abc")]);
        let members = parse_ar(&bytes).unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].name, "debian-binary");
        assert_eq!(members[0].data, b"2.0\n");
        assert_eq!(members[1].name, "data.tar.xz");
        assert_eq!(members[1].data, b"abc");
    }

    #[test]
    fn rejects_bad_magic_truncation_and_bad_size() {
        assert_eq!(parse_ar(b"PK\x03\x04"), Err(FormatError::ArMagic));
        let mut bytes = build_ar(&[("x", b"hello")]);
        bytes.truncate(bytes.len() - 3);
        assert!(matches!(
            parse_ar(&bytes),
            Err(FormatError::ArTruncated { size: 5, .. })
        ));
        let mut bytes = build_ar(&[("x", b"hello")]);
        bytes[8 + 48] = b'z';
        assert_eq!(parse_ar(&bytes), Err(FormatError::ArHeader { offset: 8 }));
    }

    #[test]
    fn member_count_is_bounded() {
        let many: Vec<(&str, &[u8])> = (0..=MEMBERS_MAX).map(|_| ("m", &b""[..])).collect();
        assert_eq!(
            parse_ar(&build_ar(&many)),
            Err(FormatError::ArTooManyMembers {
                members_max: MEMBERS_MAX
            })
        );
    }
}
