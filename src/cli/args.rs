//! The command line: every subcommand and option, with help written for the operator running a
//! breach campaign. What each command does lives in [`crate::cli`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "breach-notifier",
    version,
    about = "Send legally required data-breach notices by email, and prove that you did.",
    long_about = "breach-notifier takes the list of people affected by a data breach from a database queue, \
sends each one the campaign's notice by email in rate-limited waves, and records what happened to every \
single one (sent, deferred and retried, or failed and flagged for a letter).\n\n\
Configuration is read from config/default.toml (when present in the working directory), then the file \
given with --config or BREACH_NOTIFIER_CONFIG, then environment variables BREACH_NOTIFIER__SECTION__KEY. \
Run `breach-notifier check-config` to see the result."
)]
pub struct Cli {
    /// Configuration file (TOML) layered over the defaults.
    #[arg(
        long,
        short = 'c',
        global = true,
        value_name = "FILE",
        env = "BREACH_NOTIFIER_CONFIG"
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the dispatcher daemon: send the notices of every running campaign until stopped.
    ///
    /// Claims due recipients from the queue, sends their notices through the configured transport
    /// under the rate limits, and records every attempt. Stop it with SIGTERM or Ctrl-C: it stops
    /// claiming, finishes or releases what is in flight, and exits 0.
    Run,

    /// Create or upgrade the database schema. Run it once after installing or upgrading.
    ///
    /// Safe to run again: it applies only what is missing. Every other command refuses a database
    /// whose schema is not the one this binary expects.
    Migrate,

    /// Print the effective configuration (secrets redacted) and check it; exit non-zero on any error.
    CheckConfig,

    /// Show each campaign's progress: state, total, and how many recipients are queued, deferred,
    /// sent, failed, cancelled or waiting for a letter (postal).
    Status(StatusArgs),

    /// Load a list of affected customers (CSV) into a campaign's queue.
    Import(ImportArgs),

    /// Create, inspect and control campaigns (one notice text, one audience).
    #[command(subcommand)]
    Campaign(CampaignCommand),

    /// Print the exact message (headers and both parts) one customer would receive.
    Preview {
        #[arg(long, value_name = "ID")]
        campaign: i64,
        /// The customer_id from the imported list.
        #[arg(long, value_name = "CUSTOMER_ID")]
        customer: String,
    },

    /// Send rendered samples of a campaign's notice to seed addresses (your own mailboxes) through the
    /// configured transport, without touching any recipient's status.
    TestSend {
        #[arg(long, value_name = "ID")]
        campaign: i64,
        /// Seed addresses to send the samples to.
        #[arg(long = "to", value_name = "ADDRESS", required = true, num_args = 1..)]
        to: Vec<String>,
        /// Render the sample for this customer (default: one real recipient per locale and per
        /// `[by_jurisdiction]` notice).
        #[arg(long, value_name = "CUSTOMER_ID")]
        customer: Option<String>,
    },

    /// Write evidence (one line per recipient with every attempt) or the postal follow-up list.
    #[command(subcommand)]
    Export(ExportCommand),

    /// Asynchronous bounces: take one in from an MTA, process what is stored, manage the guard.
    #[command(subcommand)]
    Bounce(BounceCommand),

    /// The jurisdiction rules: deadlines, regulators, thresholds, content rules, and their sources.
    #[command(subcommand)]
    Rules(RulesCommand),

    /// Reports for counsel: which regulators and credit bureaus must hear, by when, with what.
    #[command(subcommand)]
    Report(ReportCommand),

