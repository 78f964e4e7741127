//! The FortiClient ↔ EMS telemetry framing (TCP 8013 inside TLS).
//!
//! The single definition of the wire format, shared by `sim-ems` (server) and `sim-endpoint`
//! (FortiClient). It depends on `std` and `tokio` only (base64 is done here, see [`b64`]).
//!
//! A frame keeps the header lines public scanner modules show for the real protocol
//! (faz-ems.md §5.5):
//!
//! ```text
//! MSG_HEADER: FCTUID=52C66FE08F724FE0B116DAD5062C96CD\r\n
//! IP=10.115.2.52\r\n
//! MAC=02-50-56-11-22-33\r\n
//! FCT_ONNET=1\r\n
//! VDOM=default\r\n
//! EC_QUARANTINED=0\r\n
//! SIZE=<body length in bytes>\r\n
//! \r\n
//! X-FCCK-REGISTER: SYSINFO||<base64 of KEY=value lines>\r\n
//! X-FCCK-REGISTER-END\r\n
//! \r\n
//! ```
//!
//! The body is one block `X-FCCK-<VERB>: <ARG>[||<base64 payload>]` closed by
//! `X-FCCK-<VERB>-END`, then an empty line; the payload is `KEY=value` lines. Verbs used by the
//! twin: `REGISTER` (arg `SYSINFO`), `KA` (keep-alive, arg `KA`), `PROBE` (arg
//! `PROBE_FEATURE_BITMAP0|1|`) from FortiClient; `REPLY` (arg `OK` or `ERROR`) from EMS, whose
//! header starts `MSG_HEADER: FCTEMS=<serial>` and carries `KA_INTERVAL=<seconds>`.
//! [P] the reply framing and every payload key not listed in faz-ems.md §5.5 are proposals.
//!
//! The parser is incremental ([`parse_frame`] returns `Ok(None)` until a whole frame is
//! buffered), bounded ([`MAX_HEADER`], [`MAX_BODY`]) and never panics (proptest below).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The keep-alive interval EMS gives with `--timing fast` (lab time; 60 s otherwise). Actions
/// do not wait for it: EMS pushes them on the persistent connection (sim-ems `telemetry`), and
/// FortiClient reports a changed state (quarantined, released, an access code) at once. It
/// bounds how soon EMS sees an endpoint gone (three periods) and is most of an idle lab's
/// work (it was 200 ms before pushes: 13.5 % of a core for 30 idle labs).
pub const FAST_KA_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Largest header block accepted (bytes up to and including the blank line).
pub const MAX_HEADER: usize = 8 * 1024;
/// Largest body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// Why a frame could not be parsed. The message is meant for the peer (it goes back in an
/// `ERROR` reply) and for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("header block larger than {MAX_HEADER} bytes")]
    HeaderTooLarge,
    #[error("first line must be `MSG_HEADER: KEY=value`")]
    NoMsgHeader,
    #[error("header line {0} is not KEY=value")]
    BadHeaderLine(usize),
    #[error("header is not UTF-8")]
    NotUtf8,
    #[error("missing SIZE= header")]
    NoSize,
    #[error("SIZE={0} is not a byte count up to {MAX_BODY}")]
    BadSize(String),
    #[error("body must start with `X-FCCK-<VERB>: <ARG>`")]
    BadBlockStart,
    #[error("body block X-FCCK-{0} is not closed by X-FCCK-{0}-END")]
    BadBlockEnd(String),
    #[error("payload is not valid base64")]
    BadBase64,
    #[error("payload line {0} is not KEY=value")]
    BadPayloadLine(usize),
}

/// One telemetry frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frame {
    /// Header fields in order; the first is the one on the `MSG_HEADER:` line. `SIZE` is not
    /// kept here (it is computed when encoding).
    pub header: Vec<(String, String)>,
    /// `REGISTER`, `KA`, `PROBE`, `REPLY`, ...
    pub verb: String,
    /// The text between `X-FCCK-<VERB>: ` and `||` (or the end of the line).
    pub arg: String,
    /// The decoded `KEY=value` payload lines (empty when the block has no `||`).
    pub data: Vec<(String, String)>,
    /// Whether the block had a `||` payload part (even an empty one).
    pub has_payload: bool,
}

fn lookup<'a>(list: &'a [(String, String)], key: &str) -> Option<&'a str> {
    list.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

