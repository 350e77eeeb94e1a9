//! The matching engine. All rules' keywords are found in one pass (an
//! Aho-Corasick automaton, ASCII case-insensitive); only the rules whose
//! keywords appeared run their regex, over bytes. Candidates are then
//! confirmed: checksum where the format has one, entropy, placeholders
//! (`sk-xxxx`, `your-key-here`, `<OPENAI_API_KEY>`, runs of one character),
//! and inline `keyforge:allow` comments.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind, packed};

use crate::rules::{Gate, Rule, RuleError, Validation, rules_with};

/// A comment holding this silences its line for `scan` (never for
/// `redact`, and never where it sits inside a string value: see
/// [`allowed_inline`]).
pub const ALLOW_MARKER: &[u8] = b"keyforge:allow";

/// How many first bytes decide whether a file is binary (as git looks).
const BINARY_SNIFF_BYTES: usize = 8000;
/// A file is binary when more than 1 in this many of its first bytes are
/// NULs or other control characters: one stray NUL in a `.env` is not.
const BINARY_CONTROL_SHARE: usize = 10;

/// Whether `data` opens as a compiled or compressed format: an object
/// file or executable (ELF, Mach-O, PE, WebAssembly, LLVM bitcode, Dalvik),
/// a Java class, a Python `.pyc` (a version, `\r\n`, then flags), gzip,
/// zstd or xz, PNG, JPEG or GIF. The text inside them (a `.pyc`'s
/// constants, an object file's strings) is no source a person wrote, and
/// they may hold few enough NULs to pass for text.
fn has_binary_magic(data: &[u8]) -> bool {
    const MAGIC: &[&[u8]] = &[
        b"\x7fELF",
        b"\xca\xfe\xba\xbe",
        b"\xfe\xed\xfa\xce",
        b"\xfe\xed\xfa\xcf",
        b"\xce\xfa\xed\xfe",
        b"\xcf\xfa\xed\xfe",
        b"\0asm",
        b"BC\xc0\xde",
        b"dex\n0",
        b"\x1f\x8b",
        b"\x28\xb5\x2f\xfd",
        b"\xfd7zXZ\0",
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff",
        b"GIF87a",
        b"GIF89a",
        // Python 2.7's `.pyc`.
        b"\x03\xf3\r\n",
    ];
    if MAGIC.iter().any(|magic| data.starts_with(magic)) {
        return true;
    }
    // Python 3's `.pyc`: a magic number of 3000 to 3999, `\r\n`, then a
    // 32-bit flags field of 0 to 3.
    let pyc = data.len() >= 16
        && (3000..4000).contains(&u16::from_le_bytes([data[0], data[1]]))
        && &data[2..4] == b"\r\n"
        && data[4] <= 3
        && data[5..8] == [0, 0, 0];
    // A PE executable: `MZ`, and `PE\0\0` where the DOS header points.
    let pe = data.len() >= 0x40 && data.starts_with(b"MZ") && {
        let at = u32::from_le_bytes([data[0x3c], data[0x3d], data[0x3e], data[0x3f]]) as usize;
        data.get(at..at.saturating_add(4)) == Some(b"PE\0\0")
    };
    pyc || pe
}

/// The keyword search: Teddy (SIMD, at most 64 literals) on its own
/// where it can run, which reports its matches without the automaton's
/// second look at each candidate; the Aho-Corasick automaton otherwise.
#[derive(Debug, Clone)]
enum Prefilter {
    Packed(packed::Searcher),
    Automaton(AhoCorasick),
}

impl Prefilter {
    /// Each keyword occurrence, leftmost-first: (pattern, start, end).
    fn each(&self, data: &[u8], mut visit: impl FnMut(usize, usize, usize)) {
        match self {
            Prefilter::Packed(searcher) => {
                for found in searcher.find_iter(data) {
                    visit(found.pattern().as_usize(), found.start(), found.end());
                }
            }
            Prefilter::Automaton(automaton) => {
                for found in automaton.find_iter(data) {
                    visit(found.pattern().as_usize(), found.start(), found.end());
                }
            }
        }
    }
}

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
    prefilter: Option<Prefilter>,
    /// How many literals the prefilter searches for.
    prefilter_patterns: usize,
    /// For each prefilter pattern, the rules it anchors.
    keyword_rules: Vec<Vec<usize>>,
    /// The search for [`BASE64_MARKERS`] and [`SHIFTED_BASE64_MARKERS`], a
    /// second SIMD pass: the keywords' pass holds its 64 literals.
    base64_markers: Option<packed::Searcher>,
    /// Rules without keywords: they always run.
    unanchored: Vec<usize>,
    /// Whether rules' gates apply (always, but for the test that shows
    /// they change no finding).
    gates: bool,
    /// The key of findings' fingerprints (see [`crate::fingerprint`]):
    /// random unless the caller sets the repository's.
    fingerprint_salt: Vec<u8>,
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
            let packed = packed::Config::new()
                .match_kind(packed::MatchKind::LeftmostFirst)
                .builder()
                .extend(&patterns)
                .build();
            Some(match packed {
                Some(searcher) => Prefilter::Packed(searcher),
                None => Prefilter::Automaton(
                    AhoCorasickBuilder::new()
                        .match_kind(MatchKind::LeftmostFirst)
                        .build(&patterns)
                        .map_err(|error| RuleError::Rule {
                            id: "(keywords)".into(),
                            reason: error.to_string(),
                        })?,
                ),
            })
        };
        let base64_markers = packed::Config::new()
            .match_kind(packed::MatchKind::LeftmostFirst)
            .builder()
            .extend(BASE64_MARKERS.iter().chain(SHIFTED_BASE64_MARKERS))
            .build();
        Ok(Self {
            rules,
            prefilter,
            prefilter_patterns: patterns.len(),
            keyword_rules,
            base64_markers,
            unanchored,
            gates: true,
            fingerprint_salt: crate::random_salt(),
        })
    }

    /// The same scanner with every rule's gate off: slower, and finding
    /// exactly the same secrets (the tests compare them).
    #[cfg(test)]
    fn without_gates(mut self) -> Self {
        self.gates = false;
        self
    }

    /// Keys findings' fingerprints with `salt` (the repository's, so they
    /// are stable across runs and match its baseline).
    pub fn set_fingerprint_salt(&mut self, salt: Vec<u8>) {
        self.fingerprint_salt = salt;
    }

    pub fn fingerprint_salt(&self) -> &[u8] {
        &self.fingerprint_salt
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// How many literals the keyword prefilter searches for (after those
    /// containing another are dropped). Above 64 it leaves its SIMD path
    /// for the Aho-Corasick automaton.
    pub fn prefilter_patterns(&self) -> usize {
        self.prefilter_patterns
    }

    /// Whether `data` is binary rather than text with a few stray NULs:
    /// more than one byte in [`BINARY_CONTROL_SHARE`] of its first
    /// [`BINARY_SNIFF_BYTES`] is a NUL or another control character
    /// (tabs, line ends and form feeds are text). UTF-16 text is not
    /// binary (see [`utf16_order`]).
    pub fn is_binary(data: &[u8]) -> bool {
        if has_binary_magic(data) {
            return true;
        }
        let sniff = &data[..data.len().min(BINARY_SNIFF_BYTES)];
        if memchr::memchr(0, sniff).is_none() || utf16_order(data).is_some() {
            return false;
        }
        let control = sniff
            .iter()
            .filter(|&&b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c)) || b == 0x7f)
            .count();
        control * BINARY_CONTROL_SHARE > sniff.len()
    }

    /// Every confirmed secret in `data`, in order of position.
    pub fn scan(&self, data: &[u8]) -> Vec<Hit> {
        self.scan_at(data, None)
    }

    /// Every confirmed secret in `data`, read from `path` (rules limited to
    /// some paths run only there).
    pub fn scan_at(&self, data: &[u8], path: Option<&str>) -> Vec<Hit> {
        self.hits(data, &self.windows(data, path).windows, true)
    }

    /// The confirmed secrets inside each rule's windows; with `allow`, a
    /// `keyforge:allow` comment on a secret's line drops it (`scan`), and
    /// without, nothing does (`redact`).
    fn hits(&self, data: &[u8], windows: &[Vec<(usize, usize)>], allow: bool) -> Vec<Hit> {
        let mut hits: Vec<Hit> = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            if windows[index].is_empty() {
                continue;
            }
            // One set of capture slots per rule, reused for every
            // candidate (`captures_iter` allocates one per match).
            let mut slots = rule.regex.capture_locations();
            // The shortest value the rule's regex takes (its gate's), for
            // a value cut at a query string's `&`.
            let value_min = match rule.gate {
                Some(Gate::Assignment { value_min }) => value_min,
                _ => 1,
            };
            for &(from, to) in &windows[index] {
                let window = &data[from..to];
                let mut at = 0;
                while at <= window.len() {
                    let Some(whole) = rule.regex.captures_read_at(&mut slots, window, at) else {
                        break;
                    };
                    at = whole.end().max(whole.start() + 1);
                    let (span_start, span_end) = (1..slots.len())
                        .find_map(|group| slots.get(group))
                        .unwrap_or((whole.start(), whole.end()));
                    let (start, mut end) = (from + span_start, from + span_end);
                    let matched = from + whole.start();
                    // `?token=abc&next=…`: a query string's value ends at
                    // its `&`, and the search goes on from there (the
                    // next parameter may be a secret of its own).
                    if rule.literal
                        && let Some(cut) = query_value_end(data, matched, start, end)
                    {
                        end = cut;
                        at = cut - from;
                        if end - start < value_min {
                            continue;
                        }
                    }
                    if start == end || !confirmed(rule, data, matched, start, end) {
                        continue;
                    }
                    if allow && allowed_inline(data, start) {
                        continue;
                    }
                    // Secrets that run on past their match: a key block's
                    // rule matches its header, and the block is the header
                    // and its body lines (a bare header is none); an RSA
                    // JWK's primes and exponents after its `"d"` are as
                    // secret as it.
                    let end = match rule.validation {
                        Validation::KeyBlock => {
                            match crate::blocks::key_block_end(data, start, end) {
                                Some(block_end) => block_end,
                                None => continue,
                            }
                        }
                        Validation::JwkPrivate => crate::blocks::jwk_private_end(data, end),
                        _ => end,
                    };
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

/// Where the value at `data[start..end]` ends when its setting is a
/// parameter of a URL's query string (`?token=abc&next=…`, the name right
/// after `?` or `&`): at its first `&`, which starts the next parameter.
/// `None` when the value is not in a query string or holds no `&`.
fn query_value_end(data: &[u8], matched: usize, start: usize, end: usize) -> Option<usize> {
    let in_query = matched
        .checked_sub(1)
        .is_some_and(|before| matches!(data[before], b'?' | b'&'));
    if !in_query {
        return None;
    }
    memchr::memchr(b'&', &data[start..end]).map(|i| start + i)
}

/// Byte ranges `(from, to)` of a buffer, sorted and not overlapping.
type Spans = Vec<(usize, usize)>;

/// Bytes before a keyword that a rule's regex looks at: a secret sits on
/// the keyword's line (or, for `key:` then value, the next one), within a
/// few hundred bytes of it; how far after is the rule's `window`.
const WINDOW_BEFORE: usize = 512;

impl Scanner {
    /// For each rule, the merged byte ranges its regex must look at: around
    /// each occurrence of one of its keywords (the whole buffer for a rule
    /// without keywords). Rules whose keywords do not occur, and rules
    /// limited to paths `path` is not, get none.
    /// Whether `data` holds any rule's keyword (one prefilter pass).
    pub fn has_keyword(&self, data: &[u8]) -> bool {
        let Some(prefilter) = &self.prefilter else {
            return false;
        };
        let mut found = false;
        prefilter.each(data, |_, _, _| found = true);
        found
    }

    /// Also the keyword lines, merged: each occurrence's line (from at
    /// most [`WINDOW_BEFORE`] bytes back) and the next, whatever the
    /// gates say, where [`Scanner::deep`] decides which decoded or joined
    /// views are worth building (a gate refuses `"api_" + "key=…"`, whose
    /// joined view a rule takes).
    fn windows(&self, data: &[u8], path: Option<&str>) -> Keywords {
        let mut windows: Vec<Vec<(usize, usize)>> = vec![Vec::new(); self.rules.len()];
        let mut lines: Vec<(usize, usize)> = Vec::new();
        let runs = |rule: &Rule| match (&rule.path, path) {
            (None, _) => true,
            (Some(_), Some(EVERY_PATH)) => true,
            (Some(wanted), Some(path)) => wanted.is_match(path),
            (Some(_), None) => false,
        };
        for &index in &self.unanchored {
            if runs(&self.rules[index]) {
                windows[index].push((0, data.len()));
                lines = vec![(0, data.len())];
            }
        }
        let Some(prefilter) = &self.prefilter else {
            return Keywords { windows, lines };
        };
        prefilter.each(data, |pattern, start, end| {
            let mut line_from = None;
            let mut reach = (0, 0);
            // Read once for all the keyword's assignment-gated rules.
            let mut opening: Option<Opening> = None;
            for &rule in &self.keyword_rules[pattern] {
                if !runs(&self.rules[rule]) {
                    continue;
                }
                let line = *line_from.get_or_insert_with(|| {
                    let low = start.saturating_sub(WINDOW_BEFORE);
                    let from =
                        memchr::memrchr(b'\n', &data[low..start]).map_or(low, |i| low + i + 1);
                    let high = (end + crate::rules::DEFAULT_WINDOW).min(data.len());
                    let to = match memchr::memchr(b'\n', &data[end..high]) {
                        Some(i) => {
                            let next = end + i + 1;
                            memchr::memchr(b'\n', &data[next..high]).map_or(high, |j| next + j)
                        }
                        None => high,
                    };
                    match lines.last_mut() {
                        Some(last) if from <= last.1 => last.1 = last.1.max(to),
                        _ => lines.push((from, to)),
                    }
                    from
                });
                let opens = match self.rules[rule].gate.filter(|_| self.gates) {
                    Some(Gate::Assignment { value_min }) => opening
                        .get_or_insert_with(|| assignment_opening(data, start, end))
                        .admits(value_min),
                    Some(gate) => gate_opens(gate, data, start, end),
                    None => Some(line),
                };
                let Some(from) = opens else { continue };
                let window = self.rules[rule].window;
                if reach.0 != window {
                    let high = (end + window).min(data.len());
                    // The rest of the line, and the next one.
                    let to = match memchr::memchr(b'\n', &data[end..high]) {
                        Some(i) => {
                            let next = end + i + 1;
                            memchr::memchr(b'\n', &data[next..high]).map_or(high, |j| next + j)
                        }
                        None => high,
                    };
                    reach = (
                        window,
                        if window > crate::rules::DEFAULT_WINDOW {
                            high
                        } else {
                            to
                        },
                    );
                }
                let to = reach.1;
                let list = &mut windows[rule];
                match list.last_mut() {
                    Some(last) if from <= last.1 => {
                        last.0 = last.0.min(from);
                        last.1 = last.1.max(to);
                    }
                    _ => list.push((from, to)),
                }
            }
        });
        Keywords { windows, lines }
    }
}

/// What the keyword search found in a buffer.
#[derive(Debug)]
struct Keywords {
    /// For each rule, the merged byte ranges its regex must look at.
    windows: Vec<Spans>,
    /// The keyword lines, merged (see [`Scanner::windows`]).
    lines: Spans,
}

/// base64 of what opens the secrets most worth finding encoded, as it
/// reads when the secret opens the encoded text (`base64 <<< "$KEY"`, a
/// Secret's `data`, a CI variable): `c2st` (`sk-`: OpenAI, Anthropic,
/// DeepSeek…), `c2tf` (`sk_`: Stripe), `QUtJQ` (`AKIA`), `a2Zf` (`kf_`),
/// `Z2hwX` (`ghp_`), `LS0tLS1CRUdJT` (`-----BEGIN`, a PEM block), and of
/// JSON (`eyJ` is `{"`, `ewog` is `{\n `: a credentials file or a docker
/// config encoded whole, whose secrets sit at any alignment). The base64
/// run around each is decoded and scanned like a Kubernetes Secret's
/// values; other encoded text is decoded where a generic rule found it as
/// a value, and everywhere by `redact`. They are searched with
/// [`SHIFTED_BASE64_MARKERS`] in a pass of their own.
const BASE64_MARKERS: &[&str] = &[
    "c2st",
    "c2tf",
    "QUtJQ",
    "a2Zf",
    "Z2hwX",
    "LS0tLS1CRUdJT",
    "eyJ",
    "ewog",
];

/// base64 of the same openings one and two bytes into a 3-byte group (a
/// key after `token: ` in the encoded text, whose encoding depends on its
/// offset), only the characters that offset leaves fixed: `sk-` reads
/// `NrL` or `zay`, `sk_` `NrX` or `za1`, `AKIA` `FLSU` or `BS0lB`, `kf_`
/// `tmX` or `rZl`, `ghp_` `docF` or `naHBf`, `-----BEGIN`
/// `0tLS0tQkVHSU` or `tLS0tLUJFR0lO`. And base64 of the aligned markers
/// (`YzJzd` opens base64 of `c2st`…): base64 of base64 anywhere, not only in
/// a Kubernetes Secret.
const SHIFTED_BASE64_MARKERS: &[&str] = &[
    "NrL",
    "zay",
    "NrX",
    "za1",
    "FLSU",
    "BS0lB",
    "tmX",
    "rZl",
    "docF",
    "naHBf",
    "0tLS0tQkVHSU",
    "tLS0tLUJFR0lO",
    "YzJzd",
    "YzJ0Z",
    "UVV0Sl",
    "YTJaZ",
    "WjJod1",
    "TFMwdExTMUNSVWRKV",
];

impl Scanner {
    /// Where a [`BASE64_MARKERS`] or [`SHIFTED_BASE64_MARKERS`] pattern
    /// starts in `data`, in order.
    fn base64_markers(&self, data: &[u8]) -> Vec<usize> {
        self.base64_markers
            .as_ref()
            .map_or_else(Vec::new, |searcher| {
                searcher
                    .find_iter(data)
                    .map(|found| found.start())
                    .collect()
            })
    }
}

/// The base64 run around each marker: [`MIN_BASE64_RUN`] to
/// [`MAX_BASE64_RUN`] characters with capitals and small letters.
fn runs_around(data: &[u8], markers: &[usize]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    // Where the last run looked at ended, taken or not: the markers inside
    // it are the same run (a hostile line of `c2stc2st…` holds millions),
    // so each byte is read a bounded number of times.
    let mut covered = 0;
    for &at in markers {
        if at < covered {
            continue;
        }
        let low = at.saturating_sub(MAX_BASE64_RUN);
        let start = data[low..at]
            .iter()
            .rposition(|&b| !BASE64[usize::from(b)])
            .map_or(low, |i| low + i + 1);
        let high = data.len().min(at + MAX_BASE64_RUN);
        let mut end = data[at..high]
            .iter()
            .position(|&b| !BASE64[usize::from(b)])
            .map_or(high, |i| at + i);
        while end < data.len() && data[end] == b'=' && end - start < MAX_BASE64_RUN {
            end += 1;
        }
        let end = wrapped_end(data, start, end);
        covered = end;
        // The marker says the run is base64: unlike a run found with no
        // marker, it needs no digit (`QUtJQVJTWlNR…` is an access key id).
        let run = &data[start..end];
        if (MIN_BASE64_RUN..=MAX_BASE64_RUN).contains(&run.len())
            && run.iter().any(u8::is_ascii_uppercase)
            && run.iter().any(u8::is_ascii_lowercase)
        {
            runs.push((start, end));
        }
    }
    runs
}

/// Whether a keyword found at `data[start..end]` passes `gate`, and if so
/// where the window of the gated rule starts (the setting's name, the
/// XML element, the URL's scheme). See [`Gate`]: each test is a necessary
/// condition of the regex it guards, and looks at most [`WINDOW_BEFORE`]
/// bytes back and one line ahead.
fn gate_opens(gate: Gate, data: &[u8], start: usize, end: usize) -> Option<usize> {
    match gate {
        Gate::UrlAuthority => url_authority_opens(data, start, end),
        Gate::Assignment { value_min } => assignment_opening(data, start, end).admits(value_min),
    }
}

/// Back from `start` to the first byte of a run of `class`; past
/// [`WINDOW_BEFORE`] bytes, where a window would start ungated (a line
/// start), cutting no match.
fn run_start(data: &[u8], start: usize, class: fn(u8) -> bool) -> usize {
    let low = start.saturating_sub(WINDOW_BEFORE);
    let run = data[low..start].iter().rposition(|&b| !class(b));
    match run {
        Some(i) => low + i + 1,
        None if low == 0 => 0,
        None => memchr::memrchr(b'\n', &data[low..start]).map_or(low, |i| low + i + 1),
    }
}

/// [`Gate::UrlAuthority`] at a `://` found at `data[start..end]`.
fn url_authority_opens(data: &[u8], start: usize, end: usize) -> Option<usize> {
    let rest = &data[end..data.len().min(end + 512)];
    let stop = rest
        .iter()
        .position(|&b| {
            b.is_ascii_whitespace() || matches!(b, b'/' | b'?' | b'"' | b'\'' | b'<' | b'>')
        })
        .unwrap_or(rest.len());
    let authority = &rest[..stop];
    let credentials = memchr::memchr(b':', authority)
        .is_some_and(|colon| memchr::memchr(b'@', &authority[colon..]).is_some());
    // The scheme, and any word bytes before it: the window must start
    // where the regex's `\b` can, never inside a word.
    credentials.then(|| {
        run_start(data, start, |b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'.' | b'-')
        })
    })
}

/// What a keyword occurrence offers the [`Gate::Assignment`] gates of its
/// rules, read once for all of them (they differ only in the shortest
/// value they take, `value_min`).
#[derive(Debug, Clone, Copy)]
struct Opening {
    /// Where a gated window starts: the setting's name, or the XML
    /// element.
    from: usize,
    /// Bytes of the value that follows (`usize::MAX`: any rule's value
    /// may, a block scalar or an XML element); `None`: no assignment.
    value: Option<usize>,
}

impl Opening {
    /// Where the window of a rule taking values of `value_min` bytes or
    /// more starts, if the gate opens for it.
    fn admits(self, value_min: usize) -> Option<usize> {
        self.value
            .is_some_and(|value| value >= value_min)
            .then_some(self.from)
    }
}

/// [`Gate::Assignment`] at a keyword found at `data[start..end]`, for
/// every `value_min` at once.
fn assignment_opening(data: &[u8], start: usize, end: usize) -> Opening {
    let low = start.saturating_sub(WINDOW_BEFORE);
    let name = run_start(data, start, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
    });
    // `<Pass …>`, `<ns:Password>`: an XML element's name.
    let element = match name.checked_sub(1).map(|i| data[i]) {
        Some(b'<') => Some(name - 1),
        Some(b':') => {
            let prefix = data[low..name - 1]
                .iter()
                .rposition(|b| !b.is_ascii_alphabetic())
                .map(|i| low + i);
            prefix.filter(|&lt| data[lt] == b'<')
        }
        _ => None,
    };
    match element {
        Some(from) => Opening {
            from,
            value: Some(usize::MAX),
        },
        None => Opening {
            from: name,
            value: assignment_value(data, end),
        },
    }
}

