//! The request future's size: hyper moves it into its connection slot for every request, so
//! all of it is copied each time, and at hundreds of connections each copy is cold memory.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use super::Gateway;
use crate::config::Config;
use crate::metrics::Metrics;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
[upstream]
base_url = "http://127.0.0.1:9"
[[tenants]]
id = "acme"
api_key = { env = "ACME_KEY" }
"#;

#[test]
fn a_request_future_stays_small() {
    // The forward and cache branches are boxed (`steps`): inline they made every request's
    // future ~6 KB (5.5 KB for `handle` in a release build), cache hits included.
    let env = |_: &str| Some("canary-key-not-used".to_string());
    let cfg = Config::parse(CONFIG, Path::new("/"), &env).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let gw = Gateway::new(cfg, Arc::new(Metrics::new(true))).unwrap();
    let fut = gw.handle(
        Request::new(Full::new(Bytes::new())),
        "127.0.0.1:1".parse().unwrap(),
    );
    let size = std::mem::size_of_val(&fut);
    assert!(size < 4096, "a request's future is {size} bytes");
}
