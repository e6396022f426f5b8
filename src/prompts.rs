//! Every sentence the bot says, loaded from `prompts/` and checked at start.
//!
//! `messages.toml` holds one template per [`Key`]; `vagueness.toml` holds the vague-answer rules with their
//! follow-up questions. A missing or unknown key, a placeholder the code does not supply, a template that does
//! not parse or a regex that does not compile is a start-up error naming the file and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::domain::vagueness::QUESTIONS;
use crate::domain::{Rule, Rules, Step};

macro_rules! keys {
    ($( $variant:ident = $key:literal [$($var:ident $(: $kind:ident)?),* $(,)?] ),* $(,)?) => {
        /// A message the bot can say, and the placeholders its template may use.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Key { $($variant),* }
        impl Key {
            pub const ALL: &'static [Key] = &[$(Key::$variant),*];
            pub fn as_str(self) -> &'static str { match self { $(Key::$variant => $key),* } }
            pub fn vars(self) -> &'static [&'static str] {
                match self { $(Key::$variant => &[$(stringify!($var)),*]),* }
            }
            /// Each placeholder with the kind of value the code gives it (text unless said otherwise).
            pub fn kinds(self) -> &'static [(&'static str, Kind)] {
                match self { $(Key::$variant => &[$((stringify!($var), kind!($($kind)?))),*]),* }
            }
        }
    };
}

macro_rules! kind {
    () => {
        Kind::Text
    };
    ($kind:ident) => {
        Kind::$kind
    };
}

/// The kind of value a placeholder holds, so that every template can be rendered once at start with sample values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Number,
    Bool,
    /// Texts, like `deciders`.
    Texts,
    /// The portfolio's lists of pilots (`pilot`, `owner`, `date`, `detail`).
    Items,
    /// The funnel's stages (`label`, `count`).
    Stages,
    /// The portfolio's P&L lines.
    Lines,
    /// Settings shown (`name`, `value`).
    Settings,
}

impl Kind {
    /// A value of this kind: `some`, one a real reply could hold; else the empty or false one (the other branch).
    fn sample(self, var: &str, some: bool) -> minijinja::Value {
        use minijinja::Value;
        let text = |t: &str| if some { Value::from(t) } else { Value::from("") };
        match self {
            Kind::Text => text(&format!("sample {var}")),
            Kind::Number => Value::from(if some { 2 } else { 0 }),
            Kind::Bool => Value::from(some),
            Kind::Texts => Value::from(if some { vec!["sponsor", "admins"] } else { vec![] }),
            Kind::Items => Value::from(if some {
                vec![
                    minijinja::context! { pilot => "Claims triage", owner => "<@alice>", date => "2027-01-06", detail => "1/3" },
                ]
            } else {
                vec![]
            }),
            Kind::Stages => {
                Value::from(if some { vec![minijinja::context! { label => "Scoped", count => 3 }] } else { vec![] })
            }
            Kind::Lines => Value::from(if some {
                vec![minijinja::context! {
                    line => "Claims handling cost", direction => "down", targeted => "−£600,000", realised => "−£300,000",
                    share => "50", away => false, measured => 1, pilots => 2, first => "Claims triage", last => "Fraud screening",
                }]
            } else {
                vec![]
            }),
            Kind::Settings => Value::from(if some {
                vec![minijinja::context! { name => "digest", value => "weekly" }]
            } else {
                vec![]
            }),
        }
    }
}

