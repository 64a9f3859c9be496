//! The console's sign-in and sessions against a real collector over TLS: password and
//! TOTP (codes from `oathtool`), the cookie's attributes, CSRF, roles enforced by the
//! server for every admin operation the OpenAPI document lists, sign-out, lockout and a
//! disabled account.

use std::process::Command;

use serde_json::{json, Value};
use wardlock_testkit::collector::{request, Answer, Backend, Collector};

const COOKIE: &str = "__Host-wardlock-session";

/// A console session: its cookie and CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

fn code(secret: &str, offset_steps: i64) -> String {
    let out = Command::new("oathtool")
        .args(["--totp", "-b", secret, "-N", &format!("now + {} seconds", offset_steps * 30)])
        .output()
        .expect("oathtool");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn sign_in(c: &Collector, name: &str, password: &str, code: &str) -> Answer {
    let body = json!({"name": name, "password": password, "code": code}).to_string();
    request(&c.cert(), "POST", &format!("{}/api/v1/console/session", c.url()), &[], Some(&body))
}

fn session_of(answer: &Answer) -> Session {
    assert_eq!(answer.status, 200, "{}", answer.body);
    let set_cookie = answer.header("set-cookie").expect("a session cookie");
    let value = set_cookie.split(';').next().unwrap().strip_prefix(&format!("{COOKIE}=")).unwrap().to_owned();
    Session {
        cookie: format!("{COOKIE}={value}"),
        csrf: answer.json()["csrf_token"].as_str().unwrap().to_owned(),
    }
}

fn with(c: &Collector, s: &Session, method: &str, path: &str, csrf: bool, body: Option<&str>) -> Answer {
    let mut headers = vec![("cookie", s.cookie.as_str())];
    if csrf {
        headers.push(("x-csrf-token", s.csrf.as_str()));
    }
    request(&c.cert(), method, &format!("{}{path}", c.url()), &headers, body)
}

fn admin_log(c: &Collector) -> Vec<Value> {
    let (status, body) = c.call("GET", "/api/v1/admin/log?limit=1000", None, None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Vec<Value>>(&body).unwrap()
}

const AUDITOR_PASSWORD: &str = "tangerine kettle orbit sparrow";
const ADMIN_PASSWORD: &str = "quartz lantern meadow figurine";

fn sign_in_sessions_csrf_and_roles_are_enforced_by_the_server(backend: Backend) {
    let c = Collector::start_new(backend);
    // A common password is refused and nothing is made.
    let weak = c.try_create_account("weak", "admin", "password1234");
    assert!(weak.as_ref().is_err_and(|e| e.contains("password")), "{weak:?}");
    let auditor = c.create_account("privacy.officer", "auditor", AUDITOR_PASSWORD);
    let admin = c.create_account("it.admin", "admin", ADMIN_PASSWORD);

    // Nothing without a session.
    let url = |path: &str| format!("{}{path}", c.url());
    assert_eq!(request(&c.cert(), "GET", &url("/api/v1/events"), &[], None).status, 401);
    assert_eq!(request(&c.cert(), "GET", &url("/api/v1/console/session"), &[], None).status, 401);

    // A form another site posts (text/plain) signs no one in, even with the right secrets.
    let body = json!({"name": "privacy.officer", "password": AUDITOR_PASSWORD, "code": code(&auditor, 0)})
        .to_string();
    let form = request(
        &c.cert(),
        "POST",
        &url("/api/v1/console/session"),
        &[("content-type", "text/plain")],
        Some(&body),
    );
    assert_eq!(form.status, 415, "{}", form.body);
    assert!(form.header("set-cookie").is_none());

    // A wrong code, a wrong password: refused alike, and logged.
    let wrong = sign_in(&c, "privacy.officer", AUDITOR_PASSWORD, "000000");
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let unknown = sign_in(&c, "nobody.here", AUDITOR_PASSWORD, &code(&auditor, 0));
    assert_eq!(
        (unknown.status, unknown.json()),
        (wrong.status, wrong.json()),
        "an unknown name looks the same"
    );
    let refused: Vec<_> =
        admin_log(&c).into_iter().filter(|a| a["action"] == "console_sign_in_refused").collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused[0]["detail"].as_str().unwrap().contains("from 127.0.0.1"), "{refused:?}");
    assert!(!serde_json::to_string(&refused).unwrap().contains(AUDITOR_PASSWORD));

    // One failure throttles the account for a second (the rule): waited out.
    let wait = wrong.header("retry-after").as_deref().and_then(|w| w.parse().ok()).expect("a Retry-After");
    std::thread::sleep(std::time::Duration::from_secs(wait));
    let signed_in = sign_in(&c, "privacy.officer", AUDITOR_PASSWORD, &code(&auditor, 0));
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    let cookie = signed_in.header("set-cookie").unwrap_or_default();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert_eq!(signed_in.json()["role"], "auditor");
    let auditor_session = session_of(&signed_in);
    // The same code again is a replay, even with the right password.
    let replay = sign_in(&c, "privacy.officer", AUDITOR_PASSWORD, &code(&auditor, 0));
    assert_eq!(replay.status, 401, "{}", replay.body);

    assert_eq!(with(&c, &auditor_session, "GET", "/api/v1/events", false, None).status, 200);
    let me = with(&c, &auditor_session, "GET", "/api/v1/console/session", false, None);
    assert_eq!(me.json()["name"], "privacy.officer");
    assert_eq!(me.json()["csrf_token"], auditor_session.csrf.as_str());

    // Every admin operation the document lists: 403 for the auditor, with or without CSRF.
    let doc: Value = serde_json::from_str(&c.call("GET", "/api/v1/openapi.json", None, None).1).unwrap();
    let mut tried = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let admin_only = op["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == "admin role"));
            if !admin_only {
                continue;
            }
            let concrete = path.replace("{group}", "default").replace("{id}", "x");
            let method = method.to_uppercase();
            let answer = with(&c, &auditor_session, &method, &concrete, true, Some("{}"));
            assert_eq!(answer.status, 403, "{method} {path} as an auditor: {}", answer.body);
            tried += 1;
        }
    }
    assert!(tried >= 10, "only {tried} admin operations in the document");

    // An admin's change needs the CSRF token; with it, it is done and logged as theirs.
    let admin_session = session_of(&sign_in(&c, "it.admin", ADMIN_PASSWORD, &code(&admin, 0)));
    let user = json!({"id": "nurse.kim", "display_name": "Kim", "role": "nurse"}).to_string();
    let forged = with(&c, &admin_session, "POST", "/api/v1/admin/users", false, Some(&user));
    assert_eq!(forged.status, 403, "{}", forged.body);
    let wrong_csrf = Session { cookie: admin_session.cookie.clone(), csrf: auditor_session.csrf.clone() };
    assert_eq!(with(&c, &wrong_csrf, "POST", "/api/v1/admin/users", true, Some(&user)).status, 403);
    let made = with(&c, &admin_session, "POST", "/api/v1/admin/users", true, Some(&user));
    assert_eq!(made.status, 201, "{}", made.body);
    let log = admin_log(&c);
    assert!(log.iter().any(|a| a["actor"] == "it.admin (console)" && a["action"] == "user_add"), "{log:?}");
    assert!(log
        .iter()
        .any(|a| a["actor"] == "privacy.officer (console)" && a["action"] == "console_sign_in"));

    // Signed out: the cookie is worth nothing any more, whatever the browser keeps.
    let out = with(&c, &auditor_session, "DELETE", "/api/v1/console/session", true, None);
    assert_eq!(out.status, 204, "{}", out.body);
    assert!(out.header("set-cookie").unwrap_or_default().contains("Max-Age=0"));
    assert_eq!(with(&c, &auditor_session, "GET", "/api/v1/events", false, None).status, 401);
    assert_eq!(with(&c, &auditor_session, "GET", "/api/v1/console/session", false, None).status, 401);
    assert!(admin_log(&c).iter().any(|a| a["action"] == "console_sign_out"));

    // A disabled account's live session ends at its next request.
    let disabled = c.run_collector(&["account", "disable", "it.admin"]);
    assert!(disabled.status.success(), "{}", String::from_utf8_lossy(&disabled.stderr));
    assert_eq!(with(&c, &admin_session, "GET", "/api/v1/events", false, None).status, 401);
}

