//! The cookie side: the form login that browsers and AWX's CLI use, CSRF, and OPTIONS.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;

use crate::db_test;
use crate::helpers::*;

/// The `name=value` of every Set-Cookie of a response.
fn set_cookies(response: &Response) -> Vec<String> {
    response.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

fn cookie_value(response: &Response, name: &str) -> Option<String> {
    set_cookies(response)
        .iter()
        .find_map(|c| c.split(';').next().and_then(|pair| pair.strip_prefix(&format!("{name}="))).map(str::to_owned))
}

async fn csrf(app: &TestApp) -> String {
    let root = app.get("/api/", None).await;
    let csrf = cookie_value(&root, "csrftoken").expect("GET /api/ sets csrftoken");
    let attributes = set_cookies(&root).into_iter().find(|c| c.starts_with("csrftoken=")).unwrap();
    assert!(!attributes.contains("HttpOnly") && attributes.contains("SameSite=Lax"), "{attributes}");
    csrf
}

async fn form_login(app: &TestApp, csrf: &str, form: &str, header: bool) -> Response {
    let mut request = Request::post("/api/login/")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("csrftoken={csrf}"));
    if header {
        request = request.header("x-csrftoken", csrf);
    }
    app.raw(request.body(Body::from(form.to_owned())).unwrap()).await
}

db_test!(the_form_login_sets_an_httponly_cookie_and_redirects_to_a_local_next, |app| {
    let csrf = csrf(&app).await;
    let form =
        format!("username={ADMIN}&password=correct+horse+battery&next=%2Fapi%2Fv2%2Fme%2F&csrfmiddlewaretoken={csrf}");
    let response = form_login(&app, &csrf, &form, false).await;
    assert_eq!(response.status, StatusCode::SEE_OTHER, "{response:?}");
    assert_eq!(response.header("location"), Some("/api/v2/me/"));
    assert_eq!(response.header("x-api-session-cookie-name"), Some("bouncer_session"));
    let session = set_cookies(&response).into_iter().find(|c| c.starts_with("bouncer_session=")).unwrap();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(session.contains(attribute), "{session}");
    }
    assert!(!session.contains("Secure"), "no Secure over plain HTTP unless configured: {session}");
    let token = cookie_value(&response, "bouncer_session").unwrap();
    let me =
        app.send_with(Method::GET, "/api/v2/me/", None, None, &[("cookie", &format!("bouncer_session={token}"))]).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["username"], json!(ADMIN));

    // An open redirect is refused: `next` must be a local path.
    let form = format!("username={ADMIN}&password=correct+horse+battery&next=https%3A%2F%2Fevil.example%2F");
    let response = form_login(&app, &csrf, &form, true).await;
    assert_eq!(response.header("location"), Some("/api/v2/"));
});

db_test!(the_form_login_needs_the_csrf_token, |app| {
    let csrf = csrf(&app).await;
    let form = format!("username={ADMIN}&password=correct+horse+battery");
    let without = form_login(&app, &csrf, &form, false).await;
    assert_eq!(without.status, StatusCode::FORBIDDEN);
    assert_eq!(without.body, json!({"detail": "CSRF verification failed.", "reason": "csrf_failed"}));
    let wrong = form_login(&app, &csrf, &format!("{form}&csrfmiddlewaretoken=not-it"), false).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    // AWX's CLI sends it in X-CSRFToken.
    assert_eq!(form_login(&app, &csrf, &form, true).await.status, StatusCode::SEE_OTHER);
});

