//! The P&L line a pilot must move: the line item, its unit, a baseline and a target.
//!
//! Accepted answers look like `Claims handling cost: £4.2m -> £3.6m`, `Churn rate from 12% to 9%`,
//! `Average handling time: 3 days -> 1 day` or `Claims cost, baseline GBP 4,200,000, target GBP 3,600,000`.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// A number with its unit, as read from an answer. `unit` is an ISO currency code (`GBP`), `%`, or
/// a lower-case metric (`days`).
#[derive(Debug, Clone, PartialEq)]
pub struct Quantity {
    pub value: f64,
    pub unit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PnlTarget {
    pub line: String,
    pub unit: String,
    pub baseline: f64,
    pub target: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PnlError {
    #[error("no baseline and target found")]
    Format,
    #[error("no line item named")]
    NoLine,
    #[error("no unit given")]
    NoUnit,
    #[error("baseline in {baseline} but target in {target}")]
    UnitMismatch { baseline: String, target: String },
    #[error("target equals baseline ({value})")]
    SameTarget { value: String },
}

const NUMBER: &str = r"(?P<sign>[-+−])?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)";
const MULT: &str = r"(?:\s*(?P<mult>k|m|mn|bn|thousand|million|billion)\b)?";

static QUANTITY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(r"(?i)^(?P<pre>[£$€¥]|[a-z]{{3}}\s+)?\s*{NUMBER}{MULT}\s*(?P<post>%|[a-z][a-z/ .-]*)?$"))
        .unwrap()
});

/// `baseline X target Y`, in either order of words.
static BASELINE_TARGET: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?P<line>.*?)[\s:,;(-]*\bbaseline\b\s*(?:is|of|:|=)?\s*(?P<base>.+?)[\s,;]*\btarget\b\s*(?:is|of|:|=)?\s*(?P<target>.+?)\)?\.?$").unwrap()
});

/// `... X -> Y` / `... X to Y` / `... X → Y`: the last separator splits baseline from target.
static ARROW: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\s*(?:->|→|=>|\bto\b|\bdown to\b|\bup to\b)\s*").unwrap());

/// The baseline at the end of the left-hand side, with an optional `from`.
static TRAILING_QUANTITY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i)^(?P<line>.*?)[\s:,;=(-]*(?:\bfrom\b\s*)?(?P<q>(?:[£$€¥]|\b[a-z]{{3}}\s+)?\s*{NUMBER}{MULT}\s*(?:%|[a-z][a-z/ .-]*)?)$"
    ))
    .unwrap()
});

fn currency_symbol(code: &str) -> Option<&'static str> {
    match code {
        "GBP" => Some("£"),
        "USD" => Some("$"),
        "EUR" => Some("€"),
        "JPY" => Some("¥"),
        _ => None,
    }
}

/// Three-letter words that are units rather than currencies when written after a number.
fn is_currency_code(word: &str) -> bool {
    const CODES: &[&str] = &[
        "GBP", "USD", "EUR", "JPY", "CHF", "CAD", "AUD", "NZD", "SEK", "NOK", "DKK", "PLN", "CZK", "INR", "CNY", "SGD",
        "HKD", "ZAR", "BRL", "MXN",
    ];
    CODES.contains(&word.to_ascii_uppercase().as_str())
}

impl Quantity {
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().trim_end_matches(['.', ')']).trim();
        let caps = QUANTITY.captures(text)?;
        let digits = caps["num"].replace(',', "");
        let mut value: f64 = digits.parse().ok()?;
        if caps.name("sign").is_some_and(|s| s.as_str() != "+") {
            value = -value;
        }
        if let Some(mult) = caps.name("mult") {
            value *= match mult.as_str().to_ascii_lowercase().as_str() {
                "k" | "thousand" => 1e3,
                "m" | "mn" | "million" => 1e6,
                _ => 1e9,
            };
        }
        let pre = caps.name("pre").map(|m| m.as_str().trim());
        let post = caps.name("post").map(|m| m.as_str().trim().trim_end_matches('.').trim());
        let unit = match (pre, post) {
            (Some(sym), _) if sym.chars().count() == 1 => Some(
                match sym {
                    "£" => "GBP",
                    "$" => "USD",
                    "€" => "EUR",
                    _ => "JPY",
                }
                .to_owned(),
            ),
            (Some(code), _) if is_currency_code(code) => Some(code.to_ascii_uppercase()),
            (Some(_), _) => return None,
            (None, Some("%")) => Some("%".to_owned()),
            (None, Some(word)) if is_currency_code(word) => Some(word.to_ascii_uppercase()),
            (None, Some(words)) if !words.is_empty() => Some(words.to_lowercase()),
            _ => None,
        };
        value.is_finite().then_some(Self { value, unit })
    }
}

