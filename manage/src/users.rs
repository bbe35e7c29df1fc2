//! Local administrators (Argon2id password hashes) and API keys for automation, each
//! holding roles, kept in one file of the daemon's data directory (mode 0600, replaced
//! atomically on every change).
//!
//! Hashing and verifying passwords is deliberately slow (tens of milliseconds): callers
//! run them on the blocking pool, and the lock is never held while hashing.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use serde::{Deserialize, Serialize};

use crate::role::Role;

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted (hashing cost grows with it).
pub const MAX_PASSWORD_BYTES: usize = 256;
/// API keys start with this, so that scanners find leaked ones.
pub const API_KEY_PREFIX: &str = "lintas_";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsersError {
    #[error("{field}: {why}")]
    Invalid { field: &'static str, why: String },
    #[error("{0} exists already")]
    Exists(String),
    #[error("no {0}")]
    NotFound(String),
    #[error(
        "{0} is the last system administrator; give another user that role first, so that someone can still administer this node"
    )]
    LastAdministrator(String),
    #[error("{path}: {why}")]
    File { path: String, why: String },
}

/// Why a login or key was not accepted. One message for every cause, so that a caller
/// learns nothing about which names exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("wrong user name or password, or unknown API key")]
pub struct BadCredentials;

/// A user as listed (never the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInfo {
    pub name: String,
    pub roles: Vec<Role>,
    /// Unix seconds.
    pub created: i64,
}

/// An API key as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyInfo {
    /// The key's public part: `lintas_<id>.…`.
    pub id: String,
    /// What the key is for, in the administrator's words.
    pub name: String,
    pub roles: Vec<Role>,
    pub created: i64,
    /// Who made it.
    pub created_by: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    users: Vec<StoredUser>,
    api_keys: Vec<StoredKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredUser {
    info: UserInfo,
    /// PHC string of the Argon2id hash.
    password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKey {
    info: ApiKeyInfo,
    /// SHA-256 of the secret part, hex. The secret is 32 random bytes, so a fast hash
    /// is enough.
    secret_sha256: String,
}

/// The users and API keys of one daemon.
pub struct Users {
    path: PathBuf,
    file: Mutex<File>,
    /// Verified against when a name is unknown, so that an unknown name takes as long
    /// as a wrong password.
    decoy: String,
}

fn file_error(path: &Path, why: impl std::fmt::Display) -> UsersError {
    UsersError::File {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// A user name: 1–64 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), UsersError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(UsersError::Invalid {
            field: "name",
            why: "1 to 64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit".into(),
        })
    }
}

/// A password: at least [`MIN_PASSWORD_CHARS`] characters, at most
/// [`MAX_PASSWORD_BYTES`] bytes, no control characters.
pub fn check_password(password: &str) -> Result<(), UsersError> {
    let why = if password.chars().count() < MIN_PASSWORD_CHARS {
        format!("at least {MIN_PASSWORD_CHARS} characters")
    } else if password.len() > MAX_PASSWORD_BYTES {
        format!("at most {MAX_PASSWORD_BYTES} bytes")
    } else if password.chars().any(char::is_control) {
        "no control characters".into()
    } else {
        return Ok(());
    };
    Err(UsersError::Invalid {
        field: "password",
        why,
    })
}

fn check_roles(roles: &[Role]) -> Result<Vec<Role>, UsersError> {
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        return Err(UsersError::Invalid {
            field: "roles",
            why: "at least one role".into(),
        });
    }
    Ok(roles)
}

/// `n` random bytes from the system's generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = [0u8; N];
    // The system generator fails only when the kernel has none; nothing secret can be
    // made then.
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random number generator failed");
    bytes
}

fn hash_password(password: &str) -> Result<String, UsersError> {
    let salt = random_bytes::<16>();
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Invalid {
            field: "password",
            why: e.to_string(),
        })
}

fn now() -> i64 {
    lintas_certs::unix_secs(std::time::SystemTime::now())
}

