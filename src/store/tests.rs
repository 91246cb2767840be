use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;

fn options(history_revisions: u64, watch_buffer: usize) -> StoreOptions {
    StoreOptions {
        history_revisions,
        watch_buffer,
    }
}

fn open_temp(options: StoreOptions) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("store.redb"), options).expect("open store");
    (dir, store)
}

fn text(value: &str) -> impl FnOnce(u64) -> Vec<u8> + Send + 'static {
    let value = value.as_bytes().to_vec();
    move |_| value
}

/// Waits for the next event, failing the test instead of hanging.
async fn next_event(watch: &mut Watch) -> Option<Event> {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("watch produced nothing within 10 s")
}

fn summary(event: &Event) -> (EventKind, u64, String, String) {
    (
        event.kind.clone(),
        event.revision,
        event.kv.key.clone(),
        String::from_utf8_lossy(&event.kv.value).into_owned(),
    )
}

#[tokio::test]
async fn create_then_get_returns_the_value_and_its_revisions() {
    let (_dir, store) = open_temp(StoreOptions::default());
    assert_eq!(store.revision(), 0);
    let created = store.create("/a", text("one")).await.unwrap();
    assert_eq!((created.create_revision, created.mod_revision), (1, 1));
    let got = store.get("/a").unwrap().unwrap();
    assert_eq!(got.key, "/a");
    assert_eq!(&got.value[..], b"one");
    assert_eq!((got.create_revision, got.mod_revision), (1, 1));
    assert!(store.get("/missing").unwrap().is_none());
}

#[tokio::test]
async fn the_value_function_gets_the_revision_the_write_is_stored_at() {
    let (_dir, store) = open_temp(StoreOptions::default());
    store.create("/x", text("filler")).await.unwrap();
    let kv = store
        .create("/rv", |rev| format!("rv={rev}").into_bytes())
        .await
        .unwrap();
    assert_eq!(&kv.value[..], b"rv=2");
    assert_eq!(&store.get("/rv").unwrap().unwrap().value[..], b"rv=2");
}

#[tokio::test]
async fn creating_an_existing_key_fails_with_already_exists() {
    let (_dir, store) = open_temp(StoreOptions::default());
    store.create("/a", text("one")).await.unwrap();
    let err = store.create("/a", text("two")).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists), "{err:?}");
    assert_eq!(&store.get("/a").unwrap().unwrap().value[..], b"one");
    assert_eq!(store.revision(), 1, "a failed write takes no revision");
}

#[tokio::test]
async fn update_is_a_compare_and_swap_on_mod_revision() {
    let (_dir, store) = open_temp(StoreOptions::default());
    let v1 = store.create("/a", text("one")).await.unwrap();
    let v2 = store
        .update("/a", v1.mod_revision, text("two"))
        .await
        .unwrap();
    assert_eq!((v2.create_revision, v2.mod_revision), (1, 2));

    let err = store
        .update("/a", v1.mod_revision, text("stale"))
        .await
        .unwrap_err();
    let StoreError::Conflict { current } = err else {
        panic!("expected a conflict, got {err:?}");
    };
    assert_eq!(current.mod_revision, 2);
    assert_eq!(&current.value[..], b"two");
    assert_eq!(&store.get("/a").unwrap().unwrap().value[..], b"two");

    let err = store.update("/nope", 1, text("x")).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

#[tokio::test]
async fn delete_returns_the_last_value_and_its_own_revision() {
    let (_dir, store) = open_temp(StoreOptions::default());
    let v1 = store.create("/a", text("one")).await.unwrap();
    let err = store
        .delete("/a", Some(v1.mod_revision + 5))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");

    let (deleted, revision) = store.delete("/a", Some(v1.mod_revision)).await.unwrap();
    assert_eq!(&deleted.value[..], b"one");
    assert_eq!(deleted.mod_revision, 1);
    assert_eq!(revision, 2);
    assert!(store.get("/a").unwrap().is_none());

    let err = store.delete("/a", None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");

    let again = store.create("/a", text("reborn")).await.unwrap();
    assert_eq!((again.create_revision, again.mod_revision), (3, 3));
    let (_, revision) = store.delete("/a", None).await.unwrap();
    assert_eq!(revision, 4);
}

#[tokio::test]
async fn one_revision_counter_rises_by_one_per_write_across_keys() {
    let (_dir, store) = open_temp(StoreOptions::default());
    let a = store.create("/a", text("1")).await.unwrap();
    let b = store.create("/b", text("1")).await.unwrap();
    let a2 = store.update("/a", a.mod_revision, text("2")).await.unwrap();
    let _ = store.update("/b", 999, text("x")).await.unwrap_err();
    let (_, deleted_at) = store.delete("/b", None).await.unwrap();
    assert_eq!(
        [a.mod_revision, b.mod_revision, a2.mod_revision, deleted_at],
        [1, 2, 3, 4]
    );
    assert_eq!(store.revision(), 4);
    assert_eq!(store.stats().writes, 4);
}

#[tokio::test]
async fn a_panicking_value_function_fails_only_its_own_write() {
    let (_dir, store) = open_temp(StoreOptions::default());
    let err = store
        .create("/boom", |_| panic!("value function panics on purpose"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ValueFnPanicked), "{err:?}");
    assert!(store.get("/boom").unwrap().is_none());
    let kv = store.create("/fine", text("ok")).await.unwrap();
    assert_eq!(kv.mod_revision, 1);
}

async fn fill_for_listing(store: &Store) {
    for key in [
        "/pods/b",
        "/pods/a",
        "/pods/c",
        "/podsx/z",
        "/services/a",
        "/pods/d",
    ] {
        store.create(key, text(key)).await.unwrap();
    }
}

#[tokio::test]
async fn list_returns_only_keys_under_the_prefix_in_order() {
    let (_dir, store) = open_temp(StoreOptions::default());
    fill_for_listing(&store).await;
    let listed = store.list("/pods/", None, 0).unwrap();
    let keys: Vec<_> = listed.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/pods/a", "/pods/b", "/pods/c", "/pods/d"]);
    assert_eq!(&listed.kvs[0].value[..], b"/pods/a");
    assert_eq!(listed.revision, 6);
    assert!(!listed.more);
    assert!(store.list("/nothing/", None, 0).unwrap().kvs.is_empty());
}

#[tokio::test]
async fn list_pages_with_start_after_and_limit() {
    let (_dir, store) = open_temp(StoreOptions::default());
    fill_for_listing(&store).await;
    let first = store.list("/pods/", None, 2).unwrap();
    let keys: Vec<_> = first.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, ["/pods/a", "/pods/b"]);
    assert!(first.more);

    let second = store.list("/pods/", Some("/pods/b"), 2).unwrap();
    let keys: Vec<_> = second.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, ["/pods/c", "/pods/d"]);
    assert!(!second.more, "nothing matches after /pods/d");

    // A start_after before the prefix starts at the prefix.
    let all = store.list("/pods/", Some("/a"), 0).unwrap();
    assert_eq!(all.kvs.len(), 4);
}