keys! {
    // The scoping questions.
    AskName = "ask.name" [],
    AskWorkflow = "ask.workflow" [pilot],
    AskOwner = "ask.owner" [pilot],
    AskPnl = "ask.pnl" [pilot],
    AskSponsor = "ask.sponsor" [pilot, optional: Bool],
    AskReviewDate = "ask.review_date" [pilot, default_date, latest_date],
    AskConfirm = "ask.confirm" [card],
    AskEditStep = "ask.edit_step" [pilot],
    CurrentAnswer = "ask.current_answer" [answer],
    PnlMissing = "ask.pnl_missing" [pilot, understood, line: Bool, baseline: Bool, target: Bool, unit: Bool],
    Understood = "ask.understood" [step, answer],
    DateMissing = "ask.date_missing" [pilot, month, day: Number, year: Number],

    ChoiceConfirm = "choice.confirm" [],
    ChoiceEdit = "choice.edit" [],
    ChoiceCancel = "choice.cancel" [],
    ChoiceSamePilot = "choice.same_pilot" [],
    ChoiceSeparatePilot = "choice.separate_pilot" [],
    AskDuplicate = "ask.duplicate" [pilot, id: Number, other, owner, same_line: Bool],
    DuplicateStopped = "register.duplicate_stopped" [pilot, id: Number, other],
    ChoiceUnknown = "choice.unknown" [answer, choices],

    StepName = "step.name" [],
    StepWorkflow = "step.workflow" [],
    StepOwner = "step.owner" [],
    StepPnl = "step.pnl" [],
    StepSponsor = "step.sponsor" [],
    StepReviewDate = "step.review_date" [],
    StepDuplicate = "step.duplicate" [],
    FieldReason = "step.reason" [],

    // The registration and its end.
    Registered = "register.done" [pilot],
    Announcement = "register.announcement" [pilot, owner, registrant, pnl_line, baseline, target, review_date],
    Cancelled = "register.cancelled" [pilot],
    AlreadyInProgress = "register.in_progress" [pilot, step],
    BackAtFirstStep = "register.back_at_first" [],
    NothingPending = "dialogue.nothing_pending" [],
    QuestionClosed = "dialogue.question_closed" [],
    QuestionNotYours = "dialogue.question_not_yours" [user],
    QuestionMoved = "dialogue.question_moved" [step],
    NothingToResume = "dialogue.nothing_to_resume" [],
    Resuming = "dialogue.resuming" [pilot, step],

    // Edits of a scoped pilot.
    Updated = "edit.updated" [pilot, step, old, new],
    EditCancelled = "edit.cancelled" [pilot],
    EditNotAllowed = "edit.not_allowed" [pilot, registrant, owner, sponsor],
    SponsorChangeNotAllowed = "edit.sponsor_not_allowed" [pilot, sponsor],
    SponsorIsOwner = "edit.sponsor_is_owner" [pilot, user],
    SponsorRequired = "edit.sponsor_required" [pilot],
    EditDraft = "edit.draft" [pilot, registrant],
    EditUnknownStep = "edit.unknown_step" [step, steps],
    EditNoBack = "edit.no_back" [],

    // Answers that cannot be taken.
    InputEmpty = "invalid.empty" [],
    InputTooLong = "invalid.too_long" [limit: Number, length: Number],
    InputControl = "invalid.control_characters" [],
    NameTooShort = "invalid.name_too_short" [min: Number],
    NameTooLong = "invalid.name_too_long" [max: Number, length: Number],
    NameMultiLine = "invalid.name_multiline" [],
    NameNoLetter = "invalid.name_no_letter" [],
    NameTaken = "invalid.name_taken" [pilot],
    NameHeldByDraft = "invalid.name_held_by_draft" [pilot, user, since, until],
    DraftTakenOver = "lifecycle.draft_taken_over" [pilot, user],
    PersonNone = "invalid.person_none" [role],
    PersonSeveral = "invalid.person_several" [role, count: Number],
    PersonRole = "invalid.person_role" [role],
    PersonEveryone = "invalid.person_everyone" [role],
    PersonBot = "invalid.person_bot" [role, user],
    PnlFormat = "invalid.pnl_format" [],
    PnlNoLine = "invalid.pnl_no_line" [],
    PnlNoUnit = "invalid.pnl_no_unit" [],
    PnlUnitMismatch = "invalid.pnl_unit_mismatch" [baseline_unit, target_unit],
    PnlSameTarget = "invalid.pnl_same_target" [value],
    DateUnparseable = "invalid.date_unparseable" [answer],
    DateNotFuture = "invalid.date_not_future" [date, today],
    DateBeyondHorizon = "invalid.date_beyond_horizon" [date, latest],

    // Production evidence.
    EvidenceWorkflowLive = "evidence.label_workflow_live" [],
    EvidenceOwnerRunning = "evidence.label_owner_running" [],
    EvidencePnlMoved = "evidence.label_pnl_moved" [],
    AskPickEvidence = "evidence.ask_pick" [pilot, count: Number, items],
    AskEvidenceWorkflowLive = "evidence.ask_workflow_live" [pilot, workflow],
    AskEvidenceOwnerRunning = "evidence.ask_owner_running" [pilot],
    AskEvidencePnlMoved = "evidence.ask_pnl_moved" [pilot, pnl_line, baseline, target],
    EvidenceRecorded = "evidence.recorded" [pilot, item, count: Number, missing],
    EvidenceNotMoved = "evidence.recorded_not_moved" [pilot, realised, baseline, target, count: Number],
    EvidenceFormat = "evidence.invalid_format" [],
    EvidenceUnit = "evidence.invalid_unit" [unit, line_unit],
    OnlyOwner = "evidence.only_owner" [owner],
    OnlyOwnerNow = "evidence.only_owner_now" [pilot, owner],
    OwnerNotAcceptedEvidence = "evidence.owner_not_accepted" [pilot, declined: Bool],
    EvidenceNotAllowed = "evidence.not_allowed" [pilot],
    EvidenceVoided = "evidence.voided" [pilot, step, items],
    EvidenceVoidedDm = "evidence.voided_dm" [pilot, step, items, user],
    NotOpen = "lifecycle.not_open" [pilot, stage],
    Stopped = "lifecycle.stopped" [pilot],

    // Review decisions.
    AskScaleOverride = "review.ask_scale_override" [pilot, count: Number, missing],
    AskExtendDate = "review.ask_extend_date" [pilot, extensions: Number, latest_date],
    AskExtendReason = "review.ask_extend_reason" [pilot, date],
    AskKillCategory = "review.ask_kill_category" [pilot],
    AskKillReason = "review.ask_kill_reason" [pilot, category],
    KillNotWorthScaling = "review.label_not_worth_scaling" [],
    KillStalledInHandoff = "review.label_stalled_in_handoff" [],
    AnnounceScaled = "review.scaled" [pilot, decider, owner, override_reason],
    AnnounceExtended = "review.extended" [pilot, decider, date, reason, extensions: Number],
    AnnounceKilled = "review.killed" [pilot, decider, category, reason],
    DecideNotAllowed = "review.not_allowed" [pilot, registrant, sponsor, owner, deciders: Texts],
    AlreadyDecided = "review.already_decided" [pilot, stage],
    NotProven = "review.not_proven" [pilot, count: Number, missing],
    ExtensionAwaitsSponsor = "review.extension_awaits_sponsor" [pilot, sponsor, limit: Number],
    NoSponsorForExtension = "review.no_sponsor_for_extension" [pilot, limit: Number],
    ExtensionRequested = "review.extension_requested" [pilot, approver, date],
    AskApproveExtension = "review.ask_approve_extension" [pilot, requester, date, reason, extensions: Number, limit: Number],
    ExtensionApproved = "review.extension_approved" [pilot, sponsor, date],
    ExtensionRefused = "review.extension_refused" [pilot, sponsor],

    // The schedule: heads-ups, nudges, escalation.
    HeadsUp = "schedule.heads_up" [pilot, date, count: Number, missing],
    NudgeDm = "schedule.nudge" [pilot, date, count: Number, missing, nudge: Number, snooze_days: Number],
    EscalationDm = "schedule.escalation" [pilot, date, owner, nudges: Number, count: Number, missing, owner_accepted: Bool, debt: Bool],
    RiskPost = "schedule.risk_post" [pilot, date, owner, sponsor, nudges: Number, reasons, owner_accepted: Bool],
    OwnerNeededDm = "schedule.owner_needed" [pilot, date, owner, declined: Bool, overdue: Bool],
    EvidenceDebtDm = "schedule.evidence_debt" [pilot, date, count: Number, missing, overdue: Bool],
    DmFallback = "schedule.dm_fallback" [user, text],
    ChoiceAddEvidence = "choice.add_evidence" [],
    ChoiceNewDate = "choice.new_date" [],
    ChoiceSnooze = "choice.snooze" [],
    Snoozed = "schedule.snoozed" [pilot, until],
    SnoozeLimit = "schedule.snooze_limit" [pilot, max: Number],

    // The portfolio summary and the digest.
    PortfolioSummary = "portfolio.summary" [
        funnel: Stages, killed: Number, overdue: Items, overdue_more: Number, risks: Items, risks_more: Number, bets: Items, bets_more: Number, debts: Items, debts_more: Number, healthy_kills: Number,
        absorption_failures: Number, in_production: Number, decided: Number, production_rate: Number, pnl: Lines, pnl_more: Number
    ],
    PortfolioChartTitle = "portfolio.chart_title" [],
    FunnelRegistered = "funnel.registered" [],
    FunnelScoped = "funnel.scoped" [],
    FunnelOwnerAccepted = "funnel.owner_accepted" [],
    FunnelEvidence1 = "funnel.evidence_1" [],
    FunnelEvidence2 = "funnel.evidence_2" [],
    FunnelEvidence3 = "funnel.evidence_3" [],
    FunnelInProduction = "funnel.in_production" [],
    FunnelKilled = "funnel.killed" [],

    // Workspace settings.
    ConfigNotAllowed = "config.not_allowed" [],
    ConfigShow = "config.show" [settings: Settings],
    ConfigSaved = "config.saved" [setting, value],
    ConfigInvalid = "config.invalid" [setting, value],
    ConfigUnknown = "config.unknown" [setting, suggestion, settings],
    TimezoneShow = "config.timezone_show" [zone, own: Bool],
    TimezoneSaved = "config.timezone_saved" [zone],
    TimezoneInvalid = "config.timezone_invalid" [zone],

    // Owner acceptance, by direct message.
    ChoiceAccept = "choice.accept" [],
    ChoiceDecline = "choice.decline" [],
    ChoiceApprove = "choice.approve" [],
    ChoiceRefuse = "choice.refuse" [],
    AskOwnerDm = "owner.ask" [pilot, registrant, workflow, pnl_line, baseline, target, review_date],
    OwnerAcceptedReply = "owner.accepted_reply" [pilot],
    OwnerAcceptedNotice = "owner.accepted_notice" [pilot, owner],
    OwnerDeclinedReply = "owner.declined_reply" [pilot, sponsor: Bool],
    OwnerDeclinedNotice = "owner.declined_notice" [pilot, owner, reason],
    OwnerDeclinedSponsorNotice = "owner.declined_sponsor_notice" [pilot, owner, reason],
    AskVoid = "owner.ask_void" [],
    AnswerRecorded = "owner.answer_recorded" [],

    // Outcomes and flags, as shown on cards and lists.
    OutcomeOpen = "outcome.open" [],
    OutcomeInProduction = "outcome.in_production" [],
    OutcomeSlowBurningBet = "outcome.slow_burning_bet" [],
    OutcomeHealthyKill = "outcome.healthy_kill" [],
    OutcomeAbsorptionFailure = "outcome.absorption_failure" [],
    OutcomeAbsorptionRisk = "outcome.absorption_risk" [],
    FlagOwnerNotAccepted = "flag.owner_not_accepted" [],
    FlagOverdue = "flag.overdue" [],
    FlagScaledWithoutEvidence = "flag.scaled_without_evidence" [],
    FlagNoSponsor = "flag.no_sponsor" [],
    ReasonNoAcceptedOwner = "reason.no_accepted_owner" [],
    ReasonNoLiveWorkflow = "reason.no_live_workflow" [],
    ReasonOwnerNotRunning = "reason.owner_not_running" [],
    ReasonNoPnlMovement = "reason.no_pnl_movement" [],
    OwnerPending = "owner_status.pending" [],
    OwnerAcceptedLabel = "owner_status.accepted" [],
    OwnerDeclinedLabel = "owner_status.declined" [],
    StageInProduction = "stage.in_production" [],
    StageKilled = "stage.killed" [],

    // Commands, lookups and cards.
    UnknownCommand = "command.unknown" [command, suggestion],
    CommandUsage = "command.usage" [usage],
    PilotNotFound = "pilot.not_found" [query, suggestion],
    Card = "pilot.card" [
        id: Number, pilot, stage, workflow, owner, sponsor, pnl_line, baseline, target, review_date, registrant, registered_at,
        owner_status, outcome, reasons, flags, evidence_count: Number, evidence, realised, decision, extensions: Number, next_review_date,
        evidence_due
    ],
    ListHeader = "list.header" [scope, count: Number],
    ListItem = "list.item" [id: Number, pilot, stage, owner, owner_status, review_date, outcome, flags, evidence_count: Number],
    ListEmpty = "list.empty" [scope],
    ListMore = "list.more" [count: Number],
    Help = "help.text" [commands],
    HelpLine = "help.line" [usage, description],
    StageDraft = "stage.draft" [],
    StageScoped = "stage.scoped" [],
    NotSet = "value.not_set" [],
    InternalError = "error.internal" [],

    // Command descriptions: one line each, shown in help and registered with chat platforms.
    DescPilot = "describe.pilot" [],
    DescRegister = "describe.pilot_register" [],
    DescStatus = "describe.pilot_status" [],
    DescList = "describe.pilot_list" [],
    DescEdit = "describe.pilot_edit" [],
    DescResume = "describe.pilot_resume" [],
    DescHelp = "describe.pilot_help" [],
    DescEvidence = "describe.pilot_evidence" [],
    DescReview = "describe.pilot_review" [],
    DescOptDecision = "describe.option_decision" [],
    DescPortfolio = "describe.portfolio" [],
    DescLastmile = "describe.lastmile" [],
    DescConfig = "describe.lastmile_config" [],
    DescOptSetting = "describe.option_setting" [],
    DescOptValue = "describe.option_value" [],
    DescTimezone = "describe.lastmile_timezone" [],
    DescOptZone = "describe.option_zone" [],
    DescOptName = "describe.option_name" [],
    DescOptWorkflow = "describe.option_workflow" [],
    DescOptOwner = "describe.option_owner" [],
    DescOptPnl = "describe.option_pnl" [],
    DescOptSponsor = "describe.option_sponsor" [],
    DescOptReviewDate = "describe.option_review_date" [],
    DescOptPilot = "describe.option_pilot" [],
    DescOptStep = "describe.option_step" [],
    DescOptScope = "describe.option_scope" [],

    // The local console's own controls.
    ConsoleHelp = "console.help" [],
    ConsoleUser = "console.now_speaking" [user],
    ConsoleChannel = "console.now_in" [channel],
    ConsoleUnknownControl = "console.unknown_control" [control],
    ConsoleNow = "console.now" [now],
    ConsoleBadSpan = "console.bad_span" [span],
    ConsoleDms = "console.dms" [user, closed: Bool],
    ConsoleChart = "console.chart" [path],

    // The Discord adapter's own words.
    ShortcutScale = "shortcut.scale" [],
    ShortcutExtend = "shortcut.extend" [],
    ShortcutKill = "shortcut.kill" [],
    ShortcutEvidence = "shortcut.evidence" [],
    ShortcutNameOwner = "shortcut.name_owner" [],
    ShortcutStatus = "shortcut.status" [],

    DiscordAnswer = "discord.answer" [],
    DiscordCurrent = "discord.current" [],
    DiscordModalTitle = "discord.modal_title" [label],
    DiscordPickPerson = "discord.pick_person" [label],
    DiscordSkip = "discord.skip" [],
    DiscordMore = "discord.more" [count: Number],
    DiscordGuildOnly = "discord.guild_only" [],
    DiscordStale = "discord.stale" [],
    DiscordDone = "discord.done" [],
    DiscordRestarting = "discord.restarting" [],

    // The Slack adapter's own words.
    SlackAnswer = "slack.answer" [],
    SlackModalTitle = "slack.modal_title" [label],
    SlackModalTitleDone = "slack.modal_title_done" [],
    SlackSubmit = "slack.submit" [],
    SlackClose = "slack.close" [],
    SlackPickPerson = "slack.pick_person" [label],
    SlackSkip = "slack.skip" [],
    SlackSkipHint = "slack.skip_hint" [],
    SlackMore = "slack.more" [count: Number],
    SlackStale = "slack.stale" [],
    SlackOtherTeam = "slack.other_team" [],
    SlackRestarting = "slack.restarting" [],
}

