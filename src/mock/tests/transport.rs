//! h2c, TLS with ALPN (h2 and http/1.1) against the generated CA, and the
//! standalone runner.

use super::*;

#[tokio::test]
async fn plain_h2c_is_served() {
    let mock = start(false).await;
    let c: HttpClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let a = call(
        &c,
        &mock,
        "/v1/shop.Misc/CurrentAccount",
        DEMO_ACME_API_KEY,
        "{}",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(mock.received()[0].version, Version::HTTP_2);

    // h2: a reset fails only that stream; the connection keeps serving.
    let reset = post(
        &mock,
        "/v1/shop.Misc/CurrentAccount",
        Some(DEMO_ACME_API_KEY),
    )
    .header(BEHAVIOUR_HEADER, "reset")
    .body(Full::new(Bytes::from_static(b"{}")))
    .expect("req");
    assert!(within(c.request(reset)).await.is_err());
    let a = call(&c, &mock, SHOP_PATH, DEMO_ACME_API_KEY, "{}").await;
    assert_eq!(a.status, StatusCode::OK);

    // A hanging h2 stream ends when the mock shuts down.
    let hang = post(
        &mock,
        "/v1/shop.Misc/CurrentAccount",
        Some(DEMO_ACME_API_KEY),
    )
    .header(BEHAVIOUR_HEADER, "hang")
    .body(Full::new(Bytes::from_static(b"{}")))
    .expect("req");
    let pending = tokio::spawn(c.request(hang));
    within(mock.wait_for_requests(4)).await;
    within(mock.shutdown()).await;
    assert!(within(pending).await.expect("join").is_err());
}

fn tls_connector(ca_pem: &str, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM"))
        .expect("add CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

#[tokio::test]
async fn tls_with_alpn_h2_and_http11() {
    let mock = start(true).await;
    let port = mock.addr().port();
    assert_eq!(mock.base_url(), format!("https://localhost:{port}"));
    let ca = mock.ca_pem().expect("CA PEM").to_owned();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));

    // h2 via ALPN, server name "localhost".
    let tcp = within(TcpStream::connect(mock.addr()))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = within(tls_connector(&ca, &[b"h2", b"http/1.1"]).connect(name, tcp))
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = within(hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        TokioIo::new(tls),
    ))
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let req = post(
        &mock,
        "/v1/shop.Misc/CurrentAccount",
        Some(DEMO_ACME_API_KEY),
    )
    .body(Full::new(Bytes::from_static(b"{}")))
    .expect("req");
    let resp = within(sender.send_request(req)).await.expect("h2 response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(mock.received()[0].version, Version::HTTP_2);

    // http/1.1 via ALPN, server name = the IP address (in the certificate's SANs).
    let tcp = within(TcpStream::connect(mock.addr()))
        .await
        .expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("ip name");
    let tls = within(tls_connector(&ca, &[b"http/1.1"]).connect(name, tcp))
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = within(hyper::client::conn::http1::handshake(TokioIo::new(tls)))
        .await
        .expect("h1");
    tokio::spawn(conn);
    let req = Request::builder()
        .method(Method::POST)
        .uri(PARTNER_LEVEL_PATH)
        .header(http::header::HOST, format!("localhost:{port}"))
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, format!("Bearer {DEMO_PARTNER_KEY}"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("req");
    let resp = within(sender.send_request(req)).await.expect("h1 response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(mock.received()[1].version, Version::HTTP_11);

    // A client that does not trust the mock CA is refused.
    let other = start(true).await;
    let tcp = within(TcpStream::connect(mock.addr()))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let refused =
        within(tls_connector(other.ca_pem().expect("pem"), &[b"h2"]).connect(name, tcp)).await;
    assert!(refused.is_err());
    other.shutdown().await;
    within(mock.shutdown()).await;
}

#[tokio::test]
async fn standalone_writes_ca_and_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_out = dir.path().join("mock-ca.pem");
    let listen = "127.0.0.1:0".parse().expect("addr");
    within(run_standalone(listen, true, Some(ca_out.clone()), async {}))
        .await
        .expect("standalone");
    let pem = std::fs::read_to_string(&ca_out).expect("CA written");
    assert!(CertificateDer::from_pem_slice(pem.as_bytes()).is_ok());
}
