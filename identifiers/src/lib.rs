//! Typed identifiers of lintas, parsed once at every boundary and passed around as values.
//!
//! The hierarchy is X-Road's, so identifiers map one-to-one:
//!
//! | type | form | example |
//! |---|---|---|
//! | [`MemberId`] | `INSTANCE/CLASS/MEMBER` | `ID/GOV/KEMENDAGRI` |
//! | [`SubsystemId`] | `INSTANCE/CLASS/MEMBER/SUBSYSTEM` | `ID/GOV/KEMENDAGRI/DUKCAPIL` |
//! | [`ClientId`] | a member or a subsystem | either of the above |
//! | [`ServerId`] | `INSTANCE/CLASS/MEMBER/SERVERCODE` | `ID/GOV/KEMENDAGRI/SS1` |
//! | [`ServiceName`] | a gRPC service, `package.Service` | `kependudukan.v1.Penduduk` |
//! | [`ServiceId`] | provider subsystem + service | `ID/GOV/KEMENDAGRI/DUKCAPIL` + `kependudukan.v1.Penduduk` |
//! | [`MethodPath`] | `/package.Service/Method` | `/kependudukan.v1.Penduduk/CariNik` |
//! | [`HostPort`] | `host:port` | `ss1.kemendagri.go.id:5500`, `[::1]:5500` |
//!
//! # Character set and length
//!
//! Every part of a hierarchical identifier ([`Code`]) is 1 to [`Code::MAX_LEN`] characters
//! from `A-Z a-z 0-9 - _ .`, and starts with a letter or digit. This is stricter than
//! X-Road's `A-Za-z0-9'()+,-.=?`: the parts appear in URL paths, gRPC metadata, file names
//! and certificate URIs, where quotes, parentheses, `+`, `,`, `=` and `?` each need
//! escaping somewhere. Comparison is case-sensitive, as in X-Road. A whole identifier
//! is at most [`MAX_ID_LEN`] characters.
#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest accepted textual identifier, all parts and separators included.
pub const MAX_ID_LEN: usize = 255;

/// Why an identifier was refused. Each variant names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} '{input}' is {len} characters long; at most {max} are allowed")]
    TooLong {
        kind: &'static str,
        input: String,
        len: usize,
        max: usize,
    },
    #[error("{kind} '{input}' has {found} part(s) separated by '/'; expected {expected} ({form})")]
    WrongShape {
        kind: &'static str,
        input: String,
        found: usize,
        expected: &'static str,
        form: &'static str,
    },
    #[error(
        "{part} in '{input}' has character {ch:?} at position {position}; allowed are A-Z a-z 0-9 - _ . (starting with a letter or digit)"
    )]
    BadCharacter {
        part: &'static str,
        input: String,
        ch: char,
        position: usize,
    },
    #[error("{part} in '{input}' is empty")]
    EmptyPart { part: &'static str, input: String },
    #[error("{part} '{input}' is {len} characters long; at most {max} are allowed")]
    PartTooLong {
        part: &'static str,
        input: String,
        len: usize,
        max: usize,
    },
    #[error("gRPC {what} '{input}' is not valid: {why}")]
    BadGrpcName {
        what: &'static str,
        input: String,
        why: &'static str,
    },
    #[error("address '{input}' is not valid: {why}; expected host:port")]
    BadAddress { input: String, why: &'static str },
    #[error("identifier belongs to instance '{found}', expected '{expected}'")]
    WrongInstance { expected: String, found: String },
}

/// One part of a hierarchical identifier (instance, member class, member, subsystem or
/// server code).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Code(String);

impl Code {
    /// Longest accepted part.
    pub const MAX_LEN: usize = 64;

    /// Parses one part; `part` names it in errors ("member code", …).
    pub fn parse_part(s: &str, part: &'static str) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::EmptyPart {
                part,
                input: s.to_owned(),
            });
        }
        let len = s.chars().count();
        if len > Self::MAX_LEN {
            return Err(IdError::PartTooLong {
                part,
                input: truncate(s),
                len,
                max: Self::MAX_LEN,
            });
        }
        for (position, ch) in s.chars().enumerate() {
            let ok = ch.is_ascii_alphanumeric() || (position > 0 && matches!(ch, '-' | '_' | '.'));
            if !ok {
                return Err(IdError::BadCharacter {
                    part,
                    input: s.to_owned(),
                    ch,
                    position,
                });
            }
        }
        Ok(Code(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Code {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Code::parse_part(s, "code")
    }
}

/// Keeps error messages readable when someone sends a megabyte of identifier.
fn truncate(s: &str) -> String {
    const SHOWN: usize = 80;
    if s.chars().count() <= SHOWN {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(SHOWN).collect();
        t.push('…');
        t
    }
}

/// Splits `s` into `/`-separated parts after the whole-length check.
fn split<'a>(s: &'a str, kind: &'static str) -> Result<Vec<&'a str>, IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    let len = s.chars().count();
    if len > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            input: truncate(s),
            len,
            max: MAX_ID_LEN,
        });
    }
    Ok(s.split('/').collect())
}

