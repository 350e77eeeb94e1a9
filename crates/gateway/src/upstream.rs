//! The HTTP client for upstream providers: hyper-util's pooled client over
//! rustls (aws-lc-rs, the platform's trust roots), HTTP/1.1 or HTTP/2 as the
//! provider offers by ALPN. It never follows redirects (the provider key
//! would travel along to wherever a redirect points) and takes a ready
//! `http::Uri`, so nothing is re-parsed per request.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::GatewayConfig;

pub(crate) type UpstreamClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub(crate) fn build(config: &GatewayConfig) -> Result<UpstreamClient, String> {
    let mut http = HttpConnector::new();
    // Plain http:// is allowed for local OpenAI-compatible servers; https is
    // negotiated by the wrapping connector.
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.upstream_connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_platform_verifier(rustls::crypto::aws_lc_rs::default_provider())
        .map_err(|error| error.to_string())?
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https))
}
