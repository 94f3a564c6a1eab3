//! The browsable API, server side: content negotiation, the pages' HTML and forms, CSRF on
//! forms, security headers, and the event stream.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;

use crate::db_test;
use crate::helpers::*;

const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// A browser's session: its cookies after a form login.
struct Browser {
    cookie: String,
    csrf: String,
}

async fn browser_login(app: &TestApp, username: &str) -> Browser {
    let root = app.get("/api/", None).await;
    let csrf = set_cookie(&root, "csrftoken").unwrap();
    let form =
        format!("username={username}&password=correct+horse+battery&csrfmiddlewaretoken={csrf}&next=%2Fapi%2Fv2%2F");
    let request = Request::post("/api/login/")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", HTML)
        .header("cookie", format!("csrftoken={csrf}"))
        .body(Body::from(form))
        .unwrap();
    let response = app.raw(request).await;
    assert_eq!(response.status, StatusCode::SEE_OTHER, "{response:?}");
    let token = set_cookie(&response, "bouncer_session").unwrap();
    let csrf = set_cookie(&response, "csrftoken").unwrap();
    Browser { cookie: format!("bouncer_session={token}; csrftoken={csrf}"), csrf }
}

fn set_cookie(response: &Response, name: &str) -> Option<String> {
    response
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.split(';').next().and_then(|pair| pair.strip_prefix(&format!("{name}="))).map(str::to_owned))
}

async fn page(app: &TestApp, browser: Option<&Browser>, path: &str) -> Response {
    let mut request = Request::get(path).header("accept", HTML);
    if let Some(browser) = browser {
        request = request.header("cookie", &browser.cookie);
    }
    app.raw(request.body(Body::empty()).unwrap()).await
}

async fn post_form(app: &TestApp, browser: &Browser, path: &str, form: &[(&str, &str)]) -> Response {
    let body = serde_urlencoded::to_string(form).unwrap();
    let request = Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", HTML)
        .header("cookie", &browser.cookie)
        .body(Body::from(body))
        .unwrap();
    app.raw(request).await
}

fn text(response: &Response) -> &str {
    response.body.as_str().unwrap_or("")
}