/// Units compare equal when they differ only by a plural `s` (`day` and `days`).
fn same_unit(a: &str, b: &str) -> bool {
    a.trim_end_matches('s') == b.trim_end_matches('s')
}

impl PnlTarget {
    /// A whole answer: everything must be in it (the dialogue combines partial answers with [`PnlDraft`]).
    pub fn parse(text: &str) -> Result<Self, PnlError> {
        match PnlDraft::read(text, &[])?.complete() {
            Ok(target) => Ok(target),
            Err(Incomplete::Refused(e)) => Err(e),
            Err(Incomplete::Needs(needs))
                if needs.contains(&PnlField::Baseline) || needs.contains(&PnlField::Target) =>
            {
                Err(PnlError::Format)
            }
            Err(Incomplete::Needs(needs)) if needs.contains(&PnlField::Line) => Err(PnlError::NoLine),
            Err(Incomplete::Needs(_)) => Err(PnlError::NoUnit),
        }
    }

    pub fn format_value(&self, value: f64) -> String {
        format_quantity(value, &self.unit)
    }
}

/// One piece of a P&L answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PnlField {
    Line,
    Baseline,
    Target,
    Unit,
}

/// Why a P&L answer cannot be recorded yet: what it lacks, or what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub enum Incomplete {
    Needs(Vec<PnlField>),
    Refused(PnlError),
}

/// A change relative to the baseline (`cut … by 15%`, `by £500k`), signed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Relative {
    pub amount: f64,
    pub percent: bool,
}

/// What is understood of a P&L answer so far. Answers are read into drafts and combined (the newest answer wins
/// where both say something) until the line, its unit, a baseline and a target are all known.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PnlDraft {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Relative>,
}

// The numbers in a draft are finite (read from digits), so equality is total.
impl Eq for PnlDraft {}

const CURRENCY_NAMES: &[(&str, &str)] = &[
    ("pounds sterling", "GBP"),
    ("pound sterling", "GBP"),
    ("sterling", "GBP"),
    ("pounds", "GBP"),
    ("pound", "GBP"),
    ("quid", "GBP"),
    ("dollars", "USD"),
    ("dollar", "USD"),
    ("euros", "EUR"),
    ("euro", "EUR"),
    ("yen", "JPY"),
];

/// A currency (code or name) as a word of its own, or a unit in brackets after the line: `GBP`, `in euros`,
/// `(GBP)`, `(%)`, `(days)`.
static UNIT_WORD: LazyLock<Regex> = LazyLock::new(|| {
    let codes = "gbp|usd|eur|jpy|chf|cad|aud|nzd|sek|nok|dkk|pln|czk|inr|cny|sgd|hkd|zar|brl|mxn";
    let names = CURRENCY_NAMES.iter().map(|(n, _)| n.replace(' ', r"\s+")).collect::<Vec<_>>().join("|")
        + "|percent|per\\s+cent";
    let bracketed = r"%|[£$€¥]|seconds?|minutes?|hours?|days?|weeks?|months?|years?|points?|percent";
    Regex::new(&format!(
        r"(?i)\(\s*(?P<b>{codes}|{names}|{bracketed})\s*\)|\bin\s+(?P<m>seconds?|minutes?|hours?|days?|weeks?|months?|years?|points?)\b|(?:\bin\s+)?(?P<w>\b(?:{codes}|{names})\b)(?P<next>\s*[\d.])?"
    ))
    .unwrap()
});

/// What is said about a line rather than its name: `… will go down a lot`.
static PROSE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\s+(?:will|should|must|would|is\s+going\s+to|needs?\s+to|has\s+to|to)\s+(?:go|come|fall|drop|rise|grow|be|get|decrease|increase|improve|shrink)\b.*$").unwrap()
});

