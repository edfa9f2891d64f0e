//! TFTP packets on the wire (RFC 1350 §5, RFC 2347 §2-3): a zero-copy
//! decoder that checks every length before it looks at a byte, and encoders
//! that write into a caller's buffer.
//!
//! Decoding never allocates more than [`OPTIONS_MAX`] option slots and never
//! panics on peer bytes: every failure is a [`DecodeError`].

use std::fmt;

/// Largest DATA payload any negotiation may reach (RFC 2348 §1).
pub const BLKSIZE_MAX: usize = 65_464;
/// Smallest DATA payload a negotiation may reach (RFC 2348 §1).
pub const BLKSIZE_MIN: usize = 8;
/// DATA payload without options (RFC 1350 §2).
pub const BLKSIZE_DEFAULT: usize = 512;
/// Opcode and block number in front of every DATA payload.
pub const DATA_HEADER_LEN: usize = 4;
/// Largest datagram the codec accepts: a full DATA packet at [`BLKSIZE_MAX`].
pub const PACKET_LEN_MAX: usize = BLKSIZE_MAX + DATA_HEADER_LEN;
/// RFC 2347 §2: "the maximum size of a request packet is 512 octets".
pub const REQUEST_LEN_MAX: usize = 512;
/// Option pairs kept from one request or OACK; more is a decode error.
pub const OPTIONS_MAX: usize = 16;

/// Operation codes (RFC 1350 §5, RFC 2347 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Opcode {
    Rrq = 1,
    Wrq = 2,
    Data = 3,
    Ack = 4,
    Error = 5,
    Oack = 6,
}

/// TFTP error codes (RFC 1350 appendix, RFC 2347 §2 for 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    NotDefined,
    FileNotFound,
    AccessViolation,
    DiskFull,
    IllegalOperation,
    UnknownTransferId,
    FileExists,
    NoSuchUser,
    OptionRefused,
    /// A code outside the RFCs, kept so it can be reported.
    Other(u16),
}

impl ErrorCode {
    pub fn from_u16(code: u16) -> ErrorCode {
        match code {
            0 => ErrorCode::NotDefined,
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTransferId,
            6 => ErrorCode::FileExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionRefused,
            other => ErrorCode::Other(other),
        }
    }

    pub fn as_u16(self) -> u16 {
        match self {
            ErrorCode::NotDefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::DiskFull => 3,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTransferId => 5,
            ErrorCode::FileExists => 6,
            ErrorCode::NoSuchUser => 7,
            ErrorCode::OptionRefused => 8,
            ErrorCode::Other(code) => code,
        }
    }
}

/// Transfer mode of a request (RFC 1350 §1); case-insensitive on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Netascii,
    Octet,
    Mail,
}

/// One `name\0value\0` pair, as sent (names are matched case-insensitively
/// by the negotiation, not here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawOption<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

/// A read or write request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub filename: &'a str,
    pub mode: Mode,
    pub options: Vec<RawOption<'a>>,
}

