//! Log channel frames: `u32 length (big endian, of what follows) | u8 type | payload`.
//!
//! Pure encode/decode, no I/O: the [`FrameCodec`] plugs into `tokio_util::codec::FramedRead`,
//! and batches can be encoded straight from the sender's queue without copying lines twice.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::{Hello, HelloReply, Notification};

/// Largest frame accepted (type byte + payload).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Frame type bytes.
pub mod kind {
    pub const HELLO: u8 = 1;
    pub const HELLO_REPLY: u8 = 2;
    pub const BATCH: u8 = 3;
    pub const ACK: u8 = 4;
    pub const NOTIFY: u8 = 5;
    pub const NOTIFY_ACK: u8 = 6;
    pub const PING: u8 = 7;
    pub const PONG: u8 = 8;
    pub const ERROR: u8 = 9;
}

/// The `Error` frame payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

#[derive(Serialize, Deserialize)]
struct NotifyAckBody {
    id: u64,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Hello(Hello),
    HelloReply(HelloReply),
    Batch { first_seq: u64, lines: Vec<String> },
    Ack(u64),
    Notify(Notification),
    NotifyAck(u64),
    Ping,
    Pong,
    Error(ErrorBody),
}

impl Frame {
    /// A short name for diagnostics.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "Hello",
            Frame::HelloReply(_) => "HelloReply",
            Frame::Batch { .. } => "Batch",
            Frame::Ack(_) => "Ack",
            Frame::Notify(_) => "Notify",
            Frame::NotifyAck(_) => "NotifyAck",
            Frame::Ping => "Ping",
            Frame::Pong => "Pong",
            Frame::Error(_) => "Error",
        }
    }

    /// An `Error` frame.
    pub fn error(code: &str, message: impl Into<String>) -> Frame {
        Frame::Error(ErrorBody {
            code: code.to_string(),
            message: message.into(),
        })
    }
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the 16 MiB limit")]
    Oversized(u64),
    #[error("empty frame")]
    Empty,
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("malformed {kind} payload: {reason}")]
    Malformed { kind: &'static str, reason: String },
    /// A batch whose sequence numbers would pass [`super::MAX_SEQ`] (or wrap around 2^64).
    #[error("batch of {count} lines from sequence {first_seq} passes the highest sequence number {max}", max = super::MAX_SEQ)]
    SequenceOverflow { first_seq: u64, count: u64 },
    /// A log line longer than [`super::MAX_LINE`].
    #[error("log line {index} of the batch is {len} bytes, over the {max} byte limit", max = super::MAX_LINE)]
    LineTooLong { index: usize, len: usize },
    /// A `Hello` field longer than [`super::MAX_HELLO_FIELD`].
    #[error("Hello {0}")]
    FieldTooLong(String),
}

impl FrameError {
    /// The `code` of the `Error` frame answering this error.
    pub fn code(&self) -> &'static str {
        match self {
            FrameError::Oversized(_)
            | FrameError::LineTooLong { .. }
            | FrameError::FieldTooLong(_) => "oversized",
            _ => "malformed",
        }
    }
}

fn malformed(kind: &'static str, reason: impl std::fmt::Display) -> FrameError {
    FrameError::Malformed {
        kind,
        reason: reason.to_string(),
    }
}

/// Appends one frame to `out`.
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    match frame {
        Frame::Hello(h) => json_frame(kind::HELLO, h, out),
        Frame::HelloReply(r) => json_frame(kind::HELLO_REPLY, r, out),
        Frame::Batch { first_seq, lines } => {
            let mut b = BatchEncoder::new(out, *first_seq);
            for l in lines {
                b.push(l.as_bytes());
            }
            b.finish();
        }
        Frame::Ack(seq) => {
            out.put_u32(9);
            out.put_u8(kind::ACK);
            out.put_u64(*seq);
        }
        Frame::Notify(n) => json_frame(kind::NOTIFY, n, out),
        Frame::NotifyAck(id) => json_frame(kind::NOTIFY_ACK, &NotifyAckBody { id: *id }, out),
        Frame::Ping => {
            out.put_u32(1);
            out.put_u8(kind::PING);
        }
        Frame::Pong => {
            out.put_u32(1);
            out.put_u8(kind::PONG);
        }
        Frame::Error(e) => json_frame(kind::ERROR, e, out),
    }
}

/// Encodes one frame into fresh bytes.
pub fn to_bytes(frame: &Frame) -> Bytes {
    let mut out = BytesMut::new();
    encode(frame, &mut out);
    out.freeze()
}

fn json_frame<T: Serialize>(ty: u8, value: &T, out: &mut BytesMut) {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    out.reserve(5 + body.len());
    out.put_u32((body.len() + 1) as u32);
    out.put_u8(ty);
    out.put_slice(&body);
}