/// A deadline: `by 2027`, `in 2028`.
static YEAR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:by|in|until|before|within)\s+(?:the\s+end\s+of\s+)?(?:19|20)\d\d\b").unwrap()
});

/// A measure on its own: `days`, `hours`, `points`.
static MEASURE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^(?:seconds?|minutes?|hours?|days?|weeks?|months?|years?|points?)$").unwrap());

/// A verb that says which way the line moves: `reduce claims handling cost from …`.
static VERB: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^\s*(?:(?P<down>reduce|cut|lower|decrease|shrink|bring\s+down|drive\s+down)|(?P<up>increase|grow|raise|boost|lift|improve))\s+(?:the\s+|our\s+)?(?P<rest>.+)$",
    )
    .unwrap()
});

/// `by 15%`, `by £500k`: a change relative to the baseline.
static RELATIVE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i)\s*\bby\s+(?P<q>(?:[£$€¥]|\b[a-z]{{3}}\s+)?\s*{NUMBER}{MULT}\s*(?:%|percent\b|[a-z]{{3}}\b)?)"
    ))
    .unwrap()
});

/// `baseline X`, or `target Y`, alone.
static ONE_LABEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?P<line>.*?)[\s:,;(-]*\b(?P<kind>baseline|target)\b\s*(?:is|of|:|=)?\s*(?P<q>.+?)\)?\.?$")
        .unwrap()
});

/// The unit a bracket or word names: a currency code, `%`, or a lower-case measure.
fn unit_of_word(word: &str) -> String {
    let w = word.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    if let Some((_, code)) = CURRENCY_NAMES.iter().find(|(n, _)| *n == w) {
        return (*code).to_owned();
    }
    match w.as_str() {
        "%" | "percent" | "per cent" => "%".to_owned(),
        "£" => "GBP".to_owned(),
        "$" => "USD".to_owned(),
        "€" => "EUR".to_owned(),
        "¥" => "JPY".to_owned(),
        _ if is_currency_code(&w) => w.to_ascii_uppercase(),
        _ => w,
    }
}

/// Trims what joins a line to its figures (`:`, `,`, `from`, …).
fn clean_line(line: &str) -> Option<String> {
    let mut line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    loop {
        let trimmed = line
            .trim_matches(|c: char| c.is_whitespace() || ":,;-=(".contains(c))
            .trim_end_matches(" from")
            .trim_end_matches(" is")
            .to_owned();
        if trimmed == line {
            break;
        }
        line = trimmed;
    }
    line.chars().any(char::is_alphabetic).then_some(line)
}

impl PnlDraft {
    /// Reads one answer into what it says of the line. `awaiting` is what the question asked for (empty: the
    /// whole answer): a lone figure answers the first figure awaited, a lone phrase the line.
    pub fn read(text: &str, awaiting: &[PnlField]) -> Result<PnlDraft, PnlError> {
        let mut draft = PnlDraft::default();
        let mut units: Vec<String> = Vec::new();
        let mut text = bare_percent(&text.trim().replace(['–', '—'], " -> "));
        // A measure named between commas (`Handling time, days, baseline 3, target 1`) is the unit.
        let segments: Vec<&str> = text.split([',', ';']).collect();
        if segments.len() > 1 {
            let (units_said, rest): (Vec<&str>, Vec<&str>) =
                segments.into_iter().partition(|seg| MEASURE.is_match(seg.trim()));
            units.extend(units_said.iter().map(|u| unit_of_word(u.trim())));
            text = rest.join(",");
        }
        // A currency or unit named on its own is the line's unit; a code written before a number stays with it.
        let mut kept = String::new();
        let mut last = 0;
        for c in UNIT_WORD.captures_iter(&text.clone()) {
            let whole = c.get(0).expect("a match");
            if c.name("next").is_some() {
                continue;
            }
            let word = c.name("b").or(c.name("m")).or(c.name("w")).map(|m| m.as_str()).unwrap_or_default();
            units.push(unit_of_word(word));
            kept.push_str(&text[last..whole.start()]);
            kept.push(' ');
            last = whole.end();
        }
        kept.push_str(&text[last..]);
        text = kept;
        // A verb says which way the line moves, and leaves the line itself.
        let mut direction = 0.0;
        let mut verb = false;
        if let Some(c) = VERB.captures(&text) {
            direction = if c.name("down").is_some() { -1.0 } else { 1.0 };
            verb = true;
            text = c["rest"].to_owned();
        }
        if let Some(c) = RELATIVE.captures(&text)
            && direction != 0.0
            && let Some(q) = Quantity::parse(&c["q"].replace("percent", "%"))
        {
            let percent = q.unit.as_deref() == Some("%");
            if !percent && let Some(u) = q.unit.clone() {
                units.push(u);
            }
            draft.change = Some(Relative { amount: direction * q.value, percent });
            let whole = c.get(0).expect("a match");
            text = format!("{} {}", &text[..whole.start()], &text[whole.end()..]);
        }
        // A year is a deadline, not a figure: `by 2027`.
        let text = YEAR.replace_all(&text, " ").into_owned();
        let (line, baseline, target) = figures(&text, awaiting);
        for q in [&baseline, &target].into_iter().flatten() {
            if let Some(u) = &q.unit {
                units.push(u.clone());
            }
        }
        draft.line = line.map(|l| if verb { capitalise(&l) } else { l });
        draft.baseline = baseline.map(|q| q.value);
        draft.target = target.map(|q| q.value);
        for u in units {
            match &draft.unit {
                None => draft.unit = Some(u),
                Some(known) if same_unit(known, &u) => {
                    if u.len() > known.len() {
                        draft.unit = Some(u);
                    }
                }
                Some(known) => return Err(PnlError::UnitMismatch { baseline: known.clone(), target: u }),
            }
        }
        Ok(draft)
    }

