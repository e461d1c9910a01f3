//! Benchmarks of the request path, measured with criterion (`cargo bench --bench gateway`).
//!
//! - `in_process/*` calls `Gateway::handle` directly: the gateway's own CPU per request (routing,
//!   tenant and key choice, body checks, cache, rate limit, metrics, the JSON access log written
//!   to a sink), without socket overhead. `forward` includes the mock eTelecom's answer over
//!   loopback, so it is an upper bound for the gateway's share.
//! - `loopback/*` goes through real sockets: a hyper client → the gateway on 127.0.0.1 → (for
//!   misses) the mock eTelecom on 127.0.0.1. Latency per request, one at a time.
//!
//! Everything runs on loopback; nothing reaches the network.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use etelecom_gateway::config::Config;
use etelecom_gateway::logging::{self, LogFormat};
use etelecom_gateway::metrics::Metrics;
use etelecom_gateway::mock::{MockAccounts, MockOptions, MockUpstream};
use etelecom_gateway::proxy::Gateway;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

const HIT: &str = "/v1/shop.Etelecom/GetExtensionInfo";
const FORWARD: &str = "/v1/shop.Etelecom/ListCallLogs";
const BODY: &str = r#"{"extension_number":"101"}"#;

struct Bench {
    gateway: Gateway,
    addr: SocketAddr,
    _mock: MockUpstream,
    _dir: tempfile::TempDir,
}

async fn start() -> Bench {
    let accounts = MockAccounts::demo();
    let mock = MockUpstream::start(
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        MockOptions {
            accounts: accounts.clone(),
            tls: false,
        },
    )
    .await
    .expect("mock");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("acme.api"), &accounts.shops[0].api_key).expect("write");
    let text = format!(
        r#"
[upstream]
base_url = "{}"
[rate_limit]
requests_per_second = 1000000
burst = 1000000
[[tenants]]
id = "acme"
api_key = {{ file = "acme.api" }}
"#,
        mock.base_url()
    );
    let cfg = Config::parse(&text, dir.path(), &|_: &str| None).expect("config");
    let gateway = Gateway::new(cfg.clone(), Arc::new(Metrics::new(true))).expect("gateway");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        etelecom_gateway::app::run(&cfg, listener, std::future::pending()).await
    });
    Bench {
        gateway,
        addr,
        _mock: mock,
        _dir: dir,
    }
}

fn request(uri: &str, path: &str) -> Request<Full<Bytes>> {
    Request::post(format!("{uri}{path}"))
        .header("host", "gateway")
        .header("x-tenant-id", "acme")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .expect("request")
}

fn benches(c: &mut Criterion) {
    // The access log is formatted as in production (JSON, info), then thrown away.
    let _ = logging::init_with(LogFormat::Json, std::io::sink, false);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let b = rt.block_on(start());
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("peer");
    // Warm the cache entry used by the hit benches.
    rt.block_on(b.gateway.handle(request("", HIT), peer));

    let mut g = c.benchmark_group("in_process");
    g.bench_function("cache_hit", |bench| {
        bench.to_async(&rt).iter(|| async {
            let resp = b.gateway.handle(request("", HIT), peer).await;
            assert_eq!(resp.headers()["x-cache"], "HIT");
        })
    });
    g.bench_function("gateway_error", |bench| {
        bench.to_async(&rt).iter(|| async {
            let mut req = request("", HIT);
            req.headers_mut()
                .insert("x-tenant-id", "nobody".parse().expect("value"));
            let resp = b.gateway.handle(req, peer).await;
            assert_eq!(resp.status(), 403);
        })
    });
    g.bench_function("forward", |bench| {
        bench.to_async(&rt).iter(|| async {
            let resp = b.gateway.handle(request("", FORWARD), peer).await;
            assert_eq!(resp.status(), 200);
        })
    });
    g.finish();

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let base = format!("http://{}", b.addr);
    let mut g = c.benchmark_group("loopback");
    for (name, path) in [("cache_hit", HIT), ("forward", FORWARD)] {
        g.bench_function(name, |bench| {
            bench.to_async(&rt).iter(|| async {
                let resp = client
                    .request(request(&base, path))
                    .await
                    .expect("response");
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.expect("body");
            })
        });
    }
    g.finish();
}

criterion_group!(gateway, benches);
criterion_main!(gateway);