/// Whether the name around a keyword ending at `end` goes on to an
/// assignment of a value the rules' regexes could take, and how long a
/// value: the rest of the name (`[A-Za-z0-9_]`), a closing quote (escaped
/// or not), `]`, white space, `=`, `:`, `:=`, `=>` (or `,` after a
/// quote), blanks, then a quoted string (a bytes or raw literal too) on
/// the line (its length), a bare run (none of `\s"'`<>;,(){}[]`, not
/// starting with `:` or `=`: its length), or a block scalar (`|`, `>`:
/// any length, as past each skip's bound). `None` when no assignment
/// follows. A value split by a string joint or behind escapes is the
/// views' business: they are scanned with gates of their own.
fn assignment_value(data: &[u8], end: usize) -> Option<usize> {
    let at = |i: usize| data.get(i).copied();
    let mut i = end;
    // Each skip is bounded, and past its bound the gate lets the regex
    // decide: unbounded, a line of keywords would cost its length at each.
    while at(i).is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
        i += 1;
        if i - end > VALUE_REACH {
            return Some(usize::MAX);
        }
    }
    let quoted = matches!(at(i), Some(b'"' | b'\''));
    if quoted {
        i += 1;
    }
    if at(i) == Some(b']') {
        i += 1;
    }
    let blanks = i;
    while at(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
        if i - blanks > VALUE_REACH {
            return Some(usize::MAX);
        }
    }
    i += match (at(i), at(i + 1)) {
        (Some(b':'), Some(b'=')) | (Some(b'='), Some(b'>')) => 2,
        (Some(b':' | b'='), _) => 1,
        (Some(b','), _) if quoted => 1,
        _ => return None,
    };
    let spaces = i;
    while matches!(at(i), Some(b' ' | b'\t')) {
        i += 1;
        if i - spaces > VALUE_REACH {
            return Some(usize::MAX);
        }
    }
    // The value's line, as far as a regex's value can reach (300 bytes and
    // its quotes): looking further would make a long line of keywords
    // quadratic.
    let reach = data.len().min(i.saturating_add(VALUE_REACH));
    let line_end = memchr::memchr(b'\n', &data[i.min(reach)..reach]).map_or(reach, |n| i + n);
    // Python's bytes and raw literals: `b'…'`, `rb"…"`, `Br'…'`.
    let prefix = |b: Option<u8>| matches!(b, Some(b'b' | b'B' | b'r' | b'R'));
    let quote = |b: Option<u8>| matches!(b, Some(b'"' | b'\''));
    if prefix(at(i)) && quote(at(i + 1)) {
        i += 1;
    } else if prefix(at(i)) && prefix(at(i + 1)) && quote(at(i + 2)) {
        i += 2;
    }
    match at(i) {
        None | Some(b':' | b'=') => None,
        Some(b'|' | b'>') => Some(usize::MAX),
        Some(quote @ (b'"' | b'\'')) => memchr::memchr(quote, &data[i + 1..line_end]),
        Some(_) => Some(
            data[i..line_end]
                .iter()
                .take_while(|&&b| {
                    !(b.is_ascii_whitespace()
                        || matches!(
                            b,
                            b'"' | b'\''
                                | b'`'
                                | b'<'
                                | b'>'
                                | b';'
                                | b','
                                | b'('
                                | b')'
                                | b'{'
                                | b'}'
                                | b'['
                                | b']'
                        ))
                })
                .count(),
        ),
    }
}

/// Bytes after an assignment's operator that [`assignment_value`] reads.
const VALUE_REACH: usize = 512;

/// A transformed copy of a buffer (string concatenations joined, or
/// percent-encoding decoded) with the way back to the original offsets.
#[derive(Debug)]
pub struct View {
    pub bytes: Vec<u8>,
    /// Segment starts: (offset in the view, offset in the original), sorted.
    map: Vec<(usize, usize)>,
}

impl View {
    /// The original offset just past the view's bytes `..end`: past the
    /// whole original form of the last character (`%5F`, a UTF-16 unit).
    pub fn original_end(&self, end: usize, original_len: usize) -> usize {
        let last = self.original(end.saturating_sub(1));
        let next = if end >= self.bytes.len() {
            original_len
        } else {
            self.original(end)
        };
        // An escape or a code unit is at most six bytes (`\u00XX`); a
        // longer gap is a removed joint, not part of the secret.
        if next > last && next - last <= 6 {
            next
        } else {
            last + 1
        }
    }

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
const JOINT: &str = r#"["'`][ \t]*(?:\+|\.\.?|\\)?[ \t]*(?:\r?\n[ \t]*(?:\+|\.\.?)?[ \t]*)?["'`]"#;

/// [`JOINT`] anchored at the start of the haystack: a test at one place,
/// with no search ahead.
#[expect(
    clippy::expect_used,
    reason = "a constant pattern, exercised by the tests"
)]
fn joint_here() -> &'static regex::bytes::Regex {
    static JOINT_HERE: std::sync::OnceLock<regex::bytes::Regex> = std::sync::OnceLock::new();
    JOINT_HERE
        .get_or_init(|| regex::bytes::Regex::new(&format!("^(?:{JOINT})")).expect("constant regex"))
}

/// Whether the joint at `data[start..end]` joins two pieces of a key: a
/// key character (`[A-Za-z0-9_+/=-]`) ends the string before it and starts
/// the one after. Not an empty string (`""`), nor Rust's or C's character
/// literals (`' '`, `'\''`, `'"'`), which code is full of, nor two
/// quotes alone (`""`, `''`: an empty string, or SQL's escaped quote).
fn is_key_joint(data: &[u8], start: usize, end: usize) -> bool {
    let empty = end - start == 2 && data[start] == data[start + 1];
    !empty
        && start > 0
        && is_key_byte(data[start - 1])
        && data.get(end).copied().is_some_and(is_key_byte)
}

/// A byte keys are made of: `[A-Za-z0-9_+/=-]`.
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'/' | b'=' | b'-')
}

/// Whether a string joint between two pieces of a key sits in a keyword
/// window: only then can joining strings complete a secret a rule sees.
/// Only quotes right after a key character are tried (a memchr pass), the
/// joint regex anchored there.
fn joint_in_windows(data: &[u8], windows: &[(usize, usize)]) -> bool {
    windows
        .iter()
        .any(|&(from, to)| key_joints(data, from, to).next().is_some())
}

/// The joints between two pieces of a key ([`is_key_joint`]) that start
/// in `data[from..to]`, in order and not overlapping: only quotes right
/// after a key character are tried (a memchr pass), the joint regex
/// anchored there.
fn key_joints(data: &[u8], from: usize, to: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    let joints = joint_here();
    let mut past = from;
    memchr::memchr3_iter(b'"', b'\'', b'`', &data[from..to]).filter_map(move |i| {
        let at = from + i;
        if at < past || at == 0 || !is_key_byte(data[at - 1]) {
            return None;
        }
        let tail = &data[at..data.len().min(at + 256)];
        let end = at + joints.find(tail)?.end();
        (is_key_joint(data, at, end) && !ends_a_statement(data, at, end)).then(|| {
            past = end;
            (at, end)
        })
    })
}

/// Whether the joint at `data[start..end]` crosses a line break with no
/// joiner (`+`, `.`, `..`, `\\`) and the string after it is a name being
/// set (followed by `:` or `=`: `token = "abc"` then `"other" = 1` on the
/// next line): two statements, not one string written over two lines.
fn ends_a_statement(data: &[u8], start: usize, end: usize) -> bool {
    let joint = &data[start..end];
    if memchr::memchr(b'\n', joint).is_none()
        || joint.iter().any(|b| matches!(b, b'+' | b'.' | b'\\'))
    {
        return false;
    }
    let quote = data[end - 1];
    let line_end = memchr::memchr(b'\n', &data[end..]).map_or(data.len(), |i| end + i);
    memchr::memchr(quote, &data[end..line_end]).is_some_and(|close| {
        let after = data[end + close + 1..line_end].trim_ascii_start();
        matches!(after.first(), Some(b':' | b'='))
    })
}

/// The buffer with string concatenations joined, if it has any.
fn joined(data: &[u8]) -> Option<View> {
    let mut found = key_joints(data, 0, data.len()).peekable();
    found.peek()?;
    let mut bytes = Vec::with_capacity(data.len());
    let mut map = vec![(0, 0)];
    let mut at = 0;
    for (start, end) in found {
        bytes.extend_from_slice(&data[at..start]);
        at = end;
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

/// The path that every rule limited to some paths runs on (a NUL is in no
/// file name): see [`Scanner::scan_deep_every_run_named`].
const EVERY_PATH: &str = "\0every path";

/// How deep views nest (base64 inside JSON escapes inside UTF-16...).
const MAX_VIEW_DEPTH: usize = 2;
/// Shortest base64 run decoded: 18 bytes of secret.
const MIN_BASE64_RUN: usize = 24;
/// Longest base64 run decoded.
const MAX_BASE64_RUN: usize = 1024 * 1024;
/// Bytes of base64 decoded per buffer at most (a bound on the work a
/// hostile file can ask for).
const MAX_BASE64_TOTAL: usize = 16 * 1024 * 1024;

impl Scanner {
    /// Every confirmed secret, including those split across string
    /// concatenations, percent-encoded, behind JSON string escapes
    /// (notebooks' cells), base64-encoded (Kubernetes `Secret.data`) or in
    /// UTF-16 text, with spans in `data`'s offsets (for an encoded secret,
    /// the encoded span). The second field is the secret as found (joined
    /// or decoded).
    pub fn scan_deep(&self, data: &[u8]) -> Vec<(Hit, Vec<u8>)> {
        self.scan_deep_at(data, None)
    }

    /// [`Scanner::scan_deep`] for data read from `path`.
    pub fn scan_deep_at(&self, data: &[u8], path: Option<&str>) -> Vec<(Hit, Vec<u8>)> {
        self.deep(data, path, 0, false, true)
    }

    /// [`Scanner::scan_deep`] decoding every base64 run, not only those of
    /// a Kubernetes Secret or of a value a generic rule found: for a
    /// stream seen a line at a time (`redact`), where a Secret's `data:`
    /// lines come before its `kind:` line (kubectl's order). It finds all
    /// that `scan_deep` finds, and more: `keyforge:allow` markers are
    /// ignored (a log line can carry one inside its data, as in
    /// `user_agent="keyforge:allow" token=…`).
    pub fn scan_deep_every_run(&self, data: &[u8]) -> Vec<(Hit, Vec<u8>)> {
        self.deep(data, None, 0, true, false)
    }

    /// [`Scanner::scan_deep_every_run`] for `redact`: a stream read as
    /// the file `name` runs the rules limited to paths that name matches;
    /// a stream without a name runs every rule limited to some path (a
    /// `.pgpass` line is removed wherever it shows up: redaction errs
    /// toward removing). `keyforge:allow` markers are ignored.
    pub fn scan_deep_every_run_named(
        &self,
        data: &[u8],
        name: Option<&str>,
    ) -> Vec<(Hit, Vec<u8>)> {
        self.deep(data, Some(name.unwrap_or(EVERY_PATH)), 0, true, false)
    }

    /// `allow`: whether `keyforge:allow` comments silence their lines
    /// (`scan`), or nothing does (`redact`).
    fn deep(
        &self,
        data: &[u8],
        path: Option<&str>,
        depth: usize,
        every_run: bool,
        allow: bool,
    ) -> Vec<(Hit, Vec<u8>)> {
        // One keyword search serves both the buffer and the decision
        // whether a joined view is worth building.
        let Keywords { windows, lines } = self.windows(data, path);
        let mut all: Vec<(Hit, Vec<u8>)> = self
            .hits(data, &windows, allow)
            .into_iter()
            .map(|hit| (hit, data[hit.start..hit.end].to_vec()))
            .collect();
        if depth >= MAX_VIEW_DEPTH {
            return all;
        }
        let mut views = Vec::new();
        if let Some(order) = utf16_order(data) {
            views.extend(utf16_decoded(data, order));
        }
        let keywords_found = !lines.is_empty();
        if keywords_found && joint_in_windows(data, &lines) {
            views.extend(regional(data, &lines, joined));
        }
        // Percent-encoded key characters anywhere, or an encoded separator
        // (`key%3A%20AKIA…`, `Authorization%3A%20Bearer%20…`) on a keyword
        // line: the encoded separator keeps a rule from matching.
        if has_key_escapes(data)
            || (keywords_found
                && [&b"%3A"[..], b"%3a", b"%20"]
                    .iter()
                    .any(|needle| windows_hold(data, &lines, needle)))
        {
            views.extend(percent_decoded(data));
        }
        // A coloured log line (`\x1b[32mAPI_KEY=…\x1b[0m`): read as it
        // prints.
        if keywords_found && windows_hold(data, &lines, b"\x1b") {
            views.extend(ansi_stripped(data));
        }
        // JSON documents and JSON lines (a notebook, a JSON log): their
        // strings hold escapes.
        let json_like = data
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| matches!(b, b'{' | b'['));
        // And JSON inside other text (a container log's `… stdout F {"msg":
        // "token = \"…\""}`, a notebook line in a diff): an escaped quote
        // near a keyword.
        // And `\u00XX` escapes anywhere (`"sk\u002dproj\u002d…"`): they
        // may hide the keyword itself, so their own lines are decoded too.
        let json_keywords = keywords_found
            && ((json_like && windows_hold(data, &lines, b"\\"))
                || windows_hold(data, &lines, b"\\\""));
        let escaped = unicode_escape_lines(data);
        if json_keywords || !escaped.is_empty() {
            let regions = if json_keywords {
                merged_spans(&lines, &escaped)
            } else {
                escaped
            };
            views.extend(regional(data, &regions, json_unescaped));
        }
        // A secret seen in a view is new unless it overlaps one already
        // found; a more specific rule (earlier in the list) seeing it
        // through a view replaces a generic one that saw its encoding.
        // A view's hit that holds a same-rule hit of the buffer and more is
        // the whole of a secret the buffer saw only a piece of (the first
        // literal of `"sk-proj-…" + "…"`, long enough for the rule alone):
        // it replaces the piece, so the report and `redact` cover it all.
        let known = |all: &mut Vec<(Hit, Vec<u8>)>, hit: Hit, secret: Vec<u8>| {
            let overlapping = |other: &Hit| other.start < hit.end && hit.start < other.end;
            let extends = |other: &Hit| {
                other.rule == hit.rule
                    && hit.start <= other.start
                    && other.end <= hit.end
                    && hit.end - hit.start > other.end - other.start
            };
            if all
                .iter()
                .any(|(other, _)| overlapping(other) && other.rule <= hit.rule && !extends(other))
            {
                return;
            }
            all.retain(|(other, _)| !overlapping(other));
            all.push((hit, secret));
        };
        for view in views {
            for (hit, secret) in self.deep(&view.bytes, path, depth + 1, every_run, allow) {
                let start = view.original(hit.start);
                let end = view.original_end(hit.end, data.len());
                let hit = Hit {
                    rule: hit.rule,
                    start,
                    end: end.max(start + 1),
                };
                known(&mut all, hit, secret);
            }
        }
        // base64 runs: each decoded on its own and scanned; a secret found
        // inside is reported at the whole encoded run.
        // Which runs: in a Kubernetes Secret, all; elsewhere, the values a
        // generic assignment rule found (`OPENAI_API_KEY: <base64>`, a
        // docker `auth`) and the runs around a [`BASE64_MARKERS`] pattern
        // (an encoded key or JSON document anywhere). Looking for runs in
        // every byte of a tree costs a pass over all of it.
        let runs = if every_run || is_kubernetes_secret(data) {
            // And the runs around markers, which need no digit: base64 of
            // an access key id (`QUtJQ…`, often digit-free) inside base64
            // was missed about one time in ten.
            let mut runs = base64_runs(data);
            runs.extend(runs_around(data, &self.base64_markers(data)));
            runs.sort_unstable();
            runs.dedup();
            runs
        } else {
            let mut runs: Vec<(usize, usize)> = all
                .iter()
                .filter(|(hit, _)| self.rules[hit.rule].literal)
                .flat_map(|(hit, _)| {
                    base64_runs(&data[hit.start..hit.end])
                        .into_iter()
                        .map(|(a, b)| (hit.start + a, hit.start + b))
                })
                .collect();
            runs.extend(runs_around(data, &self.base64_markers(data)));
            runs.sort_unstable();
            runs.dedup();
            runs
        };
        let mut decoded_total = 0;
        for (run_start, run_end) in runs {
            if decoded_total >= MAX_BASE64_TOTAL {
                break;
            }
            // A run inside a key a specific rule found is that key; one a
            // generic assignment rule found may still decode to a key.
            if all.iter().any(|(other, _)| {
                other.start <= run_start && run_end <= other.end && !self.rules[other.rule].literal
            }) {
                continue;
            }
            // A run may open with one to three base64-class characters
            // that are not part of the encoding (`x_c2st…`, `-c2st…`: a
            // name or a dash glued on): decoded from each of its first four
            // offsets until one reads as text (a wrong alignment of text
            // decodes to bytes that are not). Every attempt counts.
            let mut attempts = (0..4).filter(|skip| run_start + skip + MIN_BASE64_RUN <= run_end);
            let Some(decoded) = attempts.find_map(|skip| {
                decoded_total += (run_end - run_start - skip) * 3 / 4;
                base64_text(&data[run_start + skip..run_end])
            }) else {
                continue;
            };
            // base64 of base64 (a Secret of an encoded value, a docker
            // `auth` of a token): a decoded text that is itself one base64
            // run has its runs decoded too, within the depth bound. Each
            // level decodes at most 3/4 of the bytes of the one above.
            let nested = every_run || is_one_base64_run(&decoded);
            for (hit, secret) in self.deep(&decoded, path, depth + 1, nested, allow) {
                let hit = Hit {
                    rule: hit.rule,
                    start: run_start,
                    end: run_end,
                };
                known(&mut all, hit, secret);
            }
        }
        all.sort_by_key(|(hit, _)| hit.start);
        all
    }
}

/// Bytes past a keyword line that a joined or decoded view of it still
/// takes: a key concatenated over several lines, a long escaped string.
const VIEW_REACH: usize = crate::rules::DEFAULT_WINDOW;

/// `transform` (joining strings, decoding JSON escapes) applied to the
/// keyword lines only, each reaching [`VIEW_REACH`] further, rather than
/// to the whole buffer: a view of the places a secret can be, not a
/// second copy of every file to scan again. Regions `transform` leaves as
/// they are are left out (their bytes were scanned already); regions are
/// separated by a line break. `None` when no region changes.
fn regional(
    data: &[u8],
    lines: &[(usize, usize)],
    transform: fn(&[u8]) -> Option<View>,
) -> Option<View> {
    let mut bytes = Vec::new();
    let mut map = Vec::new();
    let mut region: Option<(usize, usize)> = None;
    let mut apply = |(from, to): (usize, usize)| {
        if let Some(view) = transform(&data[from..to]) {
            let base = bytes.len();
            map.extend(view.map.iter().map(|&(v, o)| (base + v, from + o)));
            // The first region's bytes are taken as they are: a region is
            // often most of a file, and a second copy of it costs as much
            // as the first (fresh pages, zeroed by the kernel).
            if bytes.is_empty() {
                bytes = view.bytes;
            } else {
                bytes.extend_from_slice(&view.bytes);
            }
            map.push((bytes.len(), to));
            bytes.push(b'\n');
        }
    };
    for &(from, to) in lines {
        let to = data.len().min(to + VIEW_REACH);
        region = match region {
            Some((a, b)) if from <= b => Some((a, b.max(to))),
            Some(done) => {
                apply(done);
                Some((from, to))
            }
            None => Some((from, to)),
        };
    }
    if let Some(done) = region {
        apply(done);
    }
    (!bytes.is_empty()).then_some(View { bytes, map })
}

/// Whether `data` is a Kubernetes Secret, in YAML or JSON (`kubectl get
/// secret -o json`): all its base64 runs are decoded.
fn is_kubernetes_secret(data: &[u8]) -> bool {
    // One pass for `Secret`, then a look back at each for how YAML or JSON
    // names the kind (three whole-buffer searches were 4 % of a tree
    // scan's instructions).
    memchr::memmem::find_iter(data, b"Secret").any(|at| {
        let before = &data[..at];
        [&b"kind: "[..], b"\"kind\": \"", b"\"kind\":\""]
            .iter()
            .any(|lead| before.ends_with(lead))
    })
}

/// Whether `text` is one base64 run (either alphabet, padded or not),
/// blanks around it aside.
fn is_one_base64_run(text: &[u8]) -> bool {
    let text = text.trim_ascii();
    let body = text
        .iter()
        .rposition(|&c| c != b'=')
        .map_or(&text[..0], |i| &text[..=i]);
    body.len() >= MIN_BASE64_RUN && body.iter().all(|&b| BASE64[usize::from(b)])
}

/// Most lines holding a `\u00XX` escape that [`unicode_escape_lines`]
/// lists (a bound on the work a file of escapes can ask for; the lines are
/// merged first, so one long JSON line counts once).
const MAX_ESCAPE_LINES: usize = 4096;

/// The lines (and the next, as keyword lines have) holding a JSON
/// `\u00XX` escape of a printable ASCII character: sorted, merged spans.
fn unicode_escape_lines(data: &[u8]) -> Spans {
    let mut spans: Spans = Vec::new();
    let mut past = 0;
    for at in memchr::memmem::find_iter(data, b"\\u00") {
        // Only an escape of printable ASCII (`\u0020` to `\u007F`) can
        // stand for a key's character; `\u00e9` in a translation file
        // cannot.
        if at < past || !matches!(data.get(at + 4), Some(b'2'..=b'7')) {
            continue;
        }
        let from = memchr::memrchr(b'\n', &data[..at]).map_or(0, |i| i + 1);
        let to = match memchr::memchr(b'\n', &data[at..]) {
            Some(i) => {
                let next = at + i + 1;
                memchr::memchr(b'\n', &data[next..]).map_or(data.len(), |j| next + j)
            }
            None => data.len(),
        };
        past = to;
        match spans.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => {
                if spans.len() >= MAX_ESCAPE_LINES {
                    break;
                }
                spans.push((from, to));
            }
        }
    }
    spans
}

/// Two sorted span lists as one, sorted and merged.
fn merged_spans(a: &[(usize, usize)], b: &[(usize, usize)]) -> Spans {
    let mut all: Spans = a.iter().chain(b).copied().collect();
    all.sort_unstable();
    let mut merged: Spans = Vec::with_capacity(all.len());
    for (from, to) in all {
        match merged.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => merged.push((from, to)),
        }
    }
    merged
}

/// Whether any keyword window holds `needle`.
fn windows_hold(data: &[u8], windows: &[(usize, usize)], needle: &[u8]) -> bool {
    windows
        .iter()
        .any(|&(from, to)| memchr::memmem::find(&data[from..to], needle).is_some())
}

