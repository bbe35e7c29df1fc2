use std::time::Instant;

use lintas_identifiers::{ClientId, MethodPath};

use super::*;
use crate::quotas::{Quota, retry_after_secs};

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
fn quotas_are_kept_across_a_restart_and_one_per_service_method_and_client() {
    let dir = tempfile::tempdir().unwrap();
    let every = quota(Some("Get"), None, 2, 60);
    let client: ClientId = "ID/GOV/KEMENSOS/BANSOS".parse().unwrap();
    let method: MethodPath = "/population.v1.Population/Get".parse().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        let access = Access::open(&db).unwrap();
        assert_eq!(
            access
                .set_quota(Quota {
                    calls: 1,
                    ..every.clone()
                })
                .unwrap(),
            None
        );
        // The same service, method and client: replaced, and the one before answered.
        let before = access.set_quota(every.clone()).unwrap().unwrap();
        assert_eq!(before.calls, 1);
        let bad = access.set_quota(Quota {
            burst: 0,
            ..every.clone()
        });
        assert!(bad.unwrap_err().to_string().contains("burst"));
        assert_eq!(access.quotas(), vec![every.clone()]);
    }
    let db = sled::open(dir.path()).unwrap();
    let access = Access::open(&db).unwrap();
    assert_eq!(access.quotas(), vec![every.clone()]);
    let now = Instant::now();
    for _ in 0..2 {
        access
            .take_quota(&client, &every.provider, &method, now)
            .unwrap();
    }
    let over = access
        .take_quota(&client, &every.provider, &method, now)
        .unwrap_err();
    assert_eq!(retry_after_secs(over.wait), 30);
    assert!(
        over.quota.describe().starts_with("each client may call"),
        "{}",
        over.quota.describe()
    );
    assert_eq!(
        access.remove_quota(&every.key()).unwrap(),
        Some(every.clone())
    );
    assert_eq!(access.remove_quota(&every.key()).unwrap(), None);
    assert!(access.quotas().is_empty());
    access
        .take_quota(&client, &every.provider, &method, now)
        .unwrap();
}
