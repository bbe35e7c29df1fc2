//! A real headless Chromium driven over the W3C WebDriver protocol through ChromeDriver
//! (both from Debian's packages: `chromium`, `chromium-driver`), for tests of the web
//! consoles. ChromeDriver listens on a loopback port it chooses itself; the browser runs
//! with a profile of its own in a temporary directory.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};

/// The WebDriver name of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A page element.
#[derive(Debug, Clone)]
pub struct Element(String);

/// One browser session.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

fn program(env: &str, default: &str) -> String {
    std::env::var(env).unwrap_or_else(|_| default.to_owned())
}

impl Browser {
    /// Starts ChromeDriver (on a port it chooses) and returns it with that port, or what
    /// it said instead.
    fn driver() -> Result<(Child, u16), String> {
        let mut driver = Command::new(program("LINTAS_CHROMEDRIVER", "/usr/bin/chromedriver"))
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (Debian package chromium-driver)");
        let mut out = std::io::BufReader::new(driver.stdout.take().unwrap());
        let mut said = String::new();
        for _ in 0..20 {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            said.push_str(&line);
            if let Some(rest) = line.split("started successfully on port ").nth(1)
                && let Ok(port) = rest.trim().trim_end_matches('.').parse()
            {
                // The rest of its output goes nowhere.
                std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
                return Ok((driver, port));
            }
        }
        let _ = driver.kill();
        let _ = driver.wait();
        Err(said)
    }

    /// Where the browser saves what it downloads (a directory of its profile).
    pub fn downloads(&self) -> std::path::PathBuf {
        self._profile.path().join("downloads")
    }