/// The buffer with JSON (and C-style) string escapes decoded: `\"`, `\\`,
/// `\/`, `\n`, `\t`, `\r`, `\uXXXX`. A notebook's cell source is such
/// strings; so is a secret inside a JSON-encoded log line.
fn json_unescaped(data: &[u8]) -> Option<View> {
    // Most regions hold no escape at all (a `.cargo-checksum.json`, a test
    // vector file): say so before copying them.
    let escapes = |at: usize| {
        matches!(
            data.get(at + 1),
            Some(b'"' | b'\'' | b'\\' | b'/' | b'n' | b't' | b'r' | b'u')
        )
    };
    let first = memchr::memchr_iter(b'\\', data).find(|&at| escapes(at))?;
    let mut bytes = Vec::with_capacity(data.len());
    bytes.extend_from_slice(&data[..first]);
    let mut map = vec![(0, 0)];
    let mut i = first;
    let mut any = false;
    while i < data.len() {
        let Some(found) = memchr::memchr(b'\\', &data[i..]) else {
            bytes.extend_from_slice(&data[i..]);
            break;
        };
        let at = i + found;
        bytes.extend_from_slice(&data[i..at]);
        let (decoded, used): (Option<char>, usize) = match data.get(at + 1) {
            Some(b'"') => (Some('"'), 2),
            Some(b'\'') => (Some('\''), 2),
            Some(b'\\') => (Some('\\'), 2),
            Some(b'/') => (Some('/'), 2),
            Some(b'n') => (Some('\n'), 2),
            Some(b't') => (Some('\t'), 2),
            Some(b'r') => (Some('\r'), 2),
            Some(b'u') => (
                data.get(at + 2..at + 6)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .and_then(char::from_u32),
                6,
            ),
            _ => (None, 1),
        };
        match decoded {
            Some(c) => {
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                i = at + used;
                map.push((bytes.len(), i));
                any = true;
            }
            None => {
                bytes.push(b'\\');
                i = at + 1;
            }
        }
    }
    any.then_some(View { bytes, map })
}

/// The buffer with ANSI terminal escapes removed: CSI sequences
/// (`\x1b[32m`, `\x1b[0m`, `\x1b[2K`), OSC sequences (`\x1b]…` to BEL or
/// `\x1b\\`, at most 256 bytes) and two-byte escapes. `None` when there
/// are none.
fn ansi_stripped(data: &[u8]) -> Option<View> {
    let first = memchr::memchr(0x1b, data)?;
    let mut bytes = Vec::with_capacity(data.len());
    bytes.extend_from_slice(&data[..first]);
    let mut map = vec![(0, 0)];
    let mut i = first;
    let mut any = false;
    while i < data.len() {
        let Some(found) = memchr::memchr(0x1b, &data[i..]) else {
            bytes.extend_from_slice(&data[i..]);
            break;
        };
        let at = i + found;
        bytes.extend_from_slice(&data[i..at]);
        match escape_length(&data[at..]) {
            0 => {
                bytes.push(0x1b);
                i = at + 1;
            }
            length => {
                i = at + length;
                map.push((bytes.len(), i));
                any = true;
            }
        }
    }
    any.then_some(View { bytes, map })
}

/// The length of the terminal escape `rest` opens with (0: none).
fn escape_length(rest: &[u8]) -> usize {
    match rest.get(1) {
        Some(b'[') => {
            // Parameters and intermediates, then one final byte.
            let body = rest[2..]
                .iter()
                .take(32)
                .position(|b| !(0x20..=0x3f).contains(b))
                .map_or(0, |at| at + 2);
            match rest.get(body) {
                Some(0x40..=0x7e) if body > 0 => body + 1,
                _ => 0,
            }
        }
        Some(b']') => {
            let reach = &rest[..rest.len().min(256)];
            match reach.iter().position(|&b| b == 0x07) {
                Some(at) => at + 1,
                None => memchr::memmem::find(reach, b"\x1b\\").map_or(0, |at| at + 2),
            }
        }
        Some(0x40..=0x5f) => 2,
        _ => 0,
    }
}

/// Byte order of UTF-16 text: a byte order mark, or (without one) nine in
/// ten of the first 256 code units text (ASCII, or letters of an alphabet
/// such as Cyrillic or Greek).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Utf16 {
    Little,
    Big,
}

/// Whether `data` is UTF-16 text, and in which byte order.
pub fn utf16_order(data: &[u8]) -> Option<Utf16> {
    match data {
        [0xff, 0xfe, ..] => return Some(Utf16::Little),
        [0xfe, 0xff, ..] => return Some(Utf16::Big),
        _ => {}
    }
    let sniff = &data[..data.len().min(512) & !1];
    if sniff.len() < 8 {
        return None;
    }
    let pairs = sniff.len() / 2;
    // Every code unit counted below has a high byte under 0x20, so nine
    // in ten units need as many bytes under 0x20: text without them (most
    // files, and every view) is decided in one cheap pass.
    if sniff.iter().filter(|&&b| b < 0x20).count() * 10 < pairs * 9 {
        return None;
    }
    let text = |b: u8| b == b'\t' || b == b'\n' || b == b'\r' || (0x20..0x7f).contains(&b);
    // A code unit of text: ASCII, or a character of an alphabet from
    // Latin Extended to Greek Extended (U+0100 to U+1FFF: Greek, Cyrillic,
    // Hebrew, Arabic, Indic scripts…), so a file that opens in Russian is
    // UTF-16 too. Their high bytes are control bytes, which no ASCII or
    // UTF-8 text holds in every other place. (CJK ideographs and general
    // punctuation are left out: two ASCII characters read as one of them.)
    let unit = |low: u8, high: u8| {
        let code = u32::from(high) << 8 | u32::from(low);
        (high == 0 && text(low))
            || ((0x0100..0x2000).contains(&code)
                && char::from_u32(code).is_some_and(|c| !c.is_control()))
    };
    let little = sniff.chunks(2).filter(|p| unit(p[0], p[1])).count();
    let big = sniff.chunks(2).filter(|p| unit(p[1], p[0])).count();
    if little * 10 >= pairs * 9 {
        Some(Utf16::Little)
    } else if big * 10 >= pairs * 9 {
        Some(Utf16::Big)
    } else {
        None
    }
}

/// UTF-16 text as UTF-8, each character mapped back to its code units.
fn utf16_decoded(data: &[u8], order: Utf16) -> Option<View> {
    let start = if matches!(data, [0xff, 0xfe, ..] | [0xfe, 0xff, ..]) {
        2
    } else {
        0
    };
    let units = data[start..].chunks_exact(2).map(|pair| match order {
        Utf16::Little => u16::from_le_bytes([pair[0], pair[1]]),
        Utf16::Big => u16::from_be_bytes([pair[0], pair[1]]),
    });
    let mut bytes = Vec::with_capacity(data.len() / 2);
    let mut map = Vec::with_capacity(data.len() / 2);
    let mut at = start;
    for decoded in char::decode_utf16(units) {
        let c = decoded.unwrap_or(char::REPLACEMENT_CHARACTER);
        map.push((bytes.len(), at));
        let mut buf = [0u8; 4];
        bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        at += c.len_utf16() * 2;
    }
    Some(View { bytes, map })
}

/// The base64 alphabets (standard and URL-safe) as a byte class.
const fn base64_class() -> [bool; 256] {
    let mut class = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        class[b] = c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'-' || c == b'_';
        b += 1;
    }
    class
}
const BASE64: [bool; 256] = base64_class();

/// Runs of base64 that may hide a secret: at least [`MIN_BASE64_RUN`]
/// characters (padding included), with upper case, lower case and digits
/// all present (identifiers and words are not), not longer than
/// [`MAX_BASE64_RUN`].
fn base64_runs(data: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < data.len() {
        if !BASE64[usize::from(data[i])] {
            i += 1;
            continue;
        }
        let start = i;
        let (mut upper, mut lower, mut digit) = (false, false, false);
        while i < data.len() && BASE64[usize::from(data[i])] {
            let c = data[i];
            upper |= c.is_ascii_uppercase();
            lower |= c.is_ascii_lowercase();
            digit |= c.is_ascii_digit();
            i += 1;
        }
        while i < data.len() && data[i] == b'=' && i - start < MAX_BASE64_RUN {
            i += 1;
        }
        i = wrapped_end(data, start, i);
        let length = i - start;
        if (MIN_BASE64_RUN..=MAX_BASE64_RUN).contains(&length) && upper && lower && digit {
            runs.push((start, i));
        }
    }
    runs
}

/// Narrowest and widest line of a wrapped base64 run (RFC 7468's PEM
/// wraps at 64 columns, RFC 2045's MIME and the `base64` tool at 76).
const WRAP_WIDTHS: std::ops::RangeInclusive<usize> = 40..=128;

/// Where a base64 run `data[start..end]` ends once the lines that wrap it
/// are joined: when the run fills its line from the line's indentation to
/// its end (`\n` or `\r\n`), is a whole number of 4-character groups
/// wide, between [`WRAP_WIDTHS`], and the next lines hold the same
/// indentation then a run of that width, the run goes on over them and
/// over the last, shorter (or equal) one. `end` when the run is not
/// wrapped. Each line is read once, and the whole run stays within
/// [`MAX_BASE64_RUN`].
fn wrapped_end(data: &[u8], start: usize, end: usize) -> usize {
    let width = end - start;
    if !opens_wrapped_run(width) {
        return end;
    }
    // The run's indentation: the blanks before it, back to its line's
    // start (read back only over blanks, so a long line of runs costs
    // each run its own indentation, never the whole line again).
    let blanks = data[..start]
        .iter()
        .rev()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let line_start = start - blanks;
    if line_start > 0 && data[line_start - 1] != b'\n' {
        return end;
    }
    let indent = &data[line_start..start];
    let line_end = |at: usize| -> Option<usize> {
        match data.get(at..) {
            Some([b'\n', ..]) => Some(at + 1),
            Some([b'\r', b'\n', ..]) => Some(at + 2),
            _ => None,
        }
    };
    let mut wrapped = end;
    let mut at = end;
    while at - start < MAX_BASE64_RUN {
        let Some(next) = line_end(at) else {
            break;
        };
        let Some(body) = data.get(next..).and_then(|rest| rest.strip_prefix(indent)) else {
            break;
        };
        let run = body
            .iter()
            .take(width + 1)
            .take_while(|&&b| BASE64[usize::from(b)] || b == b'=')
            .count();
        let run_end = next + indent.len() + run;
        // The run must fill its line: a longer one, or one followed by
        // other text, is not this run's next line.
        let fills = (run == width || (run < width && ends_wrapped_run(&body[..run])))
            && (run_end == data.len() || line_end(run_end).is_some());
        if !fills {
            break;
        }
        wrapped = run_end;
        at = run_end;
        if run < width {
            break;
        }
    }
    wrapped
}

/// A line that is indentation then a base64 run and nothing else (its
/// line end aside): the indentation's bytes and the run's width, for
/// `redact` to hold the lines of a wrapped run (see [`wrapped_end`]).
pub(crate) fn wrap_line(line: &[u8]) -> Option<(usize, usize)> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let indent = line
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(line.len());
    let run = &line[indent..];
    (!run.is_empty() && run.iter().all(|&b| BASE64[usize::from(b)] || b == b'='))
        .then_some((indent, run.len()))
}

/// Whether `run`, shorter than the lines before it, can be the last line
/// of a wrapped base64 run: padded to whole 4-character groups (as both
/// RFC 2045 and RFC 7468 write it) and read as encoded, not as a word
/// (capitals, small letters, and a digit, `+`, `/` or `=`). The line
/// after a run that fills its last line exactly (`after`, `Done`) is
/// not taken into it.
pub(crate) fn ends_wrapped_run(run: &[u8]) -> bool {
    run.len().is_multiple_of(4)
        && run.iter().any(u8::is_ascii_uppercase)
        && run.iter().any(u8::is_ascii_lowercase)
        && run
            .iter()
            .any(|&b| b.is_ascii_digit() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
}

/// Whether a line of `width` base64 characters can open a wrapped run.
pub(crate) fn opens_wrapped_run(width: usize) -> bool {
    WRAP_WIDTHS.contains(&width) && width.is_multiple_of(4)
}

/// Decodes a base64 run (either alphabet, padding optional) if what it
/// holds is text: printable ASCII or UTF-8, tabs and line ends.
fn base64_text(run: &[u8]) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        }))
    };
    // A wrapped run (see [`wrapped_end`]) holds line ends and the same
    // indentation on each line: they are no part of the encoding.
    let unwrapped: Vec<u8>;
    let run = if run.contains(&b'\n') {
        unwrapped = run
            .iter()
            .copied()
            .filter(|b| !matches!(b, b'\n' | b'\r' | b' ' | b'\t'))
            .collect();
        &unwrapped[..]
    } else {
        run
    };
    let body: &[u8] = {
        let end = run.iter().rposition(|&c| c != b'=').map_or(0, |i| i + 1);
        &run[..end]
    };
    if body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | value(c)?;
        }
        acc <<= 6 * (4 - chunk.len() as u32);
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    let text = std::str::from_utf8(&out).ok()?;
    text.chars()
        .all(|c| !c.is_control() || c == '\n' || c == '\r' || c == '\t')
        .then_some(out)
}

/// Whether the secret at `data[start..end]`, matched from `matched`, passes
/// its rule's checks.
fn confirmed(rule: &Rule, data: &[u8], matched: usize, start: usize, end: usize) -> bool {
    let secret = &data[start..end];
    match rule.validation {
        Validation::KfChecksum => std::str::from_utf8(secret)
            .is_ok_and(|text| keyforge_types::VirtualKey::parse(text).is_ok()),
        Validation::NetrcEntry if !follows_netrc_entry(data, matched) => false,
        Validation::HttpCredentials if !http_credentials(data, matched, start, end) => false,
        Validation::None
        | Validation::NetrcEntry
        | Validation::HttpCredentials
        | Validation::KeyBlock
        | Validation::JwkPrivate => {
            // A string literal's escapes (`b'\x8f\x1a…'`, Python's bytes
            // from `os.urandom`) are judged as the bytes they stand for:
            // `\`, `x` and hex digits alone never reach a random key's
            // entropy.
            let unescaped = unescaped_literal(secret);
            let judged = unescaped.as_deref().unwrap_or(secret);
            if let Some(minimum) = rule.entropy
                && entropy(judged) < entropy_floor(minimum, judged)
            {
                return false;
            }
            if rule.literal
                && (is_reference(data, start, end)
                    || is_public(&data[matched..start], secret)
                    || is_non_secret_word(secret)
                    || is_path_like(secret)
                    || names_a_resource_or_digest(secret)
                    || is_prose(data, start, end)
                    || is_encoded_json(secret)
                    || secret.iter().all(u8::is_ascii_digit)
                    || (rule.entropy.is_some()
                        && (is_wordy(secret)
                            || is_identifier(secret)
                            || unescaped.as_deref().is_some_and(|bytes| {
                                let text: Vec<u8> =
                                    bytes.iter().copied().filter(|b| *b >= 0x20).collect();
                                is_wordy(&text) || is_identifier(&text)
                            })))
                    || (rule.entropy.is_some()
                        && {
                            let name = setting_name(&data[matched..start]);
                            names_a_lookup_key(name) || names_an_author(name)
                        }
                        && !is_strong_random(secret))
                    || (rule.entropy.is_some()
                        && is_uuid(secret)
                        && names_an_identifier_token(setting_name(&data[matched..start])))
                    || (rule.entropy.is_some()
                        && names_an_identifier_or_digest(
                            setting_name(&data[matched..start]),
                            secret,
                        ))
                    || is_pattern_or_type(secret)
                    || is_code_path(secret)
                    || ((rule.entropy.is_some() || !is_quoted(data, start, end))
                        && is_dotted_name_path(secret))
                    || is_type_annotation(data, matched, start, end)
                    || is_identifier_statement(data, matched, start, end)
                    || opens_an_expression(data, start, end)
                    || states_no_password(secret)
                    || !secret.iter().any(u8::is_ascii_alphanumeric)
                    || is_upper_case_stand_in(secret)
                    || is_algorithm_name(secret)
                    || is_format_only(secret)
                    || is_working_directory(setting_name(&data[matched..start]), secret)
                    || is_cvs_method(data, start)
                    || is_counting(secret)
                    || is_sealed_ciphertext(data, secret)
                    || inside_vault_reference(data, matched)
                    || !assignment_form(data, matched, start))
            {
                return false;
            }
            !is_placeholder_for(secret, &rule.keywords)
        }
    }
}

/// Words naming a pagination cursor before `token` (`pageToken`,
/// `nextPageToken`, `continuation_token`): an opaque position in a list
/// that the server hands out to anyone who lists, however random it looks.
const CURSOR_WORDS: &[&str] = &[
    "next",
    "page",
    "pagination",
    "continuation",
    "cursor",
    "marker",
    "resume",
    "prev",
    "previous",
];

/// Last words of a name whose value is a digest (`content_hash`,
/// `layer_digest`, `commit_sha`, `checksum`): hex of a hash is not a
/// secret.
const DIGEST_WORDS: &[&str] = &[
    "hash",
    "digest",
    "sha",
    "sha1",
    "sha256",
    "sha512",
    "md5",
    "checksum",
    "fingerprint",
];

/// Whether a setting `name` says its `value` identifies or digests rather
/// than authenticates: a pagination cursor of any shape (`nextPageToken`),
/// a UUID under an `…_id` name (`secret_id`, `api_key_id`: which secret,
/// not the secret), hex under a digest's name (`api_key_hash`,
/// `token_sha256`, `checksum`).
fn names_an_identifier_or_digest(name: &[u8], value: &[u8]) -> bool {
    let words = name_words(name);
    let Some(last) = words.last() else {
        return false;
    };
    if matches!(last.as_str(), "token" | "tokens")
        && words.len() >= 2
        && CURSOR_WORDS.contains(&words[words.len() - 2].as_str())
    {
        return true;
    }
    if matches!(last.as_str(), "id" | "ids") && is_uuid(value) {
        return true;
    }
    let hex = value.len() >= 32 && value.iter().all(u8::is_ascii_hexdigit);
    hex && (DIGEST_WORDS.contains(&last.as_str()) || words.iter().any(|word| word == "checksum"))
}

/// Whether a value is a pattern or a type rather than a secret: a regular
/// expression (`^ghp_[A-Za-z0-9]{36}$`, `(?i)…`, `\s*`) or a GraphQL
/// field type (`String!`, `[Token!]!`).
fn is_pattern_or_type(value: &[u8]) -> bool {
    let holds = |needle: &[u8]| memchr::memmem::find(value, needle).is_some();
    let regex = (value.first() == Some(&b'^') && value.last() == Some(&b'$'))
        || holds(b"]{")
        || holds(b"]+")
        || holds(b"]*")
        || holds(b"(?:")
        || holds(b"(?i")
        || holds(b"\\s")
        || holds(b"\\d")
        || holds(b"\\w");
    let graphql = {
        let inner = value.strip_suffix(b"!").unwrap_or(value);
        let inner = inner
            .strip_prefix(b"[")
            .and_then(|rest| rest.strip_suffix(b"]"))
            .map_or(inner, |rest| rest.strip_suffix(b"!").unwrap_or(rest));
        value.ends_with(b"!")
            && inner.first().is_some_and(u8::is_ascii_uppercase)
            && inner.iter().all(u8::is_ascii_alphabetic)
    };
    regex || graphql
}

/// Whether a value is mostly a counting run (`k-123456789`, `abcdefgh1`):
/// a stand-in typed by hand, not a secret. A run of six or more ascending
/// characters making up two thirds of the value or more (`Pass!12345`, a
/// weak password, is still one).
fn is_counting(value: &[u8]) -> bool {
    let mut longest = 1;
    let mut run = 1;
    for pair in value.windows(2) {
        run = if pair[0].is_ascii_alphanumeric() && pair[1] == pair[0].wrapping_add(1) {
            run + 1
        } else {
            1
        };
        longest = longest.max(run);
    }
    longest >= 6 && longest * 3 >= value.len() * 2
}

/// Whether the setting at `matched` is an argument of an Azure Key Vault
/// or App Configuration reference (`@Microsoft.KeyVault(SecretUri=…)`):
/// where the secret lives, resolved at run time.
fn inside_vault_reference(data: &[u8], matched: usize) -> bool {
    let line = &data[line_start(data, matched)..matched];
    [
        &b"@Microsoft.KeyVault("[..],
        b"@Microsoft.AppConfiguration(",
    ]
    .iter()
    .any(|call| memchr::memmem::find(line, call).is_some())
}

/// Whether a value is a Bitnami SealedSecret's ciphertext (`Ag…` base64,
/// only the controller's private key opens it) in a `SealedSecret`.
fn is_sealed_ciphertext(data: &[u8], value: &[u8]) -> bool {
    value.starts_with(b"Ag")
        && value.len() >= 100
        && memchr::memmem::find(data, b"SealedSecret").is_some()
}

/// Whether an `Authorization` header's credentials at `data[start..end]`
/// (the header from `matched`) can be real: after `Basic`, base64 of text
/// holding `user:password`'s colon; after another scheme, any token.
fn http_credentials(data: &[u8], matched: usize, start: usize, end: usize) -> bool {
    let scheme = data[matched..start].trim_ascii_end();
    if !scheme.to_ascii_lowercase().ends_with(b"basic") {
        return true;
    }
    base64_text(&data[start..end]).is_some_and(|text| text.contains(&b':'))
}

/// Prefixes of values that name a resource or state a digest rather than
/// hold a secret: an AWS ARN (`arn:aws:secretsmanager:eu-west-1:111122223333:secret:prod/db-AbC`,
/// `arn:aws-cn:…`: where a secret lives, even with its random suffix), a
/// Google Cloud resource name (`projects/p/secrets/db/versions/3`), and a
/// digest or fingerprint (`SHA256:nThbg6kX…` from `ssh-keygen -l`,
/// `sha256:<hex>` of an image, `md5:`), compared in any case.
const RESOURCE_OR_DIGEST_PREFIXES: &[&[u8]] = &[
    b"arn:aws:",
    b"arn:aws-cn:",
    b"arn:aws-us-gov:",
    b"arn:aws-iso",
    b"projects/",
    b"sha1:",
    b"sha224:",
    b"sha256:",
    b"sha384:",
    b"sha512:",
    b"sha3-256:",
    b"md5:",
    b"blake2b:",
    b"blake3:",
];

/// Whether a value names a resource or states a digest
/// ([`RESOURCE_OR_DIGEST_PREFIXES`]).
fn names_a_resource_or_digest(value: &[u8]) -> bool {
    RESOURCE_OR_DIGEST_PREFIXES.iter().any(|prefix| {
        value.len() > prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix)
    }) || is_arn_of_any_partition(value)
}

/// An ARN in any AWS partition, including ones newer than the list above
/// (`arn:aws-eusc:iam::aws:policy/…`, the European Sovereign Cloud): `arn:aws-`,
/// small letters and `-`, then `:` and a service name.
fn is_arn_of_any_partition(value: &[u8]) -> bool {
    let Some(rest) = value.strip_prefix(b"arn:aws-") else {
        return false;
    };
    let partition = rest
        .iter()
        .take_while(|b| b.is_ascii_lowercase() || **b == b'-')
        .count();
    partition > 0
        && rest.get(partition) == Some(&b':')
        && rest.get(partition + 1).is_some_and(u8::is_ascii_lowercase)
}