db_test!(unsafe_requests_authenticated_by_the_cookie_need_the_csrf_token, |app| {
    let csrf = csrf(&app).await;
    let form = format!("username={ADMIN}&password=correct+horse+battery");
    let login = form_login(&app, &csrf, &form, true).await;
    let token = cookie_value(&login, "bouncer_session").unwrap();
    let new_csrf = cookie_value(&login, "csrftoken").expect("the CSRF token is rotated at login");
    let cookie = format!("bouncer_session={token}; csrftoken={new_csrf}");
    let patch = json!({"AUTH_TOKEN_PER_USER": 3});
    let refused = app
        .send_with(Method::PATCH, "/api/v2/settings/authentication/", None, Some(patch.clone()), &[("cookie", &cookie)])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.reason(), "csrf_failed");
    let accepted = app
        .send_with(
            Method::PATCH,
            "/api/v2/settings/authentication/",
            None,
            Some(patch),
            &[("cookie", &cookie), ("x-csrftoken", &new_csrf)],
        )
        .await;
    assert_eq!(accepted.status, StatusCode::OK, "{accepted:?}");
    // The right token is not enough from another site: a browser's Origin must be this
    // site's Host (a sibling subdomain can plant a csrftoken cookie, not an Origin).
    let with_csrf = [("cookie", cookie.as_str()), ("x-csrftoken", new_csrf.as_str()), ("host", "bouncer.example")];
    for (origin, status) in [
        ("https://evil.bouncer.example", StatusCode::FORBIDDEN),
        ("null", StatusCode::FORBIDDEN),
        ("https://bouncer.example", StatusCode::OK),
    ] {
        let headers = [&with_csrf[..], &[("origin", origin)]].concat();
        let patch = Some(json!({"AUTH_TOKEN_PER_USER": 3}));
        let response = app.send_with(Method::PATCH, "/api/v2/settings/authentication/", None, patch, &headers).await;
        assert_eq!(response.status, status, "Origin {origin}: {response:?}");
        if status == StatusCode::FORBIDDEN {
            let logout = app.send_with(Method::POST, "/api/logout/", None, None, &headers).await;
            assert_eq!((response.reason(), logout.reason()), ("csrf_failed", "csrf_failed"), "Origin {origin}");
        }
    }
    // ... and the form login's too.
    let form = format!("username={ADMIN}&password=correct+horse+battery&csrfmiddlewaretoken={csrf}");
    let request = Request::post("/api/login/")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("csrftoken={csrf}"))
        .header("host", "bouncer.example")
        .header("origin", "https://evil.example")
        .body(Body::from(form))
        .unwrap();
    assert_eq!(app.raw(request).await.reason(), "csrf_failed");
    // A header-authenticated request needs no CSRF token.
    let bearer = app.admin_token().await;
    assert_eq!(app.patch_settings(json!({"AUTH_TOKEN_PER_USER": 4})).await.status, StatusCode::OK);
    assert_eq!(app.me(&bearer).await.status, StatusCode::OK);

    // Logging out through the cookie needs it too, and clears the cookie.
    let no_csrf = app.send_with(Method::POST, "/api/logout/", None, None, &[("cookie", &cookie)]).await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    let out = app
        .send_with(Method::POST, "/api/logout/", None, None, &[("cookie", &cookie), ("x-csrftoken", &new_csrf)])
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(set_cookies(&out).iter().any(|c| c.starts_with("bouncer_session=;") && c.contains("Max-Age=0")));
    let after = app.send_with(Method::GET, "/api/v2/me/", None, None, &[("cookie", &cookie)]).await;
    assert_eq!(after.reason(), "logged_out");
    // A write with that dead cookie is told why it is dead, CSRF token or not.
    let dead = app.send_with(Method::DELETE, "/api/v2/me/sessions/1/", None, None, &[("cookie", &cookie)]).await;
    assert_eq!((dead.status, dead.reason()), (StatusCode::UNAUTHORIZED, "logged_out"), "{dead:?}");
});

#[tokio::test]
async fn page_cookies_are_secure_behind_a_trusted_tls_proxy() {
    let mut config = test_config();
    config.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    let app = TestApp::sqlite_with(config).await;
    // A page (here the login page a 401 turns into) sets the CSRF cookie; `Secure` when the
    // request came over TLS through the trusted proxy, whoever else claims it.
    for (peer, secure) in [("10.1.2.3:40000", true), ("198.51.100.7:40000", false)] {
        let mut request = Request::get("/api/v2/users/")
            .header("accept", "text/html")
            .header("x-forwarded-proto", "https")
            .body(Body::empty())
            .unwrap();
        request.extensions_mut().insert(axum::extract::ConnectInfo::<std::net::SocketAddr>(peer.parse().unwrap()));
        let page = app.raw(request).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{page:?}");
        let cookies = set_cookies(&page);
        let csrf = cookies.iter().find(|c| c.starts_with("csrftoken=")).expect("the page sets the CSRF cookie");
        assert_eq!(csrf.contains("; Secure"), secure, "from {peer}: {csrf}");
    }
}

#[tokio::test]
async fn cookies_are_secure_when_configured() {
    let mut config = test_config();
    config.cookie_secure = true;
    let app = TestApp::sqlite_with(config).await;
    let root = app.get("/api/", None).await;
    assert!(set_cookies(&root).iter().all(|c| c.contains("; Secure")));
}

