//! Where the jurisdiction rules meet imports: the import summary's count of jurisdiction codes
//! (unknown ones shown, never dropped).
//!
//! It lives in the command line because the command line is the layer that may use the rules
//! (docs/architecture.md); intake only tallies the codes. Only codes and counts are printed: never a
//! recipient's data.

use std::fmt::Write as _;

use crate::intake::JurisdictionTally;
use crate::rules::Rules;

/// The import summary's lines about jurisdiction codes: how many rows carry a code the rules know,
/// each unknown code with its row count, and rows without one. Rows are imported whatever their code.
pub fn import_codes(rules: &Rules, tally: &JurisdictionTally) -> String {
    let counts = rules.count_code_totals(
        tally.per_code.iter().map(|(c, n)| (c.as_str(), *n)),
        tally.missing,
    );
    let mut out = format!(
        "  jurisdictions: {} rows with a known code ({} codes), {} with an unknown code, {} without one\n",
        counts.known_total(),
        counts.known.len(),
        counts.unknown_total(),
        counts.missing
    );
    if !counts.unknown.is_empty() {
        let _ = writeln!(
            out,
            "  unknown jurisdiction codes (imported all the same; their deadline is the internal target unless rules.file adds them):"
        );
        for (code, rows) in &counts.unknown {
            let _ = writeln!(out, "    {code:<8} {rows:>10} rows");
        }
    }
    out
}