#[tokio::test]
async fn count_counts_the_keys_under_a_prefix() {
    let (_dir, store) = open_temp(StoreOptions::default());
    fill_for_listing(&store).await;
    assert_eq!(store.count("/pods/").unwrap(), 4);
    assert_eq!(store.count("/pods").unwrap(), 5);
    assert_eq!(store.count("").unwrap(), 6);
    store.delete("/pods/a", None).await.unwrap();
    assert_eq!(store.count("/pods/").unwrap(), 3);
}

#[tokio::test]
async fn reopening_keeps_data_revision_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("store.redb");
    {
        let store = Store::open(&path, options(2, 16)).unwrap();
        let a = store.create("/a", text("1")).await.unwrap();
        store.create("/b", text("1")).await.unwrap();
        store.update("/a", a.mod_revision, text("2")).await.unwrap();
        store.delete("/b", None).await.unwrap();
        store.create("/c", text("1")).await.unwrap();
        assert_eq!(store.compact().await.unwrap(), 3);
    }
    let store = Store::open(&path, options(2, 16)).unwrap();
    assert_eq!(store.revision(), 5);
    assert_eq!(store.compacted_revision(), 3);
    let a = store.get("/a").unwrap().unwrap();
    assert_eq!(
        (&a.value[..], a.create_revision, a.mod_revision),
        (&b"2"[..], 1, 3)
    );
    assert!(store.get("/b").unwrap().is_none());
    let next = store.create("/d", text("1")).await.unwrap();
    assert_eq!(next.mod_revision, 6, "the counter continues where it was");
}

#[tokio::test]
async fn watch_from_zero_replays_history_then_live_events() {
    let (_dir, store) = open_temp(StoreOptions::default());
    let a = store.create("/a", text("1")).await.unwrap();
    store.update("/a", a.mod_revision, text("2")).await.unwrap();
    let mut watch = store.watch("/", 0).unwrap();
    store.delete("/a", None).await.unwrap();
    store.create("/b", text("live")).await.unwrap();

    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next_event(&mut watch).await.unwrap());
    }
    let summaries: Vec<_> = seen.iter().map(summary).collect();
    assert_eq!(
        summaries,
        [
            (EventKind::Put, 1, "/a".into(), "1".into()),
            (EventKind::Put, 2, "/a".into(), "2".into()),
            (EventKind::Delete, 3, "/a".into(), "2".into()),
            (EventKind::Put, 4, "/b".into(), "live".into()),
        ]
    );
    assert!(seen[0].prev.is_none(), "a create has no previous value");
    assert_eq!(seen[1].prev.as_ref().unwrap().mod_revision, 1);
    assert_eq!(seen[2].kv.mod_revision, 2, "a delete carries the last put");
}

