//! The store's tests: exactly once across reopen and resend, group commit under concurrent
//! senders, segments, search, retention, a full disk, bounded SQLite memory, legacy stores.

use super::*;
use crate::filter::ip_value;

pub(super) fn line(i: u64, src: &str) -> String {
    format!(
        "date=2021-03-04 time=10:11:{:02} devname=\"FGT-LAB\" devid=\"FGVM01TM00000001\" eventtime={} tz=\"+0000\" logid=\"0316013056\" type=\"utm\" subtype=\"webfilter\" eventtype=\"ftgd_blk\" level=\"warning\" vd=\"root\" policyid=1 sessionid={i} srcip={src} srcport=5000 dstip=89.1.1.1 dstport=80 hostname=\"www.example.com\" action=\"passthrough\" url=\"/p{i}\" cat=26 catdesc=\"Malicious Websites\"",
        i % 60,
        1_614_852_000_000_000_000u64 + i * 1_000_000_000
    )
}

fn rows(lines: &[String]) -> Vec<Row> {
    lines.iter().map(|l| parse_row(l, false, 0, 0).0).collect()
}

/// A full disk (simulated with SQLite's `max_page_count`, which fails a commit with
/// SQLITE_FULL exactly as a full file system does) is an error naming the database file;
/// nothing of the failed batch is acknowledged, and the store takes it once space returns.
#[test]
fn a_full_disk_names_the_file_and_the_store_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let lines: Vec<String> = (1..=3000).map(|i| line(i, "10.115.2.52")).collect();
    assert_eq!(
        s.commit("FGT1", 1, rows(&lines[..10]), 0, |_| vec![])
            .unwrap(),
        10
    );
    let pages: i64 = s
        .on_writer(|w| {
            let n: i64 = w.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            w.conn
                .query_row(&format!("PRAGMA max_page_count={n}"), [], |r| {
                    r.get::<_, i64>(0)
                })?;
            Ok::<_, rusqlite::Error>(n)
        })
        .unwrap()
        .unwrap();
    assert!(pages > 0);
    let e = s
        .commit("FGT1", 11, rows(&lines[10..]), 0, |_| vec![])
        .unwrap_err()
        .to_string();
    let file = dir.path().display().to_string();
    assert!(e.contains(&file), "the error names the store file: {e}");
    assert!(e.contains("full"), "{e}");
    assert_eq!(s.last_seq("FGT1"), 10, "nothing of the failed batch counts");
    // Space returns.
    s.on_writer(|w| {
        w.conn
            .query_row("PRAGMA max_page_count=1073741823", [], |r| {
                r.get::<_, i64>(0)
            })
    })
    .unwrap()
    .unwrap();
    assert_eq!(
        s.commit("FGT1", 11, rows(&lines[10..]), 0, |_| vec![])
            .unwrap(),
        3000
    );
    assert_eq!(s.seq_stats("FGT1").unwrap(), (3000, 3000, 1, 3000));
}

#[test]
fn exactly_once_across_reopen_and_resend() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (1..=10).map(|i| line(i, "10.115.2.52")).collect();
    {
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.commit("FGT1", 1, rows(&lines[..6]), 0, |_| vec![])
                .unwrap(),
            6
        );
        // A resend overlapping what is stored keeps only the new lines.
        assert_eq!(
            s.commit("FGT1", 4, rows(&lines[3..8]), 0, |_| vec![])
                .unwrap(),
            8
        );
        assert_eq!(s.counters.duplicates.load(Ordering::Relaxed), 3);
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.last_seq("FGT1"), 8);
    // Entirely duplicate batch.
    assert_eq!(
        s.commit("FGT1", 1, rows(&lines[..8]), 0, |_| vec![])
            .unwrap(),
        8
    );
    assert_eq!(
        s.commit("FGT1", 9, rows(&lines[8..]), 0, |_| vec![(
            "k".into(),
            Some("1".into())
        )])
        .unwrap(),
        10
    );
    assert_eq!(s.seq_stats("FGT1").unwrap(), (10, 10, 1, 10));
    assert_eq!(s.kv_get("k").unwrap().as_deref(), Some("1"));
    // Unsequenced (syslog) rows are all stored.
    s.commit("syslog", 0, rows(&lines[..2]), 0, |_| vec![])
        .unwrap();
    s.commit("syslog", 0, rows(&lines[..2]), 0, |_| vec![])
        .unwrap();
    assert_eq!(s.total().unwrap(), 14);
}

