//! Shared by the benchmarks: FortiOS-format lines and a FortiAnalyzer over a temporary store.
#![allow(dead_code)]

use std::sync::Arc;

use fortilab_core::binary::Timing;
use fortilab_core::LabClock;
use fortilab_faz::faz::{Faz, Identity};
use fortilab_faz::ioc::{IocSettings, Tidb};
use fortilab_faz::store::{Store, StoreOptions};

/// Line `i` of a deterministic FortiGate stream: web-filter and traffic logs from 1,016
/// endpoints, one EICAR fetch every 100,000 lines.
pub fn line(i: u64) -> String {
    let src = format!("10.115.{}.{}", 2 + (i % 4), 1 + (i / 4) % 254);
    let t = 1_614_852_000u64 + i / 1000;
    let (hh, mm, ss) = ((t / 3600) % 24, (t / 60) % 60, t % 60);
    if i % 2 == 0 {
        let (host, url) = if i % 100_000 == 50_000 {
            (
                "www.eicar.org".to_string(),
                "/download/eicar.com".to_string(),
            )
        } else {
            (
                format!("site{}.example.com", i % 5000),
                format!("/page/{}", i % 977),
            )
        };
        format!(
            "date=2021-03-04 time={hh:02}:{mm:02}:{ss:02} devname=\"FGT-LAB\" devid=\"FGVM01TM00000001\" eventtime={t}000000000 tz=\"+0000\" logid=\"0317013312\" type=\"utm\" subtype=\"webfilter\" eventtype=\"ftgd_allow\" level=\"notice\" vd=\"root\" policyid=1 sessionid={i} srcip={src} srcport={} srcintf=\"port3\" srcintfrole=\"lan\" dstip=89.1.{}.{} dstport=443 dstintf=\"port1\" dstintfrole=\"wan\" proto=6 service=\"HTTPS\" hostname=\"{host}\" profile=\"monitor-all\" action=\"passthrough\" reqtype=\"direct\" url=\"{url}\" sentbyte=512 rcvdbyte=4096 direction=\"outgoing\" msg=\"URL belongs to an allowed category in policy\" method=\"domain\" cat=52 catdesc=\"Information Technology\"",
            1024 + i % 60000, i % 200, 1 + i % 250
        )
    } else {
        format!(
            "date=2021-03-04 time={hh:02}:{mm:02}:{ss:02} devname=\"FGT-LAB\" devid=\"FGVM01TM00000001\" eventtime={t}000000000 tz=\"+0000\" logid=\"0000000013\" type=\"traffic\" subtype=\"forward\" level=\"notice\" vd=\"root\" srcip={src} srcport={} srcintf=\"port3\" srcintfrole=\"lan\" dstip=89.1.{}.{} dstport=443 dstintf=\"port1\" dstintfrole=\"wan\" sessionid={i} proto=6 action=\"close\" policyid=1 policytype=\"policy\" service=\"HTTPS\" trandisp=\"snat\" transip=89.1.0.2 transport={} duration=5 sentbyte=736 rcvdbyte=3138 sentpkt=14 rcvdpkt=5 appcat=\"unscanned\" utmaction=\"allow\" countweb=1",
            1024 + i % 60000, i % 200, 1 + i % 250, 2000 + i % 60000
        )
    }
}

pub fn faz(dir: &std::path::Path, tidb: Tidb) -> Arc<Faz> {
    let d = StoreOptions::default();
    // FAZ_BENCH_WRITER_CACHE_KIB, _READER_CACHE_KIB, _READER_MMAP, _WRITER_MMAP: A/B the
    // store's memory bounds (issue 15: before, 262144 KiB caches and a 2 GiB map on all four).
    let opts = StoreOptions {
        segment_rows: env_n("FAZ_BENCH_SEGMENT", d.segment_rows),
        group_rows: env_n("FAZ_BENCH_GROUP", d.group_rows as u64) as usize,
        writer_cache_kib: env_n("FAZ_BENCH_WRITER_CACHE_KIB", d.writer_cache_kib.into()) as u32,
        reader_cache_kib: env_n("FAZ_BENCH_READER_CACHE_KIB", d.reader_cache_kib.into()) as u32,
        reader_mmap_bytes: env_n("FAZ_BENCH_READER_MMAP", d.reader_mmap_bytes),
        writer_mmap_bytes: env_n("FAZ_BENCH_WRITER_MMAP", d.writer_mmap_bytes),
        // FAZ_BENCH_SYNC_WINDOW_MS: how long syslog lines may wait for the WAL's fsync (0:
        // every commit fsyncs, as before issue 15's syslog work).
        sync_window: std::time::Duration::from_millis(env_n(
            "FAZ_BENCH_SYNC_WINDOW_MS",
            d.sync_window.as_millis() as u64,
        )),
    };
    let store = Store::open_with(&dir.join("store"), opts).expect("store");
    let id = Identity {
        hostname: "FAZ-LAB".into(),
        serial: "FAZ-VMTM00000001".into(),
        version: "6.4.5".into(),
        platform: "FortiAnalyzer-VM64".into(),
        admin_user: "admin".into(),
        admin_password: "pw".into(),
        api_key: "key".into(),
        lab_ip: "10.115.1.20".into(),
        session_timeout: 300,
        max_sessions: 10,
        retention_days: 0,
        max_size_mb: 0,
    };
    Faz::new(
        id,
        LabClock::real(),
        Timing::Fast,
        store,
        tidb,
        IocSettings::default(),
        true,
        1,
    )
    .expect("faz")
}

/// A TIDB of `n` indicators (a third each IPs, domains, URLs) plus the default lab package.
pub fn big_tidb(n: usize) -> Tidb {
    let mut t = Tidb::default_lab();
    for i in 0..n / 3 {
        t.add_ip(std::net::IpAddr::V4(std::net::Ipv4Addr::from(
            0xC000_0000u32 + i as u32 * 7,
        )));
        t.add_domain(&format!("bad{i}.threat{}.example", i % 1000));
        t.add_url(&format!("mal{}.example/path/{i}", i % 5000));
    }
    t
}

pub fn env_n(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// This process's resident memory from `/proc/self/status`: `VmRSS`, `RssAnon` (heap: the
/// SQLite page caches, the TIDB) and `RssFile` (mapped file pages: SQLite's `mmap_size`), MiB.
pub fn rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    format!(
        "VmRSS {:.0} MiB (RssAnon {:.0}, RssFile {:.0})",
        kib("VmRSS:") / 1024.0,
        kib("RssAnon:") / 1024.0,
        kib("RssFile:") / 1024.0
    )
}
