//! Response bodies per shop/key type and the `expires_at` control.

use super::*;

#[tokio::test]
async fn bodies_and_expires_at_control() {
    let mock = start(false).await;
    let c = client();
    let a = call(
        &c,
        &mock,
        "/v1/shop.Etelecom/GetExtensionInfo",
        DEMO_ACME_API_KEY,
        r#"{"extension_number":205}"#,
    )
    .await;
    assert_eq!(a.json["extension_number"], "205");
    assert_eq!(
        a.json["extension_password"],
        extension_password("1001", "205").as_str()
    );
    assert_eq!(a.json["tenant_domain"], "1001.etelecom.vn");
    let exp = a.json["expires_at"].as_str().expect("expires_at");
    assert!(exp.ends_with('Z'), "{exp}");
    assert!((29..=30).contains(&days_from_now(exp)), "{exp}");

    let a = call(&c, &mock, PARTNER_SHOP_PATH, DEMO_GLOBEX_SHOP_KEY, "{}").await;
    assert_eq!(a.json["extension_number"], "101");
    assert_eq!(a.json["tenant_domain"], "1002.etelecom.vn");

    let a = call(&c, &mock, SHOP_PATH, DEMO_GLOBEX_API_KEY, "{}").await;
    let exts = a.json["extensions"].as_array().expect("extensions");
    assert_eq!(exts.len(), 2);
    for e in exts {
        for f in [
            "id",
            "user_id",
            "account_id",
            "extension_number",
            "extension_password",
            "tenant_id",
            "tenant_domain",
            "hotline_id",
            "subscription_id",
            "state",
            "created_at",
            "updated_at",
            "expires_at",
        ] {
            assert!(e.get(f).is_some(), "extension lacks {f}: {e}");
        }
        assert_eq!(e["account_id"], "1002");
    }
    assert!(a.json["paging"].is_object());

    let a = call(
        &c,
        &mock,
        "/v1/shop.Etelecom/CreateExtension",
        DEMO_ACME_API_KEY,
        r#"{"hotline_id":"77","extension_number":150}"#,
    )
    .await;
    assert_eq!(
        (
            a.json["extension_number"].clone(),
            a.json["hotline_id"].clone()
        ),
        (json!("150"), json!("77"))
    );
    for m in [
        "UpdateHotlineForExtension",
        "AssignUserToExtension",
        "RemoveUserOfExtension",
    ] {
        let a = call(
            &c,
            &mock,
            &format!("/v1/partner.Etelecom/{m}"),
            DEMO_ACME_SHOP_KEY,
            "{}",
        )
        .await;
        assert_eq!(a.json, json!({"updated": 1}), "{m}");
    }
    let a = call(
        &c,
        &mock,
        "/v1/shop.Misc/CurrentAccount",
        DEMO_ACME_API_KEY,
        "{}",
    )
    .await;
    assert_eq!(
        (a.json["id"].clone(), a.json["type"].clone()),
        (json!("1001"), json!("shop"))
    );
    let a = call(
        &c,
        &mock,
        "/v1/partner.Misc/CurrentAccount",
        DEMO_PARTNER_KEY,
        "{}",
    )
    .await;
    assert_eq!(
        (a.json["id"].clone(), a.json["type"].clone()),
        (json!("9000"), json!("partner"))
    );
    let a = call(
        &c,
        &mock,
        "/v1/partner.Etelecom/GetTenant",
        DEMO_ACME_SHOP_KEY,
        "{}",
    )
    .await;
    assert_eq!(a.json["domain"], "1001.etelecom.vn");
    let a = call(&c, &mock, PARTNER_LEVEL_PATH, DEMO_PARTNER_KEY, "{}").await;
    assert_eq!(a.json["tenants"].as_array().map(Vec::len), Some(2));
    let a = call(
        &c,
        &mock,
        "/v1/partner.Shop/AuthorizeShop",
        DEMO_PARTNER_KEY,
        r#"{"shop_id":"1002"}"#,
    )
    .await;
    assert_eq!(
        (a.json["type"].clone(), a.json["auth_token"].clone()),
        (json!("shop_key"), json!(DEMO_GLOBEX_SHOP_KEY))
    );
    let a = call(
        &c,
        &mock,
        "/v1/partner.Shop/AuthorizeShop",
        DEMO_PARTNER_KEY,
        r#"{"shop_id":"4242"}"#,
    )
    .await;
    assert_eq!(
        (a.status, a.json["code"].clone()),
        (StatusCode::FORBIDDEN, json!("permission_denied"))
    );

    mock.set_expires_at(Some("0001-01-01T00:00:00Z".into()));
    let a = call(
        &c,
        &mock,
        "/v1/shop.Zalo/GetShopOA",
        DEMO_ACME_API_KEY,
        r#"{"oa_id":"55"}"#,
    )
    .await;
    assert_eq!(
        (a.json["oa_id"].clone(), a.json["expires_at"].clone()),
        (json!("55"), json!("0001-01-01T00:00:00Z"))
    );
    mock.set_expires_at(None);
    let a = call(
        &c,
        &mock,
        "/v1/partner.Zalo/ListOA",
        DEMO_ACME_SHOP_KEY,
        "{}",
    )
    .await;
    let oa = &a.json["accounts"][0];
    assert!(
        oa.get("oa_id").is_some() && oa.get("expires_at").is_none(),
        "{oa}"
    );
    let a = call(&c, &mock, SHOP_PATH, DEMO_ACME_API_KEY, "{}").await;
    assert!(a.json["extensions"][0].get("expires_at").is_none());
    mock.reset_expires_at();
    let a = call(&c, &mock, PARTNER_SHOP_PATH, DEMO_ACME_SHOP_KEY, "{}").await;
    assert!(a.json["expires_at"].is_string());
    mock.shutdown().await;
}