/// `INSTANCE/CLASS/MEMBER`: an organisation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId {
    pub instance: Code,
    pub class: Code,
    pub member: Code,
}

impl MemberId {
    const FORM: &'static str = "INSTANCE/CLASS/MEMBER";

    fn from_parts(parts: &[&str]) -> Result<Self, IdError> {
        Ok(MemberId {
            instance: Code::parse_part(parts[0], "instance code")?,
            class: Code::parse_part(parts[1], "member class")?,
            member: Code::parse_part(parts[2], "member code")?,
        })
    }

    /// The subsystem `code` of this member.
    pub fn subsystem(&self, code: Code) -> SubsystemId {
        SubsystemId {
            member: self.clone(),
            subsystem: code,
        }
    }

    /// Errors unless the identifier belongs to `instance`.
    pub fn ensure_instance(&self, instance: &Code) -> Result<(), IdError> {
        if &self.instance == instance {
            Ok(())
        } else {
            Err(IdError::WrongInstance {
                expected: instance.to_string(),
                found: self.instance.to_string(),
            })
        }
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.instance, self.class, self.member)
    }
}

impl FromStr for MemberId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let kind = "member identifier";
        let parts = split(s, kind)?;
        if parts.len() != 3 {
            return Err(IdError::WrongShape {
                kind,
                input: truncate(s),
                found: parts.len(),
                expected: "3",
                form: Self::FORM,
            });
        }
        Self::from_parts(&parts)
    }
}

/// `INSTANCE/CLASS/MEMBER/CODE`: a member and one more code (subsystem or server).
fn member_and_code(
    s: &str,
    kind: &'static str,
    form: &'static str,
    last: &'static str,
) -> Result<(MemberId, Code), IdError> {
    let parts = split(s, kind)?;
    if parts.len() != 4 {
        return Err(IdError::WrongShape {
            kind,
            input: truncate(s),
            found: parts.len(),
            expected: "4",
            form,
        });
    }
    Ok((
        MemberId::from_parts(&parts[..3])?,
        Code::parse_part(parts[3], last)?,
    ))
}

/// `INSTANCE/CLASS/MEMBER/SUBSYSTEM`: one information system of a member; the unit that
/// calls and provides services.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubsystemId {
    pub member: MemberId,
    pub subsystem: Code,
}

impl fmt::Display for SubsystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.member, self.subsystem)
    }
}

impl FromStr for SubsystemId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let (member, subsystem) = member_and_code(
            s,
            "subsystem identifier",
            "INSTANCE/CLASS/MEMBER/SUBSYSTEM",
            "subsystem code",
        )?;
        Ok(SubsystemId { member, subsystem })
    }
}

/// A client of the bus: a whole member or one of its subsystems.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientId {
    Member(MemberId),
    Subsystem(SubsystemId),
}

impl ClientId {
    pub fn member(&self) -> &MemberId {
        match self {
            ClientId::Member(m) => m,
            ClientId::Subsystem(s) => &s.member,
        }
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientId::Member(m) => m.fmt(f),
            ClientId::Subsystem(s) => s.fmt(f),
        }
    }
}

impl FromStr for ClientId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let kind = "client identifier";
        let parts = split(s, kind)?;
        match parts.len() {
            3 => Ok(ClientId::Member(MemberId::from_parts(&parts)?)),
            4 => Ok(ClientId::Subsystem(SubsystemId {
                member: MemberId::from_parts(&parts[..3])?,
                subsystem: Code::parse_part(parts[3], "subsystem code")?,
            })),
            found => Err(IdError::WrongShape {
                kind,
                input: truncate(s),
                found,
                expected: "3 or 4",
                form: "INSTANCE/CLASS/MEMBER[/SUBSYSTEM]",
            }),
        }
    }
}

impl From<SubsystemId> for ClientId {
    fn from(s: SubsystemId) -> Self {
        ClientId::Subsystem(s)
    }
}

impl From<MemberId> for ClientId {
    fn from(m: MemberId) -> Self {
        ClientId::Member(m)
    }
}

