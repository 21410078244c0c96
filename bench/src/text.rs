//! Deterministic chat-like text: words from a fixed vocabulary drawn with a Zipf
//! distribution (a few very common words, a long tail), so full-text search meets both
//! huge and tiny posting lists, as it would in a real cache.

/// SplitMix64: small, fast and reproducible from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}

/// The most common words of chat, most frequent first; the rest of the vocabulary is made
/// of pronounceable pseudo-words.
const COMMON: &[&str] = &[
    "the", "i", "you", "to", "a", "and", "it", "is", "that", "of", "in", "for", "on", "this", "we",
    "but", "so", "have", "be", "not", "with", "just", "can", "do", "what", "if", "are", "was",
    "at", "me", "my", "all", "lol", "no", "yes", "it's", "like", "get", "about", "now", "think",
    "one", "know", "there", "will", "out", "time", "good", "they", "up", "how", "from", "would",
    "some", "want", "people", "build", "server", "game", "today", "work", "thanks", "tomorrow",
    "release", "rust", "bug", "fix", "merge", "deploy", "meeting", "coffee", "weekend", "music",
    "voice", "channel", "link", "update", "version", "test",
];
const SYLLABLES: &[&str] = &[
    "ba", "be", "bi", "bo", "ka", "ke", "ki", "ko", "da", "de", "di", "do", "fa", "fe", "fi", "la",
    "le", "li", "lo", "ma", "me", "mi", "mo", "na", "ne", "ni", "no", "ra", "re", "ri", "ro", "sa",
    "se", "si", "so", "ta", "te", "ti", "to", "va",
];

pub struct Vocabulary {
    pub words: Vec<String>,
    /// Cumulative Zipf weights (exponent 1), one per word.
    cumulative: Vec<f64>,
}

impl Vocabulary {
    pub fn new(size: usize) -> Vocabulary {
        let mut words: Vec<String> = COMMON.iter().map(|w| w.to_string()).collect();
        let mut seen: std::collections::HashSet<String> = words.iter().cloned().collect();
        let n = SYLLABLES.len();
        let mut i = 0;
        while words.len() < size {
            // Two syllables for the first n² words, three after that: all distinct.
            let word = if i < n * n {
                format!("{}{}", SYLLABLES[i / n], SYLLABLES[i % n])
            } else {
                let j = i - n * n;
                format!(
                    "{}{}{}",
                    SYLLABLES[(j / (n * n)) % n],
                    SYLLABLES[(j / n) % n],
                    SYLLABLES[j % n]
                )
            };
            i += 1;
            if seen.insert(word.clone()) {
                words.push(word);
            }
        }
        let mut total = 0.0;
        let cumulative = (1..=words.len())
            .map(|rank| {
                total += 1.0 / rank as f64;
                total
            })
            .collect();
        Vocabulary { words, cumulative }
    }

    /// A word's rank (0 = most common), drawn with the Zipf weights.
    pub fn rank(&self, rng: &mut Rng) -> usize {
        let x = rng.unit() * self.cumulative.last().copied().unwrap_or(0.0);
        self.cumulative
            .partition_point(|&c| c < x)
            .min(self.words.len() - 1)
    }

    /// A chat message: 2–30 words (mostly short), first letter capitalised, sometimes
    /// punctuated.
    pub fn message(&self, rng: &mut Rng) -> String {
        let u = rng.unit();
        let len = 2 + (u * u * 29.0) as usize;
        let mut text = String::with_capacity(len * 6);
        for k in 0..len {
            let word = &self.words[self.rank(rng)];
            if k == 0 {
                let mut chars = word.chars();
                if let Some(c) = chars.next() {
                    text.extend(c.to_uppercase());
                    text.push_str(chars.as_str());
                }
            } else {
                text.push(if rng.range(0, 12) == 0 { ',' } else { ' ' });
                if text.ends_with(',') {
                    text.push(' ');
                }
                text.push_str(word);
            }
        }
        match rng.range(0, 6) {
            0 => text.push('?'),
            1 => text.push('!'),
            2 => text.push('.'),
            _ => {}
        }
        text
    }

    /// A search: 1–3 words skipping the `skip` most common ones (nobody searches for
    /// "the"), still Zipf-weighted, so common content words dominate; sometimes the last word
    /// is cut short, as while typing.
    pub fn query(&self, rng: &mut Rng, skip: usize) -> String {
        let terms = rng.range(1, 4) as usize;
        let mut words = Vec::with_capacity(terms);
        while words.len() < terms {
            let rank = self.rank(rng);
            if rank >= skip {
                words.push(self.words[rank].clone());
            }
        }
        if rng.range(0, 10) < 3 {
            let last = words.last_mut().expect("at least one term");
            let keep = (rng.range(3, 6) as usize).min(last.len());
            last.truncate(keep);
        }
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_distinct() {
        let v = Vocabulary::new(20_000);
        assert_eq!(v.words.len(), 20_000);
        let unique: std::collections::HashSet<&String> = v.words.iter().collect();
        assert_eq!(unique.len(), 20_000);
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(v.message(&mut a), v.message(&mut b));
        assert_eq!(v.query(&mut a, 20), v.query(&mut b, 20));
        // Zipf: the top word is far more common than the median one.
        let mut rng = Rng::new(1);
        let top = (0..10_000).filter(|_| v.rank(&mut rng) == 0).count();
        assert!(top > 500, "{top}");
    }
}