/// Words of a sentence that a passphrase hardly holds.
const PROSE_WORDS: &[&str] = &[
    "the",
    "a",
    "an",
    "be",
    "is",
    "are",
    "was",
    "were",
    "at",
    "least",
    "must",
    "should",
    "your",
    "you",
    "enter",
    "please",
    "to",
    "of",
    "for",
    "and",
    "or",
    "not",
    "with",
    "in",
    "on",
    "this",
    "that",
    "it",
    "will",
    "can",
    "cannot",
    "has",
    "have",
    "been",
    "from",
    "by",
    "as",
    "if",
    "when",
    "do",
    "does",
    "than",
    "characters",
    "match",
    "invalid",
    "required",
    // French, Spanish, Portuguese, German, Italian, Dutch: messages about
    // passwords in other languages (`Mot de passe incorrect`).
    "de",
    "le",
    "la",
    "les",
    "votre",
    "mot",
    "passe",
    "incorrect",
    "el",
    "es",
    "su",
    "contrase\u{f1}a",
    "incorrecta",
    "senha",
    "inv\u{e1}lida",
    "der",
    "die",
    "das",
    "ist",
    "passwort",
    "falsch",
    "il",
    "non",
    "wachtwoord",
    "het",
    "onjuist",
];

/// Whether a value is prose rather than a secret: a message in an i18n or
/// validation file (`"password": "Password must be at least 8 characters."`,
/// `password_help = 'Enter the one you were given'`), or, bare, the first
/// word of a sentence (`Password: Ask the team lead`). Prose is three or
/// more words of letters or of digits (a closing `.`, `,`, `!`, `?` or `:`
/// allowed)
/// holding one of [`PROSE_WORDS`], or six words or more; a passphrase of
/// plain words (`correct horse battery staple`) is still a secret.
fn is_prose(data: &[u8], start: usize, end: usize) -> bool {
    let value = &data[start..end];
    let words_of = |text: &[u8]| -> Option<Vec<String>> {
        text.split(|b| *b == b' ')
            .filter(|word| !word.is_empty())
            .map(|word| {
                let word = word
                    .strip_suffix(b".")
                    .or_else(|| word.strip_suffix(b","))
                    .or_else(|| word.strip_suffix(b"!"))
                    .or_else(|| word.strip_suffix(b"?"))
                    .or_else(|| word.strip_suffix(b":"))
                    .unwrap_or(word);
                // Letters of any script (`Неверный пароль`), an apostrophe,
                // or digits alone.
                let letters = std::str::from_utf8(word)
                    .is_ok_and(|text| text.chars().all(|c| c.is_alphabetic() || c == '\''));
                (!word.is_empty() && (letters || word.iter().all(u8::is_ascii_digit)))
                    .then(|| String::from_utf8_lossy(word).to_lowercase())
            })
            .collect()
    };
    let sentence = |words: &[String]| {
        // Two words or more, one of them in a script other than Latin
        // letters: a message in another language, not a key.
        let foreign = words.iter().any(|word| !word.is_ascii());
        (foreign && words.len() >= 2)
            || words.len() >= 6
            || (words.len() >= 3
                && words
                    .iter()
                    .any(|word| PROSE_WORDS.contains(&word.as_str())))
    };
    if value.contains(&b' ') {
        return words_of(value).is_some_and(|words| sentence(&words));
    }
    // Bare: the value and the words after it on its line.
    let quoted = start
        .checked_sub(1)
        .is_some_and(|at| matches!(data[at], b'"' | b'\'' | b'`'));
    if quoted || !value.iter().all(u8::is_ascii_alphabetic) {
        return false;
    }
    let line_end = memchr::memchr(b'\n', &data[end..data.len().min(end + 256)])
        .map_or(data.len().min(end + 256), |at| end + at);
    words_of(&data[start..line_end]).is_some_and(|words| sentence(&words))
}

/// Whether a value is base64 of a JSON object or array (`eyJ…` is `{"`):
/// a pagination cursor (`NextToken`, `pageToken`) or an encoded document,
/// not a secret as written. What such a document holds is still read: the
/// generic rules' values are decoded as a base64 view, and a key or
/// private key inside is reported there. A JWT is not one value of this
/// shape (its parts are joined by dots).
fn is_encoded_json(value: &[u8]) -> bool {
    let opens = [&b"eyJ"[..], b"eyA", b"ewo", b"ew0", b"W3s", b"WyJ", b"W10"];
    if value.len() < 16
        || !opens.iter().any(|open| value.starts_with(open))
        || !value.iter().all(|&b| BASE64[usize::from(b)] || b == b'=')
    {
        return false;
    }
    // Printable text (what `base64_text` decodes) that opens a document:
    // `{"`, `{ "`, `{\n`, `[{`, `["`, `[]`.
    base64_text(value).is_some_and(|text| {
        let text = text.trim_ascii_start();
        matches!(text.first(), Some(b'{' | b'['))
            && text.get(1..).is_some_and(|rest| {
                matches!(
                    rest.trim_ascii_start().first(),
                    Some(b'"' | b'{' | b'[' | b']' | b'}')
                )
            })
    })
}

/// Bytes before a .netrc `password` searched for its entry's `machine`.
const NETRC_ENTRY_BEFORE: usize = 2048;

/// Whether the words just before `at` are a .netrc entry's head: `machine
/// HOST` then one or more `login USER`, `account NAME` or `port N` pairs
/// (words split at blanks, line ends and quotes, so `echo "machine …`
/// counts).
fn follows_netrc_entry(data: &[u8], at: usize) -> bool {
    let before = &data[at.saturating_sub(NETRC_ENTRY_BEFORE)..at];
    let mut words = before
        .split(|b| b.is_ascii_whitespace() || matches!(b, b'"' | b'\''))
        .filter(|word| !word.is_empty())
        .rev();
    let mut pairs = 0;
    while let (Some(_value), Some(name)) = (words.next(), words.next()) {
        match name {
            b"machine" => return pairs > 0,
            b"login" | b"account" | b"port" => pairs += 1,
            _ => return false,
        }
    }
    false
}

/// The bytes a string literal's escapes stand for (`\xHH`, `\n`, `\t`,
/// `\r`, `\0`, `\\`, `\'`, `\"`), if it has any; `None` for a value
/// without a backslash escape.
fn unescaped_literal(value: &[u8]) -> Option<Vec<u8>> {
    memchr::memchr(b'\\', value)?;
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(value.len());
    let mut any = false;
    let mut i = 0;
    while i < value.len() {
        let escaped = match (value[i], value.get(i + 1)) {
            (b'\\', Some(b'x')) => value
                .get(i + 2..i + 4)
                .and_then(|pair| Some(hex(pair[0])? * 16 + hex(pair[1])?))
                .map(|byte| (byte as u8, 4)),
            (b'\\', Some(b'n')) => Some((b'\n', 2)),
            (b'\\', Some(b't')) => Some((b'\t', 2)),
            (b'\\', Some(b'r')) => Some((b'\r', 2)),
            (b'\\', Some(b'0')) => Some((0, 2)),
            (b'\\', Some(&c @ (b'\\' | b'\'' | b'"'))) => Some((c, 2)),
            _ => None,
        };
        match escaped {
            Some((byte, used)) => {
                out.push(byte);
                i += used;
                any = true;
            }
            None => {
                out.push(value[i]);
                i += 1;
            }
        }
    }
    any.then_some(out)
}

/// The setting's name in the text from a match's start to its value:
/// the last run of name characters (`API_KEY` in `set -gx API_KEY `,
/// `SECRET_KEY` in `SECRET_KEY"] = "`).
fn setting_name(lead: &[u8]) -> &[u8] {
    let is_name = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    lead.split(|b| !is_name(b))
        .rfind(|token| token.iter().any(u8::is_ascii_alphabetic) && !token.starts_with(b"-"))
        .unwrap_or_default()
}

/// A name's words, lower case: split at `_`, `.`, `-` and camelCase steps
/// (`idempotencyKey` is `idempotency`, `key`).
fn name_words(name: &[u8]) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut previous: Option<u8> = None;
    for &b in name {
        let step = previous.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
            && b.is_ascii_uppercase();
        if (!b.is_ascii_alphanumeric() || step) && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        if b.is_ascii_alphanumeric() {
            current.push(char::from(b.to_ascii_lowercase()));
        }
        previous = Some(b);
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Parts of a name that make it a credential's, whatever else it says
/// (`cache_api_key`, `private_key`, `session_secret`).
const CREDENTIAL_NAME_PARTS: &[&str] = &[
    "secret",
    "token",
    "auth",
    "salt",
    "pass",
    "pwd",
    "api",
    "private",
    "access",
    "sign",
    "hmac",
    "jwt",
    "crypt",
    "cipher",
    "master",
    "licen",
    "credential",
    "session",
    "webhook",
];
/// Words before `key` that make it a lookup key, not a credential
/// (`cache_key`, `primary_key`, `idempotencyKey`).
const LOOKUP_KEY_WORDS: &[&str] = &[
    "cache",
    "sort",
    "primary",
    "foreign",
    "partition",
    "shard",
    "sharding",
    "routing",
    "row",
    "range",
    "composite",
    "compound",
    "unique",
    "lookup",
    "map",
    "dict",
    "idempotency",
    "idempotent",
    "dedup",
    "dedupe",
    "deduplication",
    "group",
    "grouping",
    "object",
    "s3",
    "bucket",
    "file",
    "image",
    "i18n",
    "translation",
    "message",
    "label",
    "tag",
    "metric",
    "config",
    "setting",
    "settings",
    "redis",
    "lock",
    "queue",
    "event",
    "trace",
    "index",
    "search",
    "natural",
    "surrogate",
    "candidate",
    "join",
    "parent",
    "child",
    "cluster",
    "entity",
    "record",
    "column",
    "field",
    "property",
    "attr",
    "attribute",
    "json",
    "hot",
    "shortcut",
    "menu",
    "list",
    "item",
    "state",
    "order",
    "ordering",
    "correlation",
    "distinct",
    "memo",
    "kv",
    "react",
    "locale",
    "lang",
    "sequence",
];
/// Words after `key` that make the setting about a key, not the key
/// (`key_name`, `kms_key_id`, `key_size`).
const KEY_QUALIFIER_WORDS: &[&str] = &[
    "name",
    "names",
    "id",
    "ids",
    "type",
    "types",
    "size",
    "length",
    "len",
    "bits",
    "path",
    "file",
    "filename",
    "prefix",
    "suffix",
    "alias",
    "field",
    "column",
    "col",
    "format",
    "fmt",
    "count",
    "index",
    "idx",
    "pattern",
    "template",
    "spec",
    "label",
    "style",
    "code",
    "map",
    "set",
    "list",
    "binding",
    "bindings",
    "event",
    "press",
    "down",
    "up",
    "stroke",
    "arn",
    "uri",
    "url",
    "location",
    "ring",
    "fingerprint",
    "algorithm",
    "algo",
    "usage",
    "ops",
    "rotation",
    "expiry",
    "expires",
    "created",
    "version",
    "attribute",
];

/// Whether a setting's name says the value is a lookup key or about a key,
/// not a credential: `cache_key`, `sort_key`, `primary_key`,
/// `foreign_key`, `partition_key`, `idempotency_key`, `key_name`,
/// `keyboard`, `monkey`. Such a value is reported only when it is
/// unmistakably random ([`is_strong_random`]). A name that also says
/// secret, token, password, api, private... is a credential's.
pub fn names_a_lookup_key(name: &[u8]) -> bool {
    let lower = name.to_ascii_lowercase();
    let holds = |part: &str| memchr::memmem::find(&lower, part.as_bytes()).is_some();
    if !holds("key") || CREDENTIAL_NAME_PARTS.iter().any(|part| holds(part)) {
        return false;
    }
    let words = name_words(name);
    let keys: Vec<usize> = words
        .iter()
        .enumerate()
        .filter(|(_, word)| matches!(word.as_str(), "key" | "keys"))
        .map(|(at, _)| at)
        .collect();
    // `key` only inside a longer word: `keyboard`, `keyword`, `monkey`,
    // `hotkey`, `keyspace`.
    let Some(&last) = keys.last() else {
        return true;
    };
    let before = last.checked_sub(1).map(|at| words[at].as_str());
    let after = words.get(last + 1).map(String::as_str);
    before.is_some_and(|word| LOOKUP_KEY_WORDS.contains(&word))
        || after.is_some_and(|word| KEY_QUALIFIER_WORDS.contains(&word))
}

/// Whether `value` is a UUID (8-4-4-4-12 hex digits, either case).
fn is_uuid(value: &[u8]) -> bool {
    value.len() == 36
        && value.iter().enumerate().all(|(at, b)| match at {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Words before `token` that make it an identifier rather than a
/// credential: a page's (`nextToken`, `page_token`, `continuationToken`),
/// a request's or an idempotency key (`clientToken` in AWS APIs,
/// `requestToken`, `idempotency_token`), a form's (`csrfToken`), a
/// cancellation's or a sync's.
const IDENTIFIER_TOKEN_WORDS: &[&str] = &[
    "next",
    "page",
    "pagination",
    "continuation",
    "client",
    "request",
    "idempotency",
    "idempotent",
    "dedup",
    "csrf",
    "xsrf",
    "cancel",
    "cancellation",
    "sync",
    "resume",
    "marker",
    "cursor",
    "correlation",
    "trace",
    "change",
    "delta",
    "transaction",
    "upload",
];

/// Whether a setting's name is a token that identifies rather than
/// authenticates ([`IDENTIFIER_TOKEN_WORDS`] right before `token`, and no
/// other part of a credential's name). A UUID under such a name is an
/// identifier and not reported; a UUID that authenticates (npm's
/// `_authToken`, `CODECOV_TOKEN`, a Heroku API key) still is.
fn names_an_identifier_token(name: &[u8]) -> bool {
    let words = name_words(name);
    let Some(at) = words
        .iter()
        .rposition(|word| matches!(word.as_str(), "token" | "tokens"))
    else {
        return false;
    };
    at.checked_sub(1)
        .is_some_and(|before| IDENTIFIER_TOKEN_WORDS.contains(&words[before].as_str()))
        && words.iter().all(|word| {
            word == "token"
                || word == "tokens"
                || !CREDENTIAL_NAME_PARTS.iter().any(|part| word.contains(part))
        })
}

/// Words that hold `auth` without meaning authentication: `authorArn`,
/// `author_email`, `authority`. (`authorization` and `authorize` do.)
const AUTHOR_WORDS: &[&str] = &[
    "author",
    "authors",
    "authored",
    "authorship",
    "authority",
    "authorities",
];

/// Whether a setting's name holds `auth` only inside [`AUTHOR_WORDS`] and
/// no other part of a credential's name (`authorArn`, `"author1"`,
/// `MissingUriSchemeAndAuthority`): like a lookup key's, its value is
/// reported only when it is unmistakably random ([`is_strong_random`]).
pub fn names_an_author(name: &[u8]) -> bool {
    let words = name_words(name);
    let author = |word: &String| {
        AUTHOR_WORDS.iter().any(|w| {
            word.strip_prefix(w)
                .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    words.iter().any(author)
        && words.iter().filter(|word| !author(word)).all(|word| {
            !word.contains("key") && !CREDENTIAL_NAME_PARTS.iter().any(|part| word.contains(part))
        })
}

/// A value no identifier, digest or name looks like: 32 characters or
/// more, capitals, small letters and digits all present, not hex or a
/// UUID, and well above the usual entropy floor.
pub fn is_strong_random(value: &[u8]) -> bool {
    let any = |f: fn(&u8) -> bool| value.iter().any(f);
    value.len() >= 32
        && any(u8::is_ascii_uppercase)
        && any(u8::is_ascii_lowercase)
        && any(u8::is_ascii_digit)
        && entropy(value) >= entropy_floor(4.5, value)
}

/// Values meant to be public, by their setting's name (`public_key`,
/// `NEXT_PUBLIC_…_KEY`, `publishable_key`, a reCAPTCHA `site_key`; not
/// when the name also says secret, private, password or token) or their
/// shape (an SSH public key line, a Stripe publishable key `pk_live_…`).
fn is_public(name: &[u8], value: &[u8]) -> bool {
    let name = name.to_ascii_lowercase();
    let holds = |words: &[&[u8]]| {
        words
            .iter()
            .any(|word| memchr::memmem::find(&name, word).is_some())
    };
    // `NEXT_PUBLIC_API_SECRET` is still a secret, and in a browser bundle.
    let named = holds(&[b"public", b"publishable", b"site_key", b"sitekey"])
        && !holds(&[b"secret", b"private", b"password", b"token"]);
    named
        || [
            &b"ssh-ed25519 "[..],
            b"ssh-rsa ",
            b"ecdsa-sha2-",
            b"pk_live_",
            b"pk_test_",
        ]
        .iter()
        .any(|prefix| value.starts_with(prefix))
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

/// Bits per character of the smallest usual alphabet `secret` is drawn
/// from: 4 for hex (one case), 3.3 for digits, about 5.2 for one case and
/// digits, 5.95 for both cases and digits, 6 for base64, 6.55 with other
/// punctuation.
pub fn alphabet_bits(secret: &[u8]) -> f64 {
    let all = |f: fn(&u8) -> bool| secret.iter().all(f);
    if all(u8::is_ascii_digit) {
        return 10f64.log2();
    }
    // Hex, and hex in groups (a UUID: its dashes carry no randomness).
    if all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b) || *b == b'-')
        || all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b) || *b == b'-')
    {
        return 4.0;
    }
    let any = |f: fn(&u8) -> bool| secret.iter().any(f);
    let mut size = 0u32;
    if any(u8::is_ascii_lowercase) {
        size += 26;
    }
    if any(u8::is_ascii_uppercase) {
        size += 26;
    }
    if any(u8::is_ascii_digit) {
        size += 10;
    }
    if any(|b| matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')) {
        size += 2;
    }
    if any(|b| !b.is_ascii_alphanumeric() && !matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')) {
        size += 30;
    }
    f64::from(size.max(2)).log2()
}

/// The entropy a rule's `minimum` (stated for base64) asks of `secret`: the
/// same share of its own alphabet's maximum, and never more than a random
/// string of its length reaches (a short string cannot show many symbols).
pub fn entropy_floor(minimum: f64, secret: &[u8]) -> f64 {
    let bits = alphabet_bits(secret);
    let scaled = minimum * (bits / 6.0).min(1.0);
    let reachable = 0.85 * (secret.len() as f64).log2().min(bits);
    scaled.min(reachable)
}

/// Words that mark a value as a stand-in whatever else it holds.
const PLACEHOLDER_WORDS: &[&str] = &[
    "your",
    "yours",
    "my",
    "example",
    "examples",
    "sample",
    "placeholder",
    "dummy",
    "fake",
    "changeme",
    "change",
    "me",
    "redacted",
    "insert",
    "replace",
    "here",
    "todo",
    "tbd",
    "fixme",
    "enter",
    "put",
    "goes",
    "xxx",
    "xxxx",
    "foo",
    "bar",
    "baz",
    "demo",
    "mock",
    "generated",
    "some",
    "this",
    "the",
    "a",
    "an",
    "of",
    "to",
    "with",
    "for",
    "new",
];
/// Words that are stand-ins only alone (`password`, `secret-key`), not with
/// digits or other words (`pass123` is a weak password, not a placeholder).
const NAME_WORDS: &[&str] = &[
    "password", "passwd", "pass", "pwd", "secret", "secrets", "key", "keys", "token", "tokens",
    "api", "apikey", "value", "string", "str", "test", "user", "username", "auth", "access",
    "client", "id", "none", "null", "nil", "empty", "default", "app", "db", "sk",
];
/// Long placeholder words that mark a value whatever the rest is: opening
/// or closing it in any case (`AKIAIOSFODNN7EXAMPLE`, `Example-key-123`),
/// or anywhere in one case (`sk_test_4eC39HqLyjWDarjtEXAMPLEdp7dc`); see
/// [`long_placeholder_word`].
const LONG_PLACEHOLDER_WORDS: &[&[u8]] = &[
    b"example",
    b"placeholder",
    b"changeme",
    b"redacted",
    b"replace",
    b"insert",
    b"sample",
];

/// Whether `secret` is a stand-in rather than a secret. A placeholder is a
/// whole value: templating (`${X}`, `{{ x }}`, `<your key>`), an ellipsis
/// (`sk-...`), one character repeated over much of it (`xxxx…`, `AAAA…`), a
/// long placeholder word opening or closing it (`AKIAIOSFODNN7EXAMPLE`), or
/// only placeholder words and filler (`your-key-here`). A word inside a
/// random string (`…Xq7exampleR2…`) is not.
pub fn is_placeholder(secret: &[u8]) -> bool {
    is_placeholder_for(secret, &[])
}

/// [`is_placeholder`], with a rule's keywords (`sk-proj-`) taken off the
/// front first: `sk-proj-your-key-here` is `your-key-here`.
fn is_placeholder_for(secret: &[u8], keywords: &[String]) -> bool {
    let lower = secret.to_ascii_lowercase();
    for marker in [&b"${"[..], b"$(", b"{{", b"<%", b"...", "…".as_bytes()] {
        if memchr::memmem::find(&lower, marker).is_some() {
            return true;
        }
    }
    if lower.first() == Some(&b'<') || lower.last() == Some(&b'>') {
        return true;
    }
    // A marker in brackets: `[REDACTED]`, `[REDACTED:openai-project-key]`
    // (what `keyforge redact` writes), `[hidden]`.
    if lower.first() == Some(&b'[') && lower.last() == Some(&b']') {
        return true;
    }
    // A format string's slot: `{k}`, `{}`, `%s`, and a named slot inside
    // (`{password}\n`, `user-{name}-key`).
    if (lower.first() == Some(&b'{') && lower.last() == Some(&b'}'))
        || lower == b"%s"
        || memchr::memmem::find(&lower, b"{}").is_some()
        || has_named_slot(&lower)
    {
        return true;
    }
    let body: &[u8] = keywords
        .iter()
        .filter(|keyword| secret.starts_with(keyword.as_bytes()))
        .map(|keyword| &secret[keyword.len()..])
        .min_by_key(|rest| rest.len())
        .unwrap_or(secret);
    if body.is_empty() {
        return true;
    }
    if long_placeholder_word(body) {
        return true;
    }
    // One character over half of the value.
    let mut counts = [0usize; 256];
    for &b in body {
        counts[usize::from(b)] += 1;
    }
    if body.len() >= 8 && counts.iter().any(|&n| n * 2 >= body.len()) {
        return true;
    }
    placeholder_words(body)
}

/// Whether a long placeholder word marks `body`, as documented examples
/// have it: opening or closing it in any case (`AKIAIOSFODNN7EXAMPLE`,
/// `wJalr…EXAMPLEKEY`, `Example-key-123`, `proj-EXAMPLE…` after a key's own
/// prefix of letters ending in `-` or `_`), or anywhere in one case
/// (`…HqLyjWDarjtEXAMPLEdp7dc`, `…-sample-…`). By chance a random base62
/// key holds a given 6-letter word in one case with odds of about 2 in
/// 62^6 (4e-11) at each place, so a 100-character key holding any of
/// these words is about one in 10^8; the short words a random key does
/// hold (`yOUr`, `fake`, `here`, `Test`) count only as a whole value (see
/// [`placeholder_words`]).
fn long_placeholder_word(body: &[u8]) -> bool {
    let lower = body.to_ascii_lowercase();
    LONG_PLACEHOLDER_WORDS.iter().any(|word| {
        memchr::memmem::find_iter(&lower, word).any(|at| {
            let written = &body[at..at + word.len()];
            if written == *word || written.iter().all(|b| !b.is_ascii_lowercase()) {
                return true;
            }
            let before = &lower[..at];
            let after = &lower[at + word.len()..];
            let prefix = before.is_empty()
                || (before.len() <= 12
                    && matches!(before.last(), Some(b'-' | b'_' | b'.'))
                    && before
                        .iter()
                        .all(|b| b.is_ascii_alphabetic() || matches!(b, b'-' | b'_' | b'.')));
            prefix || names_only(after)
        })
    })
}

/// Whether `rest` (what follows a placeholder word) is nothing, or only
/// separators, name words (`key`, `token`) and a few digits: `KEY`,
/// `_key_2`, `-token`.
fn names_only(rest: &[u8]) -> bool {
    let digits = rest.iter().filter(|b| b.is_ascii_digit()).count();
    digits <= 4
        && rest
            .split(|b| !b.is_ascii_alphabetic())
            .filter(|word| !word.is_empty())
            .all(|word| {
                std::str::from_utf8(word).is_ok_and(|word| {
                    NAME_WORDS.contains(&word) || PLACEHOLDER_WORDS.contains(&word)
                })
            })
        && rest
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b' '))
}

/// Whether `value` holds `{name}`: a format string's named slot (a name
/// of letters, digits, `_` and `.`, starting with a letter).
fn has_named_slot(value: &[u8]) -> bool {
    memchr::memchr_iter(b'{', value).any(|open| {
        let rest = &value[open + 1..];
        rest.first().is_some_and(u8::is_ascii_alphabetic)
            && rest.iter().position(|&b| b == b'}').is_some_and(|close| {
                rest[..close]
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.'))
            })
    })
}

/// Whether `body` is made of placeholder words and filler only.
fn placeholder_words(body: &[u8]) -> bool {
    let mut words: Vec<String> = Vec::new();
    // Where each word starts in `body`.
    let mut starts: Vec<usize> = Vec::new();
    let mut digits = false;
    let mut current = String::new();
    let mut previous: Option<u8> = None;
    let flush = |current: &mut String, words: &mut Vec<String>| {
        if !current.is_empty() {
            words.push(current.to_ascii_lowercase());
            current.clear();
        }
    };
    for (at, &b) in body.iter().enumerate() {
        if b.is_ascii_alphabetic() {
            // camelCase: a new word at each lower-to-upper step.
            if previous.is_some_and(|p| p.is_ascii_lowercase()) && b.is_ascii_uppercase() {
                flush(&mut current, &mut words);
            }
            if current.is_empty() {
                starts.push(at);
            }
            current.push(char::from(b));
        } else {
            flush(&mut current, &mut words);
            digits |= b.is_ascii_digit();
            if !b.is_ascii_digit()
                && !matches!(b, b'-' | b'_' | b'.' | b' ' | b'*' | b'#' | b'/' | b':')
            {
                return false;
            }
        }
        previous = Some(b);
    }
    flush(&mut current, &mut words);
    if words.is_empty() {
        // Digits and filler only: `0000-0000`, `****`.
        return !digits || body.iter().all(|b| !b.is_ascii_digit() || *b == b'0');
    }
    let strong = |w: &str| PLACEHOLDER_WORDS.contains(&w) || w.bytes().all(|b| b == b'x');
    let weak = |w: &str| NAME_WORDS.contains(&w);
    // A key's own prefix (`sk-proj-`, `xoxb-`) before the first
    // placeholder word is not part of the stand-in.
    // A prefix is letters and separators at the front: a digit before the
    // first placeholder word means the value is random, and its letter
    // runs (`b`, `ce`, `fe`, then `a` in a hex token) are not words.
    // (At the word itself: the first `a` of `dab38975-…-a885` is inside
    // `dab`, which a search for the letter would find.)
    let digit_before = |word: usize| body[..starts[word]].iter().any(u8::is_ascii_digit);
    let skip = match words.iter().position(|w| strong(w)) {
        Some(first)
            if words[..first].iter().map(String::len).sum::<usize>() <= 8
                && (first == 0 || !digit_before(first)) =>
        {
            first
        }
        _ => 0,
    };
    let words = &words[skip..];
    if !words.iter().all(|w| strong(w) || weak(w)) {
        return false;
    }
    // With digits, a stand-in says so in a word of three letters or more
    // (`your-key-123`); the lone letters of hex (`127a7627-…-a511`) are not
    // the word `a`.
    words.iter().any(|w| strong(w) && (w.len() >= 3 || !digits)) || !digits
}

/// Values an assignment holds that are not secrets: booleans, nulls,
/// type names.
fn is_non_secret_word(secret: &[u8]) -> bool {
    const WORDS: &[&str] = &[
        "true",
        "false",
        "yes",
        "no",
        "on",
        "off",
        "null",
        "none",
        "nil",
        "undefined",
        "required",
        "optional",
        "string",
        "str",
        "bool",
        "boolean",
        "int",
        "integer",
        "text",
        "hidden",
        "prompt",
        "env",
        "file",
        "secret",
        "password",
    ];
    let lower = secret.to_ascii_lowercase();
    std::str::from_utf8(&lower).is_ok_and(|text| WORDS.contains(&text))
}

/// Letters of one case and separators, no digit (`authentication_error`,
/// `keyforge_gateway=trace`): words or a name, not a random token.
fn is_wordy(secret: &[u8]) -> bool {
    let upper = secret.iter().any(u8::is_ascii_uppercase);
    let lower = secret.iter().any(u8::is_ascii_lowercase);
    !(secret.iter().any(u8::is_ascii_digit) || upper && lower)
        && secret.iter().all(|b| {
            b.is_ascii_alphabetic() || matches!(b, b'_' | b'-' | b'.' | b'=' | b' ' | b'/')
        })
}

/// Whether the line up to `start` is `NAME=` or `export NAME=` with an
/// upper-case name (a shell profile, a dotenv file, a compose list item).
fn env_assignment(data: &[u8], start: usize) -> bool {
    let lead = data[line_start(data, start)..start].trim_ascii_start();
    let lead = lead.strip_prefix(b"- ").unwrap_or(lead);
    let lead = lead.strip_prefix(b"export ").unwrap_or(lead);
    let Some(name) = lead.strip_suffix(b"=") else {
        return false;
    };
    name.first().is_some_and(u8::is_ascii_uppercase)
        && name
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
}

/// A name from code rather than a random token: `MLKEM768_SECRET_KEY_BYTES`,
/// `ml_kem_1024_keygen`, `__u32` (parts of one case joined by `_`), or
/// `EcPrivateKeyRfc5915Der` (camel case: never two capitals in a row, never
/// a small letter right after a digit, which random strings of this length
/// almost always have).
fn is_identifier(secret: &[u8]) -> bool {
    if !secret
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        return false;
    }
    let parts: Vec<&[u8]> = secret
        .split(|&b| b == b'_')
        .filter(|p| !p.is_empty())
        .collect();
    let one_case = |part: &&[u8]| {
        !(part.iter().any(u8::is_ascii_uppercase) && part.iter().any(u8::is_ascii_lowercase))
    };
    if (parts.len() >= 2 || secret.first() == Some(&b'_')) && parts.iter().all(one_case) {
        return true;
    }
    secret.first().is_some_and(u8::is_ascii_alphabetic)
        && !secret.contains(&b'_')
        && secret.windows(2).all(|pair| {
            let two_capitals = pair[0].is_ascii_uppercase() && pair[1].is_ascii_uppercase();
            let digit_then_small = pair[0].is_ascii_digit() && pair[1].is_ascii_lowercase();
            !(two_capitals || digit_then_small)
        })
}

/// Calls that take a name and a value (`define('DB_PASSWORD', '…')`): the
/// only places a `'name', 'value'` pair is an assignment rather than two
/// items of a list.
const PAIR_CALLS: &[&[u8]] = &[
    b"define(", b"putenv(", b"setenv(", b"set(", b"env(", b"config(",
];

/// Whether the text from `matched` (the setting's name) to `start` (its
/// value) is an assignment: anything but `'name', ` is; that form only as
/// the first arguments of a [`PAIR_CALLS`] call. Never a name that is a
/// piece of a colon-joined identifier (an ARN, a URN).
fn assignment_form(data: &[u8], matched: usize, start: usize) -> bool {
    // A name inside a colon-joined name is a piece of an identifier, not a
    // setting: `…:111122223333:secret:prod/db` in an ARN, `urn:x:token:v`.
    // (Ruby's `:secret => "…"` has a blank or a brace before its colon.)
    // An ARN's wildcards too: `arn:aws:secretsmanager:*:*:secret:X-*`.
    if matched >= 2
        && data[matched - 1] == b':'
        && (data[matched - 2].is_ascii_alphanumeric() || data[matched - 2] == b'*')
    {
        return false;
    }
    // A quoted `::` path of type names is a type, not a setting: cfn-lint's
    // `"AWS::SecretsManager::Secret": "c85175a4ebcce361"` maps a resource
    // type to a hash. (C++'s `Config::api_secret = "…"`, unquoted, is a
    // setting.)
    if quoted_type_path_before(data, matched) {
        return false;
    }
    let lead = data[matched..start].trim_ascii_end();
    let lead = lead
        .strip_suffix(b"\"")
        .or_else(|| lead.strip_suffix(b"'"))
        .unwrap_or(lead);
    // And a Python bytes or raw literal's prefix (`b'…'`, `rb'…'`).
    let prefix = lead
        .iter()
        .rev()
        .take_while(|b| matches!(b, b'b' | b'B' | b'r' | b'R'))
        .count();
    let lead = if prefix <= 2 {
        &lead[..lead.len() - prefix]
    } else {
        lead
    };
    if !lead.trim_ascii_end().ends_with(b",") {
        return true;
    }
    let before: Vec<u8> = data[line_start(data, matched)..matched]
        .iter()
        .filter(|b| !b.is_ascii_whitespace() && **b != b'"' && **b != b'\'')
        .map(u8::to_ascii_lowercase)
        .collect();
    PAIR_CALLS.iter().any(|call| before.ends_with(call))
}

/// Whether the name at `matched` ends a quoted path of `::`-joined names
/// (`"AWS::ApiGateway::ApiKey"`): the text back to the opening quote is
/// identifiers each followed by `::`.
fn quoted_type_path_before(data: &[u8], matched: usize) -> bool {
    let lead = &data[line_start(data, matched)..matched];
    let Some(quote) = lead.iter().rposition(|b| matches!(b, b'"' | b'\'')) else {
        return false;
    };
    let path = &lead[quote + 1..];
    let Some(path) = path.strip_suffix(b"::") else {
        return false;
    };
    !path.is_empty()
        && path
            .split(|&b| b == b':')
            .filter(|part| !part.is_empty())
            .all(|part| {
                part.first().is_some_and(u8::is_ascii_alphabetic)
                    && part.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
            })
}

/// Whether the value at `data[start..end]` sits between two equal quotes.
fn is_quoted(data: &[u8], start: usize, end: usize) -> bool {
    let before = start.checked_sub(1).and_then(|i| data.get(i)).copied();
    matches!(before, Some(b'"' | b'\'' | b'`')) && data.get(end).copied() == before
}

/// A file path rather than a secret: `./x`, `../x`, `~/x`, or an absolute
/// path of plain names (`/run/secrets/db`), or a Windows registry key or
/// path ([`is_windows_path`]).
fn is_path_like(secret: &[u8]) -> bool {
    if is_windows_path(secret) {
        return true;
    }
    if secret.starts_with(b"./") || secret.starts_with(b"../") || secret.starts_with(b"~/") {
        return true;
    }
    secret.first() == Some(&b'/')
        && secret.iter().filter(|&&b| b == b'/').count() >= 2
        && secret.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'/' | b'.' | b'_' | b'-')
        })
}

