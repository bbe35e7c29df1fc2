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
    assert_eq!(events.failed(&gone, 1, true, "x", 40).unwrap(), None);
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
    assert_eq!(first, Some(AfterFailure::RetryIn(Duration::from_secs(1))));
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
        Some(AfterFailure::RetryIn(Duration::from_secs(4)))
    );
    assert_eq!(
        events.failed(&sub, 1, true, "bad", 9000).unwrap(),
        Some(AfterFailure::DeadLetter)
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

#[test]
fn only_events_every_subscriber_passed_no_dead_letter_names_and_old_enough_are_purged() {
    let day = Duration::from_secs(86_400);
    let ms = 86_400_000;
    // (sequence, published, floor, named by a dead letter, retention, now, purged)
    let cases = [
        (1, 0, 2, false, day, ms, true),
        (1, 0, 2, false, day, ms - 1, false),
        (2, 0, 2, false, day, 10 * ms, false),
        (1, 0, 2, true, day, 10 * ms, false),
        (1, 0, 1, false, Duration::ZERO, 0, false),
        (1, 0, 2, false, Duration::ZERO, 0, true),
        (5, 0, u64::MAX, false, day, ms, true),
        (1, i64::MAX - 1, 2, false, day, i64::MAX - 1, false),
        (1, 0, 2, false, Duration::MAX, i64::MAX, false),
    ];
    for (sequence, published, floor, dead, retention, now, want) in cases {
        assert_eq!(
            purgeable(sequence, published, floor, dead, retention, now),
            want,
            "{sequence} {published} {floor} {dead} {retention:?} {now}"
        );
    }
}

#[test]
fn acknowledged_events_are_purged_and_dead_letters_redelivered_or_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let events = Events::open(&db, RETRY).unwrap();
    let (a, b) = (key("ID/GOV/KEMENSOS/DTKS"), key("ID/GOV/BPJS/JKN"));
    let (p, t) = (a.publisher.clone(), a.topic.clone());
    let lain = "kependudukan.v1.Lain";
    for s in 1..=5 {
        events
            .publish(&p, &t, "k", format!("e{s}").into_bytes(), s * 10)
            .unwrap();
    }
    // A topic nobody subscribes to.
    events.publish(&p, lain, "k", b"x".to_vec(), 10).unwrap();
    events.subscribe(&a, true).unwrap();
    events.subscribe(&b, true).unwrap();
    for s in 1..=4 {
        events.delivered(&a, s).unwrap();
    }
    events.delivered(&b, 1).unwrap();
    // The second event is refused until dead-lettered.
    for _ in 0..RETRY.max_attempts {
        events.failed(&b, 2, true, "bad", 100).unwrap();
    }
    assert_eq!(events.place(&b).unwrap().unwrap().next, 3);

    // Too young: nothing goes.
    let retention = Duration::from_millis(100);
    assert_eq!(events.purge(100, retention).unwrap(), 0);
    // Old enough: what both passed, except the dead letter's; and the unsubscribed
    // topic's event.
    assert_eq!(events.purge(1_000, retention).unwrap(), 2);
    let kept: Vec<u64> = (1..=5)
        .filter(|&s| events.event(&p, &t, s).unwrap().is_some())
        .collect();
    assert_eq!(kept, [2, 3, 4, 5]);
    assert!(events.event(&p, lain, 1).unwrap().is_none());
    // A subscriber from the start begins at the first kept; the next publication
    // still counts on.
    let late = key("ID/GOV/KEMENKES/SATUSEHAT");
    assert_eq!(events.subscribe(&late, true).unwrap().next, 2);
    assert_eq!(events.publish(&p, lain, "k", b"y".to_vec(), 20).unwrap(), 2);
    events.unsubscribe(&late).unwrap();

    // Asked for again: the letter is waiting, and its event is kept.
    assert!(events.next_redelivery(&b).unwrap().is_none());
    assert_eq!(events.redeliver(&b, Some(9)).unwrap(), 0);
    assert_eq!(events.redeliver(&b, Some(2)).unwrap(), 1);
    let letter = events.next_redelivery(&b).unwrap().unwrap();
    assert_eq!((letter.sequence, letter.redeliver), (2, true));
    // Out of reach: tried again later, still a letter.
    let after = events
        .redelivered(&b, 2, Err((false, "down")), 2_000)
        .unwrap();
    assert_eq!(after, Some(AfterFailure::RetryIn(Duration::from_secs(1))));
    let letter = events.next_redelivery(&b).unwrap().unwrap();
    assert_eq!((letter.tries, letter.due_unix_ms), (1, 3_000));
    // Refused again: back among the dead letters, waiting for another request.
    events
        .redelivered(&b, 2, Err((true, "still bad")), 3_000)
        .unwrap();
    assert!(events.next_redelivery(&b).unwrap().is_none());
    let letter = &events.dead_letters(&b).unwrap()[0];
    assert_eq!(
        (letter.attempts, letter.error.as_str(), letter.redeliver),
        (RETRY.max_attempts + 2, "still bad", false)
    );
    // Acknowledged: the letter goes, and the event may be purged.
    events.redeliver(&b, None).unwrap();
    events.redelivered(&b, 2, Ok(()), 4_000).unwrap();
    assert!(events.dead_letters(&b).unwrap().is_empty());
    for s in 3..=4 {
        events.delivered(&b, s).unwrap();
    }
    // Both passed 2 to 4; the other topic's second event has nobody to wait for.
    assert_eq!(events.purge(5_000, retention).unwrap(), 4);
    // Discarded letters go; the others stay.
    events.delivered(&a, 5).unwrap();
    events.publish(&p, &t, "k", b"e6".to_vec(), 60).unwrap();
    for _ in 0..RETRY.max_attempts {
        events.failed(&a, 6, true, "bad", 100).unwrap();
    }
    for _ in 0..RETRY.max_attempts {
        events.failed(&b, 5, true, "bad", 100).unwrap();
    }
    assert_eq!(events.discard(&a, None).unwrap(), 1);
    assert_eq!(events.dead_letters(&b).unwrap().len(), 1);
    // A subscription's letters go with it.
    events.unsubscribe(&b).unwrap();
    assert!(events.dead_letters(&b).unwrap().is_empty());

    // A subscription pointing at purged events gets the first kept after them.
    let first = events.event_from(&p, &t, 1).unwrap().unwrap();
    assert_eq!(first.sequence, 5);
    assert!(events.event_from(&p, &t, 7).unwrap().is_none());
}

#[test]
fn an_export_holds_every_event_tree() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let events = Events::open(&db, RETRY).unwrap();
    let a = key("ID/GOV/KEMENSOS/DTKS");
    events.subscribe(&a, true).unwrap();
    events
        .publish(&a.publisher, &a.topic, "k", b"x".to_vec(), 1)
        .unwrap();
    for _ in 0..RETRY.max_attempts {
        events.failed(&a, 1, true, "bad", 100).unwrap();
    }
    let exported = events.export().unwrap();
    let trees: Vec<&str> = exported.iter().map(|e| e.tree.as_str()).collect();
    assert_eq!(trees, store::TREES);
}
