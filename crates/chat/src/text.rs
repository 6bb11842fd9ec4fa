//! The rules for message text and channel names.
//!
//! Text: control characters are removed except line feeds (messages may have several lines), as
//! are the Unicode bidirectional overrides and isolates (they let a message display text in an
//! order other than the one stored, a known spoofing trick); the result is trimmed of whitespace
//! at both ends; it must then hold 1 to [`crate::MAX_TEXT_CHARS`] characters, at least one of
//! them visible (not only zero-width and other invisible formatting characters, which are kept
//! inside text because emoji sequences and some scripts need them). UTF-8 validity is
//! a given: a Rust `String` cannot hold anything else, and the codecs refuse invalid bytes.

use crate::ChatError;

/// Longest room name, in characters.
pub const ROOM_NAME_MAX_CHARS: usize = 32;
/// Longest group name, in characters.
pub const GROUP_NAME_MAX_CHARS: usize = 64;

/// Whether `c` is removed from message text.
fn is_removed(c: char) -> bool {
    (c.is_control() && c != '\n') || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Whether `c` shows nothing by itself: whitespace, an invisible formatting character (soft
/// hyphen, the zero-width space, joiners and marks, the word joiner and invisible operators, the
/// byte-order mark, variation selectors, tags), or a blank that fonts draw as nothing (the Hangul
/// fillers, the blank Braille pattern).
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

/// The stored form of `text`, or why it cannot be sent.
pub(crate) fn clean_text(text: &str, max_chars: usize) -> Result<String, ChatError> {
    let cleaned: String = text.chars().filter(|&c| !is_removed(c)).collect();
    let cleaned = cleaned.trim();
    if cleaned.chars().all(is_invisible) {
        return Err(ChatError::InvalidText("the message is empty".into()));
    }
    let n_chars = cleaned.chars().count();
    if n_chars > max_chars {
        return Err(ChatError::InvalidText(format!(
            "the message has {n_chars} characters; at most {max_chars} are allowed"
        )));
    }
    Ok(cleaned.to_owned())
}

/// A room name in its stored form: lower case, 1 to [`ROOM_NAME_MAX_CHARS`] of `a-z0-9_-`.
pub(crate) fn room_name(name: &str) -> Result<String, ChatError> {
    let name = name.trim().to_ascii_lowercase();
    let valid = (1..=ROOM_NAME_MAX_CHARS).contains(&name.chars().count())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(name)
    } else {
        Err(ChatError::InvalidName(format!(
            "a room name has 1 to {ROOM_NAME_MAX_CHARS} characters of a-z, 0-9, _ and -"
        )))
    }
}

/// A group name in its stored form: cleaned like text, on one line (a line feed, or Unicode's
/// line or paragraph separator, becomes a space; the other line breaks are control characters,
/// which cleaning removes), 1 to [`GROUP_NAME_MAX_CHARS`] characters.
pub(crate) fn group_name(name: &str) -> Result<String, ChatError> {
    let one_line = name.replace(['\n', '\u{2028}', '\u{2029}'], " ");
    clean_text(&one_line, GROUP_NAME_MAX_CHARS).map_err(|_| {
        ChatError::InvalidName(format!("a group name has 1 to {GROUP_NAME_MAX_CHARS} characters"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cleaned_and_bounded() {
        let check = |input: &str, expected: Option<&str>| {
            assert_eq!(clean_text(input, 5).ok().as_deref(), expected, "{input:?}");
        };
        check("hello", Some("hello"));
        check("  hi \n", Some("hi"));
        check("a\nb", Some("a\nb"));
        check("a\u{0}b\u{7}c\r", Some("abc"));
        check("\tx\u{1b}[3m", Some("x[3m"));
        check("ab\u{202E}cd", Some("abcd"));
        check("héllo", Some("héllo"));
        check("hellos", None);
        check("", None);
        check(" \u{0}\r\n\t ", None);
        // Nothing visible is nothing; joiners inside visible text stay.
        check("\u{1}\r\u{2064}\u{1b}", None);
        check("\u{200B}\u{FEFF} \u{200E}", None);
        check("\u{3164}\u{2800}\u{FE0F}", None);
        check("\u{2764}\u{FE0F}", Some("\u{2764}\u{FE0F}"));
        check("👨\u{200D}👩", Some("👨\u{200D}👩"));
    }

    #[test]
    fn room_names_are_lower_case_words() {
        assert_eq!(room_name(" Lobby-1 ").ok().as_deref(), Some("lobby-1"));
        assert!(room_name("").is_err());
        assert!(room_name("no spaces").is_err());
        assert!(room_name(&"x".repeat(ROOM_NAME_MAX_CHARS + 1)).is_err());
        assert_eq!(group_name("My\nGuild").ok().as_deref(), Some("My Guild"));
        // Unicode's line and paragraph separators break a line in a client as a line feed does.
        assert_eq!(group_name("Raid\u{2028}night\u{2029}!").ok().as_deref(), Some("Raid night !"));
        assert!(group_name("\u{0}").is_err());
    }
}
