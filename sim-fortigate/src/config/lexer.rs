//! Splits FortiOS CLI text into commands of tokens.
//!
//! Rules (FortiOS CLI, reference §3.1): words are separated by blanks; `"…"` and `'…'` quote
//! (a quoted string may span lines); inside quotes and in bare words `\` escapes the next
//! character (`\ ` keeps a blank inside a word, `\"` a quote); a line whose first non-blank
//! character is `#` is a comment (`#config-version=…` is kept as the header).

/// One word of a command, with the position where it starts (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub text: String,
    pub line: usize,
    pub col: usize,
    /// Whether (part of) the word was quoted.
    pub quoted: bool,
}

/// One command (one logical line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub line: usize,
    pub tokens: Vec<Token>,
}

impl Command {
    /// A command built from plain words (REST operations use these; line 0).
    pub fn from_words<S: AsRef<str>>(words: &[S]) -> Self {
        Command {
            line: 0,
            tokens: words
                .iter()
                .map(|w| Token {
                    text: w.as_ref().to_string(),
                    line: 0,
                    col: 0,
                    quoted: true,
                })
                .collect(),
        }
    }

    pub fn word(&self, i: usize) -> Option<&str> {
        self.tokens.get(i).map(|t| t.text.as_str())
    }
}

/// A lexical error (an unterminated quote).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// The result of lexing a configuration text.
#[derive(Debug, Default)]
pub struct Lexed {
    pub commands: Vec<Command>,
    /// The `#config-version=…` header, if present.
    pub header: Option<String>,
}

/// Splits `text` into commands.
pub fn lex(text: &str) -> Result<Lexed, LexError> {
    let mut out = Lexed::default();
    let mut chars = text.chars().peekable();
    let (mut line, mut col) = (1usize, 0usize);
    let mut tokens: Vec<Token> = Vec::new();
    let mut cur: Option<Token> = None;
    let mut cmd_line = 1usize;

    // Advances one character, tracking the position of the character returned.
    macro_rules! next {
        () => {{
            let c = chars.next();
            if let Some(ch) = c {
                if ch == '\n' {
                    line += 1;
                    col = 0;
                } else {
                    col += 1;
                }
            }
            c
        }};
    }

    fn flush(cur: &mut Option<Token>, tokens: &mut Vec<Token>) {
        if let Some(t) = cur.take() {
            tokens.push(t);
        }
    }

    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                next!();
                flush(&mut cur, &mut tokens);
                if !tokens.is_empty() {
                    out.commands.push(Command {
                        line: cmd_line,
                        tokens: std::mem::take(&mut tokens),
                    });
                }
            }
            ' ' | '\t' | '\r' => {
                next!();
                flush(&mut cur, &mut tokens);
            }
            '#' if tokens.is_empty() && cur.is_none() => {
                // A comment line; keep the header.
                let mut s = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch == '\n' {
                        break;
                    }
                    s.push(ch);
                    next!();
                }
                if s.starts_with("#config-version=") && out.header.is_none() {
                    out.header = Some(s.trim_end().to_string());
                }
            }
            '"' | '\'' => {
                let quote = c;
                next!();
                let (ql, qc) = (line, col);
                let tok = cur.get_or_insert_with(|| Token {
                    text: String::new(),
                    line: ql,
                    col: qc,
                    quoted: true,
                });
                if tokens.is_empty() && tok.text.is_empty() {
                    cmd_line = ql;
                }
                tok.quoted = true;
                loop {
                    match next!() {
                        None => {
                            return Err(LexError {
                                line: ql,
                                col: qc,
                                message: "unterminated quoted string".into(),
                            })
                        }
                        Some('\\') => match next!() {
                            Some(e) => tok.text.push(e),
                            None => {
                                return Err(LexError {
                                    line: ql,
                                    col: qc,
                                    message: "unterminated quoted string".into(),
                                })
                            }
                        },
                        Some(ch) if ch == quote => break,
                        Some(ch) => tok.text.push(ch),
                    }
                }
            }
            '\\' => {
                next!();
                let (l, cc) = (line, col);
                if tokens.is_empty() && cur.is_none() {
                    cmd_line = l;
                }
                match next!() {
                    // A backslash before the line end continues the command.
                    Some('\n') | None => {}
                    Some('\r') if chars.peek() == Some(&'\n') => {
                        next!();
                    }
                    Some(e) => {
                        cur.get_or_insert_with(|| Token {
                            text: String::new(),
                            line: l,
                            col: cc,
                            quoted: false,
                        })
                        .text
                        .push(e);
                    }
                }
            }
            _ => {
                next!();
                if tokens.is_empty() && cur.is_none() {
                    cmd_line = line;
                }
                let (l, cc) = (line, col);
                cur.get_or_insert_with(|| Token {
                    text: String::new(),
                    line: l,
                    col: cc,
                    quoted: false,
                })
                .text
                .push(c);
            }
        }
    }
    flush(&mut cur, &mut tokens);
    if !tokens.is_empty() {
        out.commands.push(Command {
            line: cmd_line,
            tokens,
        });
    }
    Ok(out)
}

/// Quotes a value for `show` output the way FortiOS does (`"…"` with `\"` and `\\`).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(c: &Command) -> Vec<&str> {
        c.tokens.iter().map(|t| t.text.as_str()).collect()
    }

    #[test]
    fn splits_words_and_lines_with_positions() {
        let l = lex("config firewall address\n    edit \"a b\"\n  set subnet 10.0.0.0 255.0.0.0\n")
            .unwrap();
        assert_eq!(l.commands.len(), 3);
        assert_eq!(words(&l.commands[0]), ["config", "firewall", "address"]);
        assert_eq!(words(&l.commands[1]), ["edit", "a b"]);
        assert_eq!(l.commands[1].line, 2);
        assert_eq!(l.commands[1].tokens[1].col, 10);
        assert!(l.commands[1].tokens[1].quoted);
        assert_eq!(l.commands[2].tokens[2].col, 14);
    }

    #[test]
    fn quotes_and_escapes() {
        let l = lex(r#"set comment 'it''s' "say \"hi\"" back\ slash \\x """#).unwrap();
        assert_eq!(
            words(&l.commands[0]),
            [
                "set",
                "comment",
                "its",
                "say \"hi\"",
                "back slash",
                "\\x",
                ""
            ]
        );
    }

    #[test]
    fn quoted_strings_span_lines_and_comments_are_skipped() {
        let l = lex("#config-version=FGVM64-6.04-FW-build1803-201209:opmode=0:vdom=0:user=admin\n# a comment\nset script \"line1\nline2\"\nnext").unwrap();
        assert!(l.header.unwrap().starts_with("#config-version=FGVM64"));
        assert_eq!(l.commands.len(), 2);
        assert_eq!(l.commands[0].tokens[2].text, "line1\nline2");
        assert_eq!(l.commands[1].line, 5);
    }

    #[test]
    fn unterminated_quote_reports_its_position() {
        let e = lex("config x\n  set a \"oops\n").unwrap_err();
        assert_eq!((e.line, e.col), (2, 9));
        assert!(e.message.contains("unterminated"));
    }

    #[test]
    fn quote_escapes() {
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
    }
}
