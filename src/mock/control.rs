//! The mock eTelecom's control surface: the `/__mock/*` endpoints (set the
//! global behaviour or `expires_at`, count or clear recorded requests).

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::server::{Resp, error_response, json_response};
use super::{Behaviour, ExpiresSetting, Shared, parse_status};

pub(super) fn control(shared: &Shared, parts: &http::request::Parts, body: &[u8]) -> Resp {
    match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/__mock/behaviour") => match apply_control(shared, body) {
            Ok(()) => json_response(StatusCode::OK, &json!({ "ok": true })),
            Err(msg) => error_response(StatusCode::BAD_REQUEST, "invalid_argument", msg),
        },
        (&Method::GET, "/__mock/requests") => {
            let n = shared.lock().total;
            json_response(StatusCode::OK, &json!({ "count": n }))
        }
        (&Method::DELETE, "/__mock/requests") => {
            shared.clear();
            json_response(StatusCode::OK, &json!({ "count": 0 }))
        }
        (m, p) => error_response(
            StatusCode::NOT_FOUND,
            "bad_route",
            format!("no mock control endpoint {} {p:?}", m.as_str()),
        ),
    }
}

/// Applies a `POST /__mock/behaviour` body; nothing changes when it is invalid.
fn apply_control(shared: &Shared, body: &[u8]) -> Result<(), String> {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return Err("control body must be a JSON object".into());
    };
    let reset = obj.get("reset").and_then(Value::as_bool).unwrap_or(false);
    let behaviour = match obj.get("behaviour") {
        None => None,
        Some(v) => Some(control_behaviour(
            v.as_str().ok_or("behaviour must be a string")?,
            &obj,
        )?),
    };
    let expires = match obj.get("expires_at") {
        None => None,
        Some(Value::Null) => Some(ExpiresSetting::Omit),
        Some(Value::String(s)) => Some(ExpiresSetting::Fixed(s.clone())),
        Some(_) => return Err("expires_at must be a string or null".into()),
    };
    let mut st = shared.lock();
    if reset {
        st.behaviour = Behaviour::Normal;
        st.expires = ExpiresSetting::Default;
    }
    if let Some(b) = behaviour {
        st.behaviour = b;
    }
    if let Some(e) = expires {
        st.expires = e;
    }
    Ok(())
}

fn control_behaviour(name: &str, obj: &Map<String, Value>) -> Result<Behaviour, String> {
    Ok(match name {
        "normal" => Behaviour::Normal,
        "hang" => Behaviour::Hang,
        "reset" => Behaviour::Reset,
        "echo_auth" => Behaviour::EchoAuth,
        "delay" => {
            let ms = obj
                .get("ms")
                .and_then(Value::as_u64)
                .ok_or("delay needs \"ms\"")?;
            Behaviour::Delay(Duration::from_millis(ms))
        }
        "status" => {
            let status = parse_status(obj.get("status").and_then(Value::as_u64))
                .ok_or("status needs a valid \"status\"")?;
            let retry_after = match obj.get("retry_after") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_u64().ok_or("retry_after must be an integer")?),
            };
            match obj.get("body") {
                None | Some(Value::Null) => Behaviour::status(status, retry_after),
                Some(Value::String(s)) => Behaviour::Status {
                    status,
                    body: s.clone(),
                    retry_after,
                },
                Some(v) => Behaviour::Status {
                    status,
                    body: v.to_string(),
                    retry_after,
                },
            }
        }
        "sms_status" => obj
            .get("sms_status")
            .and_then(Value::as_str)
            .and_then(super::sms_status)
            .ok_or("sms_status needs \"sms_status\": \"-1\" .. \"-9\"")?,
        other => return Err(format!("unknown behaviour {other:?}")),
    })
}
