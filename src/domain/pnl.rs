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
    pub fn parse(text: &str) -> Result<Self, PnlError> {
        let text = text.trim();
        let (line, base, target) = if let Some(c) = BASELINE_TARGET.captures(text) {
            let base = Quantity::parse(&c["base"]).ok_or(PnlError::Format)?;
            let target = Quantity::parse(&c["target"]).ok_or(PnlError::Format)?;
            (c["line"].to_owned(), base, target)
        } else {
            let sep = ARROW.find_iter(text).last().ok_or(PnlError::Format)?;
            let target = Quantity::parse(&text[sep.end()..]).ok_or(PnlError::Format)?;
            let left = &text[..sep.start()];
            let c = TRAILING_QUANTITY.captures(left).ok_or(PnlError::Format)?;
            let base = Quantity::parse(&c["q"]).ok_or(PnlError::Format)?;
            (c["line"].to_owned(), base, target)
        };
        let line = line.trim().trim_end_matches([':', ',', ';', '-', '=', '(']).trim().to_owned();
        if !line.chars().any(char::is_alphabetic) {
            return Err(PnlError::NoLine);
        }
        let unit = match (base.unit, target.unit) {
            (None, None) => return Err(PnlError::NoUnit),
            (Some(u), None) | (None, Some(u)) => u,
            (Some(b), Some(t)) if same_unit(&b, &t) => {
                if b.len() >= t.len() {
                    b
                } else {
                    t
                }
            }
            (Some(baseline), Some(target)) => {
                return Err(PnlError::UnitMismatch { baseline, target });
            }
        };
        if base.value == target.value {
            return Err(PnlError::SameTarget { value: format_quantity(base.value, &unit) });
        }
        Ok(Self { line, unit, baseline: base.value, target: target.value })
    }

    pub fn format_value(&self, value: f64) -> String {
        format_quantity(value, &self.unit)
    }
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