db_test!(every_resource_answers_options_with_allow_and_actions, |app| {
    let admin = app.admin_token().await;
    let admin_session = app.get("/api/v2/me/sessions/", Some(&admin)).await.body["results"][0]["id"].clone();
    for path in [
        "/api/",
        "/api/v2/",
        "/api/login/",
        "/api/logout/",
        "/api/v2/me/",
        "/api/v2/me/sessions/",
        &format!("/api/v2/me/sessions/{admin_session}/"),
        "/api/v2/me/events/",
        "/api/v2/users/",
        &format!("/api/v2/users/{}/", app.admin_id),
        &format!("/api/v2/users/{}/sessions/", app.admin_id),
        "/api/v2/settings/",
        "/api/v2/settings/all/",
        "/api/v2/activity_stream/",
    ] {
        let response = app.send(Method::OPTIONS, path, Some(&admin), None).await;
        assert_eq!(response.status, StatusCode::OK, "{path}: {response:?}");
        assert!(response.header("allow").unwrap().contains("OPTIONS"), "{path}");
        assert!(response.body["actions"].is_object(), "{path}");
        assert!(response.body["name"].is_string(), "{path}");
        if path.starts_with("/api/v2/") && path != "/api/v2/" {
            assert!(response.body["actions"]["GET"].is_object(), "{path}: what a GET returns is described");
        }
    }
    let users = app.send(Method::OPTIONS, "/api/v2/users/", Some(&admin), None).await;
    assert_eq!(users.body["actions"]["POST"]["username"]["required"], json!(true));
    assert_eq!(users.body["actions"]["POST"]["password"]["type"], json!("string"));
    assert_eq!(users.body["actions"]["GET"]["username"]["filterable"], json!(true));

    // An ordinary user sees no actions he may not use.
    app.create_user("alice").await;
    let alice = app.token("alice", PASSWORD).await;
    assert_eq!(app.send(Method::OPTIONS, "/api/v2/users/", Some(&alice), None).await.status, StatusCode::FORBIDDEN);
    assert_eq!(app.send(Method::OPTIONS, "/api/v2/users/", None, None).await.status, StatusCode::UNAUTHORIZED);
    // A detail that is not there, or not yours, is described as a 404, like its GET (a
    // superuser reaches anyone's session).
    let alice_session = app.get("/api/v2/me/sessions/", Some(&alice)).await.body["results"][0]["id"].clone();
    let alices = format!("/api/v2/me/sessions/{alice_session}/");
    assert_eq!(app.send(Method::OPTIONS, &alices, Some(&admin), None).await.status, StatusCode::OK);
    for (path, token) in [
        (format!("/api/v2/me/sessions/{admin_session}/"), &alice),
        ("/api/v2/users/999999/".to_string(), &admin),
        ("/api/v2/users/999999/sessions/".to_string(), &admin),
    ] {
        let response = app.send(Method::OPTIONS, &path, Some(token), None).await;
        assert_eq!(response.status, StatusCode::NOT_FOUND, "{path}: {response:?}");
        assert_eq!(response.body["detail"], json!("Not found."), "{path}");
    }

    // What AWX's CLI probes before any command: answered, with no actions.
    let probe = app.send(Method::OPTIONS, "/api/v2/organizations/", Some(&admin), None).await;
    assert_eq!(probe.status, StatusCode::OK);
    assert_eq!(probe.body["actions"], json!({}));
    assert_eq!(app.get("/api/v2/organizations/", Some(&admin)).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.send(Method::OPTIONS, "/api/v2/nonsense/", Some(&admin), None).await.status, StatusCode::NOT_FOUND);
});

db_test!(lists_take_filters_and_order_by, |app| {
    for name in ["carol", "alice", "bob"] {
        app.create_user(name).await;
    }
    let admin = app.admin_token().await;
    let names = |body: &serde_json::Value| -> Vec<String> {
        body["results"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap().to_owned()).collect()
    };
    let by_name = app.get("/api/v2/users/?order_by=username", Some(&admin)).await;
    assert_eq!(names(&by_name.body), ["admin", "alice", "bob", "carol"]);
    let desc = app.get("/api/v2/users/?order_by=-username", Some(&admin)).await;
    assert_eq!(names(&desc.body), ["carol", "bob", "alice", "admin"]);
    let one = app.get("/api/v2/users/?username=bob", Some(&admin)).await;
    assert_eq!(one.body["count"], json!(1));
    assert_eq!(names(&one.body), ["bob"]);
    let supers = app.get("/api/v2/users/?is_superuser=true", Some(&admin)).await;
    assert_eq!(names(&supers.body), ["admin"]);
    let bad = app.get("/api/v2/users/?password_hash=x", Some(&admin)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let bad_order = app.get("/api/v2/users/?order_by=password_hash", Some(&admin)).await;
    assert_eq!(bad_order.status, StatusCode::BAD_REQUEST);
    let stream = app.get("/api/v2/activity_stream/?object=user&operation=create", Some(&admin)).await;
    // alice, bob, carol, and the admin the harness created through the CLI path.
    assert_eq!(stream.body["count"], json!(4));
    let sessions = app.get("/api/v2/me/sessions/?order_by=id", Some(&admin)).await;
    assert_eq!(sessions.status, StatusCode::OK);
});

db_test!(awx_style_booleans_are_accepted_when_creating_users, |app| {
    let admin = app.admin_token().await;
    let body = json!({"username": "robot", "password": PASSWORD, "is_superuser": 0, "is_system_auditor": 1});
    let response = app.send(Method::POST, "/api/v2/users/", Some(&admin), Some(body)).await;
    assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
    assert_eq!(response.body["is_system_auditor"], json!(true));
    assert_eq!(response.body["is_superuser"], json!(false));
});
