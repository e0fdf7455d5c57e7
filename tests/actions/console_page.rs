//! The console's page in a real browser: headless Chromium loads each page of a console served
//! over loopback, runs its script against the JSON API, and the rendered document is checked —
//! the overview with its charts, a store, an aggregate's timeline with the state after each
//! event, the log, consumers' lag, dead letters with their buttons, queues — and text from the
//! store that looks like markup is shown as text, never run.
//!
//! The browser is `ANNALS_BROWSER`, else `chromium`, `chromium-browser` or `google-chrome` on
//! the `PATH` (Debian: `apt-get install chromium`). Without one the test says so and passes,
//! unless `ANNALS_REQUIRE_BROWSER=1` (set by CI), which makes it fail. With
//! `ANNALS_CONSOLE_SCREENSHOTS=DIR` it also saves a screenshot of each page in `DIR`.
//!
//! A second test drives the page through Chromium's WebDriver server (`chromedriver`, spoken
//! to in plain JSON over HTTP): the token typed into the page, the Retry and Drop buttons of
//! the dead letters, and the live tail showing an event committed after it started.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use annals::action::http::serve;
use annals::action::{ActionContext, ActionError, EventAction, RetryPolicy, dead_letter};
use annals::admin::Console;
use annals::queue::Queue;
use annals::state::StateStore;
use annals::storage::{LogAdapter, LoggedEvent, StorageAdapter};
use annals::{NewEvent, codec};
use serde_json::{Value, json};

use super::{Caught, PokemonEvent, appear, pokemons, within};

/// How long the page's script may run (in the browser's virtual time) before the document is
/// read: its requests to the console finish well within it.
const SCRIPT_BUDGET_MS: u32 = 3_000;

/// The browser to drive, if there is one.
fn browser() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ANNALS_BROWSER") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| {
            ["chromium", "chromium-browser", "google-chrome"].map(|name| dir.join(name))
        })
        .find(|candidate| candidate.is_file())
}

/// Runs the browser headless on `url`: the document once the script ran, and a screenshot
/// into `screenshot` when given.
async fn render(browser: &Path, profile: &Path, url: &str, screenshot: Option<PathBuf>) -> String {
    let mut command = tokio::process::Command::new(browser);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={SCRIPT_BUDGET_MS}"))
        .kill_on_drop(true);
    match screenshot {
        Some(path) => command.arg(format!("--screenshot={}", path.display())),
        None => command.arg("--dump-dom"),
    };
    let output = within("the browser", command.arg(url).output())
        .await
        .expect("the browser runs");
    assert!(
        output.status.success(),
        "the browser failed on {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("the document is UTF-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_in_a_headless_browser_and_shows_markup_as_text() {
    let Some(browser) = browser() else {
        let required = std::env::var("ANNALS_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "ANNALS_REQUIRE_BROWSER=1 but no browser: install chromium or set ANNALS_BROWSER"
        );
        eprintln!(
            "skipped: no headless browser (install chromium, or set ANNALS_BROWSER); \
             ANNALS_REQUIRE_BROWSER=1 makes this a failure"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        LogAdapter::builder(dir.path().join("store"))
            .open()
            .unwrap(),
    );
    let adapter: Arc<dyn StorageAdapter> = log.clone();
    let state = Arc::new(StateStore::in_memory());
    let store = pokemons(&adapter);
    appear(&store, "pikachu", "Pikachu").await;
    let caught = PokemonEvent::Caught(Caught {
        trainer: "ash".into(),
    });
    store
        .push_event(NewEvent::new("pikachu", 2, caught), Default::default())
        .await
        .unwrap();
    // Text that a page parsing it as HTML would run.
    appear(&store, "mallory", "<img src=x onerror=alert(1)>").await;
    let action = EventAction::new("ocr", |_: LoggedEvent, _: ActionContext| async {
        Err(ActionError::permanent("not a document"))
    })
    .retry_policy(RetryPolicy {
        base: Duration::from_millis(1),
        max: Duration::from_millis(1),
        attempts: 1,
    });
    let last = appear(&store, "eevee", "Eevee").await;
    let runner = action.spawn(adapter.clone(), state.clone()).unwrap();
    within("the action", runner.wait_past(last)).await.unwrap();
    runner.stop().await.unwrap();
    state.set_checkpoint("mailer", 2).unwrap();
    let queue = Queue::open(state.clone(), "emails");
    queue.enqueue(codec::encode(&json!({})).unwrap()).unwrap();

    let router = Console::for_log(log)
        .state(state)
        .store(&store)
        .queue(queue)
        .router()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, router));

    let screenshots = std::env::var_os("ANNALS_CONSOLE_SCREENSHOTS").map(PathBuf::from);
    let pages: [(&str, &str, &[&str]); 7] = [
        (
            "overview",
            "",
            &["Head position", "<svg", "POKEMONS", "mailer"],
        ),
        (
            "store",
            "#/store/POKEMONS",
            &["#/aggregate/POKEMONS/pikachu", "mallory"],
        ),
        (
            "aggregate",
            "#/aggregate/POKEMONS/pikachu",
            &["POKEMON_CAUGHT", "state after", "\"caught_by\": \"ash\""],
        ),
        ("log", "#/log", &["POKEMON_APPEARED", "position 4"]),
        (
            "consumers",
            "#/consumers",
            &["mailer", "lagging", "Verify the log"],
        ),
        (
            "dead-letters",
            "#/dead-letters",
            &["not a document", ">Retry<", ">Drop<"],
        ),
        ("workers", "#/workers", &["emails"]),
    ];
    for (name, fragment, expected) in pages {
        let profile = tempfile::tempdir().unwrap();
        let url = format!("{base}{fragment}");
        let document = render(&browser, profile.path(), &url, None).await;
        for text in expected {
            assert!(
                document.contains(text),
                "{name}: {text:?} missing from\n{document}"
            );
        }
        assert!(
            document.contains("<p id=\"status\" role=\"status\"></p>"),
            "{name}: the page reported an error\n{document}"
        );
        if let Some(dir) = &screenshots {
            let path = std::path::absolute(dir.join(format!("{name}.png"))).unwrap();
            render(&browser, profile.path(), &url, Some(path)).await;
        }
    }

    // The payload that looks like an image tag is text in the timeline, not an element.
    let profile = tempfile::tempdir().unwrap();
    let url = format!("{base}#/aggregate/POKEMONS/mallory");
    let document = render(&browser, profile.path(), &url, None).await;
    assert!(
        document.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{document}"
    );
    assert!(!document.contains("<img"), "{document}");
}

/// The WebDriver server, if there is one: `ANNALS_CHROMEDRIVER`, else `chromedriver` on the
/// `PATH` (Debian: `apt-get install chromium-driver`).
fn chromedriver() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ANNALS_CHROMEDRIVER") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromedriver"))
        .find(|candidate| candidate.is_file())
}

