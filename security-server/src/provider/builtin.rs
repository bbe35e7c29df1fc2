//! What this server answers itself, without an application: its operational
//! monitoring records and subscriptions to its publishers' topics.

use super::*;

/// Answers a subscriber's `Subscriptions` call (`crate::events`).
pub(super) async fn subscriptions(s: &Provider, accepted: &Accepted, body: Vec<u8>) -> AppAnswer {
    let conf = match s.conf.current(ErrorSource::ProviderServer) {
        Ok(c) => c,
        Err(status) => return AppAnswer::server(status.code(), status.message()),
    };
    let (events, access) = (s.events.clone(), s.access.clone());
    let (client, provider, method) = (
        accepted.client.clone(),
        accepted.header.service_provider.clone(),
        accepted.method.clone(),
    );
    let answered = tokio::task::spawn_blocking(move || {
        let provider: SubsystemId = provider
            .parse()
            .map_err(|e| (Code::InvalidArgument, format!("service provider: {e}")))?;
        crate::events::endpoint::subscription(
            &events, &access, &conf, &client, &provider, &method, &body,
        )
    })
    .await;
    match answered {
        Ok(Ok(body)) => AppAnswer {
            body,
            ..AppAnswer::server(Code::Ok, "")
        },
        Ok(Err((code, message))) => AppAnswer::server(code, message),
        Err(e) => AppAnswer::server(Code::Internal, format!("subscriptions: {e}")),
    }
}

/// Answers from this server's monitoring records (`OperationalData/Query`).
pub(super) async fn operational_data(
    opmon: &Arc<OpMon>,
    method: &MethodPath,
    body: Vec<u8>,
) -> AppAnswer {
    if method.method != "Query" {
        return AppAnswer::server(
            Code::Unimplemented,
            format!("{} has no method {}", crate::opmon::SERVICE, method.method),
        );
    }
    let query = match lintas_proto::opmon::v1::OpQuery::decode(body.as_slice()) {
        Ok(q) => q,
        Err(e) => return AppAnswer::server(Code::InvalidArgument, format!("OpQuery: {e}")),
    };
    let records = opmon.clone();
    opmon.settle().await;
    match tokio::task::spawn_blocking(move || records.query(&query)).await {
        Ok(Ok(page)) => AppAnswer {
            code: Code::Ok,
            message: String::new(),
            body: page.encode_to_vec(),
            by_server: true,
            rest: None,
            secrets: Vec::new(),
            unsent: false,
        },
        Ok(Err(crate::SsError::InvalidInput(m))) => AppAnswer::server(Code::InvalidArgument, m),
        Ok(Err(e)) => AppAnswer::server(Code::Internal, e.to_string()),
        Err(e) => AppAnswer::server(Code::Internal, e.to_string()),
    }
}