impl Key {
    /// The label a step goes by in prompts and choices.
    pub fn for_step(step: Step) -> Key {
        match step {
            Step::Name => Key::StepName,
            Step::Workflow => Key::StepWorkflow,
            Step::Owner => Key::StepOwner,
            Step::Pnl => Key::StepPnl,
            Step::Sponsor => Key::StepSponsor,
            Step::ReviewDate => Key::StepReviewDate,
        }
    }
}

/// Placeholders every vague-answer follow-up may use.
const RULE_VARS: &[&str] = &["pilot", "answer"];

const EMBEDDED_MESSAGES: &str = include_str!("../prompts/messages.toml");
const EMBEDDED_VAGUENESS: &str = include_str!("../prompts/vagueness.toml");

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("{file}: cannot read: {source}")]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{file}: not valid TOML: {source}")]
    Toml { file: PathBuf, source: toml::de::Error },
    #[error("{file}: missing key `{key}`")]
    Missing { file: PathBuf, key: String },
    #[error("{file}: unknown key `{key}` (no code uses it; a typo?)")]
    Unknown { file: PathBuf, key: String },
    #[error("{file}: key `{key}` is not a string")]
    NotText { file: PathBuf, key: String },
    #[error("{file}: key `{key}`: template does not parse: {reason}")]
    Template { file: PathBuf, key: String, reason: String },
    #[error("{file}: key `{key}`: unknown placeholder `{placeholder}` (known: {known})")]
    Placeholder { file: PathBuf, key: String, placeholder: String, known: String },
    #[error("{file}: rule `{key}`: {reason}")]
    Rule { file: PathBuf, key: String, reason: String },
    #[error("{file}: key `{key}`: template cannot render with sample values: {reason}")]
    Render { file: PathBuf, key: String, reason: String },
}