/// On SQLite only: the counters go through the same statements on both backends, and
/// the throttle's waits make this one slow.
#[test]
fn wrong_attempts_lock_an_account_out_like_a_workstation_user() {
    let c = Collector::start_new(Backend::Sqlite);
    let secret = c.create_account("night.auditor", "auditor", AUDITOR_PASSWORD);
    let mut last = None;
    // Throttled between attempts (1 s, doubling): each wrong attempt waits out the last.
    for attempt in 0..5 {
        let answer = sign_in(&c, "night.auditor", "not the password at all", &code(&secret, 0));
        assert!(matches!(answer.status, 401 | 429), "attempt {attempt}: {} {}", answer.status, answer.body);
        if let Some(wait) = answer.header("retry-after").as_deref().and_then(|w| w.parse::<u64>().ok()) {
            if attempt < 4 {
                std::thread::sleep(std::time::Duration::from_secs(wait)); // the throttle's own wait
            }
        }
        last = Some(answer);
    }
    let last = last.unwrap();
    assert_eq!(last.status, 429, "the fifth failure locks the account out: {}", last.body);
    assert!(last.header("retry-after").is_some());
    // Now even the right password and code are refused until the lockout ends.
    let right = sign_in(&c, "night.auditor", AUDITOR_PASSWORD, &code(&secret, 1));
    assert_eq!(right.status, 429, "{}", right.body);
    assert!(right.body.contains("locked out"), "{}", right.body);
    // A reset (the password forgotten) gives new secrets and clears the lockout.
    let new_password = "velvet harbour lantern quince";
    let secret = c.reset_account("night.auditor", new_password);
    let signed_in = sign_in(&c, "night.auditor", new_password, &code(&secret, 0));
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    let old = sign_in(&c, "night.auditor", AUDITOR_PASSWORD, &code(&secret, 1));
    assert_eq!(old.status, 401, "the old password is gone: {}", old.body);
    let log = admin_log(&c);
    assert!(log.iter().any(|a| a["action"] == "console_account_reset"), "{log:?}");
    assert!(
        log.iter().any(|a| a["action"] == "console_sign_in_refused"
            && a["detail"].as_str().unwrap().contains("locked out now")),
        "{log:?}"
    );
}

fn console_pages_and_api_answers_carry_a_strict_content_security_policy(backend: Backend) {
    let c = Collector::start_new(backend);
    let root = request(&c.cert(), "GET", &format!("{}/console", c.url()), &[], None);
    assert_eq!(root.status, 200, "/console leads to the console's page");
    for path in ["/console/", "/api/v1/events", "/console/no-such-file.js"] {
        let answer = request(&c.cert(), "GET", &format!("{}{path}", c.url()), &[], None);
        let csp = answer.header("content-security-policy").unwrap_or_default();
        for directive in
            ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"]
        {
            assert!(csp.contains(directive), "{path}: {csp:?} lacks {directive}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(answer.header("x-content-type-options").as_deref(), Some("nosniff"), "{path}");
    }
}

on_both_backends!(
    sign_in_sessions_csrf_and_roles_are_enforced_by_the_server,
    console_pages_and_api_answers_carry_a_strict_content_security_policy
);
