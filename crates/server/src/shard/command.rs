//! The log payload of a client write: a stable, versioned binary encoding.
//!
//! Pure data. Entries stay in the WAL and in snapshots across versions, so the format is
//! explicit: `[version u8 = 1][op u8][key len u32][key][value len u32][value]` (little
//! endian; deletes carry no value). Decoding checks every length against the buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};

const VERSION: u8 = 1;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

/// A client write as it travels through the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Put { key: Bytes, value: Bytes },
    Delete { key: Bytes },
}

/// A payload that is not a command of this format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandError(pub String);

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad command payload: {}", self.0)
    }
}

impl std::error::Error for CommandError {}

impl Command {
    pub fn key(&self) -> &Bytes {
        match self {
            Command::Put { key, .. } | Command::Delete { key } => key,
        }
    }

    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        b.put_u8(VERSION);
        match self {
            Command::Put { key, value } => {
                b.put_u8(OP_PUT);
                b.put_u32_le(key.len() as u32);
                b.put_slice(key);
                b.put_u32_le(value.len() as u32);
                b.put_slice(value);
            }
            Command::Delete { key } => {
                b.put_u8(OP_DELETE);
                b.put_u32_le(key.len() as u32);
                b.put_slice(key);
            }
        }
        b.freeze()
    }

    pub fn encoded_len(&self) -> usize {
        match self {
            Command::Put { key, value } => 2 + 4 + key.len() + 4 + value.len(),
            Command::Delete { key } => 2 + 4 + key.len(),
        }
    }

    /// Decodes without copying: key and value are slices of `payload`.
    pub fn decode(payload: &Bytes) -> Result<Command, CommandError> {
        let mut b = payload.clone();
        let err = |m: &str| Err(CommandError(m.to_string()));
        if b.remaining() < 2 {
            return err("shorter than its header");
        }
        let version = b.get_u8();
        if version != VERSION {
            return Err(CommandError(format!("format version {version} is unknown")));
        }
        let op = b.get_u8();
        let take = |b: &mut Bytes, what: &str| -> Result<Bytes, CommandError> {
            if b.remaining() < 4 {
                return Err(CommandError(format!("{what} length is cut off")));
            }
            let n = b.get_u32_le() as usize;
            if b.remaining() < n {
                return Err(CommandError(format!(
                    "{what} of {n} bytes runs past the payload"
                )));
            }
            Ok(b.split_to(n))
        };
        let cmd = match op {
            OP_PUT => {
                let key = take(&mut b, "key")?;
                let value = take(&mut b, "value")?;
                Command::Put { key, value }
            }
            OP_DELETE => Command::Delete {
                key: take(&mut b, "key")?,
            },
            other => return Err(CommandError(format!("operation {other} is unknown"))),
        };
        if b.has_remaining() {
            return err("trailing bytes after the command");
        }
        Ok(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_every_truncation() {
        let cmds = [
            Command::Put {
                key: Bytes::from_static(b"k1"),
                value: Bytes::from_static(b"value one"),
            },
            Command::Put {
                key: Bytes::from_static(b""),
                value: Bytes::new(),
            },
            Command::Delete {
                key: Bytes::from_static(b"gone"),
            },
        ];
        for c in &cmds {
            let e = c.encode();
            assert_eq!(e.len(), c.encoded_len());
            assert_eq!(&Command::decode(&e).unwrap(), c);
            for cut in 0..e.len() {
                assert!(Command::decode(&e.slice(..cut)).is_err(), "cut at {cut}");
            }
            let mut longer = e.to_vec();
            longer.push(0);
            assert!(Command::decode(&Bytes::from(longer)).is_err());
        }
        let mut v2 = cmds[0].encode().to_vec();
        v2[0] = 2;
        assert_eq!(
            Command::decode(&Bytes::from(v2)).unwrap_err().0,
            "format version 2 is unknown"
        );
    }
}
