//! The self-service web page over HTTPS: one-time links, sessions, CSRF, consent changes that
//! reach the node and its audit log, the export download and erasure, the page's languages. One
//! test clicks through the page in headless Chromium in each language.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod browser;
mod server_support;

use amble_proto::v1 as pb;
use http::{Method, StatusCode, header};
use pb::archive_client::ArchiveClient;
use pb::audit_client::AuditClient;
use pb::subject_client::SubjectClient;
use server_support::{
    Fixture, Reply, portal_request as request, portal_request_with as request_with, portal_tls,
};

const REF: &str = "phone:+15550001";
/// The actor of what a person does through a link the node's operator issued.
const OPERATOR_LINK: &str = "portal-link/admin/node:portal";

fn session_cookie(r: &Reply) -> String {
    let c = r
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(c.contains(attr), "{c}");
    }
    c.split(';')
        .next()
        .unwrap()
        .strip_prefix("__Host-amble_portal=")
        .unwrap()
        .to_owned()
}

fn csrf(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().unwrap().to_owned()
}

fn state(page: &str, purpose: &str) -> String {
    let key = format!("data-purpose=\"{purpose}\" data-state=\"");
    let at = page.find(&key).unwrap() + key.len();
    page[at..].split('"').next().unwrap().to_owned()
}