/// Encodes a `Batch` frame line by line, straight into the output buffer.
pub struct BatchEncoder<'a> {
    out: &'a mut BytesMut,
    start: usize,
    count: u32,
}

impl<'a> BatchEncoder<'a> {
    pub fn new(out: &'a mut BytesMut, first_seq: u64) -> Self {
        let start = out.len();
        out.put_u32(0); // length, patched in finish()
        out.put_u8(kind::BATCH);
        out.put_u64(first_seq);
        out.put_u32(0); // count, patched in finish()
        Self {
            out,
            start,
            count: 0,
        }
    }

    /// Adds one line (UTF-8 bytes).
    pub fn push(&mut self, line: &[u8]) {
        self.out.reserve(4 + line.len());
        self.out.put_u32(line.len() as u32);
        self.out.put_slice(line);
        self.count += 1;
    }

    /// Adds already length-prefixed records (`u32 len | bytes`, as the spill files hold them).
    pub fn push_records(&mut self, records: &[u8], count: u32) {
        self.out.extend_from_slice(records);
        self.count += count;
    }

    /// Bytes of the frame so far.
    pub fn len(&self) -> usize {
        self.out.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Patches the length and count fields.
    pub fn finish(self) -> u32 {
        let len = (self.out.len() - self.start - 4) as u32;
        self.out[self.start..self.start + 4].copy_from_slice(&len.to_be_bytes());
        let c = self.start + 4 + 1 + 8;
        self.out[c..c + 4].copy_from_slice(&self.count.to_be_bytes());
        self.count
    }
}

/// Decodes one frame from the start of `buf`, consuming it. `Ok(None)`: more bytes needed.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::Oversized(len as u64));
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let body = buf.split_to(len);
    parse_body(&body).map(Some)
}

/// Parses the type byte and payload of one frame.
pub fn parse_body(body: &[u8]) -> Result<Frame, FrameError> {
    let (&ty, payload) = body.split_first().ok_or(FrameError::Empty)?;
    match ty {
        kind::HELLO => {
            let h: Hello = json(payload, "Hello")?;
            h.check().map_err(FrameError::FieldTooLong)?;
            Ok(Frame::Hello(h))
        }
        kind::HELLO_REPLY => Ok(Frame::HelloReply(json(payload, "HelloReply")?)),
        kind::BATCH => parse_batch(payload),
        kind::ACK => {
            let b: [u8; 8] = payload
                .try_into()
                .map_err(|_| malformed("Ack", "want 8 bytes"))?;
            Ok(Frame::Ack(u64::from_be_bytes(b)))
        }
        kind::NOTIFY => Ok(Frame::Notify(json(payload, "Notify")?)),
        kind::NOTIFY_ACK => Ok(Frame::NotifyAck(
            json::<NotifyAckBody>(payload, "NotifyAck")?.id,
        )),
        kind::PING | kind::PONG => {
            if !payload.is_empty() {
                return Err(malformed(
                    if ty == kind::PING { "Ping" } else { "Pong" },
                    "payload",
                ));
            }
            Ok(if ty == kind::PING {
                Frame::Ping
            } else {
                Frame::Pong
            })
        }
        kind::ERROR => Ok(Frame::Error(json(payload, "Error")?)),
        other => Err(FrameError::UnknownType(other)),
    }
}

fn json<T: serde::de::DeserializeOwned>(
    payload: &[u8],
    kind: &'static str,
) -> Result<T, FrameError> {
    serde_json::from_slice(payload).map_err(|e| malformed(kind, e))
}

fn parse_batch(mut p: &[u8]) -> Result<Frame, FrameError> {
    if p.len() < 12 {
        return Err(malformed("Batch", "short header"));
    }
    let first_seq = p.get_u64();
    let count = p.get_u32() as usize;
    if first_seq == 0 {
        return Err(malformed("Batch", "sequence numbers start at 1"));
    }
    if count > 0
        && first_seq
            .checked_add(count as u64 - 1)
            .is_none_or(|last| last > super::MAX_SEQ)
    {
        return Err(FrameError::SequenceOverflow {
            first_seq,
            count: count as u64,
        });
    }
    // Every line needs at least its 4-byte length: bound the allocation by the payload.
    if count > p.len() / 4 {
        return Err(malformed("Batch", "count exceeds payload"));
    }
    let mut lines = Vec::with_capacity(count);
    for index in 0..count {
        if p.len() < 4 {
            return Err(malformed("Batch", "truncated line length"));
        }
        let n = p.get_u32() as usize;
        if n > super::MAX_LINE {
            return Err(FrameError::LineTooLong { index, len: n });
        }
        if p.len() < n {
            return Err(malformed("Batch", "truncated line"));
        }
        let line =
            std::str::from_utf8(&p[..n]).map_err(|_| malformed("Batch", "line not UTF-8"))?;
        lines.push(line.to_string());
        p.advance(n);
    }
    if !p.is_empty() {
        return Err(malformed("Batch", "trailing bytes"));
    }
    Ok(Frame::Batch { first_seq, lines })
}

