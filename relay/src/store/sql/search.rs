//! Full-text search: FTS5 with bm25 on SQLite, a tsvector GIN index with ts_rank on
//! PostgreSQL. Both index `search_text` — the message's words as `limits::words` splits them —
//! and match every term (the last one also as a prefix), so both return the same set of
//! messages; only the scores differ. Highlights are computed here, the same way for both.

use concord_proto::limits;
use concord_proto::model::SearchHit;
use sqlx::AssertSqlSafe;

use super::messages::{MESSAGE_COLS, message_row, with_reactions};
use super::{SqlStore, placeholders};
use crate::store::{Backend, SearchParams, StoreResult};

/// `"a" "b" "c"*`: terms are letters and digits only, quoted so that FTS5 keywords like NOT
/// are plain words.
fn fts5_query(terms: &[String]) -> String {
    let mut parts: Vec<String> = terms.iter().map(|t| format!("\"{t}\"")).collect();
    if let Some(last) = parts.last_mut() {
        last.push('*');
    }
    parts.join(" ")
}

/// `a & b & c:*` for `to_tsquery('simple', …)`.
fn tsquery(terms: &[String]) -> String {
    let mut parts: Vec<String> = terms.to_vec();
    if let Some(last) = parts.last_mut() {
        last.push_str(":*");
    }
    parts.join(" & ")
}

fn escape_html(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// The content, HTML-escaped, with the words that matched wrapped in `<mark>`: a word
/// matches when it equals a term, or starts with the last term.
pub(crate) fn highlight(content: &str, terms: &[String]) -> String {
    let (prefix, exact) = match terms.split_last() {
        Some((last, rest)) => (last.as_str(), rest),
        None => ("", &[][..]),
    };
    let mut out = String::with_capacity(content.len() + 32);
    let mut at = 0;
    for (start, end) in limits::words(content) {
        escape_html(&content[at..start], &mut out);
        let word = &content[start..end];
        let lower = word.to_lowercase();
        let hit = (!prefix.is_empty() && lower.starts_with(prefix)) || exact.contains(&lower);
        if hit {
            out.push_str("<mark>");
        }
        escape_html(word, &mut out);
        if hit {
            out.push_str("</mark>");
        }
        at = end;
    }
    escape_html(&content[at..], &mut out);
    out
}

impl SqlStore {
    pub(super) async fn search_messages(&self, p: &SearchParams) -> StoreResult<Vec<SearchHit>> {
        if p.channel_ids.is_empty() || p.terms.is_empty() {
            return Ok(Vec::new());
        }
        // $1 query, $2 author (0 = any), $3 before, $4 after, $5 limit, $6.. channels
        let channels = placeholders(6, p.channel_ids.len());
        let filters = format!(
            "m.channel_id IN ({channels}) AND m.deleted_at IS NULL AND ($2 = 0 OR m.author_id = $2) AND m.id < $3 AND m.id > $4"
        );
        let (sql, query) = match self.backend {
            Backend::Sqlite => (
                format!(
                    "SELECT {MESSAGE_COLS}, -bm25(messages_fts) AS score \
                     FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid JOIN channels c ON c.id = m.channel_id \
                     WHERE messages_fts MATCH $1 AND {filters} ORDER BY score DESC, m.id DESC LIMIT $5"
                ),
                fts5_query(&p.terms),
            ),
            Backend::Postgres => (
                format!(
                    "SELECT {MESSAGE_COLS}, ts_rank(m.content_tsv, q)::float8 AS score \
                     FROM messages m JOIN channels c ON c.id = m.channel_id, to_tsquery('simple', $1) q \
                     WHERE m.content_tsv @@ q AND {filters} ORDER BY score DESC, m.id DESC LIMIT $5"
                ),
                tsquery(&p.terms),
            ),
        };
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(query)
            .bind(p.author.map_or(0, |a| a.0))
            .bind(p.before.map_or(i64::MAX, |b| b.0))
            .bind(p.after.map_or(0, |a| a.0))
            .bind(i64::from(p.limit));
        for c in &p.channel_ids {
            q = q.bind(c.0);
        }
        let mut conn = self.read.acquire().await?;
        let rows = q.fetch_all(&mut *conn).await?;
        let mut messages = Vec::with_capacity(rows.len());
        let mut scores = Vec::with_capacity(rows.len());
        for row in &rows {
            messages.push(message_row(row)?);
            scores.push(sqlx::Row::try_get::<f64, _>(row, "score")?);
        }
        let messages = with_reactions(&mut conn, messages).await?;
        Ok(messages
            .into_iter()
            .zip(scores)
            .map(|(message, score)| SearchHit {
                highlight: highlight(&message.content, &p.terms),
                message,
                score,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_highlights() {
        let terms = vec!["hello".to_owned(), "wor".to_owned()];
        assert_eq!(fts5_query(&terms), r#""hello" "wor"*"#);
        assert_eq!(tsquery(&terms), "hello & wor:*");
        assert_eq!(
            highlight("a <b> Hello helloo & 'World' sword", &terms),
            "a &lt;b&gt; <mark>Hello</mark> helloo &amp; &#39;<mark>World</mark>&#39; sword"
        );
        assert_eq!(
            highlight("mail me@example.com", &["example".to_owned()]),
            "mail me@<mark>example</mark>.com"
        );
    }
}
