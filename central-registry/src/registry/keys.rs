//! The store's keys, in one place: `<kind>/<id>`. What each kind holds is written by
//! the registry's changes and read back by `persist::load`, which matches on the same
//! kind names.

use std::fmt;

use lintas_identifiers::{Code, MemberId, ServerId};

pub(super) const MEMBER: &str = "member";
pub(super) const SERVER: &str = "server";
pub(super) const REGISTRATION: &str = "registration";
pub(super) const GROUP: &str = "group";
pub(super) const TOKEN: &str = "token";
pub(super) const CATALOGUE: &str = "catalogue";
pub(super) const DESCRIPTOR: &str = "descriptor";
pub(super) const TSA: &str = "tsa";
pub(super) const ADMIN_CERT: &str = "admincert";
pub(super) const AUDIT: &str = "audit";
pub(super) const WITNESS: &str = "witness";
pub(super) const WITNESS_REFUSAL: &str = "witness-refusal";
pub(super) const CONF: &str = "conf";
pub(super) const GENERATION: &str = "generation";
pub(super) const META: &str = "meta";

/// One stored record's key.
pub(super) enum Key<'a> {
    Member(&'a MemberId),
    Server(&'a ServerId),
    Registration(&'a str),
    Group(&'a Code),
    /// By the token's SHA-256 (hex).
    Token(&'a str),
    Catalogue(&'a ServerId),
    /// By the set's SHA-256 (hex).
    Descriptor(&'a str),
    Tsa(&'a Code),
    /// By the certificate's serial (hex).
    AdminCert(&'a str),
    Audit(u64),
    /// By the log's origin.
    Witness(&'a str),
    /// By origin and the size the registry held.
    WitnessRefusal(&'a str, u64),
    /// The newest signed configuration.
    ConfLatest,
    /// The record of one published generation, by serial.
    Generation(u64),
    /// Raised with every change of the state (see `persist`).
    State,
}

impl fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Member(id) => write!(f, "{MEMBER}/{id}"),
            Key::Server(id) => write!(f, "{SERVER}/{id}"),
            Key::Registration(id) => write!(f, "{REGISTRATION}/{id}"),
            Key::Group(code) => write!(f, "{GROUP}/{code}"),
            Key::Token(hash) => write!(f, "{TOKEN}/{hash}"),
            Key::Catalogue(id) => write!(f, "{CATALOGUE}/{id}"),
            Key::Descriptor(hash) => write!(f, "{DESCRIPTOR}/{hash}"),
            Key::Tsa(name) => write!(f, "{TSA}/{name}"),
            Key::AdminCert(serial) => write!(f, "{ADMIN_CERT}/{serial}"),
            Key::Audit(seq) => write!(f, "{AUDIT}/{seq:016x}"),
            Key::Witness(origin) => write!(f, "{WITNESS}/{origin}"),
            Key::WitnessRefusal(origin, held) => {
                write!(f, "{WITNESS_REFUSAL}/{origin}/{held:016x}")
            }
            Key::ConfLatest => write!(f, "{CONF}/latest"),
            Key::Generation(serial) => write!(f, "{GENERATION}/{serial:016x}"),
            Key::State => write!(f, "{META}/state"),
        }
    }
}

impl From<Key<'_>> for String {
    fn from(k: Key<'_>) -> Self {
        k.to_string()
    }
}