#[derive(Deserialize)]
struct RuleFile {
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    step: String,
    pattern: String,
    followup: String,
    #[serde(default)]
    keep: bool,
}

/// The loaded, checked prompts.
pub struct Prompts {
    env: Environment<'static>,
    rules: Rules,
}

impl std::fmt::Debug for Prompts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prompts").finish_non_exhaustive()
    }
}

/// The longest piece of a user's own text a reply repeats: what they typed is quoted back to show what was not
/// understood, never whole (an answer may be a thousand characters).
pub const ECHO_MAX_CHARS: usize = 60;

/// `text` as a reply quotes it: on one line, cut to [`ECHO_MAX_CHARS`] with "…".
pub fn echo(text: &str) -> String {
    echo_up_to(text, ECHO_MAX_CHARS)
}

/// The longest answer shown back whole as understood (a combined answer): longer ones are cut with "…".
pub const UNDERSTOOD_MAX_CHARS: usize = 300;

/// `text` on one line, cut to `max` characters with "…".
pub fn echo_up_to(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

impl Prompts {
    /// The prompts compiled into the binary (a copy of this repository's `prompts/`).
    pub fn embedded() -> Result<Self, PromptError> {
        Self::from_sources(
            (Path::new("prompts/messages.toml"), EMBEDDED_MESSAGES),
            (Path::new("prompts/vagueness.toml"), EMBEDDED_VAGUENESS),
        )
    }

    /// Prompts from another folder holding `messages.toml` and `vagueness.toml`.
    pub fn load_dir(dir: &Path) -> Result<Self, PromptError> {
        let read = |name: &str| {
            let file = dir.join(name);
            std::fs::read_to_string(&file)
                .map(|text| (file.clone(), text))
                .map_err(|source| PromptError::Read { file, source })
        };
        let (mfile, messages) = read("messages.toml")?;
        let (vfile, vagueness) = read("vagueness.toml")?;
        Self::from_sources((&mfile, &messages), (&vfile, &vagueness))
    }

    pub fn from_sources(messages: (&Path, &str), vagueness: (&Path, &str)) -> Result<Self, PromptError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);

        let (file, text) = messages;
        let table: toml::Table =
            toml::from_str(text).map_err(|source| PromptError::Toml { file: file.to_owned(), source })?;
        let mut flat = BTreeMap::new();
        flatten("", &toml::Value::Table(table), &mut flat, file)?;
        for key in Key::ALL {
            let source = flat
                .remove(key.as_str())
                .ok_or_else(|| PromptError::Missing { file: file.to_owned(), key: key.as_str().to_owned() })?;
            add_template(&mut env, file, key.as_str(), source, key.vars())?;
        }
        if let Some(key) = flat.into_keys().next() {
            return Err(PromptError::Unknown { file: file.to_owned(), key });
        }
        // A template that parses may still fail to render (an unknown filter, arithmetic on text): each is rendered
        // now with sample values, once with every placeholder set and once with each empty, false or zero.
        for key in Key::ALL {
            for some in [true, false] {
                let ctx: BTreeMap<&str, minijinja::Value> =
                    key.kinds().iter().map(|(var, kind)| (*var, kind.sample(var, some))).collect();
                try_render(&env, file, key.as_str(), minijinja::Value::from(ctx))?;
            }
        }

        let (file, text) = vagueness;
        let parsed: RuleFile =
            toml::from_str(text).map_err(|source| PromptError::Toml { file: file.to_owned(), source })?;
        let mut rules = Vec::new();
        for raw in parsed.rule {
            let bad = |reason: String| PromptError::Rule { file: file.to_owned(), key: raw.id.clone(), reason };
            if !QUESTIONS.contains(&raw.step.as_str()) {
                return Err(bad(format!("unknown step `{}` (known: {})", raw.step, QUESTIONS.join(", "))));
            }
            let pattern = Regex::new(&raw.pattern).map_err(|e| bad(format!("pattern does not compile: {e}")))?;
            if rules.iter().any(|r: &Rule| r.id == raw.id) {
                return Err(bad("id used twice".into()));
            }
            let name = format!("vagueness.{}", raw.id);
            add_template(&mut env, file, &name, raw.followup, RULE_VARS)?;
            try_render(&env, file, &name, minijinja::context! { pilot => "Claims triage", answer => "sample answer" })?;
            rules.push(Rule { id: raw.id, question: raw.step, pattern, followup: name, keep: raw.keep });
        }
        Ok(Self { env, rules: Rules::new(rules) })
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Renders a message. Templates were checked at load; a failure here is a bug, logged and shown plainly.
    pub fn render(&self, key: Key, ctx: impl Serialize) -> String {
        self.render_named(key.as_str(), ctx)
    }

    pub fn text(&self, key: Key) -> String {
        self.render(key, ())
    }

    pub fn render_rule(&self, rule: &Rule, ctx: impl Serialize) -> String {
        self.render_named(&rule.followup, ctx)
    }

    fn render_named(&self, name: &str, ctx: impl Serialize) -> String {
        let result = self.env.get_template(name).and_then(|t| t.render(ctx));
        match result {
            Ok(text) => text.trim_end().to_owned(),
            Err(e) => {
                tracing::error!(template = name, error = %e, "prompt failed to render");
                format!("[{name}]")
            }
        }
    }
}