#[tokio::test]
async fn watch_resumed_after_revision_n_sees_exactly_the_later_events() {
    let (_dir, store) = open_temp(StoreOptions::default());
    for i in 0..10 {
        store.create(&format!("/k{i}"), text("v")).await.unwrap();
    }
    let mut watch = store.watch("", 6).unwrap();
    store.create("/k10", text("v")).await.unwrap();
    let mut revisions = Vec::new();
    for _ in 0..5 {
        revisions.push(next_event(&mut watch).await.unwrap().revision);
    }
    assert_eq!(revisions, [7, 8, 9, 10, 11]);
    let nothing_more = tokio::time::timeout(Duration::from_millis(100), watch.next()).await;
    assert!(nothing_more.is_err(), "no event beyond the writes made");
}

#[tokio::test]
async fn a_watch_after_a_future_revision_waits_for_it() {
    let (_dir, store) = open_temp(StoreOptions::default());
    let mut far = store.watch("/", u64::MAX).unwrap();
    let mut next = store.watch("/", 1).unwrap();
    store.create("/a", text("1")).await.unwrap();
    store.create("/b", text("1")).await.unwrap();
    assert_eq!(next_event(&mut next).await.unwrap().revision, 2);
    let nothing = tokio::time::timeout(Duration::from_millis(100), far.next()).await;
    assert!(nothing.is_err(), "no event comes after u64::MAX");
}

#[tokio::test]
async fn watch_only_delivers_keys_under_its_prefix() {
    let (_dir, store) = open_temp(StoreOptions::default());
    store.create("/pods/a", text("1")).await.unwrap();
    store.create("/nodes/a", text("1")).await.unwrap();
    let mut watch = store.watch("/pods/", 0).unwrap();
    store.create("/nodes/b", text("1")).await.unwrap();
    store.create("/pods/b", text("1")).await.unwrap();
    let first = next_event(&mut watch).await.unwrap();
    let second = next_event(&mut watch).await.unwrap();
    assert_eq!((first.kv.key.as_str(), first.revision), ("/pods/a", 1));
    assert_eq!((second.kv.key.as_str(), second.revision), ("/pods/b", 4));
}

#[tokio::test]
async fn live_events_and_history_join_without_gaps_under_concurrent_writes() {
    let (_dir, store) = open_temp(options(100_000, 10_000));
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                store.create(&format!("/w/{i}"), text("v")).await.unwrap();
            }
        })
    };
    // Start watches at various moments while the writer runs.
    let mut watches = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        watches.push(store.watch("/w/", 0).unwrap());
    }
    writer.await.unwrap();
    for mut watch in watches {
        for expected in 1..=300 {
            assert_eq!(next_event(&mut watch).await.unwrap().revision, expected);
        }
    }
}

#[tokio::test]
async fn watch_after_compaction_fails_with_compacted() {
    let (_dir, store) = open_temp(options(3, 16));
    let a = store.create("/a", text("0")).await.unwrap();
    let mut rev = a.mod_revision;
    for i in 1..10 {
        rev = store
            .update("/a", rev, text(&i.to_string()))
            .await
            .unwrap()
            .mod_revision;
    }
    store.create("/b", text("b")).await.unwrap();
    store.delete("/b", None).await.unwrap();
    assert_eq!(store.compact().await.unwrap(), 9);
    assert_eq!(store.compacted_revision(), 9);

    let err = store
        .watch("/", 8)
        .err()
        .expect("resume before the horizon");
    assert!(
        matches!(err, StoreError::Compacted { compacted: 9 }),
        "{err:?}"
    );

    // Resuming at the horizon still gets full events, previous values included.
    let mut watch = store.watch("/", 9).unwrap();
    let update = next_event(&mut watch).await.unwrap();
    assert_eq!((update.revision, &update.kv.value[..]), (10, &b"9"[..]));
    assert_eq!(&update.prev.unwrap().value[..], b"8");
    let create = next_event(&mut watch).await.unwrap();
    assert_eq!((create.kind, create.revision), (EventKind::Put, 11));
    let delete = next_event(&mut watch).await.unwrap();
    assert_eq!((delete.kind, delete.revision), (EventKind::Delete, 12));
    assert_eq!(&delete.kv.value[..], b"b");
    assert_eq!(&store.get("/a").unwrap().unwrap().value[..], b"9");
}