db_test!(a_browser_gets_html_and_a_script_gets_json_from_the_same_url, |app| {
    let browser = browser_login(&app, ADMIN).await;
    let html = page(&app, Some(&browser), "/api/v2/users/").await;
    assert_eq!(html.status, StatusCode::OK);
    assert!(html.header("content-type").unwrap().starts_with("text/html"));
    let body = text(&html);
    assert!(body.contains("<ol class=\"breadcrumbs\">"), "breadcrumbs");
    assert!(body.contains("<a class=\"str\" href=\"/api/v2/users/1/\">"), "URLs are links");
    assert!(body.contains("id=\"nav-user\""), "navbar");
    assert!(body.contains("Allow: GET, POST, HEAD, OPTIONS"), "allowed methods");
    assert!(body.contains("exact matches"), "the endpoint's description from its doc comment");
    assert!(body.contains("/api/docs/"), "a link to Swagger UI");
    assert!(body.contains("data-timeout=\"1800\""), "the idle time left");

    let forced = app
        .raw(
            Request::get("/api/v2/users/?format=json")
                .header("accept", HTML)
                .header("cookie", &browser.cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(forced.header("content-type").unwrap().starts_with("application/json"));
    assert_eq!(forced.body["count"], json!(1));
    // No Accept: text/html, no page.
    let script = app.send_with(Method::GET, "/api/v2/users/", None, None, &[("cookie", &browser.cookie)]).await;
    assert!(script.header("content-type").unwrap().starts_with("application/json"));
});

db_test!(pages_carry_the_security_headers, |app| {
    let browser = browser_login(&app, ADMIN).await;
    for response in [page(&app, Some(&browser), "/api/v2/me/").await, page(&app, None, "/api/login/").await] {
        let csp = response.header("content-security-policy").unwrap();
        assert!(
            csp.contains("frame-ancestors 'none'")
                && csp.contains("script-src 'self'")
                && !csp.contains("unsafe-inline")
        );
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(response.header("cache-control"), Some("no-store"));
        // No inline script: every script is a file the CSP allows.
        assert!(!text(&response).contains("<script>"));
    }
    let js = app.get("/static/browse.js", None).await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(js.header("content-type").unwrap().starts_with("text/javascript"));
    assert!(text(&js).contains("X-Session-Quiet"));
});

db_test!(a_page_without_a_session_is_the_login_page_and_an_ended_one_says_why, |app| {
    let anonymous = page(&app, None, "/api/v2/me/sessions/").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(text(&anonymous).contains("id=\"login-form\""));
    assert!(text(&anonymous).contains("value=\"/api/v2/me/sessions/\""), "next is the page asked for");

    app.create_user("alice").await;
    app.set(json!({"AUTH_TOKEN_PER_USER": 1})).await;
    let first = browser_login(&app, "alice").await;
    browser_login(&app, "alice").await;
    let kicked = page(&app, Some(&first), "/api/v2/me/").await;
    assert_eq!(kicked.status, StatusCode::UNAUTHORIZED);
    assert!(
        text(&kicked)
            .contains("You were logged out: the maximum number of allowed sessions for this user has been exceeded."),
        "{}",
        text(&kicked)
    );
    // The dead cookie is cleared.
    assert!(kicked.headers.get_all("set-cookie").iter().any(|c| c.to_str().unwrap().starts_with("bouncer_session=;")));
    let by_reason = page(&app, None, "/api/login/?reason=timeout_reached&next=/api/v2/me/").await;
    assert!(text(&by_reason).contains("You were logged out: token is expired."));
});

/// Posts the login page's form as a browser would, with `next=/api/v2/users/`.
async fn form_login(app: &TestApp, username: &str, password: &str) -> Response {
    let root = app.get("/api/", None).await;
    let csrf = set_cookie(&root, "csrftoken").unwrap();
    let form = serde_urlencoded::to_string([
        ("username", username),
        ("password", password),
        ("csrfmiddlewaretoken", &csrf),
        ("next", "/api/v2/users/"),
    ])
    .unwrap();
    let request = Request::post("/api/login/")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", HTML)
        .header("cookie", format!("csrftoken={csrf}"))
        .body(Body::from(form))
        .unwrap();
    app.raw(request).await
}

db_test!(a_wrong_password_in_the_form_shows_the_login_page_again_with_the_error, |app| {
    let response = form_login(&app, "admin", "nope").await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    let body = text(&response);
    assert!(body.contains("Unable to log in with the provided credentials."));
    assert!(body.contains("value=\"/api/v2/users/\""), "next survives");
    assert!(body.contains("value=\"admin\""), "the username is kept");
});

db_test!(a_refused_form_login_keeps_the_status_the_api_gave, |app| {
    app.create_user("alice").await;
    app.create_user("bob").await;
    app.set(json!({"AUTH_LOGIN_FAILURE_LIMIT": 2, "AUTH_TOKEN_PER_USER": 1, "SESSION_LIMIT_POLICY": "deny_new"})).await;
    for _ in 0..2 {
        assert_eq!(form_login(&app, "alice", "nope").await.status, StatusCode::UNAUTHORIZED);
    }
    // Locked out: 429 and when to come back, as the API says it, on the page.
    let locked = form_login(&app, "alice", PASSWORD).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS, "{locked:?}");
    assert!(locked.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s > 0)), "{locked:?}");
    assert!(text(&locked).contains("name=\"csrfmiddlewaretoken\""), "the login form again");
    // At the limit with deny_new: 403, and the page says why.
    app.token("bob", PASSWORD).await;
    let denied = form_login(&app, "bob", PASSWORD).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{denied:?}");
    assert!(text(&denied).contains("maximum number of allowed sessions"), "{denied:?}");
    assert!(denied.header("retry-after").is_none());
});

