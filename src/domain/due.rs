//! What is due and when: heads-ups before a review date, nudges after it, escalation. Pure functions of a
//! pilot, its workspace's settings and (for sending) `now`; times land only in allowed hours and on working days.

use chrono::{DateTime, Datelike, Days, Duration, NaiveDate, NaiveTime, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;

use crate::domain::{Pilot, Stage, WorkspaceSettings};

/// The review cycle's counters as stored; they apply while `cycle` is the review date in force.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleState {
    pub cycle: Option<NaiveDate>,
    pub heads_up_sent: bool,
    pub cycle_nudges: u32,
    pub unanswered: u32,
    pub last_nudge_at: Option<DateTime<Utc>>,
    pub escalated: bool,
    pub posted: bool,
    pub snoozes: u32,
    pub snoozed_until: Option<DateTime<Utc>>,
}

impl ScheduleState {
    /// The counters for the review date in force: a new date (an extension) starts a fresh cycle.
    pub fn for_cycle(&self, due: NaiveDate) -> ScheduleState {
        if self.cycle == Some(due) { self.clone() } else { ScheduleState { cycle: Some(due), ..Default::default() } }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueKind {
    /// A reminder to the owner before the review date.
    HeadsUp,
    /// The review date passed without a decision or 3/3 evidence.
    Nudge,
}

impl DueKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DueKind::HeadsUp => "heads_up",
            DueKind::Nudge => "nudge",
        }
    }
}

/// The next message due for a pilot: when, what, and its idempotency key (cycle, seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub at: DateTime<Utc>,
    pub kind: DueKind,
    pub cycle: NaiveDate,
    pub seq: u32,
}

/// A person's own time zone when they set a valid one, else the workspace's.
pub fn own_or_workspace_zone(own: Option<String>, settings: &WorkspaceSettings) -> Tz {
    own.and_then(|tz| tz.parse().ok()).unwrap_or_else(|| zone(settings))
}

/// The workspace's time zone (UTC when the setting does not name one).
pub fn zone(settings: &WorkspaceSettings) -> Tz {
    settings.timezone.parse().unwrap_or(Tz::UTC)
}

fn weekday(name: &str) -> Option<Weekday> {
    name.trim().parse().ok()
}

fn is_working_day(settings: &WorkspaceSettings, day: Weekday) -> bool {
    settings.working_days.iter().filter_map(|d| weekday(d)).any(|d| d == day)
}

fn is_quiet(settings: &WorkspaceSettings, hour: u32) -> bool {
    let (start, end) = (settings.quiet_start % 24, settings.quiet_end % 24);
    match start.cmp(&end) {
        std::cmp::Ordering::Equal => false,
        std::cmp::Ordering::Greater => hour >= start || hour < end,
        std::cmp::Ordering::Less => hour >= start && hour < end,
    }
}

/// A local wall-clock time as an instant; a time skipped by a daylight-saving change moves to the next hour.
fn local_instant(tz: Tz, date: NaiveDate, hour: u32) -> DateTime<Utc> {
    for h in hour..hour + 3 {
        let time = NaiveTime::from_hms_opt(h % 24, 0, 0).unwrap_or(NaiveTime::MIN);
        if let Some(t) = tz.from_local_datetime(&date.and_time(time)).earliest() {
            return t.with_timezone(&Utc);
        }
    }
    Utc.from_utc_datetime(&date.and_time(NaiveTime::MIN))
}

/// The first instant at or after `t` when a message may be sent: a working day, outside quiet hours.
pub fn allowed(t: DateTime<Utc>, settings: &WorkspaceSettings, tz: Tz) -> DateTime<Utc> {
    let working: Vec<Weekday> = settings.working_days.iter().filter_map(|d| weekday(d)).collect();
    if working.is_empty() {
        return t; // nothing would ever be sent: treat every day as a working day
    }
    let local = t.with_timezone(&tz);
    if is_working_day(settings, local.weekday()) && !is_quiet(settings, local.hour()) {
        return t;
    }
    // Otherwise the next working day's first allowed hour (today's, when the quiet night has not ended yet).
    let mut date = local.date_naive();
    let today_start = local_instant(tz, date, settings.quiet_end % 24);
    if today_start > t && is_working_day(settings, local.weekday()) {
        return today_start;
    }
    for _ in 0..8 {
        date = date + Days::new(1);
        if is_working_day(settings, date.weekday()) {
            return local_instant(tz, date, settings.quiet_end % 24);
        }
    }
    t
}

