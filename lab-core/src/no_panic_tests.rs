//! No input panics the parsers every device shares: the console's key decoder and line editor,
//! FortiOS log records, PROXY headers, telemetry frames, log channel frames, lab-clock dates.
//! Inputs are random mixes of each format's structure words with [`HOSTILE_PIECES`]
//! (multi-byte characters next to every delimiter), plus raw bytes. Each bad input must come
//! back as a typed error (or `None`), never a panic. Bounded: each test runs in well under a
//! second in a debug build.

use crate::logchan::frame;
use crate::logfmt::{self, LogRecord};
use crate::ssh_console::{
    BoxFuture, Completion, ConsoleReply, ConsoleSession, KeyDecoder, LineEditor,
};
use crate::text::{printable, HOSTILE_PIECES};
use crate::{proxy, telemetry};
use bytes::BytesMut;
use proptest::prelude::*;

/// Text made of `words` and hostile pieces.
fn mixed(words: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            3 => proptest::sample::select(words).prop_map(str::to_string),
            3 => proptest::sample::select(HOSTILE_PIECES).prop_map(str::to_string),
            1 => "\\PC{0,6}",
        ],
        0..max,
    )
    .prop_map(|v| v.concat())
}

/// A console session whose completion returns what the FortiOS CLI would: the line with its
/// last word replaced, sometimes longer, sometimes with candidates.
struct Echo;

impl ConsoleSession for Echo {
    fn prompt(&self) -> String {
        "FGT # ".into()
    }
    fn execute<'a>(&'a mut self, line: &'a str) -> BoxFuture<'a, ConsoleReply> {
        Box::pin(async move { ConsoleReply::text(line.to_string()) })
    }
    fn help(&self, line: &str) -> String {
        format!("help for {line}\n")
    }
    fn complete(&self, line: &str) -> Completion {
        Completion {
            line: format!("{line}€ "),
            candidates: vec!["a".into(), "é".into()],
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, .. ProptestConfig::default() })]

    #[test]
    fn key_decoder_and_line_editor_take_any_bytes(
        chunks in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..24),
                mixed(&["\x1b[A", "\x1b[B", "\x1b[C", "\x1b[D", "\x1b[3~", "\x1b[1~", "\x1b[",
                        "\x1bO", "\x01", "\x05", "\x15", "\x03", "\x16", "\x7f", "\x08", "?", "\t",
                        "\r", "\n", "\"", "set ", "€\"x\"\t"], 12).prop_map(String::into_bytes),
            ],
            0..8,
        )
    ) {
        let mut dec = KeyDecoder::default();
        let mut ed = LineEditor::default();
        for c in &chunks {
            for k in dec.feed(c) {
                let _ = ed.key(k, &Echo);
            }
        }
    }

    #[test]
    fn log_records_parse_or_fail_typed(s in mixed(&["date=", "time=", "devid=", "\"", "=\"", "\\\"", " ", "type=\"utm\"", "srcip=", "a=b", "<189>"], 24)) {
        let _ = LogRecord::parse(&s);
        let start = logfmt::body_start(&s);
        prop_assert!(start <= s.len());
        for (i, c) in s.char_indices() {
            if c == '"' {
                let _ = logfmt::unquote_at(&s, i);
            }
        }
    }

    #[test]
    fn proxy_headers_parse_or_fail_typed(
        text in mixed(&["PROXY ", "TCP4 ", "TCP6 ", "UNKNOWN", "127.0.0.1 ", "10.115.2.52 ", "::1 ", "80 ", "65536 ", "\r\n", " "], 12),
        raw in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let _ = proxy::parse(text.as_bytes());
        let mut v2 = b"\r\n\r\n\x00\r\nQUIT\n".to_vec();
        v2.extend_from_slice(&raw);
        let _ = proxy::parse(&v2);
        let _ = proxy::parse(&raw);
    }

    #[test]
    fn telemetry_frames_parse_or_fail_typed(
        text in mixed(&["MSG_HEADER: ", "FCTUID=", "SIZE=", "\r\n", "\r\n\r\n", "X-FCCK-", ": ", "|", "=", "KA_INTERVAL=", "0", "1"], 20),
    ) {
        let _ = telemetry::parse_frame(text.as_bytes());
        let _ = telemetry::b64::decode(&text);
        let _ = telemetry::mac_dash(&text);
        let _ = telemetry::mac_colon(&text);
    }

    #[test]
    fn log_channel_frames_decode_or_fail_typed(
        ty in 0u8..12,
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            mixed(&["{", "}", "\"serial\":", "\"id\":", "[", "]", ",", "null", "18446744073709551615"], 12).prop_map(String::into_bytes),
        ],
        declared in prop_oneof![Just(None), (0u32..200).prop_map(Some), Just(Some(u32::MAX))],
    ) {
        let mut buf = BytesMut::new();
        let len = declared.unwrap_or(body.len() as u32 + 1);
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(&[ty]);
        buf.extend_from_slice(&body);
        while let Ok(Some(_)) = frame::decode(&mut buf) {}
    }

    #[test]
    fn dates_and_printable_text(s in mixed(&["2021-03-04", " ", "10:11:22", "-", ":", "9999", "0"], 10), tz in any::<i32>()) {
        let _ = crate::clock::parse_date_time(&s, tz % 100_000);
        let p = printable(&s, false);
        prop_assert!(!p.chars().any(|c| (c as u32) < 0x20 && c != '\n'));
    }
}

/// The console line that hung a FortiGate SSH session (issue 15): the editor itself must take
/// it with any completion answer.
#[test]
fn console_regressions() {
    let mut dec = KeyDecoder::default();
    let mut ed = LineEditor::default();
    for k in dec.feed("€\"x\"\t\t?\r".as_bytes()) {
        let _ = ed.key(k, &Echo);
    }
}
