//! What the CLI prints, and where: with `--output json` exactly one JSON
//! document on stdout (a program can parse it whole); with `--output
//! table`, tables for people. Progress bars and spinners go to stderr and
//! are drawn only when stderr is a terminal and the output is a table, so
//! they never mix into what a program reads.
//!
//! Tables are comfy-table's (without its terminal feature: no crossterm,
//! only unicode-width and unicode-segmentation, which the tree already
//! builds), in a borderless style like `kubectl get` and `docker ps`, so
//! they read well and `grep`/`awk` still work on them.

use std::io::IsTerminal;
use std::time::Duration;

use comfy_table::presets::NOTHING;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::cli::Output;

/// Prints `value` as the one JSON document of this command's stdout.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A table with these column headers, in the CLI's style.
pub fn table<const N: usize>(headers: [&str; N]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers);
    // The preset pads each cell by one on both sides; the first column
    // starts at the margin.
    if let Some(first) = table.column_mut(0) {
        first.set_padding((0, 1));
    }
    table
}

/// Right-aligns the columns at `indexes` (numbers).
pub fn align_right(table: &mut Table, indexes: &[usize]) {
    for &i in indexes {
        if let Some(column) = table.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// Prints a table, each line without trailing blanks.
pub fn print_table(table: &Table) {
    for line in table.lines() {
        println!("{}", line.trim_end());
    }
}

/// A cell for an optional value: `-` when absent.
pub fn or_dash(value: Option<impl ToString>) -> Cell {
    Cell::new(value.map_or_else(|| "-".to_owned(), |v| v.to_string()))
}

/// The API's name of an enum value (`timed_out`, `high`).
pub fn wire_name(value: impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// How long ago `at_ms` was, in the largest whole unit: `42s`, `5m`,
/// `3h`, `2d`.
pub fn age(at_ms: u64, now_ms: u64) -> String {
    let secs = now_ms.saturating_sub(at_ms) / 1000;
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn draw_target(output: Output) -> ProgressDrawTarget {
    if output == Output::Table && std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// A progress bar of `len` steps on stderr; `template` is indicatif's.
pub fn progress_bar(len: u64, template: &str, output: Output) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), draw_target(output));
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// A spinner on stderr showing `message`, for waits of unknown length.
pub fn spinner(message: String, output: Output) -> ProgressBar {
    let spinner = ProgressBar::with_draw_target(None, draw_target(output));
    spinner.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.set_message(message);
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_in_the_largest_whole_unit() {
        let now = 10 * 86_400_000;
        assert_eq!(age(now - 999, now), "0s");
        assert_eq!(age(now - 59_000, now), "59s");
        assert_eq!(age(now - 61_000, now), "1m");
        assert_eq!(age(now - 7_200_000, now), "2h");
        assert_eq!(age(now - 3 * 86_400_000, now), "3d");
        assert_eq!(age(now + 5, now), "0s", "a clock behind the node's");
    }

    #[test]
    fn tables_start_at_the_margin_without_borders() {
        let mut t = table(["ID", "STATE"]);
        t.add_row(vec!["a1", "running"]);
        let lines: Vec<String> = t.lines().map(|l| l.trim_end().to_owned()).collect();
        assert_eq!(lines, ["ID  STATE", "a1  running"]);
    }
}
