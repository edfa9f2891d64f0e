//! DHCPv4 bytes <-> the request and reply values the server works on.
//!
//! Decoding is strict and never panics: the fixed BOOTP header goes through
//! dhcproto, but the options area is walked here, because dhcproto's option
//! decoder silently stops at the first malformed option (a truncated packet
//! would look valid), asserts on some lengths in debug builds, and keeps
//! options in a `HashMap`, which would make the bytes we echo (option 82)
//! and the order we send options in differ from run to run.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use dhcproto::v4::{
    DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode, UnknownOption,
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

/// BOOTP fixed header (236 bytes) plus the magic cookie.
pub const HEADER_BYTES: usize = 240;
/// RFC 2131 §2: a client must accept 576-byte IP datagrams; BOOTP relays and
/// old clients expect at least 300 bytes of BOOTP message, so replies are
/// padded up to this.
pub const REPLY_BYTES_MIN: usize = 300;
/// RFC 2131 §2 (576-byte datagram minus IP and UDP headers): the largest reply
/// we send unless the client announced more with option 57.
pub const REPLY_BYTES_DEFAULT_MAX: usize = 548;
/// Longest client identifier we key leases by (option 61 is one TLV).
pub const CLIENT_KEY_BYTES_MAX: usize = 255;

const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
const OPTION_PAD: u8 = 0;
const OPTION_END: u8 = 255;

/// Why a datagram was dropped before any protocol logic saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("datagram of {len} bytes is shorter than the {HEADER_BYTES}-byte header")]
    Truncated { len: usize },
    #[error("datagram of {len} bytes exceeds the {max} bytes we accept")]
    TooLong { len: usize, max: usize },
    #[error("op {op} is not BOOTREQUEST")]
    NotRequest { op: u8 },
    #[error("hlen {hlen} exceeds the 16-byte chaddr field")]
    BadHardwareLength { hlen: u8 },
    #[error("magic cookie {found:?} is not 99.130.83.99")]
    BadMagicCookie { found: [u8; 4] },
    #[error("option {code} at offset {offset} runs past the end of the datagram")]
    OptionTruncated { code: u8, offset: usize },
    #[error("no DHCP message type option (53)")]
    NoMessageType,
    #[error("option {code} has length {len}, expected {expected}")]
    BadOptionLength {
        code: u8,
        len: usize,
        expected: usize,
    },
    #[error("message type {value} is not one a server receives")]
    BadMessageType { value: u8 },
    #[error("header rejected by the BOOTP decoder")]
    Header,
}

/// Why a reply could not be encoded (our bug or an oversized config value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("reply of {len} bytes exceeds the client's limit of {max} bytes")]
    TooLong { len: usize, max: usize },
    #[error("option encoder failed")]
    Encoder,
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// `aa-bb-cc-dd-ee-ff`: the form used in file names (pxelinux, iPXE
    /// scripts), where colons are awkward.
    pub fn hyphenated(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|b| format!("{b:02x}")).collect();
        parts.join("-")
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What identifies a client for leases (RFC 2131 §4.2): option 61 when the
/// client sends it, otherwise htype + chaddr.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientKey(pub Vec<u8>);

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// A decoded BOOTREQUEST with the options the server uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub message_type: MessageType,
    pub xid: u32,
    pub secs: u16,
    pub flags: Flags,
    pub htype: HType,
    pub hops: u8,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// The `hlen` bytes of chaddr.
    pub chaddr: Vec<u8>,
    /// Set when htype is Ethernet and hlen is 6.
    pub mac: Option<Mac>,
    pub client_key: ClientKey,
    /// Every option, by code, multiple instances concatenated (RFC 3396).
    pub options: BTreeMap<u8, Vec<u8>>,
}

impl Request {
    /// Option 50.
    pub fn requested_ip(&self) -> Option<Ipv4Addr> {
        self.ipv4_option(50)
    }

    /// Option 54.
    pub fn server_id(&self) -> Option<Ipv4Addr> {
        self.ipv4_option(54)
    }

    /// Option 93 (RFC 4578 §2.1): the first architecture listed.
    pub fn client_arch(&self) -> Option<u16> {
        match self.options.get(&93)?.as_slice() {
            [hi, lo, ..] => Some(u16::from_be_bytes([*hi, *lo])),
            _ => None,
        }
    }

    /// Option 60.
    pub fn vendor_class(&self) -> Option<&[u8]> {
        self.options.get(&60).map(Vec::as_slice)
    }

    /// Option 82, raw, to echo unchanged (RFC 3046 §2.2).
    pub fn relay_agent_info(&self) -> Option<&[u8]> {
        self.options.get(&82).map(Vec::as_slice)
    }

    /// Option 57, or the RFC 2131 default; never less than 576 - 28.
    pub fn reply_bytes_max(&self) -> usize {
        let announced = match self.options.get(&57).map(Vec::as_slice) {
            Some([hi, lo]) => usize::from(u16::from_be_bytes([*hi, *lo])).saturating_sub(28),
            _ => 0,
        };
        announced.max(REPLY_BYTES_DEFAULT_MAX)
    }

