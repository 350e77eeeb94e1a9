//! The matching engine. All rules' keywords are found in one pass (an
//! Aho-Corasick automaton, ASCII case-insensitive); only the rules whose
//! keywords appeared run their regex, over bytes. Candidates are then
//! confirmed: checksum where the format has one, entropy, placeholders
//! (`sk-xxxx`, `your-key-here`, `<OPENAI_API_KEY>`, runs of one character),
//! and inline `keyforge:allow` comments.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::rules::{Rule, RuleError, Validation, rules_with};

/// A line containing this is never reported.
pub const ALLOW_MARKER: &[u8] = b"keyforge:allow";

/// Files whose first bytes contain a NUL are binary (as git decides).
const BINARY_SNIFF_BYTES: usize = 8000;

/// A secret found in a buffer: which rule, and the secret's byte span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub rule: usize,
    pub start: usize,
    pub end: usize,
}

/// Compiled rules and their prefilter. Cheap to share between threads.
#[derive(Debug, Clone)]
pub struct Scanner {
    rules: Vec<Rule>,
    prefilter: Option<AhoCorasick>,
    /// For each prefilter pattern, the rules it anchors.
    keyword_rules: Vec<Vec<usize>>,
    /// Rules without keywords: they always run.
    unanchored: Vec<usize>,
}

impl Scanner {
    /// The built-in rules plus an optional user rule file.
    pub fn new(extra_rules: Option<&str>) -> Result<Self, RuleError> {
        Self::from_rules(rules_with(extra_rules)?)
    }

    pub fn from_rules(rules: Vec<Rule>) -> Result<Self, RuleError> {
        let mut patterns: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        let mut unanchored = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            if rule.keywords.is_empty() {
                unanchored.push(index);
            }
            for keyword in &rule.keywords {
                match patterns.iter().position(|p| p == keyword) {
                    Some(at) => keyword_rules[at].push(index),
                    None => {
                        patterns.push(keyword.clone());
                        keyword_rules.push(vec![index]);
                    }
                }
            }
        }
        // A keyword containing another (`aws_secret` holds `secret`) adds
        // nothing to the search: the shorter one finds every place the
        // longer one would, so it takes over the longer one's rules. Fewer
        // patterns keep the search on its SIMD path; and with no pattern
        // inside another, leftmost-first non-overlapping matches miss none.
        let mut keep = vec![true; patterns.len()];
        for i in 0..patterns.len() {
            for j in 0..patterns.len() {
                if i != j
                    && keep[j]
                    && patterns[i].len() > patterns[j].len()
                    && patterns[i].contains(patterns[j].as_str())
                {
                    keep[i] = false;
                    let moved = keyword_rules[i].clone();
                    for rule in moved {
                        if !keyword_rules[j].contains(&rule) {
                            keyword_rules[j].push(rule);
                        }
                    }
                    break;
                }
            }
        }
        let (patterns, keyword_rules): (Vec<String>, Vec<Vec<usize>>) = patterns
            .into_iter()
            .zip(keyword_rules)
            .zip(keep)
            .filter(|(_, keep)| *keep)
            .map(|(pair, _)| pair)
            .unzip();
        let prefilter = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostFirst)
                    .build(&patterns)
                    .map_err(|error| RuleError::Rule {
                        id: "(keywords)".into(),
                        reason: error.to_string(),
                    })?,
            )
        };
        Ok(Self {
            rules,
            prefilter,
            keyword_rules,
            unanchored,
        })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether `data` looks binary (a NUL among its first bytes).
    pub fn is_binary(data: &[u8]) -> bool {
        memchr::memchr(0, &data[..data.len().min(BINARY_SNIFF_BYTES)]).is_some()
    }

    /// Every confirmed secret in `data`, in order of position.
    pub fn scan(&self, data: &[u8]) -> Vec<Hit> {
        self.hits(data, &self.windows(data))
    }

    /// The confirmed secrets inside each rule's windows.
    fn hits(&self, data: &[u8], windows: &[Vec<(usize, usize)>]) -> Vec<Hit> {
        let mut hits: Vec<Hit> = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            for &(from, to) in &windows[index] {
                let window = &data[from..to];
                for captures in rule.regex.captures_iter(window) {
                    let span = (1..captures.len())
                        .find_map(|group| captures.get(group))
                        .or_else(|| captures.get(0));
                    let Some(span) = span else { continue };
                    let (start, end) = (from + span.start(), from + span.end());
                    let secret = &data[start..end];
                    if secret.is_empty() || !confirmed(rule, secret) {
                        continue;
                    }
                    if allowed_inline(data, start) {
                        continue;
                    }
                    hits.push(Hit {
                        rule: index,
                        start,
                        end,
                    });
                }
            }
        }
        // Rules earlier in the list are more specific: a later rule's hit
        // inside an earlier rule's is the same secret seen twice.
        hits.sort_by_key(|hit| (hit.start, hit.rule));
        let mut kept: Vec<Hit> = Vec::with_capacity(hits.len());
        for hit in hits {
            match kept
                .iter_mut()
                .find(|other| other.start < hit.end && hit.start < other.end)
            {
                Some(other) => {
                    if hit.rule < other.rule {
                        *other = hit;
                    }
                }
                None => kept.push(hit),
            }
        }
        kept.sort_by_key(|hit| hit.start);
        kept
    }
}

