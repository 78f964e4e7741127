//! Text from outside shown on a terminal: control characters made visible.
//!
//! Names and values that reach the lab from its inputs (an endpoint's host name from EMS
//! telemetry, a log line) may carry terminal escapes (`ESC [ ... m`, cursor moves, a bell).
//! Whatever a terminal prints (the `fortilab up` timeline, console output) goes through
//! [`printable`] first; HTML is escaped where it is built (the dashboard's `esc()`), FortiOS log
//! values by the log record writer ([`crate::logfmt`]).

use std::borrow::Cow;

/// `s` with every control character except `\n` (and `\r`, `\t` when `keep_layout`) written as
/// `\xHH` (C0, DEL) or `\u{HH}` (C1), so a terminal shows it instead of obeying it.
pub fn printable(s: &str, keep_layout: bool) -> Cow<'_, str> {
    let bad = |c: char| {
        let n = c as u32;
        let layout = matches!(c, '\n' | '\r' | '\t');
        (n < 0x20 && !(layout && (keep_layout || c == '\n'))) || (0x7f..=0x9f).contains(&n)
    };
    if !s.chars().any(bad) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            let n = c as u32;
            if n < 0x80 {
                out.push_str(&format!("\\x{n:02x}"));
            } else {
                out.push_str(&format!("\\u{{{n:x}}}"));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Pieces hostile input is made of, for the property tests of every parser and the
/// hostile-input end-to-end test: multi-byte characters (2, 3 and 4 bytes, a combining mark,
/// a wide blank, a byte-order mark), quotes, escapes, blanks and line ends, control characters,
/// terminal escapes, markup, percent-encoding, numbers at and past their limits, and the
/// delimiters the lab's formats use. A property test joins random pieces with random
/// structure words of the format under test, so a multi-byte character lands next to every
/// delimiter sooner or later.
pub const HOSTILE_PIECES: &[&str] = &[
    "€",
    "é",
    "𝄞",
    "\u{301}",
    "\u{3000}",
    "\u{feff}",
    "\u{85}",
    "\u{2028}",
    "ÿ",
    "€\"x\"",
    "\"",
    "'",
    "\\",
    "\\\"",
    " ",
    "  ",
    "\t",
    "\n",
    "\r",
    "\r\n",
    "\0",
    "\x07",
    "\x1b[2J",
    "\x7f",
    "\u{9b}",
    "<",
    ">",
    "<script>",
    "&",
    "%",
    "%00",
    "%e2%82",
    "%zz",
    "=",
    "==",
    "!=",
    "=@",
    ",",
    ";",
    ":",
    "|",
    "#",
    "?",
    "[",
    "]",
    "{",
    "}",
    "(",
    ")",
    "-",
    "+",
    "/",
    ".",
    "..",
    "0",
    "-1",
    "4294967296",
    "18446744073709551616",
    "99999999999999999999",
    "1e400",
    "NaN",
    "\u{10ffff}",
    "\u{fffd}",
];

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn escapes_are_shown_not_obeyed() {
        assert_eq!(printable("PC-52", false), "PC-52");
        assert!(matches!(
            printable("PC-52", false),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            printable("a\x1b[2Jb\x07\u{9b}c", false),
            "a\\x1b[2Jb\\x07\\u{9b}c"
        );
        assert_eq!(printable("l1\nl2\r\n\tx", true), "l1\nl2\r\n\tx");
        assert_eq!(printable("l1\nl2\r\tx", false), "l1\nl2\\x0d\\x09x");
        assert_eq!(printable("<b>é</b>", false), "<b>é</b>");
    }
}