    /// Option 55, or empty.
    pub fn parameter_request_list(&self) -> &[u8] {
        self.options.get(&55).map(Vec::as_slice).unwrap_or(&[])
    }

    fn ipv4_option(&self, code: u8) -> Option<Ipv4Addr> {
        match self.options.get(&code)?.as_slice() {
            [a, b, c, d] => Some(Ipv4Addr::new(*a, *b, *c, *d)),
            _ => None,
        }
    }
}

/// Decode one datagram received on a server port.
pub fn decode_request(bytes: &[u8], datagram_bytes_max: usize) -> Result<Request, DecodeError> {
    if bytes.len() > datagram_bytes_max {
        return Err(DecodeError::TooLong {
            len: bytes.len(),
            max: datagram_bytes_max,
        });
    }
    let header = bytes
        .get(..HEADER_BYTES)
        .ok_or(DecodeError::Truncated { len: bytes.len() })?;
    let op = header[0];
    if op != 1 {
        return Err(DecodeError::NotRequest { op });
    }
    let hlen = header[2];
    if hlen > 16 {
        return Err(DecodeError::BadHardwareLength { hlen });
    }
    let found = [header[236], header[237], header[238], header[239]];
    if found != MAGIC_COOKIE {
        return Err(DecodeError::BadMagicCookie { found });
    }
    // The header slice holds no options, so dhcproto only parses fixed fields.
    let message = Message::decode(&mut Decoder::new(header)).map_err(|_| DecodeError::Header)?;
    let options = walk_options(bytes)?;
    let message_type = message_type_of(&options)?;
    let chaddr = message.chaddr().to_vec();
    let mac = match (message.htype(), chaddr.as_slice()) {
        (HType::Eth, [a, b, c, d, e, f]) => Some(Mac([*a, *b, *c, *d, *e, *f])),
        _ => None,
    };
    let client_key = match options.get(&61) {
        Some(id) if !id.is_empty() => ClientKey(id.clone()),
        _ => {
            let mut key = vec![u8::from(message.htype())];
            key.extend_from_slice(&chaddr);
            ClientKey(key)
        }
    };
    Ok(Request {
        message_type,
        xid: message.xid(),
        secs: message.secs(),
        flags: message.flags(),
        htype: message.htype(),
        hops: message.hops(),
        ciaddr: message.ciaddr(),
        giaddr: message.giaddr(),
        chaddr,
        mac,
        client_key,
        options,
    })
}

/// Walk the TLVs after the cookie. Every option must fit in the datagram;
/// repeated codes are concatenated (RFC 3396). Bytes after END are padding.
fn walk_options(bytes: &[u8]) -> Result<BTreeMap<u8, Vec<u8>>, DecodeError> {
    let mut options: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    let mut offset = HEADER_BYTES;
    while let Some(&code) = bytes.get(offset) {
        match code {
            OPTION_PAD => offset += 1,
            OPTION_END => break,
            _ => {
                let len = usize::from(
                    *bytes
                        .get(offset + 1)
                        .ok_or(DecodeError::OptionTruncated { code, offset })?,
                );
                let value = bytes
                    .get(offset + 2..offset + 2 + len)
                    .ok_or(DecodeError::OptionTruncated { code, offset })?;
                // Total size is bounded by the datagram, itself bounded.
                options.entry(code).or_default().extend_from_slice(value);
                offset += 2 + len;
            }
        }
    }
    Ok(options)
}

fn message_type_of(options: &BTreeMap<u8, Vec<u8>>) -> Result<MessageType, DecodeError> {
    let value = match options.get(&53).map(Vec::as_slice) {
        None => return Err(DecodeError::NoMessageType),
        Some([value]) => *value,
        Some(other) => {
            return Err(DecodeError::BadOptionLength {
                code: 53,
                len: other.len(),
                expected: 1,
            })
        }
    };
    match MessageType::from(value) {
        t @ (MessageType::Discover
        | MessageType::Request
        | MessageType::Decline
        | MessageType::Release
        | MessageType::Inform) => Ok(t),
        _ => Err(DecodeError::BadMessageType { value }),
    }
}

/// The fixed fields of a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyHeader {
    pub xid: u32,
    pub flags: Flags,
    pub htype: HType,
    pub chaddr: Vec<u8>,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// BOOTP `sname` (at most 63 bytes + NUL), or empty.
    pub sname: String,
    /// BOOTP `file` (at most 127 bytes + NUL), or empty.
    pub file: String,
}