impl Frame {
    /// A frame with `verb`/`arg` whose `MSG_HEADER` line is `first_key=first_value`.
    pub fn new(first_key: &str, first_value: &str, verb: &str, arg: &str) -> Self {
        Frame {
            header: vec![(first_key.to_string(), first_value.to_string())],
            verb: verb.to_string(),
            arg: arg.to_string(),
            data: Vec::new(),
            has_payload: true,
        }
    }

    /// Appends a header field.
    pub fn head(mut self, key: &str, value: impl ToString) -> Self {
        self.header.push((key.to_string(), value.to_string()));
        self
    }

    /// Appends a payload field.
    pub fn put(&mut self, key: &str, value: impl ToString) -> &mut Self {
        self.data.push((key.to_string(), value.to_string()));
        self.has_payload = true;
        self
    }

    /// A header value (case-insensitive key).
    pub fn header_value(&self, key: &str) -> Option<&str> {
        lookup(&self.header, key)
    }

    /// A payload value (case-insensitive key).
    pub fn value(&self, key: &str) -> Option<&str> {
        lookup(&self.data, key)
    }

    /// Renders the frame; header and payload values are sanitised (CR/LF removed) so the
    /// output always parses back.
    pub fn encode(&self) -> Vec<u8> {
        let clean = |s: &str| s.replace(['\r', '\n'], " ");
        let clean_key = |s: &str| {
            let k: String = s
                .chars()
                .filter(|c| !matches!(c, '\r' | '\n' | '=' | ':'))
                .collect();
            if k.is_empty() {
                "X".to_string()
            } else {
                k
            }
        };
        let mut body = String::new();
        let verb = clean_key(&self.verb).replace(' ', "_");
        body.push_str("X-FCCK-");
        body.push_str(&verb);
        body.push_str(": ");
        let mut arg = clean(&self.arg);
        while arg.contains("||") {
            arg = arg.replace("||", "|");
        }
        body.push_str(&arg);
        if self.has_payload || !self.data.is_empty() {
            let mut payload = String::new();
            for (k, v) in &self.data {
                payload.push_str(&clean_key(k));
                payload.push('=');
                payload.push_str(&clean(v));
                payload.push('\n');
            }
            body.push_str("||");
            body.push_str(&b64::encode(payload.as_bytes()));
        }
        body.push_str("\r\nX-FCCK-");
        body.push_str(&verb);
        body.push_str("-END\r\n\r\n");

        let mut out = String::new();
        for (i, (k, v)) in self.header.iter().enumerate() {
            if k.eq_ignore_ascii_case("SIZE") {
                continue;
            }
            if i == 0 {
                out.push_str("MSG_HEADER: ");
            }
            out.push_str(&clean_key(k));
            out.push('=');
            out.push_str(&clean(v));
            out.push_str("\r\n");
        }
        if self.header.is_empty() {
            out.push_str("MSG_HEADER: FCTUID=\r\n");
        }
        out.push_str(&format!("SIZE={}\r\n\r\n", body.len()));
        out.push_str(&body);
        out.into_bytes()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses one frame from the start of `buf`: `Ok(None)` when more bytes are needed,
/// `Ok(Some((frame, consumed)))` when a whole frame is there.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, ProtoError> {
    // The header block ends at the first empty line (CRLF CRLF, or LF LF).
    let (head_end, sep_len) = match (find(buf, b"\r\n\r\n"), find(buf, b"\n\n")) {
        (Some(a), Some(b)) if b < a => (b, 2),
        (Some(a), _) => (a, 4),
        (None, Some(b)) => (b, 2),
        (None, None) => {
            if buf.len() > MAX_HEADER {
                return Err(ProtoError::HeaderTooLarge);
            }
            return Ok(None);
        }
    };
    if head_end + sep_len > MAX_HEADER {
        return Err(ProtoError::HeaderTooLarge);
    }
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| ProtoError::NotUtf8)?;
    let mut header = Vec::new();
    let mut size: Option<usize> = None;
    for (i, raw) in head.split('\n').enumerate() {
        let line = raw.trim_end_matches('\r');
        let line = if i == 0 {
            line.strip_prefix("MSG_HEADER:")
                .ok_or(ProtoError::NoMsgHeader)?
                .trim_start()
        } else {
            line
        };
        let (k, v) = line.split_once('=').ok_or(if i == 0 {
            ProtoError::NoMsgHeader
        } else {
            ProtoError::BadHeaderLine(i + 1)
        })?;
        let k = k.trim();
        if k.is_empty() || k.contains(' ') {
            return Err(if i == 0 {
                ProtoError::NoMsgHeader
            } else {
                ProtoError::BadHeaderLine(i + 1)
            });
        }
        if k.eq_ignore_ascii_case("SIZE") {
            let n: usize = v
                .trim()
                .parse()
                .map_err(|_| ProtoError::BadSize(v.to_string()))?;
            if n > MAX_BODY {
                return Err(ProtoError::BadSize(v.to_string()));
            }
            size = Some(n);
        } else {
            header.push((k.to_string(), v.trim().to_string()));
        }
    }
    let size = size.ok_or(ProtoError::NoSize)?;
    let body_start = head_end + sep_len;
    let total = body_start + size;
    if buf.len() < total {
        return Ok(None);
    }
    let body = std::str::from_utf8(&buf[body_start..total]).map_err(|_| ProtoError::NotUtf8)?;
    let (verb, arg, data, has_payload) = parse_body(body)?;
    Ok(Some((
        Frame {
            header,
            verb,
            arg,
            data,
            has_payload,
        },
        total,
    )))
}