/// Bytes around a keyword that a rule's regex looks at: a secret sits on
/// the keyword's line (or, for `key:` then value, the next one), within a
/// few hundred bytes of it.
const WINDOW_BEFORE: usize = 512;
const WINDOW_AFTER: usize = 1024;

impl Scanner {
    /// For each rule, the merged byte ranges its regex must look at: around
    /// each occurrence of one of its keywords (the whole buffer for a rule
    /// without keywords). Rules whose keywords do not occur get none.
    fn windows(&self, data: &[u8]) -> Vec<Vec<(usize, usize)>> {
        let mut windows: Vec<Vec<(usize, usize)>> = vec![Vec::new(); self.rules.len()];
        for &index in &self.unanchored {
            windows[index].push((0, data.len()));
        }
        let Some(prefilter) = &self.prefilter else {
            return windows;
        };
        for found in prefilter.find_iter(data) {
            let (start, end) = (found.start(), found.end());
            let low = start.saturating_sub(WINDOW_BEFORE);
            let from = memchr::memrchr(b'\n', &data[low..start]).map_or(low, |i| low + i + 1);
            let high = (end + WINDOW_AFTER).min(data.len());
            // The rest of the line, and the next one.
            let to = match memchr::memchr(b'\n', &data[end..high]) {
                Some(i) => {
                    let next = end + i + 1;
                    memchr::memchr(b'\n', &data[next..high]).map_or(high, |j| next + j)
                }
                None => high,
            };
            for &rule in &self.keyword_rules[found.pattern().as_usize()] {
                let list = &mut windows[rule];
                match list.last_mut() {
                    Some(last) if from <= last.1 => last.1 = last.1.max(to),
                    _ => list.push((from, to)),
                }
            }
        }
        windows
    }
}

/// A transformed copy of a buffer (string concatenations joined, or
/// percent-encoding decoded) with the way back to the original offsets.
#[derive(Debug)]
pub struct View {
    pub bytes: Vec<u8>,
    /// Segment starts: (offset in the view, offset in the original), sorted.
    map: Vec<(usize, usize)>,
}

impl View {
    /// The original offset of a view offset.
    pub fn original(&self, offset: usize) -> usize {
        let index = self.map.partition_point(|(view, _)| *view <= offset);
        match index.checked_sub(1).and_then(|i| self.map.get(i)) {
            Some((view, original)) => original + (offset - view),
            None => offset,
        }
    }
}

/// `"sk-ant-api03-" + "…"`, `'…' '…'` (implicit concatenation), `"…" . "…"`
/// (PHP), `"…" ..` (Lua) and the same across a line break: a quote, the
/// joiner, the next quote.
#[expect(
    clippy::expect_used,
    reason = "a constant pattern, exercised by the tests"
)]
fn concatenation_joints() -> &'static regex::bytes::Regex {
    static JOINTS: std::sync::OnceLock<regex::bytes::Regex> = std::sync::OnceLock::new();
    JOINTS.get_or_init(|| {
        regex::bytes::Regex::new(
            r#"["'`][ \t]*(?:\+|\.\.?|\\)?[ \t]*(?:\r?\n[ \t]*(?:\+|\.\.?)?[ \t]*)?["'`]"#,
        )
        .expect("constant regex")
    })
}

/// The buffer with string concatenations joined, if it has any.
fn joined(data: &[u8]) -> Option<View> {
    let joints = concatenation_joints();
    let mut found = joints.find_iter(data).peekable();
    found.peek()?;
    let mut bytes = Vec::with_capacity(data.len());
    let mut map = vec![(0, 0)];
    let mut at = 0;
    for joint in found {
        bytes.extend_from_slice(&data[at..joint.start()]);
        at = joint.end();
        map.push((bytes.len(), at));
    }
    bytes.extend_from_slice(&data[at..]);
    Some(View { bytes, map })
}