/// Encode a BOOTREPLY. `options` are written in the order given (callers put
/// 53 first and 82 last, RFC 3046 §2.1), then END, then padding up to
/// [`REPLY_BYTES_MIN`].
pub fn encode_reply(
    header: &ReplyHeader,
    options: &[(u8, Vec<u8>)],
    bytes_max: usize,
) -> Result<Vec<u8>, EncodeError> {
    let chaddr = header.chaddr.get(..16).unwrap_or(&header.chaddr);
    let mut message = Message::new_with_id(
        header.xid,
        header.ciaddr,
        header.yiaddr,
        header.siaddr,
        header.giaddr,
        chaddr,
    );
    message
        .set_opcode(Opcode::BootReply)
        .set_htype(header.htype)
        .set_flags(header.flags);
    if !header.sname.is_empty() && header.sname.len() < 64 {
        message.set_sname_str(&header.sname);
    }
    if !header.file.is_empty() && header.file.len() < 128 {
        message.set_fname_str(&header.file);
    }
    let mut buf = Vec::with_capacity(REPLY_BYTES_DEFAULT_MAX);
    let mut encoder = Encoder::new(&mut buf);
    // Options are empty here, so dhcproto writes the header and cookie only.
    message
        .encode(&mut encoder)
        .map_err(|_| EncodeError::Encoder)?;
    for (code, value) in options {
        let option = typed_option(*code, value);
        option
            .encode(&mut encoder)
            .map_err(|_| EncodeError::Encoder)?;
    }
    buf.push(OPTION_END);
    if buf.len() < REPLY_BYTES_MIN {
        buf.resize(REPLY_BYTES_MIN, OPTION_PAD);
    }
    if buf.len() > bytes_max {
        return Err(EncodeError::TooLong {
            len: buf.len(),
            max: bytes_max,
        });
    }
    Ok(buf)
}

/// Every option goes out as dhcproto's opaque variant so the value bytes are
/// exactly ours (long values are split per RFC 3396 by the encoder).
fn typed_option(code: u8, value: &[u8]) -> DhcpOption {
    DhcpOption::Unknown(UnknownOption::new(OptionCode::from(code), value.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn discover_bytes(mac: [u8; 6], extra: &[(u8, &[u8])]) -> Vec<u8> {
        let mut bytes = vec![0u8; HEADER_BYTES];
        bytes[0] = 1;
        bytes[1] = 1;
        bytes[2] = 6;
        bytes[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        bytes[28..34].copy_from_slice(&mac);
        bytes[236..240].copy_from_slice(&MAGIC_COOKIE);
        bytes.extend_from_slice(&[53, 1, 1]);
        for (code, value) in extra {
            bytes.push(*code);
            bytes.push(value.len() as u8);
            bytes.extend_from_slice(value);
        }
        bytes.push(255);
        bytes
    }

    #[test]
    fn decodes_a_discover_with_options() {
        let bytes = discover_bytes([2, 0, 0, 0, 0, 1], &[(93, &[0, 7]), (50, &[10, 0, 0, 5])]);
        let request = decode_request(&bytes, 1500).expect("valid");
        assert_eq!(request.message_type, MessageType::Discover);
        assert_eq!(request.mac, Some(Mac([2, 0, 0, 0, 0, 1])));
        assert_eq!(request.client_arch(), Some(7));
        assert_eq!(request.requested_ip(), Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(request.xid, 0x1234_5678);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = discover_bytes([2, 0, 0, 0, 0, 1], &[(60, b"PXEClient:Arch:00007")]);
        // Cutting inside option 60 must fail; the cut right before END is
        // accepted (END is optional when the datagram ends cleanly).
        for len in 0..bytes.len() - 1 {
            let result = decode_request(&bytes[..len], 1500);
            if len < HEADER_BYTES + 3 {
                assert!(result.is_err(), "len {len}");
            }
            if len > HEADER_BYTES + 3 && len < bytes.len() - 1 {
                assert!(
                    matches!(result, Err(DecodeError::OptionTruncated { code: 60, .. })),
                    "len {len}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn repeated_options_concatenate_per_rfc3396() {
        let bytes = discover_bytes([2, 0, 0, 0, 0, 1], &[(77, b"iP"), (77, b"XE")]);
        let request = decode_request(&bytes, 1500).expect("valid");
        assert_eq!(
            request.options.get(&77).map(Vec::as_slice),
            Some(&b"iPXE"[..])
        );
    }

    #[test]
    fn reply_round_trips_through_dhcproto() {
        let header = ReplyHeader {
            xid: 7,
            flags: Flags::default().set_broadcast(),
            htype: HType::Eth,
            chaddr: vec![2, 0, 0, 0, 0, 1],
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::new(10, 0, 0, 5),
            siaddr: Ipv4Addr::new(10, 0, 0, 10),
            giaddr: Ipv4Addr::UNSPECIFIED,
            sname: String::new(),
            file: "undionly.kpxe".into(),
        };
        let options = vec![(53, vec![2]), (54, vec![10, 0, 0, 10]), (67, b"x".to_vec())];
        let bytes = encode_reply(&header, &options, 548).expect("fits");
        assert_eq!(bytes.len(), REPLY_BYTES_MIN);
        let message = Message::decode(&mut Decoder::new(&bytes)).expect("decodes");
        assert_eq!(message.opcode(), Opcode::BootReply);
        assert_eq!(message.yiaddr(), Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(message.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(
            message.fname_str().and_then(Result::ok),
            Some("undionly.kpxe\0")
        );
        // Options follow the cookie in the order given.
        assert_eq!(&bytes[240..243], &[53, 1, 2]);
    }
}