/// Prefixes of values that read a secret from somewhere else.
const REFERENCE_PREFIXES: &[&[u8]] = &[
    // Ansible Vault: the lines that follow are ciphertext.
    b"!vault",
    // Azure App Service and Functions: a Key Vault or App Configuration
    // reference, resolved at run time.
    b"@Microsoft.KeyVault(",
    b"@Microsoft.AppConfiguration(",
    b"process.env",
    b"import.meta.env",
    b"os.environ",
    b"os.getenv",
    b"ENV.fetch",
    b"ENV[",
    b"System.getenv",
    b"getenv",
    b"env(",
    b"env.",
    b"secrets.",
    b"vars.",
    b"config.",
    b"settings.",
    b"self.",
    b"this.",
    b"args.",
    b"options.",
    b"opts.",
    b"params.",
    b"props.",
    b"Deno.env",
    b"std::env",
    b"env::var",
];

/// An `http(s)` URL with no credentials in it: no `user:password@` and no
/// long random-looking piece in its path or query (a webhook's token, a
/// key in a query string). Pieces are split at `/ ? & = # . % -` and `_`.
fn is_plain_url(value: &[u8]) -> bool {
    let rest = if let Some(rest) = value.strip_prefix(b"https://") {
        rest
    } else if let Some(rest) = value.strip_prefix(b"http://") {
        rest
    } else {
        return false;
    };
    let authority_end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    if rest[..authority_end].contains(&b'@') {
        return false;
    }
    rest[authority_end..]
        .split(|b| {
            matches!(
                b,
                b'/' | b'?' | b'&' | b'=' | b'#' | b'.' | b'%' | b'-' | b'_'
            )
        })
        .all(|piece| {
            piece.len() < 16
                || !(piece.iter().any(u8::is_ascii_digit)
                    && piece.iter().any(u8::is_ascii_alphabetic))
        })
}

/// Whether the value at `data[start..end]` refers to where a secret lives
/// instead of being one: `$X`, `${X}`, `$(cmd)`, `%(x)s`, `{{ x }}`, an
/// environment lookup (`process.env.X`, `os.environ["X"]`,
/// `os.getenv("X")`, `ENV.fetch("X")`), an attribute path (`self.token`),
/// a function call or index (`get_token()`, `vault["x"]`), or, unquoted, a
/// plain name (`api_key = apiKey`, `password: String`).
/// Also an endpoint URL without credentials
/// (`https://oauth2.googleapis.com/token`).
pub fn is_reference(data: &[u8], start: usize, end: usize) -> bool {
    let value = &data[start..end];
    // An endpoint (`token_uri`, `TOKEN_ENDPOINT`, `api_key_url`) says where
    // a secret is fetched, not what it is.
    if is_plain_url(value) {
        return true;
    }
    let before = start.checked_sub(1).and_then(|i| data.get(i)).copied();
    let after = data.get(end).copied();
    let quoted = matches!(before, Some(b'"' | b'\'' | b'`')) && after == before;
    // `&VirtualKey`, `*token`: a borrow or a dereference.
    if !quoted && matches!(value.first(), Some(b'&' | b'*')) {
        return true;
    }
    match value {
        [b'$', next, ..] if next.is_ascii_alphabetic() || matches!(next, b'{' | b'(' | b'_') => {
            return true;
        }
        [b'%', b'(', ..] | [b'{', b'{', ..] | [b'#', b'{', ..] | [b'@', b'{', ..] => return true,
        _ => {}
    }
    if REFERENCE_PREFIXES
        .iter()
        .any(|prefix| value.starts_with(prefix))
    {
        return true;
    }
    if quoted {
        return false;
    }
    if matches!(after, Some(b'(' | b'[')) {
        return true;
    }
    // `NAME=value` as a shell or dotenv line: the value is a string (a
    // reference there is `$NAME`, seen above).
    if env_assignment(data, start) {
        return false;
    }
    // A value parted from its name by blanks only: a word of a command
    // line or a credentials file (`password hunter` in a .netrc, fish's
    // `set -gx NAME value`, csh's `setenv NAME value`), where a reference
    // is `$NAME`, seen above; never a variable of code.
    if blank_separated(data, start) {
        return false;
    }
    // `user:password@host`: a URL's password is never a name.
    if after == Some(b'@') {
        return false;
    }
    // An attribute path: `config.api_key`, `settings.SECRET`; each part a
    // name without digits (a JWT's parts have them).
    let is_name = |part: &[u8]| {
        part.first()
            .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
            && part.iter().all(|b| b.is_ascii_alphabetic() || *b == b'_')
    };
    let parts: Vec<&[u8]> = value
        .split(|&b| b == b'.' || b == b':')
        .filter(|part| !part.is_empty())
        .collect();
    // Each part a name: snake_case, SCREAMING_CASE or camelCase, not a
    // random string of letters (about as many capitals as small letters).
    let wordlike = |part: &[u8]| {
        let upper = part.iter().filter(|b| b.is_ascii_uppercase()).count();
        let lower = part.iter().filter(|b| b.is_ascii_lowercase()).count();
        upper == 0 || lower == 0 || upper * 3 <= lower + upper
    };
    (!parts.is_empty() && parts.iter().all(|part| is_name(part) && wordlike(part)))
        || (value.first() == Some(&b'_') && is_identifier(value))
        || is_type_or_constant_name(value)
        || is_number_literal(value)
}

/// A name in capitals standing for a credential: `PASSWORD`, `PASS`,
/// `SECRET`, `TOKEN`, `REDIS_PASSWORD` (`redis://:PASSWORD@host`,
/// `postgres://user:PASSWORD@db`): what a document writes where the
/// reader puts theirs. Capitals only, the last word a credential's.
fn is_upper_case_stand_in(value: &[u8]) -> bool {
    const WORDS: &[&[u8]] = &[
        b"PASSWORD",
        b"PASSWD",
        b"PASS",
        b"PWD",
        b"PW",
        b"SECRET",
        b"TOKEN",
        b"KEY",
        b"APIKEY",
        b"PASSPHRASE",
        b"CREDENTIALS",
    ];
    value
        .iter()
        .all(|b| b.is_ascii_uppercase() || matches!(b, b'_' | b'-'))
        && value
            .split(|&b| b == b'_' || b == b'-')
            .rfind(|part| !part.is_empty())
            .is_some_and(|last| WORDS.contains(&last))
}

/// A type's or a constant's name as code writes them: `_`-joined parts
/// that are each SCREAMING_CASE (`WIN32_ERROR`,
/// `MSV1_0_PROTOCOL_MESSAGE_TYPE`) or CamelCase words without digits
/// (`CFStringRef`, `PasswordType`, `DISPID_SpeechObjectToken`): capitals
/// opening words of two small letters or more, as no random string of
/// mixed case reads (its small letters come one or two at a time).
fn is_type_or_constant_name(value: &[u8]) -> bool {
    if !value.first().is_some_and(u8::is_ascii_uppercase)
        || !value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        return false;
    }
    let letters = value.iter().filter(|b| b.is_ascii_alphabetic()).count();
    let digits = value.iter().filter(|b| b.is_ascii_digit()).count();
    let parts: Vec<&[u8]> = value.split(|&b| b == b'_').collect();
    let screaming = |part: &[u8]| {
        !part.is_empty()
            && part
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    };
    let camel = |part: &[u8]| {
        if !part.first().is_some_and(u8::is_ascii_uppercase)
            || !part.iter().all(u8::is_ascii_alphabetic)
        {
            return false;
        }
        let runs: Vec<usize> = part
            .split(|b| b.is_ascii_uppercase())
            .map(<[u8]>::len)
            .filter(|&run| run > 0)
            .collect();
        !runs.is_empty()
            && runs.iter().all(|&run| run >= 2)
            && runs.iter().sum::<usize>() >= 3 * runs.len()
    };
    let screaming_name = parts.len() >= 2
        && parts.iter().all(|part| screaming(part))
        && letters >= 2 * digits
        && parts[0].first().is_some_and(u8::is_ascii_alphabetic);
    let camel_name = digits == 0
        && value.iter().filter(|b| b.is_ascii_uppercase()).count() >= 2
        && parts
            .iter()
            .all(|part| camel(part) || (screaming(part) && part.len() >= 2));
    screaming_name || camel_name
}

/// A number as code writes one: hex (`0x02`) or with a type suffix
/// (`86u32`, `5i32`).
fn is_number_literal(value: &[u8]) -> bool {
    if let Some(hex) = value
        .strip_prefix(b"0x")
        .or_else(|| value.strip_prefix(b"0X"))
    {
        return (1..=16).contains(&hex.len()) && hex.iter().all(u8::is_ascii_hexdigit);
    }
    let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0
        && matches!(
            &value[digits..],
            b"u8"
                | b"u16"
                | b"u32"
                | b"u64"
                | b"u128"
                | b"usize"
                | b"i8"
                | b"i16"
                | b"i32"
                | b"i64"
                | b"i128"
                | b"isize"
        )
}

/// A path of names in code: `a::b::c`, `super::super::Win32::Foundation::UNICODE_STRING`,
/// `nl80211_auth_type::NL80211_AUTHTYPE_FILS_PK` (two parts or more, each
/// an identifier).
fn is_code_path(value: &[u8]) -> bool {
    let body = value.strip_prefix(b"::").unwrap_or(value);
    let identifier = |part: &[u8]| {
        part.first()
            .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
            && part.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    };
    let mut parts = 0;
    let mut from = 0;
    for at in memchr::memmem::find_iter(body, b"::").chain(std::iter::once(body.len())) {
        if at < from || !identifier(&body[from..at]) {
            return false;
        }
        parts += 1;
        from = at + 2;
    }
    parts >= 2
}

/// Whether one part of a name in code (`fts5CreateTokenizer`,
/// `MLKEM768X25519PrivateKey`, `xCreateTokenizer`, `SOFTWARE`, `v2`)
/// reads as words rather than random characters: no small letter right
/// after a digit, every small-letter word two letters or more (a single
/// one only as a Hungarian prefix opening the part: `pGlobal`), words
/// three characters long or more on average, and acronyms no more than half
/// the part. A random alphanumeric string of 20 characters passes about
/// once in 400, so callers use it only where code is certain from the
/// context (a dotted path, a `;`-ended statement, a path of names).
fn reads_as_name(part: &[u8]) -> bool {
    if part.is_empty() || !part.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    if !part.iter().any(u8::is_ascii_lowercase) {
        // Capitals: a word (`SOFTWARE`, `INVALID`), or letters then digits
        // (`SHA256`, `MLKEM768`, `VC7`); never a long run of capitals and
        // digits mixed, as an issued identifier or token is
        // (`AF6RHO7KZU5XRVQJ…`).
        let letters = part.iter().take_while(|b| b.is_ascii_uppercase()).count();
        let digits_after = part[letters..].iter().all(u8::is_ascii_digit);
        return part.len() <= 4 || (digits_after && part.len() <= 16);
    }
    if part.len() <= 3 {
        return true;
    }
    if part
        .windows(2)
        .any(|pair| pair[0].is_ascii_digit() && pair[1].is_ascii_lowercase())
    {
        return false;
    }
    // Words: a capital and its small letters, small letters alone, a run
    // of capitals (an acronym, up to the capital that opens the next
    // word), a run of digits.
    let mut words = 0;
    let mut acronym_letters = 0;
    let mut i = 0;
    while i < part.len() {
        let from = i;
        if part[i].is_ascii_digit() {
            while i < part.len() && part[i].is_ascii_digit() {
                i += 1;
            }
        } else if part[i].is_ascii_uppercase() {
            let mut capitals = 0;
            while i < part.len() && part[i].is_ascii_uppercase() {
                i += 1;
                capitals += 1;
            }
            if i < part.len() && part[i].is_ascii_lowercase() && capitals > 1 {
                // `ATNState`: the acronym ends before the capital of `State`.
                i -= 1;
                acronym_letters += capitals - 1;
            } else if i < part.len() && part[i].is_ascii_lowercase() {
                let small = part[i..]
                    .iter()
                    .take_while(|b| b.is_ascii_lowercase())
                    .count();
                // One small letter only as an acronym's plural closing the
                // part (`SDKs`, `APIs`).
                let plural = small == 1
                    && i + 1 == part.len()
                    && part[i] == b's'
                    && from > 0
                    && part[from - 1].is_ascii_uppercase();
                if small < 2 && !plural {
                    return false;
                }
                i += small;
            } else if capitals > 1 {
                acronym_letters += capitals;
            }
        } else {
            let small = part[i..]
                .iter()
                .take_while(|b| b.is_ascii_lowercase())
                .count();
            if small < 2 && from != 0 {
                return false;
            }
            i += small;
        }
        words += 1;
    }
    words <= part.len() / 3 + 1 && acronym_letters <= (part.len() / 2).max(5)
}