fn parse_body(body: &str) -> Result<(String, String, Vec<(String, String)>, bool), ProtoError> {
    let mut lines = body.split('\n').map(|l| l.trim_end_matches('\r'));
    let first = lines.next().unwrap_or("");
    let rest = first
        .strip_prefix("X-FCCK-")
        .ok_or(ProtoError::BadBlockStart)?;
    let (verb, arg_part) = rest.split_once(':').ok_or(ProtoError::BadBlockStart)?;
    let verb = verb.trim();
    if verb.is_empty() || verb.ends_with("-END") {
        return Err(ProtoError::BadBlockStart);
    }
    let end_line = format!("X-FCCK-{verb}-END");
    let mut closed = false;
    for line in lines {
        if line == end_line {
            closed = true;
            break;
        }
        if !line.is_empty() {
            return Err(ProtoError::BadBlockEnd(verb.to_string()));
        }
    }
    if !closed {
        return Err(ProtoError::BadBlockEnd(verb.to_string()));
    }
    let arg_part = arg_part.trim_start();
    // base64 never contains '|', so the payload starts after the last "||".
    let (arg, payload) = match arg_part.rsplit_once("||") {
        Some((a, p)) => (a, Some(p)),
        None => (arg_part, None),
    };
    let mut data = Vec::new();
    if let Some(p) = payload {
        let bytes = b64::decode(p.trim()).ok_or(ProtoError::BadBase64)?;
        let text = String::from_utf8(bytes).map_err(|_| ProtoError::NotUtf8)?;
        for (i, line) in text.split('\n').enumerate() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or(ProtoError::BadPayloadLine(i + 1))?;
            if k.is_empty() {
                return Err(ProtoError::BadPayloadLine(i + 1));
            }
            data.push((k.to_string(), v.to_string()));
        }
    }
    Ok((verb.to_string(), arg.to_string(), data, payload.is_some()))
}

