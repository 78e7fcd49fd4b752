//! The frame envelope shared by peer and native-client traffic on the node's port.
//!
//! Pure byte layout, used by the connection tasks on every executor. A frame is a 16-byte
//! header followed by its body; 16 keeps the body 8-byte aligned for rkyv (platform notes):
//! ```text
//! [magic "RKVF" u32][version u8][kind u8][reserved u16 = 0][body length u32][CRC32C of body u32]
//! ```
//! The header is checked before the body is read, so an oversized length is refused before
//! anything is allocated for it.

/// The first four bytes of every frame (also how the port tells frames from HTTP).
pub const MAGIC: [u8; 4] = *b"RKVF";
pub const HEADER_BYTES: usize = 16;
const VERSION: u8 = 1;

/// What a frame's body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Peer handshake: cluster id, node id, token.
    Handshake = 1,
    /// A Raft message between peers (rkyv `WireMessage`).
    Raft = 2,
    /// Client traffic: a native client's request or reply, and on peer connections the
    /// peers' own client-level frames (forwarded calls and their answers, snapshot chunks
    /// and acknowledgements, removal notices: `ClientFrame` in the server's `net::wire`).
    Client = 3,
}

impl FrameKind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Handshake),
            2 => Some(Self::Raft),
            3 => Some(Self::Client),
            _ => None,
        }
    }
}

/// A decoded, checked header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    pub body_bytes: u32,
    pub crc: u32,
}

/// Why a frame was refused (counted by reason in metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    BadMagic,
    BadVersion(u8),
    BadKind(u8),
    Reserved,
    TooLarge {
        body_bytes: u32,
        frame_bytes_max: usize,
    },
    Checksum,
    Body(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::BadMagic => write!(f, "not a ringkv frame (bad magic)"),
            FrameError::BadVersion(v) => write!(f, "frame version {v} is not supported"),
            FrameError::BadKind(k) => write!(f, "frame kind {k} is unknown"),
            FrameError::Reserved => write!(f, "reserved header bits are set"),
            FrameError::TooLarge {
                body_bytes,
                frame_bytes_max,
            } => write!(
                f,
                "frame of {body_bytes} bytes is larger than frame_bytes_max ({frame_bytes_max})"
            ),
            FrameError::Checksum => write!(f, "frame body checksum mismatch"),
            FrameError::Body(m) => write!(f, "frame body does not validate: {m}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl FrameHeader {
    /// A header for `body`.
    pub fn for_body(kind: FrameKind, body: &[u8]) -> Self {
        Self {
            kind,
            body_bytes: u32::try_from(body.len()).expect("body under 4 GiB"),
            crc: crc32c::crc32c(body),
        }
    }

    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut h = [0u8; HEADER_BYTES];
        h[0..4].copy_from_slice(&MAGIC);
        h[4] = VERSION;
        h[5] = self.kind as u8;
        h[8..12].copy_from_slice(&self.body_bytes.to_le_bytes());
        h[12..16].copy_from_slice(&self.crc.to_le_bytes());
        h
    }

    /// Checks a received header; refuses bodies over `frame_bytes_max` before any
    /// allocation.
    pub fn decode(h: &[u8; HEADER_BYTES], frame_bytes_max: usize) -> Result<Self, FrameError> {
        if h[0..4] != MAGIC {
            return Err(FrameError::BadMagic);
        }
        if h[4] != VERSION {
            return Err(FrameError::BadVersion(h[4]));
        }
        let kind = FrameKind::from_u8(h[5]).ok_or(FrameError::BadKind(h[5]))?;
        if h[6] != 0 || h[7] != 0 {
            return Err(FrameError::Reserved);
        }
        let body_bytes = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
        if body_bytes as usize + HEADER_BYTES > frame_bytes_max {
            return Err(FrameError::TooLarge {
                body_bytes,
                frame_bytes_max,
            });
        }
        Ok(Self {
            kind,
            body_bytes,
            crc: u32::from_le_bytes(h[12..16].try_into().expect("4 bytes")),
        })
    }

    /// Verifies the body read for this header.
    pub fn check_body(&self, body: &[u8]) -> Result<(), FrameError> {
        if body.len() != self.body_bytes as usize || crc32c::crc32c(body) != self.crc {
            return Err(FrameError::Checksum);
        }
        Ok(())
    }
}
