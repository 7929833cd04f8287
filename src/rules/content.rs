//! What the rules ask of a notice's words, as tests over text: the headings a jurisdiction requires
//! in order (California's title and five headings), and what it forbids (Massachusetts: the nature of
//! the breach and the number of residents affected), each detected by the entry's
//! `[[jurisdiction.content.forbidden_check]]`. Pure functions over strings: the command line renders
//! the notices and names the templates (`cli::content`); here is only what a text fails and why.
//!
//! The tests are conservative: they refuse what *could* say the forbidden thing, and a notice that
//! passes them still needs counsel's reading (docs/content-checks.md says what is and is not checked).
//! Matching ignores case, accents are kept, and every run of characters other than letters and
//! digits counts as one space, so `Cyber-attack`, `cyber attack` and a phrase broken across lines
//! all match `cyber attack`; phrases match whole words only (`hacked` does not match `whacked`).

use super::ForbiddenCheck;

/// How many words may stand between a number and a counted noun (`1,204 Massachusetts residents`:
/// the `204` and `massachusetts` between `1` and `residents`).
const NUMBER_WINDOW: usize = 3;

/// Words that stand for a number as digits do (`thousands of customers`). Small number words
/// (`three`) are not among them: "the three credit bureaus" is in every notice.
const SCALE_WORDS: &[&str] = &[
    "dozens",
    "hundred",
    "hundreds",
    "thousand",
    "thousands",
    "million",
    "millions",
    "billion",
    "cientos",
    "miles",
    "millón",
    "millones",
];

/// A text reduced to lower-case words separated by one space, with a space at each end, so that a
/// whole-word phrase is a plain substring (` cyber attack `).
fn words(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push(' ');
    let mut space = true;
    for c in text.chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
            space = false;
        } else if !space {
            out.push(' ');
            space = true;
        }
    }
    if !space {
        out.push(' ');
    }
    out
}

/// The text a reader sees in an HTML notice, one block per line: every tag ends a line, `<style>`
/// and `<script>` bodies and comments are dropped, and the common entities are decoded. Enough for
/// headings and phrases; not a renderer.
pub(crate) fn html_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let tag = &rest[open..];
        let lower = tag.get(..8).unwrap_or(tag).to_ascii_lowercase();
        let skip_to = if lower.starts_with("<!--") {
            tag.find("-->").map(|e| e + 3)
        } else if lower.starts_with("<style") || lower.starts_with("<script") {
            let close = if lower.starts_with("<style") {
                "</style"
            } else {
                "</script"
            };
            tag.to_ascii_lowercase()
                .find(close)
                .and_then(|c| tag[c..].find('>').map(|e| c + e + 1))
        } else {
            tag.find('>').map(|e| e + 1)
        };
        out.push('\n');
        match skip_to {
            Some(n) => rest = &tag[n..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    decode_entities(&out)
}

fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = text
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&#x2F;", "/");
    // Last, so that `&amp;lt;` stays `&lt;`.
    out = out.replace("&amp;", "&");
    out
}

/// Whether `line` is `heading`: the whole line, or one of its parts around `/`, `(`, `)`, `|` or `:`,
/// so that a translated notice may carry the required heading beside its own (`Qué sucedió / What
/// Happened`) and a heading may end with a colon.
fn is_heading(line: &str, heading: &str) -> bool {
    let want = words(heading);
    words(line) == want
        || line
            .split(['/', '(', ')', '|', ':'])
            .any(|part| words(part) == want)
}

/// The first problem with the required headings of `text` (one heading per line, in order), or
/// `None`. Lines are searched from the top: each heading must come on a line after the previous one.
pub(crate) fn check_headings(headings: &[String], text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut next = 0;
    let mut previous: Option<&str> = None;
    for heading in headings {
        match lines[next..].iter().position(|l| is_heading(l, heading)) {
            Some(i) => next += i + 1,
            None => {
                let earlier = lines[..next].iter().any(|l| is_heading(l, heading));
                return Some(match (earlier, previous) {
                    (true, Some(p)) => format!(
                        "the heading {heading:?} comes before {p:?}; the required order is {}",
                        quoted(headings)
                    ),
                    _ => format!(
                        "the heading {heading:?} is missing (a line of its own); required, in order: {}",
                        quoted(headings)
                    ),
                });
            }
        }
        previous = Some(heading);
    }
    None
}

