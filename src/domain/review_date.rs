//! Review dates as people write them: `2027-03-31`, `31 March 2027`, `in 6 weeks`, `6w`, `next friday`,
//! `tomorrow`. Relative forms count from `today`, which the caller passes in.

use std::sync::LazyLock;

use chrono::{Datelike, Days, Months, NaiveDate, Weekday};
use regex::Regex;

/// The dates a review may be set to: after `today`, no later than `latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReviewWindow {
    pub today: NaiveDate,
    pub latest: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewDateError {
    #[error("not a date")]
    Unparseable,
    #[error("{0} is not in the future")]
    NotInFuture(NaiveDate),
    #[error("{date} is after {latest}")]
    BeyondHorizon { date: NaiveDate, latest: NaiveDate },
}

static RELATIVE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:in\s+)?(?P<n>\d{1,4})\s*(?P<unit>d|days?|w|wks?|weeks?|m|mos?|months?|y|yrs?|years?)(?:\s+from\s+(?:now|today))?$")
        .unwrap()
});
/// `31st March 2027`: the ordinal suffix is dropped before the formats are tried.
static ORDINAL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)\b(\d{1,2})(?:st|nd|rd|th)\b").unwrap());
static WEEKDAY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:(?P<which>next|this|on)\s+)?(?P<day>mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun)(?:day|sday|nesday|rsday|urday)?$").unwrap()
});

/// Part of a date: a month without its day (`March`, `March 2027`), or a day without its month (`31`, `the 31st`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DatePart {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub year: Option<i32>,
}

static MONTH_ONLY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:in\s+|end\s+of\s+)?(?P<month>[a-z]{3,9})\.?(?:\s+(?P<year>\d{4}))?$").unwrap()
});
static DAY_ONLY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^(?:on\s+)?(?:the\s+)?(?P<day>\d{1,2})(?:st|nd|rd|th)?$").unwrap());
/// A day and a month, no year: `31 March`, `March 31st`.
static DAY_MONTH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:(?P<d1>\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<m1>[a-z]{3,9})\.?|(?P<m2>[a-z]{3,9})\.?\s+(?P<d2>\d{1,2})(?:st|nd|rd|th)?)$")
        .unwrap()
});

fn month_number(name: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    let name = name.to_lowercase();
    if name.len() < 3 {
        return None;
    }
    MONTHS
        .iter()
        .position(|m| m.starts_with(&name) && (name.len() == 3 || *m == name || name == "sept"))
        .map(|i| i as u32 + 1)
}

impl DatePart {
    /// Reads an answer that names only part of a date.
    pub fn read(text: &str) -> Option<DatePart> {
        let text = text.trim().trim_end_matches('.');
        if let Some(c) = MONTH_ONLY.captures(text) {
            let month = month_number(&c["month"])?;
            let year = c.name("year").and_then(|y| y.as_str().parse().ok());
            return Some(DatePart { month: Some(month), day: None, year });
        }
        let c = DAY_ONLY.captures(text)?;
        let day: u32 = c["day"].parse().ok().filter(|d| (1..=31).contains(d))?;
        Some(DatePart { month: None, day: Some(day), year: None })
    }

    /// This part with the other part: a whole date once the day and the month are both known.
    pub fn with(self, other: DatePart) -> DatePart {
        DatePart { month: other.month.or(self.month), day: other.day.or(self.day), year: other.year.or(self.year) }
    }
}
impl ReviewWindow {
    pub fn new(today: NaiveDate, horizon_days: u32) -> Self {
        Self { today, latest: today + Days::new(u64::from(horizon_days)) }
    }

    pub fn parse(&self, text: &str) -> Result<NaiveDate, ReviewDateError> {
        let date = self.read(text.trim()).ok_or(ReviewDateError::Unparseable)?;
        self.check(date)
    }

    /// Whether a review may be set to `date`.
    pub fn check(&self, date: NaiveDate) -> Result<NaiveDate, ReviewDateError> {
        if date <= self.today {
            Err(ReviewDateError::NotInFuture(date))
        } else if date > self.latest {
            Err(ReviewDateError::BeyondHorizon { date, latest: self.latest })
        } else {
            Ok(date)
        }
    }

