//! The mock SMS brandname host (API notes 1.9, 2.5), served in its own path space on the mock:
//! `POST /api/OmniMessage/SendMessage` and `POST /api/OmniReport/GetStatusOmni`.
//!
//! As the notes describe the real host: no Bearer header; `username` and `password` in the JSON
//! body, checked against the shop's SMS account (401 with a plain-text `Unauthorized` otherwise);
//! business errors are HTTP 200 with `{"status": "-N", "code": "<text>"}`. SendMessage answers
//! `{"status":"1","code":"Success","idOmniMess":"ICOMNI…"}` and remembers the message (the last
//! [`super::RECORD_LIMIT`]), so GetStatusOmni can answer its status with the documented fields.
//! The `sms_status=<-N>` behaviour forces a business error after a successful credential check.

use std::collections::VecDeque;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Map, Value, json};

use super::server::{Resp, json_response};
use super::{MockAccounts, MockKeyType, RECORD_LIMIT, Shared};

/// The path space of the SMS host.
pub(super) const PREFIX: &str = "/api/";
pub(super) const SEND: &str = "/api/OmniMessage/SendMessage";
pub(super) const STATUS: &str = "/api/OmniReport/GetStatusOmni";

/// One message SendMessage accepted.
#[derive(Debug, Clone)]
pub(super) struct Sent {
    id: String,
    shop: String,
    phonenumber: String,
    templatecode: String,
    list_param: String,
    created: String,
}

/// The messages the mock accepted, oldest first (bounded).
#[derive(Debug, Default)]
pub(super) struct Outbox {
    sent: VecDeque<Sent>,
    next: u64,
}

/// Which shop's SMS account `username` / `password` of `body` belong to.
pub(super) fn authenticate(accounts: &MockAccounts, body: &[u8]) -> Option<MockKeyType> {
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let (Some(Value::String(user)), Some(Value::String(pw))) =
        (req.get("username"), req.get("password"))
    else {
        return None;
    };
    accounts
        .shops
        .iter()
        .find(|s| s.sms_username == *user && s.sms_password == *pw)
        .map(|s| MockKeyType::Sms { shop: s.id.clone() })
}

/// The documented text of a business error status.
pub(super) fn business_error(status: &str, req: &Map<String, Value>) -> Value {
    let field = |k: &str| req.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let code = match status {
        "-1" => "PhoneNumber Wrong Format".to_owned(),
        "-2" => "Wrong Format Parameter: list_param".to_owned(),
        "-3" => "You have run out of messages".to_owned(),
        "-6" => format!(
            "Can't find template with templatecode: {}",
            field("templatecode")
        ),
        "-8" => "Can't find any routing for this request".to_owned(),
        "-9" => "Can't find any information about channel: 3".to_owned(),
        other => format!("mock business error {other}"),
    };
    json!({ "status": status, "code": code })
}

fn text_response(status: StatusCode, text: &'static str) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// `dd/MM/yyyy HH:mm:ss`, Vietnam time, as GetStatusOmni writes it.
fn now_vn() -> String {
    let fmt = time::macros::format_description!("[day]/[month]/[year] [hour]:[minute]:[second]");
    time::OffsetDateTime::now_utc()
        .to_offset(time::macros::offset!(+7))
        .format(&fmt)
        .unwrap_or_default()
}

/// The answer of the SMS host to one request (after recording and the transport behaviours).
pub(super) fn respond(
    shared: &Shared,
    method: &Method,
    path: &str,
    body: &[u8],
    key: Option<&MockKeyType>,
    forced_status: Option<&str>,
) -> Resp {
    if method != Method::POST || (path != SEND && path != STATUS) {
        return text_response(StatusCode::NOT_FOUND, "Not Found");
    }
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        return text_response(StatusCode::BAD_REQUEST, "Bad Request");
    };
    let Some(MockKeyType::Sms { shop }) = key else {
        return text_response(StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    if let Some(status) = forced_status {
        return json_response(StatusCode::OK, &business_error(status, &req));
    }
    let field = |k: &str| req.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    if path == SEND {
        let phone = field("phonenumber");
        if phone.len() < 9 || !phone.bytes().all(|b| b.is_ascii_digit()) {
            return json_response(StatusCode::OK, &business_error("-1", &req));
        }
        if field("templatecode").is_empty() {
            return json_response(StatusCode::OK, &business_error("-6", &req));
        }
        let list_param = req
            .get("list_param")
            .map_or_else(|| "{}".to_owned(), Value::to_string);
        let mut st = shared.lock();
        st.outbox.next += 1;
        let id = format!("ICOMNI{shop:0>6}{:024}", st.outbox.next);
        if st.outbox.sent.len() == RECORD_LIMIT {
            st.outbox.sent.pop_front();
        }
        st.outbox.sent.push_back(Sent {
            id: id.clone(),
            shop: shop.clone(),
            phonenumber: phone,
            templatecode: field("templatecode"),
            list_param,
            created: now_vn(),
        });
        drop(st);
        return json_response(
            StatusCode::OK,
            &json!({ "status": "1", "code": "Success", "idOmniMess": id }),
        );
    }
    let id = field("idOmniMess");
    let found = shared
        .lock()
        .outbox
        .sent
        .iter()
        .find(|m| m.id == id && m.shop == *shop)
        .cloned();
    let v = match found {
        Some(m) => json!({
            "phonenumber": m.phonenumber,
            "list_param": m.list_param,
            "createdatetime": m.created,
            "status": "SUCCESS",
            "channel": "SMS",
            "templatecode": m.templatecode,
            "errorCode": "0",
            "mtcount": 1,
            "telcoid": "1",
        }),
        // Not documented: the mock answers an id it never issued as a failed message.
        None => json!({
            "phonenumber": "",
            "list_param": "{}",
            "createdatetime": "",
            "status": "FAIL",
            "channel": "",
            "templatecode": "",
            "errorCode": "NOT_FOUND",
        }),
    };
    json_response(StatusCode::OK, &v)
}