/// The start of the working day on `date` (local), moved to an allowed time.
fn day_start(date: NaiveDate, settings: &WorkspaceSettings, tz: Tz) -> DateTime<Utc> {
    allowed(local_instant(tz, date, settings.quiet_end % 24), settings, tz)
}

/// The date a pilot's messages count towards: the review date in force while it is scoped; for a pilot scaled by
/// override, the date by which the evidence it owes is due.
pub fn cycle_date(p: &Pilot) -> Option<NaiveDate> {
    match p.stage {
        Stage::Scoped => p.due_date(),
        Stage::InProduction => p.evidence_due,
        Stage::Draft | Stage::Killed => None,
    }
}

/// Whether a pilot is still owed messages: undecided with a review date, or scaled on credit, and without 3/3
/// evidence.
pub fn needs_review(p: &Pilot) -> bool {
    cycle_date(p).is_some() && p.evidence_count() < 3
}

/// The next message due for a pilot, if any. Catch-up comes free: the next nudge counts from the last one
/// actually sent, so a bot that was down for weeks sends one nudge, not one per missed interval.
pub fn next_due(p: &Pilot, state: &ScheduleState, settings: &WorkspaceSettings) -> Option<Due> {
    next_due_in(p, state, settings, zone(settings))
}

/// As [`next_due`], in the time zone of the person the messages go to (their own, or the workspace's).
pub fn next_due_in(p: &Pilot, state: &ScheduleState, settings: &WorkspaceSettings, tz: Tz) -> Option<Due> {
    if !needs_review(p) {
        return None;
    }
    let due = cycle_date(p)?;
    let st = state.for_cycle(due);
    let first_nudge = day_start(due + Days::new(u64::from(settings.grace_days)), settings, tz);
    if !st.heads_up_sent && settings.heads_up_days > 0 && st.cycle_nudges == 0 {
        let at = day_start(due - Days::new(u64::from(settings.heads_up_days)), settings, tz);
        // A heads-up only makes sense before the review date itself.
        if at < local_instant(tz, due, 0) {
            return Some(Due { at, kind: DueKind::HeadsUp, cycle: due, seq: 0 });
        }
    }
    let mut at = match st.last_nudge_at {
        Some(last) if st.cycle_nudges > 0 => {
            allowed(last + Duration::days(i64::from(settings.nudge_every_days.max(1))), settings, tz)
        }
        _ => first_nudge,
    };
    if let Some(until) = st.snoozed_until
        && until > at
    {
        at = allowed(until, settings, tz);
    }
    Some(Due { at, kind: DueKind::Nudge, cycle: due, seq: st.cycle_nudges + 1 })
}

/// What sending a due nudge brings with it: escalation to the sponsor, a post in the review channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Escalation {
    pub escalate: bool,
    pub post: bool,
}

