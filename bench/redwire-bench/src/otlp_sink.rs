//! An OTLP trace receiver that counts the spans it gets and drops them: the
//! collector Redwire exports to when the bench measures the cost of tracing.

use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Request, Response, Status};

#[derive(Default)]
struct Sink {
    spans: AtomicU64,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len())
            .sum();
        let total = self.spans.fetch_add(spans as u64, Ordering::Relaxed) + spans as u64;
        // One line per batch: the last one is the total so far.
        println!("{}", serde_json::json!({ "otlp_spans": total }));
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves the OTLP trace service on `listen` until the process is killed.
pub(crate) async fn serve(listen: std::net::SocketAddr) {
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Sink::default()))
        .serve(listen)
        .await
        .expect("the OTLP sink serves");
}
