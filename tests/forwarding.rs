//! Forwarding: the right key for each method, what the upstream receives, and the requests the
//! gateway answers itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, PARTNER_LEVEL, PARTNER_SHOP, SHOP_API, Setup};

const CALL_LOGS: &str = "/v1/shop.Etelecom/ListCallLogs";
use etelecom_gateway::mock::MockKeyType;

#[tokio::test]
async fn each_key_class_is_chosen_by_path() {
    let h = Harness::start().await;
    let acme = h.accounts.shops[0].id.clone();

    let r = h
        .call(SHOP_API, Some("acme"), r#"{"extension_number":"101"}"#)
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["extension_number"], "101");
    let r = h.call(PARTNER_SHOP, Some("acme"), "{}").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = h.call(PARTNER_LEVEL, None, "{}").await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    let got = h.mock.received();
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[0].accepted_key,
        Some(MockKeyType::ShopApiKey { shop: acme.clone() })
    );
    assert_eq!(
        got[0].headers["authorization"],
        format!("Bearer {}", h.accounts.shops[0].api_key)
    );
    assert_eq!(
        got[1].accepted_key,
        Some(MockKeyType::ShopKey { shop: acme })
    );
    assert_eq!(
        got[1].headers["authorization"],
        format!("Bearer {}", h.accounts.shops[0].shop_key)
    );
    assert_eq!(got[2].accepted_key, Some(MockKeyType::Partner));
}

#[tokio::test]
async fn tenants_get_their_own_key() {
    let h = Harness::start().await;
    let r = h.call(SHOP_API, Some("globex"), "{}").await;
    assert_eq!(r.status, 200);
    let got = h.mock.received();
    assert_eq!(
        got[0].accepted_key,
        Some(MockKeyType::ShopApiKey {
            shop: h.accounts.shops[1].id.clone()
        })
    );
}

