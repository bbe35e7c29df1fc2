//! Roles after X-Road's: what each administrator may do is the set of roles they hold.
//! Each daemon says, per operation, which roles may perform it.

use std::fmt;
use std::str::FromStr;

/// One role an administrator or API key holds.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Installs and runs the node: users, API keys, maintenance, every setting.
    SystemAdministrator,
    /// Keys and certificates: client certificates, revocations, time-stamping
    /// authorities, administrator certificates.
    SecurityOfficer,
    /// The registry's registration workflow: requests, members, subsystems, groups,
    /// enrolment tokens.
    RegistrationOfficer,
    /// A security server's services and who may call them.
    ServiceAdministrator,
    /// Reads everything, changes nothing; exports evidence and the admin audit log.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::SystemAdministrator,
        Role::SecurityOfficer,
        Role::RegistrationOfficer,
        Role::ServiceAdministrator,
        Role::Auditor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::SystemAdministrator => "system-administrator",
            Role::SecurityOfficer => "security-officer",
            Role::RegistrationOfficer => "registration-officer",
            Role::ServiceAdministrator => "service-administrator",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is none of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown role '{0}' (roles: system-administrator, security-officer, registration-officer, service-administrator, auditor)"
)]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.chars().take(64).collect()))
    }
}

/// Parses a comma-separated list of roles (`service-administrator,auditor`): at least
/// one, no repeats, sorted.
pub fn parse_roles(text: &str) -> Result<Vec<Role>, UnknownRole> {
    let mut roles = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Role::from_str)
        .collect::<Result<Vec<_>, _>>()?;
    if roles.is_empty() {
        return Err(UnknownRole(String::new()));
    }
    roles.sort();
    roles.dedup();
    Ok(roles)
}

/// The roles allowed to perform one operation.
#[derive(Debug, Clone, Copy)]
pub struct Allowed(pub &'static [Role]);

impl Allowed {
    /// Every role: reading what the node shows every administrator.
    pub const ANY: Allowed = Allowed(&Role::ALL);

    pub fn permits(&self, held: &[Role]) -> bool {
        held.iter().any(|r| self.0.contains(r))
    }

    /// The roles, for an error message.
    pub fn names(&self) -> String {
        self.0
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{role}\""));
        }
    }

    #[test]
    fn role_lists() {
        use Role::*;
        let cases: &[(&str, Option<Vec<Role>>)] = &[
            ("auditor", Some(vec![Auditor])),
            (
                "auditor, system-administrator,auditor",
                Some(vec![SystemAdministrator, Auditor]),
            ),
            ("", None),
            (" , ", None),
            ("admin", None),
            ("Auditor", None),
            ("auditor,root", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_roles(text).ok(), *expected, "{text:?}");
        }
    }

    #[test]
    fn allowed_needs_one_held_role() {
        use Role::*;
        let changes = Allowed(&[SystemAdministrator, ServiceAdministrator]);
        let cases: &[(&[Role], bool)] = &[
            (&[ServiceAdministrator], true),
            (&[Auditor, SystemAdministrator], true),
            (&[Auditor], false),
            (&[SecurityOfficer, RegistrationOfficer], false),
            (&[], false),
        ];
        for (held, expected) in cases {
            assert_eq!(changes.permits(held), *expected, "{held:?}");
        }
        assert!(Allowed::ANY.permits(&[Auditor]));
        assert_eq!(
            changes.names(),
            "system-administrator or service-administrator"
        );
    }
}
