//! Customer records at branch scale (issue 10 targets):
//!
//! - `lookup_by_number_1m`: `customers::lookup_by_number` among 1,000,000 customers
//!   (one or two numbers each, a type on most, stored in canonical form at a German
//!   site), random hits and misses, the calling number given in `+`, national or
//!   international-prefix form (canonicalised by the lookup). Target: under 1 ms p99. Criterion gives the mean; after it a plain loop times 200,000 single
//!   lookups and prints p50 / p99 / p99.9 / max (criterion reports per-sample means,
//!   not a tail).
//! - `import_100k`: `customers::csv::import` of a 100,000-row CSV (name, two numbers,
//!   type, a text and a single-choice field) into an empty store, in one transaction,
//!   committed. Target: under 10 s.
//!
//! The store is a real migrated SQLite file in a temp dir (WAL, synchronous = FULL, as
//! the writer thread runs it).

use std::hint::black_box;
use std::time::{Duration, Instant};

use branchline_firmware::customers::{self, FieldDefInput};
use branchline_firmware::numbers;
use branchline_firmware::store::Store;
use branchline_firmware::tones::Country;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rusqlite::{params, Connection};

const CUSTOMERS: i64 = 1_000_000;
const IMPORT_ROWS: usize = 100_000;

fn open(path: &std::path::Path) -> Connection {
    drop(Store::open(path).expect("store"));
    let conn = Connection::open(path).expect("open");
    // A German site: numbers are stored and looked up in its canonical form.
    let plan = numbers::SitePlan::of_country(Country::De);
    numbers::store::adopt(&conn, path, &plan, 0).expect("plan");
    conn.pragma_update(None, "foreign_keys", "ON").expect("fk");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("sync");
    conn
}

fn number(i: i64) -> String {
    // Spread over the key space like real subscriber numbers.
    format!("+4930{:08}", (i * 7_919) % 100_000_000)
}

fn populate(conn: &mut Connection) {
    let tx = conn.transaction().expect("tx");
    for (d, name) in [(1, "prospect"), (2, "client"), (3, "partner")] {
        tx.execute(
            "INSERT INTO customer_types (digit, name, updated_at_ms) VALUES (?1, ?2, 0)",
            params![d, name],
        )
        .expect("type");
    }
    {
        let mut c = tx
            .prepare(
                "INSERT INTO customers (id, name, type_digit, source, created_at_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, 'local', 0, 0)",
            )
            .expect("prepare");
        let mut n = tx
            .prepare(
                "INSERT INTO customer_numbers (number, customer_id, position) VALUES (?1, ?2, ?3)",
            )
            .expect("prepare");
        for i in 1..=CUSTOMERS {
            let t = (i % 4 != 0).then_some(i % 4);
            c.execute(params![i, format!("Customer {i}"), t])
                .expect("customer");
            n.execute(params![number(i), i, 0]).expect("number");
            if i % 3 == 0 {
                n.execute(params![format!("+49170{i:08}"), i, 1])
                    .expect("second number");
            }
        }
    }
    tx.commit().expect("commit");
}

/// Customer `i`'s first number as a caller ID might present it: `+` form, national
/// form or with the international prefix, by `form` (0-2).
fn presented(i: i64, form: u64) -> String {
    let n = number(i);
    match form {
        0 => n,
        1 => format!("0{}", &n[3..]),
        _ => format!("00{}", &n[1..]),
    }
}

/// A tiny deterministic generator (no rand dependency for a bench).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

fn lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("branchline.db");
    let mut conn = open(&path);
    let t = Instant::now();
    populate(&mut conn);
    eprintln!(
        "populated {CUSTOMERS} customers in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut rng = Lcg(7);
    let mut g = c.benchmark_group("customers_1m");
    g.bench_function("lookup_by_number_1m", |b| {
        b.iter(|| {
            let i = (rng.next() % CUSTOMERS as u64) as i64 + 1;
            // One in eight is a caller the box does not know.
            let hit = i % 8 != 0;
            let n = if hit {
                presented(i, rng.next() % 3)
            } else {
                format!("040{i:08}")
            };
            let m = customers::lookup_by_number(&conn, &n);
            assert_eq!(m.as_ref().map(|m| m.id), hit.then_some(i));
            black_box(m)
        })
    });
    g.finish();

    let mut times: Vec<Duration> = Vec::with_capacity(200_000);
    for _ in 0..200_000 {
        let i = (rng.next() % CUSTOMERS as u64) as i64 + 1;
        let n = presented(i, rng.next() % 3);
        let t = Instant::now();
        let m = customers::lookup_by_number(&conn, &n);
        times.push(t.elapsed());
        assert_eq!(m.map(|m| m.id), Some(i));
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    eprintln!(
        "lookup_by_number among {CUSTOMERS}: 200000 lookups p50 {:?} p99 {:?} p99.9 {:?} max {:?}",
        at(0.50),
        at(0.99),
        at(0.999),
        times[times.len() - 1]
    );
}

fn import(c: &mut Criterion) {
    let mut text = String::from("name,numbers,type,notes,tier\n");
    for i in 0..IMPORT_ROWS {
        text.push_str(&format!(
            "Lead {i},+4930{:08};0171{:08},{},called twice,{}\n",
            i * 13,
            i,
            ["prospect", "client", ""][i % 3],
            ["gold", "silver", ""][i % 3],
        ));
    }
    let mut g = c.benchmark_group("customers_import");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.bench_function("import_100k", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let path = dir.path().join("branchline.db");
                let conn = open(&path);
                conn.execute_batch(
                    "INSERT INTO customer_types (digit, name, updated_at_ms)
                     VALUES (1, 'prospect', 0), (2, 'client', 0)",
                )
                .expect("types");
                let tx = conn.unchecked_transaction().expect("tx");
                for f in [
                    FieldDefInput {
                        name: "notes".into(),
                        label: String::new(),
                        field_type: "text".into(),
                        required: false,
                        default: None,
                        choices: vec![],
                    },
                    FieldDefInput {
                        name: "tier".into(),
                        label: String::new(),
                        field_type: "single_choice".into(),
                        required: true,
                        default: Some(serde_json::json!("silver")),
                        choices: vec!["gold".into(), "silver".into()],
                    },
                ] {
                    let def = f.validate().expect("field");
                    customers::store::add_field(&tx, &path, &def, 0).expect("add field");
                }
                tx.commit().expect("commit");
                (dir, path, conn)
            },
            |(dir, path, mut conn)| {
                let tx = conn.transaction().expect("tx");
                let stored = customers::store::schema(&tx, &path).expect("schema");
                let n =
                    customers::csv::import(&tx, &path, &stored, &text, "bench", 0).expect("import");
                tx.commit().expect("commit");
                assert_eq!(n, IMPORT_ROWS);
                (dir, conn)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, lookup, import);
criterion_main!(benches);
