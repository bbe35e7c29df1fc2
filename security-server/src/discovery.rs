//! Discovery on the consumer endpoint, over gRPC: the `lintas.discovery.v1.Discovery`
//! service and gRPC server reflection (v1) that lists exactly the services the calling
//! client may call, so that tools such as grpcurl can describe and call them. The
//! caller names itself with `lintas-client` and is authenticated as for any call.

use std::pin::Pin;
use std::sync::Arc;

use lintas_identifiers::{ClientId, SubsystemId};
use lintas_proto::discovery::v1 as pb;
use prost::Message;
use prost_reflect::DescriptorPool;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_reflection::pb::v1 as refl;

use crate::catalogue::{Catalogue, allowed_methods};
use crate::errors::{ErrorSource, error};
use crate::local::{LocalApps, caller};

/// The quotas of a catalogue service as discovery answers them (of those that hold
/// `client`, when named).
fn published_quotas(
    entry: &lintas_proto::globalconf::v1::ServiceRef,
    client: Option<&ClientId>,
) -> Vec<pb::Quota> {
    crate::catalogue::quotas_for(entry, client)
        .into_iter()
        .map(|q| pb::Quota {
            method: q.method,
            client: q.client,
            rate: crate::quotas::rate_text(q.calls, q.per_secs),
            burst: q.burst,
        })
        .collect()
}

fn invalid(message: String) -> Status {
    error(Code::InvalidArgument, ErrorSource::ConsumerServer, message)
}

/// The authenticated client a request names in `lintas-client`.
pub(crate) fn client_of<T>(local: &LocalApps, request: &Request<T>) -> Result<ClientId, Status> {
    let text = request
        .metadata()
        .get("lintas-client")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| invalid("metadata lintas-client is required".into()))?;
    let client: ClientId = text
        .parse()
        .map_err(|e| invalid(format!("metadata lintas-client: {e}")))?;
    let (remote, peer_cert) = caller(request.extensions());
    local.authenticate(&client, remote, peer_cert)?;
    Ok(client)
}

fn provider(text: &str) -> Result<Option<SubsystemId>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|e| invalid(format!("provider: {e}")))
}

/// Discovery's parts: who may ask, and the catalogue answered from.
#[derive(Clone)]
pub struct Discovery {
    pub local: Arc<LocalApps>,
    pub catalogue: Arc<Catalogue>,
}

