//! The dashboard in a real headless Chromium: it renders the members, the
//! supervision tree with restart counts, the task figures and the windows
//! of a live 3-node cluster, updates as things change — an actor
//! restarted, a node killed and its tasks moving to the survivors — and
//! the screenshots before and after show it.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;
use troupe_tests::browser::Browser;
use troupe_tests::{wait_until, Cluster};

use crate::IDS;

const PIPELINE: &str = r#"
[[pipelines]]
id = "temps"
event_type = "reading"
key_by = "source"
window = { kind = "tumbling", size_ms = 1000 }
aggregates = [{ op = "count" }, { op = "avg", field = "data.temperature" }]
watermark_delay_ms = 0
"#;
const WIDTH: u32 = 1400;
const HEIGHT: u32 = 1100;
const SETTLE: Duration = Duration::from_secs(30);

/// A decoded screenshot: RGB(A) pixels, row by row.
struct Shot {
    width: u32,
    height: u32,
    channels: usize,
    pixels: Vec<u8>,
}

impl Shot {
    fn decode(png_bytes: &[u8]) -> Self {
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().expect("a PNG");
        let mut pixels = vec![0; reader.output_buffer_size().expect("a sized PNG")];
        let frame = reader.next_frame(&mut pixels).expect("PNG pixels");
        pixels.truncate(frame.buffer_size());
        Self {
            width: frame.width,
            height: frame.height,
            channels: frame.color_type.samples(),
            pixels,
        }
    }

    /// Distinct colours in the whole picture.
    fn colours(&self) -> usize {
        let set: BTreeSet<[u8; 3]> = self
            .pixels
            .chunks(self.channels)
            .map(|p| [p[0], p[1], p[2]])
            .collect();
        set.len()
    }

    /// Mean (red, green) over a rectangle of CSS pixels `[x, y, w, h]`.
    fn red_green(&self, rect: &[f64]) -> (f64, f64) {
        let (x0, y0) = (rect[0].max(0.0) as u32, rect[1].max(0.0) as u32);
        let (x1, y1) = (
            ((rect[0] + rect[2]) as u32).min(self.width),
            ((rect[1] + rect[3]) as u32).min(self.height),
        );
        let (mut red, mut green, mut n) = (0.0, 0.0, 0.0);
        for y in y0..y1 {
            for x in x0..x1 {
                let at = (y as usize * self.width as usize + x as usize) * self.channels;
                red += f64::from(self.pixels[at]);
                green += f64::from(self.pixels[at + 1]);
                n += 1.0;
            }
        }
        assert!(n > 0.0, "empty rectangle {rect:?}");
        (red / n, green / n)
    }
}

/// Where n3's state badge is on the page, in CSS pixels.
fn n3_badge(browser: &Browser) -> Vec<f64> {
    let rect = browser.eval(
        r##"const r = document.querySelector("#members tr[data-member='n3'] .badge").getBoundingClientRect();
           return [r.left, r.top, r.width, r.height, window.devicePixelRatio];"##,
    );
    let rect: Vec<f64> = rect
        .as_array()
        .expect("a rectangle")
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    assert_eq!(rect.get(4), Some(&1.0), "screenshots are in CSS pixels");
    rect
}

fn save(name: &str, png_bytes: &[u8]) {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, png_bytes).expect("save screenshot");
    eprintln!("screenshot: {}", path.display());
}