/// Whether `data` percent-encodes a character keys are made of (`_`, `-`,
/// `/`, `+`, `=`): only then is a decoded view worth scanning.
fn has_key_escapes(data: &[u8]) -> bool {
    let mut at = 0;
    while let Some(i) = memchr::memchr(b'%', &data[at..]) {
        let p = at + i;
        if let Some(pair) = data.get(p + 1..p + 3) {
            let upper = [pair[0], pair[1].to_ascii_uppercase()];
            if matches!(&upper, b"5F" | b"2D" | b"2F" | b"2B" | b"3D") {
                return true;
            }
        }
        at = p + 1;
    }
    false
}

/// The buffer with `%XX` escapes decoded, if it has any.
fn percent_decoded(data: &[u8]) -> Option<View> {
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut bytes = Vec::with_capacity(data.len());
    let mut map = vec![(0, 0)];
    let mut i = 0;
    let mut any = false;
    while i < data.len() {
        if data[i] == b'%'
            && i + 2 < data.len()
            && let (Some(high), Some(low)) = (hex(data[i + 1]), hex(data[i + 2]))
        {
            bytes.push(high * 16 + low);
            i += 3;
            map.push((bytes.len(), i));
            any = true;
        } else {
            bytes.push(data[i]);
            i += 1;
        }
    }
    any.then_some(View { bytes, map })
}

impl Scanner {
    /// Every confirmed secret, including those split across string
    /// concatenations or percent-encoded, with spans in `data`'s offsets.
    /// The third field is the secret as found (joined or decoded).
    pub fn scan_deep(&self, data: &[u8]) -> Vec<(Hit, Vec<u8>)> {
        // One keyword search serves both the buffer and the decision
        // whether a joined view is worth building.
        let windows = self.windows(data);
        let mut all: Vec<(Hit, Vec<u8>)> = self
            .hits(data, &windows)
            .into_iter()
            .map(|hit| (hit, data[hit.start..hit.end].to_vec()))
            .collect();
        let mut views = Vec::new();
        if windows.iter().any(|rule| !rule.is_empty()) {
            views.extend(joined(data));
        }
        if has_key_escapes(data) {
            views.extend(percent_decoded(data));
        }
        for view in views {
            for hit in self.scan(&view.bytes) {
                let start = view.original(hit.start);
                let end = view.original(hit.end.saturating_sub(1)) + 1;
                let known = all
                    .iter()
                    .any(|(other, _)| other.start < end && start < other.end);
                if !known {
                    let secret = view.bytes[hit.start..hit.end].to_vec();
                    all.push((
                        Hit {
                            rule: hit.rule,
                            start,
                            end,
                        },
                        secret,
                    ));
                }
            }
        }
        all.sort_by_key(|(hit, _)| hit.start);
        all
    }
}

fn confirmed(rule: &Rule, secret: &[u8]) -> bool {
    match rule.validation {
        Validation::KfChecksum => std::str::from_utf8(secret)
            .is_ok_and(|text| keyforge_types::VirtualKey::parse(text).is_ok()),
        Validation::None => {
            if let Some(minimum) = rule.entropy
                && entropy(secret) < minimum
            {
                return false;
            }
            !is_placeholder(secret)
        }
    }
}

/// Shannon entropy in bits per byte.
pub fn entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &byte in data {
        counts[usize::from(byte)] += 1;
    }
    let length = data.len() as f64;
    counts
        .iter()
        .filter(|&&count| count > 0)
        .map(|&count| {
            let p = f64::from(count) / length;
            -p * p.log2()
        })
        .sum()
}

/// Words and shapes that mark a value as a stand-in, not a secret.
const PLACEHOLDER_WORDS: &[&[u8]] = &[
    b"xxxx",
    b"your",
    b"example",
    b"placeholder",
    b"dummy",
    b"changeme",
    b"redacted",
    b"insert",
    b"replace",
    b"fake",
    b"sample",
    b"****",
    b"....",
    b"${",
    b"{{",
    b"<",
    b">",
];

pub fn is_placeholder(secret: &[u8]) -> bool {
    let lower = secret.to_ascii_lowercase();
    if PLACEHOLDER_WORDS
        .iter()
        .any(|word| memchr::memmem::find(&lower, word).is_some())
    {
        return true;
    }
    // Eight or more of one character in a row.
    let mut run = 1;
    for pair in secret.windows(2) {
        if pair[0] == pair[1] {
            run += 1;
            if run >= 8 {
                return true;
            }
        } else {
            run = 1;
        }
    }
    false
}

/// Whether the line holding `at` carries the allow marker.
fn allowed_inline(data: &[u8], at: usize) -> bool {
    let start = memchr::memrchr(b'\n', &data[..at]).map_or(0, |i| i + 1);
    let end = memchr::memchr(b'\n', &data[at..]).map_or(data.len(), |i| at + i);
    memchr::memmem::find(&data[start..end], ALLOW_MARKER).is_some()
}