/// A decoded packet; borrows from the datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Rrq(Request<'a>),
    Wrq(Request<'a>),
    Data { block: u16, data: &'a [u8] },
    Ack { block: u16 },
    Error { code: ErrorCode, message: &'a str },
    Oack { options: Vec<RawOption<'a>> },
}

/// Why a datagram is not a TFTP packet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("datagram of {len} bytes is shorter than a {what}")]
    Truncated { what: &'static str, len: usize },
    #[error("datagram of {len} bytes exceeds the {max}-byte limit for a {what}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    #[error("{field} is not terminated by a NUL byte")]
    Unterminated { field: &'static str },
    #[error("{field} is not valid UTF-8")]
    NotUtf8 { field: &'static str },
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("unknown transfer mode {0:?}")]
    UnknownMode(String),
    #[error("option {name:?} has no value")]
    OptionWithoutValue { name: String },
    #[error("more than {max} options")]
    TooManyOptions { max: usize },
}

/// Decode one datagram.
pub fn decode(datagram: &[u8]) -> Result<Packet<'_>, DecodeError> {
    if datagram.len() > PACKET_LEN_MAX {
        return Err(DecodeError::TooLong {
            what: "TFTP packet",
            len: datagram.len(),
            max: PACKET_LEN_MAX,
        });
    }
    let (opcode, body) = match datagram {
        [high, low, body @ ..] => (u16::from_be_bytes([*high, *low]), body),
        _ => {
            return Err(DecodeError::Truncated {
                what: "opcode",
                len: datagram.len(),
            })
        }
    };
    match opcode {
        1 => decode_request(datagram.len(), body).map(Packet::Rrq),
        2 => decode_request(datagram.len(), body).map(Packet::Wrq),
        3 => {
            let (block, data) = split_block(datagram.len(), body, "DATA packet")?;
            Ok(Packet::Data { block, data })
        }
        4 => {
            // Trailing bytes after an ACK are padding some stacks add.
            let (block, _) = split_block(datagram.len(), body, "ACK packet")?;
            Ok(Packet::Ack { block })
        }
        5 => decode_error(datagram.len(), body),
        6 => Ok(Packet::Oack {
            options: decode_options(body)?,
        }),
        other => Err(DecodeError::UnknownOpcode(other)),
    }
}

fn split_block<'a>(
    len: usize,
    body: &'a [u8],
    what: &'static str,
) -> Result<(u16, &'a [u8]), DecodeError> {
    match body {
        [high, low, rest @ ..] => Ok((u16::from_be_bytes([*high, *low]), rest)),
        _ => Err(DecodeError::Truncated { what, len }),
    }
}

fn decode_request(len: usize, body: &[u8]) -> Result<Request<'_>, DecodeError> {
    if len > REQUEST_LEN_MAX {
        return Err(DecodeError::TooLong {
            what: "request",
            len,
            max: REQUEST_LEN_MAX,
        });
    }
    let (filename, rest) = take_string(body, "filename")?;
    if filename.is_empty() {
        return Err(DecodeError::Empty { field: "filename" });
    }
    let (mode, rest) = take_string(rest, "mode")?;
    let mode = parse_mode(mode)?;
    let options = decode_options(rest)?;
    Ok(Request {
        filename,
        mode,
        options,
    })
}

fn parse_mode(mode: &str) -> Result<Mode, DecodeError> {
    if mode.eq_ignore_ascii_case("octet") {
        Ok(Mode::Octet)
    } else if mode.eq_ignore_ascii_case("netascii") {
        Ok(Mode::Netascii)
    } else if mode.eq_ignore_ascii_case("mail") {
        Ok(Mode::Mail)
    } else {
        Err(DecodeError::UnknownMode(mode.chars().take(32).collect()))
    }
}

/// Option pairs up to the end of the datagram. Trailing NUL padding, which
/// some PXE ROMs append to requests, is accepted and ignored.
fn decode_options(mut rest: &[u8]) -> Result<Vec<RawOption<'_>>, DecodeError> {
    let mut options = Vec::new();
    while !rest.is_empty() {
        if rest.iter().all(|byte| *byte == 0) {
            break;
        }
        let (name, after_name) = take_string(rest, "option name")?;
        if name.is_empty() {
            return Err(DecodeError::Empty {
                field: "option name",
            });
        }
        let (value, after_value) = take_string(after_name, "option value").map_err(|_| {
            DecodeError::OptionWithoutValue {
                name: name.chars().take(32).collect(),
            }
        })?;
        if options.len() == OPTIONS_MAX {
            return Err(DecodeError::TooManyOptions { max: OPTIONS_MAX });
        }
        options.push(RawOption { name, value });
        rest = after_value;
    }
    Ok(options)
}

