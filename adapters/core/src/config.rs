//! Reading an adapter's configuration file and compiling its `.proto` file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use prost_reflect::{MethodDescriptor, ServiceDescriptor};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::AdapterError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    adapter: Section,
    rest: Option<toml::Table>,
    soap: Option<toml::Table>,
    sql: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    listen: String,
    #[serde(default = "default_ops_listen")]
    ops_listen: String,
    proto: PathBuf,
    #[serde(default)]
    import_paths: Vec<PathBuf>,
    service: String,
}

fn default_ops_listen() -> String {
    "127.0.0.1:0".into()
}

/// The backend section of the file, for the backend's crate to read.
#[derive(Debug)]
pub enum BackendSection {
    Rest(toml::Table),
    Soap(toml::Table),
    Sql(toml::Table),
}

/// A loaded adapter configuration with its compiled service.
#[derive(Debug)]
pub struct Adapter {
    /// `host:port` to listen on.
    pub listen: String,
    /// `host:port` of the operations listener (`/metrics`, `/healthz`, `/readyz`); port 0
    /// lets the OS choose (the address is printed at start).
    pub ops_listen: String,
    pub service: ServiceDescriptor,
    /// The file defining the service and everything it imports, for reflection.
    pub descriptor_set: prost_types::FileDescriptorSet,
    pub backend: BackendSection,
    /// The configuration file's folder: relative paths in it are relative to this.
    pub base_dir: PathBuf,
}

impl Adapter {
    /// `path` relative to the configuration file's folder.
    pub fn path(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }
}

fn config_error(path: &Path, what: impl std::fmt::Display) -> AdapterError {
    AdapterError::Config(format!("{}: {what}", path.display()))
}

/// Reads the configuration at `path` and compiles the `.proto` file it names.
pub fn load(path: &Path) -> Result<Adapter, AdapterError> {
    let text = std::fs::read_to_string(path).map_err(|e| config_error(path, e))?;
    let file: File = toml::from_str(&text).map_err(|e| config_error(path, e))?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let backend = match (file.rest, file.soap, file.sql) {
        (Some(t), None, None) => BackendSection::Rest(t),
        (None, Some(t), None) => BackendSection::Soap(t),
        (None, None, Some(t)) => BackendSection::Sql(t),
        (None, None, None) => {
            return Err(config_error(
                path,
                "a backend section is needed: one of [rest], [soap] or [sql]",
            ));
        }
        _ => {
            return Err(config_error(
                path,
                "only one backend section ([rest], [soap] or [sql]) may be given",
            ));
        }
    };
    let a = file.adapter;
    let imports: Vec<PathBuf> = if a.import_paths.is_empty() {
        vec![base_dir.clone()]
    } else {
        a.import_paths.iter().map(|p| base_dir.join(p)).collect()
    };
    let compiler = compile(&a.proto, &imports).map_err(|e| config_error(path, e))?;
    let pool = compiler.descriptor_pool();
    let service = pool.get_service_by_name(&a.service).ok_or_else(|| {
        let known: Vec<String> = pool.services().map(|s| s.full_name().to_owned()).collect();
        config_error(
            path,
            format!(
                "service {} is not defined by {} (it defines: {})",
                a.service,
                a.proto.display(),
                if known.is_empty() {
                    "no services".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        )
    })?;
    for m in service.methods() {
        if m.is_client_streaming() || m.is_server_streaming() {
            return Err(config_error(
                path,
                format!(
                    "method {} streams; adapters serve unary methods only",
                    m.full_name()
                ),
            ));
        }
    }
    Ok(Adapter {
        listen: a.listen,
        ops_listen: a.ops_listen,
        service,
        descriptor_set: compiler.file_descriptor_set(),
        backend,
        base_dir,
    })
}

/// Compiles `proto` (a path under one of `imports`) with everything it imports.
pub fn compile(proto: &Path, imports: &[PathBuf]) -> Result<protox::Compiler, String> {
    let mut compiler = protox::Compiler::new(imports).map_err(|e| format!("import paths: {e}"))?;
    compiler.include_imports(true).include_source_info(false);
    compiler
        .open_file(proto)
        .map_err(|e| format!("proto {}: {e}", proto.display()))?;
    Ok(compiler)
}

/// Reads a backend's per-method mappings from `methods` (the `[<section>.methods]` table):
/// every method of the service needs one, and each names a method of the service.
pub fn method_mappings<T: DeserializeOwned>(
    service: &ServiceDescriptor,
    section: &str,
    methods: toml::Table,
) -> Result<Vec<(MethodDescriptor, T)>, AdapterError> {
    let names: BTreeSet<String> = service.methods().map(|m| m.name().to_owned()).collect();
    if let Some(extra) = methods.keys().find(|k| !names.contains(*k)) {
        return Err(AdapterError::Config(format!(
            "[{section}.methods.{extra}]: service {} has no method {extra} (it has: {})",
            service.full_name(),
            names.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    let mut out = Vec::new();
    for m in service.methods() {
        let table = methods.get(m.name()).ok_or_else(|| {
            AdapterError::Config(format!(
                "method {} has no mapping: add a [{section}.methods.{}] table",
                m.full_name(),
                m.name()
            ))
        })?;
        let mapping = table.clone().try_into::<T>().map_err(|e| {
            AdapterError::Config(format!(
                "[{section}.methods.{}]: {}",
                m.name(),
                e.to_string().trim_end()
            ))
        })?;
        out.push((m, mapping));
    }
    Ok(out)
}
