//! The SMS brandname route family (`/sms/api/*`): the tenant's SMS account injected into the JSON
//! body, what the SMS host receives, the gateway's own answers (403 / 404 / 400), eTelecom's
//! answers passed through (business errors, 401), the SMS bucket, caching and upstream failures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::proc::Gateway;
use common::{Harness, SHOP_API, Setup, post_with, sample, sms_account, sms_setup, write};
use etelecom_gateway::mock::{MockAccounts, MockKeyType, MockShop};
use serde_json::Value;

const SEND: &str = "/sms/api/OmniMessage/SendMessage";
const STATUS: &str = "/sms/api/OmniReport/GetStatusOmni";
const CALL_LOGS: &str = "/v1/shop.Etelecom/ListCallLogs";
const OTP: &str = r#"{"phonenumber":"84901234567","routerule":["3"],"templatecode":"OTP1","list_param":{"otp":"123456"}}"#;

/// The JSON body the SMS host received in request `i`.
fn received_body(h: &Harness, i: usize) -> Value {
    serde_json::from_slice(&h.mock.received()[i].body).unwrap()
}

#[tokio::test]
async fn each_tenant_gets_its_own_sms_account_in_the_body() {
    let h = Harness::with(sms_setup()).await;
    for (i, tenant) in ["acme", "globex"].into_iter().enumerate() {
        let r = h.call(SEND, Some(tenant), OTP).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!((&v["status"], &v["code"]), (&"1".into(), &"Success".into()));
        let id = v["idOmniMess"].as_str().unwrap();
        assert!(id.starts_with("ICOMNI") && id.len() == 36, "{id}");

        let shop = &h.accounts.shops[i];
        let got = &h.mock.received()[2 * i];
        assert_eq!(got.path, "/api/OmniMessage/SendMessage");
        assert_eq!(
            got.accepted_key,
            Some(MockKeyType::Sms {
                shop: shop.id.clone()
            })
        );
        let body = received_body(&h, 2 * i);
        assert_eq!(body["username"], shop.sms_username.as_str());
        assert_eq!(body["password"], shop.sms_password.as_str());
        assert_eq!(body["phonenumber"], "84901234567");
        assert_eq!(body["list_param"]["otp"], "123456");
        assert_eq!(body["routerule"][0], "3");

        // The status read reaches the same account and finds the message.
        let r = h
            .call(STATUS, Some(tenant), &format!(r#"{{"idOmniMess":"{id}"}}"#))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["status"], "SUCCESS", "{v}");
        assert_eq!(v["phonenumber"], "84901234567");
        assert_eq!(
            h.mock.received()[2 * i + 1].path,
            "/api/OmniReport/GetStatusOmni"
        );
        assert_eq!(
            received_body(&h, 2 * i + 1)["username"],
            shop.sms_username.as_str()
        );
    }
}

#[tokio::test]
async fn caller_sent_username_and_password_are_replaced() {
    let h = Harness::with(sms_setup()).await;
    let body = r#"{"username":"caller-user","password":"caller-password","phonenumber":"84901234567","templatecode":"OTP1","password":"second-copy"}"#;
    let r = h.call(SEND, Some("acme"), body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = &h.mock.received()[0];
    let text = String::from_utf8_lossy(&got.body);
    assert!(!text.contains("caller-"), "{text}");
    assert!(!text.contains("second-copy"), "{text}");
    let v = received_body(&h, 0);
    assert_eq!(v["username"], h.accounts.shops[0].sms_username.as_str());
    assert_eq!(v["password"], h.accounts.shops[0].sms_password.as_str());
}

#[tokio::test]
async fn no_authorization_header_and_no_bearer_key_reach_the_sms_host() {
    let h = Harness::with(sms_setup()).await;
    let r = h
        .call_with(
            SEND,
            Some("acme"),
            OTP,
            &[
                ("authorization", "Bearer caller-own-token"),
                ("proxy-authorization", "Basic Y2FsbGVy"),
                ("cookie", "session=1"),
                ("x-request-id", "sms-request-1"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = &h.mock.received()[0];
    for name in [
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-tenant-id",
    ] {
        assert!(got.headers.get(name).is_none(), "{name}: {:?}", got.headers);
    }
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(got.headers["x-request-id"], "sms-request-1");
    let text = String::from_utf8_lossy(&got.body);
    let shop = &h.accounts.shops[0];
    for key in [&shop.api_key, &shop.shop_key, &h.accounts.partner_key] {
        let secret = key.split_once(':').unwrap().1;
        assert!(
            !text.contains(secret),
            "a Bearer key in the SMS body: {text}"
        );
    }
}

#[tokio::test]
async fn a_tenant_without_sms_credentials_gets_403_and_nothing_is_forwarded() {
    let h = Harness::with(Setup {
        sms: sms_setup().sms,
        ..Setup::default()
    })
    .await;
    for path in [SEND, STATUS] {
        let r = h.call(path, Some("acme"), OTP).await;
        r.assert_gateway_error(403, "permission_denied");
        let msg = r.json()["msg"].as_str().unwrap().to_owned();
        assert!(msg.contains("sms"), "{msg}");
    }
    assert_eq!(h.mock.request_count(), 0);
}

#[tokio::test]
async fn without_an_sms_section_the_sms_routes_are_404() {
    let h = Harness::with(Setup {
        sms: None,
        ..sms_setup()
    })
    .await;
    for path in [SEND, STATUS, "/sms/api/OmniMessage/SendBulk"] {
        let r = h.call(path, Some("acme"), OTP).await;
        r.assert_gateway_error(404, "bad_route");
        assert!(
            r.json()["msg"].as_str().unwrap().contains("SMS"),
            "{}",
            r.text()
        );
    }
    // The API routes are unaffected.
    assert_eq!(h.call(SHOP_API, Some("acme"), "{}").await.status, 200);
    assert_eq!(h.mock.request_count(), 1);
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_400() {
    let h = Harness::with(sms_setup()).await;
    for body in ["[]", "\"x\"", "{\"a\":", "username=a&password=b"] {
        let r = h.call(SEND, Some("acme"), body).await;
        r.assert_gateway_error(400, "invalid_argument");
    }
    assert_eq!(h.mock.request_count(), 0);
    // An empty body is `{}`: the account is still injected.
    let r = h.call(STATUS, Some("acme"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        received_body(&h, 0)["username"],
        h.accounts.shops[0].sms_username.as_str()
    );
}

#[tokio::test]
async fn business_errors_and_401_pass_through_unchanged_and_the_401_is_counted() {
    let h = Harness::with(Setup {
        // globex's username with acme's password: the SMS host refuses the pair.
        globex: "sms = { username = { file = \"globex.sms_user\" }, password = { file = \"acme.sms_password\" } }".into(),
        ..sms_setup()
    })
    .await;
    let r = h
        .call_with(
            SEND,
            Some("acme"),
            OTP,
            &[("x-mock-behaviour", "sms_status=-3")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        r#"{"code":"You have run out of messages","status":"-3"}"#
    );
    assert!(r.headers.get("x-cache").is_none());
    // A business error the mock derives from the body: no templatecode.
    let r = h
        .call(SEND, Some("acme"), r#"{"phonenumber":"84901234567"}"#)
        .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["status"].as_str()),
        (200, Some("-6"))
    );

    let r = h.call(SEND, Some("globex"), OTP).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), "Unauthorized");
    assert_eq!(r.headers["content-type"], "text/plain; charset=utf-8");
    let m = h.metrics().await;
    let rejected = |tenant: &str| {
        sample(
            &m,
            "etelecom_gateway_credential_rejections_total",
            &[("tenant", tenant), ("key_class", "sms")],
        )
    };
    assert_eq!(rejected("globex"), Some(1.0), "{m}");
    assert_eq!(rejected("acme"), None, "business errors are not rejections");
    assert_eq!(
        sample(
            &m,
            "etelecom_gateway_requests_total",
            &[
                ("tenant", "globex"),
                ("method", "sms.OmniMessage/SendMessage"),
                ("status", "401"),
                ("source", "upstream")
            ],
        ),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test]
async fn the_sms_bucket_is_independent_of_the_tenants_other_buckets() {
    let h = Harness::with(Setup {
        rate_limit: "requests_per_second = 1\nburst = 2".into(),
        acme: format!(
            "{}sms_rate_limit = {{ requests_per_second = 1, burst = 3 }}\n",
            sms_account("acme")
        ),
        ..sms_setup()
    })
    .await;
    // The API bucket (default policy, burst 2) runs dry (ListCallLogs is never cached) ...
    for _ in 0..2 {
        assert_eq!(h.call(CALL_LOGS, Some("acme"), "{}").await.status, 200);
    }
    h.call(CALL_LOGS, Some("acme"), "{}")
        .await
        .assert_gateway_error(429, "resource_exhausted");
    // ... and the SMS bucket still has its own burst of 3, under its own policy name.
    for i in 0..3 {
        let r = h.call(SEND, Some("acme"), OTP).await;
        assert_eq!(r.status, 200, "sms call {i}: {}", r.text());
        assert_eq!(r.headers["ratelimit-policy"], "\"sms\";q=3;w=3");
    }
    let r = h.call(SEND, Some("acme"), OTP).await;
    r.assert_gateway_error(429, "resource_exhausted");
    assert!(
        r.headers["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"sms\";r=0")
    );
    // globex has no sms_rate_limit: its SMS bucket is on the default policy, untouched by acme.
    let r = h.call(SEND, Some("globex"), OTP).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["ratelimit-policy"], "\"default\";q=2;w=2");
    let m = h.metrics().await;
    let decisions = |outcome: &str| {
        sample(
            &m,
            "etelecom_gateway_ratelimit_decisions_total",
            &[
                ("tenant", "acme"),
                ("key_class", "sms"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(decisions("allowed"), Some(3.0), "{m}");
    assert_eq!(decisions("limited"), Some(1.0), "{m}");
}

#[tokio::test]
async fn sms_host_down_is_502_and_a_hang_is_504() {
    let closed = common::closed_addr();
    let h = Harness::with(Setup {
        sms: Some(format!("base_url = \"http://{closed}\"")),
        ..sms_setup()
    })
    .await;
    let r = h.call(SEND, Some("acme"), OTP).await;
    r.assert_gateway_error(502, "unavailable");
    assert!(
        !r.text().contains(&closed.port().to_string()),
        "{}",
        r.text()
    );
    // The eTelecom API is another upstream: unaffected.
    assert_eq!(h.call(SHOP_API, Some("acme"), "{}").await.status, 200);

    let h = Harness::with(Setup {
        sms: Some("base_url = \"$MOCK\"\ntimeout_ms = 300".into()),
        ..sms_setup()
    })
    .await;
    let started = Instant::now();
    let r = h
        .call_with(SEND, Some("acme"), OTP, &[("x-mock-behaviour", "hang")])
        .await;
    let took = started.elapsed();
    r.assert_gateway_error(504, "deadline_exceeded");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn other_sms_paths_follow_the_unknown_methods_rule() {
    let h = Harness::with(sms_setup()).await;
    let r = h
        .call("/sms/api/OmniMessage/SendBulk", Some("acme"), OTP)
        .await;
    // Forwarded (the default rule) with the account injected; the mock host has no such path.
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "Not Found");
    let got = &h.mock.received()[0];
    assert_eq!(got.path, "/api/OmniMessage/SendBulk");
    assert!(got.headers.get("authorization").is_none());
    assert_eq!(
        received_body(&h, 0)["username"],
        h.accounts.shops[0].sms_username.as_str()
    );
    let m = h.metrics().await;
    assert_eq!(
        sample(
            &m,
            "etelecom_gateway_requests_total",
            &[("method", "other"), ("status", "404")]
        ),
        Some(1.0),
        "{m}"
    );
    for bad in ["/sms/api/A/B/C", "/sms/OmniMessage/SendMessage", "/sms"] {
        h.call(bad, Some("acme"), OTP)
            .await
            .assert_gateway_error(404, "bad_route");
    }

    let h = Harness::with(Setup {
        extra: "[routing]\nunknown_methods = \"reject\"".into(),
        ..sms_setup()
    })
    .await;
    h.call("/sms/api/OmniMessage/SendBulk", Some("acme"), OTP)
        .await
        .assert_gateway_error(404, "bad_route");
    assert_eq!(h.mock.request_count(), 0);
}

#[tokio::test]
async fn get_status_is_cached_only_with_a_fixed_ttl_and_send_never() {
    let h = Harness::with(sms_setup()).await;
    let id = h.call(SEND, Some("acme"), OTP).await.json()["idOmniMess"].clone();
    let body = format!(r#"{{"idOmniMess":{id}}}"#);
    for _ in 0..2 {
        let r = h.call(STATUS, Some("acme"), &body).await;
        assert_eq!((r.status.as_u16(), r.x_cache()), (200, "<none>"));
    }
    assert_eq!(h.mock.request_count(), 3);

    let h = Harness::with(Setup {
        cache: "[cache.methods]\nGetStatusOmni = { ttl_secs = 60 }".into(),
        ..sms_setup()
    })
    .await;
    for _ in 0..2 {
        let r = h.call(SEND, Some("acme"), OTP).await;
        assert_eq!((r.status.as_u16(), r.x_cache()), (200, "<none>"));
    }
    let body = r#"{"idOmniMess":"ICOMNI000000000000000000000000000001"}"#;
    let first = h.call(STATUS, Some("acme"), body).await;
    assert_eq!(first.x_cache(), "MISS");
    let second = h.call(STATUS, Some("acme"), body).await;
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(second.body, first.body);
    // Another tenant never shares the entry.
    assert_eq!(h.call(STATUS, Some("globex"), body).await.x_cache(), "MISS");
    assert_eq!(h.mock.request_count(), 4, "2 sends, 2 status misses");
    // A business error (HTTP 200, negative status) is never stored.
    let other = r#"{"idOmniMess":"ICOMNI000000000000000000000000000002"}"#;
    let r = h
        .call_with(
            STATUS,
            Some("acme"),
            other,
            &[("x-mock-behaviour", "sms_status=-1")],
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["status"].as_str()),
        (200, Some("-1"))
    );
    let r = h.call(STATUS, Some("acme"), other).await;
    assert_eq!(r.x_cache(), "MISS");
    assert_eq!(
        r.json()["status"],
        "FAIL",
        "the real answer, not the stored error"
    );
}

/// Canary SMS credentials (and a caller-sent canary password) through every SMS flow, with the
/// real binary at trace level: none may appear in any log line, error body, `/metrics` or
/// `/config`, where the account shows only as fingerprints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_canaries_reach_no_log_line_error_body_metric_or_config() {
    const USER: &str = "CANARY-sms-user";
    const PASSWORD: &str = "CANARY-sms-password";
    let accounts = MockAccounts {
        shops: vec![MockShop {
            id: "1001".into(),
            api_key: "1001:canary-free-api-key".into(),
            shop_key: "shop1001:canary-free-shop-key".into(),
            sms_username: USER.into(),
            sms_password: PASSWORD.into(),
        }],
        partner_key: "9000:canary-free-partner-key".into(),
    };
    let mock = common::start_mock(accounts, true).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ca.pem", mock.ca_pem().unwrap());
    write(dir.path(), "sms.password", &format!("{PASSWORD}\n"));
    write(dir.path(), "wrong.password", "CANARY-wrong-password\n");
    write(dir.path(), "api.key", "1001:canary-free-api-key\n");
    let cfg = write(
        dir.path(),
        "gw.toml",
        &format!(
            r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[shutdown]
drain_delay_secs = 0
[upstream]
base_url = "{base}"
ca_file = "ca.pem"
[sms]
base_url = "{base}"
ca_file = "ca.pem"
timeout_ms = 500
[[tenants]]
id = "acme"
api_key = {{ file = "api.key" }}
sms = {{ username = {{ env = "CANARY_SMS_USER" }}, password = {{ file = "sms.password" }} }}
[[tenants]]
id = "beta"
sms = {{ username = {{ env = "CANARY_SMS_USER" }}, password = {{ file = "wrong.password" }} }}
[[tenants]]
id = "nosms"
api_key = {{ file = "api.key" }}
"#,
            base = mock.base_url()
        ),
    );
    let mut gw = Gateway::start_with(&cfg, &[("RUST_LOG", "trace"), ("CANARY_SMS_USER", USER)]);
    let client = common::client();
    /// Tenant, path, body, extra headers, the status expected.
    type Flow<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], u16);
    let flows: &[Flow<'_>] = &[
        ("acme", SEND, OTP, &[], 200),
        (
            "acme",
            SEND,
            r#"{"username":"CANARY-caller-user","password":"CANARY-caller-password","phonenumber":"84901234567","templatecode":"OTP1"}"#,
            &[],
            200,
        ),
        (
            "acme",
            SEND,
            OTP,
            &[("x-mock-behaviour", "sms_status=-3")],
            200,
        ),
        (
            "acme",
            STATUS,
            r#"{"idOmniMess":"ICOMNI000000000000000000000000000001"}"#,
            &[],
            200,
        ),
        ("acme", SEND, "[\"CANARY-not-an-object\"]", &[], 400),
        ("acme", SEND, OTP, &[("x-mock-behaviour", "hang")], 504),
        (
            "acme",
            SEND,
            OTP,
            &[("x-mock-behaviour", "status=500")],
            500,
        ),
        ("beta", SEND, OTP, &[], 401),
        ("nosms", SEND, OTP, &[], 403),
    ];
    for (tenant, path, body, extra, want) in flows {
        let r = common::send(
            &client,
            post_with(gw.public, path, Some(tenant), body, extra),
        )
        .await;
        assert_eq!(
            r.status.as_u16(),
            *want,
            "{tenant} {path} {extra:?}: {}",
            r.text()
        );
        assert!(
            !r.text().contains("CANARY"),
            "{path}: body leaks: {}",
            r.text()
        );
    }
    // The caller's password never reached the SMS host; the account did, in the body only.
    let got = mock.received();
    assert!(
        got.iter()
            .all(|r| !String::from_utf8_lossy(&r.body).contains("CANARY-caller"))
    );
    assert!(got.iter().all(|r| r.headers.get("authorization").is_none()));

    let metrics = common::send(
        &client,
        http::Request::get(gw.admin_url("/metrics"))
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text().contains("key_class=\"sms\""),
        "{}",
        metrics.text()
    );
    assert!(!metrics.text().contains("CANARY"), "{}", metrics.text());
    let view = common::send(
        &client,
        http::Request::get(gw.admin_url("/config"))
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert!(!view.text().contains("CANARY"), "{}", view.text());
    let v = view.json();
    let fp = |s: &str| format!("sha256:{}", common::fingerprint(s));
    assert_eq!(v["tenants"][0]["sms"]["username"], fp(USER));
    assert_eq!(v["tenants"][0]["sms"]["password"], fp(PASSWORD));
    assert_eq!(v["tenants"][2]["sms"], Value::Null);

    assert_eq!(gw.proc.interrupt(), Some(0));
    let log = gw.proc.log_text();
    assert!(log.contains("request body"), "debug body logging ran");
    // The caller-sent pair is masked by field name (the scrubber does not know the caller's).
    let masked = gw
        .proc
        .log
        .iter()
        .filter(|l| l.contains("request body") && l.contains("84901234567"))
        .any(|l| {
            l.contains(r#"username\":\"[REDACTED]"#) && l.contains(r#"password\":\"[REDACTED]"#)
        });
    assert!(masked, "no masked SMS request body in the log");
    for line in &gw.proc.log {
        assert!(!line.contains("CANARY"), "log line leaks a canary: {line}");
    }
    mock.shutdown().await;
}