pub fn escalation(state: &ScheduleState, due: &Due, settings: &WorkspaceSettings) -> Escalation {
    if due.kind != DueKind::Nudge {
        return Escalation::default();
    }
    let st = state.for_cycle(due.cycle);
    let unanswered = st.unanswered + 1;
    Escalation {
        escalate: !st.escalated && settings.escalate_after > 0 && unanswered >= settings.escalate_after,
        post: !st.posted && settings.post_after > 0 && unanswered >= settings.post_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OwnerStatus;
    use crate::domain::lifecycle::EvidenceState;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }
    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn pilot(due: &str) -> Pilot {
        let p = crate::domain::pilot::sample("P", Stage::Scoped);
        Pilot { review_date: Some(d(due)), next_review_date: Some(d(due)), owner_status: OwnerStatus::Accepted, ..p }
    }

    fn london() -> WorkspaceSettings {
        WorkspaceSettings { timezone: "Europe/London".into(), ..WorkspaceSettings::default() }
    }

    #[test]
    fn heads_up_then_first_nudge_on_working_days_at_the_start_of_the_day() {
        let s = WorkspaceSettings::default(); // UTC, 08:00-19:00, Monday-Friday
        // Review on Wednesday 2027-01-06: heads-up the Sunday before moves to Monday 08:00.
        let p = pilot("2027-01-06");
        let due = next_due(&p, &ScheduleState::default(), &s).unwrap();
        assert_eq!((due.kind, due.at, due.seq), (DueKind::HeadsUp, t("2027-01-04T08:00:00Z"), 0));
        let sent = ScheduleState { cycle: Some(d("2027-01-06")), heads_up_sent: true, ..Default::default() };
        let due = next_due(&p, &sent, &s).unwrap();
        assert_eq!((due.kind, due.at, due.seq), (DueKind::Nudge, t("2027-01-07T08:00:00Z"), 1));
    }

    #[test]
    fn nudges_repeat_from_the_last_one_sent_so_downtime_means_one_catch_up() {
        let s = WorkspaceSettings::default();
        let p = pilot("2027-01-06");
        let st = ScheduleState {
            cycle: Some(d("2027-01-06")),
            heads_up_sent: true,
            cycle_nudges: 1,
            unanswered: 1,
            last_nudge_at: Some(t("2027-01-07T08:00:00Z")),
            ..Default::default()
        };
        let due = next_due(&p, &st, &s).unwrap();
        assert_eq!((due.at, due.seq), (t("2027-01-14T08:00:00Z"), 2));
        // Sent three weeks late (the bot was down): the next one counts from then.
        let late = ScheduleState { cycle_nudges: 2, last_nudge_at: Some(t("2027-02-04T15:30:00Z")), ..st };
        assert_eq!(next_due(&p, &late, &s).unwrap().at, t("2027-02-11T15:30:00Z"));
    }

    #[test]
    fn quiet_hours_and_weekends_wait_for_the_next_allowed_time() {
        let s = WorkspaceSettings::default();
        let tz = Tz::UTC;
        assert_eq!(allowed(t("2027-01-06T12:00:00Z"), &s, tz), t("2027-01-06T12:00:00Z"));
        assert_eq!(allowed(t("2027-01-06T21:00:00Z"), &s, tz), t("2027-01-07T08:00:00Z"));
        assert_eq!(allowed(t("2027-01-07T03:00:00Z"), &s, tz), t("2027-01-07T08:00:00Z"));
        assert_eq!(allowed(t("2027-01-08T20:00:00Z"), &s, tz), t("2027-01-11T08:00:00Z"), "Friday night -> Monday");
        assert_eq!(allowed(t("2027-01-09T12:00:00Z"), &s, tz), t("2027-01-11T08:00:00Z"), "Saturday -> Monday");
        let no_quiet = WorkspaceSettings { quiet_start: 0, quiet_end: 0, ..s };
        assert_eq!(allowed(t("2027-01-06T23:00:00Z"), &no_quiet, tz), t("2027-01-06T23:00:00Z"));
    }

    #[test]
    fn local_time_zones_and_daylight_saving() {
        let s = london();
        let tz = zone(&s);
        // Winter: 08:00 in London is 08:00 UTC; summer: 07:00 UTC.
        assert_eq!(allowed(t("2027-01-06T05:00:00Z"), &s, tz), t("2027-01-06T08:00:00Z"));
        assert_eq!(allowed(t("2027-07-07T05:00:00Z"), &s, tz), t("2027-07-07T07:00:00Z"));
        // The first nudge after a review on Friday 2027-03-26 lands on Monday 29 March, the day after clocks go forward.
        let p = pilot("2027-03-26");
        let st = ScheduleState { cycle: Some(d("2027-03-26")), heads_up_sent: true, ..Default::default() };
        assert_eq!(next_due(&p, &st, &s).unwrap().at, t("2027-03-29T07:00:00Z"));
        // An owner in New York gets the first nudge at 08:00 their time, whatever the workspace's zone.
        let p = pilot("2027-01-06");
        let st = ScheduleState { cycle: Some(d("2027-01-06")), heads_up_sent: true, ..Default::default() };
        let owner_tz: Tz = "America/New_York".parse().unwrap();
        assert_eq!(next_due_in(&p, &st, &s, owner_tz).unwrap().at, t("2027-01-07T13:00:00Z"));
        let ny = WorkspaceSettings { timezone: "America/New_York".into(), ..WorkspaceSettings::default() };
        assert_eq!(
            allowed(t("2027-01-06T12:00:00Z"), &ny, zone(&ny)),
            t("2027-01-06T13:00:00Z"),
            "07:00 local -> 08:00"
        );
        // On the spring-forward night the quiet hours still end at 08:00 local.
        assert_eq!(
            allowed(t("2027-03-14T07:30:00Z"), &ny, zone(&ny)),
            t("2027-03-15T12:00:00Z"),
            "Sunday -> Monday, EDT"
        );
    }

    #[test]
    fn snoozes_extensions_and_decisions() {
        let s = WorkspaceSettings::default();
        let p = pilot("2027-01-06");
        let snoozed = ScheduleState {
            cycle: Some(d("2027-01-06")),
            heads_up_sent: true,
            cycle_nudges: 1,
            last_nudge_at: Some(t("2027-01-07T08:00:00Z")),
            snoozed_until: Some(t("2027-01-18T10:00:00Z")),
            ..Default::default()
        };
        assert_eq!(next_due(&p, &snoozed, &s).unwrap().at, t("2027-01-18T10:00:00Z"));
        // An extension moves the review date: a fresh cycle, counters reset, the heads-up comes again.
        let extended = Pilot { next_review_date: Some(d("2027-03-03")), extensions: 1, ..p.clone() };
        let due = next_due(&extended, &snoozed, &s).unwrap();
        // Three days before Wednesday 3 March is Sunday: the heads-up waits for Monday.
        assert_eq!((due.kind, due.cycle, due.at), (DueKind::HeadsUp, d("2027-03-03"), t("2027-03-01T08:00:00Z")));
        let killed = Pilot { stage: Stage::Killed, ..p.clone() };
        assert_eq!(next_due(&killed, &snoozed, &s), None);
        let proven = Pilot {
            evidence: EvidenceState { workflow_live: true, owner_running: true, pnl_realised: Some(90.0) },
            ..p.clone()
        };
        assert_eq!(next_due(&proven, &snoozed, &s), None);
    }

    #[test]
    fn a_pilot_scaled_by_override_is_reminded_of_the_evidence_it_owes_until_it_is_on_record() {
        let s = WorkspaceSettings::default();
        let scaled = Pilot {
            stage: Stage::InProduction,
            scale_override: true,
            evidence_due: Some(d("2027-02-17")),
            ..pilot("2027-01-06")
        };
        assert_eq!(cycle_date(&scaled), Some(d("2027-02-17")));
        let due = next_due(&scaled, &ScheduleState::default(), &s).unwrap();
        assert_eq!((due.kind, due.cycle), (DueKind::HeadsUp, d("2027-02-17")));
        let paid = Pilot {
            evidence: EvidenceState { workflow_live: true, owner_running: true, pnl_realised: Some(90.0) },
            ..scaled.clone()
        };
        assert_eq!(next_due(&paid, &ScheduleState::default(), &s), None);
        let scaled_proven = Pilot { evidence_due: None, ..scaled };
        assert_eq!(next_due(&scaled_proven, &ScheduleState::default(), &s), None, "no debt, no reminder");
    }

    #[test]
    fn escalation_after_unanswered_nudges() {
        let s = WorkspaceSettings::default(); // escalate after 2, post after 3
        let due = Due { at: t("2027-01-14T08:00:00Z"), kind: DueKind::Nudge, cycle: d("2027-01-06"), seq: 2 };
        let st = |unanswered, escalated| ScheduleState {
            cycle: Some(d("2027-01-06")),
            unanswered,
            escalated,
            ..Default::default()
        };
        assert_eq!(escalation(&st(0, false), &due, &s), Escalation { escalate: false, post: false });
        assert_eq!(escalation(&st(1, false), &due, &s), Escalation { escalate: true, post: false });
        assert_eq!(escalation(&st(2, true), &due, &s), Escalation { escalate: false, post: true });
        let heads_up = Due { kind: DueKind::HeadsUp, ..due };
        assert_eq!(escalation(&st(5, false), &heads_up, &s), Escalation::default());
    }
}
