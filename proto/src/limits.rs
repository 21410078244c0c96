//! Sizes and shapes every boundary enforces, in one place so the relay, the node and the web
//! client agree.
//!
//! For example: content at most 4,000 characters, names 100, page sizes 100, nonces, emoji,
//! search queries and their terms. `words` splits text into the words search indexes and
//! matches, the same on both relay backends and in the node's cache.

pub const MAX_CONTENT_CHARS: usize = 4_000;
pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_TOPIC_CHARS: usize = 1_024;
pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub const MAX_PAGE_LIMIT: u32 = 100;
pub const DEFAULT_PAGE_LIMIT: u32 = 50;
pub const MAX_NONCE_CHARS: usize = 64;
pub const MAX_EMOJI_BYTES: usize = 64;
pub const MAX_SEARCH_QUERY_CHARS: usize = 256;
pub const MAX_SEARCH_TERMS: usize = 16;
pub const USERNAME_MIN: usize = 2;
pub const USERNAME_MAX: usize = 32;
pub const MAX_MENTIONS: usize = 50;
pub const MAX_SLOWMODE_SECS: u32 = 6 * 3600;
pub const MAX_TIMEOUT_SECS: u32 = 28 * 24 * 3600;
pub const MAX_BULK_DELETE_SECS: u32 = 7 * 24 * 3600;
pub const MAX_REPORT_CHARS: usize = 1_000;
pub const MAX_REASON_CHARS: usize = 512;
pub const MAX_CHANNELS_PER_GUILD: usize = 500;
pub const MAX_ROLES_PER_GUILD: usize = 250;
pub const MAX_DEVICES_PER_ACCOUNT: usize = 32;
/// Year 9999; anything later is a malformed timestamp.
pub const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

/// A field that failed validation and why; the relay turns it into a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

pub fn invalid(field: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid {
        field,
        reason: reason.into(),
    }
}

/// Unicode noncharacters are for a program's internal use, never for interchange.
const NONCHARACTERS: std::ops::RangeInclusive<char> = '\u{FDD0}'..='\u{FDEF}';

fn has_control(text: &str, allow_newlines: bool) -> bool {
    text.chars().any(|c| {
        (c.is_control() && !(allow_newlines && (c == '\n' || c == '\t')))
            || NONCHARACTERS.contains(&c)
    })
}

/// Message content: 1..=4,000 characters (Unicode scalar values), not only whitespace, and no
/// control characters except newline and tab.
pub fn content(text: &str) -> Result<(), Invalid> {
    if text.trim().is_empty() {
        return Err(invalid("content", "must not be empty"));
    }
    if text.chars().count() > MAX_CONTENT_CHARS {
        return Err(invalid(
            "content",
            format!("at most {MAX_CONTENT_CHARS} characters"),
        ));
    }
    if has_control(text, true) {
        return Err(invalid(
            "content",
            "control characters (other than newline and tab) and noncharacters are not allowed",
        ));
    }
    Ok(())
}

