//! Response bodies of the mock eTelecom: per-shop fake data (tenant,
//! extensions, hotlines, Zalo OAs, account info) shaped like the objects of
//! API notes section 1.10, derived deterministically from the shop id.

use http::StatusCode;
use serde_json::{Map, Value, json};

use super::auth::Route;
use super::{MockAccounts, MockKeyType};

/// Creation/update timestamp used for every fake object.
const CREATED_AT: &str = "2024-01-15T08:30:00Z";

/// A non-2xx answer in eTelecom's error shape.
#[derive(Debug)]
pub(super) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub msg: String,
}

/// Everything a body depends on.
pub(super) struct Ctx<'a> {
    pub accounts: &'a MockAccounts,
    pub key: &'a MockKeyType,
    /// Resolved `expires_at` (None = omit the field).
    pub expires_at: Option<&'a str>,
    pub request: &'a Map<String, Value>,
}

/// The fake SIP password of extension `extension_number` of shop `shop_id`.
pub fn extension_password(shop_id: &str, extension_number: &str) -> String {
    format!("mock-sip-pw-{shop_id}-{extension_number}")
}

/// The fake tenant domain of a shop.
pub fn tenant_domain(shop_id: &str) -> String {
    format!("{shop_id}.etelecom.vn")
}

fn tenant_id(shop: &str) -> String {
    format!("{shop}100001")
}

fn hotline_id(shop: &str) -> String {
    format!("{shop}300001")
}

fn with_expires(mut v: Value, expires_at: Option<&str>) -> Value {
    if let (Some(obj), Some(exp)) = (v.as_object_mut(), expires_at) {
        obj.insert("expires_at".into(), Value::String(exp.to_owned()));
    }
    v
}

/// A request field given either as a JSON string or a number.
fn field_str(req: &Map<String, Value>, name: &str) -> Option<String> {
    match req.get(name)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn paging(req: &Map<String, Value>) -> Value {
    let limit = req
        .get("paging")
        .and_then(|p| p.get("limit"))
        .and_then(Value::as_u64)
        .unwrap_or(100);
    json!({ "limit": limit, "next": "", "prev": "" })
}

fn tenant(shop: &str) -> Value {
    json!({
        "id": tenant_id(shop),
        "owner_id": shop,
        "name": format!("Tổng đài shop {shop}"),
        "domain": tenant_domain(shop),
        "status": "P",
        "connection_id": "1000000001",
        "connection_method": "direct",
        "created_at": CREATED_AT,
        "updated_at": CREATED_AT,
    })
}

fn hotline(shop: &str) -> Value {
    let suffix: String = shop
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    json!({
        "id": hotline_id(shop),
        "owner_id": shop,
        "name": format!("Hotline shop {shop}"),
        "hotline": format!("1900{suffix:0>4}"),
        "network": "viettel",
        "is_free_charge": false,
        "description": "",
        "status": "P",
        "connection_id": "1000000001",
        "connection_method": "direct",
        "created_at": CREATED_AT,
        "updated_at": CREATED_AT,
    })
}

fn extension(shop: &str, number: &str, hotline: &str, expires_at: Option<&str>) -> Value {
    let v = json!({
        "id": format!("{shop}2{number:0>5}"),
        "user_id": format!("{shop}4{number:0>5}"),
        "account_id": shop,
        "extension_number": number,
        "extension_password": extension_password(shop, number),
        "tenant_id": tenant_id(shop),
        "tenant_domain": tenant_domain(shop),
        "hotline_id": hotline,
        "subscription_id": format!("{shop}500001"),
        "state": "P",
        "created_at": CREATED_AT,
        "updated_at": CREATED_AT,
    });
    with_expires(v, expires_at)
}

fn oa(shop: &str, oa_id: Option<String>, expires_at: Option<&str>) -> Value {
    let v = json!({
        "oa_id": oa_id.unwrap_or_else(|| format!("{shop}600001")),
        "app_id": format!("{shop}700001"),
        "name": format!("Zalo OA shop {shop}"),
        "description": "Mock official account",
        "avatar": "",
        "cover": "",
        "is_verified": true,
        "status": "P",
        "shop_id": shop,
        "onwer_id": shop,
        "connection_id": "1000000002",
        "connection_method": "builtin",
        "current_quality": "HIGH",
        "last_week_quality": "HIGH",
        "daily_quota": 500,
        "remaining_quota": 480,
        "webhook_url": "",
        "created_at": CREATED_AT,
        "updated_at": CREATED_AT,
    });
    with_expires(v, expires_at)
}

fn partner_id(accounts: &MockAccounts) -> &str {
    accounts
        .partner_key
        .split_once(':')
        .map_or("9000", |(id, _)| id)
}

/// The body of a successful call of `route` by the holder of `ctx.key`.
pub(super) fn respond(route: &Route<'_>, ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    match ctx.key {
        MockKeyType::Partner => partner_level(route, ctx),
        MockKeyType::ShopApiKey { shop } | MockKeyType::ShopKey { shop } => {
            Ok(shop_scoped(route, shop, ctx))
        }
        // The API's auth rule never yields an SMS account; answered as eTelecom would.
        MockKeyType::Sms { .. } => Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthenticated",
            msg: "SMS credentials are not API keys".into(),
        }),
    }
}

