use super::*;

fn quota(method: Option<&str>, client: Option<&str>, calls: u32, per_secs: u32) -> Quota {
    Quota {
        provider: "ID/GOV/KEMENDAGRI/DUKCAPIL".parse().unwrap(),
        service: "population.v1.Population".parse().unwrap(),
        method: method.map(str::to_owned),
        client: client.map(|c| c.parse().unwrap()),
        calls,
        per_secs,
        burst: calls,
    }
}

#[test]
fn rates_are_read_as_written_and_refused_with_the_reason() {
    type Case<'a> = (&'a str, Result<(u32, u32), &'a str>);
    let cases: &[Case] = &[
        ("10/s", Ok((10, 1))),
        ("600/min", Ok((600, 60))),
        (" 5000 / h ", Ok((5000, 3600))),
        ("100000/day", Ok((100_000, 86_400))),
        ("1/week", Ok((1, 604_800))),
        ("1/month", Ok((1, MAX_PER_SECS))),
        ("100/30s", Ok((100, 30))),
        ("10", Err("write it as CALLS/PERIOD")),
        ("ten/s", Err("not a whole number")),
        ("-1/s", Err("not a whole number")),
        ("0/s", Err("calls must be 1")),
        ("10/fortnight", Err("the period is s, min")),
        ("10/0s", Err("the period must be 1 s to 31 days")),
        ("10/9999999s", Err("the period must be 1 s to 31 days")),
        ("2000000000/s", Err("calls must be 1")),
    ];
    for (text, want) in cases {
        match (parse_rate(text), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, *want, "{text}"),
            (Err(e), Err(want)) => assert!(e.contains(want), "{text}: {e}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn rates_read_back_as_they_are_written() {
    for (calls, per) in [
        (10, 1),
        (600, 60),
        (5, 3600),
        (7, 86_400),
        (1, 604_800),
        (3, 45),
    ] {
        assert_eq!(parse_rate(&rate_text(calls, per)), Ok((calls, per)));
    }
    assert_eq!(rate_text(1, MAX_PER_SECS), "1/month");
}

#[test]
fn a_quota_with_zero_or_huge_numbers_is_refused() {
    let ok = quota(None, None, 10, 1);
    assert_eq!(ok.check(), Ok(()));
    for (q, want) in [
        (
            Quota {
                calls: 0,
                ..ok.clone()
            },
            "calls",
        ),
        (
            Quota {
                per_secs: 0,
                ..ok.clone()
            },
            "period",
        ),
        (
            Quota {
                per_secs: MAX_PER_SECS + 1,
                ..ok.clone()
            },
            "period",
        ),
        (
            Quota {
                burst: 0,
                ..ok.clone()
            },
            "burst",
        ),
        (
            Quota {
                burst: MAX_CALLS + 1,
                ..ok.clone()
            },
            "burst",
        ),
    ] {
        assert!(q.check().unwrap_err().contains(want), "{q:?}");
    }
}

#[test]
fn a_clients_own_quota_replaces_the_one_for_every_client_at_its_scope() {
    let bansos = "ID/GOV/KEMENSOS/BANSOS";
    let bpjs = "ID/GOV/BPJS/KESEHATAN";
    let every = quota(None, None, 100, 60);
    let bansos_service = quota(None, Some(bansos), 1000, 60);
    let get_every = quota(Some("Get"), None, 10, 1);
    let get_bansos = quota(Some("Get"), Some(bansos), 50, 1);
    let other_service = Quota {
        service: "health.v1.Cards".parse().unwrap(),
        ..every.clone()
    };
    let all = vec![
        every.clone(),
        bansos_service.clone(),
        get_every.clone(),
        get_bansos.clone(),
        other_service,
    ];
    let only_every = vec![every.clone()];
    let cases: &[(&[Quota], &str, &str, Vec<&Quota>)] = &[
        (&all, bansos, "Get", vec![&bansos_service, &get_bansos]),
        (&all, bpjs, "Get", vec![&every, &get_every]),
        (&all, bansos, "List", vec![&bansos_service]),
        (&all, bpjs, "List", vec![&every]),
        (&only_every, bansos, "Get", vec![&every]),
        (&[], bansos, "Get", vec![]),
    ];
    let provider = every.provider.clone();
    let service = every.service.clone();
    for (quotas, client, method, want) in cases {
        let got = applicable(
            quotas,
            &client.parse().unwrap(),
            &provider,
            &service,
            method,
        );
        assert_eq!(&got, want, "{client} {method}");
    }
}

#[test]
fn a_bucket_gives_its_burst_then_refills_at_the_rate() {
    let limiter = Limiter::default();
    let q = Quota {
        burst: 3,
        ..quota(None, None, 2, 1)
    };
    let client: ClientId = "ID/GOV/KEMENSOS/BANSOS".parse().unwrap();
    let other: ClientId = "ID/GOV/BPJS/KESEHATAN".parse().unwrap();
    let t0 = Instant::now();
    for _ in 0..3 {
        assert_eq!(limiter.take(&[&q], &client, t0), Ok(()));
    }
    // Empty: a call comes back in half a second at 2 per second.
    let wait = limiter.take(&[&q], &client, t0).unwrap_err().wait;
    assert_eq!(wait, Duration::from_millis(500));
    assert_eq!(retry_after_secs(wait), 1);
    // Another client has its own bucket.
    assert_eq!(limiter.take(&[&q], &other, t0), Ok(()));
    let later = t0 + Duration::from_millis(500);
    assert_eq!(limiter.take(&[&q], &client, later), Ok(()));
    assert!(limiter.take(&[&q], &client, later).is_err());
    // Long after, the bucket holds its burst and no more.
    let much_later = t0 + Duration::from_secs(3600);
    for _ in 0..3 {
        assert_eq!(limiter.take(&[&q], &client, much_later), Ok(()));
    }
    assert!(limiter.take(&[&q], &client, much_later).is_err());
}

#[test]
fn a_call_takes_from_every_bucket_or_from_none() {
    let limiter = Limiter::default();
    let service = quota(None, None, 5, 1);
    let method = quota(Some("Get"), None, 1, 10);
    let client: ClientId = "ID/GOV/KEMENSOS/BANSOS".parse().unwrap();
    let t0 = Instant::now();
    assert_eq!(limiter.take(&[&service, &method], &client, t0), Ok(()));
    // The method's bucket is empty for 10 s, and named; the service's one is not
    // touched.
    let over = limiter.take(&[&service, &method], &client, t0).unwrap_err();
    assert_eq!((retry_after_secs(over.wait), &*over.quota), (10, &method));
    for _ in 0..4 {
        assert_eq!(limiter.take(&[&service], &client, t0), Ok(()));
    }
    let wait = limiter.take(&[&service], &client, t0).unwrap_err().wait;
    assert_eq!(retry_after_secs(wait), 1);
    assert_eq!(limiter.take(&[], &client, t0), Ok(()));
}

#[test]
fn retry_after_is_whole_seconds_rounded_up() {
    for (wait, secs) in [
        (Duration::ZERO, 1),
        (Duration::from_millis(1), 1),
        (Duration::from_secs(1), 1),
        (Duration::from_millis(1001), 2),
        (Duration::from_secs(86_400), 86_400),
    ] {
        assert_eq!(retry_after_secs(wait), secs, "{wait:?}");
    }
}

#[test]
fn extreme_quotas_neither_panic_nor_overflow() {
    let limiter = Limiter::default();
    let client: ClientId = "ID/GOV/KEMENSOS/BANSOS".parse().unwrap();
    let t0 = Instant::now();
    let slow = Quota {
        burst: MAX_CALLS,
        ..quota(None, None, 1, MAX_PER_SECS)
    };
    assert_eq!(limiter.take(&[&slow], &client, t0), Ok(()));
    let tiny = Quota {
        burst: 1,
        ..quota(Some("Get"), None, 1, MAX_PER_SECS)
    };
    assert_eq!(limiter.take(&[&tiny], &client, t0), Ok(()));
    let wait = limiter.take(&[&tiny], &client, t0).unwrap_err().wait;
    assert_eq!(retry_after_secs(wait), u64::from(MAX_PER_SECS));
    let fast = quota(None, None, MAX_CALLS, 1);
    assert_eq!(limiter.take(&[&fast], &client, t0), Ok(()));
}

#[test]
fn a_call_given_back_or_a_quota_forgotten_frees_the_bucket() {
    let limiter = Limiter::default();
    let q = quota(None, None, 1, 60);
    let client: ClientId = "ID/GOV/KEMENSOS/BANSOS".parse().unwrap();
    let t0 = Instant::now();
    assert_eq!(limiter.take(&[&q], &client, t0), Ok(()));
    assert!(limiter.take(&[&q], &client, t0).is_err());
    limiter.give_back(&[&q], &client);
    assert_eq!(limiter.take(&[&q], &client, t0), Ok(()));
    assert!(limiter.take(&[&q], &client, t0).is_err());
    // Given back twice: never more than the burst.
    limiter.give_back(&[&q], &client);
    limiter.give_back(&[&q], &client);
    assert_eq!(limiter.take(&[&q], &client, t0), Ok(()));
    assert!(limiter.take(&[&q], &client, t0).is_err());
    limiter.forget(&q.key());
    assert_eq!(limiter.take(&[&q], &client, t0), Ok(()));
    // A quota changed under the same key: its bucket holds at most the new burst.
    let bigger = quota(None, None, 10, 60);
    let t1 = t0 + Duration::from_secs(3600);
    for _ in 0..10 {
        assert_eq!(limiter.take(&[&bigger], &client, t1), Ok(()));
    }
    assert!(limiter.take(&[&bigger], &client, t1).is_err());
}
