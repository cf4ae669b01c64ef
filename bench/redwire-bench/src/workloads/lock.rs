//! The Lock workload: acquire and release of one resource.

use redwire::proto::lock_client::LockClient;
use redwire::proto::*;

use crate::Args;
use crate::driver::*;

/// Acquire and release one resource, waiting for it when another worker holds it.
pub(crate) async fn acquire_release(args: &Args, channel: Conn, _payload: Vec<u8>) -> Report {
    let prefix = &args.prefix;
    let client = LockClient::new(channel);
    let resource = format!("{prefix}-lock");
    closed_loop(args, serde_json::json!({}), move |_, _| {
        let (mut client, resource) = (client.clone(), resource.clone());
        async move {
            let grant = client
                .acquire(AcquireRequest {
                    resource: resource.clone(),
                    ttl: ms(5_000),
                    wait: ms(60_000),
                    lease_id: String::new(),
                })
                .await
                .expect("acquire")
                .into_inner();
            client
                .release(ReleaseRequest {
                    resource,
                    token: grant.token,
                })
                .await
                .expect("release");
        }
    })
    .await
}