impl Users {
    /// Opens the users file at `path`; none there means no users yet.
    pub fn open(path: &Path) -> Result<Self, UsersError> {
        let file = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| file_error(path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => return Err(file_error(path, e)),
        };
        Ok(Users {
            path: path.to_owned(),
            file: Mutex::new(file),
            decoy: hash_password("decoy password, never anyone's")?,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, File> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `change` to a copy and keeps it only once written.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut File) -> Result<T, UsersError>,
    ) -> Result<T, UsersError> {
        let mut file = self.lock();
        let mut next = file.clone();
        let out = change(&mut next)?;
        let bytes = serde_json::to_vec_pretty(&next).map_err(|e| file_error(&self.path, e))?;
        lintas_certs::files::write_atomic(&self.path, &bytes, 0o600)
            .map_err(|e| file_error(&self.path, e))?;
        *file = next;
        Ok(out)
    }

    pub fn users(&self) -> Vec<UserInfo> {
        self.lock().users.iter().map(|u| u.info.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().users.is_empty()
    }

    pub fn add_user(
        &self,
        name: &str,
        password: &str,
        roles: &[Role],
    ) -> Result<UserInfo, UsersError> {
        check_name(name)?;
        check_password(password)?;
        let roles = check_roles(roles)?;
        let password = hash_password(password)?;
        self.change(|f| {
            if f.users.iter().any(|u| u.info.name == name) {
                return Err(UsersError::Exists(format!("user {name}")));
            }
            let info = UserInfo {
                name: name.to_owned(),
                roles,
                created: now(),
            };
            f.users.push(StoredUser {
                info: info.clone(),
                password,
            });
            Ok(info)
        })
    }

    pub fn set_password(&self, name: &str, password: &str) -> Result<UserInfo, UsersError> {
        check_password(password)?;
        let hash = hash_password(password)?;
        self.change(|f| {
            let user = f
                .users
                .iter_mut()
                .find(|u| u.info.name == name)
                .ok_or_else(|| UsersError::NotFound(format!("user {name}")))?;
            user.password = hash;
            Ok(user.info.clone())
        })
    }

    pub fn set_roles(&self, name: &str, roles: &[Role]) -> Result<UserInfo, UsersError> {
        let roles = check_roles(roles)?;
        self.change(|f| {
            let user = f
                .users
                .iter_mut()
                .find(|u| u.info.name == name)
                .ok_or_else(|| UsersError::NotFound(format!("user {name}")))?;
            let was_admin = user.info.roles.contains(&Role::SystemAdministrator);
            user.info.roles = roles;
            let info = user.info.clone();
            if was_admin {
                keeps_an_administrator(f, name)?;
            }
            Ok(info)
        })
    }

    pub fn remove_user(&self, name: &str) -> Result<UserInfo, UsersError> {
        self.change(|f| {
            let at = f
                .users
                .iter()
                .position(|u| u.info.name == name)
                .ok_or_else(|| UsersError::NotFound(format!("user {name}")))?;
            let removed = f.users.remove(at).info;
            if removed.roles.contains(&Role::SystemAdministrator) {
                keeps_an_administrator(f, name)?;
            }
            Ok(removed)
        })
    }

    /// The user, when `password` is theirs.
    pub fn verify_password(&self, name: &str, password: &str) -> Result<UserInfo, BadCredentials> {
        let found = self
            .lock()
            .users
            .iter()
            .find(|u| u.info.name == name)
            .map(|u| (u.info.clone(), u.password.clone()));
        let hash = found
            .as_ref()
            .map_or(self.decoy.as_str(), |(_, h)| h.as_str());
        let verified = password.len() <= MAX_PASSWORD_BYTES
            && Argon2::default()
                .verify_password(password.as_bytes(), hash)
                .is_ok();
        match found {
            Some((info, _)) if verified => Ok(info),
            _ => Err(BadCredentials),
        }
    }

    pub fn api_keys(&self) -> Vec<ApiKeyInfo> {
        self.lock()
            .api_keys
            .iter()
            .map(|k| k.info.clone())
            .collect()
    }

    /// A new API key: its description and the whole key, which is shown this once and
    /// never stored.
    pub fn create_api_key(
        &self,
        name: &str,
        roles: &[Role],
        created_by: &str,
    ) -> Result<(ApiKeyInfo, String), UsersError> {
        if name.trim().is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
            return Err(UsersError::Invalid {
                field: "name",
                why: "one line of 1 to 200 bytes saying what the key is for".into(),
            });
        }
        let roles = check_roles(roles)?;
        let id = lintas_certs::hex(&random_bytes::<8>());
        let secret = lintas_certs::hex(&random_bytes::<32>());
        let info = ApiKeyInfo {
            id: id.clone(),
            name: name.trim().to_owned(),
            roles,
            created: now(),
            created_by: created_by.to_owned(),
        };
        let stored = StoredKey {
            info: info.clone(),
            secret_sha256: lintas_certs::hex(&lintas_certs::sha256(secret.as_bytes())),
        };
        self.change(|f| {
            f.api_keys.push(stored);
            Ok(())
        })?;
        Ok((info, format!("{API_KEY_PREFIX}{id}.{secret}")))
    }

    pub fn revoke_api_key(&self, id: &str) -> Result<ApiKeyInfo, UsersError> {
        self.change(|f| {
            let at = f
                .api_keys
                .iter()
                .position(|k| k.info.id == id)
                .ok_or_else(|| UsersError::NotFound(format!("API key {id}")))?;
            Ok(f.api_keys.remove(at).info)
        })
    }

    /// The key's description, when `token` is a whole key that exists.
    pub fn verify_api_key(&self, token: &str) -> Result<ApiKeyInfo, BadCredentials> {
        let (id, secret) = token
            .strip_prefix(API_KEY_PREFIX)
            .and_then(|rest| rest.split_once('.'))
            .ok_or(BadCredentials)?;
        let presented = lintas_certs::sha256(secret.as_bytes());
        let file = self.lock();
        let key = file
            .api_keys
            .iter()
            .find(|k| k.info.id == id)
            .ok_or(BadCredentials)?;
        let stored = lintas_certs::unhex(&key.secret_sha256).ok_or(BadCredentials)?;
        // Constant time, so that the comparison says nothing about the secret.
        aws_lc_rs::constant_time::verify_slices_are_equal(&stored, &presented)
            .map_err(|_| BadCredentials)?;
        Ok(key.info.clone())
    }
}

/// Refuses a change that takes away the last system administrator (`changed` is the
/// user the change was about, the only one that can have lost the role).
fn keeps_an_administrator(f: &File, changed: &str) -> Result<(), UsersError> {
    let has_admin = f
        .users
        .iter()
        .any(|u| u.info.roles.contains(&Role::SystemAdministrator));
    if has_admin {
        Ok(())
    } else {
        Err(UsersError::LastAdministrator(changed.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Role::*;

    fn open() -> (tempfile::TempDir, Users) {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::open(&dir.path().join("users.json")).unwrap();
        (dir, users)
    }

    #[test]
    fn names_and_passwords() {
        let names: &[(&str, bool)] = &[
            ("admin", true),
            ("siti.rahma", true),
            ("ops_2", true),
            ("9lives", true),
            ("", false),
            ("Admin", false),
            ("-x", false),
            ("a b", false),
            ("ädmin", false),
            (&"a".repeat(65), false),
        ];
        for (name, ok) in names {
            assert_eq!(check_name(name).is_ok(), *ok, "{name:?}");
        }
        let passwords: &[(&str, bool)] = &[
            ("correct horse battery", true),
            ("kata sandi rahasia", true),
            ("short", false),
            ("elevenchars", false),
            ("twelve chars", true),
            ("with\nnewline!!", false),
            (&"x".repeat(257), false),
        ];
        for (password, ok) in passwords {
            assert_eq!(check_password(password).is_ok(), *ok, "{password:?}");
        }
    }

    #[test]
    fn passwords_verify_and_survive_reopening() {
        let (dir, users) = open();
        users
            .add_user("admin", "correct horse battery", &[SystemAdministrator])
            .unwrap();
        assert_eq!(
            users
                .verify_password("admin", "correct horse battery")
                .unwrap()
                .roles,
            vec![SystemAdministrator]
        );
        assert_eq!(
            users.verify_password("admin", "wrong horse battery"),
            Err(BadCredentials)
        );
        assert_eq!(
            users.verify_password("nobody", "correct horse battery"),
            Err(BadCredentials)
        );
        assert!(matches!(
            users.add_user("admin", "another password", &[Auditor]),
            Err(UsersError::Exists(_))
        ));
        let path = dir.path().join("users.json");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("$argon2id$"), "{text}");
        assert!(!text.contains("correct horse"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let reopened = Users::open(&path).unwrap();
        assert!(
            reopened
                .verify_password("admin", "correct horse battery")
                .is_ok()
        );
        reopened
            .set_password("admin", "a new long password")
            .unwrap();
        assert!(
            reopened
                .verify_password("admin", "correct horse battery")
                .is_err()
        );
        assert!(
            reopened
                .verify_password("admin", "a new long password")
                .is_ok()
        );
    }

    #[test]
    fn the_last_system_administrator_stays() {
        let (_dir, users) = open();
        users
            .add_user("admin", "correct horse battery", &[SystemAdministrator])
            .unwrap();
        users
            .add_user("audit", "correct horse battery", &[Auditor])
            .unwrap();
        assert!(matches!(
            users.remove_user("admin"),
            Err(UsersError::LastAdministrator(_))
        ));
        assert!(matches!(
            users.set_roles("admin", &[Auditor]),
            Err(UsersError::LastAdministrator(_))
        ));
        // A refused change leaves everything as it was.
        assert_eq!(users.users().len(), 2);
        assert!(users.users()[0].roles.contains(&SystemAdministrator));
        users
            .set_roles("audit", &[Auditor, SystemAdministrator])
            .unwrap();
        users.remove_user("admin").unwrap();
        assert!(matches!(
            users.remove_user("admin"),
            Err(UsersError::NotFound(_))
        ));
    }

    #[test]
    fn api_keys_verify_until_revoked() {
        let (dir, users) = open();
        let (info, key) = users
            .create_api_key("nightly export", &[Auditor], "admin")
            .unwrap();
        assert!(key.starts_with(&format!("lintas_{}.", info.id)));
        assert_eq!(users.verify_api_key(&key).unwrap(), info);
        let text = std::fs::read_to_string(dir.path().join("users.json")).unwrap();
        assert!(
            !text.contains(key.split_once('.').unwrap().1),
            "the secret is not stored"
        );
        let wrong: &[String] = &[
            String::new(),
            "lintas_".into(),
            format!("lintas_{}", info.id),
            format!("lintas_{}.", info.id),
            format!("{key}0"),
            key.replacen("lintas_", "lintaz_", 1),
            format!("lintas_0000000000000000.{}", key.split_once('.').unwrap().1),
        ];
        for token in wrong {
            assert_eq!(users.verify_api_key(token), Err(BadCredentials), "{token}");
        }
        users.revoke_api_key(&info.id).unwrap();
        assert_eq!(users.verify_api_key(&key), Err(BadCredentials));
        assert!(users.api_keys().is_empty());
    }

    #[test]
    fn a_damaged_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        std::fs::write(&path, b"{\"users\": [], \"api_keys\": [], \"extra\": 1}").unwrap();
        let e = Users::open(&path).err().unwrap().to_string();
        assert!(e.contains("users.json") && e.contains("extra"), "{e}");
    }
}
