use super::*;

const RETRY: Retry = Retry {
    base: Duration::from_secs(1),
    most: Duration::from_secs(300),
    max_attempts: 3,
};

fn key(subscriber: &str) -> SubKey {
    SubKey {
        publisher: "ID/GOV/KEMENDAGRI/DUKCAPIL".into(),
        topic: "kependudukan.v1.StatusPenduduk".into(),
        subscriber: subscriber.into(),
    }
}

#[test]
fn a_subscriber_out_of_reach_is_waited_for_and_one_that_refuses_is_given_up_on() {
    // Only the subscriber's application refuses an event; its server, the bus or a
    // busy application are waited out.
    let refusals = [
        (Code::InvalidArgument, true, true),
        (Code::Internal, true, true),
        (Code::PermissionDenied, true, true),
        (Code::Unavailable, true, false),
        (Code::ResourceExhausted, true, false),
        (Code::PermissionDenied, false, false),
        (Code::Unimplemented, false, false),
        (Code::DataLoss, false, false),
        (Code::Unauthenticated, false, false),
    ];
    for (code, by_application, want) in refusals {
        assert_eq!(
            refused(code, by_application),
            want,
            "{code:?} {by_application}"
        );
    }
    let secs = |n| AfterFailure::RetryIn(Duration::from_secs(n));
    // (failed attempts, of them refusals, what follows)
    let cases = [
        (1, 0, secs(1)),
        (2, 0, secs(2)),
        (5, 0, secs(16)),
        (50, 0, secs(300)),
        (1000, 2, secs(300)),
        (9, 2, secs(256)),
        (1, 1, secs(1)),
        (2, 2, secs(2)),
        (3, 3, AfterFailure::DeadLetter),
        (7, 7, AfterFailure::DeadLetter),
    ];
    for (attempts, refusals, want) in cases {
        assert_eq!(
            after_failure(attempts, refusals, &RETRY),
            want,
            "{attempts} {refusals}"
        );
    }
}

#[test]
fn events_and_subscriptions_are_kept_in_order_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let bansos = key("ID/GOV/KEMENSOS/DTKS");
    let (p, t) = (bansos.publisher.clone(), bansos.topic.clone());
    {
        let db = sled::open(dir.path()).unwrap();
        let events = Events::open(&db, RETRY).unwrap();
        assert_eq!(
            events
                .publish(&p, &t, "nik-1", b"pindah".to_vec(), 10)
                .unwrap(),
            1
        );
        // Subscribed now: from the next event on, or from the start.
        assert_eq!(events.subscribe(&bansos, false).unwrap().next, 2);
        let bpjs = key("ID/GOV/BPJS/JKN");
        assert_eq!(events.subscribe(&bpjs, true).unwrap().next, 1);
        assert_eq!(
            events
                .publish(&p, &t, "nik-2", b"wafat".to_vec(), 20)
                .unwrap(),
            2
        );
        events.delivered(&bpjs, 1).unwrap();
        // A late acknowledgement of an event already passed changes nothing.
        events.delivered(&bpjs, 1).unwrap();
        assert_eq!(events.place(&bpjs).unwrap().unwrap().next, 2);
    }
    let db = sled::open(dir.path()).unwrap();
    let events = Events::open(&db, RETRY).unwrap();
    let places: Vec<(String, u64)> = events
        .subscriptions()
        .unwrap()
        .into_iter()
        .map(|(k, p)| (k.subscriber, p.next))
        .collect();
    assert_eq!(
        places,
        [
            ("ID/GOV/BPJS/JKN".to_owned(), 2),
            ("ID/GOV/KEMENSOS/DTKS".to_owned(), 2)
        ]
    );
    let second = events.event(&p, &t, 2).unwrap().unwrap();
    assert_eq!(
        (
            second.sequence,
            second.key.as_str(),
            second.payload.as_slice()
        ),
        (2, "nik-2", b"wafat".as_slice())
    );
    assert_eq!(
        events
            .publish(&p, &t, "nik-1", b"kembali".to_vec(), 30)
            .unwrap(),
        3
    );
    assert!(events.event(&p, &t, 4).unwrap().is_none());
    // An acknowledgement that arrives after an unsubscribe does not bring it back.
    let gone = key("ID/GOV/KEMENKES/SATUSEHAT");
    events.subscribe(&gone, true).unwrap();
    events.unsubscribe(&gone).unwrap();
    events.delivered(&gone, 1).unwrap();
    events.failed(&gone, 1, true, "x", 40).unwrap();
    assert!(events.place(&gone).unwrap().is_none());
    // Subscribing again answers the subscription there is.
    assert_eq!(events.subscribe(&bansos, true).unwrap().next, 2);
    assert_eq!(events.unsubscribe(&bansos).unwrap().unwrap().next, 2);
    assert!(events.unsubscribe(&bansos).unwrap().is_none());
}

#[test]
fn a_refused_event_is_retried_then_dead_lettered_and_the_next_follows() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let events = Events::open(&db, RETRY).unwrap();
    let sub = key("ID/GOV/KEMENSOS/DTKS");
    let other = key("ID/GOV/KEMENSOS/DTKSX");
    events.subscribe(&sub, true).unwrap();
    events.subscribe(&other, true).unwrap();
    events
        .publish(&sub.publisher, &sub.topic, "k", b"racun".to_vec(), 1)
        .unwrap();
    let first = events.failed(&sub, 1, true, "bad", 1000).unwrap();
    assert_eq!(first, AfterFailure::RetryIn(Duration::from_secs(1)));
    let place = events.place(&sub).unwrap().unwrap();
    assert_eq!(
        (place.next, place.attempts, place.due_unix_ms),
        (1, 1, 2000)
    );
    assert_eq!(place.last_error, "bad");
    // Out of reach in between: waited for, not counted towards giving up.
    events.failed(&sub, 1, false, "down", 2000).unwrap();
    assert_eq!(
        events.failed(&sub, 1, true, "bad", 5000).unwrap(),
        AfterFailure::RetryIn(Duration::from_secs(4))
    );
    assert_eq!(
        events.failed(&sub, 1, true, "bad", 9000).unwrap(),
        AfterFailure::DeadLetter
    );
    let place = events.place(&sub).unwrap().unwrap();
    assert_eq!((place.next, place.attempts), (2, 0));
    let dead = events.dead_letters(&sub).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].sequence, dead[0].attempts, dead[0].error.as_str()),
        (1, 4, "bad")
    );
    // Another subscriber whose name begins with this one's has its own letters.
    assert!(events.dead_letters(&other).unwrap().is_empty());
    let status = events.status().unwrap();
    let of = |s: &SubKey| status.iter().find(|x| &x.key == s).unwrap();
    assert_eq!((of(&sub).backlog, of(&sub).dead_letters), (0, 1));
    assert_eq!((of(&other).backlog, of(&other).dead_letters), (1, 0));
}
