//! Offline full-text search. FTS5 finds the matches (every term, the last one also as a
//! prefix, as the relay does); ranking is BM25 computed here over the newest matches.
//!
//! Why not FTS5's own `bm25()`: it computes each term's document frequency by walking the
//! term's whole posting list, so one common word in a million cached messages costs tens of
//! milliseconds whatever the LIMIT. Here every step is bounded: at most [`SEARCH_WINDOW`]
//! candidates, and document frequencies estimated from the newest [`DF_SAMPLE`] postings.

use concord_proto::limits::search_terms;
use rusqlite::OptionalExtension;

use super::read::COLS;
use super::{Cache, CachedMessage, MAX_PAGE, Result};

/// Search ranks the newest this many matches.
pub const SEARCH_WINDOW: usize = 1_000;
/// Postings read per term to estimate how common it is.
const DF_SAMPLE: i64 = 500;
/// BM25's usual parameters (FTS5 uses the same).
const K1: f64 = 1.2;
const B: f64 = 0.75;

impl Cache {
    /// Offline full-text search over every cached channel, best first. The query is split
    /// into words like the relay does (`limits::search_terms`); a message matches when it
    /// holds every term, the last one also as a prefix. Ranked by BM25 among the newest
    /// [`SEARCH_WINDOW`] matches, newer first on ties; deleted messages never match.
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<CachedMessage>> {
        let terms = search_terms(query)?;
        let limit = limit.min(MAX_PAGE);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT m.local_id, m.search_text FROM (SELECT rowid AS hit FROM messages_fts \
             WHERE messages_fts MATCH ?1 ORDER BY rowid DESC LIMIT ?2) \
             JOIN messages m ON m.local_id = hit WHERE m.deleted = 0",
        )?;
        let candidates: Vec<(i64, String)> = stmt
            .query_map(
                rusqlite::params![fts5_query(&terms), SEARCH_WINDOW as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .collect::<rusqlite::Result<_>>()?;
        // With one term every candidate shares its weight, so it needs no estimate.
        let weights = if terms.len() > 1 {
            self.idf(&terms)?
        } else {
            vec![1.0]
        };
        let mut ranked: Vec<(f64, i64)> = bm25(&terms, &weights, &candidates);
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
        ranked.truncate(limit);
        let sql = format!("SELECT {COLS} FROM messages m WHERE m.local_id = ?1");
        let mut out = Vec::with_capacity(ranked.len());
        for (_, local_id) in ranked {
            out.extend(self.messages(&sql, [local_id])?);
        }
        Ok(out)
    }

    /// Inverse document frequency of each term (FTS5's formula), with the document
    /// frequency estimated from how far back the newest `DF_SAMPLE` postings reach.
    fn idf(&self, terms: &[String]) -> Result<Vec<f64>> {
        let span: Option<(i64, i64)> = self
            .conn
            .prepare_cached(
                // Two subqueries: min and max together would scan the table.
                "SELECT (SELECT min(local_id) FROM messages), (SELECT max(local_id) FROM messages)",
            )?
            .query_row([], |r| Ok(r.get::<_, Option<i64>>(0)?.zip(r.get(1)?)))
            .optional()?
            .flatten();
        let Some((first, last)) = span else {
            return Ok(vec![1.0; terms.len()]);
        };
        let rows = (last - first + 1) as f64;
        let mut stmt = self.conn.prepare_cached(
            "SELECT count(*), min(hit) FROM (SELECT rowid AS hit FROM messages_fts \
             WHERE messages_fts MATCH ?1 ORDER BY rowid DESC LIMIT ?2)",
        )?;
        let mut out = Vec::with_capacity(terms.len());
        for (i, term) in terms.iter().enumerate() {
            let prefix = i + 1 == terms.len();
            let query = format!("\"{term}\"{}", if prefix { "*" } else { "" });
            let (seen, oldest): (i64, Option<i64>) = stmt
                .query_row(rusqlite::params![query, DF_SAMPLE], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            let docs = match oldest {
                Some(oldest) if seen >= DF_SAMPLE => {
                    seen as f64 * rows / (last - oldest + 1).max(1) as f64
                }
                _ => seen as f64,
            };
            let idf = ((rows - docs + 0.5) / (docs + 0.5)).ln();
            out.push(if idf > 0.0 { idf } else { 1e-6 });
        }
        Ok(out)
    }
}

/// `"a" "b" "c"*`: every term, the last one also as a prefix. Terms are letters and digits
/// only, so quoting makes FTS5 keywords (AND, NOT, NEAR) plain words.
pub(super) fn fts5_query(terms: &[String]) -> String {
    let mut parts: Vec<String> = terms.iter().map(|t| format!("\"{t}\"")).collect();
    if let Some(last) = parts.last_mut() {
        last.push('*');
    }
    parts.join(" ")
}

/// (score, local_id) for each candidate. Candidates hold the `search_text` FTS5 indexed:
/// lowercase words separated by single spaces.
fn bm25(terms: &[String], weights: &[f64], candidates: &[(i64, String)]) -> Vec<(f64, i64)> {
    let lengths: Vec<usize> = candidates
        .iter()
        .map(|(_, text)| text.split(' ').count())
        .collect();
    let average = lengths.iter().sum::<usize>().max(1) as f64 / lengths.len().max(1) as f64;
    candidates
        .iter()
        .zip(lengths)
        .map(|((local_id, text), len)| {
            let norm = K1 * (1.0 - B + B * len as f64 / average);
            let score = terms
                .iter()
                .zip(weights)
                .enumerate()
                .map(|(i, (term, weight))| {
                    let prefix = i + 1 == terms.len();
                    let tf = text
                        .split(' ')
                        .filter(|w| *w == term || (prefix && w.starts_with(term.as_str())))
                        .count() as f64;
                    weight * tf * (K1 + 1.0) / (tf + norm)
                })
                .sum();
            (score, *local_id)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_quote_terms_and_prefix_the_last() {
        let terms = vec!["not".to_owned(), "near".to_owned()];
        assert_eq!(fts5_query(&terms), r#""not" "near"*"#);
    }

    #[test]
    fn bm25_prefers_frequent_terms_in_short_texts() {
        let terms = vec!["rust".to_owned()];
        let c = vec![
            (1, "rust is fine i think".to_owned()),
            (2, "rust rust".to_owned()),
            (3, "rustacean".to_owned()),
        ];
        let mut ranked = bm25(&terms, &[1.0], &c);
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        let order: Vec<i64> = ranked.iter().map(|r| r.1).collect();
        assert_eq!(order, [2, 3, 1]);
        // A rare term outweighs a common one.
        let terms = vec!["common".to_owned(), "rare".to_owned()];
        let c = vec![
            (1, "common common rare".to_owned()),
            (2, "common rare rare".to_owned()),
        ];
        let ranked = bm25(&terms, &[0.1, 5.0], &c);
        assert!(ranked[1].0 > ranked[0].0);
    }
}
