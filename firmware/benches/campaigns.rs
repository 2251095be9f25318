//! Lead list import at the scale (issue 10 target): `campaign::csv::import` of
//! a 100,000-row CSV (name, one or two numbers, a customer link on some rows, two
//! custom data columns) into an empty list of a real migrated SQLite file (WAL,
//! synchronous = FULL), in one transaction, committed. Target: under 10 s.

use std::time::Duration;

use branchline_firmware::campaign::{self, store::LeadListInput};
use branchline_firmware::store::Store;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rusqlite::Connection;

const IMPORT_ROWS: usize = 100_000;

fn open(path: &std::path::Path) -> Connection {
    drop(Store::open(path).expect("store"));
    let conn = Connection::open(path).expect("open");
    conn.pragma_update(None, "foreign_keys", "ON").expect("fk");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("sync");
    conn
}

fn import(c: &mut Criterion) {
    let mut text = String::from("name,numbers,customer,city,product\n");
    for i in 0..IMPORT_ROWS {
        let second = if i % 2 == 0 {
            format!(";0171 {i:08}")
        } else {
            String::new()
        };
        text.push_str(&format!(
            "Lead {i},+49 30 {:08}{second},{},{},{}\n",
            i * 13,
            if i % 10 == 0 { "1" } else { "" },
            ["Berlin", "Hamburg", ""][i % 3],
            ["fibre", "mobile"][i % 2],
        ));
    }
    let mut g = c.benchmark_group("campaign_import");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.bench_function("import_leads_100k", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let path = dir.path().join("branchline.db");
                let conn = open(&path);
                conn.execute(
                    "INSERT INTO customers (id, name, source, created_at_ms, updated_at_ms) \
                     VALUES (1, 'Acme', 'local', 0, 0)",
                    [],
                )
                .expect("customer");
                let list = campaign::store::create_list(
                    &conn,
                    &path,
                    &LeadListInput {
                        name: "bench".into(),
                    },
                    "bench",
                    0,
                )
                .expect("list");
                (dir, path, conn, list.id)
            },
            |(dir, path, mut conn, list)| {
                let tx = conn.transaction().expect("tx");
                let n = campaign::csv::import(&tx, &path, list, &text, 0).expect("import");
                tx.commit().expect("commit");
                assert_eq!(n, IMPORT_ROWS);
                (dir, conn)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, import);
criterion_main!(benches);