fn quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|h| format!("{h:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What in the rendered `text` fails `check`: a listed phrase, or a number before a counted noun.
pub(crate) fn check_forbidden_text(check: &ForbiddenCheck, text: &str) -> Option<String> {
    let text = words(text);
    if let Some(p) = check
        .phrases
        .iter()
        .find(|p| words(p).trim() != "" && text.contains(&words(p)))
    {
        return Some(format!("it says {:?}", p.trim()));
    }
    if check.counted_nouns.is_empty() {
        return None;
    }
    let nouns: Vec<String> = check
        .counted_nouns
        .iter()
        .map(|n| words(n).trim().to_string())
        .collect();
    let tokens: Vec<&str> = text.split_whitespace().collect();
    for (i, token) in tokens.iter().enumerate() {
        let number = token.chars().all(|c| c.is_ascii_digit()) || SCALE_WORDS.contains(token);
        if !number {
            continue;
        }
        let window = &tokens[i + 1..tokens.len().min(i + 1 + NUMBER_WINDOW)];
        // Only the rule's own words are quoted: the number, or a word between, may be a
        // recipient's data.
        if let Some(noun) = window.iter().find(|w| nouns.iter().any(|n| n == *w)) {
            return Some(format!(
                "it puts a number before {noun:?} (at most {NUMBER_WINDOW} words apart)"
            ));
        }
    }
    None
}

/// The first of `check.variables` that a template's source uses inside `{{ }}` or `{% %}`, with its
/// line: `(variable, line)`. Case is ignored; any part of a dotted path counts
/// (`recipient.attributes.affected_count` uses `affected_count`).
pub(crate) fn forbidden_variable(check: &ForbiddenCheck, source: &str) -> Option<(String, usize)> {
    if check.variables.is_empty() {
        return None;
    }
    let mut at = 0;
    while let Some(open) = source[at..].find(['{']).map(|o| at + o) {
        let close = match source[open..].get(..2) {
            Some("{{") => "}}",
            Some("{%") => "%}",
            _ => {
                at = open + 1;
                continue;
            }
        };
        let body_start = open + 2;
        let end = source[body_start..]
            .find(close)
            .map_or(source.len(), |e| body_start + e);
        let body = &source[body_start..end];
        for ident in body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if let Some(v) = check
                .variables
                .iter()
                .find(|v| !ident.is_empty() && v.eq_ignore_ascii_case(ident))
            {
                let line = source[..body_start].matches('\n').count() + 1;
                return Some((v.clone(), line));
            }
        }
        at = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headings() -> Vec<String> {
        [
            "Notice of Data Breach",
            "What Happened",
            "What We Are Doing",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn headings_in_order_pass_whatever_their_case_colon_or_translation() {
        let text = "Dear Ada,\nNOTICE OF DATA BREACH\n\nWhat happened:\nwords\nQué estamos haciendo / What We Are Doing\n";
        assert_eq!(check_headings(&headings(), text), None);
    }

    #[test]
    fn a_missing_heading_is_named() {
        let text = "Notice of Data Breach\nWhat We Are Doing\n";
        let problem = check_headings(&headings(), text).unwrap();
        assert!(
            problem.contains("\"What Happened\" is missing"),
            "{problem}"
        );
    }

    #[test]
    fn a_heading_out_of_order_is_named() {
        let text = "Notice of Data Breach\nWhat We Are Doing\nWhat Happened\n";
        let problem = check_headings(&headings(), text).unwrap();
        assert!(
            problem.contains("\"What We Are Doing\" is missing")
                || problem.contains("comes before"),
            "{problem}"
        );
        let text = "What Happened\nNotice of Data Breach\nWhat We Are Doing\n";
        let problem = check_headings(&headings(), text).unwrap();
        assert!(
            problem.contains("\"What Happened\" comes before \"Notice of Data Breach\""),
            "{problem}"
        );
    }

    #[test]
    fn a_heading_inside_a_sentence_is_not_a_heading() {
        let text = "Notice of Data Breach\nWe explain what happened below.\nWhat We Are Doing\n";
        assert!(check_headings(&headings(), text).is_some());
    }

    #[test]
    fn html_headings_are_read_from_the_blocks() {
        let html = "<html><head><style>h1 { color: red }</style></head><body>\
                    <h1>Notice of Data&nbsp;Breach</h1><!-- What We Are Doing -->\
                    <h2>What Happened</h2><p>x</p><h2>What We Are Doing</h2></body></html>";
        assert_eq!(check_headings(&headings(), &html_text(html)), None);
        let html = "<h1>Notice of Data Breach</h1><!-- <h2>What Happened</h2> --><h2>What We Are Doing</h2>";
        assert!(check_headings(&headings(), &html_text(html)).is_some());
    }

    fn number_check() -> ForbiddenCheck {
        ForbiddenCheck {
            rule: "number of Massachusetts residents affected".into(),
            variables: vec!["affected_count".into()],
            phrases: vec!["residents affected".into()],
            counted_nouns: vec!["residents".into(), "customers".into()],
        }
    }

    #[test]
    fn a_number_before_a_counted_noun_is_refused() {
        let c = number_check();
        for text in [
            "The incident involved 1,204 Massachusetts residents.",
            "It affected thousands of customers.",
            "about 12\nresidents",
        ] {
            assert!(check_forbidden_text(&c, text).is_some(), "{text}");
        }
        let found = check_forbidden_text(&c, "involved 1,204 Massachusetts residents").unwrap();
        assert!(found.contains("a number before \"residents\""), "{found}");
        assert!(!found.contains("204"), "no figure quoted: {found}");
    }

    #[test]
    fn numbers_elsewhere_and_phrases_inside_words_pass() {
        let c = number_check();
        let text = "Call 1-800-555-0100 (8 a.m. to 8 p.m.). We offer 24 months of credit monitoring \
                    to our customers. On October 31, 2023, we acted.";
        assert_eq!(check_forbidden_text(&c, text), None);
        let phrases = ForbiddenCheck {
            phrases: vec!["hacked".into(), "cyber attack".into()],
            ..ForbiddenCheck::default()
        };
        assert_eq!(check_forbidden_text(&phrases, "he whacked it"), None);
        assert!(check_forbidden_text(&phrases, "a Cyber-Attack on").is_some());
        assert!(check_forbidden_text(&phrases, "our systems were HACKED.").is_some());
    }

    #[test]
    fn listed_variables_are_found_in_expressions_and_tags_only() {
        let c = number_check();
        let source = "affected_count in prose is text\n{{ recipient.first_name }}\n\
                      {% if recipient.attributes.Affected_Count %}x{% endif %}";
        assert_eq!(
            forbidden_variable(&c, source),
            Some(("affected_count".into(), 3))
        );
        assert_eq!(forbidden_variable(&c, "affected_count {{ x }}"), None);
    }
}
