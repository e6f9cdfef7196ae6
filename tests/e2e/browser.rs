//! A real browser for the console tests: Debian's headless Chromium driven over
//! WebDriver (chromedriver, started on a free loopback port and stopped by its
//! handle). Calls are synchronous: each one runs the WebDriver client on this test's
//! own runtime until it answers.

use super::harness::{free_port, port_listening, wait_until};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Desktop and phone viewports the console must work at.
pub const DESKTOP: (u32, u32) = (1280, 800);
pub const PHONE: (u32, u32) = (390, 844);

/// The browser's console log since the last read (chromedriver's log endpoint).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }
    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(json!({"type": "browser"}).to_string()))
    }
}

/// A Chrome DevTools command (device metrics for the phone viewport).
#[derive(Debug)]
struct Cdp(Value);

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/goog/cdp/execute", session.unwrap_or_default()))
    }
    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.0.to_string()))
    }
}

pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
}

impl Browser {
    pub fn start() -> Browser {
        assert!(
            std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists(),
            "the console tests need Debian's chromium and chromium-driver (.ci/run installs them)"
        );
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        wait_until(Duration::from_secs(20), "chromedriver listening", || port_listening(port));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let caps = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--mute-audio", "--autoplay-policy=no-user-gesture-required",
                    format!("--window-size={},{}", DESKTOP.0, DESKTOP.1)],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let caps = caps.as_object().unwrap().clone();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = rt
            .block_on(ClientBuilder::new(connector).capabilities(caps).connect(&format!("http://127.0.0.1:{port}/")))
            .expect("a Chromium session");
        let b = Browser { rt, client: Some(client), driver };
        b.viewport(DESKTOP);
        b
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    pub fn goto(&self, url: &str) {
        self.rt.block_on(self.c().goto(url)).unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    pub fn path(&self) -> String {
        self.exec("return location.pathname + location.search", vec![]).as_str().unwrap_or_default().to_string()
    }

    /// Run a script in the page; its `return` value.
    pub fn exec(&self, script: &str, args: Vec<Value>) -> Value {
        self.rt.block_on(self.c().execute(script, args)).unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Run an asynchronous script: it calls `arguments[arguments.length - 1]` with its result.
    pub fn exec_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.rt
            .block_on(self.c().execute_async(script, args))
            .unwrap_or_else(|e| panic!("async script failed: {e}\n{script}"))
    }

    pub fn exists(&self, css: &str) -> bool {
        self.exec("return document.querySelector(arguments[0]) !== null", vec![json!(css)]) == json!(true)
    }

    pub fn count(&self, css: &str) -> usize {
        self.exec("return document.querySelectorAll(arguments[0]).length", vec![json!(css)]).as_u64().unwrap_or(0)
            as usize
    }

    pub fn text(&self, css: &str) -> String {
        self.exec("const e = document.querySelector(arguments[0]); return e ? e.textContent : null", vec![json!(css)])
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Click like a user: WebDriver's element click (scrolled into view, hit-tested).
    pub fn click(&self, css: &str) {
        self.rt
            .block_on(async {
                let e = self.c().find(Locator::Css(css)).await?;
                e.click().await
            })
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Type into a field like a user (after clearing it).
    pub fn fill(&self, css: &str, text: &str) {
        self.rt
            .block_on(async {
                let e = self.c().find(Locator::Css(css)).await?;
                e.clear().await?;
                e.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Press keys (WebDriver key codes, e.g. Tab = U+E004, Enter = U+E007) on the
    /// focused element, as a keyboard user would.
    pub fn keys(&self, keys: &str) {
        use fantoccini::actions::InputSource;
        let mut actions = fantoccini::actions::KeyActions::new("keyboard".into());
        for ch in keys.chars() {
            actions = actions
                .then(fantoccini::actions::KeyAction::Down { value: ch })
                .then(fantoccini::actions::KeyAction::Up { value: ch });
        }
        self.rt.block_on(self.c().perform_actions(actions)).expect("press keys");
    }

    /// Choose an option of a `<select>` by value.
    pub fn choose(&self, css: &str, value: &str) {
        self.rt
            .block_on(async {
                let e = self.c().find(Locator::Css(css)).await?;
                e.select_by_value(value).await
            })
            .unwrap_or_else(|e| panic!("choose {value} in {css}: {e}"));
    }

    /// Wait (with a deadline) until a script returns true.
    pub fn wait_for(&self, secs: u64, what: &str, script: &str, args: Vec<Value>) {
        wait_until(Duration::from_secs(secs), what, || self.exec(script, args.clone()) == json!(true));
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.rt.block_on(self.c().get_named_cookie(name)).ok().map(|c| c.value().to_string())
    }

    /// Set the viewport: the desktop window, or a phone's screen (device emulation).
    pub fn viewport(&self, (w, h): (u32, u32)) {
        let mobile = w < 600;
        let cmd = Cdp(json!({"cmd": "Emulation.setDeviceMetricsOverride",
            "params": {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": mobile}}));
        self.rt.block_on(self.c().issue_cmd(cmd)).expect("set the viewport");
    }

    pub fn screenshot(&self, path: &std::path::Path) {
        let png = self.rt.block_on(self.c().screenshot()).expect("screenshot");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Console messages at SEVERE level since the last call.
    pub fn console_errors(&self) -> Vec<String> {
        let v = self.rt.block_on(self.c().issue_cmd(BrowserLog)).expect("read the browser log");
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Assert the page logged no errors (CSP violations, failed loads, exceptions).
    pub fn assert_no_console_errors(&self, page: &str) {
        let errors = self.console_errors();
        assert!(errors.is_empty(), "console errors on {page}: {errors:#?}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), c.close()).await });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