    /// The answer to a follow-up that asked for `awaiting`, on top of this draft: taken whole when it says
    /// everything itself; else what it says wins, but a phrase without figures is taken as the line only when the
    /// line was asked for.
    pub fn fill(self, newer: PnlDraft, awaiting: &[PnlField]) -> PnlDraft {
        if newer.complete().is_ok() {
            return newer;
        }
        // Figures and units are news wherever they come; a phrase is the line only when the line was asked for,
        // or when it comes with figures (the line said again).
        let restated = newer.baseline.is_some() || newer.target.is_some();
        let line_asked = awaiting.is_empty() || awaiting.contains(&PnlField::Line);
        let line = if line_asked || restated { newer.line.or(self.line) } else { self.line };
        PnlDraft {
            line,
            unit: newer.unit.or(self.unit),
            baseline: newer.baseline.or(self.baseline),
            target: newer.target.or(self.target),
            change: newer.change.or(self.change),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == PnlDraft::default()
    }

    fn target_value(&self) -> Option<f64> {
        self.target.or_else(|| {
            let (b, r) = (self.baseline?, self.change?);
            let t = if r.percent { b * (1.0 + r.amount / 100.0) } else { b + r.amount };
            Some((t * 1e6).round() / 1e6)
        })
    }

    /// What is still missing, in the order it is asked for.
    pub fn needs(&self) -> Vec<PnlField> {
        let mut needs = Vec::new();
        if self.line.is_none() {
            needs.push(PnlField::Line);
        }
        if self.baseline.is_none() {
            needs.push(PnlField::Baseline);
        }
        if self.target_value().is_none() {
            needs.push(PnlField::Target);
        }
        if self.unit.is_none() {
            needs.push(PnlField::Unit);
        }
        needs
    }

    /// The line to record, once everything is known.
    pub fn complete(&self) -> Result<PnlTarget, Incomplete> {
        let needs = self.needs();
        let (Some(line), Some(unit), Some(baseline), Some(target)) =
            (self.line.clone(), self.unit.clone(), self.baseline, self.target_value())
        else {
            return Err(Incomplete::Needs(needs));
        };
        if baseline == target {
            return Err(Incomplete::Refused(PnlError::SameTarget { value: format_quantity(baseline, &unit) }));
        }
        Ok(PnlTarget { line, unit, baseline, target })
    }

    /// What is understood so far, as the bot shows it back: `Claims handling cost: 4,200,000 -> ?`.
    pub fn describe(&self) -> String {
        let figure = |v: Option<f64>| match (v, &self.unit) {
            (Some(v), Some(u)) => format_quantity(v, u),
            (Some(v), None) => format_number(v),
            (None, _) => "?".to_owned(),
        };
        let mut target = figure(self.target_value());
        if self.target.is_none()
            && self.baseline.is_none()
            && let Some(r) = self.change
        {
            let sign = if r.amount < 0.0 { "-" } else { "+" };
            target = match &self.unit {
                _ if r.percent => format!("{sign}{}%", format_number(r.amount.abs())),
                Some(u) => format!("{sign}{}", format_quantity(r.amount.abs(), u)),
                None => format!("{sign}{}", format_number(r.amount.abs())),
            };
        }
        let unit = match (&self.unit, self.baseline.or(self.target)) {
            (Some(u), None) => format!(" ({u})"),
            _ => String::new(),
        };
        format!("{}{unit}: {} -> {target}", self.line.as_deref().unwrap_or("?"), figure(self.baseline))
    }
}

/// A `%` that follows no figure (`Churn rate, %, baseline 12`) names the unit: written as a word, so that it is
/// read as one.
fn bare_percent(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '%' && !out.trim_end().ends_with(|p: char| p.is_ascii_digit() || p == '(') {
            out.push_str(" percent ");
        } else {
            out.push(c);
        }
    }
    out
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The line and the figures of one answer (units still attached to the figures).
fn figures(text: &str, awaiting: &[PnlField]) -> (Option<String>, Option<Quantity>, Option<Quantity>) {
    let text = text.trim();
    // A lone figure answers what was asked: the target when only it is missing, else the baseline.
    let lone = |q: Quantity, from: bool| -> (Option<Quantity>, Option<Quantity>) {
        let wants_target = !from && awaiting.contains(&PnlField::Target) && !awaiting.contains(&PnlField::Baseline);
        if wants_target { (None, Some(q)) } else { (Some(q), None) }
    };
    if let Some(c) = BASELINE_TARGET.captures(text)
        && let (Some(b), Some(t)) = (Quantity::parse(&c["base"]), Quantity::parse(&c["target"]))
    {
        return (clean_line(&c["line"]), Some(b), Some(t));
    }
    if let Some(c) = ONE_LABEL.captures(text)
        && let Some(q) = Quantity::parse(&c["q"])
    {
        let line = clean_line(&c["line"]);
        return if c["kind"].eq_ignore_ascii_case("target") { (line, None, Some(q)) } else { (line, Some(q), None) };
    }
    if let Some(sep) = ARROW.find_iter(text).last()
        && let Some(target) = Quantity::parse(&text[sep.end()..])
    {
        let left = &text[..sep.start()];
        if let Some(c) = TRAILING_QUANTITY.captures(left)
            && let Some(base) = Quantity::parse(&c["q"])
        {
            return (clean_line(&c["line"]), Some(base), Some(target));
        }
        if let Some(base) = Quantity::parse(left) {
            return (None, Some(base), Some(target));
        }
        return (clean_line(left), None, Some(target));
    }
    if let Some(q) = Quantity::parse(text) {
        let (b, t) = lone(q, false);
        return (None, b, t);
    }
    if let Some(c) = TRAILING_QUANTITY.captures(text)
        && let Some(q) = Quantity::parse(&c["q"])
    {
        let from = text.to_lowercase().contains("from");
        let (b, t) = lone(q, from);
        return (clean_line(&c["line"]), b, t);
    }
    // Prose about the line is not its name: `Claims cost will go down a lot` names `Claims cost`.
    let named = PROSE.replace(text, "");
    let line = if awaiting.is_empty() || awaiting.contains(&PnlField::Line) { clean_line(&named) } else { None };
    (line, None, None)
}

/// `£4,200,000`, `£4.50`, `12%`, `3 days`, `CHF 1,500`.
pub fn format_quantity(value: f64, unit: &str) -> String {
    let currency = currency_symbol(unit).is_some() || (unit.len() == 3 && unit.chars().all(|c| c.is_ascii_uppercase()));
    let mut number = format_number(value.abs());
    // Money with pence or cents shows both digits: £4.50, not £4.5.
    if currency && number.split_once('.').is_some_and(|(_, f)| f.len() == 1) {
        number.push('0');
    }
    let sign = if value < 0.0 { "-" } else { "" };
    if unit == "%" {
        format!("{sign}{number}%")
    } else if let Some(symbol) = currency_symbol(unit) {
        format!("{sign}{symbol}{number}")
    } else if unit.len() == 3 && unit.chars().all(|c| c.is_ascii_uppercase()) {
        format!("{sign}{unit} {number}")
    } else if value.abs() == 1.0 && unit.len() > 1 && unit.ends_with('s') && !unit.ends_with("ss") {
        // "1 day", not "1 days".
        format!("{sign}{number} {}", &unit[..unit.len() - 1])
    } else {
        format!("{sign}{number} {unit}")
    }
}

/// Thousands separators and at most two decimals, trailing zeros dropped.
fn format_number(value: f64) -> String {
    let rounded = format!("{value:.2}");
    let (int, frac) = rounded.split_once('.').unwrap_or((&rounded, ""));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() { grouped } else { format!("{grouped}.{frac}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).unwrap_or_else(|| panic!("{text} should parse"))
    }

    #[test]
    fn quantities_in_the_forms_people_write() {
        assert_eq!(q("4.2m"), Quantity { value: 4_200_000.0, unit: None });
        assert_eq!(q("£4,200,000"), Quantity { value: 4_200_000.0, unit: Some("GBP".into()) });
        assert_eq!(q("12%"), Quantity { value: 12.0, unit: Some("%".into()) });
        assert_eq!(q("3 days"), Quantity { value: 3.0, unit: Some("days".into()) });
        assert_eq!(q("GBP 3.5 million"), Quantity { value: 3_500_000.0, unit: Some("GBP".into()) });
        assert_eq!(q("$1.5bn"), Quantity { value: 1.5e9, unit: Some("USD".into()) });
        assert_eq!(q("250k eur"), Quantity { value: 250_000.0, unit: Some("EUR".into()) });
        assert_eq!(q("40 minutes"), Quantity { value: 40.0, unit: Some("minutes".into()) });
        assert!(Quantity::parse("lots").is_none());
        assert!(Quantity::parse("1.2.3").is_none());
    }

    #[test]
    fn targets_with_arrows_words_and_labels() {
        let t = PnlTarget::parse("Claims handling cost: £4.2m -> £3.6m").unwrap();
        assert_eq!(
            t,
            PnlTarget { line: "Claims handling cost".into(), unit: "GBP".into(), baseline: 4.2e6, target: 3.6e6 }
        );
        let t = PnlTarget::parse("Churn rate from 12% to 9%").unwrap();
        assert_eq!((t.line.as_str(), t.unit.as_str(), t.baseline, t.target), ("Churn rate", "%", 12.0, 9.0));
        let t = PnlTarget::parse("Average handling time: 3 days -> 1 day").unwrap();
        assert_eq!((t.unit.as_str(), t.baseline, t.target), ("days", 3.0, 1.0));
        let t = PnlTarget::parse("Claims cost, baseline GBP 4,200,000, target GBP 3,600,000").unwrap();
        assert_eq!((t.line.as_str(), t.baseline, t.target), ("Claims cost", 4.2e6, 3.6e6));
        let t = PnlTarget::parse("Upsell revenue: 0 → $250k").unwrap();
        assert_eq!((t.unit.as_str(), t.baseline, t.target), ("USD", 0.0, 250_000.0));
    }

    #[test]
    fn refuses_what_cannot_be_measured() {
        assert_eq!(
            PnlTarget::parse("Claims cost: £4m -> £4,000,000"),
            Err(PnlError::SameTarget { value: "£4,000,000".into() })
        );
        assert_eq!(PnlTarget::parse("£4m -> £3m"), Err(PnlError::NoLine));
        assert_eq!(PnlTarget::parse("Claims cost: 4 -> 3"), Err(PnlError::NoUnit));
        assert!(matches!(PnlTarget::parse("Claims cost: £4m -> 3%"), Err(PnlError::UnitMismatch { .. })));
        assert_eq!(PnlTarget::parse("Claims cost will go down"), Err(PnlError::Format));
    }

    fn line(text: &str) -> (String, String, f64, f64) {
        let t = PnlTarget::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        (t.line, t.unit, t.baseline, t.target)
    }

    #[test]
    fn the_forms_people_type() {
        let claims = ("Claims handling cost".to_owned(), "GBP".to_owned(), 4.2e6, 3.5e6);
        assert_eq!(line("Claims handling cost, GBP, baseline 4.2m, target 3.5m"), claims);
        assert_eq!(line("Claims handling cost (GBP): 4.2m -> 3.5m"), claims);
        assert_eq!(line("reduce claims handling cost from £4.2m to £3.5m"), claims);
        assert_eq!(line("Claims handling cost: 4.2m GBP – 3.5m GBP"), claims);
        assert_eq!(line("Claims handling cost in pounds: 4.2m to 3.5m"), claims);
        assert_eq!(line("Claims handling cost: 4.2m—3.5m pounds sterling"), claims);
        assert_eq!(
            line("increase upsell revenue from $1m to $1.5m"),
            ("Upsell revenue".into(), "USD".into(), 1e6, 1.5e6)
        );
        assert_eq!(
            line("Cost per claim: £42 per claim -> £30 per claim"),
            ("Cost per claim".into(), "GBP".into(), 42.0, 30.0)
        );
        assert_eq!(line("Travel spend, euros: 200k -> 150k"), ("Travel spend".into(), "EUR".into(), 2e5, 1.5e5));
        let (l, u, b, t) = line("cut cost per claim by 15% from $42");
        assert_eq!((l.as_str(), u.as_str(), b), ("Cost per claim", "USD", 42.0));
        assert!((t - 35.7).abs() < 1e-9, "{t}");
        assert_eq!(line("grow upsell revenue by $500k from $1m").3, 1.5e6);
        assert_eq!(line("Handling time (days): 3 -> 1"), ("Handling time".into(), "days".into(), 3.0, 1.0));
    }

    #[test]
    fn partial_answers_combine_into_one_line() {
        // The line and its figures, then the unit on its own.
        let first = PnlDraft::read("Claims handling cost: 4.2m -> 3.5m", &[]).unwrap();
        assert_eq!(first.needs(), [PnlField::Unit]);
        assert_eq!(first.describe(), "Claims handling cost: 4,200,000 -> 3,500,000");
        let both = first.clone().fill(PnlDraft::read("GBP", &first.needs()).unwrap(), &first.needs());
        assert_eq!(both.complete().unwrap(), PnlTarget::parse("Claims handling cost: £4.2m -> £3.5m").unwrap());
        // The figures, then the line.
        let figures = PnlDraft::read("GBP 4.2m -> GBP 3.5m", &[]).unwrap();
        assert_eq!(figures.needs(), [PnlField::Line]);
        let both =
            figures.clone().fill(PnlDraft::read("Claims handling cost", &figures.needs()).unwrap(), &figures.needs());
        assert_eq!(both.complete().unwrap().line, "Claims handling cost");
        // The line and a baseline, then the target alone.
        let some = PnlDraft::read("Cost per claim from $42", &[]).unwrap();
        assert_eq!(some.needs(), [PnlField::Target]);
        assert_eq!(some.describe(), "Cost per claim: $42 -> ?");
        let both = some.clone().fill(PnlDraft::read("$30", &some.needs()).unwrap(), &some.needs());
        assert_eq!(both.complete().unwrap().target, 30.0);
        // Said again in full, the newest answer wins; a stray figure does not replace one understood.
        let again = both.clone().fill(PnlDraft::read("Cost per claim: $42 -> $25", &[]).unwrap(), &[PnlField::Unit]);
        assert_eq!(again.complete().unwrap().target, 25.0);
        let stray = some
            .clone()
            .fill(PnlDraft::read("Cost per claim will go down a lot by 2027", &[]).unwrap(), &[PnlField::Target]);
        assert_eq!(stray, some);
        // A unit that contradicts the figures is refused.
        assert!(matches!(PnlDraft::read("4.2m GBP -> 3%", &[]), Err(PnlError::UnitMismatch { .. })));
    }

    #[test]
    fn formats_values_in_their_unit() {
        assert_eq!(format_quantity(4_200_000.0, "GBP"), "£4,200,000");
        assert_eq!(format_quantity(12.5, "%"), "12.5%");
        assert_eq!(format_quantity(3.0, "days"), "3 days");
        assert_eq!(format_quantity(1.0, "days"), "1 day");
        assert_eq!(format_quantity(1500.0, "CHF"), "CHF 1,500");
        assert_eq!(format_quantity(-250.0, "USD"), "-$250");
        assert_eq!(format_quantity(4.5, "USD"), "$4.50");
        assert_eq!(format_quantity(0.333, "%"), "0.33%");
    }
}