/// `tokio_util` codec for reading frames.
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec;

/// What the codec reports: a protocol error, or an I/O error from the transport.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl tokio_util::codec::Decoder for FrameCodec {
    type Item = Frame;
    type Error = ReadError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ReadError> {
        decode(src).map_err(ReadError::Frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logchan::RegStatus;
    use proptest::prelude::*;

    fn hello() -> Hello {
        Hello {
            serial: "FGVM01TM00000001".into(),
            hostname: "FGT-LAB".into(),
            platform: "FortiGate-VM64".into(),
            version: "6.4.4".into(),
            device_type: "fortigate".into(),
            vdom: "root".into(),
            ip: None,
        }
    }

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::Hello(hello()),
            Frame::HelloReply(HelloReply {
                status: RegStatus::Unauthorized,
                server_serial: "FAZ-VM0000000001".into(),
                server_hostname: "FAZ-LAB".into(),
                server_version: "6.4.5".into(),
                last_acked_seq: 42,
            }),
            Frame::Batch {
                first_seq: 7,
                lines: vec!["a=1".into(), String::new(), "ü=\"x y\"".into()],
            },
            Frame::Batch {
                first_seq: 1,
                lines: vec![],
            },
            Frame::Ack(u64::MAX),
            Frame::Notify(crate::logchan::Notification::new(
                7,
                crate::logchan::Notice::IocAck(crate::logchan::IocAckNotification {
                    srcip: "10.115.2.52".into(),
                    epid: Some(1041),
                    devid: "FGVM01TM00000001".into(),
                    comment: String::new(),
                }),
            )),
            Frame::NotifyAck(7),
            Frame::Ping,
            Frame::Pong,
            Frame::error("protocol", "bad"),
        ]
    }

    #[test]
    fn every_frame_round_trips_even_byte_by_byte() {
        let mut wire = BytesMut::new();
        for f in all_frames() {
            encode(&f, &mut wire);
        }
        // Whole buffer at once.
        let mut buf = wire.clone();
        let mut got = Vec::new();
        while let Some(f) = decode(&mut buf).unwrap() {
            got.push(f);
        }
        assert_eq!(got, all_frames());
        assert!(buf.is_empty());
        // One byte at a time.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(f) = decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, all_frames());
    }

    #[test]
    fn wire_layout_matches_the_documented_protocol() {
        let b = to_bytes(&Frame::Ack(5));
        assert_eq!(&b[..], &[0, 0, 0, 9, 4, 0, 0, 0, 0, 0, 0, 0, 5]);
        let b = to_bytes(&Frame::Batch {
            first_seq: 3,
            lines: vec!["ab".into()],
        });
        assert_eq!(
            &b[..],
            &[0, 0, 0, 19, 3, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, b'a', b'b']
        );
        let b = to_bytes(&Frame::Ping);
        assert_eq!(&b[..], &[0, 0, 0, 1, 7]);
        let b = to_bytes(&Frame::NotifyAck(9));
        assert_eq!(&b[5..], br#"{"id":9}"#);
    }

    #[test]
    fn oversized_and_malformed_frames_are_errors() {
        let mut buf = BytesMut::from(&[0x01, 0x00, 0x00, 0x01][..]);
        assert_eq!(
            decode(&mut buf),
            Err(FrameError::Oversized(16 * 1024 * 1024 + 1))
        );
        let mut buf = BytesMut::from(&[0, 0, 0, 0][..]);
        assert_eq!(decode(&mut buf), Err(FrameError::Empty));
        let mut buf = BytesMut::from(&[0, 0, 0, 1, 42][..]);
        assert_eq!(decode(&mut buf), Err(FrameError::UnknownType(42)));
        let mut buf = BytesMut::from(&[0, 0, 0, 3, 1, b'{', b'x'][..]);
        assert!(matches!(
            decode(&mut buf),
            Err(FrameError::Malformed { kind: "Hello", .. })
        ));
        // A batch claiming more lines than its payload can hold.
        let mut raw = BytesMut::new();
        raw.put_u32(13);
        raw.put_u8(kind::BATCH);
        raw.put_u64(1);
        raw.put_u32(u32::MAX);
        assert!(matches!(
            decode(&mut raw),
            Err(FrameError::Malformed { kind: "Batch", .. })
        ));
        // Invalid UTF-8 line.
        let mut raw = BytesMut::new();
        raw.put_u32(1 + 8 + 4 + 4 + 1);
        raw.put_u8(kind::BATCH);
        raw.put_u64(1);
        raw.put_u32(1);
        raw.put_u32(1);
        raw.put_u8(0xff);
        assert!(matches!(
            decode(&mut raw),
            Err(FrameError::Malformed { kind: "Batch", .. })
        ));
        assert_eq!(FrameError::Oversized(1).code(), "oversized");
    }

    fn batch_bytes(first_seq: u64, lines: &[&[u8]]) -> BytesMut {
        let mut out = BytesMut::new();
        let mut b = BatchEncoder::new(&mut out, first_seq);
        for l in lines {
            b.push(l);
        }
        b.finish();
        out
    }

    #[test]
    fn a_batch_whose_sequence_would_wrap_is_refused() {
        // Starting 2 below 2^64 with 5 lines: the last number would wrap to 2.
        let mut raw = batch_bytes(u64::MAX - 1, &[b"a", b"b", b"c", b"d", b"e"]);
        assert_eq!(
            decode(&mut raw),
            Err(FrameError::SequenceOverflow {
                first_seq: u64::MAX - 1,
                count: 5
            })
        );
        // Above what the store can number (i64::MAX) is refused too, even without wrapping.
        let mut raw = batch_bytes(crate::logchan::MAX_SEQ, &[b"a", b"b"]);
        assert!(matches!(
            decode(&mut raw),
            Err(FrameError::SequenceOverflow { .. })
        ));
        assert_eq!(
            FrameError::SequenceOverflow {
                first_seq: 1,
                count: 1
            }
            .code(),
            "malformed"
        );
        // The last number allowed is fine.
        let mut raw = batch_bytes(crate::logchan::MAX_SEQ - 1, &[b"a", b"b"]);
        assert!(matches!(decode(&mut raw), Ok(Some(Frame::Batch { .. }))));
    }

    #[test]
    fn oversized_lines_and_hello_fields_are_refused_with_a_typed_error() {
        let big = vec![b'x'; crate::logchan::MAX_LINE + 1];
        let mut raw = batch_bytes(1, &[b"ok", &big]);
        let e = decode(&mut raw).unwrap_err();
        assert_eq!(
            e,
            FrameError::LineTooLong {
                index: 1,
                len: crate::logchan::MAX_LINE + 1
            }
        );
        assert_eq!(e.code(), "oversized");
        let fits = vec![b'x'; crate::logchan::MAX_LINE];
        let mut raw = batch_bytes(1, &[&fits]);
        assert!(matches!(decode(&mut raw), Ok(Some(_))));

        let mut h = hello();
        h.hostname = "h".repeat(15 * 1024 * 1024);
        let mut raw = BytesMut::new();
        encode(&Frame::Hello(h), &mut raw);
        let e = decode(&mut raw).unwrap_err();
        assert!(
            matches!(&e, FrameError::FieldTooLong(m) if m.starts_with("hostname of 15728640 bytes")),
            "{e}"
        );
        assert_eq!(e.code(), "oversized");
    }

    #[test]
    fn batch_encoder_accepts_spilled_records() {
        let mut out = BytesMut::new();
        let mut b = BatchEncoder::new(&mut out, 10);
        b.push(b"one");
        let mut rec = BytesMut::new();
        rec.put_u32(3);
        rec.put_slice(b"two");
        rec.put_u32(5);
        rec.put_slice(b"three");
        b.push_records(&rec, 2);
        assert_eq!(b.finish(), 3);
        assert_eq!(
            decode(&mut out).unwrap(),
            Some(Frame::Batch {
                first_seq: 10,
                lines: vec!["one".into(), "two".into(), "three".into()]
            })
        );
    }

    proptest! {
        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = decode(&mut buf) {}
            // Also with a plausible header in front of the noise.
            for ty in 0u8..=10 {
                let mut buf = BytesMut::new();
                buf.put_u32(data.len() as u32 + 1);
                buf.put_u8(ty);
                buf.put_slice(&data);
                let _ = decode(&mut buf);
            }
        }

        #[test]
        fn batches_round_trip(first in 1u64..u64::MAX / 2, lines in proptest::collection::vec(".{0,40}", 0..50)) {
            let f = Frame::Batch { first_seq: first, lines };
            let mut buf = BytesMut::new();
            encode(&f, &mut buf);
            prop_assert_eq!(decode(&mut buf).unwrap(), Some(f));
        }
    }
}
