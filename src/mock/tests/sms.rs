//! The SMS host's path space: body credentials per shop, the documented answers, business
//! errors on command, and what is recorded.

use super::*;

const SEND: &str = "/api/OmniMessage/SendMessage";
const STATUS: &str = "/api/OmniReport/GetStatusOmni";

fn sms_body(user: &str, password: &str, extra: &str) -> String {
    format!(r#"{{"username":"{user}","password":"{password}"{extra}}}"#)
}

const OTP: &str = r#","phonenumber":"84901234567","templatecode":"OTP1","list_param":{"otp":"42"}"#;

#[tokio::test]
async fn credentials_are_checked_per_shop_and_answers_follow_the_docs() {
    let mock = start(false).await;
    let c = client();
    let acme = sms_body(DEMO_ACME_SMS_USERNAME, DEMO_ACME_SMS_PASSWORD, OTP);
    let a = send(&c, post(&mock, SEND, None), &acme).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        (&a.json["status"], &a.json["code"]),
        (&json!("1"), &json!("Success"))
    );
    let id = a.json["idOmniMess"].as_str().expect("id").to_owned();
    assert!(id.starts_with("ICOMNI") && id.len() == 36, "{id}");
    let got = mock.received();
    assert_eq!(
        got[0].accepted_key,
        Some(MockKeyType::Sms {
            shop: "1001".into()
        })
    );

    let status = |user: &str, pw: &str| sms_body(user, pw, &format!(r#","idOmniMess":"{id}""#));
    let a = send(
        &c,
        post(&mock, STATUS, None),
        &status(DEMO_ACME_SMS_USERNAME, DEMO_ACME_SMS_PASSWORD),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["status"], "SUCCESS");
    assert_eq!(
        a.json["list_param"], r#"{"otp":"42"}"#,
        "a JSON string, as documented"
    );
    let created = a.json["createdatetime"].as_str().expect("time");
    assert_eq!(
        (created.len(), &created[2..3], &created[5..6]),
        (19, "/", "/"),
        "{created}"
    );
    for field in [
        "phonenumber",
        "channel",
        "templatecode",
        "errorCode",
        "mtcount",
        "telcoid",
    ] {
        assert!(a.json.get(field).is_some(), "{field}: {}", a.json);
    }
    // Another shop does not see acme's message.
    let a = send(
        &c,
        post(&mock, STATUS, None),
        &status(DEMO_GLOBEX_SMS_USERNAME, DEMO_GLOBEX_SMS_PASSWORD),
    )
    .await;
    assert_eq!(a.json["status"], "FAIL");

    // Wrong password, another shop's password, no credentials: 401 and nothing accepted.
    for body in [
        sms_body(DEMO_ACME_SMS_USERNAME, "wrong", OTP),
        sms_body(DEMO_ACME_SMS_USERNAME, DEMO_GLOBEX_SMS_PASSWORD, OTP),
        format!("{{{}}}", &OTP[1..]),
    ] {
        let a = send(&c, post(&mock, SEND, None), &body).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{body}");
    }
    // A Bearer key is not an SMS credential.
    let a = send(
        &c,
        post(&mock, SEND, Some(DEMO_ACME_API_KEY)),
        &format!("{{{}}}", &OTP[1..]),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(
        mock.received()[3..]
            .iter()
            .all(|r| r.accepted_key.is_none())
    );
}

#[tokio::test]
async fn business_errors_on_command_and_from_the_body() {
    let mock = start(false).await;
    let c = client();
    let acme = sms_body(DEMO_ACME_SMS_USERNAME, DEMO_ACME_SMS_PASSWORD, OTP);
    let a = send(
        &c,
        post(&mock, SEND, None).header(BEHAVIOUR_HEADER, "sms_status=-3"),
        &acme,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.json,
        json!({"status": "-3", "code": "You have run out of messages"})
    );
    // Credentials are still checked first.
    let wrong = sms_body(DEMO_ACME_SMS_USERNAME, "wrong", OTP);
    let a = send(
        &c,
        post(&mock, SEND, None).header(BEHAVIOUR_HEADER, "sms_status=-3"),
        &wrong,
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // The control API sets it for every SMS request; API paths answer normally.
    let a = send(
        &c,
        post(&mock, "/__mock/behaviour", None),
        r#"{"behaviour":"sms_status","sms_status":"-8"}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = send(&c, post(&mock, SEND, None), &acme).await;
    assert_eq!(a.json["status"], "-8");
    let a = call(
        &c,
        &mock,
        "/v1/shop.Misc/CurrentAccount",
        DEMO_ACME_API_KEY,
        "{}",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    for bad in [
        r#"{"behaviour":"sms_status","sms_status":"3"}"#,
        r#"{"behaviour":"sms_status"}"#,
    ] {
        let a = send(&c, post(&mock, "/__mock/behaviour", None), bad).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    mock.set_behaviour(Behaviour::Normal);
    let bad_phone = sms_body(
        DEMO_ACME_SMS_USERNAME,
        DEMO_ACME_SMS_PASSWORD,
        r#","phonenumber":"+84 90","templatecode":"T""#,
    );
    let a = send(&c, post(&mock, SEND, None), &bad_phone).await;
    assert_eq!(a.json["status"], "-1");
    assert!(Behaviour::parse_header("sms_status=-10").is_err());
}