fn decode_error(len: usize, body: &[u8]) -> Result<Packet<'_>, DecodeError> {
    let (code, rest) = split_block(len, body, "ERROR packet")?;
    // Some firmware omits the final NUL of the message; the code alone is
    // what ends a transfer, so a missing terminator is tolerated here only.
    let text = match rest.iter().position(|byte| *byte == 0) {
        Some(end) => rest.get(..end).unwrap_or_default(),
        None => rest,
    };
    let message = std::str::from_utf8(text).map_err(|_| DecodeError::NotUtf8 {
        field: "error message",
    })?;
    Ok(Packet::Error {
        code: ErrorCode::from_u16(code),
        message,
    })
}

fn take_string<'a>(
    bytes: &'a [u8],
    field: &'static str,
) -> Result<(&'a str, &'a [u8]), DecodeError> {
    let end = bytes
        .iter()
        .position(|byte| *byte == 0)
        .ok_or(DecodeError::Unterminated { field })?;
    let (text, rest) = bytes.split_at(end);
    let text = std::str::from_utf8(text).map_err(|_| DecodeError::NotUtf8 { field })?;
    Ok((text, rest.get(1..).unwrap_or_default()))
}

fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.push(0);
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Netascii => "netascii",
        Mode::Octet => "octet",
        Mode::Mail => "mail",
    }
}

/// Write a request (RRQ or WRQ) into `out` (cleared first). Used by tests
/// and the benchmark's client side.
pub fn encode_request(out: &mut Vec<u8>, opcode: Opcode, request: &Request<'_>) {
    assert!(matches!(opcode, Opcode::Rrq | Opcode::Wrq));
    out.clear();
    put_u16(out, opcode as u16);
    put_string(out, request.filename);
    put_string(out, mode_name(request.mode));
    for option in &request.options {
        put_string(out, option.name);
        put_string(out, option.value);
    }
}

/// Write the 4-byte DATA header; the caller appends the payload.
pub fn encode_data_header(out: &mut Vec<u8>, block: u16) {
    out.clear();
    put_u16(out, Opcode::Data as u16);
    put_u16(out, block);
}

/// Write an ACK into `out` (cleared first).
pub fn encode_ack(out: &mut Vec<u8>, block: u16) {
    out.clear();
    put_u16(out, Opcode::Ack as u16);
    put_u16(out, block);
}

/// Write an ERROR into `out` (cleared first).
pub fn encode_error(out: &mut Vec<u8>, code: ErrorCode, message: &str) {
    out.clear();
    put_u16(out, Opcode::Error as u16);
    put_u16(out, code.as_u16());
    // A NUL inside the message would end it early on the peer's side.
    out.extend(message.bytes().filter(|byte| *byte != 0));
    out.push(0);
}

