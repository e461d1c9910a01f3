//! `check --probe`: one line per key with its fingerprint and the verdict, the exit code by
//! verdict, and never a key in the output.

use etelecom_gateway::mock::{
    DEMO_ACME_API_KEY, DEMO_ACME_SHOP_KEY, DEMO_GLOBEX_API_KEY, DEMO_PARTNER_KEY, MockAccounts,
};

use crate::common::proc::check_probe;
use crate::common::write;
use crate::support::{config, fingerprint, runtime, start_mock, write_config};

/// Of the right shape for a partner-issued shop key, but unknown to the mock.
const BAD_SHOP_KEY: &str =
    "shop1001:ops-revoked-shop-key-0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4";

/// `check --probe` asks the mock with each key: one line per key with its fingerprint and the
/// verdict; exit 1 when one is refused, 0 when all are accepted; never a key in the output.
#[test]
fn check_probe_reports_each_key_and_exits_by_verdict() {
    let rt = runtime();
    let mock = start_mock(&rt, MockAccounts::demo());
    let dir = tempfile::tempdir().unwrap();
    let run = |tenants: Option<&str>| -> (Option<i32>, String) {
        check_probe(&write_config(dir.path(), &config(&mock, tenants)), &[])
    };
    let assert_no_key = |text: &str, keys: &[&str]| {
        for k in keys {
            let secret = k.split_once(':').unwrap().1;
            assert!(!text.contains(secret), "the output shows a key:\n{text}");
        }
    };

    // A good api_key and a bad shop_key.
    write(dir.path(), "acme.api", &format!("{DEMO_ACME_API_KEY}\n"));
    write(dir.path(), "acme.bad", &format!("{BAD_SHOP_KEY}\n"));
    let (code, text) = run(Some(
        "[[tenants]]\nid = \"acme\"\napi_key = { file = \"acme.api\" }\nshop_key = { file = \"acme.bad\" }\n",
    ));
    let good = format!(
        "probe: tenant acme api_key (sha256:{}): accepted (HTTP 200)",
        fingerprint(DEMO_ACME_API_KEY)
    );
    let bad = format!(
        "probe: tenant acme shop_key (sha256:{}): REFUSED (HTTP 401)",
        fingerprint(BAD_SHOP_KEY)
    );
    assert_eq!(code, Some(1), "{text}");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("probe: ")).collect();
    assert_eq!(lines, [good.as_str(), bad.as_str()], "{text}");
    assert_no_key(&text, &[DEMO_ACME_API_KEY, BAD_SHOP_KEY]);
    let paths: Vec<String> = mock.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/v1/shop.Misc/CurrentAccount",
            "/v1/partner.Etelecom/GetTenant"
        ],
        "one cheap read per key"
    );

    // Every key good, the partner's too.
    mock.clear_received();
    let (code, text) = run(None);
    assert_eq!(code, Some(0), "{text}");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("probe: ")).collect();
    assert_eq!(lines.len(), 4, "{text}");
    for (line, (who, key)) in lines.iter().zip([
        ("partner partner", DEMO_PARTNER_KEY),
        ("tenant acme api_key", DEMO_ACME_API_KEY),
        ("tenant acme shop_key", DEMO_ACME_SHOP_KEY),
        ("tenant globex api_key", DEMO_GLOBEX_API_KEY),
    ]) {
        let want = format!(
            "probe: {who} (sha256:{}): accepted (HTTP 200)",
            fingerprint(key)
        );
        assert_eq!(*line, want, "{text}");
    }
    assert_no_key(
        &text,
        &[
            DEMO_PARTNER_KEY,
            DEMO_ACME_API_KEY,
            DEMO_ACME_SHOP_KEY,
            DEMO_GLOBEX_API_KEY,
        ],
    );
    assert_eq!(mock.request_count(), 4);
}