/// A browser session through the W3C WebDriver protocol (JSON over HTTP), spoken with the
/// tests' HTTP client.
struct Session {
    client: reqwest::Client,
    url: String,
}

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Session {
    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let request = self.client.request(method, format!("{}{path}", self.url));
        let request = if body.is_null() {
            request
        } else {
            request.json(&body)
        };
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, body).await
    }

    /// The element matching the XPath `xpath`, waiting for the page's script to render it.
    async fn element(&self, xpath: &str) -> String {
        within(&format!("the element {xpath}"), async {
            loop {
                let found = self
                    .post("/element", json!({ "using": "xpath", "value": xpath }))
                    .await;
                if let Some(id) = found[ELEMENT].as_str() {
                    return id.to_owned();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
    }

    async fn click(&self, xpath: &str) {
        let element = self.element(xpath).await;
        self.post(&format!("/element/{element}/click"), json!({}))
            .await;
    }

    async fn type_into(&self, xpath: &str, text: &str) {
        let element = self.element(xpath).await;
        self.post(
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    async fn go(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_buttons_retry_and_drop_dead_letters_and_the_tail_shows_new_events() {
    let (Some(browser), Some(driver)) = (browser(), chromedriver()) else {
        let required = std::env::var("ANNALS_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "ANNALS_REQUIRE_BROWSER=1 but no browser and WebDriver: install chromium and \
             chromium-driver, or set ANNALS_BROWSER and ANNALS_CHROMEDRIVER"
        );
        eprintln!(
            "skipped: no headless browser with its WebDriver (install chromium and \
             chromium-driver); ANNALS_REQUIRE_BROWSER=1 makes this a failure"
        );
        return;
    };
    const TOKEN: &str = "a-token-long-enough-for-the-page";
    let adapter = super::in_memory();
    let state = Arc::new(StateStore::in_memory());
    let store = pokemons(&adapter);
    let action = EventAction::new("ocr", |_: LoggedEvent, _: ActionContext| async {
        Err(ActionError::permanent("not a document"))
    })
    .retry_policy(RetryPolicy {
        base: Duration::from_millis(1),
        max: Duration::from_millis(1),
        attempts: 1,
    });
    let first = appear(&store, "pikachu", "Pikachu").await;
    let second = appear(&store, "eevee", "Eevee").await;
    let runner = action.spawn(adapter.clone(), state.clone()).unwrap();
    within("the action", runner.wait_past(second))
        .await
        .unwrap();
    runner.stop().await.unwrap();
    let router = Console::new(adapter)
        .state(state.clone())
        .store(&store)
        .token(TOKEN)
        .router()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, router));

    // The WebDriver server on a free port, stopped with the test.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _driver = tokio::process::Command::new(&driver)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the WebDriver server starts");
    let client = reqwest::Client::new();
    let driver_url = format!("http://127.0.0.1:{port}");
    within("the WebDriver server", async {
        while client
            .get(format!("{driver_url}/status"))
            .send()
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let profile = tempfile::tempdir().unwrap();
    let capabilities = json!({ "capabilities": { "alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": browser,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        },
    } } });
    let created: Value = client
        .post(format!("{driver_url}/session"))
        .json(&capabilities)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {created}"));
    let session = Session {
        client: client.clone(),
        url: format!("{driver_url}/session/{id}"),
    };

    // Retry the first dead letter and drop the second, with the token typed into the page.
    session.go(&format!("{base}#/dead-letters")).await;
    session.type_into("//input[@id='token']", TOKEN).await;
    session.click("(//button[text()='Retry'])[1]").await;
    within("the retry request", async {
        while dead_letter::get(&state, "ocr", first)
            .unwrap()
            .is_none_or(|l| l.retry_requested_at.is_none())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // The page lists the letters again after a mutation: wait for the marked one.
    session.element("//div[text()='retry requested']").await;
    session.click("(//button[text()='Drop'])[2]").await;
    within("the drop", async {
        while dead_letter::get(&state, "ocr", second).unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(dead_letter::get(&state, "ocr", first).unwrap().is_some());

    // The live tail shows an event committed after it started.
    session.go(&format!("{base}#/tail")).await;
    session.click("//button[text()='Start']").await;
    session
        .element("//span[text()='following new events']")
        .await;
    appear(&store, "snorlax", "Snorlax").await;
    session.element("//a[text()='POKEMONS / snorlax']").await;

    session
        .command(reqwest::Method::DELETE, "", Value::Null)
        .await;
}
