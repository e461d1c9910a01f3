//! The mock eTelecom's HTTP serving: the accept loop, per-connection
//! TLS handshake and hyper auto (HTTP/1.1 + h2/h2c) connections, shutdown of
//! every connection, and the answer to one API request (recording, behaviour,
//! eTelecom's routing/Content-Type/auth/body checks, response body).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::{BEHAVIOUR_HEADER, Behaviour, Received, Shared, auth, bodies, control, sms};

/// Largest request body the mock reads (larger → 413).
const MAX_BODY: usize = 8 * 1024 * 1024;
/// How long a connection may take to finish in-flight answers at shutdown.
const GRACE: Duration = Duration::from_secs(2);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolves when shutdown is signalled (or the signal sender is gone).
async fn shutdown_signalled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

pub(super) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown_signalled(&mut shutdown) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let conn = serve_tcp(tcp, peer, Arc::clone(&shared), tls.clone(), shutdown.clone());
                    conns.spawn(conn);
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "mock eTelecom accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

async fn serve_tcp(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(acceptor) = tls else {
        return serve_io(tcp, shared, shutdown).await;
    };
    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
    let stream = tokio::select! {
        _ = shutdown_signalled(&mut shutdown) => return,
        r = handshake => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "mock TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "mock TLS handshake timed out");
                return;
            }
        },
    };
    serve_io(stream, shared, shutdown).await
}

async fn serve_io<I>(io: I, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_shutdown = shutdown.clone();
    let service = service_fn(move |req| handle(Arc::clone(&shared), svc_shutdown.clone(), req));
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "mock connection ended with an error");
            }
            return;
        }
        _ = shutdown_signalled(&mut shutdown) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(GRACE, conn).await;
}

pub(super) type Resp = Response<Full<Bytes>>;

pub(super) fn json_response(status: StatusCode, v: &Value) -> Resp {
    raw_json_response(status, Bytes::from(v.to_string()))
}

fn raw_json_response(status: StatusCode, body: Bytes) -> Resp {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub(super) fn error_response(status: StatusCode, code: &str, msg: impl Into<String>) -> Resp {
    json_response(status, &json!({ "code": code, "msg": msg.into() }))
}

/// A 401 that quotes the `Authorization` value it was sent, in every way a body can hold it: raw
/// in `msg`, at depth in objects and arrays, as an object key, and with its first character
/// written as a JSON `\u` escape (valid JSON throughout).
fn echo_auth(headers: &http::HeaderMap) -> Resp {
    let auth = headers
        .get(http::header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let token = auth.strip_prefix("Bearer ").unwrap_or(&auth).to_owned();
    let body = json!({
        "code": "unauthenticated",
        "msg": format!("invalid authorization {auth:?}: token {token} is not valid"),
        "meta": {
            "received": { "headers": [{ "name": "authorization", "value": auth }] },
            (token.clone()): "the token as a key",
            "secret_only": token.split_once(':').map_or("", |(_, s)| s),
        },
    });
    let mut text = body.to_string();
    let mut chars = token.chars();
    if let Some(first) = chars.next() {
        let escaped = format!("\\u{:04x}{}", u32::from(first), chars.as_str());
        text.pop();
        text.push_str(&format!(",\"escaped\":\"echo {escaped}\"}}"));
    }
    raw_json_response(StatusCode::UNAUTHORIZED, Bytes::from(text))
}

fn aborted(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        format!("mock eTelecom: {why}"),
    )
}

async fn handle(
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    req: Request<Incoming>,
) -> Result<Resp, io::Error> {
    let (parts, body) = req.into_parts();
    let body = tokio::select! {
        _ = shutdown_signalled(&mut shutdown) => return Err(aborted("shutting down")),
        r = Limited::new(body, MAX_BODY).collect() => match r {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => {
                return Ok(error_response(StatusCode::PAYLOAD_TOO_LARGE, "invalid_argument", "request body too large"));
            }
            Err(e) => return Err(io::Error::other(e)),
        },
    };
    if parts.uri.path().starts_with("/__mock/") {
        return Ok(control::control(&shared, &parts, &body));
    }

    let path = parts.uri.path().to_owned();
    let is_sms = path.starts_with(sms::PREFIX);
    let route = auth::parse_route(&path);
    let auth = route.map(|r| auth::authenticate(&shared.accounts, r.kind, &parts.headers));
    let sms_key = is_sms
        .then(|| sms::authenticate(&shared.accounts, &body))
        .flatten();
    shared.record(Received {
        version: parts.version,
        method: parts.method.clone(),
        path: path.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
        accepted_key: auth
            .as_ref()
            .and_then(|a| a.as_ref().ok().cloned())
            .or_else(|| sms_key.clone()),
    });

    let behaviour = match parts.headers.get(BEHAVIOUR_HEADER) {
        None => shared.lock().behaviour.clone(),
        Some(v) => match Behaviour::parse_header(&String::from_utf8_lossy(v.as_bytes())) {
            Ok(b) => b,
            Err(msg) => {
                return Ok(error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid_argument",
                    msg,
                ));
            }
        },
    };
    let mut forced_sms_status = None;
    match behaviour {
        Behaviour::Normal => {}
        Behaviour::SmsStatus(s) => forced_sms_status = Some(s),
        Behaviour::Delay(d) => tokio::select! {
            _ = shutdown_signalled(&mut shutdown) => return Err(aborted("shutting down")),
            _ = tokio::time::sleep(d) => {}
        },
        Behaviour::Hang => {
            shutdown_signalled(&mut shutdown).await;
            return Err(aborted("hung request ended by shutdown"));
        }
        Behaviour::Reset => return Err(aborted("reset requested")),
        Behaviour::EchoAuth => return Ok(echo_auth(&parts.headers)),
        Behaviour::Status {
            status,
            body,
            retry_after,
        } => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = raw_json_response(code, Bytes::from(body));
            if let Some(secs) = retry_after {
                resp.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(secs));
            }
            return Ok(resp);
        }
    }

    if is_sms {
        return Ok(sms::respond(
            &shared,
            &parts.method,
            &path,
            &body,
            sms_key.as_ref(),
            forced_sms_status.as_deref(),
        ));
    }
    if parts.method != Method::POST {
        let msg = format!(
            "unsupported method {:?} (only POST is allowed)",
            parts.method.as_str()
        );
        return Ok(error_response(StatusCode::NOT_FOUND, "bad_route", msg));
    }
    let (Some(route), Some(auth)) = (route, auth) else {
        let msg = format!("no handler for path {path:?}");
        return Ok(error_response(StatusCode::NOT_FOUND, "bad_route", msg));
    };
    if let Some(msg) = auth::content_type_error(&parts.headers) {
        return Ok(error_response(StatusCode::NOT_FOUND, "bad_route", msg));
    }
    let key = match auth {
        Ok(key) => key,
        Err(msg) => {
            return Ok(error_response(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                msg,
            ));
        }
    };
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(&body) else {
        let msg = "request body must be a JSON object";
        return Ok(error_response(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            msg,
        ));
    };
    let expires_at = shared.expires_at();
    let ctx = bodies::Ctx {
        accounts: &shared.accounts,
        key: &key,
        expires_at: expires_at.as_deref(),
        request: &request,
    };
    Ok(match bodies::respond(&route, &ctx) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => error_response(e.status, e.code, e.msg),
    })
}
