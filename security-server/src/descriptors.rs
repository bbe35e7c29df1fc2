//! Service descriptors: learned from a provider application by gRPC server reflection,
//! published in the registry's catalogue, and read back by consumers (as encoded
//! `google.protobuf.FileDescriptorSet`s).

pub use lintas_globalconf::descriptors::{MAX_DESCRIPTOR_BYTES, methods, pool};
use prost::Message;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_reflection::pb::v1 as refl;

/// Files fetched by reflection for one service, at most.
const MAX_FILES: usize = 256;

/// Asks the application at `channel` for the files defining `service` and everything
/// they import, by gRPC server reflection (v1). Returns the encoded descriptor set.
pub async fn fetch(channel: Channel, service: &str) -> Result<Vec<u8>, String> {
    let mut client = refl::server_reflection_client::ServerReflectionClient::new(channel)
        .max_decoding_message_size(MAX_DESCRIPTOR_BYTES);
    let (tx, rx) = tokio::sync::mpsc::channel(MAX_FILES + 1);
    let ask = |request| refl::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let send = |tx: &tokio::sync::mpsc::Sender<_>, request| {
        tx.try_send(ask(request))
            .map_err(|_| "reflection stream closed".to_owned())
    };
    send(
        &tx,
        refl::server_reflection_request::MessageRequest::FileContainingSymbol(service.to_owned()),
    )?;
    let mut answers = client
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| match s.code() {
            tonic::Code::Unimplemented => {
                "the application does not serve gRPC server reflection".to_owned()
            }
            _ => format!("reflection: {}", s.message()),
        })?
        .into_inner();
    let mut files: Vec<prost_types::FileDescriptorProto> = Vec::new();
    let mut asked = std::collections::BTreeSet::new();
    let mut pending = 1usize;
    let mut total = 0usize;
    while pending > 0 {
        let answer = answers
            .next()
            .await
            .ok_or_else(|| "the reflection stream ended early".to_owned())?
            .map_err(|s| format!("reflection: {}", s.message()))?;
        pending -= 1;
        use refl::server_reflection_response::MessageResponse;
        let protos = match answer.message_response {
            Some(MessageResponse::FileDescriptorResponse(r)) => r.file_descriptor_proto,
            Some(MessageResponse::ErrorResponse(e)) => {
                return Err(format!("reflection: {}", e.error_message));
            }
            _ => return Err("reflection: unexpected answer".into()),
        };
        for bytes in protos {
            total += bytes.len();
            if total > MAX_DESCRIPTOR_BYTES || files.len() >= MAX_FILES {
                return Err(format!(
                    "the descriptors are larger than {MAX_DESCRIPTOR_BYTES} bytes or {MAX_FILES} files"
                ));
            }
            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice())
                .map_err(|e| format!("reflection: a malformed file descriptor: {e}"))?;
            if files.iter().any(|f| f.name == file.name) {
                continue;
            }
            asked.insert(file.name().to_owned());
            files.push(file);
        }
        let missing: Vec<String> = files
            .iter()
            .flat_map(|f| f.dependency.iter())
            .filter(|d| !asked.contains(*d))
            .cloned()
            .collect();
        for name in missing {
            if asked.len() >= MAX_FILES {
                return Err(format!(
                    "the descriptors import more than {MAX_FILES} files"
                ));
            }
            if asked.insert(name.clone()) {
                send(
                    &tx,
                    refl::server_reflection_request::MessageRequest::FileByFilename(name),
                )?;
                pending += 1;
            }
        }
    }
    let set = prost_types::FileDescriptorSet { file: files }.encode_to_vec();
    methods(&set, service)?;
    Ok(set)
}
