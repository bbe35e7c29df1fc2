//! A backup archive's content as restore reads it after decryption: entries, paths,
//! modes, lengths, the manifest, its signature and certificate. The input is sealed
//! with a passphrase the target knows (and a cheap Argon2id cost), so the fuzzer reaches
//! the parser behind the authentication; the sealing itself is covered by the crate's
//! tests of every kind of damage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lintas_backup::seal::{Kdf, Sealer};
use lintas_backup::Passphrase;

const KDF: Kdf = Kdf {
    memory_kib: 8,
    passes: 1,
    lanes: 1,
};

fuzz_target!(|data: &[u8]| {
    let passphrase = Passphrase::for_reading("fuzz".into());
    let mut sealer = Sealer::new(Vec::new(), &passphrase, KDF).unwrap();
    sealer.write(data).unwrap();
    let sealed = sealer.finish().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _ = lintas_backup::unpack(&sealed[..], &passphrase, dir.path());
});