    fn read(&self, text: &str) -> Option<NaiveDate> {
        let text = text.trim_end_matches('.');
        let lower = text.to_lowercase();
        match lower.as_str() {
            "tomorrow" => return self.today.checked_add_days(Days::new(1)),
            "next week" => return self.today.checked_add_days(Days::new(7)),
            "next month" => return self.today.checked_add_months(Months::new(1)),
            _ => {}
        }
        if let Some(c) = RELATIVE.captures(text) {
            let n: u32 = c["n"].parse().ok()?;
            let unit = c["unit"].to_lowercase();
            return match unit.chars().next()? {
                'd' => self.today.checked_add_days(Days::new(n.into())),
                'w' => self.today.checked_add_days(Days::new(u64::from(n) * 7)),
                'm' => self.today.checked_add_months(Months::new(n)),
                _ => self.today.checked_add_months(Months::new(n.checked_mul(12)?)),
            };
        }
        if let Some(c) = WEEKDAY.captures(text) {
            let day: Weekday = c["day"][..3].parse().ok()?;
            // The first such day after today; "next friday" said on a Friday is a week away.
            let ahead = (7 + day.num_days_from_monday() - self.today.weekday().num_days_from_monday()) % 7;
            let ahead = if ahead == 0 { 7 } else { ahead };
            return self.today.checked_add_days(Days::new(ahead.into()));
        }
        if let Some(c) = DAY_MONTH.captures(text) {
            let day: u32 = c.name("d1").or(c.name("d2"))?.as_str().parse().ok()?;
            let month = month_number(c.name("m1").or(c.name("m2"))?.as_str())?;
            return self.next_occurrence(month, day);
        }
        const FORMATS: &[&str] =
            &["%Y-%m-%d", "%d %B %Y", "%d %b %Y", "%B %d %Y", "%b %d %Y", "%B %d, %Y", "%b %d, %Y"];
        let text = ORDINAL.replace_all(text, "$1");
        FORMATS.iter().find_map(|f| NaiveDate::parse_from_str(&text, f).ok())
    }

    /// The first `day` of `month` after today: this year's, or next year's.
    fn next_occurrence(&self, month: u32, day: u32) -> Option<NaiveDate> {
        let this_year = NaiveDate::from_ymd_opt(self.today.year(), month, day);
        match this_year {
            Some(d) if d > self.today => Some(d),
            _ => NaiveDate::from_ymd_opt(self.today.year() + 1, month, day),
        }
    }

    /// A whole date from its parts, when they make one (a day and a month; the year is the next one that fits).
    pub fn date_of(&self, part: DatePart) -> Option<NaiveDate> {
        let (month, day) = (part.month?, part.day?);
        match part.year {
            Some(year) => NaiveDate::from_ymd_opt(year, month, day),
            None => self.next_occurrence(month, day),
        }
    }
}

/// The review date proposed when none is given, `weeks` from `today` (also when an override's evidence is due).
pub fn default_review_date(today: NaiveDate, weeks: u32) -> NaiveDate {
    today + chrono::Days::new(7 * u64::from(weeks))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    // 2026-11-25 is a Wednesday.
    fn window() -> ReviewWindow {
        ReviewWindow::new(d("2026-11-25"), 365)
    }

    #[test]
    fn absolute_and_relative_forms() {
        let w = window();
        assert_eq!(w.parse("2027-03-31"), Ok(d("2027-03-31")));
        assert_eq!(w.parse("31 March 2027"), Ok(d("2027-03-31")));
        assert_eq!(w.parse("Mar 31, 2027"), Ok(d("2027-03-31")));
        assert_eq!(w.parse("in 6 weeks"), Ok(d("2027-01-06")));
        assert_eq!(w.parse("6w"), Ok(d("2027-01-06")));
        assert_eq!(w.parse("10 days"), Ok(d("2026-12-05")));
        assert_eq!(w.parse("3 months"), Ok(d("2027-02-25")));
        assert_eq!(w.parse("tomorrow"), Ok(d("2026-11-26")));
        assert_eq!(w.parse("next friday"), Ok(d("2026-11-27")));
        assert_eq!(w.parse("Wednesday"), Ok(d("2026-12-02")));
        assert_eq!(w.parse("next Tue"), Ok(d("2026-12-01")));
    }

    #[test]
    fn past_far_and_nonsense_are_refused() {
        let w = window();
        assert_eq!(w.parse("2026-11-25"), Err(ReviewDateError::NotInFuture(d("2026-11-25"))));
        assert_eq!(w.parse("2020-01-01"), Err(ReviewDateError::NotInFuture(d("2020-01-01"))));
        assert_eq!(
            w.parse("2y"),
            Err(ReviewDateError::BeyondHorizon { date: d("2028-11-25"), latest: d("2027-11-25") })
        );
        assert_eq!(w.parse("soon"), Err(ReviewDateError::Unparseable));
        assert_eq!(w.parse("2027-02-30"), Err(ReviewDateError::Unparseable));
        assert!(matches!(w.parse("9999 years"), Err(ReviewDateError::BeyondHorizon { .. })));
    }
}