#[tokio::test]
async fn the_writer_compacts_on_its_own_and_keeps_every_latest_value() {
    let (_dir, store) = open_temp(options(10, 1_000));
    let mut revisions = HashMap::new();
    for i in 0..5 {
        let key = format!("/k{i}");
        revisions.insert(
            key.clone(),
            store.create(&key, text("0")).await.unwrap().mod_revision,
        );
    }
    for round in 1..=20 {
        for i in 0..5 {
            let key = format!("/k{i}");
            let rev = revisions[&key];
            let kv = store
                .update(&key, rev, text(&round.to_string()))
                .await
                .unwrap();
            revisions.insert(key, kv.mod_revision);
        }
    }
    store.create("/gone", text("x")).await.unwrap();
    store.delete("/gone", None).await.unwrap();
    assert!(store.stats().compactions >= 1);
    assert!(
        store.compacted_revision() >= 16,
        "{}",
        store.compacted_revision()
    );
    for i in 0..5 {
        let kv = store.get(&format!("/k{i}")).unwrap().unwrap();
        assert_eq!(&kv.value[..], b"20");
    }
    let err = store.watch("", 0).err().expect("history was compacted");
    assert!(matches!(err, StoreError::Compacted { .. }), "{err:?}");
    let horizon = store.compacted_revision();
    let log_len = {
        let txn = store.shared().db.begin_read().unwrap();
        let log = txn.open_table(LOG).unwrap();
        redb::ReadableTableMetadata::len(&log).unwrap()
    };
    // What is left: one latest entry per live key, plus at most the revisions above the horizon
    // and the entries those replaced.
    assert!(
        log_len <= 5 + 2 * (store.revision() - horizon),
        "log kept {log_len} entries"
    );
}