#[test]
fn the_dashboard_shows_the_cluster_live_and_a_killed_node_going_dead_with_its_tasks_moving() {
    let mut cluster = Cluster::new(3, PIPELINE);
    for id in IDS {
        cluster.start(id, &["--fault-injection"]);
    }
    crate::await_converged(&cluster);

    // Long tasks, spread over the three owners by their keys.
    let tasks: Vec<_> = (0..30)
        .map(|i| json!({"kind": "sleep", "input": {"ms": 120_000}, "key": format!("long-{i}")}))
        .collect();
    let accepted = cluster.post("n1", "/v1/tasks", &json!(tasks).to_string());
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    // Readings over five seconds of event time: four windows close.
    let mut body = String::new();
    for i in 0..50u64 {
        let _ = writeln!(
            body,
            r#"{{"event_id":"e{i}","source":"s{}","event_type":"reading","timestamp":{},"data":{{"temperature":{}}}}}"#,
            i % 2,
            1_767_225_600_000 + i * 100,
            20 + i % 7
        );
    }
    let ingested = cluster.post_as("n1", "/v1/events", "application/x-ndjson", &body);
    assert_eq!(ingested.status, 202, "{}", ingested.text);

    let browser = Browser::start(WIDTH, HEIGHT);
    browser.open(&format!("{}/", cluster.url("n1")));
    browser.wait_for(
        SETTLE,
        "the page to show three live members, the tasks' three owners and closed windows",
        r##"
        const rows = [...document.querySelectorAll("#members tr[data-member]")];
        const owners = [...document.querySelectorAll("#owners [data-owner]")].map(d => d.dataset.owner);
        return rows.length === 3 && rows.every(r => r.dataset.state === "alive")
            && ["n1", "n2", "n3"].every(o => owners.includes(o))
            && document.querySelectorAll("#aggregates tr[data-aggregate='temps']").length >= 2
            && document.querySelector("#pipelines tr[data-pipeline='temps']") !== null
            && document.getElementById("conn").textContent === "live";
        "##,
    );
    let header = browser.eval(
        "return [document.getElementById('cluster').textContent, document.getElementById('node').textContent]",
    );
    assert_eq!(header, json!(["test", "n1"]));
    let shown: u64 = browser
        .eval(
            "return [...document.querySelectorAll('#owners [data-owner]')].reduce((n, d) => n + Number(d.dataset.count), 0)",
        )
        .as_u64()
        .unwrap_or_default();
    assert_eq!(shown, 30, "every unfinished task is counted under an owner");

    // An actor crashed on n1 shows up restarted, with its count.
    let crash = cluster.post("n1", "/v1/actors/node/ingest/shard-0/crash", "");
    assert_eq!(crash.status, 202, "{}", crash.text);
    browser.wait_for(
        SETTLE,
        "the tree to show shard-0 restarted once",
        r##"const li = document.querySelector("#tree li[data-path='node/ingest/shard-0']");
           return li !== null && li.dataset.restarts === "1";"##,
    );
    let before = browser.screenshot();
    save("dashboard-live.png", &before);
    let before = Shot::decode(&before);
    // The viewport: the window less what headless Chromium keeps for itself.
    assert!(
        before.width == WIDTH && before.height > HEIGHT / 2,
        "the screenshot is of the page's viewport: {}x{}",
        before.width,
        before.height
    );
    assert!(
        before.colours() > 50,
        "the page rendered (text, badges, charts): only {} colours",
        before.colours()
    );
    let (red, green) = before.red_green(&n3_badge(&browser));
    assert!(
        green > red + 40.0,
        "n3's badge is green while alive: {red:.0}/{green:.0}"
    );

    cluster.kill("n3");
    browser.wait_for(
        SETTLE,
        "n3 to show dead and its tasks to move to n1 and n2",
        r##"
        const n3 = document.querySelector("#members tr[data-member='n3']");
        const owners = [...document.querySelectorAll("#owners [data-owner]")];
        return n3 !== null && n3.dataset.state === "dead"
            && owners.length > 0 && owners.every(d => d.dataset.owner !== "n3")
            && owners.reduce((n, d) => n + Number(d.dataset.count), 0) === 30;
        "##,
    );
    let after = browser.screenshot();
    save("dashboard-node-dead.png", &after);
    let (red, green) = Shot::decode(&after).red_green(&n3_badge(&browser));
    assert!(
        red > green + 40.0,
        "n3's badge is red once dead: {red:.0}/{green:.0}"
    );
    wait_until(SETTLE, "the API to agree n3 is dead", || {
        cluster.get("n1", "/v1/cluster").body["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["id"] == "n3" && m["state"] == "dead"))
    });
}

#[test]
fn on_a_node_that_protects_reads_the_page_asks_for_a_token_and_then_goes_live() {
    let mut cluster = Cluster::new(
        1,
        r#"
[auth]
required = true
protect_reads = true
tokens = [{ name = "viewer", token = "static-read-token", role = "read" }]
"#,
    );
    cluster.start("n1", &[]);
    assert_eq!(cluster.get("n1", "/v1/dashboard").status, 401);

    let browser = Browser::start(WIDTH, HEIGHT);
    browser.open(&format!("{}/", cluster.url("n1")));
    browser.wait_for(
        SETTLE,
        "the page to ask for a token",
        r#"return getComputedStyle(document.getElementById("auth")).display !== "none"
            && document.getElementById("conn").textContent === "token needed";"#,
    );
    browser.eval(
        r#"document.getElementById("token").value = "wrong-token";
           document.getElementById("use-token").click(); return true;"#,
    );
    browser.wait_for(
        SETTLE,
        "a wrong token to be refused",
        r#"return getComputedStyle(document.getElementById("auth")).display !== "none";"#,
    );
    browser.eval(
        r#"document.getElementById("token").value = "static-read-token";
           document.getElementById("use-token").click(); return true;"#,
    );
    browser.wait_for(
        SETTLE,
        "the page to go live with the read token",
        r##"return Number(document.body.dataset.snapshots || 0) >= 2
            && document.querySelector("#members tr[data-member='n1']") !== null
            && document.getElementById("conn").textContent === "live";"##,
    );
}
