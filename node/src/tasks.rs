//! `troupe submit` and `troupe tasks list|get|cancel`: tasks from the
//! command line, over the node's HTTP API (`/v1/tasks`).
//!
//! Submissions are built as the API's [`SubmitTask`] and checked by the
//! node, so the CLI accepts exactly what `POST /v1/tasks` does and the
//! node's 422 (`input.ms: "ms" is a required property`) is what the user
//! sees. Problems found before anything is sent — an `--input` that is not
//! JSON, a file that cannot be read — are usage errors (exit code 2).

use std::io::Read as _;
use std::path::Path;
use std::time::{Duration, Instant};

use comfy_table::Cell;
use serde_json::Value;
use troupe_protocol::{now_ms, SubmitTask, TaskAccepted, TaskPage, TaskRecord, TaskState};

use crate::cli::{Output, SubmitArgs, TaskIdArgs, TasksListArgs, UsageError};
use crate::client::Client;
use crate::local::for_each_task;
use crate::output::{
    age, align_right, or_dash, print_json, print_table, progress_bar, spinner, table, wire_name,
};

/// Tasks per request when submitting a file (the node takes up to 1 MiB
/// per request; each request is all-or-nothing).
const FILE_BATCH: usize = 500;

/// How often `--wait` asks for the task's state.
const WAIT_POLL: Duration = Duration::from_millis(200);

/// Reads `@path`, `-` (stdin) or the text itself.
fn read_source(spec: &str, what: &str) -> Result<String, UsageError> {
    if spec == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| UsageError(format!("{what}: reading stdin: {e}")))?;
        return Ok(text);
    }
    match spec.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("{what}: cannot read {path}: {e}"))),
        None => Ok(spec.to_owned()),
    }
}

/// `--input`: JSON text, `@file` or `-`; `null` when absent.
fn input(args: &SubmitArgs) -> Result<Value, UsageError> {
    let Some(spec) = &args.input else {
        return Ok(Value::Null);
    };
    let text = read_source(spec, "--input")?;
    serde_json::from_str(&text).map_err(|e| {
        UsageError(format!(
            "--input is not JSON ({e}); quote strings as JSON, e.g. --input '\"hello\"'"
        ))
    })
}

/// The one submission the flags describe.
fn from_flags(args: &SubmitArgs, kind: &str) -> Result<SubmitTask, UsageError> {
    let mut task = SubmitTask {
        kind: kind.to_owned(),
        version: args.version_req.clone(),
        input: input(args)?,
        key: args.key.clone(),
        timeout_ms: args.timeout_ms,
        ..SubmitTask::default()
    };
    if let Some(priority) = args.priority {
        task.priority = priority;
    }
    if let Some(retries) = args.max_retries {
        task.max_retries = retries;
    }
    Ok(task)
}