/// A path of names as code writes it: two parts or more joined by `.`
/// (`rust_openssl.hpke.MLKEM768X25519PrivateKey`,
/// `ATNState.INVALID_STATE_NUMBER`, botocore's
/// `InvalidationList.NextMarker`), each part identifiers joined by `_`
/// that read as words ([`reads_as_name`]). A JWT or a `ya29.` token has
/// parts of random characters, which do not.
fn is_dotted_name_path(value: &[u8]) -> bool {
    let parts: Vec<&[u8]> = value.split(|&b| b == b'.').collect();
    parts.len() >= 2
        && value
            .first()
            .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        && parts.iter().all(|part| {
            !part.is_empty()
                && part.first().is_some_and(|b| !b.is_ascii_digit())
                && part
                    .split(|&b| b == b'_')
                    .filter(|word| !word.is_empty())
                    .all(reads_as_name)
        })
}

/// A Windows registry key or file path: `SOFTWARE\Microsoft\VisualStudio`,
/// `HKEY_LOCAL_MACHINE\…`, `C:\Program Files\App\app.ini`: parts joined by
/// `\` (two or more separators), each plain words (letters, digits,
/// blanks, `.`, `_`, `-`) that read as names. A random password holding
/// backslashes has random parts.
fn is_windows_path(value: &[u8]) -> bool {
    let body = if value.len() >= 3 && value[0].is_ascii_alphabetic() && &value[1..3] == b":\\" {
        &value[3..]
    } else {
        value
    };
    let body = body.strip_suffix(b"\\").unwrap_or(body);
    let parts: Vec<&[u8]> = body.split(|&b| b == b'\\').collect();
    parts.len() >= 3 - usize::from(body.len() != value.len())
        && parts.iter().all(|part| {
            !part.is_empty()
                && part
                    .split(|b| matches!(b, b' ' | b'.' | b'_' | b'-'))
                    .filter(|word| !word.is_empty())
                    .all(reads_as_name)
        })
}

/// Whether the bare value at `data[start..end]` is a type in an
/// annotation rather than a value: `name: Type = value` (a Rust `const`,
/// a Python or TypeScript variable: the value comes after `=`), `key:
/// PKCS12PrivateKeyTypes | None` (a union), or a field or parameter of a
/// line opening with Rust's `pub` (`pub passphrase: CFTypeRef,`). Only
/// after a `:` and only for a value that is an identifier or a path of
/// them.
fn is_type_annotation(data: &[u8], matched: usize, start: usize, end: usize) -> bool {
    let lead = data[matched..start].trim_ascii_end();
    if !lead.ends_with(b":") || lead.ends_with(b"::") {
        return false;
    }
    let value = &data[start..end];
    if !value
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        || !value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'.'))
    {
        return false;
    }
    let rest = data[end..].trim_ascii_start();
    let rest = &rest[..rest.len().min(3)];
    let assigned = rest.first() == Some(&b'=') && !matches!(rest.get(1), Some(b'=' | b'>'));
    let union = rest.first() == Some(&b'|') && rest.get(1).is_some_and(u8::is_ascii_whitespace);
    // The line's text after any comment markers, or inside a code span
    // (`` `pub x: T` `` in documentation): an example reads as the code it
    // shows.
    let line = &data[line_start(data, matched)..matched];
    let line = match line.iter().rposition(|&b| b == b'`') {
        Some(tick) if line.iter().filter(|&&b| b == b'`').count() % 2 == 1 => &line[tick + 1..],
        _ => line,
    };
    let line = &line[line
        .iter()
        .take_while(|b| matches!(b, b'/' | b'*' | b'#' | b' ' | b'\t' | b'`' | b'('))
        .count()..];
    let rust_item = line.starts_with(b"pub ") || line.starts_with(b"pub(");
    assigned || union || rust_item
}

/// Whether the bare value at `data[start..end]` ends a statement of code
/// (`api.xCreateTokenizer_v2 = fts5CreateTokenizer_v2;`, `key_nid =
/// NID_pbe_WithSHA1And3_Key_TripleDES_CBC;`): ` = ` with blanks, an
/// identifier, then `;` and nothing but blanks or a comment to the end of
/// the line. Code quotes its literals, so an identifier there is a name.
/// (A connection string's `PWD=…;` has no blanks around its `=`.)
fn is_identifier_statement(data: &[u8], matched: usize, start: usize, end: usize) -> bool {
    let lead = &data[matched..start];
    let Some(before_equals) = lead.strip_suffix(b" ").map(<[u8]>::trim_ascii_end) else {
        return false;
    };
    if !before_equals.ends_with(b" =") || before_equals.ends_with(b"= =") {
        return false;
    }
    let value = &data[start..end];
    if !value
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        || !value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        return false;
    }
    let line_end = memchr::memchr(b'\n', &data[end..]).map_or(data.len(), |i| end + i);
    let rest = data[end..line_end].trim_ascii_end();
    // Then the line ends, or a comment or a closing backtick follows (a
    // statement shown in documentation).
    rest == b";"
        || [&b"; //"[..], b";//", b"; /*", b"; #", b";`"]
            .iter()
            .any(|tail| rest.starts_with(tail))
}

/// Whether the bare value at `data[start..end]` is the literal opening of
/// a value that goes on as an expression: `name-cargo-${{ hashFiles(…)
/// }}` (a CI cache key), `prefix-$(date)`: the match stops at the `$`,
/// and the text before it is short words (12 characters at most) joined
/// by `-`, `_` or `.`. A random
/// string before the expression is still judged as a secret.
fn opens_an_expression(data: &[u8], start: usize, end: usize) -> bool {
    let value = &data[start..end];
    let Some(prefix) = value.strip_suffix(b"$") else {
        return false;
    };
    matches!(data.get(end), Some(b'{' | b'('))
        && prefix
            .split(|b| matches!(b, b'-' | b'_' | b'.'))
            .filter(|word| !word.is_empty())
            .all(|word| word.len() <= 12 && reads_as_name(word))
}

/// Words of a value that states there is no password.
const NO_PASSWORD_WORDS: &[&str] = &[
    "no",
    "not",
    "none",
    "without",
    "password",
    "passwords",
    "passwd",
    "pass",
    "passphrase",
    "required",
    "needed",
    "necessary",
    "set",
    "given",
    "provided",
    "used",
    "is",
    "empty",
    "blank",
    "auth",
    "authentication",
];

/// Whether a value states the absence of a password rather than being one
/// (`no-password-required`, `none_needed`, `not set`): words of
/// [`NO_PASSWORD_WORDS`] only, joined by `-`, `_` or blanks, opening with
/// `no`, `not`, `none` or `without`. A passphrase of other words
/// (`no-horse-battery-staple`) is still a secret.
fn states_no_password(value: &[u8]) -> bool {
    let lower = value.to_ascii_lowercase();
    let words: Vec<&[u8]> = lower
        .split(|b| matches!(b, b'-' | b'_' | b' '))
        .filter(|word| !word.is_empty())
        .collect();
    words.len() >= 2
        && matches!(words[0], b"no" | b"not" | b"none" | b"without")
        && words.iter().all(|word| {
            std::str::from_utf8(word).is_ok_and(|text| NO_PASSWORD_WORDS.contains(&text))
        })
}

/// A signing or cipher algorithm's name (`AWS4-HMAC-SHA256`,
/// `AWS4-ECDSA-P256-SHA256`, `HMAC-SHA512`, `AES256-GCM`): parts of such
/// names joined by `-` or `_`, in capitals.
fn is_algorithm_name(value: &[u8]) -> bool {
    const WORDS: &[&[u8]] = &[
        b"AWS4",
        b"HMAC",
        b"ECDSA",
        b"EDDSA",
        b"RSA",
        b"PSS",
        b"OAEP",
        b"PKCS1",
        b"AES",
        b"GCM",
        b"CBC",
        b"CTR",
        b"CCM",
        b"ED25519",
        b"X25519",
        b"MD5",
        b"SHA",
        b"SHA1",
        b"SHA3",
        b"KW",
        b"ECDH",
        b"ES",
        b"CHACHA20",
        b"POLY1305",
        b"GOST",
        b"SM3",
    ];
    let known = |part: &[u8]| {
        WORDS.contains(&part)
            || [
                "SHA", "P", "AES", "HS", "RS", "ES", "PS", "A", "SECP", "SHA3",
            ]
            .iter()
            .any(|stem| {
                part.strip_prefix(stem.as_bytes()).is_some_and(|rest| {
                    !rest.is_empty()
                        && rest
                            .iter()
                            .all(|b| b.is_ascii_digit() || matches!(b, b'K' | b'R'))
                        && rest[0].is_ascii_digit()
                })
            })
    };
    let parts: Vec<&[u8]> = value.split(|&b| b == b'-' || b == b'_').collect();
    parts.len() >= 2
        && parts.iter().all(|part| known(part))
        && parts.iter().any(|part| {
            [
                &b"AWS4"[..],
                b"HMAC",
                b"ECDSA",
                b"RSA",
                b"AES",
                b"ECDH",
                b"EDDSA",
            ]
            .contains(part)
        })
}

/// Whether `value` is a format string made of slots only, with at most
/// punctuation between them: `%s:%s`, `{}{}`, `{0}`, `{password}`,
/// `%(password)s`, `${1}`, `$1`.
fn is_format_only(value: &[u8]) -> bool {
    let mut slots = 0;
    let mut i = 0;
    while i < value.len() {
        let rest = &value[i..];
        let slot = match rest {
            [b'%', b'%', ..] => 2,
            [b'%', b'(', ..] => match memchr::memchr(b')', rest) {
                Some(close) => {
                    let conversion = rest[close + 1..]
                        .iter()
                        .position(u8::is_ascii_alphabetic)
                        .map(|n| close + 1 + n);
                    match conversion {
                        Some(at)
                            if rest[close + 1..at].iter().all(|b| {
                                b.is_ascii_digit() || matches!(b, b'-' | b'+' | b' ' | b'#' | b'.')
                            }) =>
                        {
                            at + 1
                        }
                        _ => 0,
                    }
                }
                None => 0,
            },
            [b'%', ..] => {
                let spec = rest[1..]
                    .iter()
                    .take_while(|b| {
                        b.is_ascii_digit()
                            || matches!(b, b'-' | b'+' | b' ' | b'#' | b'.' | b'l' | b'h' | b'z')
                    })
                    .count();
                match rest.get(1 + spec) {
                    Some(
                        b's' | b'd' | b'i' | b'u' | b'f' | b'x' | b'X' | b'r' | b'c' | b'o' | b'e'
                        | b'g' | b'p' | b'v' | b'q',
                    ) => 2 + spec,
                    _ => 0,
                }
            }
            [b'$', b'{', ..] | [b'{', ..] => {
                let open = usize::from(rest[0] == b'$') + 1;
                match memchr::memchr(b'}', rest) {
                    Some(close)
                        if rest[open..close].iter().all(|b| {
                            b.is_ascii_alphanumeric()
                                || matches!(
                                    b,
                                    b'_' | b'.'
                                        | b':'
                                        | b'!'
                                        | b'<'
                                        | b'>'
                                        | b'^'
                                        | b'#'
                                        | b'+'
                                        | b'-'
                                        | b' '
                                        | b'?'
                                )
                        }) =>
                    {
                        close + 1
                    }
                    _ => 0,
                }
            }
            [b'$', digit, ..] if digit.is_ascii_digit() => {
                1 + rest[1..].iter().take_while(|b| b.is_ascii_digit()).count()
            }
            _ => 0,
        };
        if slot > 0 {
            slots += 1;
            i += slot;
        } else if value[i].is_ascii_alphanumeric() {
            return false;
        } else {
            i += 1;
        }
    }
    slots > 0
}

/// Whether a value set to `PWD` or `OLDPWD` is a directory (`PWD:
/// /home/runner/work`, `PWD=C:\\src`): the shell's working directory, not
/// a password (ODBC's `PWD=…;` holds no path).
fn is_working_directory(name: &[u8], value: &[u8]) -> bool {
    let name = name.strip_prefix(b"$").unwrap_or(name);
    matches!(name, b"PWD" | b"OLDPWD" | b"INIT_CWD")
        && (value.starts_with(b"/")
            || value.starts_with(b"~")
            || (value.len() >= 3
                && value[0].is_ascii_alphabetic()
                && value[1] == b':'
                && matches!(value[2], b'\\' | b'/')))
}

/// Whether the URL password at `start` is a CVS access method
/// (`:pserver:anonymous@host:/cvsroot`, `cvs://:pserver:…`): a CVSROOT's
/// method, not a password.
fn is_cvs_method(data: &[u8], start: usize) -> bool {
    const METHODS: &[&[u8]] = &[
        b"pserver:",
        b"gserver:",
        b"kserver:",
        b"ext:",
        b"extssh:",
        b"server:",
        b"sspi:",
        b"fork:",
        b"local:",
    ];
    start > 0
        && data[start - 1] == b':'
        && METHODS
            .iter()
            .any(|method| data[start..].starts_with(method))
}

/// Whether the value at `start` follows its name after spaces or tabs
/// only (no `=`, `:` or quote between them).
fn blank_separated(data: &[u8], start: usize) -> bool {
    let before = &data[..start];
    let name_end = before
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(0, |i| i + 1);
    name_end < start
        && name_end > 0
        && (before[name_end - 1].is_ascii_alphanumeric() || before[name_end - 1] == b'_')
}

/// Whether the line holding `at` carries the allow marker in a comment
/// (within [`LINE_REACH`] bytes of it: a marker further away on a longer
/// line does not count). A marker inside a string value
/// (`user_agent="keyforge:allow"`, text a user typed into a log) is data,
/// not a reviewer's decision, and silences nothing.
fn allowed_inline(data: &[u8], at: usize) -> bool {
    let start = line_start(data, at);
    let high = data.len().min(at.saturating_add(LINE_REACH));
    let end = memchr::memchr(b'\n', &data[at..high]).map_or(high, |i| at + i);
    let line = &data[start..end];
    memchr::memmem::find_iter(line, ALLOW_MARKER).any(|marker| in_comment(line, marker))
}

/// Whether `line[at..]` is inside a comment: a comment opener (`#`, `//`,
/// `/*`, `<!--`, `--`, `;`, `{#`, `%` opening the line) comes before it
/// outside any quoted string. `#`, `--` and `;` count only at the line's
/// start or after a blank (`a#b`, `x--`, `f();` are not comments), `//`
/// not after `:` (a URL's `https://`); a `'` after a letter or digit is
/// an apostrophe (`don't`), not a quote.
fn in_comment(line: &[u8], at: usize) -> bool {
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < at {
        let b = line[i];
        if let Some(open) = quote {
            if b == b'\\' {
                i += 2;
                continue;
            }
            if b == open {
                quote = None;
            }
            i += 1;
            continue;
        }
        let after_blank = i == 0 || line[i - 1].is_ascii_whitespace();
        let next = line.get(i + 1).copied();
        let opens = match b {
            b'#' | b';' => after_blank,
            b'-' => after_blank && next == Some(b'-'),
            b'/' => next == Some(b'*') || (next == Some(b'/') && (i == 0 || line[i - 1] != b':')),
            b'<' => line[i..].starts_with(b"<!--"),
            b'{' => next == Some(b'#'),
            b'%' => line[..i].iter().all(u8::is_ascii_whitespace),
            _ => false,
        };
        if opens {
            return true;
        }
        match b {
            b'"' | b'`' => quote = Some(b),
            b'\'' if i == 0 || !line[i - 1].is_ascii_alphanumeric() => quote = Some(b),
            _ => {}
        }
        i += 1;
    }
    false
}

/// How far the checks of a candidate look along its line, each way. Every
/// candidate on a line looking at the whole line made a long line of
/// candidates (one line of `password=…` repeated) quadratic.
const LINE_REACH: usize = 4096;

/// The start of the line holding `at`, looking back at most
/// [`LINE_REACH`] bytes (where it stops if the line is longer).
fn line_start(data: &[u8], at: usize) -> usize {
    let low = at.saturating_sub(LINE_REACH);
    memchr::memrchr(b'\n', &data[low..at]).map_or(low, |i| low + i + 1)
}

/// 1-based line and column (in bytes) of each offset, for offsets given in
/// increasing order.
#[derive(Debug)]
pub struct LineIndex<'a> {
    data: &'a [u8],
    line: usize,
    line_start: usize,
    scanned: usize,
    /// The last character column counted: (line start, offset, characters
    /// from the line start to the offset), so that the columns of many
    /// findings on one long line cost the line once, not once each.
    chars: (usize, usize, usize),
    /// The last UTF-16 position decoded: (offset, line, column).
    utf16: (usize, usize, usize),
}