fn flatten(
    prefix: &str,
    value: &toml::Value,
    out: &mut BTreeMap<String, String>,
    file: &Path,
) -> Result<(), PromptError> {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out, file)?;
            }
            Ok(())
        }
        toml::Value::String(s) => {
            out.insert(prefix.to_owned(), s.clone());
            Ok(())
        }
        _ => Err(PromptError::NotText { file: file.to_owned(), key: prefix.to_owned() }),
    }
}

fn try_render(env: &Environment<'static>, file: &Path, name: &str, ctx: minijinja::Value) -> Result<(), PromptError> {
    env.get_template(name).and_then(|t| t.render(ctx)).map(|_| ()).map_err(|e| PromptError::Render {
        file: file.to_owned(),
        key: name.to_owned(),
        reason: e.to_string(),
    })
}

fn add_template(
    env: &mut Environment<'static>,
    file: &Path,
    name: &str,
    source: String,
    vars: &[&str],
) -> Result<(), PromptError> {
    let err = |reason: String| PromptError::Template { file: file.to_owned(), key: name.to_owned(), reason };
    env.add_template_owned(name.to_owned(), source).map_err(|e| err(e.to_string()))?;
    let template = env.get_template(name).map_err(|e| err(e.to_string()))?;
    let mut unknown: Vec<String> =
        template.undeclared_variables(false).into_iter().filter(|v| !vars.contains(&v.as_str())).collect();
    unknown.sort();
    if let Some(placeholder) = unknown.into_iter().next() {
        return Err(PromptError::Placeholder {
            file: file.to_owned(),
            key: name.to_owned(),
            placeholder,
            known: if vars.is_empty() { "none".into() } else { vars.join(", ") },
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str =
        "[[rule]]\nid = \"tbd\"\nstep = \"owner\"\npattern = \"(?i)tbd\"\nfollowup = \"Who, for {{ pilot }}?\"\n";

    fn messages_with(edit: impl Fn(&mut toml::Table)) -> String {
        let mut table: toml::Table = toml::from_str(EMBEDDED_MESSAGES).unwrap();
        edit(&mut table);
        toml::to_string(&table).unwrap()
    }

    fn load(messages: &str, rules: &str) -> Result<Prompts, PromptError> {
        Prompts::from_sources((Path::new("m.toml"), messages), (Path::new("v.toml"), rules))
    }

    #[test]
    fn the_shipped_prompts_load() {
        let p = Prompts::embedded().unwrap();
        assert!(p.rules().iter().count() >= 8);
        assert!(p.render(Key::AskWorkflow, minijinja::context! { pilot => "Claims triage" }).contains("Claims triage"));
    }

    #[test]
    fn a_missing_key_names_file_and_key() {
        let m = messages_with(|t| {
            t["ask"].as_table_mut().unwrap().remove("owner");
        });
        let err = load(&m, RULES).unwrap_err().to_string();
        assert_eq!(err, "m.toml: missing key `ask.owner`");
    }

    #[test]
    fn an_unknown_placeholder_or_key_is_refused() {
        let m = messages_with(|t| {
            t["ask"].as_table_mut().unwrap().insert("owner".into(), "Who owns {{ pilt }}?".into());
        });
        let err = load(&m, RULES).unwrap_err().to_string();
        assert!(err.starts_with("m.toml: key `ask.owner`: unknown placeholder `pilt`"), "{err}");
        let m = messages_with(|t| {
            t["ask"].as_table_mut().unwrap().insert("ownr".into(), "typo".into());
        });
        assert_eq!(
            load(&m, RULES).unwrap_err().to_string(),
            "m.toml: unknown key `ask.ownr` (no code uses it; a typo?)"
        );
    }

    #[test]
    fn a_template_that_cannot_render_stops_the_start_naming_file_and_key() {
        for (template, why) in [
            ("{{ pilot | no_such_filter }}", "unknown filter"),
            ("{{ pilot + 1 }}", "arithmetic on text"),
            ("{% for x in pilot %}{{ x.name.first }}{% endfor %}", "an attribute text has not"),
        ] {
            let messages = messages_with(|t| {
                t["ask"].as_table_mut().unwrap().insert("owner".into(), toml::Value::String(template.into()));
            });
            let err = load(&messages, RULES).unwrap_err().to_string();
            assert!(err.starts_with("m.toml: key `ask.owner`: template cannot render"), "{why}: {err}");
        }
        // Numbers are numbers and lists are lists: arithmetic on a count and a loop over a list render.
        let messages = messages_with(|t| {
            t["list"].as_table_mut().unwrap().insert("more".into(), toml::Value::String("{{ count + 1 }} more".into()));
        });
        assert!(load(&messages, RULES).is_ok());
        let rules = "[[rule]]\nid = \"x\"\nstep = \"owner\"\npattern = \"x\"\nfollowup = \"{{ answer | nope }}\"\n";
        let err = load(&messages_with(|_| {}), rules).unwrap_err().to_string();
        assert!(err.contains("rule") || err.contains("vagueness.x"), "{err}");
    }

    #[test]
    fn a_bad_rule_is_refused() {
        let m = messages_with(|_| {});
        let err = load(&m, &RULES.replace("(?i)tbd", "(unclosed")).unwrap_err().to_string();
        assert!(err.starts_with("v.toml: rule `tbd`: pattern does not compile"), "{err}");
        let err = load(&m, &RULES.replace("\"owner\"", "\"budget\"")).unwrap_err().to_string();
        assert!(err.starts_with("v.toml: rule `tbd`: unknown step `budget`"), "{err}");
        let err = load(&m, &RULES.replace("{{ pilot }}", "{{ owner }}")).unwrap_err().to_string();
        assert!(err.contains("unknown placeholder `owner`"), "{err}");
    }
}