    /// Run the whole thing end to end on the embedded default (SQLite, .eml files in ./outbox/), with
    /// the example campaign and 1,000 synthetic customers.
    Demo {
        /// Also serve the status page (on http.listen, 127.0.0.1:9187 by default) and send slowly
        /// (20 a second) so that it moves; prints an operator token for its actions. Runs until
        /// Ctrl-C.
        #[arg(long)]
        serve: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Print what applies in a jurisdiction and where it came from (shipped rules or the file named
    /// by rules.file); without a code, a table of every jurisdiction. Needs no database. Not legal
    /// advice: a starting point for counsel (docs/rules.md).
    Show(RulesShowArgs),
}

#[derive(Debug, Args)]
pub struct RulesShowArgs {
    /// A code as recipients carry it: US-CA, US-FED-HIPAA, EU-DE, GB, CA-ON.
    #[arg(value_name = "JURISDICTION")]
    pub jurisdiction: Option<String>,
    /// Machine-readable output (JSON).
    #[arg(long, conflicts_with = "toml")]
    pub json: bool,
    /// The entry in the rules-file format: copy it into your rules.file and edit it there.
    #[arg(long, requires = "jurisdiction")]
    pub toml: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this campaign.
    #[arg(value_name = "CAMPAIGN_ID")]
    pub campaign: Option<i64>,
    /// Machine-readable output: one JSON array of campaign objects.
    #[arg(long)]
    pub json: bool,
    /// Refresh every few seconds until interrupted.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Evidence for regulators: per recipient, customer id, channel, final status, every attempt's time,
    /// SMTP code and reply, Message-ID, and the campaign's template content hash.
    Evidence(ExportArgs),
    /// Everyone who needs a letter (no email, no electronic consent, or a permanent email failure), with
    /// their postal address, for a print-and-mail vendor.
    Postal(ExportArgs),
}

#[derive(Debug, Subcommand)]
pub enum BounceCommand {
    /// Store one bounce read from standard input (an MTA's pipe transport: docs/bounces.md). Exits 0
    /// once it is stored (or was stored before), 75 (EX_TEMPFAIL, "try again later") when it cannot
    /// be, so the MTA keeps it; never refuses a message it cannot parse.
    Ingest {
        /// The envelope recipient the MTA delivered it to (Postfix: `${original_recipient}`).
        #[arg(long, value_name = "ADDRESS")]
        envelope_to: Option<String>,
    },
    /// Process the stored reports now (the daemon does this every `bounces.poll_seconds`).
    Process,
    /// Make every report processed by an older classifier pending again, to be classified anew.
    Reclassify,
    /// List the domains held by the guard against mass false failures.
    Guards,
    /// Clear a guard once the cause is fixed: its held recipients are emailed again.
    ClearGuard {
        #[arg(long, value_name = "ID")]
        campaign: i64,
        /// The receiving domain, as `bounce guards` shows it.
        #[arg(long)]
        domain: String,
        /// Why (recorded in the campaign's events).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(long, value_name = "ID")]
    pub campaign: i64,
    /// Output file (default: standard output).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// csv or jsonl.
    #[arg(long, default_value = "csv", value_parser = ["csv", "jsonl"])]
    pub format: String,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The campaign to add the recipients to.
    #[arg(long, value_name = "ID")]
    pub campaign: i64,
    /// The CSV file, or `-` for standard input.
    #[arg(value_name = "FILE.csv")]
    pub file: PathBuf,
    /// Write every rejected row, with its line number and the reason, to this CSV file.
    #[arg(long, value_name = "REJECTS.csv")]
    pub rejects: Option<PathBuf>,
    /// Validate and count, but store nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Store a campaign file (TOML) and its templates as a new draft campaign; prints its id.
    Create {
        #[arg(value_name = "FILE.toml")]
        file: PathBuf,
    },
    /// List every campaign with its state.
    List,
    /// Show one campaign: definition, state, and its history of state changes.
    Show {
        #[arg(value_name = "ID")]
        id: i64,
    },
    /// Start sending a draft campaign (after validating its templates again, and checking that its
    /// rate, daily cap and waves can meet every jurisdiction's deadline).
    Start(StartArgs),
    /// Stop claiming new work for a running campaign; in-flight notices finish.
    Pause(TransitionArgs),
    /// Resume a paused campaign.
    Resume(TransitionArgs),
    /// Cancel a campaign: recipients not yet notified become `cancelled`. Nothing is deleted.
    Cancel(TransitionArgs),
    /// Release the next wave of a campaign whose wave plan has a `manual` wave waiting.
    ReleaseWave(TransitionArgs),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub transition: TransitionArgs,
    /// Start although the deadline forecast says some jurisdictions would be notified late; the
    /// reason is recorded in the campaign's history with the forecast.
    #[arg(long, value_name = "REASON")]
    pub accept_late: Option<String>,
}

#[derive(Debug, Args)]
pub struct TransitionArgs {
    #[arg(value_name = "ID")]
    pub id: i64,
    /// Why, recorded in the campaign's history.
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Every regulator of the jurisdictions among a campaign's recipients (and of the sector rules)
    /// with its threshold met or not and the count compared, the date its notice is due, the dates
    /// consumer notices went out, what its form asks; credit-bureau duties and substitute notice the
    /// same way. Not legal advice (docs/regulators.md).
    Regulators(ReportArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[arg(long, value_name = "ID")]
    pub campaign: i64,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: ReportFormat,
    /// Count only what happened up to the end of this day (UTC), YYYY-MM-DD: what was known then.
    #[arg(long, value_name = "DATE")]
    pub as_of: Option<chrono::NaiveDate>,
    /// Output file (default: standard output).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Csv,
    Json,
    Md,
}
