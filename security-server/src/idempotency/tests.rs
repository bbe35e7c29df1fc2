use super::*;

const T0: i64 = 1_700_000_000_000;

fn keyed<'a>(key: &'a str, method: &'a str, body: &'a [u8], id: &'a str) -> Keyed<'a> {
    Keyed {
        client: "ID/GOV/KEMENSOS/DTKS",
        provider: "ID/GOV/KEMENKEU/PNBP",
        service: "pnbp.v1.Pembayaran",
        key,
        method,
        body_sha256: body,
        message_id: id,
    }
}

fn kept(body: &[u8]) -> Kept {
    Kept {
        code: 0,
        message: String::new(),
        body: body.to_vec(),
        by_server: false,
    }
}

#[test]
fn keys_are_printable_and_bounded() {
    for (key, ok) in [
        ("bayar-2026-0001", true),
        ("a", true),
        (&*"k".repeat(128), true),
        ("", false),
        (&*"k".repeat(129), false),
        ("with space", false),
        ("tab\there", false),
        ("ü", false),
    ] {
        assert_eq!(check_key(key).is_ok(), ok, "{key:?}");
    }
}

#[test]
fn the_entry_under_a_key_decides_each_request() {
    let entry = |fingerprint: &str, state: State, expires: i64| Entry {
        fingerprint: fingerprint.into(),
        message_id: "m1".into(),
        expires_unix_ms: expires,
        state,
    };
    let answered = State::Answered(kept(b"lunas"));
    let answering = |boot: &str| State::Answering { boot: boot.into() };
    let m1 = || "m1".to_owned();
    type Case = (Option<Entry>, Option<Result<Begun, Refused>>);
    let cases: Vec<Case> = vec![
        (None, None),
        // Past its window: as if none.
        (Some(entry("f", answered.clone(), T0)), None),
        (
            Some(entry("f", answered.clone(), T0 + 1)),
            Some(Ok(Begun::Repeat {
                message_id: m1(),
                kept: kept(b"lunas"),
            })),
        ),
        (
            Some(entry("other", answered.clone(), T0 + 1)),
            Some(Err(Refused::Reused { message_id: m1() })),
        ),
        (
            Some(entry("f", answering("this run"), T0 + 1)),
            Some(Err(Refused::InProgress { message_id: m1() })),
        ),
        (
            Some(entry("f", answering("an earlier run"), T0 + 1)),
            Some(Err(Refused::Interrupted { message_id: m1() })),
        ),
        // Still being answered in this run past its window: it holds its key.
        (
            Some(entry("f", answering("this run"), T0)),
            Some(Err(Refused::InProgress { message_id: m1() })),
        ),
        // Cut off by a restart and past its window: free again.
        (Some(entry("f", answering("an earlier run"), T0)), None),
        // Another request under a key still being answered is refused as reused.
        (
            Some(entry("other", answering("this run"), T0 + 1)),
            Some(Err(Refused::Reused { message_id: m1() })),
        ),
    ];
    for (existing, want) in cases {
        assert_eq!(
            decide(existing.as_ref(), "f", T0, "this run"),
            want,
            "{existing:?}"
        );
    }
}

#[test]
fn a_key_holds_its_first_answer_across_a_restart_for_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let window = Duration::from_secs(3600);
    let pay = keyed("bayar-1", "Bayar", b"tagihan 1", "m1");
    {
        let db = sled::open(dir.path()).unwrap();
        let idem = Idempotency::open(&db, window, "run 1".into()).unwrap();
        let Ok(Begun::First(ticket)) = idem.begin(&pay, T0).unwrap() else {
            panic!("the first request under its key");
        };
        // While it is answered, a repeat waits and another request is refused.
        let again = keyed("bayar-1", "Bayar", b"tagihan 1", "m2");
        assert_eq!(
            idem.begin(&again, T0).unwrap(),
            Err(Refused::InProgress {
                message_id: "m1".into()
            })
        );
        idem.finish(ticket, kept(b"lunas")).unwrap();
    }
    let db = sled::open(dir.path()).unwrap();
    let idem = Idempotency::open(&db, window, "run 2".into()).unwrap();
    let repeat = keyed("bayar-1", "Bayar", b"tagihan 1", "m3");
    assert_eq!(
        idem.begin(&repeat, T0 + 1000).unwrap(),
        Ok(Begun::Repeat {
            message_id: "m1".into(),
            kept: kept(b"lunas")
        })
    );
    for other in [
        keyed("bayar-1", "Bayar", b"tagihan 2", "m4"),
        keyed("bayar-1", "Batal", b"tagihan 1", "m5"),
    ] {
        assert_eq!(
            idem.begin(&other, T0 + 1000).unwrap(),
            Err(Refused::Reused {
                message_id: "m1".into()
            })
        );
    }
    // Another client's key of the same name is its own.
    let other_client = Keyed {
        client: "ID/GOV/BPJS/JKN",
        ..keyed("bayar-1", "Bayar", b"tagihan 2", "m6")
    };
    let Ok(Begun::First(ticket)) = idem.begin(&other_client, T0 + 1000).unwrap() else {
        panic!("another client's key is its own");
    };
    // Being answered, it outlives its window; answered, it goes with it.
    assert_eq!(idem.purge(T0 + 3_601_001).unwrap(), 1);
    idem.finish(ticket, kept(b"lunas")).unwrap();
    // After the window the key is free again, and purged.
    let late = T0 + 3_601_001;
    assert_eq!(idem.purge(late).unwrap(), 1);
    assert!(matches!(
        idem.begin(&keyed("bayar-1", "Batal", b"x", "m7"), late)
            .unwrap(),
        Ok(Begun::First(_))
    ));
}

#[test]
fn a_first_request_cut_off_by_a_restart_leaves_its_outcome_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let pay = keyed("bayar-2", "Bayar", b"tagihan", "m1");
    {
        let db = sled::open(dir.path()).unwrap();
        let idem = Idempotency::open(&db, Duration::from_secs(60), "run 1".into()).unwrap();
        assert!(matches!(idem.begin(&pay, T0).unwrap(), Ok(Begun::First(_))));
    }
    let db = sled::open(dir.path()).unwrap();
    let idem = Idempotency::open(&db, Duration::from_secs(60), "run 2".into()).unwrap();
    assert_eq!(
        idem.begin(&pay, T0 + 1).unwrap(),
        Err(Refused::Interrupted {
            message_id: "m1".into()
        })
    );
}

#[test]
fn a_released_key_may_be_used_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let idem = Idempotency::open(&db, Duration::from_secs(60), "run".into()).unwrap();
    let pay = keyed("bayar-3", "Bayar", b"tagihan", "m1");
    let Ok(Begun::First(ticket)) = idem.begin(&pay, T0).unwrap() else {
        panic!("first");
    };
    idem.release(ticket).unwrap();
    assert!(matches!(idem.begin(&pay, T0).unwrap(), Ok(Begun::First(_))));
}