fn partner_level(route: &Route<'_>, ctx: &Ctx<'_>) -> Result<Value, ApiError> {
    let shops = &ctx.accounts.shops;
    let req = ctx.request;
    Ok(match (route.service, route.method) {
        ("Misc", "CurrentAccount") => {
            let id = partner_id(ctx.accounts);
            json!({ "id": id, "name": format!("Mock partner {id}"), "type": "partner",
                    "phone": "0900000000", "email": "partner@example.com", "website_url": "" })
        }
        ("Etelecom", "GetPartnerTenantList") => json!({
            "tenants": shops.iter().map(|s| tenant(&s.id)).collect::<Vec<_>>(),
            "paging": paging(req),
        }),
        ("Etelecom", "GetPartnerHotlineList") => json!({
            "hotlines": shops.iter().map(|s| hotline(&s.id)).collect::<Vec<_>>(),
            "paging": paging(req),
        }),
        ("Etelecom", "PartnerAddHotline") => {
            let owner =
                field_str(req, "owner_id").unwrap_or_else(|| partner_id(ctx.accounts).to_owned());
            let mut h = hotline(&owner);
            if let Some(obj) = h.as_object_mut() {
                for f in ["hotline", "name", "description", "network"] {
                    if let Some(v) = req.get(f) {
                        obj.insert(f.into(), v.clone());
                    }
                }
            }
            h
        }
        ("Etelecom", "PartnerActivateTenant") => json!({ "updated": 1 }),
        ("Shop", "AuthorizeShop") => match field_str(req, "shop_id") {
            Some(id) => match shops.iter().find(|s| s.id == id) {
                Some(shop) => json!({ "code": "ok", "msg": "", "type": "shop_key",
                    "auth_token": shop.shop_key, "expires_in": -1, "auth_url": "", "meta": {} }),
                None => {
                    return Err(ApiError {
                        status: StatusCode::FORBIDDEN,
                        code: "permission_denied",
                        msg: format!("shop {id} is not connected to this partner"),
                    });
                }
            },
            None => json!({ "code": "ok", "msg": "", "type": "shop_request",
                "auth_token": "mock-shop-request-token", "expires_in": 3600,
                "auth_url": "https://mock.etelecom.invalid/authorize?token=mock-shop-request-token",
                "meta": {} }),
        },
        _ => json!({}),
    })
}

fn shop_scoped(route: &Route<'_>, shop: &str, ctx: &Ctx<'_>) -> Value {
    let req = ctx.request;
    let exp = ctx.expires_at;
    match (route.service, route.method) {
        ("Misc", "CurrentAccount") => json!({
            "id": shop, "name": format!("Mock shop {shop}"), "type": "shop",
            "phone": "0900000001", "email": format!("shop{shop}@example.com"), "image_url": "",
        }),
        ("Etelecom", "GetExtensionInfo") => {
            let number = field_str(req, "extension_number").unwrap_or_else(|| "101".into());
            let v = json!({
                "extension_number": number,
                "extension_password": extension_password(shop, &number),
                "tenant_domain": tenant_domain(shop),
            });
            with_expires(v, exp)
        }
        ("Etelecom", "GetExtensions") => {
            let hotline = hotline_id(shop);
            let extensions: Vec<Value> = ["101", "102"]
                .iter()
                .map(|n| extension(shop, n, &hotline, exp))
                .collect();
            json!({ "extensions": extensions, "paging": paging(req) })
        }
        ("Etelecom", "CreateExtension") => {
            let number = field_str(req, "extension_number").unwrap_or_else(|| "103".into());
            let hotline = field_str(req, "hotline_id").unwrap_or_else(|| hotline_id(shop));
            extension(shop, &number, &hotline, exp)
        }
        (
            "Etelecom",
            "UpdateHotlineForExtension" | "AssignUserToExtension" | "RemoveUserOfExtension",
        ) => {
            json!({ "updated": 1 })
        }
        ("Etelecom", "GetTenant" | "CreateTenant") => tenant(shop),
        ("Zalo", "ListOA") => json!({
            "accounts": [oa(shop, field_str(req, "oa_id"), exp)],
            "paging": paging(req),
        }),
        ("Zalo", "GetShopOA") => {
            let mut v = oa(shop, field_str(req, "oa_id"), exp);
            if let Some(obj) = v.as_object_mut() {
                obj.insert("daily_quota_promotion".into(), json!(2));
                obj.insert("monthly_promotion_quota".into(), json!(40));
                obj.insert("remaining_monthly_promotion_quota".into(), json!(38));
                obj.insert("estimated_next_month_promotion_quota".into(), json!(40));
            }
            v
        }
        _ => json!({}),
    }
}

/// Twirp error code of an HTTP status (for forced statuses without a body).
pub(super) fn code_for_status(status: u16) -> &'static str {
    match status {
        400 => "invalid_argument",
        401 => "unauthenticated",
        403 => "permission_denied",
        404 => "not_found",
        408 => "deadline_exceeded",
        409 => "already_exists",
        412 => "failed_precondition",
        429 => "resource_exhausted",
        501 => "unimplemented",
        503 => "unavailable",
        _ if status >= 500 => "internal",
        _ => "unknown",
    }
}
