//! The floors: what a call costs before any Redis work.

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::Args;
use crate::driver::*;

/// Health checks: a unary call with no Redis behind it.
pub(crate) async fn grpc(args: &Args, channel: Conn, _payload: Vec<u8>) -> Report {
    let _prefix = &args.prefix;
    let client = HealthClient::new(channel);
    closed_loop(args, serde_json::json!({}), move |_, _| {
        let mut client = client.clone();
        async move {
            client
                .check(HealthCheckRequest::default())
                .await
                .expect("health check");
        }
    })
    .await
}
