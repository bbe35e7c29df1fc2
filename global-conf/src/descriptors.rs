//! Service descriptors as the catalogue carries them: encoded
//! `google.protobuf.FileDescriptorSet`s, bounded in size, which must link on their own
//! and define the service they are published for. One check for the registry that
//! accepts them and the security servers that publish and read them.

use prost_reflect::DescriptorPool;

/// Largest descriptor set accepted, in bytes.
pub const MAX_DESCRIPTOR_BYTES: usize = 1024 * 1024;

/// Decodes and links a descriptor set.
pub fn pool(descriptor_set: &[u8]) -> Result<DescriptorPool, String> {
    if descriptor_set.len() > MAX_DESCRIPTOR_BYTES {
        return Err(format!(
            "the descriptors are larger than {MAX_DESCRIPTOR_BYTES} bytes"
        ));
    }
    DescriptorPool::decode(descriptor_set).map_err(|e| format!("descriptors: {e}"))
}

/// The methods of `service` as `descriptor_set` defines them, or why it does not.
pub fn methods(descriptor_set: &[u8], service: &str) -> Result<Vec<String>, String> {
    let pool = pool(descriptor_set)?;
    let s = pool
        .get_service_by_name(service)
        .ok_or_else(|| format!("the descriptors do not define {service}"))?;
    Ok(s.methods().map(|m| m.name().to_owned()).collect())
}
