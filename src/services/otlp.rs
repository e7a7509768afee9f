//! OTLP logs over gRPC (DESIGN.md section 11):
//! `opentelemetry.proto.collector.logs.v1.LogsService/Export` on the gRPC
//! port, through our own transport.

use crate::auth::Grant;
use crate::grpc::status::Status;
use crate::grpc::transport::Call;
use crate::node::Core;

/// `LogsService/Export`.
pub(super) async fn export(_core: &Core, _call: &mut Call, _grant: &Grant) -> Result<(), Status> {
    Err(Status::unimplemented("OTLP over gRPC is not built yet"))
}