/// Write an OACK with `options` (name, value) into `out` (cleared first).
pub fn encode_oack<N: AsRef<str>, V: fmt::Display>(out: &mut Vec<u8>, options: &[(N, V)]) {
    out.clear();
    put_u16(out, Opcode::Oack as u16);
    for (name, value) in options {
        put_string(out, name.as_ref());
        put_string(out, &value.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(bytes: &[u8]) -> Request<'_> {
        match decode(bytes) {
            Ok(Packet::Rrq(request)) => request,
            other => panic!("expected an RRQ, got {other:?}"),
        }
    }

    #[test]
    fn request_with_options_round_trips() {
        let request = Request {
            filename: "pxelinux.0",
            mode: Mode::Octet,
            options: vec![
                RawOption {
                    name: "blksize",
                    value: "1468",
                },
                RawOption {
                    name: "tsize",
                    value: "0",
                },
            ],
        };
        let mut out = Vec::new();
        encode_request(&mut out, Opcode::Rrq, &request);
        assert_eq!(
            out,
            b"\x00\x01pxelinux.0\0octet\0blksize\x001468\0tsize\x000\0"
        );
        assert_eq!(rrq(&out), request);
    }

    #[test]
    fn mode_is_case_insensitive_and_checked() {
        assert_eq!(rrq(b"\x00\x01f\0OcTeT\0").mode, Mode::Octet);
        assert_eq!(rrq(b"\x00\x01f\0NETASCII\0").mode, Mode::Netascii);
        assert!(matches!(
            decode(b"\x00\x01f\0binary\0"),
            Err(DecodeError::UnknownMode(mode)) if mode == "binary"
        ));
    }

    #[test]
    fn trailing_nul_padding_is_accepted() {
        let request = rrq(b"\x00\x01f\0octet\0tsize\x000\0\0\0\0");
        assert_eq!(request.options.len(), 1);
    }

    #[test]
    fn malformed_requests_are_errors() {
        let cases: &[(&[u8], DecodeError)] = &[
            (
                b"",
                DecodeError::Truncated {
                    what: "opcode",
                    len: 0,
                },
            ),
            (
                b"\x00",
                DecodeError::Truncated {
                    what: "opcode",
                    len: 1,
                },
            ),
            (b"\x00\x01", DecodeError::Unterminated { field: "filename" }),
            (
                b"\x00\x01\0octet\0",
                DecodeError::Empty { field: "filename" },
            ),
            (
                b"\x00\x01f\0octet",
                DecodeError::Unterminated { field: "mode" },
            ),
            (
                b"\x00\x01f\0octet\0blksize\0",
                DecodeError::OptionWithoutValue {
                    name: "blksize".into(),
                },
            ),
            (
                b"\x00\x01\xff\0octet\0",
                DecodeError::NotUtf8 { field: "filename" },
            ),
            (b"\x00\x09", DecodeError::UnknownOpcode(9)),
            (
                b"\x00\x04\x01",
                DecodeError::Truncated {
                    what: "ACK packet",
                    len: 3,
                },
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(decode(bytes).as_ref(), Err(expected), "{bytes:?}");
        }
    }

    #[test]
    fn requests_over_512_bytes_are_refused() {
        let mut bytes = b"\x00\x01".to_vec();
        bytes.extend(std::iter::repeat_n(b'a', 600));
        bytes.extend_from_slice(b"\0octet\0");
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::TooLong {
                what: "request",
                ..
            })
        ));
    }

    #[test]
    fn option_count_is_bounded() {
        let mut bytes = b"\x00\x01f\0octet\0".to_vec();
        for index in 0..=OPTIONS_MAX {
            bytes.extend_from_slice(format!("o{index}\0v\0").as_bytes());
        }
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::TooManyOptions { max: OPTIONS_MAX })
        );
    }

    #[test]
    fn data_ack_error_oack_round_trip() {
        let mut out = Vec::new();
        encode_data_header(&mut out, 0xfffe);
        out.extend_from_slice(b"payload");
        assert_eq!(
            decode(&out),
            Ok(Packet::Data {
                block: 0xfffe,
                data: b"payload"
            })
        );
        encode_ack(&mut out, 7);
        assert_eq!(decode(&out), Ok(Packet::Ack { block: 7 }));
        encode_error(&mut out, ErrorCode::AccessViolation, "read-only\0server");
        assert_eq!(
            decode(&out),
            Ok(Packet::Error {
                code: ErrorCode::AccessViolation,
                message: "read-onlyserver"
            })
        );
        encode_oack(&mut out, &[("blksize", 1468), ("tsize", 99)]);
        assert_eq!(out, b"\x00\x06blksize\x001468\0tsize\x0099\0");
        assert!(matches!(decode(&out), Ok(Packet::Oack { options }) if options.len() == 2));
    }

    #[test]
    fn error_without_terminator_is_tolerated() {
        assert_eq!(
            decode(b"\x00\x05\x00\x08no tsize"),
            Ok(Packet::Error {
                code: ErrorCode::OptionRefused,
                message: "no tsize"
            })
        );
    }

    #[test]
    fn oversized_datagram_is_refused() {
        let bytes = vec![0u8; PACKET_LEN_MAX + 1];
        assert!(matches!(decode(&bytes), Err(DecodeError::TooLong { .. })));
    }
}
