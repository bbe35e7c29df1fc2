//! Wire and storage formats of lintas, generated from the `.proto` files beside this crate.
//!
//! Everything that is signed travels as the exact encoded bytes of one of these messages
//! (for example [`globalconf::v1::SignedGlobalConf::conf`]), so a verifier never re-encodes
//! before checking a signature.

pub mod globalconf {
    pub mod v1 {
        tonic::include_proto!("lintas.globalconf.v1");
    }
}

pub mod registry {
    pub mod v1 {
        tonic::include_proto!("lintas.registry.v1");
    }
}

pub mod exchange {
    pub mod v1 {
        tonic::include_proto!("lintas.exchange.v1");
    }
}

pub mod log {
    pub mod v1 {
        tonic::include_proto!("lintas.log.v1");
    }
}

pub mod ss {
    pub mod v1 {
        tonic::include_proto!("lintas.ss.v1");
    }
}

pub mod audit {
    pub mod v1 {
        tonic::include_proto!("lintas.audit.v1");
    }
}

pub mod discovery {
    pub mod v1 {
        tonic::include_proto!("lintas.discovery.v1");
    }
}
pub mod opmon {
    pub mod v1 {
        tonic::include_proto!("lintas.opmon.v1");
    }
}