#[tokio::test]
async fn a_slow_watcher_is_dropped_while_writers_proceed() {
    let (_dir, store) = open_temp(options(1_000, 4));
    let mut slow = store.watch("/", 0).unwrap();
    let mut fast = store.watch("/", 0).unwrap();
    let fast_reader = tokio::spawn(async move {
        let mut revisions = Vec::new();
        while revisions.len() < 20 {
            revisions.push(next_event(&mut fast).await.unwrap().revision);
        }
        revisions
    });
    for i in 0..20 {
        tokio::time::timeout(
            Duration::from_secs(10),
            store.create(&format!("/k{i}"), text("v")),
        )
        .await
        .expect("a slow watcher must not block writes")
        .unwrap();
        // Let the fast reader keep up, as a healthy watcher does.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(fast_reader.await.unwrap(), (1..=20).collect::<Vec<_>>());
    // The slow one gets what its buffer held, in order, then its stream ends.
    let mut delivered = Vec::new();
    while let Some(event) = next_event(&mut slow).await {
        delivered.push(event.revision);
    }
    assert_eq!(delivered, [1, 2, 3, 4]);
    assert_eq!(store.shared().broadcaster.subscribers(), 0);
}

#[tokio::test]
async fn dropping_a_watch_unsubscribes_it() {
    let (_dir, store) = open_temp(StoreOptions::default());
    let watch = store.watch("/", 0).unwrap();
    assert_eq!(store.shared().broadcaster.subscribers(), 1);
    drop(watch);
    assert_eq!(store.shared().broadcaster.subscribers(), 0);
}

#[tokio::test]
async fn watches_end_when_the_store_is_dropped() {
    let (_dir, store) = open_temp(StoreOptions::default());
    let mut watch = store.watch("/", 0).unwrap();
    drop(store);
    assert!(next_event(&mut watch).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_share_commits_and_get_distinct_revisions() {
    let (_dir, store) = open_temp(StoreOptions::default());
    let mut created = Vec::new();
    for i in 0..100 {
        let key = format!("/group/{i}");
        created.push((
            key.clone(),
            store.create(&key, text("0")).await.unwrap().mod_revision,
        ));
    }
    let commits_before = store.stats().commits;
    // Hold the writer inside a transaction (value closures run on it) so the 100 updates
    // below are all queued by the time it looks again, however fast this disk syncs.
    let blocker = {
        let store = store.clone();
        tokio::spawn(async move {
            let slow = |_| {
                std::thread::sleep(Duration::from_millis(200));
                b"slow".to_vec()
            };
            store.create("/blocker", slow).await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for (key, rev) in created {
        let store = store.clone();
        tasks.spawn(async move { store.update(&key, rev, text("1")).await });
    }
    let mut revisions = HashSet::new();
    while let Some(result) = tasks.join_next().await {
        revisions.insert(result.unwrap().unwrap().mod_revision);
    }
    blocker.await.unwrap().unwrap();
    let commits = store.stats().commits - commits_before;
    assert_eq!(revisions.len(), 100, "every update got its own revision");
    assert_eq!(revisions.iter().max(), Some(&201));
    assert!(commits <= 5, "101 concurrent writes took {commits} commits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_arriving_while_a_group_syncs_all_share_the_next_group() {
    let (dir, store) = open_temp(StoreOptions::default());
    let path = dir.path().join("store.redb");
    store.create("/warm", text("0")).await.unwrap();
    let commits_before = store.stats().commits;
    // The slow sync is long beside the 240 ms the later writes take to arrive, so a loaded
    // machine that runs the spawned tasks late still queues them all while it lasts.
    let log = wal::path_for(&path);
    wal::failing::slow_next_append(&log, Duration::from_secs(3));
    let syncing = {
        let store = store.clone();
        tokio::spawn(async move { store.create("/syncing", text("1")).await })
    };
    // The later writes must not join the slow group: wait until its append has begun.
    while wal::failing::slow_append_pending(&log) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // They arrive one by one while the first group is in its (slow) sync: the first of them
    // finds the writer idle, the others find it waiting on that sync.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.spawn(async move { store.create(&format!("/later/{i}"), text("2")).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(!syncing.is_finished(), "the first group is still syncing");
    let first = syncing.await.unwrap().unwrap().mod_revision;
    while let Some(result) = tasks.join_next().await {
        assert!(result.unwrap().unwrap().mod_revision > first);
    }
    let commits = store.stats().commits - commits_before;
    assert_eq!(
        commits, 2,
        "the slow group, then one group of the 8 later writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_whose_history_is_compacted_while_it_reads_ends_instead_of_skipping() {
    // 1,200 writes with 900 kept: below the automatic compaction point, so only the explicit
    // compact() below moves the horizon (to 300, past the first history chunk).
    let (_dir, store) = open_temp(options(900, 10_000));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..600 {
        let store = store.clone();
        tasks.spawn(async move { store.create(&format!("/h/{i:03}"), text("v")).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    // Creates supersede nothing, so make compaction drop history: update every key.
    for i in 0..600 {
        let key = format!("/h/{i:03}");
        let current = store.get(&key).unwrap().unwrap();
        let store = store.clone();
        tasks.spawn(async move { store.update(&key, current.mod_revision, text("w")).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    let mut watch = store.watch("/h/", 0).unwrap_or_else(|e| panic!("{e}"));
    let mut delivered = vec![next_event(&mut watch).await.unwrap().revision];
    assert_eq!(store.compact().await.unwrap(), 300);
    while let Some(event) = next_event(&mut watch).await {
        delivered.push(event.revision);
    }
    let expected: Vec<u64> = (1..=delivered.len() as u64).collect();
    assert_eq!(delivered, expected, "what was delivered has no gap");
    assert!(
        delivered.len() < 1_200,
        "the stream ended once history was gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_swaps_on_one_key_let_exactly_one_win() {
    let (_dir, store) = open_temp(StoreOptions::default());
    let rev = store.create("/one", text("0")).await.unwrap().mod_revision;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let store = store.clone();
        tasks.spawn(async move { store.update("/one", rev, text(&i.to_string())).await });
    }
    let (mut won, mut conflicted) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::Conflict { current }) => {
                assert_eq!(current.mod_revision, 2);
                conflicted += 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((won, conflicted), (1, 9));
    assert_eq!(store.revision(), 2);
}

#[tokio::test]
async fn a_batch_of_only_failed_checks_commits_nothing() {
    let (_dir, store) = open_temp(StoreOptions::default());
    store.create("/a", text("1")).await.unwrap();
    let commits = store.stats().commits;
    store.create("/a", text("again")).await.unwrap_err();
    store.update("/a", 99, text("stale")).await.unwrap_err();
    store.delete("/missing", None).await.unwrap_err();
    assert_eq!(store.stats().commits, commits);
}

#[test]
fn a_store_already_open_is_refused_with_its_path() {
    let (dir, _store) = open_temp(StoreOptions::default());
    let path = dir.path().join("store.redb");
    let err = Store::open(&path, StoreOptions::default())
        .err()
        .expect("a second open of the same file");
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_a_store_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.redb");
    let junk: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&path, junk).unwrap();
    let err = Store::open(&path, StoreOptions::default())
        .err()
        .expect("garbage must not open");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn a_store_damaged_on_disk_is_refused_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.redb");
    {
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        for i in 0..200 {
            store
                .create(&format!("/k{i}"), |_| vec![7; 1024])
                .await
                .unwrap();
        }
    }
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    // Damage the data pages, leaving the header intact.
    for byte in &mut bytes[len / 4..len / 2] {
        *byte ^= 0x5a;
    }
    std::fs::write(&path, bytes).unwrap();
    let err = Store::open(&path, StoreOptions::default())
        .err()
        .expect("damage must be detected");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

const CRASH_CHILD_ENV: &str = "BERTH_STORE_CRASH_CHILD_PATH";

/// Run by `acknowledged_writes_survive_the_process_being_killed` in a child process: writes
/// until killed, printing each write once it is acknowledged.
#[test]
#[ignore = "helper: only does something in the child process of the crash test"]
fn crash_child_writes_until_killed() {
    let Some(path) = std::env::var_os(CRASH_CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open(Path::new(&path), options(u64::MAX, 16)).unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for writer in 0..4 {
            let store = store.clone();
            tasks.spawn(async move {
                // Bounded so a child that is somehow never killed still ends.
                for n in 0..20_000 {
                    let key = format!("/crash/{writer}/{n}");
                    let as_bytes = |rev: u64| rev.to_string().into_bytes();
                    let created = store.create(&key, as_bytes).await.unwrap();
                    acknowledge(&key, created.mod_revision);
                    let updated = store
                        .update(&key, created.mod_revision, as_bytes)
                        .await
                        .unwrap();
                    acknowledge(&key, updated.mod_revision);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
}

fn acknowledge(key: &str, revision: u64) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "acked {key} {revision}");
    let _ = out.flush();
}

// Spawns and SIGKILLs a child process; cleans up with the temp dir.
#[tokio::test]
async fn acknowledged_writes_survive_the_process_being_killed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::tests::crash_child_writes_until_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (acked, exited_early) = tokio::task::spawn_blocking(move || {
        let mut acked: Vec<(String, u64)> = Vec::new();
        let mut lines = BufReader::new(stdout).lines();
        let mut killed = false;
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            let Some(rest) = line.strip_prefix("acked ") else {
                continue;
            };
            let Some((key, rev)) = rest.split_once(' ') else {
                continue;
            };
            acked.push((key.to_owned(), rev.parse().unwrap()));
            if acked.len() == 400 && !killed {
                child.kill().unwrap(); // SIGKILL, by pid
                killed = true;
            }
        }
        // Lines written before the kill are still in the pipe and were read above.
        let status = child.wait().unwrap();
        (acked, status.success())
    })
    .await
    .unwrap();
    assert!(
        !exited_early,
        "the child must have been killed, not finished"
    );
    assert!(
        acked.len() >= 400,
        "only {} writes acknowledged",
        acked.len()
    );

    let store = Store::open(&path, StoreOptions::default()).unwrap();
    let highest = acked.iter().map(|(_, rev)| *rev).max().unwrap();
    assert!(store.revision() >= highest);
    // Every acknowledged write is in the log at the revision it was acknowledged with.
    let mut watch = store.watch("/crash/", 0).unwrap();
    let mut logged = HashMap::new();
    while logged.len() < store.revision() as usize {
        let Some(event) = next_event(&mut watch).await else {
            break;
        };
        logged.insert(event.revision, event.kv.key.clone());
    }
    for (key, rev) in &acked {
        assert_eq!(
            logged.get(rev),
            Some(key),
            "acknowledged write {key}@{rev} is missing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_updates_reports_few_commits_for_concurrent_writers() {
    let (_dir, store) = open_temp(StoreOptions::default());
    let report = bench::bench_updates(&store, 10, 1_000, 2_048)
        .await
        .unwrap();
    assert_eq!(report.updates, 1_000);
    assert!(report.commits < 500, "{report:?}");
    assert!(report.write_bytes.is_some());
    eprintln!(
        "bench: {} updates in {:?}, {:.0} commits per 1000 updates, {:?} write_bytes per update",
        report.updates,
        report.elapsed,
        report.commits_per_1000_updates(),
        report.write_bytes_per_update(),
    );
}

/// The SD-card wear figure: run alone (write_bytes counts the whole process), with
/// `cargo test --lib store::tests::measure_write_bytes_per_update -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run alone so other tests' writes do not count"]
async fn measure_write_bytes_per_update() {
    for kind in [bench::BenchValue::Json, bench::BenchValue::Noise] {
        for writers in [1, 10] {
            let (_dir, store) = open_temp(StoreOptions::default());
            let report = bench::bench_updates_of(&store, writers, 1_000, 2_048, kind)
                .await
                .unwrap();
            let per_update = report.write_bytes_per_update().unwrap();
            eprintln!(
                "{kind:?} 2 KiB, {writers} writers: {per_update} write_bytes per update \
                 ({} with the checkpoint after), {:.0} commits per 1000 updates, {:?}",
                report.write_bytes_per_update_with_checkpoint().unwrap(),
                report.commits_per_1000_updates(),
                report.elapsed,
            );
            assert!(
                per_update > 0,
                "an update that writes nothing is not durable"
            );
        }
    }
}

#[test]
fn handles_and_futures_can_cross_threads() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let (_dir, store) = open_temp(StoreOptions::default());
    send_sync(&store);
    send(&store.create("/a", text("1")));
    send(&store.update("/a", 1, text("2")));
    send(&store.delete("/a", None));
    let mut watch = store.watch("/", 0).unwrap();
    send(&watch);
    send(&watch.next());
    assert_eq!(
        store.revision(),
        0,
        "futures that are never polled write nothing"
    );
}

/// A power cut at the file level: what is on disk right now, copied while the store is open
/// (redb's file only changes in checkpoints, so between writes it is a consistent image).
fn copy_files_of(store_path: &Path, into: &Path) -> std::path::PathBuf {
    let copy = into.join("store.redb");
    std::fs::copy(store_path, &copy).unwrap();
    std::fs::copy(wal::path_for(store_path), wal::path_for(&copy)).unwrap();
    copy
}

/// Writes `count` sequential writes over four keys (creates, updates, one delete each round),
/// one group commit each, and returns for every revision the write it made.
async fn sequential_writes(store: &Store, count: usize) -> Vec<(u64, String, Option<String>)> {
    let mut done = Vec::new();
    for n in 0..count {
        let key = format!("/seq/{}", n % 4);
        let value = format!("v{n}");
        let written = match store.get(&key).unwrap() {
            None => store.create(&key, text(&value)).await.unwrap().mod_revision,
            Some(kv) if n % 7 == 6 => {
                let (_, revision) = store.delete(&key, Some(kv.mod_revision)).await.unwrap();
                done.push((revision, key, None));
                continue;
            }
            Some(kv) => {
                store
                    .update(&key, kv.mod_revision, text(&value))
                    .await
                    .unwrap()
                    .mod_revision
            }
        };
        done.push((written, key, Some(value)));
    }
    done
}

/// The value of every key after the writes up to `revision`.
fn state_at(writes: &[(u64, String, Option<String>)], revision: u64) -> HashMap<String, String> {
    let mut state = HashMap::new();
    for (rev, key, value) in writes.iter().filter(|(rev, ..)| *rev <= revision) {
        let _ = rev;
        match value {
            Some(value) => state.insert(key.clone(), value.clone()),
            None => state.remove(key),
        };
    }
    state
}

fn stored_state(store: &Store) -> HashMap<String, String> {
    store
        .list("/seq/", None, 0)
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| (kv.key, String::from_utf8_lossy(&kv.value).into_owned()))
        .collect()
}

#[tokio::test]
async fn writes_only_in_the_write_ahead_log_are_replayed_on_open() {
    let (dir, store) = open_temp(StoreOptions::default());
    let writes = sequential_writes(&store, 40).await;
    let last = writes.last().unwrap().0;
    let crashed = tempfile::tempdir().unwrap();
    let copy = copy_files_of(&dir.path().join("store.redb"), crashed.path());

    let reopened = Store::open(&copy, StoreOptions::default()).unwrap();
    assert_eq!(reopened.revision(), last);
    assert_eq!(stored_state(&reopened), state_at(&writes, last));
    // The replayed history serves watches like any other.
    let mut watch = reopened.watch("/seq/", last - 3).unwrap();
    for expected in last - 2..=last {
        assert_eq!(next_event(&mut watch).await.unwrap().revision, expected);
    }
    let next = reopened.create("/after", text("x")).await.unwrap();
    assert_eq!(next.mod_revision, last + 1);
}

#[tokio::test]
async fn a_power_cut_anywhere_in_the_log_leaves_exactly_a_prefix_of_the_writes() {
    let (dir, store) = open_temp(StoreOptions::default());
    let writes = sequential_writes(&store, 30).await;
    let crashed = tempfile::tempdir().unwrap();
    let copy = copy_files_of(&dir.path().join("store.redb"), crashed.path());
    let wal_copy = wal::path_for(&copy);
    let full = std::fs::read(&wal_copy).unwrap();
    let used = full.iter().rposition(|b| *b != 0).unwrap() + 1;
    let redb_image = std::fs::read(&copy).unwrap();

    let mut seen = HashSet::new();
    // Every byte would take minutes of opens; a stride that is prime to the record sizes
    // still lands inside headers, bodies and on boundaries.
    for cut in (0..=used).step_by(37).chain([used]) {
        let mut torn = full[..cut].to_vec();
        torn.resize(full.len(), 0);
        std::fs::write(&wal_copy, &torn).unwrap();
        std::fs::write(&copy, &redb_image).unwrap();
        let reopened = Store::open(&copy, StoreOptions::default()).unwrap();
        let revision = reopened.revision();
        assert_eq!(
            stored_state(&reopened),
            state_at(&writes, revision),
            "cut at byte {cut}: not the state after revision {revision}"
        );
        seen.insert(revision);
        drop(reopened);
    }
    assert!(seen.contains(&0), "a cut at the start keeps nothing");
    assert!(
        seen.contains(&writes.last().unwrap().0),
        "the whole log keeps every write"
    );
    assert!(
        seen.len() > 10,
        "cuts landed in only {} records",
        seen.len()
    );
}

#[tokio::test]
async fn a_checkpoint_makes_redb_alone_hold_every_write_and_the_log_starts_over() {
    let (dir, store) = open_temp(StoreOptions::default());
    let path = dir.path().join("store.redb");
    let before = sequential_writes(&store, 10).await;
    store.checkpoint().await.unwrap();
    let checkpointed = store.revision();

    // redb alone, without the log: everything up to the checkpoint.
    let crashed = tempfile::tempdir().unwrap();
    let copy = crashed.path().join("store.redb");
    std::fs::copy(&path, &copy).unwrap();
    let alone = Store::open(&copy, StoreOptions::default()).unwrap();
    assert_eq!(alone.revision(), checkpointed);
    assert_eq!(stored_state(&alone), state_at(&before, checkpointed));
    drop(alone);

    // Later writes go to the start of the log again, over the stale records, and only they
    // are replayed.
    let after = sequential_writes(&store, 3).await;
    let copy = copy_files_of(&path, crashed.path());
    let reopened = Store::open(&copy, StoreOptions::default()).unwrap();
    let all: Vec<_> = before.into_iter().chain(after).collect();
    assert_eq!(reopened.revision(), all.last().unwrap().0);
    assert_eq!(stored_state(&reopened), state_at(&all, reopened.revision()));
}

#[tokio::test]
async fn a_clean_close_leaves_nothing_to_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let writes = {
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        sequential_writes(&store, 12).await
    };
    std::fs::remove_file(wal::path_for(&path)).unwrap();
    let store = Store::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(store.revision(), writes.last().unwrap().0);
    assert_eq!(stored_state(&store), state_at(&writes, store.revision()));
}

#[tokio::test]
async fn a_log_that_skips_revisions_is_refused_instead_of_losing_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    drop(Store::open(&path, StoreOptions::default()).unwrap());
    let (mut log, _) = wal::Wal::open(&wal::path_for(&path), wal::CAPACITY, 0).unwrap();
    let mut record = Vec::new();
    let entry = codec::LogEntry::put(5, 0, "/gap", b"x").encode();
    wal::push_entry(&mut record, 5, &entry);
    log.append(&record).unwrap();
    drop(log);
    let err = Store::open(&path, StoreOptions::default())
        .err()
        .expect("a gap must be refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn a_truncated_or_foreign_store_file_is_refused_saying_how_to_restore() {
    let damages: [(&str, fn(&Path)); 2] = [
        ("truncated", |path| {
            let len = std::fs::metadata(path).unwrap().len();
            std::fs::File::options()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(len / 2))
                .unwrap();
        }),
        ("not a store", |path| {
            std::fs::write(path, b"not a store\n".repeat(1000)).unwrap()
        }),
    ];
    for (what, damage) in damages {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        {
            let store = Store::open(&path, StoreOptions::default()).unwrap();
            sequential_writes(&store, 12).await;
        }
        damage(&path);
        let err = Store::open(&path, StoreOptions::default())
            .err()
            .unwrap_or_else(|| panic!("a {what} file must be refused"));
        let message = err.to_string();
        assert!(
            matches!(err, StoreError::Corrupt { .. }),
            "{what}: {message}"
        );
        assert!(
            message.contains("restore it from a backup")
                && message.contains(&format!("move {}", path.display())),
            "{what}: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_log_append_fails_is_never_seen_and_the_store_carries_on() {
    let (dir, store) = open_temp(StoreOptions::default());
    let path = dir.path().join("store.redb");
    store.create("/a", text("one")).await.unwrap();
    let mut watch = store.watch("/", 1).unwrap();

    wal::failing::fail_next_append(&wal::path_for(&path));
    let failed = store.update("/a", 1, text("lost")).await;
    assert!(matches!(failed, Err(StoreError::Wal { .. })), "{failed:?}");
    // Neither readers nor the revision saw the failed group: redb had it before its sync.
    let got = store.get("/a").unwrap().unwrap();
    assert_eq!((&got.value[..], got.mod_revision), (&b"one"[..], 1));
    assert_eq!(store.revision(), 1);

    // The next write takes the revision the failed one would have had, on the old value.
    let kv = store.update("/a", 1, text("two")).await.unwrap();
    assert_eq!(kv.mod_revision, 2);
    let created = store.create("/b", text("three")).await.unwrap();
    assert_eq!(created.mod_revision, 3);
    let event = next_event(&mut watch).await.unwrap();
    assert_eq!(
        summary(&event),
        (EventKind::Put, 2, "/a".into(), "two".into())
    );
    assert_eq!(&event.prev.unwrap().value[..], b"one");
    drop(watch);
    drop(store);

    let store = Store::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(store.revision(), 3);
    assert_eq!(&store.get("/a").unwrap().unwrap().value[..], b"two");
    assert_eq!(&store.get("/b").unwrap().unwrap().value[..], b"three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_all_land_in_order_with_pipelined_groups() {
    let (dir, store) = open_temp(StoreOptions::default());
    let path = dir.path().join("store.redb");
    let mut watch = store.watch("/", 0).unwrap();
    let mut tasks = Vec::new();
    for writer in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("/w/{writer}");
            let mut kv = store.create(&key, text("0")).await.unwrap();
            for round in 1..=10 {
                let value = round.to_string();
                kv = store
                    .update(&key, kv.mod_revision, text(&value))
                    .await
                    .unwrap();
                // Acknowledged means readable at once, at that revision or later.
                let read = store.get(&key).unwrap().unwrap();
                assert!(read.mod_revision >= kv.mod_revision);
                assert_eq!(read.value, kv.value);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(store.revision(), 220);
    let mut last = 0;
    for _ in 0..220 {
        let event = next_event(&mut watch).await.unwrap();
        assert_eq!(
            event.revision,
            last + 1,
            "watch events come in revision order"
        );
        last = event.revision;
    }
    drop(watch);
    drop(store);
    let store = Store::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(store.revision(), 220);
    for writer in 0..20 {
        let kv = store.get(&format!("/w/{writer}")).unwrap().unwrap();
        assert_eq!(&kv.value[..], b"10");
    }
}