#[test]
fn search_count_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let mut lines: Vec<String> = (1..=20).map(|i| line(i, "10.115.2.52")).collect();
    lines.extend((21..=30).map(|i| line(i, "10.115.2.60")));
    s.commit("FGT1", 1, rows(&lines[..20]), 100, |_| vec![])
        .unwrap();
    s.commit("FGT1", 21, rows(&lines[20..]), 200, |_| vec![])
        .unwrap();
    let spec = SearchSpec {
        ltypes: vec![2],
        filter: crate::filter::parse("srcip==10.115.2.60").unwrap(),
        desc: true,
        ..Default::default()
    };
    assert_eq!(s.count(&spec).unwrap(), 10);
    let page = s.search(&spec, 3, 0).unwrap();
    assert_eq!(
        page.iter().map(|f| f.seq.unwrap()).collect::<Vec<_>>(),
        vec![30, 29, 28]
    );
    let page = s.search(&spec, 3, 9).unwrap();
    assert_eq!(page.len(), 1);
    let spec2 = SearchSpec {
        ltypes: vec![1],
        ..Default::default()
    };
    assert_eq!(s.count(&spec2).unwrap(), 0);
    let spec3 = SearchSpec {
        devices: vec!["FGT-LAB".into()],
        start: Some(1_614_852_010),
        end: Some(1_614_852_019),
        ..Default::default()
    };
    assert_eq!(s.count(&spec3).unwrap(), 10);
    assert_eq!(
        s.last_fortigate_for("10.115.2.60").unwrap().as_deref(),
        Some("FGT1")
    );
    // Age: logs that arrived more than 50 s before 210 go.
    let deleted = s.retain(210, Some(50), None).unwrap();
    assert_eq!(deleted, 20);
    assert_eq!(s.total().unwrap(), 10);
    assert_eq!(s.retain(210, Some(50), None).unwrap(), 0);
    let deleted = s.retain(210, None, Some(1)).unwrap();
    assert_eq!(deleted, 10);
    // The rescan scan visits only the asked types.
    s.commit("FGT1", 31, rows(&[line(31, "10.115.2.9")]), 0, |_| vec![])
        .unwrap();
    let mut seen = 0;
    s.scan(&[2], 0, i64::MAX, |_, r| {
        assert_eq!(r.srcip.as_deref(), Some("10.115.2.9"));
        seen += 1;
        true
    })
    .unwrap();
    assert_eq!(seen, 1);
}
#[test]
fn sqlite_memory_is_bounded() {
    // Issue 15: 256 MiB page caches and 2 GiB maps let the FortiAnalyzer's RSS grow with
    // the store. Every connection now has a bounded cache and the writer no map.
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    for r in &s.readers {
        let c = r.lock().unwrap();
        let cache: i64 = c.query_row("PRAGMA cache_size", [], |r| r.get(0)).unwrap();
        assert_eq!(cache, -i64::from(DEFAULT_READER_CACHE_KIB));
        let mmap: i64 = c.query_row("PRAGMA mmap_size", [], |r| r.get(0)).unwrap();
        assert_eq!(mmap as u64, DEFAULT_READER_MMAP_BYTES);
    }
    let w = open_conn(&dir.path().join("x.db"), 0, 0).unwrap();
    let cache: i64 = w.query_row("PRAGMA cache_size", [], |r| r.get(0)).unwrap();
    assert_eq!(cache, -1024, "a floor of 1 MiB");
    let mmap: i64 = w.query_row("PRAGMA mmap_size", [], |r| r.get(0)).unwrap();
    assert_eq!(mmap, 0);
}

fn small(dir: &Path, segment_rows: u64) -> Store {
    Store::open_with(
        dir,
        StoreOptions {
            segment_rows,
            ..Default::default()
        },
    )
    .unwrap()
}

fn seqs_of(page: &[Found]) -> Vec<i64> {
    page.iter().map(|f| f.seq.unwrap()).collect()
}