#[tokio::test]
async fn caller_credentials_and_tenant_header_never_reach_upstream() {
    let h = Harness::start().await;
    let r = h
        .call_with(
            SHOP_API,
            Some("acme"),
            "{}",
            &[
                ("authorization", "Bearer caller-own-token"),
                ("proxy-authorization", "Basic Y2FsbGVy"),
                ("cookie", "session=caller-cookie"),
                ("connection", "x-private-hop"),
                ("x-private-hop", "hop-value"),
                ("x-forwarded-for", "10.9.9.9"),
                (
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
                ("x-request-id", "caller-request-1"),
                ("x-http-method-override", "DELETE"),
                ("x-original-url", "/v1/partner.Misc/CurrentAccount"),
                ("x-rewrite-url", "/v1/partner.Misc/CurrentAccount"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    let got = &h.mock.received()[0];
    let auth: Vec<_> = got.headers.get_all("authorization").iter().collect();
    assert_eq!(auth.len(), 1);
    assert_eq!(auth[0], &format!("Bearer {}", h.accounts.shops[0].api_key));
    for gone in [
        "proxy-authorization",
        "cookie",
        "x-tenant-id",
        "x-private-hop",
        "x-forwarded-for",
        "x-http-method-override",
        "x-original-url",
        "x-rewrite-url",
    ] {
        assert!(!got.headers.contains_key(gone), "{gone} reached upstream");
    }
    assert_eq!(
        got.headers["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(got.headers["x-request-id"], "caller-request-1");
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(got.headers["host"], h.mock.addr().to_string());
    assert_eq!(r.headers["x-request-id"], "caller-request-1");
}

#[tokio::test]
async fn request_id_is_generated_when_absent() {
    let h = Harness::start().await;
    let r = h.call(SHOP_API, Some("acme"), "{}").await;
    let id = r.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(h.mock.received()[0].headers["x-request-id"], id.as_str());
}

#[tokio::test]
async fn empty_body_is_sent_as_empty_object_and_body_is_forwarded_unchanged() {
    let h = Harness::start().await;
    assert_eq!(h.call(SHOP_API, Some("acme"), "").await.status, 200);
    let body = r#"{ "extension_number" : "102" }"#;
    assert_eq!(h.call(SHOP_API, Some("acme"), body).await.status, 200);
    let got = h.mock.received();
    assert_eq!(got[0].body, "{}");
    assert_eq!(got[1].body, body);
}

#[tokio::test]
async fn tenant_errors_are_answered_by_the_gateway() {
    let h = Harness::start().await;
    h.call(SHOP_API, None, "{}")
        .await
        .assert_gateway_error(400, "invalid_argument");
    h.call(SHOP_API, Some("nobody"), "{}")
        .await
        .assert_gateway_error(403, "permission_denied");
    let r = h.call(PARTNER_SHOP, Some("globex"), "{}").await;
    r.assert_gateway_error(403, "permission_denied");
    assert!(r.json()["msg"].as_str().unwrap().contains("shop_key"));
    assert_eq!(h.mock.request_count(), 0, "nothing was forwarded");
}

#[tokio::test]
async fn a_repeated_tenant_header_is_a_400_even_when_equal() {
    let h = Harness::start().await;
    for (first, second) in [("globex", "acme"), ("acme", "acme")] {
        for path in [SHOP_API, PARTNER_SHOP, PARTNER_LEVEL] {
            let r = h
                .call_with(path, Some(first), "{}", &[("x-tenant-id", second)])
                .await;
            r.assert_gateway_error(400, "invalid_argument");
            assert_eq!(
                r.json()["msg"],
                "the tenant header must be sent exactly once",
                "{path} {first} {second}"
            );
        }
    }
    assert_eq!(h.mock.request_count(), 0, "nothing was forwarded");
    assert_eq!(h.call(SHOP_API, Some("acme"), "{}").await.status, 200);
}

#[tokio::test]
async fn partner_level_without_partner_key_is_refused() {
    let h = Harness::with(Setup {
        partner: false,
        ..Setup::default()
    })
    .await;
    let r = h.call(PARTNER_LEVEL, None, "{}").await;
    r.assert_gateway_error(403, "permission_denied");
    assert!(r.json()["msg"].as_str().unwrap().contains("partner"));
    assert_eq!(h.mock.request_count(), 0);
}

#[tokio::test]
async fn disallowed_caller_is_refused_before_anything_else() {
    let h = Harness::with(Setup {
        server: r#"allowed_callers = ["10.0.0.0/8"]"#.into(),
        ..Setup::default()
    })
    .await;
    h.call(SHOP_API, Some("acme"), "{}")
        .await
        .assert_gateway_error(403, "permission_denied");
    assert_eq!(h.mock.request_count(), 0);
}

#[tokio::test]
async fn tenant_allow_list_narrows_the_server_one() {
    let h = Harness::with(Setup {
        acme: r#"allowed_callers = ["10.0.0.0/8"]"#.into(),
        ..Setup::default()
    })
    .await;
    h.call(SHOP_API, Some("acme"), "{}")
        .await
        .assert_gateway_error(403, "permission_denied");
    assert_eq!(h.call(SHOP_API, Some("globex"), "{}").await.status, 200);
}

#[tokio::test]
async fn routes_the_gateway_answers_itself() {
    let h = Harness::start().await;
    for (path, status, code) in [
        ("/", 404, "bad_route"),
        ("/v1/admin.Etelecom/GetExtensionInfo", 404, "bad_route"),
        (
            "/v1/shop.Etelecom/../partner.Misc/CurrentAccount",
            404,
            "bad_route",
        ),
        ("/v2/shop.Etelecom/GetExtensionInfo", 404, "bad_route"),
    ] {
        h.call(path, Some("acme"), "{}")
            .await
            .assert_gateway_error(status, code);
    }
    let get = http::Request::get(h.url(SHOP_API))
        .header("x-tenant-id", "acme")
        .body(http_body_util::Full::default())
        .unwrap();
    let r = h.send(get).await;
    r.assert_gateway_error(405, "bad_route");
    assert_eq!(r.headers["allow"], "POST");
    assert_eq!(h.mock.request_count(), 0);
}

#[tokio::test]
async fn unknown_methods_are_forwarded_by_prefix_or_rejected() {
    let h = Harness::start().await;
    let r = h
        .call(
            "/v1/partner.Etelecom/PartnerRemoveHotline",
            Some("acme"),
            "{}",
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        h.mock.received()[0].headers["authorization"],
        format!("Bearer {}", h.accounts.shops[0].shop_key)
    );

    let strict = Harness::with(Setup {
        extra: "[routing]\nunknown_methods = \"reject\"".into(),
        ..Setup::default()
    })
    .await;
    strict
        .call("/v1/shop.Etelecom/GetDriverConfig", Some("acme"), "{}")
        .await
        .assert_gateway_error(404, "bad_route");
    assert_eq!(strict.mock.request_count(), 0);
}

#[tokio::test]
async fn bodies_must_be_json_objects_under_the_limit() {
    let h = Harness::with(Setup {
        server: "max_body_bytes = 64".into(),
        ..Setup::default()
    })
    .await;
    for bad in ["[1,2]", "not json", "\"text\"", "{\"a\":"] {
        h.call(SHOP_API, Some("acme"), bad)
            .await
            .assert_gateway_error(400, "invalid_argument");
    }
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(100));
    h.call(SHOP_API, Some("acme"), &big)
        .await
        .assert_gateway_error(413, "invalid_argument");
    assert_eq!(h.mock.request_count(), 0);
}

#[tokio::test]
async fn bodies_must_be_utf8_and_nest_at_most_max_json_depth() {
    let h = Harness::start().await;
    let send = |body: Vec<u8>| {
        let mut req = common::post(h.addr, CALL_LOGS, Some("acme"), "");
        *req.body_mut() = http_body_util::Full::new(bytes::Bytes::from(body));
        h.send(req)
    };
    let r = send(b"{\"name\":\"caf\xe9\"}".to_vec()).await;
    r.assert_gateway_error(400, "invalid_argument");
    assert_eq!(r.json()["msg"], "request body is not valid UTF-8");
    let nested = |depth: usize| {
        let mut s = "{\"a\":".repeat(depth - 1);
        s.push_str("{}");
        s.push_str(&"}".repeat(depth - 1));
        s.into_bytes()
    };
    let lists = format!("{{\"a\":{}{}}}", "[".repeat(9_999), "]".repeat(9_999));
    for deep in [nested(65), lists.into_bytes()] {
        let r = send(deep).await;
        r.assert_gateway_error(400, "invalid_argument");
        assert_eq!(
            r.json()["msg"],
            "request body nests arrays and objects too deeply"
        );
    }
    assert_eq!(h.mock.request_count(), 0, "nothing was forwarded");
    let at_limit = nested(64);
    assert_eq!(send(at_limit.clone()).await.status, 200);
    assert_eq!(h.mock.received()[0].body, at_limit);

    let shallow = Harness::with(Setup {
        server: "max_json_depth = 2".into(),
        ..Setup::default()
    })
    .await;
    let r = shallow
        .call(CALL_LOGS, Some("acme"), r#"{"a":{"b":[1]}}"#)
        .await;
    r.assert_gateway_error(400, "invalid_argument");
    let r = shallow
        .call(CALL_LOGS, Some("acme"), r#"{"a":{"b":"[[[{{{"}}"#)
        .await;
    assert_eq!(r.status, 200, "brackets inside strings do not count");
}

#[tokio::test]
async fn upstream_answers_come_back_unchanged() {
    let h = Harness::start().await;
    let r = h
        .call(SHOP_API, Some("acme"), r#"{"extension_number":"105"}"#)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    let v = r.json();
    assert_eq!(v["extension_number"], "105");
    assert!(v["extension_password"].is_string());
    assert!(v["expires_at"].is_string());
    assert!(v.get("meta").is_none());
}