/// `INSTANCE/CLASS/MEMBER/SERVERCODE`: a security server owned by a member.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerId {
    pub owner: MemberId,
    pub code: Code,
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.code)
    }
}

impl FromStr for ServerId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let (owner, code) = member_and_code(
            s,
            "security server identifier",
            "INSTANCE/CLASS/MEMBER/SERVERCODE",
            "server code",
        )?;
        Ok(ServerId { owner, code })
    }
}

/// A fully qualified gRPC service name, `package.Service` (package optional), as it
/// appears in `/package.Service/Method`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName(String);

impl ServiceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A protobuf identifier: a letter or `_`, then letters, digits or `_`.
fn check_proto_ident(s: &str, what: &'static str, input: &str) -> Result<(), IdError> {
    let bad = |why| IdError::BadGrpcName {
        what,
        input: truncate(input),
        why,
    };
    let mut chars = s.chars();
    match chars.next() {
        None => return Err(bad("empty name component")),
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        Some(_) => return Err(bad("a name component must start with a letter or '_'")),
    }
    if chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(bad("only A-Z a-z 0-9 _ are allowed in a name component"))
    }
}

impl FromStr for ServiceName {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let what = "service name";
        if s.chars().count() > MAX_ID_LEN {
            return Err(IdError::TooLong {
                kind: what,
                input: truncate(s),
                len: s.chars().count(),
                max: MAX_ID_LEN,
            });
        }
        for component in s.split('.') {
            check_proto_ident(component, what, s)?;
        }
        Ok(ServiceName(s.to_owned()))
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A service of a provider subsystem.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId {
    pub provider: SubsystemId,
    pub service: ServiceName,
}

impl fmt::Display for ServiceId {
    /// `INSTANCE/CLASS/MEMBER/SUBSYSTEM/package.Service`; the service name contains no
    /// `/`, so the last separator splits it off unambiguously.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.service)
    }
}

impl FromStr for ServiceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let kind = "service identifier";
        let len = s.chars().count();
        if len > MAX_ID_LEN {
            return Err(IdError::TooLong {
                kind,
                input: truncate(s),
                len,
                max: MAX_ID_LEN,
            });
        }
        let Some((provider, service)) = s.rsplit_once('/') else {
            return Err(IdError::WrongShape {
                kind,
                input: truncate(s),
                found: 1,
                expected: "5",
                form: "INSTANCE/CLASS/MEMBER/SUBSYSTEM/package.Service",
            });
        };
        Ok(ServiceId {
            provider: provider.parse()?,
            service: service.parse()?,
        })
    }
}

/// A gRPC method path, `/package.Service/Method`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MethodPath {
    pub service: ServiceName,
    pub method: String,
}

impl fmt::Display for MethodPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/{}", self.service, self.method)
    }
}

impl FromStr for MethodPath {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let what = "method path";
        let bad = |why| IdError::BadGrpcName {
            what,
            input: truncate(s),
            why,
        };
        let rest = s.strip_prefix('/').ok_or(bad("must start with '/'"))?;
        let (service, method) = rest
            .split_once('/')
            .ok_or(bad("must have the form /package.Service/Method"))?;
        if method.chars().count() > MAX_ID_LEN {
            return Err(bad("the method name is too long"));
        }
        check_proto_ident(method, what, s)?;
        Ok(MethodPath {
            service: service.parse()?,
            method: method.to_owned(),
        })
    }
}

/// A network endpoint, `host:port`: a DNS name, an IPv4 address, or a bracketed IPv6
/// address, and a port from 1 to 65535. Used for security server and registry addresses,
/// which also become names in TLS certificates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    host: String,
    port: u16,
}

impl HostPort {
    /// From a bare host (no brackets) and a port.
    pub fn new(host: &str, port: u16) -> Result<Self, IdError> {
        let shown = || format!("{host}:{port}");
        let bad = |why| IdError::BadAddress {
            input: truncate(&shown()),
            why,
        };
        if port == 0 {
            return Err(bad("port 0 is not an address"));
        }
        if host.parse::<std::net::IpAddr>().is_err() && !is_dns_name(host) {
            return Err(bad("the host is neither an IP address nor a DNS name"));
        }
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }

    /// The host without brackets, as it goes into a certificate.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// RFC 1123 host name: labels of 1–63 letters, digits and inner hyphens, at most 253
/// characters, and a last label that is not all digits (that would be a bad IPv4 address).
fn is_dns_name(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    s.len() <= 253
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && labels
            .last()
            .is_some_and(|l| !l.chars().all(|c| c.is_ascii_digit()))
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for HostPort {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bad = |why| IdError::BadAddress {
            input: truncate(s),
            why,
        };
        if s.len() > MAX_ID_LEN {
            return Err(bad("too long"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, port) = rest
                .split_once("]:")
                .ok_or(bad("a bracketed IPv6 address must be followed by ]:port"))?;
            if v6.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address inside the brackets"));
            }
            (v6, port)
        } else {
            let (host, port) = s.rsplit_once(':').ok_or(bad("no port"))?;
            if host.contains(':') {
                return Err(bad("an IPv6 address must be written in brackets"));
            }
            (host, port)
        };
        let port: u16 = port
            .parse()
            .map_err(|_| bad("the port is not a number from 1 to 65535"))?;
        HostPort::new(host, port)
    }
}

macro_rules! serde_via_string {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
serde_via_string!(
    Code,
    MemberId,
    SubsystemId,
    ClientId,
    ServerId,
    ServiceName,
    ServiceId,
    MethodPath,
    HostPort
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_documented_examples() {
        let c: ClientId = "ID/GOV/KEMENDAGRI/DUKCAPIL".parse().unwrap();
        assert!(matches!(c, ClientId::Subsystem(_)));
        assert_eq!(c.member().to_string(), "ID/GOV/KEMENDAGRI");
        let m: ClientId = "ID/GOV/KEMENDAGRI".parse().unwrap();
        assert!(matches!(m, ClientId::Member(_)));
        let s: ServerId = "ID/GOV/KEMENDAGRI/SS1".parse().unwrap();
        assert_eq!(s.code.as_str(), "SS1");
        let svc: ServiceId = "ID/GOV/KEMENDAGRI/DUKCAPIL/kependudukan.v1.Penduduk"
            .parse()
            .unwrap();
        assert_eq!(svc.service.as_str(), "kependudukan.v1.Penduduk");
        assert_eq!(svc.provider.subsystem.as_str(), "DUKCAPIL");
        let p: MethodPath = "/kependudukan.v1.Penduduk/CariNik".parse().unwrap();
        assert_eq!(p.method, "CariNik");
        assert_eq!(p.to_string(), "/kependudukan.v1.Penduduk/CariNik");
    }

    #[test]
    fn bad_character_names_part_and_position() {
        let e = "ID/GOV/KEMEN DAGRI".parse::<MemberId>().unwrap_err();
        assert_eq!(
            e,
            IdError::BadCharacter {
                part: "member code",
                input: "KEMEN DAGRI".into(),
                ch: ' ',
                position: 5
            }
        );
        assert!(e.to_string().contains("member code"), "{e}");
        // X-Road allows these; lintas does not.
        for bad in [
            "ID/GOV/A'B",
            "ID/GOV/A(B)",
            "ID/GOV/A+B",
            "ID/GOV/A=B",
            "ID/GOV/A?",
        ] {
            assert!(matches!(
                bad.parse::<MemberId>(),
                Err(IdError::BadCharacter { .. })
            ));
        }
        // A part may not start with punctuation (no "..", no "-flag").
        assert!(matches!(
            "ID/GOV/..".parse::<MemberId>(),
            Err(IdError::BadCharacter { position: 0, .. })
        ));
        // Non-ASCII letters are refused too.
        assert!("ID/GOV/KEMENDAGRÍ".parse::<MemberId>().is_err());
    }

    #[test]
    fn shape_and_length_errors() {
        assert_eq!(
            "".parse::<ClientId>(),
            Err(IdError::Empty {
                kind: "client identifier"
            })
        );
        assert!(matches!(
            "ID/GOV".parse::<ClientId>(),
            Err(IdError::WrongShape { found: 2, .. })
        ));
        assert!(matches!(
            "ID/GOV/A/B/C".parse::<ClientId>(),
            Err(IdError::WrongShape { found: 5, .. })
        ));
        assert!(matches!(
            "ID//A".parse::<MemberId>(),
            Err(IdError::EmptyPart {
                part: "member class",
                ..
            })
        ));
        let long = "A".repeat(65);
        assert!(matches!(
            format!("ID/GOV/{long}").parse::<MemberId>(),
            Err(IdError::PartTooLong {
                len: 65,
                max: 64,
                ..
            })
        ));
        let huge = "A/".repeat(200);
        let e = huge.parse::<ClientId>().unwrap_err();
        assert!(matches!(e, IdError::TooLong { len: 400, .. }));
        assert!(
            e.to_string().len() < 300,
            "error echoes a bounded input: {e}"
        );
    }

    #[test]
    fn grpc_names() {
        assert!("Echo".parse::<ServiceName>().is_ok());
        assert!("a.b.C_d".parse::<ServiceName>().is_ok());
        for bad in ["", ".a", "a.", "a..b", "1a.B", "a-b.C", "a/b"] {
            assert!(bad.parse::<ServiceName>().is_err(), "{bad}");
        }
        for bad in ["a.B/M", "/a.B", "/a.B/", "/a.B/M/x", "//M", "/a.B/1M"] {
            assert!(bad.parse::<MethodPath>().is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses() {
        for good in [
            "127.0.0.1:5500",
            "ss1.kemendagri.go.id:443",
            "[::1]:80",
            "localhost:1",
        ] {
            let a: HostPort = good.parse().unwrap();
            assert_eq!(a.to_string(), good);
        }
        assert_eq!("[::1]:80".parse::<HostPort>().unwrap().host(), "::1");
        for bad in [
            "127.0.0.1",
            "host:0",
            "host:70000",
            ":80",
            "-x.go.id:1",
            "x-.go.id:1",
            "1.2.3:80",
            "::1:80",
            "[[::1]]:80",
            "[::1]80",
            "a b:1",
            "x..y:1",
            "999.1.1.1:1",
        ] {
            assert!(
                matches!(bad.parse::<HostPort>(), Err(IdError::BadAddress { .. })),
                "{bad}"
            );
        }
        let long = format!("{}:1", "a".repeat(300));
        assert!(long.parse::<HostPort>().is_err());
    }

    #[test]
    fn service_and_method_lengths_are_bounded() {
        let svc = format!("ID/GOV/X/S/{}", "a".repeat(250));
        assert!(matches!(
            svc.parse::<ServiceId>(),
            Err(IdError::TooLong { .. })
        ));
        let m = format!("/a.B/{}", "M".repeat(300));
        assert!(m.parse::<MethodPath>().is_err());
    }

    #[test]
    fn serde_parses() {
        #[derive(Deserialize, Serialize, Debug, PartialEq)]
        struct Conf {
            id: ServerId,
        }
        let c: Conf = serde_json_like("ID/GOV/X/SS1").unwrap();
        assert_eq!(c.id.to_string(), "ID/GOV/X/SS1");
        assert!(serde_json_like("ID/GOV/X").is_err());

        fn serde_json_like(v: &str) -> Result<Conf, serde::de::value::Error> {
            use serde::de::IntoDeserializer;
            let map = std::collections::HashMap::from([("id", v)]);
            Conf::deserialize(map.into_deserializer())
        }
    }

    fn code() -> impl Strategy<Value = String> {
        "[A-Za-z0-9][A-Za-z0-9._-]{0,20}"
    }

    proptest! {
        #[test]
        fn client_round_trip(i in code(), c in code(), m in code(), s in proptest::option::of(code())) {
            let text = match &s {
                Some(s) => format!("{i}/{c}/{m}/{s}"),
                None => format!("{i}/{c}/{m}"),
            };
            let id: ClientId = text.parse().unwrap();
            prop_assert_eq!(id.to_string(), text.clone());
            let again: ClientId = id.to_string().parse().unwrap();
            prop_assert_eq!(again, id);
        }

        #[test]
        fn server_and_service_round_trip(i in code(), c in code(), m in code(), s in code(),
                                         svc in "[a-z_][a-z0-9_]{0,8}(\\.[A-Za-z_][A-Za-z0-9_]{0,8}){0,3}") {
            let sid: ServerId = format!("{i}/{c}/{m}/{s}").parse().unwrap();
            prop_assert_eq!(sid.to_string().parse::<ServerId>().unwrap(), sid);
            let text = format!("{i}/{c}/{m}/{s}/{svc}");
            let service: ServiceId = text.parse().unwrap();
            prop_assert_eq!(service.to_string(), text);
        }

        #[test]
        fn arbitrary_input_never_panics(s in "\\PC{0,300}") {
            let _ = s.parse::<ClientId>();
            let _ = s.parse::<ServerId>();
            let _ = s.parse::<ServiceId>();
            let _ = s.parse::<MethodPath>();
        }

        #[test]
        fn accepted_parts_use_only_the_documented_set(s in "[ -~]{1,10}") {
            if let Ok(c) = Code::parse_part(&s, "code") {
                let first = c.as_str().chars().next().unwrap();
                prop_assert!(first.is_ascii_alphanumeric());
                prop_assert!(c.as_str().chars().all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch)));
            }
        }
    }
}