/// 1-based line and column (in bytes) of each offset, for offsets given in
/// increasing order.
#[derive(Debug)]
pub struct LineIndex<'a> {
    data: &'a [u8],
    line: usize,
    line_start: usize,
    scanned: usize,
}

impl<'a> LineIndex<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            line: 1,
            line_start: 0,
            scanned: 0,
        }
    }

    /// The (line, column) of `offset`; offsets must not decrease.
    pub fn locate(&mut self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.data.len());
        if offset < self.scanned {
            // Out of order: count from the start.
            *self = Self::new(self.data);
        }
        for newline in memchr::memchr_iter(b'\n', &self.data[self.scanned..offset]) {
            self.line += 1;
            self.line_start = self.scanned + newline + 1;
        }
        self.scanned = offset;
        (self.line, offset - self.line_start + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner() -> Scanner {
        Scanner::new(None).unwrap()
    }

    /// Every rule finds every one of its examples (as that rule) and none
    /// of its negatives.
    #[test]
    fn every_rule_finds_its_examples_and_not_its_negatives() {
        let scanner = scanner();
        for (index, rule) in scanner.rules().iter().enumerate() {
            assert!(!rule.examples.is_empty(), "{} has no example", rule.id);
            for example in &rule.examples {
                let hits = scanner.scan(example.as_bytes());
                assert!(
                    hits.iter().any(|hit| hit.rule == index),
                    "{} misses its example {example:?} (found {:?})",
                    rule.id,
                    hits.iter()
                        .map(|h| &scanner.rules()[h.rule].id)
                        .collect::<Vec<_>>()
                );
            }
            for negative in &rule.negatives {
                let hits = scanner.scan(negative.as_bytes());
                assert!(
                    hits.is_empty(),
                    "{}: negative {negative:?} was reported as {:?}",
                    rule.id,
                    hits.iter()
                        .map(|h| &scanner.rules()[h.rule].id)
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn an_allow_comment_silences_its_line_only() {
        use secrecy::ExposeSecret;
        let scanner = scanner();
        let env = keyforge_types::EnvName::parse("dev").unwrap();
        let key = keyforge_types::VirtualKey::generate(&env);
        #[expect(clippy::disallowed_methods, reason = "the test plants the key")]
        let text = key.secret().expose_secret().to_owned();
        let data = format!("a = \"{text}\"  # keyforge:allow\nb = \"{text}\"\n");
        let hits = scanner.scan(data.as_bytes());
        assert_eq!(hits.len(), 1);
        let mut lines = LineIndex::new(data.as_bytes());
        assert_eq!(lines.locate(hits[0].start), (2, 6));
    }

    fn planted_kf() -> String {
        use secrecy::ExposeSecret;
        let env = keyforge_types::EnvName::parse("dev").unwrap();
        let key = keyforge_types::VirtualKey::generate(&env);
        #[expect(clippy::disallowed_methods, reason = "the test plants the key")]
        let text = key.secret().expose_secret().to_owned();
        text
    }

    #[test]
    fn keys_split_across_concatenations_or_percent_encoded_are_found() {
        let scanner = scanner();
        let key = planted_kf();
        let (a, b) = key.split_at(15);
        let cases = [
            format!("const k = \"{a}\" + \"{b}\";"),
            format!("KEY = ('{a}'\n       '{b}')"),
            format!("$k = \"{a}\" . \"{b}\";"),
            format!("url = \"https://x.test/?key={}\"", key.replace('_', "%5F")),
        ];
        for case in cases {
            let hits = scanner.scan_deep(case.as_bytes());
            assert_eq!(hits.len(), 1, "{case}");
            let (hit, secret) = &hits[0];
            assert_eq!(secret, key.as_bytes(), "{case}");
            assert_eq!(scanner.rules()[hit.rule].id, "kf-virtual-key");
            // The span points at the original text.
            assert!(case[hit.start..].starts_with("kf"), "{case}");
        }
        // Two ordinary strings side by side are not a secret.
        assert!(
            scanner
                .scan_deep(b"print(\"hello\" + \"world\")")
                .is_empty()
        );
    }

    #[test]
    fn entropy_and_placeholders() {
        assert!(entropy(b"aaaaaaaa") < 0.01);
        assert!((entropy(b"abcdefgh") - 3.0).abs() < 1e-9);
        assert!(is_placeholder(b"sk-proj-your-key-here"));
        assert!(is_placeholder(b"AAAAAAAAAAAA"));
        assert!(!is_placeholder(b"Zq81mK0pLr7TbW3x"));
    }
}
