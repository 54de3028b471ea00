//! A real headless Chromium, driven over W3C WebDriver through
//! `chromedriver`, for tests of the dashboard page.
//!
//! WebDriver is plain JSON over HTTP, and the harness is synchronous on
//! `ureq`; the five calls the tests need (new session, navigate, run a
//! script, screenshot, end session) are written here rather than pulling an
//! async WebDriver client and its runtime into the harness. Each browser
//! gets its own driver port and profile folder, so tests run in parallel.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::{free_port, wait_until};

/// Debian's Chromium and its driver (packages `chromium`, `chromium-driver`).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium window; quits when dropped.
pub struct Browser {
    driver: Child,
    session: String,
    base: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

fn installed(path: &str) -> &Path {
    let path = Path::new(path);
    assert!(
        path.exists(),
        "{} is missing: install Debian's chromium and chromium-driver (scripts/test does)",
        path.display()
    );
    path
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width`×`height`.
    pub fn start(width: u32, height: u32) -> Self {
        let chromium = installed(CHROMIUM);
        let port = free_port();
        let driver = Command::new(installed(CHROMEDRIVER))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let mut browser = Self {
            driver,
            session: String::new(),
            base,
            agent,
            _profile: tempfile::tempdir().expect("profile dir"),
        };
        wait_until(Duration::from_secs(20), "chromedriver to listen", || {
            browser
                .agent
                .get(&format!("{}/status", browser.base))
                .call()
                .is_ok()
        });
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", browser._profile.path().display()),
                ],
            },
        }}});
        let created = browser.call("POST", "/session", Some(capabilities));
        browser.session = created["sessionId"]
            .as_str()
            .expect("chromedriver answers a session id")
            .to_owned();
        browser
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let request = self.agent.request(method, &url);
        let result = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        let response = match result {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(e) => panic!("webdriver {method} {path}: {e}"),
        };
        let status = response.status();
        let reply: Value = response.into_json().expect("webdriver answers JSON");
        assert!(
            status < 400,
            "webdriver {method} {path}: {status} {}",
            reply["value"]
        );
        reply["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Loads `url`.
    pub fn open(&self, url: &str) {
        self.call(
            "POST",
            &self.session_path("/url"),
            Some(json!({"url": url})),
        );
    }

    /// Runs `script` (a function body: `return …`) in the page and answers
    /// what it returned.
    pub fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.session_path("/execute/sync"),
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Waits until `script` returns `true`.
    pub fn wait_for(&self, timeout: Duration, what: &str, script: &str) {
        wait_until(timeout, what, || self.eval(script) == Value::Bool(true));
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        let encoded = self.call("GET", &self.session_path("/screenshot"), None);
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("a base64 screenshot"))
            .expect("valid base64")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .agent
                .delete(&format!("{}{}", self.base, self.session_path("")))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