#[test]
fn segments_fan_out_in_order_with_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (1..=23).map(|i| line(i, "10.115.2.52")).collect();
    {
        let s = small(dir.path(), 4);
        s.commit("FGT1", 1, rows(&lines[..10]), 100, |_| vec![])
            .unwrap();
        s.commit("FGT1", 11, rows(&lines[10..13]), 100, |_| vec![])
            .unwrap();
        assert_eq!(s.segment_count(), 4);
    }
    // Reopened: the last segment keeps filling, ids continue.
    let s = small(dir.path(), 4);
    assert_eq!(s.last_seq("FGT1"), 13);
    s.commit("FGT1", 14, rows(&lines[13..]), 300, |_| vec![])
        .unwrap();
    assert_eq!(s.segment_count(), 6);
    assert_eq!(s.total().unwrap(), 23);
    let all = SearchSpec {
        desc: true,
        ..Default::default()
    };
    for off in 0..25 {
        let page = s.search(&all, 5, off).unwrap();
        let want: Vec<i64> = (1..=23i64).rev().skip(off).take(5).collect();
        assert_eq!(seqs_of(&page), want, "desc offset {off}");
        let ids: Vec<i64> = page.iter().map(|f| f.id).collect();
        assert!(ids.windows(2).all(|w| w[0] > w[1]));
    }
    let asc = SearchSpec::default();
    assert_eq!(seqs_of(&s.search(&asc, 3, 11).unwrap()), vec![12, 13, 14]);
    assert_eq!(s.count(&all).unwrap(), 23);
    // An indexed filter across segments.
    let spec = SearchSpec {
        filter: crate::filter::parse("srcip==10.115.2.52 and url=\"/p7\"").unwrap(),
        desc: true,
        ..Default::default()
    };
    assert_eq!(seqs_of(&s.search(&spec, 10, 0).unwrap()), vec![7]);
    assert_eq!(s.count(&spec).unwrap(), 1);
    // Sealed segments (the two closed since reopening) and the hot one answer alike, also
    // for a field only the raw line has.
    // (Sealing runs on the writer after the acknowledgements: wait for it.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while s.counters.segments_sealed.load(Ordering::Relaxed) < 2 {
        assert!(std::time::Instant::now() < deadline, "segments not sealed");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let sealed: Vec<bool> = s.segments(false).iter().map(|g| g.sealed).collect();
    assert_eq!(sealed, vec![true, true, true, true, true, false]);
    for k in [3u64, 15, 22] {
        let spec = SearchSpec {
            filter: crate::filter::parse(&format!("sessionid={k}")).unwrap(),
            desc: true,
            ..Default::default()
        };
        assert_eq!(seqs_of(&s.search(&spec, 10, 0).unwrap()), vec![k as i64]);
        let page = s.search(&spec, 10, 0).unwrap();
        assert_eq!(page[0].raw, lines[k as usize - 1]);
    }
    let mut seen = Vec::new();
    s.scan(&[2], 0, i64::MAX, |f, _| {
        seen.push(f.seq.unwrap());
        true
    })
    .unwrap();
    assert_eq!(seen, (1..=23).collect::<Vec<_>>());
    assert_eq!(s.seq_stats("FGT1").unwrap(), (23, 23, 1, 23));
    // Age retention drops whole old segments and trims the one that straddles the cut.
    let deleted = s.retain(350, Some(100), None).unwrap();
    assert_eq!(deleted, 13);
    assert!(s.counters.segments_dropped.load(Ordering::Relaxed) >= 3);
    assert_eq!(s.total().unwrap(), 10);
    assert_eq!(seqs_of(&s.search(&asc, 2, 0).unwrap()), vec![14, 15]);
    // Size retention empties everything but keeps a segment to write to.
    assert_eq!(s.retain(350, None, Some(1)).unwrap(), 10);
    assert!(s.segment_count() >= 1);
    s.commit("FGT1", 24, rows(&[line(24, "10.115.2.9")]), 400, |_| vec![])
        .unwrap();
    assert_eq!(s.total().unwrap(), 1);
    assert_eq!(s.last_seq("FGT1"), 24);
}