#[tonic::async_trait]
impl pb::discovery_server::Discovery for Discovery {
    async fn list_clients(
        &self,
        request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ClientList>, Status> {
        client_of(&self.local, &request)?;
        let r = request.get_ref();
        let conf = self.catalogue.discovery_conf().await?;
        let clients: Vec<(String, pb::Client)> = crate::catalogue::clients(&conf)
            .into_iter()
            .map(|(id, name)| {
                let id = id.to_string();
                (id.clone(), pb::Client { id, name })
            })
            .filter(|(_, c)| c.id.contains(&r.filter) || c.name.contains(&r.filter))
            .collect();
        let (clients, next_page_token) = lintas_proto::paging::page(
            clients.iter().map(|(k, c)| (k.clone(), c)),
            &r.page_token,
            lintas_proto::paging::size(r.page_size),
        )
        .map_err(invalid)?;
        Ok(Response::new(pb::ClientList {
            clients,
            next_page_token,
        }))
    }

    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ServiceList>, Status> {
        client_of(&self.local, &request)?;
        let provider = provider(&request.get_ref().provider)?
            .ok_or_else(|| invalid("provider is required".into()))?;
        let r = request.get_ref();
        let conf = self.catalogue.discovery_conf().await?;
        let (page, next_page_token) = self
            .catalogue
            .list_page(
                &conf,
                Some(&provider),
                None,
                &r.page_token,
                lintas_proto::paging::size(r.page_size),
            )
            .await?;
        let services = page
            .into_iter()
            .map(|d| pb::Service {
                methods: d.methods(),
                quotas: published_quotas(&d.entry, None),
                provider: d.entry.provider,
                service: d.entry.service,
            })
            .collect();
        Ok(Response::new(pb::ServiceList {
            services,
            next_page_token,
        }))
    }

    async fn allowed_methods(
        &self,
        request: Request<pb::AllowedMethodsRequest>,
    ) -> Result<Response<pb::ServiceList>, Status> {
        let client = client_of(&self.local, &request)?;
        let provider = provider(&request.get_ref().provider)?;
        let r = request.get_ref();
        let conf = self.catalogue.discovery_conf().await?;
        let (page, next_page_token) = self
            .catalogue
            .list_page(
                &conf,
                provider.as_ref(),
                Some(&client),
                &r.page_token,
                lintas_proto::paging::size(r.page_size),
            )
            .await?;
        let services = page
            .into_iter()
            .filter_map(|d| {
                allowed_methods(&conf, &d, &client).map(|methods| pb::Service {
                    methods,
                    quotas: published_quotas(&d.entry, Some(&client)),
                    provider: d.entry.provider,
                    service: d.entry.service,
                })
            })
            .collect();
        Ok(Response::new(pb::ServiceList {
            services,
            next_page_token,
        }))
    }

    async fn get_service_descriptor(
        &self,
        request: Request<pb::ServiceDescriptorRequest>,
    ) -> Result<Response<pb::ServiceDescriptor>, Status> {
        client_of(&self.local, &request)?;
        let r = request.get_ref();
        let provider =
            provider(&r.provider)?.ok_or_else(|| invalid("provider is required".into()))?;
        let conf = self.catalogue.discovery_conf().await?;
        let d = self
            .catalogue
            .described(&conf, &provider, &r.service)
            .await?;
        let service = d.service.ok_or_else(|| {
            error(
                Code::NotFound,
                ErrorSource::ConsumerServer,
                format!("{} of {provider} published no descriptors", r.service),
            )
        })?;
        Ok(Response::new(pb::ServiceDescriptor {
            descriptor_set: service.parent_pool().encode_to_vec(),
        }))
    }
}

/// gRPC server reflection over the services the caller may call.
pub struct Reflection(pub Discovery);

type ReflectionStream =
    Pin<Box<dyn Stream<Item = Result<refl::ServerReflectionResponse, Status>> + Send>>;

impl Reflection {
    /// The descriptors of every described service `client` may call at least one
    /// method of, in one pool, with their names.
    async fn visible(&self, client: &ClientId) -> Result<(DescriptorPool, Vec<String>), Status> {
        let conf = self.0.catalogue.discovery_conf().await?;
        let mut pool = DescriptorPool::new();
        let mut names = Vec::new();
        for d in self.0.catalogue.list(&conf, None, Some(client)).await {
            let Some(service) = &d.service else { continue };
            if allowed_methods(&conf, &d, client).is_none()
                || names.iter().any(|n| n == service.full_name())
            {
                continue;
            }
            // A service whose files clash with one already added (same name, other
            // contents) is left out rather than described wrongly.
            let mut with = pool.clone();
            if with
                .add_file_descriptor_protos(service.parent_pool().file_descriptor_protos().cloned())
                .is_ok()
            {
                pool = with;
                names.push(service.full_name().to_owned());
            }
        }
        Ok((pool, names))
    }
}

fn answer(
    pool: &DescriptorPool,
    names: &[String],
    request: refl::ServerReflectionRequest,
) -> refl::ServerReflectionResponse {
    use refl::server_reflection_request::MessageRequest;
    use refl::server_reflection_response::MessageResponse;
    let not_found = |what: String| {
        MessageResponse::ErrorResponse(refl::ErrorResponse {
            error_code: Code::NotFound as i32,
            error_message: what,
        })
    };
    // A file with everything it imports, the file first.
    let files = |file: prost_reflect::FileDescriptor| {
        let mut out = vec![file.clone()];
        let mut i = 0;
        while i < out.len() {
            let deps: Vec<_> = out[i].dependencies().collect();
            for dep in deps {
                if !out.iter().any(|f| f.name() == dep.name()) {
                    out.push(dep);
                }
            }
            i += 1;
        }
        MessageResponse::FileDescriptorResponse(refl::FileDescriptorResponse {
            file_descriptor_proto: out
                .iter()
                .map(|f| f.file_descriptor_proto().encode_to_vec())
                .collect(),
        })
    };
    let response = match &request.message_request {
        Some(MessageRequest::ListServices(_)) => {
            MessageResponse::ListServicesResponse(refl::ListServiceResponse {
                service: names
                    .iter()
                    .map(|n| refl::ServiceResponse { name: n.clone() })
                    .collect(),
            })
        }
        Some(MessageRequest::FileByFilename(name)) => match pool.get_file_by_name(name) {
            Some(f) => files(f),
            None => not_found(format!("no file {name}")),
        },
        Some(MessageRequest::FileContainingSymbol(symbol)) => {
            // A method's symbol is its service's name plus the method name.
            let parent = symbol.rsplit_once('.').map(|(p, _)| p).unwrap_or("");
            let file = pool
                .get_service_by_name(symbol)
                .map(|s| s.parent_file())
                .or_else(|| pool.get_message_by_name(symbol).map(|m| m.parent_file()))
                .or_else(|| pool.get_enum_by_name(symbol).map(|e| e.parent_file()))
                .or_else(|| pool.get_service_by_name(parent).map(|s| s.parent_file()));
            match file {
                Some(f) => files(f),
                None => not_found(format!("no symbol {symbol}")),
            }
        }
        Some(MessageRequest::FileContainingExtension(_))
        | Some(MessageRequest::AllExtensionNumbersOfType(_)) => {
            not_found("no extensions are described".into())
        }
        None => MessageResponse::ErrorResponse(refl::ErrorResponse {
            error_code: Code::InvalidArgument as i32,
            error_message: "empty request".into(),
        }),
    };
    refl::ServerReflectionResponse {
        valid_host: request.host.clone(),
        original_request: Some(request),
        message_response: Some(response),
    }
}

#[tonic::async_trait]
impl refl::server_reflection_server::ServerReflection for Reflection {
    type ServerReflectionInfoStream = ReflectionStream;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<refl::ServerReflectionRequest>>,
    ) -> Result<Response<ReflectionStream>, Status> {
        let client = client_of(&self.0.local, &request)?;
        let (pool, names) = self.visible(&client).await?;
        let requests = request.into_inner();
        let answers = requests.map(move |r| r.map(|r| answer(&pool, &names, r)));
        Ok(Response::new(Box::pin(answers)))
    }
}

type AlphaStream = Pin<
    Box<
        dyn Stream<Item = Result<tonic_reflection::pb::v1alpha::ServerReflectionResponse, Status>>
            + Send,
    >,
>;

/// The same reflection for clients that speak only v1alpha (older grpcurl releases):
/// the two versions' messages are identical on the wire, so each is transcoded.
#[tonic::async_trait]
impl tonic_reflection::pb::v1alpha::server_reflection_server::ServerReflection for Reflection {
    type ServerReflectionInfoStream = AlphaStream;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<tonic_reflection::pb::v1alpha::ServerReflectionRequest>>,
    ) -> Result<Response<AlphaStream>, Status> {
        let client = client_of(&self.0.local, &request)?;
        let (pool, names) = self.visible(&client).await?;
        let requests = request.into_inner();
        let answers = requests.map(move |r| {
            let r = refl::ServerReflectionRequest::decode(r?.encode_to_vec().as_slice())
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let answer = answer(&pool, &names, r).encode_to_vec();
            tonic_reflection::pb::v1alpha::ServerReflectionResponse::decode(answer.as_slice())
                .map_err(|e| Status::internal(e.to_string()))
        });
        Ok(Response::new(Box::pin(answers)))
    }
}