async fn audit_entries(fx: &Fixture) -> Vec<serde_json::Value> {
    let mut audit = AuditClient::new(fx.channel("auditor-1"));
    let cp = audit
        .checkpoint(pb::CheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    let page = audit
        .entries(pb::EntriesRequest {
            start: 0,
            end: cp.size,
        })
        .await
        .unwrap()
        .into_inner();
    page.entries
        .iter()
        .map(|e| serde_json::from_slice(e).unwrap())
        .collect()
}

/// Files a profile for `reference` through the app, so the node knows the person.
async fn add_person(fx: &Fixture, reference: &str) {
    ArchiveClient::new(fx.channel("crm"))
        .append(pb::AppendRequest {
            records: vec![pb::NewRecord {
                r#ref: reference.into(),
                collection: "profile".into(),
                time: "2026-05-01T10:00:00Z".into(),
                data_json: r#"{"display_name":"Ann"}"#.into(),
            }],
        })
        .await
        .unwrap();
}

async fn start_with_subject() -> Fixture {
    let fx = Fixture::start_with_portal().await;
    add_person(&fx, REF).await;
    fx
}

fn link(fx: &Fixture) -> String {
    fx.portal.as_ref().unwrap().1.issue(REF).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_opens_one_session_once_and_a_bad_or_missing_one_is_refused() {
    let fx = start_with_subject().await;
    assert!(fx.portal.as_ref().unwrap().1.issue("phone:+1999").is_err());
    let t = link(&fx);

    let bad = request(&fx, Method::GET, "/?t=00ff", None, None).await;
    assert_eq!(bad.status, StatusCode::FORBIDDEN);
    assert_eq!(
        request(&fx, Method::GET, "/", None, None).await.status,
        StatusCode::FORBIDDEN
    );

    let first = request(&fx, Method::GET, &format!("/?t={t}"), None, None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let sid = session_cookie(&first);
    // Plain-language purposes that rest on consent, and only those.
    assert!(first.body.contains("To suggest products and tips"));
    assert!(first.body.contains("To teach our assistant"));
    assert!(!first.body.contains("To answer your questions"));
    assert_eq!(state(&first.body, "personalisation"), "not given");
    assert!(first.headers.get(header::CONTENT_SECURITY_POLICY).is_some());

    let again = request(&fx, Method::GET, &format!("/?t={t}"), None, None).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN);
    assert!(again.headers.get(header::SET_COOKIE).is_none());

    let back = request(&fx, Method::GET, "/", Some(&sid), None).await;
    assert_eq!(back.status, StatusCode::OK);
    assert_eq!(
        request(&fx, Method::GET, "/", Some("forged"), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_changes_need_the_csrf_token_and_reach_the_node_and_the_audit_log() {
    let fx = start_with_subject().await;
    let t = link(&fx);
    let open = request(&fx, Method::GET, &format!("/?t={t}"), None, None).await;
    let sid = session_cookie(&open);
    let token = csrf(&open.body);

    for form in [
        "purpose=personalisation&action=give".to_owned(),
        "csrf=0000&purpose=personalisation&action=give".to_owned(),
    ] {
        let r = request(&fx, Method::POST, "/consent", Some(&sid), Some(&form)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{form}");
    }
    let contract = format!("csrf={token}&purpose=support&action=withdraw");
    let r = request(&fx, Method::POST, "/consent", Some(&sid), Some(&contract)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let give = format!("csrf={token}&purpose=personalisation&action=give");
    let r = request(&fx, Method::POST, "/consent", Some(&sid), Some(&give)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = request(&fx, Method::GET, "/", Some(&sid), None).await;
    assert_eq!(state(&page.body, "personalisation"), "given");

    let history = SubjectClient::new(fx.channel("portal"))
        .get_consent(pb::SubjectRef { r#ref: REF.into() })
        .await
        .unwrap()
        .into_inner()
        .history_json;
    assert!(history.contains("personalisation"), "{history}");

    let withdraw = format!("csrf={token}&purpose=personalisation&action=withdraw");
    let r = request(&fx, Method::POST, "/consent", Some(&sid), Some(&withdraw)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = request(&fx, Method::GET, "/", Some(&sid), None).await;
    assert_eq!(state(&page.body, "personalisation"), "not given");

    let changes: Vec<(String, String)> = audit_entries(&fx)
        .await
        .into_iter()
        .filter(|e| e["action"] == "consent_change" && e["actor"] == OPERATOR_LINK)
        .map(|e| {
            assert_eq!(e["role"], "subject-portal");
            (
                e["purpose"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            ("personalisation".into(), "given".into()),
            ("personalisation".into(), "withdrawn".into())
        ]
    );
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_downloads_as_json_and_erasure_needs_confirmation_and_ends_the_session() {
    let fx = start_with_subject().await;
    let t = link(&fx);
    let open = request(&fx, Method::GET, &format!("/?t={t}"), None, None).await;
    let sid = session_cookie(&open);
    let token = csrf(&open.body);

    let x = request(&fx, Method::GET, "/export", Some(&sid), None).await;
    assert_eq!(x.status, StatusCode::OK);
    let disp = x.headers[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert!(disp.starts_with("attachment"), "{disp}");
    let doc: serde_json::Value = serde_json::from_str(&x.body).unwrap();
    assert!(x.body.contains("Ann"));
    assert_eq!(doc["signature"]["alg"], "EdDSA");

    let no_csrf = request(&fx, Method::POST, "/erase", Some(&sid), Some("confirm=yes")).await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    let unconfirmed = format!("csrf={token}");
    let r = request(&fx, Method::POST, "/erase", Some(&sid), Some(&unconfirmed)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let confirmed = format!("csrf={token}&confirm=yes");
    let r = request(&fx, Method::POST, "/erase", Some(&sid), Some(&confirmed)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("id=\"erased\""));
    assert_eq!(
        request(&fx, Method::GET, "/", Some(&sid), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let entries = audit_entries(&fx).await;
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "erase" && e["actor"] == OPERATOR_LINK)
    );
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "export" && e["actor"] == OPERATOR_LINK)
    );
    fx.stop().await;
}

/// In each language the page speaks, a person opens their link in headless Chromium, gives a
/// consent and chooses how much AI serves them by clicking, and switches the page's language
/// with its switch. With `AMBLE_SCREENSHOTS=DIR` the page of each language is saved there as a
/// phone-sized PNG (Chinese needs a CJK font, e.g. Debian's `fonts-noto-cjk`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_each_language_a_person_clicks_through_their_choices_in_chromium() {
    let Some(program) = browser::chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required in CI; .ci/run installs it"
        );
        eprintln!("SKIPPED: chromium is not installed (apt-get install chromium)");
        return;
    };
    let fx = start_with_subject().await;
    let port = fx.portal.as_ref().unwrap().0.port();
    let shots = std::env::var_os("AMBLE_SCREENSHOTS").map(std::path::PathBuf::from);
    let languages = [
        (
            "en-GB,en;q=0.9",
            "en",
            "Your data and your choices",
            "zh-CN",
        ),
        (
            "zh-CN,zh;q=0.9,en;q=0.5",
            "zh-CN",
            "您的数据与您的选择",
            "zh-TW",
        ),
        ("zh-TW,zh;q=0.9", "zh-TW", "您的資料與您的選擇", "en"),
    ];
    for (i, (accept, lang, heading, next)) in languages.into_iter().enumerate() {
        let person = format!("phone:+1555010{i}");
        add_person(&fx, &person).await;
        let t = fx.portal.as_ref().unwrap().1.issue(&person).unwrap();
        let url = format!("https://127.0.0.1:{port}/?t={t}");
        let profile = fx.tmp.path().join(format!("chromium-{lang}"));
        let png = tokio::task::spawn_blocking(move || {
            let mut b = browser::Browser::start(program, &profile, accept);
            b.navigate(&url);
            b.wait_for(&format!("document.documentElement.lang === '{lang}'"));
            assert_eq!(b.eval("document.querySelector('h1').textContent"), heading);
            assert_eq!(
                b.eval("document.scripts.length"),
                0,
                "the page runs no script"
            );
            let card = "li[data-purpose=\"personalisation\"]";
            b.click(&format!("{card} button"));
            b.wait_for(&format!(
                "document.querySelector('{card}').dataset.state === 'given'"
            ));
            b.click("input[name=level][value=ai_suggests]");
            b.click("#save-assistance");
            b.wait_for("document.querySelectorAll('#receipts li').length === 2");
            assert_eq!(
                b.eval("document.querySelector('input[value=ai_suggests]').checked"),
                true
            );
            let png = b.screenshot();
            b.click(&format!("#languages a[hreflang=\"{next}\"]"));
            b.wait_for(&format!("document.documentElement.lang === '{next}'"));
            // The choice outlives the page it was made on.
            b.navigate(&format!("https://127.0.0.1:{port}/log"));
            b.wait_for(&format!(
                "location.pathname === '/log' && document.documentElement.lang === '{next}'"
            ));
            png
        })
        .await
        .unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        if let Some(dir) = &shots {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(format!("portal-{lang}.png")), &png).unwrap();
        }
        // The browser used the link; it cannot be used again.
        let again = request(&fx, Method::GET, &format!("/?t={t}"), None, None).await;
        assert_eq!(again.status, StatusCode::FORBIDDEN);
    }
    // Each click reached the node as the person's choice, made on the page.
    let entries = audit_entries(&fx).await;
    let made = |reason: &str| {
        entries
            .iter()
            .filter(|e| {
                e["action"] == "consent_change"
                    && e["reason"] == reason
                    && e["actor"] == OPERATOR_LINK
            })
            .count()
    };
    assert_eq!(made("given"), 3);
    assert_eq!(made("ai_assistance=ai_suggests"), 3);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_issues_links_over_grpc_and_other_roles_cannot() {
    let fx = start_with_subject().await;
    let issued = SubjectClient::new(fx.channel("crm"))
        .issue_portal_link(pb::SubjectRef { r#ref: REF.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(issued.path, format!("/?t={}", issued.token));
    assert_eq!(issued.token.len(), 64);
    assert_eq!(issued.expires_in_secs, 900);
    let open = request(&fx, Method::GET, &issued.path, None, None).await;
    assert_eq!(open.status, StatusCode::OK);

    let err = SubjectClient::new(fx.channel("desk"))
        .issue_portal_link(pb::SubjectRef { r#ref: REF.into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = SubjectClient::new(fx.channel("crm"))
        .issue_portal_link(pb::SubjectRef {
            r#ref: "phone:+1999".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        audit_entries(&fx)
            .await
            .iter()
            .any(|e| e["action"] == "portal_link" && e["actor"] == "crm")
    );
    fx.stop().await;

    let plain = Fixture::start().await;
    assert!(plain.portal.is_none());
    let err = SubjectClient::new(plain.channel("crm"))
        .issue_portal_link(pb::SubjectRef { r#ref: REF.into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    plain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_link_expires() {
    let fx = Fixture::start_with_portal_ttl(1).await;
    add_person(&fx, REF).await;
    let t = link(&fx);
    fx.clock.advance(std::time::Duration::from_millis(500));
    let early = request(&fx, Method::GET, &format!("/?t={t}"), None, None).await;
    assert_eq!(
        early.status,
        StatusCode::OK,
        "still valid a moment before its expiry"
    );
    let t = link(&fx);
    fx.clock.advance(std::time::Duration::from_millis(1000));
    let late = request(&fx, Method::GET, &format!("/?t={t}"), None, None).await;
    assert_eq!(late.status, StatusCode::FORBIDDEN);
    fx.stop().await;
}

/// The requests the register holds, as the privacy officer sees them.
async fn register(fx: &Fixture) -> Vec<pb::RegisteredRequest> {
    pb::register_client::RegisterClient::new(fx.channel("dpo"))
        .list_requests(pb::ListRequestsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .requests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_expired_link_or_session_files_no_request() {
    let fx = Fixture::start_with_portal_ttl(1).await;
    add_person(&fx, REF).await;
    // A forged session cookie, on every form that files a request.
    let forged = "ab".repeat(32);
    for (path, form) in [
        ("/erase", "csrf=x&confirm=yes"),
        ("/restriction", "csrf=x&action=restrict"),
        ("/objection", "csrf=x&purpose=analytics&action=object"),
        ("/review", "csrf=x&decision=1"),
    ] {
        let r = request(&fx, Method::POST, path, Some(&forged), Some(form)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
    }
    // A link past its expiry opens nothing.
    let t = link(&fx);
    fx.clock.advance(std::time::Duration::from_millis(1500));
    let late = request(&fx, Method::GET, &format!("/?t={t}"), None, None).await;
    assert_eq!(late.status, StatusCode::FORBIDDEN);
    // A session past its end files nothing, even with its own CSRF token.
    let opened = request(&fx, Method::GET, &format!("/?t={}", link(&fx)), None, None).await;
    let (sid, token) = (session_cookie(&opened), csrf(&opened.body));
    let restrict = |sid: String, token: String| {
        let fx = &fx;
        async move {
            let form = format!("csrf={token}&action=restrict");
            request(fx, Method::POST, "/restriction", Some(&sid), Some(&form))
                .await
                .status
        }
    };
    fx.clock.advance(std::time::Duration::from_secs(1801));
    assert_eq!(restrict(sid, token).await, StatusCode::FORBIDDEN);
    assert!(register(&fx).await.is_empty());

    // A live session does file one, answered at once, vouched for by the link's issuer.
    let opened = request(&fx, Method::GET, &format!("/?t={}", link(&fx)), None, None).await;
    let (sid, token) = (session_cookie(&opened), csrf(&opened.body));
    assert_eq!(restrict(sid, token).await, StatusCode::SEE_OTHER);
    let filed = register(&fx).await;
    assert_eq!(filed.len(), 1);
    assert_eq!(filed[0].kind, "restriction");
    assert_eq!(filed[0].outcome, "done");
    assert_eq!(
        filed[0].verified_by,
        format!("subject-portal:{OPERATOR_LINK}")
    );
    fx.stop().await;
}

async fn app_link(fx: &Fixture, issuer: &str) -> String {
    SubjectClient::new(fx.channel(issuer))
        .issue_portal_link(pb::SubjectRef { r#ref: REF.into() })
        .await
        .unwrap()
        .into_inner()
        .path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_an_app_issued_cannot_export_or_erase_and_the_log_names_the_app() {
    let fx = start_with_subject().await;
    let open = request(&fx, Method::GET, &app_link(&fx, "crm").await, None, None).await;
    assert_eq!(open.status, StatusCode::OK);
    assert!(!open.body.contains("id=\"export\""), "{}", open.body);
    assert!(!open.body.contains("action=\"/erase\""), "{}", open.body);
    assert!(open.body.contains("id=\"verify\""), "{}", open.body);
    let sid = session_cookie(&open);
    let token = csrf(&open.body);

    // The app may not export or erase over gRPC; its link may not either.
    let x = request(&fx, Method::GET, "/export", Some(&sid), None).await;
    assert_eq!(x.status, StatusCode::FORBIDDEN);
    assert!(!x.body.contains("Ann"));
    let confirmed = format!("csrf={token}&confirm=yes");
    let r = request(&fx, Method::POST, "/erase", Some(&sid), Some(&confirmed)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The person is still there, and their consent choices still work through the link.
    let give = format!("csrf={token}&purpose=personalisation&action=give");
    let r = request(&fx, Method::POST, "/consent", Some(&sid), Some(&give)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let export = SubjectClient::new(fx.channel("ops"))
        .export(pb::SubjectRef { r#ref: REF.into() })
        .await;
    assert!(
        export.is_ok(),
        "the person was erased through an app's link"
    );

    let entries = audit_entries(&fx).await;
    let via_app: Vec<&str> = entries
        .iter()
        .filter(|e| e["actor"] == "portal-link/app/crm")
        .map(|e| e["action"].as_str().unwrap_or_default())
        .collect();
    assert!(via_app.contains(&"consent_change"), "{via_app:?}");
    assert!(
        !via_app.contains(&"export") && !via_app.contains(&"erase"),
        "{via_app:?}"
    );
    assert!(
        !entries
            .iter()
            .any(|e| e["actor"] == "subject-portal" && e["action"] == "consent_change"),
        "a portal action was attributed to the person rather than to the link's issuer"
    );
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_from_the_identity_checking_front_end_unlocks_the_export() {
    let fx = start_with_subject().await;
    let open = request(&fx, Method::GET, &app_link(&fx, "portal").await, None, None).await;
    assert!(open.body.contains("id=\"export\""), "{}", open.body);
    let sid = session_cookie(&open);
    let x = request(&fx, Method::GET, "/export", Some(&sid), None).await;
    assert_eq!(x.status, StatusCode::OK);
    assert!(x.body.contains("Ann"));
    assert!(
        audit_entries(&fx)
            .await
            .iter()
            .any(|e| e["action"] == "export" && e["actor"] == "portal-link/subject-portal/portal")
    );
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_issuer_cannot_fill_the_table_of_links_for_everyone() {
    let fx = start_with_subject().await;
    let mut crm = SubjectClient::new(fx.channel("crm"));
    let mut refused = None;
    for _ in 0..1_001 {
        if let Err(e) = crm
            .issue_portal_link(pb::SubjectRef { r#ref: REF.into() })
            .await
        {
            refused = Some(e);
            break;
        }
    }
    let err = refused.expect("one app issued more than 1,000 open links");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("crm"), "{}", err.message());
    assert!(
        !err.message().contains("configuration"),
        "{}",
        err.message()
    );
    // Another issuer is not blocked by the first one's links.
    SubjectClient::new(fx.channel("portal"))
        .issue_portal_link(pb::SubjectRef { r#ref: REF.into() })
        .await
        .unwrap();
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_body_that_trickles_in_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fx = start_with_subject().await;
    let open = request(&fx, Method::GET, &format!("/?t={}", link(&fx)), None, None).await;
    let sid = session_cookie(&open);
    let mut tls = portal_tls(&fx).await;
    // Headers promise 100 bytes; 10 arrive, then nothing.
    tls.write_all(
        format!(
            "POST /consent HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: __Host-amble_portal={sid}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ncsrf=00000"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tls.flush().await.unwrap();
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(30), tls.read(&mut answer))
        .await
        .expect("the portal waited for the rest of the body for 30 s")
        .unwrap();
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_ends_the_session() {
    let fx = start_with_subject().await;
    let open = request(&fx, Method::GET, &format!("/?t={}", link(&fx)), None, None).await;
    let sid = session_cookie(&open);
    let token = csrf(&open.body);
    assert!(open.body.contains("id=\"logout\""));
    let bad = request(&fx, Method::POST, "/logout", Some(&sid), Some("csrf=nope")).await;
    assert_eq!(bad.status, StatusCode::FORBIDDEN);
    let out = request(
        &fx,
        Method::POST,
        "/logout",
        Some(&sid),
        Some(&format!("csrf={token}")),
    )
    .await;
    assert_eq!(out.status, StatusCode::OK);
    let cleared = out.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.starts_with("__Host-amble_portal=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let after = request(&fx, Method::GET, "/", Some(&sid), None).await;
    assert_eq!(after.status, StatusCode::FORBIDDEN);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_looping_on_its_page_is_slowed_before_it_reaches_the_node() {
    let fx = start_with_subject().await;
    let t = link(&fx);
    let open = request(&fx, Method::GET, &format!("/?t={t}"), None, None).await;
    let sid = session_cookie(&open);
    let logged_before = audit_entries(&fx).await.len();

    let (mut served, mut refused) = (0, 0);
    for _ in 0..60 {
        let r = request(&fx, Method::GET, "/", Some(&sid), None).await;
        match r.status {
            StatusCode::OK => served += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(r.headers.get(header::RETRY_AFTER).unwrap(), "1");
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert!(refused > 0, "60 views in a row were all served");
    assert!(
        served >= 19,
        "a person's burst of clicks was refused: {served}"
    );
    // Every view served is in the audit log; none refused is.
    let logged = audit_entries(&fx).await.len() - logged_before;
    assert_eq!(
        logged, served as usize,
        "{served} served, {refused} refused"
    );

    // A second later the person is served again.
    fx.clock.advance(std::time::Duration::from_millis(1100));
    let r = request(&fx, Method::GET, "/", Some(&sid), None).await;
    assert_eq!(r.status, StatusCode::OK);
    fx.stop().await;
}

/// Reads the subject for `purpose` over gRPC as the app `crm`; the status code it ends with.
async fn read_code(fx: &Fixture, purpose: &str) -> tonic::Code {
    let call = ArchiveClient::new(fx.channel("crm"))
        .read(pb::ReadRequest {
            r#ref: REF.into(),
            purpose: purpose.into(),
            from: String::new(),
            to: String::new(),
        })
        .await;
    match call {
        Err(s) => s.code(),
        Ok(stream) => {
            let mut stream = stream.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => break tonic::Code::Ok,
                    Err(s) => break s.code(),
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sets_their_ai_assistance_restricts_and_objects_from_the_page() {
    let fx = start_with_subject().await;
    let t = link(&fx);
    let open = request(&fx, Method::GET, &format!("/?t={t}"), None, None).await;
    let sid = session_cookie(&open);
    let token = csrf(&open.body);
    assert!(
        open.body.contains("value=\"human_only\" checked"),
        "the default level"
    );
    assert!(
        open.body
            .contains("data-purpose=\"analytics\" data-objected=\"no\"")
    );

    // Without the page's token, nothing changes.
    let forged = "level=ai_answers";
    let r = request(&fx, Method::POST, "/assistance", Some(&sid), Some(forged)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let bad = format!("csrf={token}&level=robots_only");
    let r = request(&fx, Method::POST, "/assistance", Some(&sid), Some(&bad)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let level = format!("csrf={token}&level=ai_answers");
    let r = request(&fx, Method::POST, "/assistance", Some(&sid), Some(&level)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let object = format!("csrf={token}&purpose=analytics&action=object");
    let r = request(&fx, Method::POST, "/objection", Some(&sid), Some(&object)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(read_code(&fx, "support").await, tonic::Code::Ok);
    let restrict = format!("csrf={token}&action=restrict");
    let r = request(
        &fx,
        Method::POST,
        "/restriction",
        Some(&sid),
        Some(&restrict),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);

    let page = request(&fx, Method::GET, "/", Some(&sid), None).await;
    assert!(
        page.body.contains("value=\"ai_answers\" checked"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("data-purpose=\"analytics\" data-objected=\"yes\"")
    );
    assert!(page.body.contains("id=\"restricted\""));
    // The node honours the restriction at the next read over gRPC.
    assert_eq!(
        read_code(&fx, "support").await,
        tonic::Code::PermissionDenied
    );
    let history = SubjectClient::new(fx.channel("portal"))
        .get_consent(pb::SubjectRef { r#ref: REF.into() })
        .await
        .unwrap()
        .into_inner()
        .history_json;
    for part in ["\"ai_answers\"", "\"restriction\"", "\"objection\""] {
        assert!(history.contains(part), "{part} missing: {history}");
    }

    let lift = format!("csrf={token}&action=lift");
    let r = request(&fx, Method::POST, "/restriction", Some(&sid), Some(&lift)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(read_code(&fx, "support").await, tonic::Code::Ok);

    let reasons: Vec<String> = audit_entries(&fx)
        .await
        .into_iter()
        .filter(|e| e["action"] == "consent_change" && e["actor"] == OPERATOR_LINK)
        .map(|e| e["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        reasons,
        [
            "ai_assistance=ai_answers",
            "objection=on",
            "restriction=on",
            "restriction=off"
        ]
    );
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_sets_the_rights_over_grpc_and_an_agent_cannot() {
    let fx = start_with_subject().await;
    let mut crm = SubjectClient::new(fx.channel("crm"));
    let receipt = crm
        .set_restriction(pb::SetRestrictionRequest {
            r#ref: REF.into(),
            restrict: true,
        })
        .await
        .unwrap()
        .into_inner()
        .receipt_json;
    assert!(receipt.contains("\"restriction\""), "{receipt}");
    assert_eq!(
        read_code(&fx, "support").await,
        tonic::Code::PermissionDenied
    );
    let again = crm
        .set_restriction(pb::SetRestrictionRequest {
            r#ref: REF.into(),
            restrict: true,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    let not_li = crm
        .set_objection(pb::SetObjectionRequest {
            r#ref: REF.into(),
            purpose: "support".into(),
            object: true,
        })
        .await
        .unwrap_err();
    assert_eq!(not_li.code(), tonic::Code::InvalidArgument);
    let bad_level = crm
        .set_assistance(pb::SetAssistanceRequest {
            r#ref: REF.into(),
            level: "always".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_level.code(), tonic::Code::InvalidArgument);
    let agent = SubjectClient::new(fx.channel("desk"))
        .set_assistance(pb::SetAssistanceRequest {
            r#ref: REF.into(),
            level: "ai_answers".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(agent.code(), tonic::Code::PermissionDenied);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_corrects_a_record_over_grpc_and_reads_see_only_the_correction() {
    let fx = Fixture::start_with_portal().await;
    let appended = ArchiveClient::new(fx.channel("crm"))
        .append(pb::AppendRequest {
            records: vec![pb::NewRecord {
                r#ref: REF.into(),
                collection: "profile".into(),
                time: "2026-05-01T10:00:00Z".into(),
                data_json: r#"{"display_name":"Ann","city":"Shanghai"}"#.into(),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let record_id = appended.appended[0].record_id;
    let mut crm = SubjectClient::new(fx.channel("crm"));
    let fixed = crm
        .rectify(pb::RectifyRequest {
            r#ref: REF.into(),
            record_id,
            fields_json: r#"{"display_name":"Anne"}"#.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fixed.collection, "profile");
    let stream = ArchiveClient::new(fx.channel("crm"))
        .read(pb::ReadRequest {
            r#ref: REF.into(),
            purpose: "support".into(),
            from: String::new(),
            to: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let text = amble_proto::chunks::join(stream, 1 << 20).await.unwrap();
    assert!(text.contains("Anne") && !text.contains("\"Ann\""), "{text}");
    for (fields, code) in [
        (r#"["not an object"]"#, tonic::Code::InvalidArgument),
        (r#"{}"#, tonic::Code::InvalidArgument),
    ] {
        let e = crm
            .rectify(pb::RectifyRequest {
                r#ref: REF.into(),
                record_id,
                fields_json: fields.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{fields}");
    }
    let unknown = crm
        .rectify(pb::RectifyRequest {
            r#ref: REF.into(),
            record_id: record_id + 1000,
            fields_json: r#"{"city":"x"}"#.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_page_says_what_was_done_and_by_what_kind_of_reader_never_who() {
    let fx = start_with_subject().await;
    let t = link(&fx);
    let open = request(&fx, Method::GET, &format!("/?t={t}"), None, None).await;
    let sid = session_cookie(&open);
    let token = csrf(&open.body);
    assert!(open.body.contains("href=\"/log\""));
    let page = request(&fx, Method::GET, "/log", Some(&sid), None).await;
    assert_eq!(page.status, StatusCode::OK);
    for said in [
        "new records were added to your file",
        "the organisation&#39;s app",
        "a link to this page was issued",
        "an administrator",
    ] {
        assert!(page.body.contains(said), "{said} missing: {}", page.body);
    }
    for id in ["crm", "node:portal", OPERATOR_LINK] {
        assert!(!page.body.contains(id), "{id} shown: {}", page.body);
    }
    // Nothing here was decided by automated means, so there is nothing to review.
    assert!(!page.body.contains("action=\"/review\""));
    let forged = "decision=1";
    let r = request(&fx, Method::POST, "/review", Some(&sid), Some(forged)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let not_a_decision = format!("csrf={token}&decision=0");
    let r = request(
        &fx,
        Method::POST,
        "/review",
        Some(&sid),
        Some(&not_a_decision),
    )
    .await;
    assert_ne!(
        r.status,
        StatusCode::OK,
        "an append is not a decision to review"
    );
    fx.stop().await;
}

/// Regression: the page once read consent state by the wall clock, so a consent that had
/// lapsed by the node's clock still showed as given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_consent_state_by_the_node_s_clock() {
    let fx = start_with_subject().await;
    let until = time::OffsetDateTime::now_utc() + time::Duration::seconds(30);
    SubjectClient::new(fx.channel("crm"))
        .set_consent(pb::SetConsentRequest {
            r#ref: REF.into(),
            purpose: "personalisation".into(),
            give: true,
            valid_until: until
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap(),
            explicit: false,
        })
        .await
        .unwrap();
    let t = link(&fx);
    let open = request(&fx, Method::GET, &format!("/?t={t}"), None, None).await;
    assert_eq!(state(&open.body, "personalisation"), "given");
    let sid = session_cookie(&open);
    fx.clock.advance(std::time::Duration::from_secs(60));
    let page = request(&fx, Method::GET, "/", Some(&sid), None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(state(&page.body, "personalisation"), "not given");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_speaks_the_browser_s_language_and_keeps_the_one_the_person_picks() {
    let fx = start_with_subject().await;
    let zh_tw: &[(&str, &str)] = &[("accept-language", "zh-TW,zh;q=0.9,en;q=0.8")];
    let zh_cn: &[(&str, &str)] = &[("accept-language", "zh-CN")];
    // A refusal, before any session, speaks the browser's language too.
    let bad = request_with(&fx, Method::GET, "/?t=00ff", None, None, zh_cn).await;
    assert_eq!(bad.status, StatusCode::FORBIDDEN);
    assert!(
        bad.body.contains("此链接已过期或已被使用。"),
        "{}",
        bad.body
    );

    let t = link(&fx);
    let first = request_with(&fx, Method::GET, &format!("/?t={t}"), None, None, zh_tw).await;
    assert_eq!(first.status, StatusCode::OK);
    let page = &first.body;
    assert!(page.contains("<html lang=\"zh-TW\">"), "{page}");
    assert!(page.contains("<h1>您的資料與您的選擇</h1>"));
    // The policy's own translation of each purpose, the organisation and its privacy contact.
    assert!(page.contains("為了向您推薦適合您人生階段和目標的產品與建議。"));
    // The controller from the policy's [controller], at the head and the foot.
    assert!(page.contains("<p class=\"org\" id=\"organisation\">Example Bank Co., Ltd.</p>"));
    assert!(page.contains(
        "關於您資料的問題，請聯絡： Data Protection Officer, privacy@bank.example, +86 21 0000 0000"
    ));
    let sid = session_cookie(&first);

    let form = format!("csrf={}&purpose=personalisation&action=give", csrf(page));
    let gave = request_with(
        &fx,
        Method::POST,
        "/consent",
        Some(&sid),
        Some(&form),
        zh_tw,
    )
    .await;
    assert_eq!(gave.status, StatusCode::SEE_OTHER);
    let after = request_with(&fx, Method::GET, "/", Some(&sid), None, zh_tw)
        .await
        .body;
    // When and how it was given, and the receipt, in the person's language.
    let today = time::OffsetDateTime::now_utc();
    assert!(
        after.contains(&format!(
            "您於 {}年{}月",
            today.year(),
            u8::from(today.month())
        )) && after.contains("在本頁面同意。"),
        "{after}"
    );
    assert!(after.contains("您同意了：為了向您推薦"));

    // The switch wins over the browser, for the rest of the session; a language the page does
    // not speak changes nothing.
    let switched = request_with(&fx, Method::GET, "/?lang=zh-CN", Some(&sid), None, zh_tw).await;
    assert!(switched.body.contains("<html lang=\"zh-CN\">"));
    let log = request_with(&fx, Method::GET, "/log", Some(&sid), None, zh_tw)
        .await
        .body;
    assert!(
        log.contains("<html lang=\"zh-CN\">") && log.contains("您同意了：为了向您推荐"),
        "{log}"
    );
    let odd = request_with(&fx, Method::GET, "/?lang=xx", Some(&sid), None, zh_tw).await;
    assert!(odd.body.contains("<html lang=\"zh-CN\">"));
    let en = request_with(&fx, Method::GET, "/?lang=en", Some(&sid), None, zh_tw).await;
    assert!(en.body.contains("Given on ") && en.body.contains(", on this page."));
    fx.stop().await;
}