/// Every submission of a file: a JSON array, one JSON object, or NDJSON.
fn from_file(path: &Path) -> Result<Vec<SubmitTask>, UsageError> {
    let spec = path.to_string_lossy();
    let source = if spec == "-" {
        "-".to_owned()
    } else {
        format!("@{spec}")
    };
    let text = read_source(&source, "--file")?;
    let trimmed = text.trim_start();
    let tasks = if trimmed.starts_with('[') {
        serde_json::from_str::<Vec<SubmitTask>>(trimmed)
            .map_err(|e| UsageError(format!("--file {spec}: {e}")))?
    } else {
        serde_json::Deserializer::from_str(trimmed)
            .into_iter::<SubmitTask>()
            .enumerate()
            .map(|(i, task)| task.map_err(|e| UsageError(format!("--file {spec}: task {i}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?
    };
    if tasks.is_empty() {
        return Err(UsageError(format!("--file {spec}: no tasks in it")));
    }
    Ok(tasks)
}

/// `troupe submit`.
pub fn submit(args: &SubmitArgs, client: &Client, output: Output) -> anyhow::Result<()> {
    match (&args.kind, &args.file) {
        (Some(kind), _) => {
            let task = from_flags(args, kind)?;
            let accepted: TaskAccepted = client.post(
                "/v1/tasks",
                "application/json",
                &serde_json::to_string(&task)?,
            )?;
            if args.wait {
                return wait(client, &accepted.id, output);
            }
            match output {
                Output::Json => print_json(&accepted),
                Output::Table => {
                    println!("{}", accepted.id);
                    Ok(())
                }
            }
        }
        (None, Some(path)) => submit_file(&from_file(path)?, client, output),
        // clap requires one of the two.
        (None, None) => Err(UsageError("--kind or --file is required".into()).into()),
    }
}

fn submit_file(tasks: &[SubmitTask], client: &Client, output: Output) -> anyhow::Result<()> {
    let bar = progress_bar(
        tasks.len() as u64,
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} submitted",
        output,
    );
    let mut accepted: Vec<TaskAccepted> = Vec::with_capacity(tasks.len());
    for (n, batch) in tasks.chunks(FILE_BATCH).enumerate() {
        let reply: Vec<TaskAccepted> = client
            .post(
                "/v1/tasks",
                "application/json",
                &serde_json::to_string(batch)?,
            )
            .map_err(|e| {
                let first = n * FILE_BATCH;
                anyhow::Error::new(e).context(format!(
                    "tasks {first}..{} refused ({} before them were submitted)",
                    first + batch.len(),
                    accepted.len()
                ))
            })?;
        bar.inc(reply.len() as u64);
        accepted.extend(reply);
    }
    bar.finish_and_clear();
    match output {
        Output::Json => print_json(&accepted),
        Output::Table => {
            let mut t = table(["ID", "OWNER", "NEW"]);
            for a in &accepted {
                t.add_row(vec![
                    a.id.as_str(),
                    a.owner.as_str(),
                    if a.created { "yes" } else { "no (same key)" },
                ]);
            }
            print_table(&t);
            Ok(())
        }
    }
}

/// Bytes escaped in a path segment: all but letters, digits, `-`, `_`, `.`.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

/// The API path of task `id`, whatever characters the user typed.
fn task_path(id: &str) -> String {
    let segment = percent_encoding::utf8_percent_encode(id, SEGMENT);
    format!("/v1/tasks/{segment}")
}

/// Waits for task `id` to finish, prints it; Err unless it succeeded.
fn wait(client: &Client, id: &str, output: Output) -> anyhow::Result<()> {
    let spinner = spinner(format!("task {id}: submitted"), output);
    let began = Instant::now();
    let record = loop {
        let record: TaskRecord = client.get(&task_path(id))?;
        if record.state.is_terminal() {
            break record;
        }
        spinner.set_message(format!(
            "task {id}: {} (attempt {})",
            wire_name(record.state),
            record.attempts.len()
        ));
        std::thread::sleep(WAIT_POLL);
    };
    spinner.finish_and_clear();
    match output {
        Output::Json => print_json(&record)?,
        Output::Table => {
            if let Some(result) = &record.result {
                println!("{}", serde_json::to_string_pretty(result)?);
            }
        }
    }
    anyhow::ensure!(
        record.state == TaskState::Succeeded,
        "task {id} {} after {:.1} s: {}",
        wire_name(record.state),
        began.elapsed().as_secs_f64(),
        record.error.as_deref().unwrap_or("no reason given")
    );
    Ok(())
}

/// `troupe tasks list`.
pub fn list(args: &TasksListArgs, client: &Client, output: Output) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.limit >= 1,
        UsageError("--limit must be at least 1".into())
    );
    let mut query = format!("limit={}", args.limit);
    if let Some(state) = args.state {
        query.push_str(&format!("&state={}", wire_name(state)));
    }
    let page = if args.all {
        let mut tasks = Vec::new();
        for_each_task(client, &query, |task| tasks.push(task))?;
        TaskPage {
            tasks,
            next_cursor: None,
        }
    } else {
        client.get(&format!("/v1/tasks?{query}"))?
    };
    match output {
        Output::Json => print_json(&page),
        Output::Table => {
            let now = now_ms();
            let mut t = table([
                "ID", "KIND", "STATE", "PRIORITY", "OWNER", "ATTEMPTS", "AGE",
            ]);
            align_right(&mut t, &[5, 6]);
            for task in &page.tasks {
                t.add_row(vec![
                    Cell::new(&task.id),
                    Cell::new(&task.kind),
                    Cell::new(wire_name(task.state)),
                    Cell::new(wire_name(task.priority)),
                    Cell::new(&task.owner),
                    Cell::new(task.attempts.len()),
                    Cell::new(age(task.submitted_at_ms, now)),
                ]);
            }
            print_table(&t);
            if let Some(cursor) = &page.next_cursor {
                eprintln!("more: --all, or the API's ?cursor={cursor}");
            }
            Ok(())
        }
    }
}

/// `troupe tasks get`.
pub fn get(args: &TaskIdArgs, client: &Client, output: Output) -> anyhow::Result<()> {
    let record: TaskRecord = client.get(&task_path(&args.id))?;
    match output {
        Output::Json => print_json(&record),
        Output::Table => print_record(&record),
    }
}

/// `troupe tasks cancel`.
pub fn cancel(args: &TaskIdArgs, client: &Client, output: Output) -> anyhow::Result<()> {
    let record: TaskRecord = client.delete(&task_path(&args.id))?;
    match output {
        Output::Json => print_json(&record),
        Output::Table => print_record(&record),
    }
}

/// A task as a field/value table, then its attempts, result and error.
fn print_record(r: &TaskRecord) -> anyhow::Result<()> {
    let now = now_ms();
    let mut fields = table(["FIELD", "VALUE"]);
    let ms = |v: Option<u64>| v.map(|v| format!("{v} ms"));
    fields
        .add_row(vec![Cell::new("id"), Cell::new(&r.id)])
        .add_row(vec![Cell::new("kind"), Cell::new(&r.kind)])
        .add_row(vec![Cell::new("version"), or_dash(r.version.as_ref())])
        .add_row(vec![Cell::new("state"), Cell::new(wire_name(r.state))])
        .add_row(vec![
            Cell::new("priority"),
            Cell::new(wire_name(r.priority)),
        ])
        .add_row(vec![Cell::new("owner"), Cell::new(&r.owner)])
        .add_row(vec![Cell::new("key"), Cell::new(&r.key)])
        .add_row(vec![
            Cell::new("submitted"),
            Cell::new(format!("{} ago", age(r.submitted_at_ms, now))),
        ])
        .add_row(vec![
            Cell::new("finished"),
            or_dash(r.finished_at_ms.map(|at| format!("{} ago", age(at, now)))),
        ])
        .add_row(vec![Cell::new("timeout"), or_dash(ms(r.timeout_ms))])
        .add_row(vec![Cell::new("max retries"), Cell::new(r.max_retries)])
        .add_row(vec![Cell::new("input"), Cell::new(r.input.to_string())]);
    if !r.depends_on.is_empty() {
        fields.add_row(vec![
            Cell::new("depends on"),
            Cell::new(r.depends_on.join(", ")),
        ]);
    }
    if let Some(result) = &r.result {
        fields.add_row(vec![Cell::new("result"), Cell::new(result.to_string())]);
    }
    if let Some(error) = &r.error {
        fields.add_row(vec![Cell::new("error"), Cell::new(error)]);
    }
    print_table(&fields);
    if !r.attempts.is_empty() {
        println!();
        let mut attempts = table(["ATTEMPT", "NODE", "STARTED", "RAN", "OUTCOME"]);
        align_right(&mut attempts, &[0, 3]);
        for a in &r.attempts {
            attempts.add_row(vec![
                Cell::new(a.number),
                Cell::new(&a.node),
                Cell::new(format!("{} ago", age(a.started_at_ms, now))),
                or_dash(
                    a.finished_at_ms
                        .map(|end| format!("{} ms", end.saturating_sub(a.started_at_ms))),
                ),
                or_dash(a.outcome.as_ref()),
            ]);
        }
        print_table(&attempts);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_id_stays_one_path_segment() {
        assert_eq!(
            task_path("0192f0e8-7b1c-7d2a_x.y"),
            "/v1/tasks/0192f0e8-7b1c-7d2a_x.y"
        );
        assert_eq!(task_path("a/b?c#d e"), "/v1/tasks/a%2Fb%3Fc%23d%20e");
    }
}
