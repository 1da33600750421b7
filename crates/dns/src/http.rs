//! Mesos-DNS' HTTP API over the zone: `/v1/version`, `/v1/config`, `/v1/hosts/{host}` (its A
//! records) and `/v1/services/{service}` (its SRV records with their targets' addresses), in
//! Mesos-DNS' JSON shapes, where an unknown name answers one record of empty strings.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use serde_json::{json, Value as Json};
use tokio::sync::watch;

use crate::zone::Zone;

/// Mesos-DNS' default HTTP port.
pub const PORT: u16 = 8123;

#[derive(Clone)]
struct Shared {
    zone: watch::Receiver<Arc<Zone>>,
    config: Arc<Json>,
}

/// The API's routes; `config` is what `/v1/config` shows.
pub fn router(zone: watch::Receiver<Arc<Zone>>, config: Json) -> axum::Router {
    axum::Router::new()
        .route("/v1/version", get(version))
        .route("/v1/config", get(config_of))
        .route("/v1/hosts/{host}", get(hosts))
        .route("/v1/services/{service}", get(services))
        .with_state(Shared {
            zone,
            config: Arc::new(config),
        })
}

async fn version() -> axum::Json<Json> {
    axum::Json(json!({
        "Service": "drover-dns (Mesos-DNS API)",
        "URL": "https://github.com/mesosphere/mesos-dns",
        "Version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn config_of(State(shared): State<Shared>) -> axum::Json<Json> {
    axum::Json((*shared.config).clone())
}

/// `name` as the zone keys it: lower case, no final dot.
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

async fn hosts(State(shared): State<Shared>, Path(host): Path<String>) -> axum::Json<Json> {
    let zone = shared.zone.borrow().clone();
    let name = key(&host);
    let records: Vec<Json> = zone
        .a
        .get(&name)
        .into_iter()
        .flatten()
        .map(|ip| json!({"host": format!("{name}."), "ip": ip.to_string()}))
        .collect();
    if records.is_empty() {
        return axum::Json(json!([{"host": "", "ip": ""}]));
    }
    axum::Json(Json::Array(records))
}

async fn services(State(shared): State<Shared>, Path(service): Path<String>) -> axum::Json<Json> {
    let zone = shared.zone.borrow().clone();
    let name = key(&service);
    let mut records = Vec::new();
    for srv in zone.srv.get(&name).into_iter().flatten() {
        for ip in zone.a.get(&srv.target).into_iter().flatten() {
            records.push(json!({
                "service": format!("{name}."),
                "host": format!("{}.", srv.target),
                "ip": ip.to_string(),
                "port": srv.port.to_string(),
            }));
        }
    }
    if records.is_empty() {
        return axum::Json(json!([{"service": "", "host": "", "ip": "", "port": ""}]));
    }
    axum::Json(Json::Array(records))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::Task;
    use tower::ServiceExt;

    async fn get_json(router: &axum::Router, path: &str) -> Json {
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn hosts_and_services_in_mesos_dns_shapes() {
        let task = Task {
            id: "web.1234abcd".into(),
            name: "/web".into(),
            framework: "marathon".into(),
            hostname: None,
            addresses: vec![],
            agent: Some("10.0.0.5".parse().unwrap()),
            ports: vec![31005],
        };
        let zone = Arc::new(Zone::build(&[task], None, &[]));
        let (_keep, current) = watch::channel(zone);
        let router = router(current, json!({"Domain": "mesos"}));
        assert_eq!(
            get_json(&router, "/v1/hosts/web.marathon.mesos").await,
            json!([{"host": "web.marathon.mesos.", "ip": "10.0.0.5"}])
        );
        assert_eq!(
            get_json(&router, "/v1/services/_web._tcp.marathon.mesos.").await,
            json!([{"service": "_web._tcp.marathon.mesos.", "host": "web-1234abcd.marathon.slave.mesos.",
                    "ip": "10.0.0.5", "port": "31005"}])
        );
        assert_eq!(
            get_json(&router, "/v1/hosts/nothing.mesos").await,
            json!([{"host": "", "ip": ""}])
        );
        assert_eq!(
            get_json(&router, "/v1/services/_nothing._tcp.marathon.mesos").await,
            json!([{"service": "", "host": "", "ip": "", "port": ""}])
        );
        assert_eq!(
            get_json(&router, "/v1/config").await,
            json!({"Domain": "mesos"})
        );
        assert!(get_json(&router, "/v1/version").await["Version"].is_string());
    }
}