#[test]
fn concurrent_senders_group_commit_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(small(dir.path(), 300));
    let lines: Vec<String> = (1..=40).map(|i| line(i, "10.115.2.52")).collect();
    std::thread::scope(|sc| {
        for k in 0..4 {
            let s = s.clone();
            let lines = &lines;
            sc.spawn(move || {
                let dev = format!("FGT{k}");
                let mut seq = 1;
                for b in 0..25 {
                    // Every fifth batch is resent (a lost ack): its lines are dropped.
                    let first = if b % 5 == 4 { seq - 40 } else { seq };
                    let last = s
                        .commit(&dev, first, rows(lines), 1, |rows| {
                            vec![(format!("k{k}"), Some(rows.len().to_string()))]
                        })
                        .unwrap();
                    seq = last + 1;
                }
                s.kv_put(&[(format!("done{k}"), Some("1".into()))]).unwrap();
            });
        }
    });
    for k in 0..4 {
        let dev = format!("FGT{k}");
        assert_eq!(s.last_seq(&dev), 800);
        assert_eq!(s.seq_stats(&dev).unwrap(), (800, 800, 1, 800));
        assert_eq!(s.kv_get(&format!("k{k}")).unwrap().as_deref(), Some("40"));
        assert_eq!(s.kv_get(&format!("done{k}")).unwrap().as_deref(), Some("1"));
    }
    assert_eq!(s.counters.duplicates.load(Ordering::Relaxed), 4 * 5 * 40);
    assert_eq!(s.total().unwrap(), 3200);
    assert!(s.counters.commits.load(Ordering::Relaxed) <= 100);
    drop(s);
    let s = small(dir.path(), 300);
    assert_eq!(s.last_seq("FGT3"), 800);
    assert_eq!(s.total().unwrap(), 3200);
}

#[test]
fn a_store_from_before_segments_is_read_and_extended() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = Connection::open(dir.path().join("logs.db")).unwrap();
        let legacy = segment_sql(Seg {
            n: 9,
            sealed: false,
        })
        .replace("logs_000009(", "logs(")
        .replace(
            "  user TEXT COLLATE NOCASE\n",
            "  user TEXT COLLATE NOCASE,\n  raw TEXT NOT NULL\n",
        );
        c.execute_batch(&legacy).unwrap();
        c.execute_batch("CREATE INDEX logs_srcip ON logs(srcip)")
            .unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c.execute(
            "INSERT INTO logs(dev,seq,rtime,ltype,etime,raw,srcip) VALUES('FGT1',1,5,2,5,?1,?2)",
            params![
                line(1, "10.115.2.52"),
                ip_value("10.115.2.52".parse().unwrap())
            ],
        )
        .unwrap();
        c.execute("INSERT INTO seqs(dev,last) VALUES('FGT1',1)", [])
            .unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.last_seq("FGT1"), 1);
    s.commit("FGT1", 2, rows(&[line(2, "10.115.2.52")]), 9, |_| vec![])
        .unwrap();
    assert_eq!(s.segment_count(), 2);
    let spec = SearchSpec {
        filter: crate::filter::parse("srcip==10.115.2.52").unwrap(),
        desc: true,
        ..Default::default()
    };
    assert_eq!(seqs_of(&s.search(&spec, 10, 0).unwrap()), vec![2, 1]);
    assert_eq!(
        s.last_fortigate_for("10.115.2.52").unwrap().as_deref(),
        Some("FGT1")
    );
}

#[test]
fn a_backup_taken_while_writing_opens_with_whole_commits() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(small(dir.path().join("live").as_path(), 50));
    let lines: Vec<String> = (1..=20).map(|i| line(i, "10.115.2.52")).collect();
    s.commit("FGT0", 1, rows(&lines), 1, |_| {
        vec![("k".into(), Some("a".into()))]
    })
    .unwrap();
    let writer = {
        let s = s.clone();
        let lines = lines.clone();
        std::thread::spawn(move || {
            let mut seq = 21;
            for _ in 0..20 {
                seq = s.commit("FGT0", seq, rows(&lines), 1, |_| vec![]).unwrap() + 1;
            }
        })
    };
    let snap = dir.path().join("snap");
    let bytes = s.backup_into(&snap).unwrap();
    assert!(bytes > 0);
    writer.join().unwrap();
    drop(s);
    let copy = small(&snap, 50);
    let (total, last) = (copy.total().unwrap(), copy.last_seq("FGT0"));
    assert_eq!(total, last, "rows and the stored sequence agree");
    assert_eq!(total % 20, 0, "whole batches only");
    assert!(total >= 20);
    assert_eq!(copy.kv_get("k").unwrap().as_deref(), Some("a"));
}

