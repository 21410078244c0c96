//! Full-text search: FTS5 with bm25 on SQLite, a tsvector GIN index with ts_rank on
//! PostgreSQL. Both tokenise without stemming and match every term (the last one also as a
//! prefix), so both return the same set of messages; only the scores differ.

use concord_proto::limits::{HIGHLIGHT_END, HIGHLIGHT_START};
use concord_proto::model::SearchHit;
use sqlx::AssertSqlSafe;

use super::messages::{MESSAGE_COLS, message_row, with_reactions};
use super::rows::text;
use super::{SqlStore, placeholders};
use crate::store::{Backend, SearchParams, StoreResult};

/// `"a" "b" "c"*`: terms are letters and digits only (see `limits::search_terms`), quoted so
/// that FTS5 keywords like NOT are plain words.
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

/// Escapes the content for HTML and turns the database's match markers into `<mark>` tags.
pub(crate) fn render_highlight(marked: &str) -> String {
    let mut out = String::with_capacity(marked.len() + 16);
    for c in marked.chars() {
        match c {
            HIGHLIGHT_START => out.push_str("<mark>"),
            HIGHLIGHT_END => out.push_str("</mark>"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
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
        let (start, end) = (u32::from(HIGHLIGHT_START), u32::from(HIGHLIGHT_END));
        let (sql, query) = match self.backend {
            Backend::Sqlite => (
                format!(
                    "SELECT {MESSAGE_COLS}, -bm25(messages_fts) AS score, \
                     highlight(messages_fts, 0, char({start}), char({end})) AS marked \
                     FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid JOIN channels c ON c.id = m.channel_id \
                     WHERE messages_fts MATCH $1 AND {filters} ORDER BY score DESC, m.id DESC LIMIT $5"
                ),
                fts5_query(&p.terms),
            ),
            Backend::Postgres => (
                format!(
                    "SELECT {MESSAGE_COLS}, ts_rank(m.content_tsv, q)::float8 AS score, \
                     ts_headline('simple', m.content, q, 'HighlightAll=true, StartSel=' || chr({start}) || ', StopSel=' || chr({end})) AS marked \
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
        let mut scored = Vec::with_capacity(rows.len());
        let mut messages = Vec::with_capacity(rows.len());
        for row in &rows {
            messages.push(message_row(row)?);
            let score: f64 = sqlx::Row::try_get(row, "score")?;
            scored.push((render_highlight(&text(row, "marked")?), score));
        }
        let messages = with_reactions(&mut conn, messages).await?;
        Ok(messages
            .into_iter()
            .zip(scored)
            .map(|(message, (highlight, score))| SearchHit {
                message,
                highlight,
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
            render_highlight("a <b> \u{FDD0}hello\u{FDD1} & 'x'"),
            "a &lt;b&gt; <mark>hello</mark> &amp; &#39;x&#39;"
        );
    }
}
