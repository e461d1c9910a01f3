//! Behaviours (delay, hang, status, reset), the per-request header and the
//! HTTP control endpoints.

use super::*;

#[tokio::test]
async fn delay_status_reset_and_header_override() {
    let mock = start(false).await;
    let c = client();
    let path = "/v1/shop.Misc/CurrentAccount";
    let key = Some(DEMO_ACME_API_KEY);

    let started = Instant::now();
    let a = send(
        &c,
        post(&mock, path, key).header(BEHAVIOUR_HEADER, "delay=150"),
        "{}",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));

    let a = send(
        &c,
        post(&mock, path, key).header(BEHAVIOUR_HEADER, "status=429;retry_after=7"),
        "{}",
    )
    .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.headers[RETRY_AFTER], "7");
    assert_eq!(a.json["code"], "resource_exhausted");

    let a = send(
        &c,
        post(&mock, path, key).header(BEHAVIOUR_HEADER, "status=500"),
        "{}",
    )
    .await;
    assert_eq!(
        (a.status, a.headers.get(RETRY_AFTER)),
        (StatusCode::INTERNAL_SERVER_ERROR, None)
    );

    let a = send(
        &c,
        post(&mock, path, key).header(BEHAVIOUR_HEADER, "sometimes"),
        "{}",
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    let reset = post(&mock, path, key)
        .header(BEHAVIOUR_HEADER, "reset")
        .body(Full::new(Bytes::from_static(b"{}")));
    let err = within(c.request(reset.expect("request"))).await;
    assert!(err.is_err(), "reset must not produce a response: {err:?}");

    let body = r#"{"code":"unavailable","msg":"maintenance"}"#;
    mock.set_behaviour(Behaviour::Status {
        status: 503,
        body: body.into(),
        retry_after: Some(2),
    });
    let a = send(&c, post(&mock, path, key), "{}").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.headers[RETRY_AFTER], "2");
    assert_eq!(a.headers[CONTENT_TYPE], "application/json");
    assert_eq!(a.json, json!({"code": "unavailable", "msg": "maintenance"}));
    // The per-request header wins over the global behaviour.
    let a = send(
        &c,
        post(&mock, path, key).header(BEHAVIOUR_HEADER, "normal"),
        "{}",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);

    mock.set_behaviour(Behaviour::Reset);
    let req = post(&mock, path, key)
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("request");
    assert!(within(c.request(req)).await.is_err());
    mock.set_behaviour(Behaviour::Normal);
    assert_eq!(
        send(&c, post(&mock, path, key), "{}").await.status,
        StatusCode::OK
    );
    assert_eq!(mock.request_count(), 9);
    mock.shutdown().await;
}

#[tokio::test]
async fn hang_times_out_and_shutdown_ends_hanging_connections() {
    let mock = start(false).await;
    let c = client();
    let path = "/v1/shop.Misc/CurrentAccount";
    mock.set_behaviour(Behaviour::Hang);

    let req = post(&mock, path, Some(DEMO_ACME_API_KEY))
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("req");
    let timed_out = tokio::time::timeout(Duration::from_millis(200), c.request(req)).await;
    assert!(timed_out.is_err(), "a hanging request must not be answered");

    // Per-request header overrides the global hang.
    let a = send(
        &c,
        post(&mock, path, Some(DEMO_ACME_API_KEY)).header(BEHAVIOUR_HEADER, "normal"),
        "{}",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);

    // A request still hanging when the mock shuts down ends with an error.
    let req = post(&mock, path, Some(DEMO_ACME_API_KEY))
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("req");
    let pending = tokio::spawn(c.request(req));
    within(mock.wait_for_requests(3)).await;
    within(mock.shutdown()).await;
    let outcome = within(pending).await.expect("join");
    assert!(outcome.is_err(), "hanging request must fail at shutdown");
}

#[tokio::test]
async fn control_over_http() {
    let mock = start(false).await;
    let c = client();
    let control = |body: Value| {
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("{}/__mock/behaviour", mock.base_url()));
        (req, body.to_string())
    };
    let path = PARTNER_SHOP_PATH;
    let key = DEMO_ACME_SHOP_KEY;

    let (r, b) = control(
        json!({"behaviour": "status", "status": 503, "body": {"code": "unavailable", "msg": "down"}, "retry_after": 2}),
    );
    assert_eq!(send(&c, r, &b).await.json, json!({"ok": true}));
    let a = call(&c, &mock, path, key, "{}").await;
    assert_eq!(
        (a.status, a.headers[RETRY_AFTER].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, "2".parse().expect("hv"))
    );
    assert_eq!(a.json["msg"], "down");

    let (r, b) = control(json!({"behaviour": "delay", "ms": 100}));
    send(&c, r, &b).await;
    assert_eq!(
        mock.behaviour(),
        Behaviour::Delay(Duration::from_millis(100))
    );
    let (r, b) = control(json!({"behaviour": "hang"}));
    send(&c, r, &b).await;
    assert_eq!(mock.behaviour(), Behaviour::Hang);
    let (r, b) = control(json!({"behaviour": "normal", "expires_at": null}));
    send(&c, r, &b).await;
    let a = call(&c, &mock, path, key, "{}").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.json.get("expires_at").is_none());

    let (r, b) = control(json!({"expires_at": "2030-01-02T03:04:05Z"}));
    send(&c, r, &b).await;
    assert_eq!(
        call(&c, &mock, path, key, "{}").await.json["expires_at"],
        "2030-01-02T03:04:05Z"
    );

    for bad in [
        json!({"behaviour": "delay"}),
        json!({"behaviour": "status", "status": 42}),
        json!({"behaviour": "slow"}),
        json!({"expires_at": 5}),
    ] {
        let (r, b) = control(bad.clone());
        let a = send(&c, r, &b).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let (r, b) = control(json!({"reset": true}));
    send(&c, r, &b).await;
    assert_eq!(mock.behaviour(), Behaviour::Normal);
    let exp = call(&c, &mock, path, key, "{}").await.json["expires_at"]
        .as_str()
        .map(days_from_now);
    assert!(exp.is_some_and(|d| (29..=30).contains(&d)));

    let count = Request::builder().uri(format!("{}/__mock/requests", mock.base_url()));
    assert_eq!(send(&c, count, "").await.json, json!({"count": 4}));
    mock.shutdown().await;
}

#[test]
fn behaviour_header_grammar() {
    assert_eq!(Behaviour::parse_header("hang"), Ok(Behaviour::Hang));
    assert_eq!(Behaviour::parse_header(" reset "), Ok(Behaviour::Reset));
    assert_eq!(
        Behaviour::parse_header("echo_auth"),
        Ok(Behaviour::EchoAuth)
    );
    assert_eq!(
        Behaviour::parse_header("delay=25"),
        Ok(Behaviour::Delay(Duration::from_millis(25)))
    );
    match Behaviour::parse_header("status=503;retry_after=3") {
        Ok(Behaviour::Status {
            status: 503,
            retry_after: Some(3),
            body,
        }) => {
            assert!(body.contains("\"unavailable\""), "{body}");
        }
        other => panic!("unexpected {other:?}"),
    }
    for bad in [
        "",
        "delay=",
        "delay=x",
        "status=",
        "status=99",
        "status=70000",
        "status=503;x=1",
        "slow",
    ] {
        assert!(Behaviour::parse_header(bad).is_err(), "{bad:?}");
    }
}