/// Unacknowledged (syslog) lines are committed without an fsync of their own and the WAL
/// is synced within the window; an acknowledged batch is synced at its commit and covers
/// the unacknowledged lines before it.
#[test]
fn unacknowledged_lines_are_synced_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        StoreOptions {
            sync_window: std::time::Duration::from_millis(200),
            ..Default::default()
        },
    )
    .unwrap();
    let unsynced = |s: &Store| s.on_writer(|w| w.unsynced_since.is_some()).unwrap();
    let ls: Vec<String> = (0..10).map(|i| line(i, "10.0.0.1")).collect();
    let syslog = |s: &Store| {
        s.submit_with(
            Durability::Unacknowledged,
            "SYSLOG-1",
            0,
            rows(&ls),
            1,
            |_| Vec::new(),
        )
        .unwrap()
        .wait()
        .unwrap()
    };
    syslog(&store);
    assert!(unsynced(&store), "committed without an fsync");
    // Nothing else to do: the writer syncs the WAL when the window ends.
    let t = std::time::Instant::now();
    while unsynced(&store) {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "never synced"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // An acknowledged batch fsyncs at its commit, covering what came before.
    syslog(&store);
    assert!(unsynced(&store));
    store
        .commit("FGT1", 1, rows(&ls), 1, |_| Vec::new())
        .unwrap();
    assert!(!unsynced(&store));
    assert_eq!(store.total().unwrap(), 30);
    // With a zero window every commit is synced.
    drop(store);
    let store = Store::open_with(
        dir.path(),
        StoreOptions {
            sync_window: std::time::Duration::ZERO,
            ..Default::default()
        },
    )
    .unwrap();
    syslog(&store);
    assert!(!unsynced(&store));
    assert_eq!(store.total().unwrap(), 40);
}

/// Chained batches (the raw log indexer's): each commits only right after the one it
/// continues; one that does not continue the committed chain is refused whole and the others
/// of its group go on; the key holds the last committed position.
#[test]
fn a_chained_batch_commits_only_after_the_one_it_continues() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let lines: Vec<String> = (1..=30).map(|i| line(i, "10.115.2.52")).collect();
    let chain = |expect: Option<&str>, next: &str| {
        Some(Chain {
            key: "rawlog:D".into(),
            expect: expect.map(str::to_string),
            next: next.into(),
        })
    };
    let submit = |c, part: &[String]| {
        s.submit_chained(
            Durability::Unacknowledged,
            c,
            "D",
            0,
            rows(part),
            0,
            |_| vec![],
        )
        .unwrap()
    };
    // Queued together: the first two continue each other, the third repeats the second's
    // start (a batch sent again after a failure), the fourth continues the second.
    let a = submit(chain(None, "10"), &lines[..10]);
    let b = submit(chain(Some("10"), "20"), &lines[10..20]);
    let stale = submit(chain(Some("10"), "20"), &lines[10..20]);
    let c = submit(chain(Some("20"), "30"), &lines[20..]);
    assert!(a.wait().is_ok() && b.wait().is_ok() && c.wait().is_ok());
    assert_eq!(
        stale.wait().unwrap_err().to_string(),
        STALE_CHAIN,
        "a batch that does not continue the chain is refused"
    );
    assert_eq!(s.kv_get("rawlog:D").unwrap().as_deref(), Some("30"));
    assert_eq!(s.counters.inserted.load(Ordering::Relaxed), 30);
    let n: i64 = s
        .on_writer(|w| {
            w.conn
                .query_row("SELECT count(*) FROM logs_000001", [], |r| r.get(0))
        })
        .unwrap()
        .unwrap();
    assert_eq!(n, 30, "nothing of the refused batch was written");
}