impl<'a> LineIndex<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            line: 1,
            line_start: 0,
            scanned: 0,
            chars: (0, 0, 0),
            utf16: (0, 1, 1),
        }
    }

    /// The (line, column) of `offset`, the column counting characters
    /// (invalid UTF-8 bytes one each, as `from_utf8_lossy` shows them);
    /// offsets must not decrease, or the count starts over.
    pub fn locate_chars(&mut self, offset: usize) -> (usize, usize) {
        let (line, byte_column) = self.locate(offset);
        let line_start = offset + 1 - byte_column;
        let (start, from, counted) = self.chars;
        // Resume at the last offset only if it starts a character: a count
        // from inside one would see its tail bytes as invalid.
        let boundary = self.data.get(from).is_none_or(|b| (b & 0xc0) != 0x80);
        let (from, counted) = if start == line_start && from <= offset && boundary {
            (from, counted)
        } else {
            (line_start, 0)
        };
        let counted = counted
            + String::from_utf8_lossy(&self.data[from..offset])
                .chars()
                .count();
        self.chars = (line_start, offset, counted);
        (line, counted + 1)
    }

    /// The (line, column) of byte `offset` of UTF-16 text in `order`, in
    /// characters of the decoded text (a BOM not counted); offsets must
    /// not decrease, or the decoding starts over.
    pub fn utf16_position(&mut self, order: Utf16, offset: usize) -> (usize, usize) {
        let data = self.data;
        let base = usize::from(matches!(data, [0xff, 0xfe, ..] | [0xfe, 0xff, ..])) * 2;
        let end = offset.clamp(base, data.len());
        let (mut from, mut line, mut column) = self.utf16;
        if from < base || from > end || (end - from) % 2 != 0 {
            (from, line, column) = (base, 1, 1);
        }
        let units = data[from..end].chunks_exact(2).map(|pair| match order {
            Utf16::Little => u16::from_le_bytes([pair[0], pair[1]]),
            Utf16::Big => u16::from_be_bytes([pair[0], pair[1]]),
        });
        for decoded in char::decode_utf16(units) {
            if decoded == Ok('\n') {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
        }
        // Resume only where the whole units end (an odd tail is left to
        // the next call's restart).
        let whole = from + (end - from) / 2 * 2;
        self.utf16 = (whole, line, column);
        (line, column)
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

    /// Columns counted incrementally along a line (many findings on one
    /// long line) agree with counting each from the line's start, in UTF-8
    /// with multi-byte and invalid bytes, and in UTF-16.
    #[test]
    fn incremental_columns_agree_with_counting_from_the_start() {
        let mut text = Vec::new();
        for i in 0..300 {
            text.extend_from_slice(if i % 3 == 0 {
                "é😀 ".as_bytes()
            } else {
                b"ab\xff "
            });
            if i % 50 == 49 {
                text.push(b'\n');
            }
        }
        let mut index = LineIndex::new(&text);
        for offset in (0..text.len()).step_by(7) {
            let (line, column) = index.locate_chars(offset);
            let start = memchr::memrchr(b'\n', &text[..offset]).map_or(0, |i| i + 1);
            let expected = String::from_utf8_lossy(&text[start..offset])
                .chars()
                .count()
                + 1;
            assert_eq!(
                (line, column),
                (
                    memchr::memchr_iter(b'\n', &text[..offset]).count() + 1,
                    expected
                ),
                "at {offset}"
            );
        }
        let decoded = String::from_utf8_lossy(&text).into_owned();
        let mut utf16 = vec![0xff, 0xfe];
        for unit in decoded.encode_utf16() {
            utf16.extend_from_slice(&unit.to_le_bytes());
        }
        let mut index = LineIndex::new(&utf16);
        let mut fresh_line = 1;
        let mut fresh_column = 1;
        let mut units = decoded.encode_utf16().collect::<Vec<u16>>().into_iter();
        let mut at = 2;
        // Positions at every character start, compared with a fresh count.
        for c in decoded.chars() {
            assert_eq!(
                index.utf16_position(Utf16::Little, at),
                (fresh_line, fresh_column),
                "at {at}"
            );
            let width = c.len_utf16();
            for _ in 0..width {
                units.next();
            }
            at += 2 * width;
            if c == '\n' {
                fresh_line += 1;
                fresh_column = 1;
            } else {
                fresh_column += 1;
            }
        }
    }

    /// Gates only skip work: with them and without, a scan finds the same
    /// secrets at the same places, over every rule's examples and
    /// negatives (alone and inside JSON strings, XML, longer lines), the
    /// repository's own files, and generated lines built from the pieces
    /// gates look at (names, operators, quotes, escapes, URLs).
    #[test]
    fn gates_change_no_finding() {
        let gated = scanner();
        let ungated = scanner().without_gates();
        let same = |data: &[u8], what: &str| {
            let a = gated.scan_deep(data);
            let b = ungated.scan_deep(data);
            assert_eq!(
                a,
                b,
                "gates changed the findings of {what}: {:?}",
                String::from_utf8_lossy(data)
            );
        };
        for rule in gated.rules() {
            for text in rule.examples.iter().chain(&rule.negatives) {
                same(text.as_bytes(), &rule.id);
                let escaped = text
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                same(
                    format!(r#"{{"source": ["{escaped}\n"]}}"#).as_bytes(),
                    &rule.id,
                );
                same(
                    format!("<config><x>{text}</x>\n  other = 1; {text} // tail").as_bytes(),
                    &rule.id,
                );
            }
        }
        // The repository's own files.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut stack = vec![root];
        let mut files = 0;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                let name = entry.file_name();
                if name == "target" || name == ".git" || name == ".work" || name == "node_modules" {
                    continue;
                }
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(data) = std::fs::read(&path)
                    && data.len() < 4 << 20
                {
                    same(&data, &path.display().to_string());
                    files += 1;
                }
            }
        }
        assert!(files > 100, "only {files} files read");
        // Generated lines: random sequences of the pieces gates test.
        let pieces: &[&str] = &[
            "api_key",
            "Token",
            "SECRET",
            "db.password",
            "Pass",
            "auth",
            "salt",
            "key",
            "<",
            ">",
            "</Pass>",
            "ns:",
            " = ",
            ":",
            ":=",
            "=>",
            "=",
            ",",
            "\"",
            "'",
            "`",
            "\\\"",
            "\\",
            "]",
            "[",
            " ",
            "\t",
            "\n",
            "|",
            ">-",
            "+",
            ".",
            "://",
            "https",
            "user",
            "@",
            "host.example",
            "/path",
            "?q",
            "#",
            "Zq8LmX2pR7vT4nW9kB3y",
            "s3cr",
            "hX9",
            "(",
            ")",
            ";",
        ];
        // Lines such generation found once, when a gate was wrong; kept
        // reversed so that the repository's own scan does not report them.
        for reversed in [
            "tlasrc3stlas@yekrc3s:sn.rc3s//:yekyek_ipa",
            "]|ssaP`\"\\=drowssap.bdresu[ssaP:=",
            ",; = \\sptth\"\"\\//:drowssap.bd->['",
            "(|:sn\\rc3s=:drowssap.bdnekoT\"\\drowssap.bdn\\//:",
            "y3Bk9Wn4Tv7Rp2XmL8qZdrowssap.bd=`'htuay3Bk9Wn4Tv7Rp2XmL8qZ]resu \t[",
            ">=q?y3Bk9Wn4Tv7Rp2XmL8qZ@->=`+`ssaP:htap/",
        ] {
            let line: Vec<u8> = reversed.bytes().rev().collect();
            same(&line, "a line found by generation");
        }
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..50_000 {
            let mut line = String::new();
            for _ in 0..12 {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                line.push_str(pieces[(seed >> 33) as usize % pieces.len()]);
            }
            same(line.as_bytes(), "a generated line");
        }
    }

    #[test]
    fn json_escaped_secrets_inside_other_text_are_found() {
        // Built at run time: a random-looking value, never a real one.
        let value: String = (0..40u32)
            .map(|i| {
                let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
                char::from(alphabet[(i.wrapping_mul(2_654_435_761) >> 26) as usize % 62])
            })
            .collect();
        for line in [
            format!(r#"{{"msg":"token = \"{value}\""}}"#),
            format!(r#"2026-01-01T00:00:00Z stdout F {{"msg":"token = \"{value}\""}}"#),
            format!(r#"+    "token = \"{value}\"\n","#),
        ] {
            let hits = scanner().scan_deep_at(line.as_bytes(), None);
            assert!(
                hits.iter()
                    .any(|(hit, _)| line[hit.start..hit.end].contains(&value[..20])),
                "{line}: {hits:?}"
            );
        }
    }

    /// Every rule finds every one of its examples (as that rule) and none
    /// of its negatives.
    #[test]
    fn every_rule_finds_its_examples_and_not_its_negatives() {
        let scanner = scanner();
        for (index, rule) in scanner.rules().iter().enumerate() {
            assert!(!rule.examples.is_empty(), "{} has no example", rule.id);
            let path = rule.example_path.as_deref();
            for example in &rule.examples {
                let hits = scanner.scan_at(example.as_bytes(), path);
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
                let hits = scanner.scan_at(negative.as_bytes(), path);
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

    /// The prefilter stays on its SIMD search (Teddy takes at most 64
    /// literals); a rule adding keywords past that slows every scan.
    #[test]
    fn the_built_in_keywords_keep_the_prefilter_on_its_simd_path() {
        let scanner = scanner();
        let patterns = scanner.prefilter_patterns();
        assert!(patterns <= 64, "{patterns} prefilter literals");
        // Teddy's fingerprints are as long as its shortest literal: one of
        // two bytes made every scan of the tree corpus take about 1.5x the
        // time (measured on issue 16's work).
        for rule in scanner.rules() {
            for keyword in &rule.keywords {
                assert!(keyword.len() >= 3, "{}: `{keyword}`", rule.id);
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

    /// Found by a tester: `keyforge:allow` anywhere on a line silenced it,
    /// so a log line whose data held the marker passed `redact` whole.
    /// For `scan` the marker counts in a comment only; `redact` ignores it.
    #[test]
    fn an_allow_marker_counts_only_as_a_comment_and_never_for_redact() {
        let scanner = scanner();
        let token = format!("ghp_{}", keyforge_types::random_base62(36));
        let silenced = [
            format!("token = \"{token}\"  # keyforge:allow"),
            format!("const t = \"{token}\"; // keyforge:allow: a test fixture"),
            format!("token: {token} # don't worry, keyforge:allow"),
            format!("example: {token} <!-- keyforge:allow -->"),
        ];
        for line in &silenced {
            assert!(scanner.scan_deep(line.as_bytes()).is_empty(), "{line}");
            let redacted = crate::redact::redact_bytes(&scanner, line.as_bytes());
            let redacted = String::from_utf8_lossy(&redacted);
            assert!(!redacted.contains(&token), "redact kept {redacted}");
        }
        for line in [
            format!("user_agent=\"keyforge:allow\" token={token}"),
            format!("msg='keyforge:allow' token={token}"),
            format!("x = \"# keyforge:allow\"; token = \"{token}\""),
            format!("GET https://x.test/#keyforge:allow?t={token}"),
            format!("token={token} note=keyforge:allow"),
        ] {
            let hits = scanner.scan_deep(line.as_bytes());
            assert_eq!(hits.len(), 1, "{line}");
            let redacted = crate::redact::redact_bytes(&scanner, line.as_bytes());
            let redacted = String::from_utf8_lossy(&redacted);
            assert!(!redacted.contains(&token), "redact kept {redacted}");
        }
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
        // A first piece long enough to be a key on its own: the joined key
        // replaces it, so the whole key is reported (found by a tester:
        // `redact` left the second literal, 156 characters of the key).
        let long = openai_key();
        for at in [20, 50, 60, 100] {
            let (a, b) = long.split_at(at);
            for case in [
                format!("k = \"{a}\" + \"{b}\""),
                format!("k = (\"{a}\"\n     \"{b}\")"),
                format!("k = \"{a}\" +\n  \"{b}\";"),
            ] {
                let hits = scanner.scan_deep(case.as_bytes());
                assert_eq!(hits.len(), 1, "{case}");
                let (hit, secret) = &hits[0];
                assert_eq!(secret, long.as_bytes(), "{case}");
                assert!(
                    case[..hit.end].ends_with(b),
                    "{case}: the span ends at {}",
                    hit.end
                );
            }
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

    fn openai_key() -> String {
        format!(
            "sk-proj-{}T3BlbkFJ{}",
            keyforge_types::random_base62(74),
            keyforge_types::random_base62(74)
        )
    }

    fn base64(data: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    fn utf16le(text: &str, bom: bool) -> Vec<u8> {
        let mut out = if bom { vec![0xff, 0xfe] } else { Vec::new() };
        for unit in text.encode_utf16() {
            out.extend_from_slice(&unit.to_le_bytes());
        }
        out
    }

    /// A key hidden by each encoding of the issue is found, as the rule of
    /// the key itself, at a span of the original bytes.
    #[test]
    fn keys_behind_every_encoding_are_found_at_their_encoded_span() {
        let scanner = scanner();
        let key = openai_key();
        let encoded = base64(key.as_bytes());
        let escaped_cell = format!(
            "{{\"cells\": [{{\"cell_type\": \"code\", \"source\": [\"client = OpenAI(api_key=\\\"{key}\\\")\\n\"]}}]}}"
        );
        let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
            (
                "base64 in a Kubernetes Secret",
                format!("kind: Secret\ndata:\n  OPENAI: {encoded}\n").into_bytes(),
                encoded.clone().into_bytes(),
            ),
            (
                "UTF-16LE with a byte order mark",
                utf16le(&format!("OPENAI_API_KEY={key}\r\n"), true),
                utf16le(&key, false),
            ),
            (
                "UTF-16LE without one",
                utf16le(&format!("OPENAI_API_KEY={key}\r\n"), false),
                utf16le(&key, false),
            ),
            (
                "JSON escapes in a notebook cell",
                escaped_cell.clone().into_bytes(),
                key.clone().into_bytes(),
            ),
        ];
        for (name, data, span) in cases {
            let hits = scanner.scan_deep(&data);
            let found: Vec<&str> = hits
                .iter()
                .map(|(hit, _)| scanner.rules()[hit.rule].id.as_str())
                .collect();
            assert_eq!(found, ["openai-project-key"], "{name}");
            let (hit, secret) = &hits[0];
            assert_eq!(secret, key.as_bytes(), "{name}: the decoded secret");
            assert_eq!(&data[hit.start..hit.end], &span[..], "{name}: the span");
        }
    }

    /// A generic `token = "…"` inside a notebook cell's JSON string is found
    /// as it is in a .py file.
    #[test]
    fn a_generic_assignment_in_a_notebook_cell_is_found() {
        let scanner = scanner();
        let token = keyforge_types::random_base62(32);
        let python = format!("token = \"{token}\"\n");
        let notebook = format!("{{\"cells\": [{{\"source\": [\"token = \\\"{token}\\\"\\n\"]}}]}}");
        for data in [python, notebook] {
            let hits = scanner.scan_deep(data.as_bytes());
            assert_eq!(hits.len(), 1, "{data}");
            assert_eq!(hits[0].1, token.as_bytes(), "{data}");
        }
    }

    /// A secret on the line after `key: |` or `key: >-` is found.
    #[test]
    fn yaml_block_scalars_are_read() {
        let scanner = scanner();
        let token = keyforge_types::random_base62(32);
        for indicator in ["|", ">-", "|+", ">"] {
            let data = format!("api_token: {indicator}\n  {token}\nnext: 1\n");
            let hits = scanner.scan(data.as_bytes());
            assert_eq!(hits.len(), 1, "{data}");
            assert_eq!(
                &data.as_bytes()[hits[0].start..hits[0].end],
                token.as_bytes()
            );
        }
    }

    /// A placeholder is a whole value: random keys that happen to hold a
    /// placeholder word are still keys (about 1 in 2,000 random sk-proj
    /// keys holds `your` in some case).
    #[test]
    fn a_placeholder_word_inside_a_random_key_does_not_hide_it() {
        let scanner = scanner();
        for word in ["yOUr", "fake", "xxxx", "Test", "dummy", "here"] {
            let key = format!(
                "sk-proj-{}{word}{}T3BlbkFJ{}",
                keyforge_types::random_base62(30),
                keyforge_types::random_base62(40),
                keyforge_types::random_base62(74)
            );
            assert!(!is_placeholder(key.as_bytes()), "{key}");
            let hits = scanner.scan(format!("OPENAI_API_KEY={key}").as_bytes());
            assert_eq!(hits.len(), 1, "{key}");
            let ghp = format!(
                "ghp_{}{word}",
                keyforge_types::random_base62(36 - word.len())
            );
            assert_eq!(scanner.scan(ghp.as_bytes()).len(), 1, "{ghp}");
        }
        for placeholder in [
            &b"your-key-here"[..],
            b"sk-...",
            b"<OPENAI_API_KEY>",
            b"xxxxxxxxxxxxxxxxxxxx",
            b"sk-proj-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            b"changeme",
            b"${API_KEY}",
            b"{{ .Values.key }}",
            b"your_api_key",
            b"INSERT-TOKEN-HERE",
        ] {
            assert!(
                is_placeholder(placeholder),
                "{}",
                String::from_utf8_lossy(placeholder)
            );
        }
        // Weak passwords are not placeholders.
        for weak in [
            &b"pass123"[..],
            b"password123",
            b"hunter22",
            b"AdminPassword123",
        ] {
            assert!(!is_placeholder(weak), "{}", String::from_utf8_lossy(weak));
        }
    }

    /// Hex is judged against hex's own maximum (4 bits per character), so a
    /// random 32-hex API key passes where the base64 floor of 4.0 cannot
    /// be reached; a hex run of one repeated pattern does not.
    #[test]
    fn entropy_is_judged_per_alphabet() {
        let hex: String = keyforge_types::random_base62(32)
            .bytes()
            .map(|b| char::from(b"0123456789abcdef"[usize::from(b % 16)]))
            .collect();
        assert!(entropy(hex.as_bytes()) <= 4.0);
        assert!(entropy(hex.as_bytes()) >= entropy_floor(4.0, hex.as_bytes()));
        assert!((alphabet_bits(b"deadbeef0123") - 4.0).abs() < 1e-9);
        assert!(
            entropy(b"abababababababababababababababab")
                < entropy_floor(4.0, b"abababababababababababababababab")
        );
        let scanner = scanner();
        let hits = scanner.scan(format!("DD_API_KEY={hex}").as_bytes());
        assert_eq!(hits.len(), 1, "{hex}");
        // Letter runs of a hex token are not placeholder words (`a` after
        // `b`, `ce`, `fe` was taken for a prefix and a stand-in).
        let token = ["866567922876b644", "ce2466fe4a116464"].concat();
        let hits = scanner.scan(format!("DD_API_KEY={token}").as_bytes());
        assert_eq!(hits.len(), 1);
    }

    /// References to where a secret lives are not secrets, in any of the
    /// usual spellings; the same names assigned a literal are.
    #[test]
    fn references_are_not_reported_and_literals_are() {
        let scanner = scanner();
        let token = keyforge_types::random_base62(32);
        for reference in [
            "const config = { apiKey: process.env.OPENAI_API_KEY };",
            "api_key = os.environ[\"OPENAI_API_KEY\"]",
            "api_key = os.getenv(\"OPENAI_API_KEY\")",
            "api_key = ENV.fetch(\"OPENAI_API_KEY\")",
            "API_KEY=${OPENAI_API_KEY}",
            "API_KEY=$(vault kv get -field=key secret/openai)",
            "api_key = settings.OPENAI_API_KEY_FROM_ENV",
            "api_key = load_api_key_from_keychain()",
            "api_key: apiKeyFromTheEnvironment",
            "password = config.database.password",
        ] {
            assert!(scanner.scan(reference.as_bytes()).is_empty(), "{reference}");
        }
        for literal in [
            format!("const config = {{ apiKey: \"{token}\" }};"),
            format!("api_key = \"{token}\""),
            format!("API_KEY={token}"),
        ] {
            assert_eq!(scanner.scan(literal.as_bytes()).len(), 1, "{literal}");
        }
    }

    #[test]
    fn a_few_stray_nuls_do_not_make_a_file_binary() {
        let mut env = b"AWS_REGION=eu-west-1\n".to_vec();
        env.push(0);
        env.extend_from_slice(
            format!("\nDB_PASSWORD={}\n", keyforge_types::random_base62(12)).as_bytes(),
        );
        assert!(!Scanner::is_binary(&env));
        let scanner = scanner();
        assert_eq!(scanner.scan(&env).len(), 1);
        // A real binary: most bytes are control bytes.
        let binary: Vec<u8> = (0..4096u32).map(|i| (i % 7) as u8).collect();
        assert!(Scanner::is_binary(&binary));
        assert!(!Scanner::is_binary(&utf16le("KEY=value\r\n", true)));
    }

    /// Issue #16: compiled formats known by their first bytes are binary
    /// even with few NULs: a `.pyc` holding a password in its constants is
    /// not scanned as text (and counted as a binary skip by the walker);
    /// the same bytes without the magic are.
    #[test]
    fn compiled_files_are_binary_by_their_magic() {
        let body = format!(
            "\u{e3}\u{1}\nDB_PASSWORD={}\n",
            keyforge_types::random_base62(14)
        );
        let mut pyc = vec![0xcb, 0x0d, b'\r', b'\n', 0, 0, 0, 0];
        pyc.extend_from_slice(&[0x5a; 8]);
        pyc.extend_from_slice(body.as_bytes());
        assert!(Scanner::is_binary(&pyc));
        let text = pyc[16..].to_vec();
        assert!(!Scanner::is_binary(&text));
        assert_eq!(scanner().scan(&text).len(), 1);
        for magic in [
            &b"\x7fELF\x02\x01"[..],
            b"\xca\xfe\xba\xbe\0\0",
            b"\0asm\x01\0",
        ] {
            let mut file = magic.to_vec();
            file.extend_from_slice(body.as_bytes());
            assert!(Scanner::is_binary(&file), "{magic:?}");
        }
    }

    /// Issue #16's false-positive kinds that need more than one line or a
    /// view to show (the one-line kinds are negatives of their rules):
    /// two statements on two lines are not one string joined across them,
    /// while a key written over two lines with a joiner, or as C's and
    /// Python's adjacent literals, still is.
    #[test]
    fn statements_on_two_lines_are_not_joined_into_one_value() {
        let scanner = scanner();
        let random = keyforge_types::random_base62(32);
        let statements = format!("secret = \"x\"\n\"{random}\" = \"value\"\n");
        assert!(found(&scanner, &statements).is_empty(), "{statements}");
        let yaml = format!("token: 'x'\n'{random}': value\n");
        assert!(found(&scanner, &yaml).is_empty(), "{yaml}");
        let (head, tail) = random.split_at(12);
        for joined in [
            format!("secret = \"{head}\" +\n    \"{tail}\"\n"),
            format!("API_SECRET = \"{head}\" \\\n    \"{tail}\"\n"),
            format!("const char *secret = \"{head}\"\n    \"{tail}\";\n"),
        ] {
            assert_eq!(found(&scanner, &joined), ["generic-api-key"], "{joined}");
        }
    }

    /// Issue #16: a query string's value ends at `&`. The secret is
    /// reported without the parameters after it, and a secret in a later
    /// parameter is found too.
    #[test]
    fn a_query_string_value_ends_at_its_ampersand() {
        let scanner = scanner();
        let first = keyforge_types::random_base62(28);
        let second = keyforge_types::random_base62(30);
        let url = format!(
            "GET https://api.example.org/v1?api_key={first}&page=2&access_token={second}&x=y\n"
        );
        let secrets: Vec<Vec<u8>> = scanner
            .scan_deep(url.as_bytes())
            .into_iter()
            .map(|(_, secret)| secret)
            .collect();
        assert_eq!(secrets, [first.into_bytes(), second.into_bytes()], "{url}");
    }

    /// Issue #16: names in code read as names, and random values in the
    /// same places are still secrets.
    #[test]
    fn names_in_code_are_not_secrets_and_random_values_there_are() {
        for name in [
            "MLKEM768X25519PrivateKey",
            "fts5CreateTokenizer",
            "xCreateTokenizer",
            "InvalidationList",
            "CloudFrontOriginAccessIdentityList",
            "ATNState",
            "WithSHA1And3",
            "TripleDES",
            "SOFTWARE",
            "Microsoft",
            "v2",
            "SDKs",
        ] {
            assert!(reads_as_name(name.as_bytes()), "{name}");
        }
        // An Amazon account identifier's random capitals and digits.
        let issued = format!("AF6RHO7KZU5XRVQJ{}", "GXK6HB56KR2A");
        assert!(!reads_as_name(issued.as_bytes()));
        // Random values where the tester found names: a dotted path, a
        // registry path, a statement, a value before `${{`. Each shape
        // built from random base62 parts; a name check that let random
        // parts through would drop real secrets there.
        let scanner = scanner();
        let mut dotted_names = 0;
        let mut found_total = 0;
        let rounds = 5000;
        // A fixed xorshift sequence, so the counts are the same every run.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut random_base62 = |length: usize| -> String {
            (0..length)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    char::from(
                        b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                            [usize::try_from(state % 62).unwrap_or(0)],
                    )
                })
                .collect()
        };
        for _ in 0..rounds {
            let a = random_base62(14);
            let b = random_base62(14);
            let c = random_base62(28);
            if is_dotted_name_path(format!("x{a}.y{b}").as_bytes()) {
                dotted_names += 1;
            }
            let shapes = [
                format!("\"output_token\": \"x{a}.y{b}\""),
                format!("key: x{c}-${{{{ runner.os }}}}"),
                format!("let key = r\"x{a}\\y{b}\\z{a}\";"),
                format!("api.xCreateTokenizer_v2 = \"x{c}\";"),
                format!("NOPASSWORD = \"no-{a}\""),
            ];
            for shape in &shapes {
                found_total += usize::from(!found(&scanner, shape).is_empty());
            }
        }
        // Two random parts of 15 characters both reading as names: 6 in
        // 5,000 of this sequence. Of the random shapes, 30 in 25,000 are
        // not found (some by the older identifier and entropy checks),
        // hence the small allowance.
        assert!(
            dotted_names * 1000 < rounds * 2,
            "{dotted_names} of {rounds}"
        );
        assert!(
            found_total * 1000 >= rounds * 5 * 997,
            "{found_total} of {}",
            rounds * 5
        );
    }

    fn random_hex(length: usize) -> String {
        keyforge_types::random_base62(length)
            .bytes()
            .map(|b| char::from(b"0123456789abcdef"[usize::from(b % 16)]))
            .collect()
    }

    fn found(scanner: &Scanner, data: &str) -> Vec<String> {
        scanner
            .scan_deep(data.as_bytes())
            .iter()
            .map(|(hit, _)| scanner.rules()[hit.rule].id.clone())
            .collect()
    }

    /// Gap 1 of issue #16: a .netrc entry on one line or several, in any
    /// file, a password of letters only included; not without its
    /// `machine … login …` head.
    #[test]
    fn netrc_entries_are_found_on_one_line_or_several_in_any_file() {
        let scanner = scanner();
        let word: String = keyforge_types::random_base62(40)
            .chars()
            .filter(char::is_ascii_lowercase)
            .take(10)
            .collect();
        let password = format!("{word}{}", keyforge_types::random_base62(6));
        for data in [
            format!("machine h.example.org\nlogin u\npassword {password}\n"),
            format!("machine h.example.org\n  login u\n  password {word}\n"),
            format!("machine h.example.org login u password {password}\n"),
            format!("RUN echo 'machine h login u password {password}' > ~/.netrc\n"),
        ] {
            assert_eq!(found(&scanner, &data), ["netrc-password"], "{data}");
        }
        for data in [
            format!("The password {password} is old.\n"),
            "machine h login u password $NETRC_PASSWORD\n".to_owned(),
            format!("machine learning password {password}\n"),
        ] {
            assert!(found(&scanner, &data).is_empty(), "{data}");
        }
    }

    /// Gap 2: Python bytes and raw literals (`b'…'`, `rb'…'`, `br"…"`),
    /// escaped bytes judged as bytes.
    #[test]
    fn python_bytes_literals_are_read() {
        let scanner = scanner();
        let token = keyforge_types::random_base62(40);
        let escaped: String = (0..24).map(|_| format!("\\x{}", random_hex(2))).collect();
        for data in [
            format!("SECRET_KEY = b'{token}'"),
            format!("app.secret_key = rb'{token}'"),
            format!("SECRET_KEY = br\"{token}\""),
            format!("app.config['SECRET_KEY'] = b'{escaped}'"),
            format!("DB_PASSWORD = b'{}'", &token[..12]),
        ] {
            assert_eq!(found(&scanner, &data).len(), 1, "{data}");
        }
        for data in [
            "SECRET_KEY = b'changeme-changeme-changeme'",
            "SECRET_KEY = b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00'",
        ] {
            assert!(found(&scanner, data).is_empty(), "{data}");
        }
    }

    /// Gap 3: fish's `set -gx NAME value` and csh's `setenv NAME value`.
    #[test]
    fn fish_and_csh_variables_are_read() {
        let scanner = scanner();
        let token = keyforge_types::random_base62(40);
        let aws: String = keyforge_types::random_base62(38) + "/+";
        for (data, rule) in [
            (
                format!("set -gx SERVICE_API_KEY {token}"),
                "shell-variable-secret",
            ),
            (
                format!("set --export --global API_TOKEN '{token}'"),
                "shell-variable-secret",
            ),
            (format!("setenv API_KEY {token}"), "shell-variable-secret"),
            (
                format!("set -Ux AWS_SECRET_ACCESS_KEY {aws}"),
                "aws-secret-access-key",
            ),
            (
                format!("setenv AWS_SECRET_ACCESS_KEY {aws}"),
                "aws-secret-access-key",
            ),
            (
                format!("set -x DB_PASSWORD {}", &token[..12]),
                "shell-variable-password",
            ),
        ] {
            assert_eq!(found(&scanner, &data), [rule], "{data}");
        }
        for data in [
            "set -gx API_KEY $OPENAI_API_KEY".to_owned(),
            "set -gx API_KEY (cat ~/.config/key)".to_owned(),
            format!("set the api_token {token}"),
            "set password for the deploy user".to_owned(),
        ] {
            assert!(found(&scanner, &data).is_empty(), "{data}");
        }
    }

    /// Gap 4: names for lookup keys or about keys need an unmistakably
    /// random value; credential names keep the usual checks.
    #[test]
    fn lookup_key_names_need_a_strong_value() {
        let scanner = scanner();
        let uuid = format!(
            "{}-{}-4{}-a{}-{}",
            random_hex(8),
            random_hex(4),
            random_hex(3),
            random_hex(3),
            random_hex(12)
        );
        let digest = random_hex(40);
        for name in [
            "cache_key",
            "sort_key",
            "primary_key",
            "foreign_key",
            "partition_key",
            "key_name",
            "keyboard",
            "monkey",
            "hotkey",
            "idempotency_key",
            "idempotencyKey",
            "kms_key_id",
        ] {
            assert!(names_a_lookup_key(name.as_bytes()), "{name}");
            for value in [&uuid, &digest] {
                let data = format!("{name} = \"{value}\"");
                assert!(found(&scanner, &data).is_empty(), "{data}");
            }
        }
        for name in [
            "API_KEY",
            "secret_key",
            "stripe_key",
            "private_key",
            "DD_APP_KEY",
            "cache_api_key",
            "signing_key",
        ] {
            assert!(!names_a_lookup_key(name.as_bytes()), "{name}");
            let data = format!("{name} = \"{uuid}\"");
            assert_eq!(found(&scanner, &data), ["generic-api-key"], "{data}");
        }
        // `auth` inside `author` or `authority` is not authentication.
        for name in [
            "authorArn",
            "author_email",
            "author1",
            "certificate_authority",
            "AUTHORITY",
        ] {
            assert!(names_an_author(name.as_bytes()), "{name}");
            let data = format!("\"{name}\": \"arn:aws:iam::123456789012:user/Li_Juan\"");
            assert!(found(&scanner, &data).is_empty(), "{data}");
        }
        for name in [
            "authorization",
            "AUTH_TOKEN",
            "authorKey",
            "author_token",
            "authorizer_secret",
        ] {
            assert!(!names_an_author(name.as_bytes()), "{name}");
            let data = format!("{name} = \"{uuid}\"");
            assert_eq!(found(&scanner, &data), ["generic-api-key"], "{data}");
        }
        // A value no identifier looks like is still reported.
        let token = keyforge_types::random_base62(40);
        assert_eq!(
            found(&scanner, &format!("cache_key = \"{token}\"")),
            ["generic-api-key"]
        );
    }

    /// Gap 5, as a property: random keys in which a long placeholder word
    /// is planted (between random characters) are still reported, by
    /// `is_placeholder` and by the scanner; documented examples, whose
    /// word opens or closes the value, are not.
    #[test]
    fn long_placeholder_words_mark_a_value_and_random_keys_hold_none() {
        let scanner = scanner();
        for round in 0..100 {
            for word in LONG_PLACEHOLDER_WORDS {
                let word = std::str::from_utf8(word).unwrap();
                let cut = 10 + round % 20;
                let around = |word: &str| {
                    format!(
                        "{}{word}{}",
                        keyforge_types::random_base62(cut),
                        keyforge_types::random_base62(40 - cut)
                    )
                };
                // Written in one case, mid-value: a documented stand-in
                // (`sk_test_4eC39HqLyjWDarjtEXAMPLEdp7dc`).
                for written in [word.to_owned(), word.to_ascii_uppercase()] {
                    let token = around(&written);
                    assert!(is_placeholder(token.as_bytes()), "{token}");
                    let data = format!("api_token = \"{token}\"");
                    assert!(found(&scanner, &data).is_empty(), "{data}");
                }
                // Mixed case mid-value (`…q7SaMpLe…`) is not how anyone
                // writes a stand-in: the key is reported.
                let mixed: String = word
                    .chars()
                    .enumerate()
                    .map(|(i, c)| {
                        if i % 2 == 0 {
                            c.to_ascii_uppercase()
                        } else {
                            c
                        }
                    })
                    .collect();
                let token = around(&mixed);
                assert!(!is_placeholder(token.as_bytes()), "{token}");
                let key = format!(
                    "sk-proj-{}{mixed}{}T3BlbkFJ{}",
                    keyforge_types::random_base62(cut),
                    keyforge_types::random_base62(30),
                    keyforge_types::random_base62(40)
                );
                assert_eq!(found(&scanner, &key), ["openai-project-key"], "{key}");
            }
        }
        let marked = format!(
            "ghp_{}sample{}",
            keyforge_types::random_base62(17),
            keyforge_types::random_base62(13)
        );
        assert!(is_placeholder(marked.as_bytes()), "{marked}");
        // Random keys of every usual length are never taken for stand-ins:
        // the words above are too long to occur by chance, and the short
        // ones count only as a whole value.
        for round in 0..20_000 {
            let token = keyforge_types::random_base62(20 + round % 100);
            assert!(!is_placeholder(token.as_bytes()), "{token}");
        }
        // Nor are random UUIDs and hex: a letter that is a placeholder word
        // alone (`a`) after a digit is not a stand-in (a tester's flaky
        // failure: `dab38975-7213-4304-a885-…` was taken for `a`).
        assert!(!is_placeholder(b"dab38975-7213-4304-a885-717032816610"));
        for _ in 0..5_000 {
            let hex = random_hex(32);
            let uuid = format!(
                "{}-{}-4{}-a{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[13..16],
                &hex[17..20],
                random_hex(12)
            );
            assert!(!is_placeholder(hex.as_bytes()), "{hex}");
            assert!(!is_placeholder(uuid.as_bytes()), "{uuid}");
        }
        for documented in [
            &b"sk-example-key"[..],
            b"changeme",
            b"your-example-token",
            b"AKIAIOSFODNN7EXAMPLE",
            b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            b"EXAMPLE0123456789abcdefghijklmnopq",
            b"sk_test_4eC39HqLyjWDarjtEXAMPLEdp7dc",
            b"proj-example-0123456789abcdefghijkl",
            b"[REDACTED:openai-project-key]",
        ] {
            assert!(
                is_placeholder(documented),
                "{}",
                String::from_utf8_lossy(documented)
            );
        }
    }

    /// A tester's finding: `scan` decoded base64 only in Kubernetes
    /// Secrets and in secret-named settings, so an encoded key under any
    /// other name, in a JSON blob or alone on a log line was missed
    /// (`redact` found it). Each is now found at its encoded span.
    #[test]
    fn base64_encoded_secrets_outside_secrets_and_secret_names_are_found() {
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let scanner = scanner();
        let github = format!("ghp_{}", keyforge_types::random_base62(36));
        // An access key id's 16 characters are base32 (`A-Z2-7`).
        let aws: String = "AKIA"
            .chars()
            .chain(
                keyforge_types::random_base62(16)
                    .bytes()
                    .map(|b| char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[usize::from(b % 32)])),
            )
            .collect();
        let credentials = format!(
            "{{\"type\": \"config\", \"llm\": {{\"api_key\": \"{}\"}}}}",
            openai_key()
        );
        let pretty = format!("{{\n  \"openai\": \"{}\"\n}}", openai_key());
        let cases: [(String, &str); 6] = [
            (openai_key(), "openai-project-key"),
            (github, "github-token"),
            (aws, "aws-access-key-id"),
            (planted_kf(), "kf-virtual-key"),
            (credentials, "openai-project-key"),
            (pretty, "openai-project-key"),
        ];
        for (secret, rule) in &cases {
            for encoded in [
                STANDARD.encode(secret.as_bytes()),
                URL_SAFE_NO_PAD.encode(secret.as_bytes()),
            ] {
                for data in [
                    format!("CONFIG_BLOB={encoded}\n"),
                    format!("{{\"blob\": \"{encoded}\", \"n\": 1}}"),
                    format!("2026-12-02T10:00:00Z worker started with {encoded} loaded\n"),
                    format!("apiVersion: v1\nkind: ConfigMap\ndata:\n  blob: {encoded}\n"),
                ] {
                    let hits = scanner.scan_deep(data.as_bytes());
                    let ids: Vec<&str> = hits
                        .iter()
                        .map(|(hit, _)| scanner.rules()[hit.rule].id.as_str())
                        .collect();
                    assert_eq!(ids, [*rule], "{data}");
                    let (hit, _) = &hits[0];
                    assert_eq!(&data[hit.start..hit.end], encoded.as_str(), "{data}");
                }
            }
        }
        // Encoded text that holds no secret stays quiet: a JWT's parts, a
        // pagination cursor.
        let cursor = STANDARD.encode(br#"{"offset": 200, "shard": "eu-7", "v": 2}"#);
        let quiet = format!("next_cursor = {cursor}\nAuthorization: Bearer {}\n", {
            let part = |text: &[u8]| URL_SAFE_NO_PAD.encode(text);
            format!(
                "{}.{}.{}",
                part(br#"{"alg":"HS256","typ":"JWT"}"#),
                part(br#"{"sub":"1234567890","name":"Jo"}"#),
                keyforge_types::random_base62(43)
            )
        });
        // The bearer token is a credential in its own right (the header
        // rule reports it), but what its parts decode to adds nothing.
        let ids: Vec<&str> = scanner
            .scan_deep(quiet.as_bytes())
            .iter()
            .map(|(hit, _)| scanner.rules()[hit.rule].id.as_str())
            .collect();
        assert_eq!(ids, ["http-authorization-header"], "{quiet}");
    }

    /// Regression (found in review): a line made of one marker repeated
    /// (`c2stc2st…`, 1 MiB) read its whole run again at each of its 262,144
    /// markers, minutes of work; each run is now read once. Nothing is in
    /// it, and the encoded key after it is still found.
    #[test]
    fn a_line_of_markers_is_one_run_read_once() {
        use base64::Engine;
        let scanner = scanner();
        let key = openai_key();
        let data = format!(
            "{}\nblob: {}\n",
            "c2st".repeat(256 * 1024),
            base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
        );
        let found: Vec<&str> = scanner
            .scan_deep(data.as_bytes())
            .iter()
            .map(|(hit, _)| scanner.rules()[hit.rule].id.as_str())
            .collect();
        assert_eq!(found, ["openai-project-key"]);
    }

    /// The base64 markers share the keywords' search: none holds or is
    /// held by a keyword (leftmost-first matching would hide one).
    #[test]
    fn base64_markers_and_keywords_do_not_overlap() {
        let scanner = scanner();
        for rule in scanner.rules() {
            for keyword in &rule.keywords {
                for marker in BASE64_MARKERS.iter().chain(SHIFTED_BASE64_MARKERS) {
                    assert!(
                        !keyword.contains(marker) && !marker.contains(keyword.as_str()),
                        "{keyword} / {marker}"
                    );
                }
            }
        }
    }

    /// Gap 10: URL-safe and unpadded base64, base64 of base64, and a
    /// Secret written as JSON are decoded, reported at the encoded span.
    /// Found by a tester: a coloured log line's key (`\x1b[32mAPI_KEY=…`)
    /// and a UTF-16 file without a byte order mark that opens in Russian
    /// (taken for binary) were missed by `scan` and `redact`.
    #[test]
    fn ansi_coloured_and_non_latin_utf16_text_is_read() {
        let scanner = scanner();
        let key = openai_key();
        for line in [
            format!("\x1b[32mAPI_KEY={key}\x1b[0m\n"),
            format!("\x1b[1;33mINFO\x1b[0m token=\x1b[36m{key}\x1b[39m\n"),
            format!("\x1b]0;title\x07OPENAI_API_KEY: {key}\n"),
        ] {
            let hits = scanner.scan_deep(line.as_bytes());
            assert_eq!(hits.len(), 1, "{line:?}");
            assert_eq!(hits[0].1, key.as_bytes(), "{line:?}");
            let redacted = crate::redact::redact_bytes(&scanner, line.as_bytes());
            let redacted = String::from_utf8_lossy(&redacted);
            assert!(!redacted.contains(&key[8..40]), "{redacted:?}");
        }
        for opening in [
            "Привет, это настройки приложения для продакшена\n",
            "Ρυθμίσεις της εφαρμογής για την παραγωγή\n",
            "הגדרות היישום לסביבת הייצור שלנו\n",
        ] {
            let text = format!("{opening}API_KEY={key}\n");
            let data = utf16le(&text, false);
            assert!(!Scanner::is_binary(&data), "{opening}");
            assert_eq!(utf16_order(&data), Some(Utf16::Little), "{opening}");
            let hits = scanner.scan_deep(&data);
            assert_eq!(hits.len(), 1, "{opening}");
            let redacted = crate::redact::redact_bytes(&scanner, &data);
            assert!(scanner.scan_deep(&redacted).is_empty(), "{opening}");
        }
        // Text in ASCII or UTF-8 is not taken for UTF-16.
        for text in [
            "plain ASCII text, long enough to be sniffed as text\n".repeat(4),
            "Привет, это настройки приложения\n".repeat(8),
        ] {
            assert_eq!(utf16_order(text.as_bytes()), None);
        }
    }

    /// Found by a tester: `base64("token: ghp_…")` was missed by `scan`
    /// (caught by `redact`): the markers were the encodings of a key that
    /// opens a 3-byte group. Keys at each of the three offsets, and base64
    /// of base64 outside a Kubernetes Secret, on a line of their own.
    /// Issue #16, misses found by a tester, each a kind: a base64 run with
    /// one to three base64-class characters glued in front (`x_c2st…`,
    /// `-c2st…`, where the URL-safe alphabet takes `-` and `_` into the
    /// run, so its decoding started out of step), URL-safe unpadded base64
    /// holding `-` and `_`, JSON `\uXXXX` escapes inside strings (the
    /// keyword itself escaped), and percent-encoded separators
    /// (`key%3A%20AKIA…`, `Authorization%3A%20Bearer%20…`).
    #[test]
    fn keys_behind_glued_base64_unicode_escapes_and_encoded_separators_are_found() {
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let scanner = scanner();
        let rule_of = |data: &str| -> Vec<String> {
            scanner
                .scan_deep(data.as_bytes())
                .iter()
                .map(|(hit, _)| scanner.rules()[hit.rule].id.clone())
                .collect()
        };
        let github = format!("ghp_{}", keyforge_types::random_base62(36));
        for (key, rule) in [
            (openai_key(), "openai-project-key"),
            (github, "github-token"),
        ] {
            // `?` and `~` make the URL-safe encoding hold `_` and `-`.
            for text in [key.clone(), format!("GET /v1?~={key}")] {
                for encoded in [
                    STANDARD.encode(text.as_bytes()),
                    URL_SAFE_NO_PAD.encode(text.as_bytes()),
                ] {
                    for lead in ["", "a", "ab", "abc", "-", "_", "x_", "--"] {
                        let data = format!("value: {lead}{encoded}\n");
                        assert_eq!(rule_of(&data), [rule], "{data}");
                        let hits = scanner.scan_deep(data.as_bytes());
                        let span = &data[hits[0].0.start..hits[0].0.end];
                        assert!(span.ends_with(encoded.as_str()), "{span}");
                        let redacted = crate::redact::redact_bytes(&scanner, data.as_bytes());
                        assert!(
                            memchr::memmem::find(&redacted, encoded.as_bytes()).is_none(),
                            "{data}"
                        );
                    }
                }
            }
        }
        // JSON escapes: `-` as `\u002d`, every character escaped, `_` as
        // `\u005F`.
        let anthropic = format!(
            "{}{}AA",
            ["sk", "ant", "api03-"].join("-"),
            keyforge_types::random_base62(93)
        );
        let escaped_dashes = anthropic.replace('-', "\\u002d");
        let escaped_all: String = anthropic
            .chars()
            .map(|c| format!("\\u{:04x}", u32::from(c)))
            .collect();
        let kf = planted_kf();
        let escaped_kf = kf.replace('_', "\\u005F");
        for (json, rule) in [
            (
                format!("{{\"k\": \"{escaped_dashes}\"}}\n"),
                "anthropic-api-key",
            ),
            (
                format!("{{\"k\": \"{escaped_all}\"}}\n"),
                "anthropic-api-key",
            ),
            (
                format!("log: {{\"k\": \"{escaped_kf}\"}}\n"),
                "kf-virtual-key",
            ),
        ] {
            assert_eq!(rule_of(&json), [rule], "{json}");
            let redacted = crate::redact::redact_bytes(&scanner, json.as_bytes());
            assert!(
                !String::from_utf8_lossy(&redacted).contains(&json[8..40]),
                "{json}"
            );
        }
        // Percent-encoded separators.
        let aws = format!(
            "AKIA{}",
            keyforge_types::random_base62(64)
                .to_ascii_uppercase()
                .chars()
                .filter(|c| matches!(c, 'A'..='Z' | '2'..='7'))
                .take(16)
                .collect::<String>()
        );
        let bearer = keyforge_types::random_base62(32);
        for (text, rule, secret) in [
            (
                format!("GET /log?line=key%3A%20{aws} 200\n"),
                "aws-access-key-id",
                &aws,
            ),
            (
                format!("GET /cb?h=Authorization%3A%20Bearer%20{bearer}&x=1 200\n"),
                "http-authorization-header",
                &bearer,
            ),
        ] {
            assert_eq!(rule_of(&text), [rule], "{text}");
            let redacted = crate::redact::redact_bytes(&scanner, text.as_bytes());
            assert!(
                !String::from_utf8_lossy(&redacted).contains(secret.as_str()),
                "{text}"
            );
        }
    }

    #[test]
    fn base64_keys_at_every_offset_and_base64_of_base64_are_found() {
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let scanner = scanner();
        let aws = format!(
            "AKIA{}",
            keyforge_types::random_base62(64)
                .to_ascii_uppercase()
                .chars()
                .filter(|c| matches!(c, 'A'..='Z' | '2'..='7'))
                .take(16)
                .collect::<String>()
        );
        let keys = [
            (
                format!("ghp_{}", keyforge_types::random_base62(36)),
                "github-token",
            ),
            (openai_key(), "openai-project-key"),
            (aws, "aws-access-key-id"),
            (planted_kf(), "kf-virtual-key"),
        ];
        for (key, rule) in &keys {
            for prefix in ["", "=", "a=", "token: ", "tok: ", "the key is "] {
                let text = format!("{prefix}{key}\n");
                // base64 of base64 is searched for where the key opens the
                // inner text (an encoded value encoded again).
                let twice = prefix
                    .is_empty()
                    .then(|| STANDARD.encode(STANDARD.encode(text.as_bytes())));
                for encoded in [
                    STANDARD.encode(text.as_bytes()),
                    URL_SAFE_NO_PAD.encode(text.as_bytes()),
                ]
                .into_iter()
                .chain(twice)
                {
                    let data = format!("blob {encoded} end\n");
                    let hits = scanner.scan_deep(data.as_bytes());
                    let ids: Vec<&str> = hits
                        .iter()
                        .map(|(hit, _)| scanner.rules()[hit.rule].id.as_str())
                        .collect();
                    assert_eq!(ids, [*rule], "{prefix:?} {data}");
                    let (hit, _) = &hits[0];
                    assert_eq!(&data[hit.start..hit.end], encoded.as_str());
                }
            }
        }
    }

    #[test]
    fn every_base64_shape_is_decoded_and_reported_at_its_span() {
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let scanner = scanner();
        // Ends in bytes whose encodings differ between the alphabets.
        let key = format!("{}?>~", openai_key());
        let url_safe = URL_SAFE_NO_PAD.encode(key.as_bytes());
        assert!(url_safe.contains(['-', '_']) || !url_safe.ends_with('='));
        let twice = STANDARD.encode(STANDARD.encode(key.as_bytes()));
        let twice_url = URL_SAFE_NO_PAD.encode(URL_SAFE_NO_PAD.encode(key.as_bytes()));
        for (data, span) in [
            (
                format!("kind: Secret\ndata:\n  OPENAI: {url_safe}\n"),
                &url_safe,
            ),
            (format!("kind: Secret\ndata:\n  OPENAI: {twice}\n"), &twice),
            (
                format!("kind: Secret\ndata:\n  OPENAI: {twice_url}\n"),
                &twice_url,
            ),
            (
                format!("{{\"kind\": \"Secret\", \"data\": {{\"OPENAI\": \"{twice}\"}}}}"),
                &twice,
            ),
            (format!("OPENAI_API_KEY: {url_safe}\n"), &url_safe),
            (format!("OPENAI_API_KEY: {twice}\n"), &twice),
        ] {
            let hits = scanner.scan_deep(data.as_bytes());
            let found: Vec<&str> = hits
                .iter()
                .map(|(hit, _)| scanner.rules()[hit.rule].id.as_str())
                .collect();
            assert_eq!(found, ["openai-project-key"], "{data}");
            let (hit, _) = &hits[0];
            assert_eq!(&data[hit.start..hit.end], span.as_str(), "{data}");
        }
        // Three levels deep is past the bound.
        let thrice = STANDARD.encode(&twice);
        let data = format!("kind: Secret\ndata:\n  OPENAI: {thrice}\n");
        assert!(scanner.scan_deep(data.as_bytes()).is_empty());
    }

    /// Nested decoding costs no more than a bounded share of the input:
    /// a Secret full of base64 of base64 scans in well under a second.
    #[test]
    fn nested_base64_has_a_bounded_cost() {
        use base64::Engine;
        use base64::engine::general_purpose::STANDARD;
        let scanner = scanner();
        let inner = STANDARD.encode(keyforge_types::random_base62(3000));
        let run = STANDARD.encode(inner.repeat(4));
        let data = format!(
            "kind: Secret\ndata:\n{}",
            format!("  v: {run}\n").repeat(200)
        );
        let started = std::time::Instant::now();
        assert!(scanner.scan_deep(data.as_bytes()).is_empty());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?} for {} bytes",
            started.elapsed(),
            data.len()
        );
    }
}
