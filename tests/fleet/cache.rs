//! Cache coherence across the fleet: a write through one gateway makes the other's cached reads
//! of that tenant misses within the bound; other tenants stay cached; a purge on one gateway
//! empties all.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::{Reply, post, post_with};
use crate::fleet_support::Fleet;
use crate::support::{EXTENSION_INFO, poll};

pub const BODY: &str = r#"{"extension_number":"101"}"#;
pub const CREATE: &str = "/v1/shop.Etelecom/CreateExtension";
/// The staleness bound the README promises on a healthy Redis.
pub const BOUND: Duration = Duration::from_secs(1);

pub async fn info(f: &Fleet, gw: SocketAddr, tenant: &str) -> Reply {
    let r = f
        .http
        .send(post(gw, EXTENSION_INFO, Some(tenant), BODY))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

/// Caches `tenant`'s GetExtensionInfo on `gw` (a MISS or a HIT, then a HIT).
pub async fn cache_on(f: &Fleet, gw: SocketAddr, tenant: &str) {
    info(f, gw, tenant).await;
    assert_eq!(
        info(f, gw, tenant).await.x_cache(),
        "HIT",
        "{tenant} cached"
    );
}

/// A successful CreateExtension for `tenant` through `gw`.
pub async fn write(f: &Fleet, gw: SocketAddr, tenant: &str) {
    let r = f
        .http
        .send(post_with(
            gw,
            CREATE,
            Some(tenant),
            r#"{"extension_number":"205"}"#,
            &[],
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// How long after now `gw` first answers `tenant`'s read as a MISS; panics past `within`.
pub async fn miss_within(f: &Fleet, gw: SocketAddr, tenant: &str, within: Duration) -> Duration {
    let started = Instant::now();
    poll(
        within,
        Duration::from_millis(5),
        "a MISS on the other gateway",
        || async { (info(f, gw, tenant).await.x_cache() == "MISS").then(|| started.elapsed()) },
    )
    .await
}

#[test]
fn a_write_through_one_gateway_invalidates_the_other_and_a_purge_empties_all() {
    let Some(f) = Fleet::start("fleet_invalidation", 2, |_| {}) else {
        return;
    };
    f.wait_subscribed(1.0);
    let (a, b) = (f.gateways[0].public, f.gateways[1].public);
    let stale_for = f.rt.block_on(async {
        cache_on(&f, b, "acme").await;
        cache_on(&f, b, "globex").await;
        write(&f, a, "acme").await;
        let stale_for = miss_within(&f, b, "acme", BOUND).await;
        assert_eq!(
            info(&f, b, "globex").await.x_cache(),
            "HIT",
            "another tenant untouched"
        );
        stale_for
    });
    eprintln!("observed staleness after a write elsewhere: {stale_for:?}");
    assert!(f.sample(1, "etelecom_gateway_cache_remote_invalidations_total", &[]) >= 1.0);
    assert_eq!(
        f.sample(0, "etelecom_gateway_cache_remote_invalidations_total", &[]),
        0.0,
        "A skips its own message"
    );

    f.rt.block_on(async {
        cache_on(&f, b, "acme").await;
        let purge = http::Request::post(f.gateways[0].admin_url("/cache/purge"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                br#"{"all":true}"#,
            )))
            .unwrap();
        assert_eq!(f.http.send(purge).await.status, 200);
        miss_within(&f, b, "acme", BOUND).await;
        miss_within(&f, b, "globex", BOUND).await;
    });
    f.assert_no_secrets_in_redis(&[]);
}
