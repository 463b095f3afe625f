//! Strings a guest controls, made safe to show to a person.
//!
//! A guest names its tasks (`comm`) and cgroups, and a hostile guest can put any byte into
//! anything xsched reads from its memory. Shown raw, an escape sequence in a comm would reach
//! the operator's terminal, and a control byte would make the timeline SVG invalid XML.
//! [`printable`] does what procps's `escape_str` does for `ps` and `top`: every control
//! character and every invalid UTF-8 sequence is shown as `?`. Machine-readable output (JSON)
//! keeps the exact text instead, escaped by serde_json.
//!
//! Guest bytes become a `String` by lossy decoding (each invalid UTF-8 sequence becomes
//! U+FFFD), so U+FFFD is what `printable` sees of invalid UTF-8.

use std::borrow::Cow;

/// What [`printable`] shows instead of a character it does not show.
pub const REPLACEMENT: char = '?';

/// Whether `c` is shown as itself: not a control character (C0, DEL, C1), not U+FFFD (invalid
/// UTF-8, once decoded lossily), not the noncharacters U+FFFE and U+FFFF. What remains is also
/// allowed in XML 1.0 text, as itself and as a character reference.
fn shown(c: char) -> bool {
    !(c.is_control() || matches!(c, '\u{fffd}' | '\u{fffe}' | '\u{ffff}'))
}

/// `text` with every character that is not [`shown`] as itself replaced by [`REPLACEMENT`]
/// (one `?` per character), borrowed when nothing needs replacing. Safe to print on a
/// terminal, in a log line and (with `<`, `>`, `&` and quotes escaped) in XML.
pub fn printable(text: &str) -> Cow<'_, str> {
    if text.chars().all(shown) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.chars().map(|c| if shown(c) { c } else { REPLACEMENT }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for text in ["", "db", "kworker/0:1H", "/g1/sub", "naïve ünïcode 日本", "tab-less \u{a0}nbsp"] {
            assert!(matches!(printable(text), Cow::Borrowed(t) if t == text), "{text:?}");
        }
    }

    #[test]
    fn controls_and_invalid_utf8_become_question_marks() {
        let comm = String::from_utf8_lossy(b"\x1b[2J\x07ev\nil\xff");
        assert_eq!(printable(&comm), "?[2J?ev?il?");
        assert_eq!(printable("a\tb\rc\0d\x7fe"), "a?b?c?d?e");
        // C1 controls (U+009B is CSI on some terminals) and the XML noncharacters.
        assert_eq!(printable("x\u{9b}31m\u{85}y\u{fffe}\u{ffff}"), "x?31m?y??");
        // One `?` per invalid sequence, as lossy decoding leaves them.
        assert_eq!(printable(&String::from_utf8_lossy(b"\xc3\x28\xe2\x82")), "?(?");
    }

    #[test]
    fn the_result_never_holds_a_control_or_a_character_xml_forbids() {
        let every: String = (0u32..0x11_0000).filter_map(char::from_u32).collect();
        let safe = printable(&every);
        assert_eq!(safe.chars().count(), every.chars().count(), "one character for one");
        for c in safe.chars() {
            let xml = matches!(c, '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..='\u{10ffff}');
            assert!(xml && !c.is_control(), "{:#x}", u32::from(c));
        }
    }
}
