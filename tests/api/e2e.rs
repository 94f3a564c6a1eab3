//! The browsable API in a real browser: headless Chromium, driven through chromedriver
//! (WebDriver), against the real binary on SQLite. It logs in with the form, changes the
//! session limit with the typed settings form, and is told without a reload, through the
//! page's event stream, when a login elsewhere ends its session. Screenshots of the pages go
//! to `target/screenshots/` (`BOUNCER_SCREENSHOTS=docs/screenshots` refreshes the committed ones).
//!
//! The browser comes from `BOUNCER_CHROMIUM` (default `/usr/bin/chromium`) and the driver from
//! `BOUNCER_CHROMEDRIVER` (default `/usr/bin/chromedriver`), Debian's `chromium` and
//! `chromium-driver` packages. Without them the test says it was skipped, unless
//! `BOUNCER_REQUIRE_BROWSER=1` (which `.ci/run` sets, after installing them).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, Server, http};

const ALICE_PASSWORD: &str = "alice's long password";
const KICKED: &str = "The maximum number of allowed sessions for this user has been exceeded.";
/// How long to wait for anything a page should do by itself.
const PATIENCE: Duration = Duration::from_secs(10);
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 900;

/// The browser and its driver, or `None` (and a SKIPPED line) when either is missing.
fn browser_tools() -> Option<(String, String)> {
    let chromium = std::env::var("BOUNCER_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let chromedriver = std::env::var("BOUNCER_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    let runs = |program: &str| {
        std::process::Command::new(program)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let missing: Vec<&str> = [&chromium, &chromedriver].into_iter().filter(|p| !runs(p)).map(String::as_str).collect();
    if missing.is_empty() {
        return Some((chromium, chromedriver));
    }
    assert!(
        std::env::var("BOUNCER_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "BOUNCER_REQUIRE_BROWSER=1 but {missing:?} cannot run (apt-get install chromium chromium-driver, \
         or set BOUNCER_CHROMIUM and BOUNCER_CHROMEDRIVER)"
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED browser test: {missing:?} cannot run (apt-get install chromium chromium-driver, \
         or set BOUNCER_CHROMIUM and BOUNCER_CHROMEDRIVER)"
    );
    None
}

/// chromedriver on a free port, in a process group of its own: dropping it kills the group,
/// so a failed test leaves no browser behind.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Driver {
    async fn start(chromedriver: &str) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = tokio::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{chromedriver} does not start: {e}"));
        let addr = format!("127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        // It listens once it is ready for sessions. (Its /status is no use to `http()`: it
        // keeps the connection open despite `Connection: close`.)
        loop {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "chromedriver did not answer on {addr} within 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Driver { child, url: format!("http://{addr}") }
    }

    /// A new browser with a profile (so a cookie jar) of its own, at 1280x900.
    async fn browser(&self, chromium: &str, profile: &Path) -> Client {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ]
        .map(String::from)
        .into_iter()
        .chain([format!("--user-data-dir={}", profile.display()), format!("--window-size={WIDTH},{HEIGHT}")])
        .collect::<Vec<_>>();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        });
        let Value::Object(capabilities) = capabilities else { unreachable!() };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("chromedriver could not start {chromium}: {e}"));
        // Screenshots are of the viewport: make it WIDTH x HEIGHT, whatever the window's frame takes.
        client.set_window_size(WIDTH, HEIGHT).await.unwrap();
        let frame =
            client.execute("return [outerWidth - innerWidth, outerHeight - innerHeight]", vec![]).await.unwrap();
        let frame = |i: usize| frame[i].as_u64().and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
        client.set_window_size(WIDTH + frame(0), HEIGHT + frame(1)).await.unwrap();
        client
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Where the page is and what it says, for failure messages.
async fn context(browser: &Client) -> String {
    let url = browser.current_url().await.map(|u| u.to_string()).unwrap_or_else(|e| format!("(no url: {e})"));
    let text = browser
        .execute("return document.body ? document.body.innerText : document.documentElement.outerHTML", vec![])
        .await
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let text: String = text.chars().take(1500).collect();
    format!("at {url}, the page says:\n{text}")
}

/// The element that `css` finds, waiting for it up to [`PATIENCE`].
async fn find(browser: &Client, css: &str) -> Element {
    match browser.wait().at_most(PATIENCE).for_element(Locator::Css(css)).await {
        Ok(element) => element,
        Err(e) => panic!("no `{css}` ({e}) {}", context(browser).await),
    }
}

async fn text(browser: &Client, css: &str) -> String {
    find(browser, css).await.text().await.unwrap()
}

/// Navigates and waits for the page to load.
async fn open(browser: &Client, url: &str) {
    browser.goto(url).await.unwrap_or_else(|e| panic!("goto {url}: {e}"));
}

/// Clicks `css` and waits until the page it causes has loaded (a new document: the marker
/// left on the old one is gone, and the new one is complete).
async fn click_and_wait_for_page(browser: &Client, css: &str) {
    browser.execute("window.__bouncer_e2e_old_page = true", vec![]).await.unwrap();
    find(browser, css).await.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let loaded = browser
            .execute("return !window.__bouncer_e2e_old_page && document.readyState === 'complete'", vec![])
            .await
            .is_ok_and(|v| v == json!(true));
        if loaded {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("clicking `{css}` loaded no new page within {PATIENCE:?} {}", context(browser).await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fills the login form (wherever the browser is on it) and submits it.
async fn log_in(browser: &Client, username: &str, password: &str) {
    find(browser, "form#login-form").await;
    let name = find(browser, "form#login-form input[name=username]").await;
    name.clear().await.unwrap();
    name.send_keys(username).await.unwrap();
    let secret = find(browser, "form#login-form input[name=password]").await;
    secret.clear().await.unwrap();
    secret.send_keys(password).await.unwrap();
    click_and_wait_for_page(browser, "button#login-submit").await;
}

async fn path(browser: &Client) -> String {
    browser.current_url().await.unwrap().path().to_owned()
}

/// Asserts that the browser shows an authenticated page of `username`, at `expected_path`.
async fn assert_logged_in_page(browser: &Client, username: &str, expected_path: &str) {
    assert_eq!(path(browser).await, expected_path, "{}", context(browser).await);
    let nav = text(browser, "#nav-user").await;
    assert!(nav.contains(username), "#nav-user says {nav:?}, not {username}");
    find(browser, "form#logout-form button#logout-button").await;
    // The timer is filled in by the page's script.
    let timer = find(browser, "#session-timer").await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while timer.text().await.unwrap().trim().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "#session-timer stays empty {}", context(browser).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing has ended yet: the banner is there, hidden.
    let ended = find(browser, "#session-ended").await;
    assert!(ended.attr("hidden").await.unwrap().is_some(), "#session-ended is not hidden on a live page");
    assert!(!ended.is_displayed().await.unwrap(), "#session-ended shows on a live page");
}

/// Asserts that the browser is on the login page, and returns what `#login-message` says
/// (empty when there is none).
async fn assert_login_page(browser: &Client) -> String {
    find(browser, "form#login-form").await;
    assert_eq!(path(browser).await, "/api/login/", "{}", context(browser).await);
    match browser.find(Locator::Css("#login-message")).await {
        Ok(message) => message.text().await.unwrap(),
        Err(_) => String::new(),
    }
}

fn screenshot_dir() -> PathBuf {
    // target/screenshots by default, so a test run leaves the tree clean;
    // BOUNCER_SCREENSHOTS=docs/screenshots refreshes the committed ones.
    let dir = match std::env::var("BOUNCER_SCREENSHOTS") {
        Ok(dir) => Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
        Err(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("screenshots"),
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    let file = screenshot_dir().join(name);
    std::fs::write(&file, png).unwrap();
    eprintln!("screenshot: {}", file.display());
}

async fn api_token(addr: &str, username: &str, password: &str) -> String {
    let (status, body) =
        http(addr, "POST", "/api/login/", None, Some(json!({"username": username, "password": password}))).await;
    assert_eq!(status, 200, "API login of {username}: {body}");
    body["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_browser_logs_in_changes_the_limit_and_is_told_when_it_is_kicked() {
    let Some((chromium, chromedriver)) = browser_tools() else { return };
    // A hang anywhere fails the test instead of the whole run; dropping the scenario kills
    // the server, chromedriver and the browsers.
    let limit = Duration::from_secs(180);
    if tokio::time::timeout(limit, scenario(&chromium, &chromedriver)).await.is_err() {
        panic!("the browser test did not finish within {limit:?}");
    }
}

async fn scenario(chromium: &str, chromedriver: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&format!("sqlite://{}", dir.path().join("e2e.db").display()), &[]).await;
    let addr = server.addr.clone();
    let base = format!("http://{addr}");

    // A user who is not a superuser, through the JSON API; the admin's API session ends
    // before the browser logs in, so the browser's is the admin's only one.
    let admin = api_token(&addr, "admin", PASSWORD).await;
    let (status, body) = http(
        &addr,
        "POST",
        "/api/v2/users/",
        Some(&admin),
        Some(json!({"username": "alice", "password": ALICE_PASSWORD})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["is_superuser"], json!(false), "{body}");
    let (status, _) = http(&addr, "POST", "/api/logout/", Some(&admin), None).await;
    assert_eq!(status, 204);

    let driver = Driver::start(chromedriver).await;
    let (profile_a, profile_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = driver.browser(chromium, profile_a.path()).await;

    // Browser A asks for the settings page without a session: it gets the login page.
    let settings = "/api/v2/settings/authentication/";
    open(&a, &format!("{base}{settings}")).await;
    find(&a, "form#login-form").await;
    find(&a, "form#login-form input[name=username]").await;
    find(&a, "form#login-form input[name=password]").await;
    find(&a, "form#login-form button#login-submit").await;
    screenshot(&a, "login.png").await;

    // A wrong password is refused on the page itself, with a message.
    log_in(&a, "admin", "not the password").await;
    let message = assert_login_page(&a).await;
    assert!(!message.trim().is_empty(), "no #login-message after a wrong password {}", context(&a).await);

    // The admin logs in and lands on the page asked for.
    log_in(&a, "admin", PASSWORD).await;
    assert_logged_in_page(&a, "admin", settings).await;
    find(&a, "form#raw-form select[name=_method]").await;
    find(&a, "form#raw-form textarea[name=_content]").await;
    find(&a, "form#raw-form button#raw-submit").await;
    find(&a, "form#settings-form input[name=AUTH_BASIC_ENABLED][type=checkbox]").await;
    find(&a, "form#settings-form select[name=SESSION_LIMIT_POLICY]").await;
    let limit = find(&a, "form#settings-form input[name=AUTH_TOKEN_PER_USER]").await;
    assert_eq!(limit.attr("type").await.unwrap().as_deref(), Some("number"));
    assert_eq!(limit.prop("value").await.unwrap().as_deref(), Some("-1"), "the default limit");

    // The typed form sets the limit to 1; the page comes back showing it.
    limit.clear().await.unwrap();
    limit.send_keys("1").await.unwrap();
    click_and_wait_for_page(&a, "button#settings-save").await;
    assert_eq!(path(&a).await, settings, "{}", context(&a).await);
    let limit = find(&a, "form#settings-form input[name=AUTH_TOKEN_PER_USER]").await;
    assert_eq!(limit.prop("value").await.unwrap().as_deref(), Some("1"), "{}", context(&a).await);
    let shown = text(&a, "pre#response").await;
    let shown: Value =
        serde_json::from_str(&shown).unwrap_or_else(|e| panic!("pre#response is not JSON ({e}): {shown}"));
    assert_eq!(shown["AUTH_TOKEN_PER_USER"], json!(1), "pre#response: {shown}");
    // Lowering the limit to 1 left the admin's one session alone.
    assert_logged_in_page(&a, "admin", settings).await;
    screenshot(&a, "settings.png").await;

    // The admin logs out and lands on the login page, with a message.
    click_and_wait_for_page(&a, "button#logout-button").await;
    let message = assert_login_page(&a).await;
    assert!(!message.trim().is_empty(), "no #login-message after logging out {}", context(&a).await);

    // The JSON API agrees. (Checked with the browser's admin session over: with the limit at 1,
    // this login would have ended it.)
    let admin = api_token(&addr, "admin", PASSWORD).await;
    let (status, body) = http(&addr, "GET", settings, Some(&admin), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["AUTH_TOKEN_PER_USER"], json!(1), "{body}");
    let (status, _) = http(&addr, "POST", "/api/logout/", Some(&admin), None).await;
    assert_eq!(status, 204);

    // Browser A: alice logs in and opens her own page.
    open(&a, &format!("{base}/api/login/?next=/api/v2/me/")).await;
    log_in(&a, "alice", ALICE_PASSWORD).await;
    assert_logged_in_page(&a, "alice", "/api/v2/me/").await;
    // Marks this document: a reload would lose the mark.
    a.execute("window.__bouncer_e2e_same_page = true", vec![]).await.unwrap();
    // Give the page's event stream a moment to connect.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Browser B, with its own cookie jar: alice logs in there too, which ends A's session.
    let b = driver.browser(chromium, profile_b.path()).await;
    open(&b, &format!("{base}/api/login/?next=/api/v2/me/")).await;
    log_in(&b, "alice", ALICE_PASSWORD).await;
    assert_logged_in_page(&b, "alice", "/api/v2/me/").await;

    // A is told, without a reload.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let ended = find(&a, "#session-ended").await;
        if ended.is_displayed().await.unwrap() && ended.text().await.unwrap().contains(KICKED) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let hidden = ended.attr("hidden").await.unwrap().is_some();
            let said = ended.text().await.unwrap();
            panic!(
                "within {PATIENCE:?} of alice's login in browser B, #session-ended in browser A \
                 (hidden: {hidden}, text: {said:?}) does not show {KICKED:?} {}",
                context(&a).await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let same_page = a.execute("return window.__bouncer_e2e_same_page === true", vec![]).await.unwrap();
    assert_eq!(same_page, json!(true), "browser A reloaded instead of being told on the page");
    assert_eq!(path(&a).await, "/api/v2/me/");
    screenshot(&a, "kicked.png").await;

    // Its link leads to the login page.
    click_and_wait_for_page(&a, "#session-ended a#session-ended-login").await;
    assert_login_page(&a).await;

    // B is still logged in, and logs out with the button.
    click_and_wait_for_page(&b, "button#logout-button").await;
    let message = assert_login_page(&b).await;
    assert!(!message.trim().is_empty(), "no #login-message after logging out {}", context(&b).await);

    a.close().await.unwrap();
    b.close().await.unwrap();
    drop(driver);
    drop(server);
}
