//! What every store must do, as checks any backend's tests run: `check` on an empty
//! store, `check_shared` on two handles of one empty database (two registry nodes).
//! They panic with the broken promise.

use std::sync::Arc;

use super::{ApplyError, Expect, Put, RegistryStore, Stored};

fn put(key: &str, value: &str) -> Put {
    Put {
        key: key.into(),
        value: Some(value.as_bytes().to_vec()),
    }
}

fn remove(key: &str) -> Put {
    Put {
        key: key.into(),
        value: None,
    }
}

fn expect(key: &str, version: u64) -> Expect {
    Expect {
        key: key.into(),
        version,
    }
}

fn value(store: &dyn RegistryStore, key: &str) -> Option<(String, u64)> {
    store
        .get(key)
        .unwrap()
        .map(|s| (String::from_utf8(s.value).unwrap(), s.version))
}

/// The single-writer contract, on an empty store.
pub fn check(store: &dyn RegistryStore) {
    assert!(store.load().unwrap().is_empty(), "a new store is empty");
    assert_eq!(store.get("member/a").unwrap(), None);

    // Puts land together, each at version 1; load returns them in key order.
    store
        .apply(&[], vec![put("member/b", "B"), put("member/a", "A")])
        .unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(
        loaded,
        vec![
            Stored {
                key: "member/a".into(),
                value: b"A".to_vec(),
                version: 1
            },
            Stored {
                key: "member/b".into(),
                value: b"B".to_vec(),
                version: 1
            },
        ]
    );

    // Each put raises the version; an expectation that holds lets the batch through.
    store
        .apply(&[expect("member/a", 1)], vec![put("member/a", "A2")])
        .unwrap();
    assert_eq!(value(store, "member/a"), Some(("A2".into(), 2)));

    // A stale expectation refuses the whole batch: nothing of it is applied.
    let stale = store.apply(
        &[expect("member/a", 1)],
        vec![put("member/a", "lost"), put("member/c", "lost")],
    );
    assert!(
        matches!(&stale, Err(ApplyError::Conflict { key }) if key == "member/a"),
        "{stale:?}"
    );
    assert_eq!(value(store, "member/a"), Some(("A2".into(), 2)));
    assert_eq!(store.get("member/c").unwrap(), None);

    // Version 0 expects the key absent.
    store
        .apply(&[expect("witness/x", 0)], vec![put("witness/x", "1")])
        .unwrap();
    assert!(matches!(
        store.apply(&[expect("witness/x", 0)], vec![put("witness/x", "again")]),
        Err(ApplyError::Conflict { .. })
    ));

    // Removal, in the same batch as a put.
    store
        .apply(&[], vec![remove("member/b"), put("member/d", "D")])
        .unwrap();
    assert_eq!(store.get("member/b").unwrap(), None);
    let keys: Vec<String> = store.load().unwrap().into_iter().map(|s| s.key).collect();
    assert_eq!(keys, ["member/a", "member/d", "witness/x"]);

    // Values are bytes, kept exactly; keys may hold any text.
    let bytes: Vec<u8> = (0..=255).collect();
    store
        .apply(
            &[],
            vec![Put {
                key: "descriptor/ünï/€".into(),
                value: Some(bytes.clone()),
            }],
        )
        .unwrap();
    assert_eq!(store.get("descriptor/ünï/€").unwrap().unwrap().value, bytes);
}

/// Two writers on one database (`a` and `b`, both empty at first): a batch one applied
/// is seen by the other, and of two batches made from the same version exactly one is
/// applied, even when they race.
pub fn check_shared(a: Arc<dyn RegistryStore>, b: Arc<dyn RegistryStore>) {
    a.apply(&[expect("meta/state", 0)], vec![put("meta/state", "0")])
        .unwrap();
    assert_eq!(value(&*b, "meta/state"), Some(("0".into(), 1)));
    let stale = b.apply(&[expect("meta/state", 0)], vec![put("meta/state", "b")]);
    assert!(
        matches!(stale, Err(ApplyError::Conflict { .. })),
        "{stale:?}"
    );

    // Racing writers: each reads the version and tries to raise it; every success is
    // a distinct version, so no two changes were made from the same state.
    let writers: Vec<_> = [a, b]
        .into_iter()
        .enumerate()
        .map(|(w, store)| {
            std::thread::spawn(move || {
                let mut won = Vec::new();
                for i in 0..50 {
                    let seen = store.get("meta/state").unwrap().unwrap().version;
                    let mine = format!("{w}-{i}");
                    match store.apply(
                        &[expect("meta/state", seen)],
                        vec![put("meta/state", &mine), put(&format!("audit/{mine}"), "x")],
                    ) {
                        Ok(()) => won.push(seen + 1),
                        Err(ApplyError::Conflict { .. }) => {
                            assert!(
                                store.get(&format!("audit/{mine}")).unwrap().is_none(),
                                "a refused batch left a record"
                            );
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                won
            })
        })
        .collect();
    let mut versions: Vec<u64> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let applied = versions.len();
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(
        versions.len(),
        applied,
        "two batches were applied from one version"
    );
}