/// Guild, channel, role and device names: 1..=100 characters, trimmed, single line.
pub fn name(field: &'static str, text: &str) -> Result<(), Invalid> {
    if text.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if text.trim() != text {
        return Err(invalid(field, "must not start or end with whitespace"));
    }
    if text.chars().count() > MAX_NAME_CHARS {
        return Err(invalid(
            field,
            format!("at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if has_control(text, false) {
        return Err(invalid(
            field,
            "must be a single line without control characters",
        ));
    }
    Ok(())
}

pub fn topic(text: &str) -> Result<(), Invalid> {
    if text.chars().count() > MAX_TOPIC_CHARS {
        return Err(invalid(
            "topic",
            format!("at most {MAX_TOPIC_CHARS} characters"),
        ));
    }
    if has_control(text, true) {
        return Err(invalid("topic", "control characters are not allowed"));
    }
    Ok(())
}

/// Usernames: 2..=32 of `a-z 0-9 _ .`, lowercase so that they are unique without folding.
pub fn username(text: &str) -> Result<(), Invalid> {
    let ok_chars = text
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
    if !(USERNAME_MIN..=USERNAME_MAX).contains(&text.len()) || !ok_chars {
        return Err(invalid(
            "username",
            "2 to 32 characters of a-z, 0-9, '_' and '.'",
        ));
    }
    Ok(())
}

/// Client idempotency keys: 1..=64 printable ASCII characters.
pub fn nonce(text: &str) -> Result<(), Invalid> {
    if text.is_empty()
        || text.len() > MAX_NONCE_CHARS
        || !text.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(invalid("nonce", "1 to 64 printable ASCII characters"));
    }
    Ok(())
}

/// A reaction: one Unicode emoji sequence or a short `:name:`; at most 64 bytes, no whitespace,
/// no control characters, no '/' (it appears in URLs).
pub fn emoji(text: &str) -> Result<(), Invalid> {
    if text.is_empty()
        || text.len() > MAX_EMOJI_BYTES
        || text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(invalid(
            "emoji",
            "1 to 64 bytes, no whitespace, control characters or '/'",
        ));
    }
    Ok(())
}

/// Page sizes: 1..=100, default 50.
pub fn page_limit(limit: Option<u32>) -> Result<u32, Invalid> {
    match limit {
        None => Ok(DEFAULT_PAGE_LIMIT),
        Some(n) if (1..=MAX_PAGE_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(invalid("limit", format!("between 1 and {MAX_PAGE_LIMIT}"))),
    }
}

/// Byte ranges of the words of a text as search sees them: maximal runs of letters and
/// digits. Messages are indexed and queries split by this one rule, so every storage backend
/// finds the same messages whatever its own tokenizer does with e-mails, URLs or decimals.
pub fn words(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut chars = text.char_indices().peekable();
    std::iter::from_fn(move || {
        let (start, _) = chars.by_ref().find(|(_, c)| c.is_alphanumeric())?;
        let mut end = text.len();
        while let Some(&(i, c)) = chars.peek() {
            if !c.is_alphanumeric() {
                end = i;
                break;
            }
            chars.next();
        }
        Some((start, end))
    })
}

/// What the full-text index stores for a message: its words, lowercased, space-separated.
pub fn search_text(content: &str) -> String {
    words(content)
        .map(|(s, e)| content[s..e].to_lowercase())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits a search query into lowercase word terms (letters and digits), the same way both
/// storage backends tokenise, so that they find the same messages.
pub fn search_terms(query: &str) -> Result<Vec<String>, Invalid> {
    if query.chars().count() > MAX_SEARCH_QUERY_CHARS {
        return Err(invalid(
            "q",
            format!("at most {MAX_SEARCH_QUERY_CHARS} characters"),
        ));
    }
    let mut terms: Vec<String> = Vec::new();
    for (start, end) in words(query) {
        let word = query[start..end].to_lowercase();
        if !terms.contains(&word) {
            terms.push(word);
        }
    }
    if terms.is_empty() {
        return Err(invalid("q", "needs at least one word"));
    }
    if terms.len() > MAX_SEARCH_TERMS {
        return Err(invalid("q", format!("at most {MAX_SEARCH_TERMS} words")));
    }
    Ok(terms)
}

/// An optional moderation reason: at most 512 characters.
pub fn reason(text: Option<&str>) -> Result<(), Invalid> {
    match text {
        Some(r) if r.chars().count() > MAX_REASON_CHARS => Err(invalid(
            "reason",
            format!("at most {MAX_REASON_CHARS} characters"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_rules() {
        assert!(content("hi").is_ok());
        assert!(content("line\nline\ttab").is_ok());
        assert!(content("  ").is_err());
        assert!(content("bell\u{7}").is_err());
        assert!(content("mark\u{FDD0}").is_err());
        assert!(content(&"é".repeat(4_000)).is_ok());
        assert!(content(&"é".repeat(4_001)).is_err());
    }

    #[test]
    fn name_rules() {
        assert!(name("name", "general").is_ok());
        assert!(name("name", " general").is_err());
        assert!(name("name", "a\nb").is_err());
        assert!(name("name", &"x".repeat(101)).is_err());
    }

    #[test]
    fn other_rules() {
        assert!(username("ana_b.1").is_ok());
        for bad in ["A", "a", "Ana", "ana b", "ana-b", &"a".repeat(33)] {
            assert!(username(bad).is_err(), "{bad}");
        }
        assert!(nonce("abc-123").is_ok());
        assert!(nonce("a b").is_err());
        assert!(emoji("👍").is_ok());
        assert!(emoji("a/b").is_err());
        assert_eq!(page_limit(None), Ok(50));
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(101)).is_err());
        assert_eq!(
            search_terms("Hello, hello WORLD!").unwrap(),
            vec!["hello", "world"]
        );
        assert!(search_terms("!!!").is_err());
        assert_eq!(
            search_text("Mail user@Example.com, v1.2.3 — café/Straße!"),
            "mail user example com v1 2 3 café straße"
        );
        assert_eq!(words("ab").collect::<Vec<_>>(), [(0, 2)]);
        assert_eq!(words(" é-x ").collect::<Vec<_>>(), [(1, 3), (4, 5)]);
    }
}
