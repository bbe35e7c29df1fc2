//! `lintas ss user …`, `lintas ss api-key …` and `lintas ss admin-log …`: the management
//! API's users, API keys and admin audit log, over the running server's admin socket
//! (whoever can use the socket administers the server).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use lintas_proto::ss::v1 as pb;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user of the management API and console. The password comes from
    /// LINTAS_PASSWORD or --password-file; without either, one is made and shown once.
    Add {
        name: String,
        /// Roles, comma-separated: system-administrator, security-officer,
        /// service-administrator, auditor.
        #[arg(long = "role", value_delimiter = ',', required = true)]
        roles: Vec<String>,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Set a user's password (ends their sessions). Same sources as `add`.
    Password {
        name: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Replace a user's roles (ends their sessions).
    Roles {
        name: String,
        #[arg(long = "role", value_delimiter = ',', required = true)]
        roles: Vec<String>,
    },
    /// Remove a user (never the last system administrator).
    Remove { name: String },
    /// The users and their roles.
    /// List them (`--json`: `{"items": [...]}`).
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum ApiKeyCommand {
    /// Make an API key for automation (`Authorization: Bearer KEY`); the key is shown once.
    Create {
        /// What the key is for.
        #[arg(long)]
        name: String,
        #[arg(long = "role", value_delimiter = ',', required = true)]
        roles: Vec<String>,
    },
    /// Revoke a key by its id (at once).
    Revoke { id: String },
    /// The keys (never their secrets).
    /// List them (`--json`: `{"items": [...]}`).
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum AdminLogCommand {
    /// Write the admin audit log (JSON lines, hash-chained) to a file or stdout.
    Export {
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// A password made for a user who was given none: 20 characters from an alphabet
/// without look-alikes (about 115 bits).
pub fn generated_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    lintas_manage::users::random_bytes::<20>()
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// The password from `file`, else LINTAS_PASSWORD, else a new one (and whether it was
/// made here, so it is shown).
fn password(file: Option<&Path>) -> Result<(String, bool)> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
        return Ok((text.trim_end_matches(['\n', '\r']).to_owned(), false));
    }
    if let Ok(p) = std::env::var("LINTAS_PASSWORD") {
        return Ok((p, false));
    }
    Ok((generated_password(), true))
}

fn print_user(u: &pb::User) {
    println!(
        "{}  {}  since {}",
        u.name,
        u.roles.join(","),
        lintas_globalconf::iso8601(u.created)
    );
}

pub async fn user(config: &Path, command: UserCommand) -> Result<()> {
    let mut client = crate::ss_cmd::admin(config).await?;
    match command {
        UserCommand::Add {
            name,
            roles,
            password_file,
        } => {
            let (password, made) = password(password_file.as_deref())?;
            let u = client
                .add_user(pb::UserRequest {
                    name,
                    password: password.clone(),
                    roles,
                })
                .await?
                .into_inner();
            print!("added: ");
            print_user(&u);
            if made {
                println!("password (shown once): {password}");
            }
        }
        UserCommand::Password {
            name,
            password_file,
        } => {
            let (password, made) = password(password_file.as_deref())?;
            let u = client
                .set_user_password(pb::UserRequest {
                    name,
                    password: password.clone(),
                    roles: Vec::new(),
                })
                .await?
                .into_inner();
            println!("password of {} changed; their sessions ended", u.name);
            if made {
                println!("password (shown once): {password}");
            }
        }
        UserCommand::Roles { name, roles } => {
            let u = client
                .set_user_roles(pb::UserRequest {
                    name,
                    password: String::new(),
                    roles,
                })
                .await?
                .into_inner();
            print!("roles set: ");
            print_user(&u);
        }
        UserCommand::Remove { name } => {
            let u = client
                .remove_user(pb::UserRequest {
                    name,
                    ..Default::default()
                })
                .await?
                .into_inner();
            println!("user {} removed", u.name);
        }
        UserCommand::List { json } => {
            let users = client
                .list_users(pb::ListRequest::default())
                .await?
                .into_inner()
                .users;
            if json {
                return crate::json::items(users.iter().map(
                    |u| serde_json::json!({"name": u.name, "roles": u.roles, "created": u.created}),
                ));
            }
            if users.is_empty() {
                println!("no users");
            }
            users.iter().for_each(print_user);
        }
    }
    Ok(())
}

pub async fn api_key(config: &Path, command: ApiKeyCommand) -> Result<()> {
    let mut client = crate::ss_cmd::admin(config).await?;
    match command {
        ApiKeyCommand::Create { name, roles } => {
            let k = client
                .create_api_key(pb::ApiKeyRequest {
                    name,
                    roles,
                    id: String::new(),
                })
                .await?
                .into_inner();
            println!("API key {} ({}) for {}", k.id, k.name, k.roles.join(","));
            println!("key (shown once): {}", k.key);
        }
        ApiKeyCommand::Revoke { id } => {
            let k = client
                .revoke_api_key(pb::ApiKeyRequest {
                    id,
                    ..Default::default()
                })
                .await?
                .into_inner();
            println!("API key {} ({}) revoked", k.id, k.name);
        }
        ApiKeyCommand::List { json } => {
            let keys = client
                .list_api_keys(pb::ListRequest::default())
                .await?
                .into_inner()
                .keys;
            if json {
                return crate::json::items(keys.iter().map(|k| {
                    serde_json::json!({
                        "id": k.id,
                        "name": k.name,
                        "roles": k.roles,
                        "created": k.created,
                        "created_by": k.created_by,
                    })
                }));
            }
            if keys.is_empty() {
                println!("no API keys");
            }
            for k in keys {
                println!(
                    "{}  {}  {}  made by {} at {}",
                    k.id,
                    k.name,
                    k.roles.join(","),
                    k.created_by,
                    lintas_globalconf::iso8601(k.created)
                );
            }
        }
    }
    Ok(())
}

pub async fn admin_log(config: &Path, command: AdminLogCommand) -> Result<()> {
    let mut client = crate::ss_cmd::admin(config).await?;
    match command {
        AdminLogCommand::Export { out } => {
            let jsonl = client
                .export_admin_audit_log(pb::ListRequest::default())
                .await?
                .into_inner()
                .jsonl;
            // Checked before it is handed over: a damaged log is said so.
            let entries = lintas_manage::audit::verify(&jsonl, "the exported log")
                .map_err(|e| crate::exit::NotVerified(e.to_string()))?;
            match out {
                Some(path) => {
                    std::fs::write(&path, &jsonl).with_context(|| path.display().to_string())?;
                    eprintln!(
                        "{} entries, chain intact, written to {}",
                        entries.len(),
                        path.display()
                    );
                }
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&jsonl)?;
                }
            }
        }
    }
    Ok(())
}
