//! Calling an adapter's backend directly, as its gRPC server would.

use std::sync::Arc;

use lintas_adapter::{Adapter, Backend};
use prost_reflect::{DynamicMessage, Value};

/// Calls `method` of the adapter's service with the request fields `fields`.
pub async fn call(
    adapter: &Adapter,
    backend: &Arc<dyn Backend>,
    method: &str,
    fields: &[(&str, Value)],
) -> Result<DynamicMessage, tonic::Status> {
    let m = adapter
        .service
        .methods()
        .find(|m| m.name() == method)
        .unwrap_or_else(|| panic!("no method {method}"));
    let mut request = DynamicMessage::new(m.input());
    for (k, v) in fields {
        request.set_field_by_name(k, v.clone());
    }
    backend.call(&m, request).await
}