/// Errors of [`read_frame`].
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame, keeping bytes of a following frame in `buf`.
///
/// Reads go straight into `buf` (no buffer inside the future), and an emptied `buf` gives its
/// memory back: a connection idle between keep-alives holds no read buffer (10,000 kept
/// connections would otherwise hold 10,000 of them).
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Frame, ReadError> {
    loop {
        if !buf.is_empty() {
            if let Some((frame, used)) = parse_frame(buf)? {
                buf.drain(..used);
                if buf.is_empty() {
                    *buf = Vec::new();
                }
                return Ok(frame);
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let n = r.read_buf(buf).await?;
        if n == 0 {
            return Err(if buf.is_empty() {
                ReadError::Closed
            } else {
                ReadError::Truncated
            });
        }
    }
}

/// Writes one frame and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame) -> std::io::Result<()> {
    w.write_all(&frame.encode()).await?;
    w.flush().await
}

/// The MAC in the dash form the telemetry header uses (`00-50-56-11-22-33`).
pub fn mac_dash(mac: &str) -> String {
    mac.replace(':', "-").to_ascii_uppercase()
}

/// The MAC in colon lower-case form (`00:50:56:11:22:33`), from either form.
pub fn mac_colon(mac: &str) -> String {
    mac.trim().replace('-', ":").to_ascii_lowercase()
}

/// Standard base64 (RFC 4648 §4, `=` padding), strict like the `base64` crate's `STANDARD`
/// engine: canonical padding, no whitespace, unused trailing bits must be zero.
pub mod b64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    /// Encodes `data` with padding.
    pub fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let sym = |shift: u32| ALPHABET[((n >> shift) & 63) as usize] as char;
            out.push(sym(18));
            out.push(sym(12));
            out.push(if chunk.len() > 1 { sym(6) } else { '=' });
            out.push(if chunk.len() > 2 { sym(0) } else { '=' });
        }
        out
    }

    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }

    /// Decodes canonical padded base64; `None` for anything else.
    pub fn decode(text: &str) -> Option<Vec<u8>> {
        let bytes = text.as_bytes();
        if bytes.len() % 4 != 0 {
            return None;
        }
        let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
        let quads = bytes.len() / 4;
        for (i, q) in bytes.chunks(4).enumerate() {
            let last = i + 1 == quads;
            let pad = match (q[2], q[3]) {
                (b'=', b'=') if last => 2,
                (_, b'=') if last => 1,
                _ => 0,
            };
            let mut n = 0u32;
            for (j, &c) in q.iter().enumerate() {
                let v = if j >= 4 - pad { 0 } else { value(c)? };
                n = (n << 6) | v;
            }
            out.push((n >> 16) as u8);
            match pad {
                0 => {
                    out.push((n >> 8) as u8);
                    out.push(n as u8);
                }
                1 => {
                    if n & 0xff != 0 {
                        return None;
                    }
                    out.push((n >> 8) as u8);
                }
                _ => {
                    if n & 0xffff != 0 {
                        return None;
                    }
                }
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Frame {
        let mut f = Frame::new(
            "FCTUID",
            "52C66FE08F724FE0B116DAD5062C96CD",
            "REGISTER",
            "SYSINFO",
        )
        .head("IP", "10.115.2.52")
        .head("MAC", "02-50-56-11-22-33")
        .head("FCT_ONNET", 1)
        .head("VDOM", "default")
        .head("EC_QUARANTINED", 0);
        f.put("HOSTNAME", "PC-52")
            .put("USER", "alice")
            .put("OSVER", "Microsoft Windows 10, 64-bit");
        f
    }

    #[test]
    fn round_trip_and_real_header_lines() {
        let f = sample();
        let bytes = f.encode();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with(
            "MSG_HEADER: FCTUID=52C66FE08F724FE0B116DAD5062C96CD\r\nIP=10.115.2.52\r\n"
        ));
        assert!(text.contains("\r\nEC_QUARANTINED=0\r\nSIZE="));
        assert!(text.contains("\r\n\r\nX-FCCK-REGISTER: SYSINFO||"));
        assert!(text.ends_with("X-FCCK-REGISTER-END\r\n\r\n"));
        let (g, used) = parse_frame(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(g, f);
        assert_eq!(g.header_value("ec_quarantined"), Some("0"));
        assert_eq!(g.value("USER"), Some("alice"));
    }

    #[test]
    fn incremental_and_pipelined() {
        let a = sample().encode();
        let mut b = Frame::new("FCTUID", "X", "KA", "KA");
        b.put("QUARANTINE_ID", 3);
        let b = b.encode();
        for cut in 0..a.len() {
            assert_eq!(parse_frame(&a[..cut]).unwrap(), None, "cut at {cut}");
        }
        let mut both = a.clone();
        both.extend_from_slice(&b);
        let (_, used) = parse_frame(&both).unwrap().unwrap();
        let (g, _) = parse_frame(&both[used..]).unwrap().unwrap();
        assert_eq!(g.verb, "KA");
        assert_eq!(g.value("QUARANTINE_ID"), Some("3"));
    }

    #[test]
    fn probe_without_payload() {
        let raw = "MSG_HEADER: FCTUID=ABC\r\nIP=1.2.3.4\r\nSIZE=56\r\n\r\nX-FCCK-PROBE: PROBE_FEATURE_BITMAP0|1|\r\nX-FCCK-PROBE-END\r\n\r\n";
        let (f, _) = parse_frame(raw.as_bytes()).unwrap().unwrap();
        assert_eq!(f.verb, "PROBE");
        assert_eq!(f.arg, "PROBE_FEATURE_BITMAP0|1|");
        assert!(!f.has_payload);
    }

    #[test]
    fn clear_errors() {
        assert_eq!(
            parse_frame(b"GET / HTTP/1.1\r\n\r\n"),
            Err(ProtoError::NoMsgHeader)
        );
        assert_eq!(
            parse_frame(b"MSG_HEADER: A=1\r\n\r\n"),
            Err(ProtoError::NoSize)
        );
        assert_eq!(
            parse_frame(b"MSG_HEADER: A=1\r\nSIZE=zz\r\n\r\n"),
            Err(ProtoError::BadSize("zz".into()))
        );
        assert_eq!(
            parse_frame(b"MSG_HEADER: A=1\r\nnope\r\nSIZE=0\r\n\r\n"),
            Err(ProtoError::BadHeaderLine(2))
        );
        assert_eq!(
            parse_frame(b"MSG_HEADER: A=1\r\nSIZE=4\r\n\r\nabcd"),
            Err(ProtoError::BadBlockStart)
        );
        let body = "X-FCCK-KA: KA||!!!\r\nX-FCCK-KA-END\r\n\r\n";
        let raw = format!("MSG_HEADER: A=1\r\nSIZE={}\r\n\r\n{body}", body.len());
        assert_eq!(parse_frame(raw.as_bytes()), Err(ProtoError::BadBase64));
        let body = "X-FCCK-KA: KA\r\n\r\n";
        let raw = format!("MSG_HEADER: A=1\r\nSIZE={}\r\n\r\n{body}", body.len());
        assert_eq!(
            parse_frame(raw.as_bytes()),
            Err(ProtoError::BadBlockEnd("KA".into()))
        );
        assert_eq!(
            parse_frame(&vec![b'a'; MAX_HEADER + 1]),
            Err(ProtoError::HeaderTooLarge)
        );
    }

    #[test]
    fn values_with_newlines_are_sanitised() {
        let mut f = Frame::new("FCTUID", "A\r\nB", "KA", "KA");
        f.put("MSG", "line1\nline2");
        let (g, _) = parse_frame(&f.encode()).unwrap().unwrap();
        assert_eq!(g.header_value("FCTUID"), Some("A  B"));
        assert_eq!(g.value("MSG"), Some("line1 line2"));
    }

    #[test]
    fn mac_forms() {
        assert_eq!(mac_dash("02:50:56:aa:bb:cc"), "02-50-56-AA-BB-CC");
        assert_eq!(mac_colon("02-50-56-AA-BB-CC"), "02:50:56:aa:bb:cc");
    }

    #[test]
    fn base64_rfc4648_vectors_and_strictness() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, coded) in vectors {
            assert_eq!(b64::encode(plain.as_bytes()), coded);
            assert_eq!(b64::decode(coded).unwrap(), plain.as_bytes());
        }
        assert_eq!(b64::decode("+/+/").unwrap(), vec![0xfb, 0xff, 0xbf]);
        for bad in [
            "Zg", "Zg=", "Zh==", "Zm9=", "Z===", "Zg==Zg==", "Zm 9", "!!!!", "=Zg=",
        ] {
            assert_eq!(b64::decode(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_frame(&data);
            let mut framed = format!("MSG_HEADER: FCTUID=X\r\nSIZE={}\r\n\r\n", data.len()).into_bytes();
            framed.extend_from_slice(&data);
            let _ = parse_frame(&framed);
            let mut block = b"MSG_HEADER: FCTUID=X\r\nSIZE=".to_vec();
            block.extend_from_slice(&data);
            let _ = parse_frame(&block);
        }

        #[test]
        fn text_mutations_never_panic(s in "(MSG_HEADER: |SIZE=|X-FCCK-|KA|\\|\\||-END|\r\n|=|[A-Za-z0-9+/]{0,8}|[0-9]{1,3}){0,40}") {
            let _ = parse_frame(s.as_bytes());
        }

        #[test]
        fn encode_parse_round_trip(
            key in "[A-Z_]{1,12}", value in "[ -~]{0,40}", verb in "[A-Z]{1,10}", arg in "[A-Z0-9_|]{0,20}"
        ) {
            let mut f = Frame::new("FCTUID", "ABC", &verb, &arg);
            f.put(&key, &value);
            let bytes = f.encode();
            let (g, used) = parse_frame(&bytes).unwrap().unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(g.value(&key), Some(value.as_str()));
            prop_assert_eq!(g.verb, verb);
        }
        #[test]
        fn base64_round_trip(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let text = b64::encode(&data);
            prop_assert_eq!(b64::decode(&text), Some(data));
        }

        #[test]
        fn base64_decode_never_panics(s in "[A-Za-z0-9+/=!]{0,40}") {
            let _ = b64::decode(&s);
        }
    }
}