db_test!(the_raw_form_sends_the_json_and_keeps_it_with_the_errors_after_a_400, |app| {
    let browser = browser_login(&app, ADMIN).await;
    let users = page(&app, Some(&browser), "/api/v2/users/").await;
    assert!(text(&users).contains("id=\"raw-form\""));
    assert!(text(&users).contains("<option value=\"POST\""));

    let created = post_form(
        &app,
        &browser,
        "/api/v2/users/",
        &[
            ("_method", "POST"),
            ("_content", r#"{"username": "bob", "password": "correct horse battery"}"#),
            ("csrfmiddlewaretoken", &browser.csrf),
        ],
    )
    .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{created:?}");
    assert_eq!(created.header("location"), Some("/api/v2/users/"));

    let sent = r#"{"username": "no spaces", "password": "x"}"#;
    let refused = post_form(
        &app,
        &browser,
        "/api/v2/users/",
        &[("_method", "POST"), ("_content", sent), ("csrfmiddlewaretoken", &browser.csrf)],
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let body = text(&refused);
    assert!(
        body.contains("{&quot;username&quot;: &quot;no spaces&quot;, &quot;password&quot;: &quot;x&quot;}"),
        "the text is kept"
    );
    assert!(body.contains("Enter a valid username"), "the field errors are shown");
    assert!(body.contains("id=\"raw-errors\""));

    // Without the CSRF token, nothing happens.
    let forged = post_form(
        &app,
        &browser,
        "/api/v2/users/",
        &[("_method", "POST"), ("_content", r#"{"username": "mallory", "password": "correct horse battery"}"#)],
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let admin = app.admin_token().await;
    assert_eq!(app.get("/api/v2/users/?username=mallory", Some(&admin)).await.body["count"], json!(0));
});

db_test!(the_typed_settings_form_saves_and_shows_field_errors_with_the_values_kept, |app| {
    let browser = browser_login(&app, ADMIN).await;
    let settings = page(&app, Some(&browser), "/api/v2/settings/authentication/").await;
    let body = text(&settings);
    assert!(body.contains("id=\"settings-form\""));
    assert!(body.contains("type=\"number\" id=\"f-AUTH_TOKEN_EXPIRATION\" name=\"AUTH_TOKEN_EXPIRATION\" value=\"1800\" min=\"60\" max=\"30000000000\""));
    assert!(body.contains("type=\"checkbox\" id=\"f-AUTH_BASIC_ENABLED\""));
    assert!(body.contains("<select id=\"f-SESSION_LIMIT_POLICY\""));
    assert!(body.contains("Reset to default (1800)"));

    let form = |per_user: &'static str| {
        vec![
            ("csrfmiddlewaretoken", browser.csrf.clone()),
            ("_method", "PATCH".to_owned()),
            ("_typed", "1".to_owned()),
            ("AUTH_TOKEN_EXPIRATION", "900".to_owned()),
            ("AUTH_TOKEN_PER_USER", per_user.to_owned()),
            ("_bools", "AUTH_BASIC_ENABLED".to_owned()),
            ("AUTH_TOKEN_MAX_AGE", "0".to_owned()),
            ("SESSION_LIMIT_POLICY", "deny_new".to_owned()),
            ("AUTH_LOGIN_FAILURE_LIMIT", "10".to_owned()),
            ("AUTH_LOGIN_LOCKOUT_SECONDS", "300".to_owned()),
        ]
    };
    let as_refs = |f: &Vec<(&'static str, String)>| f.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>();
    let refused = post_form(
        &app,
        &browser,
        "/api/v2/settings/authentication/",
        &as_refs(&form("0")).iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let body = text(&refused);
    assert!(body.contains("would lock every user out"));
    assert!(body.contains("name=\"AUTH_TOKEN_EXPIRATION\" value=\"900\""), "the submitted values are kept");
    let admin = app.admin_token().await;
    assert_eq!(
        app.get("/api/v2/settings/authentication/", Some(&admin)).await.body["AUTH_TOKEN_EXPIRATION"],
        json!(1800)
    );

    let saved = post_form(
        &app,
        &browser,
        "/api/v2/settings/authentication/",
        &as_refs(&form("3")).iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{saved:?}");
    let values = app.get("/api/v2/settings/authentication/", Some(&admin)).await.body;
    assert_eq!(values["AUTH_TOKEN_PER_USER"], json!(3));
    assert_eq!(values["AUTH_TOKEN_EXPIRATION"], json!(900));
    assert_eq!(values["SESSION_LIMIT_POLICY"], json!("deny_new"));
    assert_eq!(values["AUTH_BASIC_ENABLED"], json!(false), "an unchecked box is false");

    let reset = post_form(
        &app,
        &browser,
        "/api/v2/settings/authentication/",
        &[
            ("csrfmiddlewaretoken", &browser.csrf),
            ("_method", "PATCH"),
            ("_content", r#"{"AUTH_TOKEN_EXPIRATION": null}"#),
        ],
    )
    .await;
    assert_eq!(reset.status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.get("/api/v2/settings/authentication/", Some(&admin)).await.body["AUTH_TOKEN_EXPIRATION"],
        json!(1800)
    );
});

db_test!(
    a_file_defined_key_is_read_only_in_the_typed_form,
    conf = [("limits.py", "AUTH_TOKEN_PER_USER = 2\n")],
    |app| {
        let browser = browser_login(&app, ADMIN).await;
        let settings = page(&app, Some(&browser), "/api/v2/settings/authentication/").await;
        let body = text(&settings);
        assert!(body.contains(
            "name=\"AUTH_TOKEN_PER_USER\" value=\"2\" min=\"-1\" max=\"1000000\" step=\"1\" required disabled"
        ));
        assert!(body.contains("limits.py"));
        assert!(!body.contains("reset-AUTH_TOKEN_PER_USER"));
    }
);

db_test!(the_options_button_shows_the_metadata_and_logout_returns_to_the_login_page, |app| {
    let browser = browser_login(&app, ADMIN).await;
    let options = page(&app, Some(&browser), "/api/v2/users/?_options=1").await;
    assert_eq!(options.status, StatusCode::OK);
    assert!(text(&options).contains("id=\"options\""));
    assert!(text(&options).contains("User List"));

    let out = post_form(&app, &browser, "/api/logout/", &[("csrfmiddlewaretoken", &browser.csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.header("location"), Some("/api/login/?reason=logged_out_here"));
    let login = page(&app, None, "/api/login/?reason=logged_out_here").await;
    assert!(text(&login).contains("You have logged out."));
    assert_eq!(page(&app, Some(&browser), "/api/v2/me/").await.status, StatusCode::UNAUTHORIZED);
});

db_test!(the_event_stream_tells_the_moment_a_session_ends_and_does_not_keep_it_alive, |app| {
    use futures_util::StreamExt;
    app.create_user("alice").await;
    app.set(json!({"AUTH_TOKEN_PER_USER": 1, "AUTH_TOKEN_EXPIRATION": 100})).await;
    let first = app.token("alice", PASSWORD).await;
    app.advance(60);
    let request = Request::get("/api/v2/me/events/")
        .header("authorization", format!("Bearer {first}"))
        .body(Body::empty())
        .unwrap();
    use tower::ServiceExt;
    let response = app.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    assert!(response.headers().get("auth-token-timeout").is_some_and(|v| v == "40"), "listening is quiet");
    let mut stream = response.into_body().into_data_stream();
    app.token("alice", PASSWORD).await;
    let mut received = String::new();
    while !received.contains("\n\n") {
        let chunk =
            tokio::time::timeout(std::time::Duration::from_secs(5), stream.next()).await.unwrap().unwrap().unwrap();
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(received.contains("event: session_ended"), "{received}");
    assert!(received.contains("\"reason\":\"limit_reached\""), "{received}");
    assert!(received.contains("The maximum number of allowed sessions for this user has been exceeded."));
    // The stream ends after its own session's event.
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next()).await.unwrap();
    assert!(end.is_none());
});

#[tokio::test]
async fn an_ended_session_reaches_the_event_stream_of_another_instance() {
    use futures_util::StreamExt;
    use tower::ServiceExt;
    // Two instances (two states, two pools, one listener each) on one PostgreSQL schema.
    let Some(one) = TestApp::postgres("pages::an_ended_session_reaches_the_event_stream_of_another_instance").await
    else {
        return;
    };
    let other = one.second_instance().await;
    one.create_user("alice").await;
    let token = one.token("alice", PASSWORD).await;
    let listener = tokio::spawn(bouncer::cluster::run(other.state.clone()));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let request = Request::get("/api/v2/me/events/")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let response = other.router.clone().oneshot(request).await.unwrap();
    let mut stream = response.into_body().into_data_stream();
    let id = one.me(&token).await;
    assert_eq!(id.status, StatusCode::OK);
    one.logout(&token).await;
    let mut received = String::new();
    while !received.contains("\n\n") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
            .await
            .expect("the event arrives")
            .unwrap()
            .unwrap();
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(received.contains("\"reason\":\"logged_out\""), "{received}");
    listener.abort();
}

db_test!(an_event_stream_that_missed_events_looks_its_own_session_up_again, |app| {
    use futures_util::StreamExt;
    use tower::ServiceExt;
    let alice = app.create_user("alice").await;
    for missed in ["a burst it could not keep up with", "a resync"] {
        let login = app.login("alice", PASSWORD).await;
        let token = login.body["token"].as_str().unwrap().to_owned();
        let session = login.body["session"]["id"].as_i64().unwrap();
        let request =
            Request::get("/api/v2/me/events/").header("authorization", format!("Bearer {token}")).body(Body::empty());
        let response = app.router.clone().oneshot(request.unwrap()).await.unwrap();
        let mut stream = response.into_body().into_data_stream();
        // The session ends without its event reaching this stream: as if the event were
        // among those a lagging stream drops, or a notice from another instance lost while
        // the listener reconnected.
        bouncer::with_db!(&app.state.db, |pool| {
            sqlx::query("UPDATE sessions SET ended_at = $1, end_reason = 'revoked' WHERE id = $2")
                .bind(app.state.clock.now())
                .bind(session)
                .execute(pool)
                .await
                .unwrap()
                .rows_affected()
        });
        if missed == "a resync" {
            app.state.events.resync();
        } else {
            // More endings at once than the stream's buffer (4096), none of them alice's.
            let others: Vec<(i64, Option<i64>)> = (0..5000).map(|i| (1_000_000 + i, Some(alice + 1000))).collect();
            app.state.events.ended(&others, bouncer::sessions::EndReason::Revoked);
        }
        let mut received = String::new();
        while !received.contains("\n\n") {
            let next = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next()).await;
            let chunk = next.unwrap_or_else(|_| panic!("after {missed}: no event")).unwrap().unwrap();
            received.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(received.contains(&format!("\"session_id\":{session}")), "after {missed}: {received}");
        assert!(received.contains("\"reason\":\"revoked\""), "after {missed}: {received}");
    }
});