    /// Waits (up to 30 s) until the browser has finished saving `name` in
    /// [`downloads`](Self::downloads), and returns its path. The browser says nothing
    /// when a download ends, so the directory is looked at every 50 ms: the file exists
    /// and no partial download (`.crdownload`) is left.
    pub async fn downloaded(&self, name: &str) -> std::path::PathBuf {
        let path = self.downloads().join(name);
        for _ in 0..600 {
            let partial = std::fs::read_dir(self.downloads())
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().ends_with(".crdownload"))
                })
                .unwrap_or(false);
            if path.is_file() && !partial {
                return path;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let saved: Vec<_> = std::fs::read_dir(self.downloads())
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        panic!("the browser did not save {name}; it saved {saved:?}");
    }

    /// Starts ChromeDriver and a headless Chromium (English, 1366×900).
    pub async fn start() -> Browser {
        // Once, under the whole test suite's load, ChromeDriver ended without saying its
        // port; it is started again (five tries), and what it said is shown if it never
        // starts.
        let mut failures = Vec::new();
        let (driver, port) = loop {
            match Self::driver() {
                Ok(started) => break started,
                Err(said) if failures.len() < 4 => failures.push(said),
                Err(said) => panic!("chromedriver did not start: {failures:?} {said}"),
            }
        };
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-features=Translate,OptimizationHints,MediaRouter",
            "--window-size=1366,900",
            "--lang=en-US",
            &format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let created = browser
            .call(
                "POST",
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "acceptInsecureCerts": true,
                    "goog:chromeOptions": {
                        "binary": program("LINTAS_CHROMIUM", "/usr/bin/chromium"),
                        "args": args,
                        "prefs": {
                            "intl.accept_languages": "en-US,en",
                            "download.default_directory": browser.downloads(),
                            "download.prompt_for_download": false,
                        },
                    },
                }}})),
            )
            .await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        // Finding an element waits up to 10 s for it to appear.
        browser
            .call(
                "POST",
                &browser.at("/timeouts"),
                Some(json!({"implicit": 10_000, "pageLoad": 60_000})),
            )
            .await;
        browser
    }

    /// Does `act` (a click or keys that send a form or follow a link) and returns once
    /// the page it was on has been replaced by the next one: WebDriver does not wait for
    /// a navigation a click or a key starts. Polls the old page's root element until it
    /// is gone, at most 20 s.
    pub async fn navigating<F: std::future::Future<Output = ()>>(&self, act: F) {
        let old = self.find("html").await;
        act.await;
        for _ in 0..400 {
            let probe = self
                .try_call("GET", &self.at(&format!("/element/{}/name", old.0)), None)
                .await;
            // Any error ("stale element reference", "no such element", or Chromium's
            // "does not belong to the document") says the old page is gone.
            match probe {
                Err(_) => return,
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        panic!(
            "the page at {} did not change within 20 s",
            self.url().await
        );
    }

    /// One WebDriver command; its `value`. A WebDriver error panics with its message.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        match self.try_call(method, path, body).await {
            Ok(value) => value,
            Err((error, message)) => panic!("WebDriver {method} {path}: {error}: {message}"),
        }
    }

    /// One WebDriver command; its `value`, or the WebDriver error and its message.
    async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, (String, Value)> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("chromedriver answers");
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("127.0.0.1:{}", self.port))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(60), sender.send_request(request))
            .await
            .expect("WebDriver answers within a minute")
            .unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
        let value = value["value"].clone();
        if let Some(error) = value.get("error").and_then(Value::as_str) {
            return Err((error.to_owned(), value["message"].clone()));
        }
        Ok(value)
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", &self.at("/url"), Some(json!({"url": url})))
            .await;
    }

    pub async fn url(&self) -> String {
        self.call("GET", &self.at("/url"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The elements matching a CSS selector.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self
            .call(
                "POST",
                &self.at("/elements"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|id| Element(id.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The one element matching a CSS selector (panics if there is none).
    pub async fn find(&self, css: &str) -> Element {
        match self.find_all(css).await.into_iter().next() {
            Some(e) => e,
            None => panic!("no element {css} on {}", self.url().await),
        }
    }

    pub async fn click(&self, e: &Element) {
        self.call(
            "POST",
            &self.at(&format!("/element/{}/click", e.0)),
            Some(json!({})),
        )
        .await;
    }

    /// Types `text` into a field (after what it holds).
    pub async fn type_into(&self, e: &Element, text: &str) {
        self.call(
            "POST",
            &self.at(&format!("/element/{}/value", e.0)),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Presses keys (WebDriver key codes, e.g. "\u{E004}" for Tab, "\u{E007}" for Enter)
    /// on the focused element.
    pub async fn keys(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|k| {
                [
                    json!({"type": "keyDown", "value": k.to_string()}),
                    json!({"type": "keyUp", "value": k.to_string()}),
                ]
            })
            .collect();
        self.call(
            "POST",
            &self.at("/actions"),
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        )
        .await;
    }

    /// The element that has the focus.
    pub async fn focused(&self) -> Element {
        let e = self.call("GET", &self.at("/element/active"), None).await;
        match e[ELEMENT].as_str() {
            Some(id) => Element(id.to_owned()),
            None => panic!("no element has the focus: {e}"),
        }
    }

    pub async fn text(&self, e: &Element) -> String {
        self.call("GET", &self.at(&format!("/element/{}/text", e.0)), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn attribute(&self, e: &Element, name: &str) -> Option<String> {
        self.call(
            "GET",
            &self.at(&format!("/element/{}/attribute/{name}", e.0)),
            None,
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    /// The text of the whole page.
    pub async fn page_text(&self) -> String {
        let body = self.find("body").await;
        self.text(&body).await
    }

    /// The cookies the browser holds for the current page: (name, value, http-only,
    /// secure, same-site).
    pub async fn cookies(&self) -> Vec<(String, String, bool, bool, String)> {
        self.call("GET", &self.at("/cookie"), None)
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or_default().to_owned(),
                    c["value"].as_str().unwrap_or_default().to_owned(),
                    c["httpOnly"].as_bool().unwrap_or(false),
                    c["secure"].as_bool().unwrap_or(false),
                    c["sameSite"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    pub async fn delete_cookies(&self) {
        self.call("DELETE", &self.at("/cookie"), None).await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let data = self.call("GET", &self.at("/screenshot"), None).await;
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .unwrap()
    }

    /// Ends the session (the browser quits) and the driver.
    pub async fn quit(mut self) {
        self.call("DELETE", &self.at(""), None).await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
