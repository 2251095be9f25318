//! Validation of customers against the schema (each field type, required, defaults,
//! choices, the cap), the store (lookup, filters, HQ's contacts, migration 0012) and
//! the CSV import (all or nothing, duplicates).

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;

use super::store::{self, Filter, Source, StoredSchema, Visibility};
use super::*;
use crate::accounts::PageRequest;
use crate::error::Error;
use crate::store::Store;

fn def(
    name: &str,
    t: &str,
    required: bool,
    default: Option<serde_json::Value>,
    choices: &[&str],
) -> FieldDef {
    FieldDefInput {
        name: name.into(),
        label: String::new(),
        field_type: t.into(),
        required,
        default,
        choices: choices.iter().map(|c| (*c).to_owned()).collect(),
    }
    .validate()
    .unwrap_or_else(|p| panic!("{name}: {p:?}"))
}

fn text(s: &str) -> RawValue {
    RawValue::Text(s.to_owned())
}

#[test]
fn numbers_are_normalised_to_digits_with_an_optional_plus() {
    assert_eq!(
        normalize_number(" +49 (30) 123-45.67 ").as_deref(),
        Ok("+49301234567")
    );
    assert_eq!(normalize_number("0301234").as_deref(), Ok("0301234"));
    for bad in ["", "+", "12a4", "1+2", "--", &"1".repeat(33)] {
        assert!(normalize_number(bad).is_err(), "{bad:?}");
    }
    assert!(normalize_number(&"1".repeat(32)).is_ok());
}

#[test]
fn text_fields_bound_length_and_refuse_control_characters() {
    let d = def("notes", "text", false, None, &[]);
    assert_eq!(
        d.check(&text("hello")),
        Ok(Some(FieldValue::Text("hello".into())))
    );
    assert!(d.check(&text(&"x".repeat(MAX_TEXT_CHARS + 1))).is_err());
    assert!(d.check(&text("a\u{7}b")).is_err());
    assert!(d.check(&RawValue::Integer(3)).is_err());
    assert_eq!(d.check(&RawValue::Absent), Ok(None));
}

#[test]
fn integer_fields_take_numbers_and_numeric_strings() {
    let d = def("age", "integer", false, None, &[]);
    assert_eq!(
        d.check(&RawValue::Integer(-4)),
        Ok(Some(FieldValue::Integer(-4)))
    );
    assert_eq!(d.check(&text(" 042 ")), Ok(Some(FieldValue::Integer(42))));
    for bad in ["4.2", "x", "99999999999999999999"] {
        assert!(d.check(&text(bad)).is_err(), "{bad}");
    }
    assert!(RawValue::from_json(&json!(4.5)).is_err());
}

#[test]
fn phone_fields_are_normalised() {
    let d = def("mobile", "phone", false, None, &[]);
    assert_eq!(
        d.check(&text("+1 555-0100")),
        Ok(Some(FieldValue::Phone("+15550100".into())))
    );
    assert!(d.check(&text("call me")).is_err());
}

#[test]
fn dates_times_and_datetimes_follow_the_calendar() {
    let d = def("birthday", "date", false, None, &[]);
    assert_eq!(
        d.check(&text("2024-02-29")),
        Ok(Some(FieldValue::Date("2024-02-29".into())))
    );
    for bad in [
        "2023-02-29",
        "1900-02-29",
        "2024-13-01",
        "2024-04-31",
        "24-01-01",
        "2024-1-01",
        "2024-01-01x",
    ] {
        assert!(d.check(&text(bad)).is_err(), "{bad}");
    }
    assert!(d.check(&text("2000-02-29")).is_ok());
    let t = def("call_after", "time", false, None, &[]);
    assert_eq!(
        t.check(&text("09:30")),
        Ok(Some(FieldValue::Time("09:30:00".into())))
    );
    assert_eq!(
        t.check(&text("23:59:59")),
        Ok(Some(FieldValue::Time("23:59:59".into())))
    );
    for bad in ["24:00", "9:30", "12:60", "12:00:60", "noon"] {
        assert!(t.check(&text(bad)).is_err(), "{bad}");
    }
    let dt = def("last_visit", "datetime", false, None, &[]);
    assert_eq!(
        dt.check(&text("2024-03-01 08:05")),
        Ok(Some(FieldValue::DateTime("2024-03-01T08:05:00".into())))
    );
    assert_eq!(
        dt.check(&text("2024-03-01T08:05:09")),
        Ok(Some(FieldValue::DateTime("2024-03-01T08:05:09".into())))
    );
    assert!(dt.check(&text("2024-03-01")).is_err());
    assert!(dt.check(&text("2024-03-01T25:00")).is_err());
}

#[test]
fn choices_must_be_defined_and_multi_choice_keeps_the_definition_order() {
    let s = def("tier", "single_choice", false, None, &["gold", "silver"]);
    assert_eq!(
        s.check(&text("gold")),
        Ok(Some(FieldValue::Choice("gold".into())))
    );
    assert!(s.check(&text("bronze")).is_err());
    assert!(s.check(&RawValue::List(vec!["gold".into()])).is_err());
    let m = def(
        "tags",
        "multi_choice",
        false,
        None,
        &["vip", "late_payer", "reseller"],
    );
    let want = Ok(Some(FieldValue::Choices(vec![
        "vip".into(),
        "reseller".into(),
    ])));
    assert_eq!(m.check(&text("reseller; vip;vip")), want);
    assert_eq!(
        m.check(&RawValue::List(vec!["reseller".into(), "vip".into()])),
        want
    );
    assert!(m.check(&text("vip;nope")).is_err());
    assert_eq!(
        FieldValue::Choices(vec!["vip".into(), "reseller".into()]).to_json(),
        json!(["vip", "reseller"])
    );
}

#[test]
fn required_fields_take_their_default_or_are_refused() {
    let r = def("region", "text", true, None, &[]);
    assert_eq!(r.check(&RawValue::Absent), Err("required".into()));
    assert_eq!(r.check(&RawValue::from_cell("  ")), Err("required".into()));
    let with_default = def(
        "region",
        "single_choice",
        true,
        Some(json!("north")),
        &["north", "south"],
    );
    assert_eq!(
        with_default.check(&RawValue::Absent),
        Ok(Some(FieldValue::Choice("north".into())))
    );
    assert_eq!(
        with_default.check(&text("south")),
        Ok(Some(FieldValue::Choice("south".into())))
    );
}

#[test]
fn bad_definitions_name_every_field() {
    let problems = FieldDefInput {
        name: "Bad Name".into(),
        label: "x".repeat(MAX_LABEL_CHARS + 1),
        field_type: "colour".into(),
        required: false,
        default: None,
        choices: vec![],
    }
    .validate()
    .expect_err("invalid");
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["name", "label", "type"]);
    let problems = FieldDefInput {
        name: "tier".into(),
        label: String::new(),
        field_type: "single_choice".into(),
        required: false,
        default: Some(json!("platinum")),
        choices: vec!["gold".into(), "gold".into(), "a;b".into()],
    }
    .validate()
    .expect_err("invalid");
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["choices[1]", "choices[2]", "default"]);
    for reserved in ["name", "numbers", "type", "owner"] {
        assert!(field_name_problem(reserved).is_some(), "{reserved}");
    }
    assert!(field_name_problem(&"a".repeat(33)).is_some());
    assert!(field_name_problem("vip_level2").is_none());
    let e = FieldDefInput {
        name: "n".into(),
        label: String::new(),
        field_type: "integer".into(),
        required: false,
        default: None,
        choices: vec!["x".into()],
    }
    .validate()
    .expect_err("choices on an integer");
    assert_eq!(e[0].field, "choices");
}

fn schema() -> Schema {
    Schema {
        plan: None,
        fields: vec![
            def(
                "tier",
                "single_choice",
                true,
                Some(json!("silver")),
                &["gold", "silver"],
            ),
            def("age", "integer", false, None, &[]),
        ],
        types: BTreeMap::from([(1, "prospect".to_owned()), (2, "client".to_owned())]),
    }
}

#[test]
fn a_draft_is_checked_whole_and_every_problem_names_its_field() {
    let ok = schema()
        .check(&Draft {
            name: " Ada ".into(),
            numbers: vec!["030 1234".into(), "+4930-1234".into()],
            customer_type: Some("client".into()),
            fields: vec![("age".into(), text("36"))],
            ..Draft::default()
        })
        .expect("valid");
    assert_eq!(ok.name, "Ada");
    assert_eq!(ok.numbers, ["0301234", "+49301234"]);
    assert_eq!(ok.type_digit, Some(2));
    assert_eq!(ok.fields["tier"], FieldValue::Choice("silver".into()));
    assert_eq!(ok.fields["age"], FieldValue::Integer(36));

    let problems = schema()
        .check(&Draft {
            name: String::new(),
            numbers: vec!["0301234".into(), "030-1234".into(), "x".into()],
            customer_type: Some("7".into()),
            owner: Some(" ".into()),
            fields: vec![
                ("age".into(), text("old")),
                ("colour".into(), text("red")),
                ("tier".into(), text("bronze")),
            ],
            ..Draft::default()
        })
        .expect_err("invalid");
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "name",
            "numbers[1]",
            "numbers[2]",
            "type",
            "owner",
            "fields.colour",
            "fields.tier",
            "fields.age"
        ]
    );
    let too_many = schema()
        .check(&Draft {
            name: "n".into(),
            numbers: (0..=MAX_NUMBERS).map(|i| format!("555{i:04}")).collect(),
            ..Draft::default()
        })
        .expect_err("too many numbers");
    assert_eq!(too_many[0].field, "numbers");
}

#[test]
fn types_take_a_digit_or_a_name() {
    let s = schema();
    assert_eq!(s.type_digit("1"), Ok(1));
    assert_eq!(s.type_digit("client"), Ok(2));
    assert!(s.type_digit("3").is_err());
    assert!(s.type_digit("12").is_err());
    assert!(Schema::default()
        .type_digit("1")
        .unwrap_err()
        .contains("no customer types"));
    assert!(check_type("10", "x").is_err());
    assert!(check_type("3", "7").is_err());
    assert_eq!(check_type("3", " vip "), Ok((3, "vip".to_owned())));
}

proptest! {
    /// Any number in the normal form is its own normal form, and spacing or
    /// punctuation never changes which number it is.
    #[test]
    fn normalising_is_idempotent_and_ignores_separators(
        plus in any::<bool>(),
        digits in "[0-9]{1,32}",
        seps in proptest::collection::vec(prop::sample::select(vec![" ", "-", ".", "(", ")"]), 0..6),
    ) {
        let n = format!("{}{digits}", if plus { "+" } else { "" });
        prop_assert_eq!(normalize_number(&n), Ok(n.clone()));
        let mut spaced = n.clone();
        for (i, s) in seps.iter().enumerate() {
            let at = (plus as usize + i * 3 + 1).min(spaced.len());
            spaced.insert_str(at, s);
        }
        prop_assert_eq!(normalize_number(&spaced), Ok(n));
    }

    /// A valid date always checks to itself; a day past the month's end never does.
    #[test]
    fn dates_accept_exactly_the_calendar(y in 1u32..9999, m in 1u32..=12, d in 1u32..=31) {
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let days = match m { 2 if leap => 29, 2 => 28, 4 | 6 | 9 | 11 => 30, _ => 31 };
        let s = format!("{y:04}-{m:02}-{d:02}");
        let f = def("d", "date", false, None, &[]);
        prop_assert_eq!(f.check(&text(&s)).is_ok(), d <= days);
    }

    /// Integers round-trip through their stored text.
    #[test]
    fn integers_round_trip_through_storage(i in any::<i64>()) {
        let f = def("i", "integer", false, None, &[]);
        let v = f.check(&RawValue::Integer(i)).expect("valid").expect("some");
        prop_assert_eq!(FieldValue::from_stored(FieldType::Integer, v.stored()), Some(v));
    }
}

// --- store ------------------------------------------------------------------------------

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("c.db")).expect("open");
    (dir, store)
}

fn valid(
    stored: &StoredSchema,
    name: &str,
    numbers: &[&str],
    fields: &[(&str, &str)],
) -> ValidCustomer {
    stored
        .schema
        .check(&Draft {
            name: name.into(),
            numbers: numbers.iter().map(|n| (*n).to_owned()).collect(),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), text(v)))
                .collect(),
            ..Draft::default()
        })
        .expect("valid")
}

#[test]
fn customers_are_stored_looked_up_by_number_and_filtered_by_any_field() {
    let (_d, mut store) = open();
    store
        .transact("t", |tx, path| {
            store::set_type(tx, path, 4, "client", 1)?;
            store::add_field(
                tx,
                path,
                &def("tier", "single_choice", false, None, &["gold", "silver"]),
                1,
            )?;
            store::add_field(
                tx,
                path,
                &def("tags", "multi_choice", false, None, &["vip", "new"]),
                1,
            )?;
            store::add_field(tx, path, &def("since", "date", false, None, &[]), 1)?;
            let s = store::schema(tx, path)?;
            let mut a = valid(
                &s,
                "Acme Ltd",
                &["030 1234", "+49 30 9999"],
                &[("tier", "gold"), ("tags", "vip;new")],
            );
            a.type_digit = Some(4);
            let a = store::insert_local(tx, path, &s, &a, "ada", 5)?;
            let b = store::insert_local(
                tx,
                path,
                &s,
                &valid(
                    &s,
                    "Bolt",
                    &["5550100"],
                    &[("since", "2020-01-31"), ("tags", "new")],
                ),
                "ada",
                6,
            )?;
            let err = store::insert_local(
                tx,
                path,
                &s,
                &valid(&s, "Copy", &["0301234"], &[]),
                "ada",
                7,
            )
            .expect_err("number taken");
            assert!(matches!(err, Error::CustomerConflict { .. }), "{err}");

            let m = lookup_by_number(tx, "030-1234").expect("match");
            assert_eq!(
                (m.id, m.name.as_str(), m.type_digit, m.type_name.as_deref()),
                (a, "Acme Ltd", Some(4), Some("client"))
            );
            assert!(lookup_by_number(tx, "0301235").is_none());
            assert!(lookup_by_number(tx, "not a number").is_none());

            let q = |pairs: &[(&str, &str)]| -> crate::error::Result<Vec<i64>> {
                let pairs: Vec<(String, String)> = pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                let (f, page) = store::parse_filter(tx, path, &s, &pairs)?;
                let (rows, total) = store::list(tx, path, &s.schema, &f, &Visibility::All, page)?;
                if page.offset == 0 {
                    assert_eq!(total as usize, rows.len());
                } else {
                    assert_eq!(total, 2);
                }
                Ok(rows.iter().map(|r| r.id).collect())
            };
            assert_eq!(q(&[])?, [a, b]);
            assert_eq!(q(&[("name", "cme")])?, [a]);
            assert_eq!(q(&[("number", "+49-30-9999")])?, [a]);
            assert_eq!(q(&[("type", "client")])?, [a]);
            assert_eq!(q(&[("field.tier", "gold")])?, [a]);
            assert_eq!(q(&[("field.tags", "new")])?, [a, b]);
            assert_eq!(q(&[("field.tags", "new;vip")])?, [a]);
            assert_eq!(q(&[("field.since", "2020-01-31")])?, [b]);
            assert_eq!(q(&[("source", "hq")])?, Vec::<i64>::new());
            assert_eq!(q(&[("limit", "1"), ("offset", "1")]).map(|v| v.len())?, 1);
            for (k, v) in [
                ("field.nope", "x"),
                ("field.since", "yesterday"),
                ("colour", "red"),
                ("limit", "0"),
                ("type", "9"),
            ] {
                let pairs = vec![(k.to_owned(), v.to_owned())];
                match store::parse_filter(tx, path, &s, &pairs) {
                    Err(Error::Invalid { problems, .. }) => assert_eq!(problems[0].field, k),
                    other => panic!("{k}={v}: {other:?}"),
                }
            }

            let row = store::get(tx, path, &s.schema, a)?.expect("row");
            assert_eq!(row.numbers, ["0301234", "+49309999"]);
            assert_eq!(
                row.fields["tags"],
                FieldValue::Choices(vec!["vip".into(), "new".into()])
            );
            // Replacing keeps the number on the same customer without a conflict.
            store::replace_local(tx, path, &s, a, &valid(&s, "Acme", &["0301234"], &[]), 9)?;
            let row = store::get(tx, path, &s.schema, a)?.expect("row");
            assert_eq!(
                (row.name.as_str(), row.numbers.len(), row.fields.len()),
                ("Acme", 1, 0)
            );
            assert!(lookup_by_number(tx, "+49309999").is_none());
            store::delete_local(tx, path, &s.schema, b, 9)?;
            assert!(lookup_by_number(tx, "5550100").is_none());
            Ok(())
        })
        .expect("transaction");
}

#[test]
fn the_field_cap_is_enforced_with_a_clear_error() {
    let (_d, mut store) = open();
    store
        .transact("t", |tx, path| {
            for i in 0..MAX_FIELDS {
                store::add_field(
                    tx,
                    path,
                    &def(&format!("f{i}"), "text", false, None, &[]),
                    1,
                )?;
            }
            let err = store::add_field(tx, path, &def("one_more", "text", false, None, &[]), 1)
                .expect_err("cap");
            assert!(
                err.to_string().contains("at most 32 custom fields"),
                "{err}"
            );
            assert_eq!(store::fields(tx, path)?.len(), MAX_FIELDS);
            Ok(())
        })
        .expect("transaction");
}

#[test]
fn hq_contacts_are_read_only_and_lose_to_local_customers_in_the_lookup() {
    let (_d, mut store) = open();
    store
        .transact("t", |tx, path| {
            let s = store::schema(tx, path)?;
            store::upsert_hq(tx, path, "c-1", "HQ Person", &["5551234".into()], 3, 1)?;
            let hq = lookup_by_number(tx, "5551234").expect("hq match");
            assert_eq!(hq.name, "HQ Person");
            let err = store::delete_local(tx, path, &s.schema, hq.id, 9).expect_err("hq owned");
            assert!(err.to_string().contains("HQ owns"), "{err}");
            // A local customer cannot take HQ's number through the API...
            assert!(store::insert_local(
                tx,
                path,
                &s,
                &valid(&s, "Local", &["5551234"], &[]),
                "a",
                2
            )
            .is_err());
            // ...but HQ's contact arriving later for a local number shares it, and the
            // box's own customer wins the lookup.
            let local =
                store::insert_local(tx, path, &s, &valid(&s, "Local", &["5550000"], &[]), "a", 2)?;
            store::upsert_hq(tx, path, "c-2", "HQ Two", &["5550000".into()], 4, 3)?;
            assert_eq!(lookup_by_number(tx, "5550000").map(|m| m.id), Some(local));
            assert_eq!(store::delete_hq(tx, path, "c-2")?, 1);
            assert_eq!(store::hq_ids(tx, path)?, ["c-1"]);
            let f = Filter {
                source: Some(Source::Hq),
                ..Filter::default()
            };
            let (rows, _) = store::list(
                tx,
                path,
                &s.schema,
                &f,
                &Visibility::All,
                PageRequest::default(),
            )?;
            assert_eq!(rows.len(), 1);
            Ok(())
        })
        .expect("transaction");
}

#[test]
fn migration_0012_moves_hqs_contacts_out_of_hq_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("old.db");
    {
        let mut conn = rusqlite::Connection::open(&path).expect("open");
        crate::store::migrate_to(&mut conn, 11);
        conn.execute_batch(
            r#"INSERT INTO hq_rows (kind, key, revision, row, updated_at_ms) VALUES
               ('contact', 'k1', 4, '{"kind":"contact","id":"k1","name":"Ann","numbers":["5551111","+4930222"]}', 9),
               ('contact', 'k2', 5, '{"kind":"contact","id":"k2","name":"","numbers":[]}', 9),
               ('queue', '600', 6, '{"kind":"queue"}', 9);"#,
        )
        .expect("seed schema 11");
    }
    let mut store = Store::open(&path).expect("migrate to 12");
    store
        .transact("t", |tx, path| {
            let ann = lookup_by_number(tx, "+4930222").expect("moved");
            assert_eq!(ann.name, "Ann");
            let mut ids = store::hq_ids(tx, path)?;
            ids.sort();
            assert_eq!(ids, ["k1", "k2"]);
            let s = store::schema(tx, path)?;
            let (rows, _) = store::list(
                tx,
                path,
                &s.schema,
                &Filter::default(),
                &Visibility::All,
                PageRequest::default(),
            )?;
            let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
            assert_eq!(names, ["Ann", "k2"]);
            let left: Vec<String> = tx
                .prepare("SELECT kind FROM hq_rows")
                .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
                .expect("hq rows");
            assert_eq!(left, ["queue"]);
            Ok(())
        })
        .expect("transaction");
}

#[test]
fn a_csv_import_with_one_bad_row_changes_nothing() {
    let (_d, mut store) = open();
    store
        .transact("t", |tx, path| {
            store::add_field(tx, path, &def("tier", "single_choice", true, None, &["gold", "silver"]), 1)?;
            let s = store::schema(tx, path)?;
            store::insert_local(tx, path, &s, &valid(&s, "Old", &["5559999"], &[("tier", "gold")]), "a", 1)?;
            let bad = "name,numbers,tier\nA,5550001;5550002,gold\nB,5550002,silver\nC,5559999,gold\nD,,bronze\n,5550004,gold\n";
            match csv::import(tx, path, &s, bad, "ada", 2) {
                Err(Error::CsvImport { errors }) => {
                    let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.row, e.field.as_str())).collect();
                    assert_eq!(got, [(3, "numbers"), (4, "numbers"), (5, "fields.tier"), (6, "name")]);
                    assert!(errors[0].message.contains("row 2"), "{errors:?}");
                    assert!(errors[1].message.contains("belongs to customer"), "{errors:?}");
                }
                other => panic!("{other:?}"),
            }
            let count: i64 = tx.query_row("SELECT count(*) FROM customers", [], |r| r.get(0)).expect("count");
            assert_eq!(count, 1);
            let good = "name,numbers,tier\nA,5550001;5550002,gold\nB,5550003,silver\n";
            assert_eq!(csv::import(tx, path, &s, good, "ada", 3)?, 2);
            assert_eq!(lookup_by_number(tx, "5550003").map(|m| m.name), Some("B".to_owned()));
            let header = "name,colour\nx,red\n";
            assert!(matches!(csv::import(tx, path, &s, header, "ada", 4), Err(Error::CsvImport { .. })));
            Ok(())
        })
        .expect("transaction");
}

/// The `customer` outbox rows as (key, record), oldest first.
fn customer_outbox(
    tx: &rusqlite::Connection,
) -> Vec<(String, branchline_sync::wire::CustomerRecord)> {
    let mut s = tx
        .prepare("SELECT record_key, payload FROM outbox WHERE kind = 'customer' ORDER BY seq")
        .expect("prepare");
    s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .expect("query")
        .map(|row| {
            let (key, payload) = row.expect("row");
            (key, serde_json::from_str(&payload).expect("wire customer"))
        })
        .collect()
}

#[test]
fn local_customer_changes_queue_for_hq_with_the_change_and_refused_ones_do_not() {
    let (_d, mut store) = open();
    let id = store
        .transact("t", |tx, path| {
            store::set_type(tx, path, 2, "vip", 1)?;
            store::add_field(tx, path, &def("tier", "text", false, None, &[]), 1)?;
            let s = store::schema(tx, path)?;
            let mut v = valid(&s, "Ada", &["+49 30 123456"], &[("tier", "gold")]);
            v.type_digit = Some(2);
            let id = store::insert_local(tx, path, &s, &v, "ana", 10)?;
            let queued = customer_outbox(tx);
            assert_eq!(queued.len(), 1);
            let (key, rec) = &queued[0];
            assert_eq!(key, &id.to_string());
            assert_eq!(
                (rec.id, rec.name.as_str(), rec.numbers.as_slice()),
                (id, "Ada", ["+4930123456".to_owned()].as_slice())
            );
            assert_eq!(
                (rec.type_digit, rec.type_name.as_deref()),
                (Some(2), Some("vip"))
            );
            assert_eq!(rec.fields["tier"], serde_json::json!("gold"));
            assert_eq!((rec.created_by.as_str(), rec.deleted), ("ana", false));
            // What the insert queued is the customer as the store reads it back.
            let stored = store::get(tx, path, &s.schema, id)?.expect("stored");
            assert_eq!(rec, &store::hq_record(&stored, None));
            // HQ's contacts are not sent back up, and refusing to touch one queues
            // nothing.
            store::upsert_hq(tx, path, "c-1", "HQ Person", &["5551234".into()], 3, 11)?;
            let hq = lookup_by_number(tx, "5551234").expect("hq").id;
            assert!(store::delete_local(tx, path, &s.schema, hq, 12).is_err());
            assert!(store::insert_local(
                tx,
                path,
                &s,
                &valid(&s, "Dup", &["5551234"], &[]),
                "a",
                12
            )
            .is_err());
            assert_eq!(customer_outbox(tx).len(), 1);
            Ok(id)
        })
        .expect("transaction");
    // A refused edit (the number is HQ's contact's) rolls back whole: no outbox row.
    let err = store
        .transact("t", move |tx, path| {
            let s = store::schema(tx, path)?;
            store::replace_local(tx, path, &s, id, &valid(&s, "Ada", &["5551234"], &[]), 20)
        })
        .expect_err("number taken");
    assert!(matches!(err, Error::CustomerConflict { .. }), "{err}");
    store
        .transact("t", move |tx, path| {
            assert_eq!(customer_outbox(tx).len(), 1);
            let s = store::schema(tx, path)?;
            store::replace_local(
                tx,
                path,
                &s,
                id,
                &valid(&s, "Ada L.", &["5550001"], &[]),
                30,
            )?;
            let bad = "name,numbers\nB,5550002\nC,5550001\n";
            assert!(csv::import(tx, path, &s, bad, "ana", 31).is_err());
            assert_eq!(
                customer_outbox(tx).len(),
                2,
                "a refused import queues nothing"
            );
            assert_eq!(
                csv::import(tx, path, &s, "name,numbers\nB,5550002\n", "ana", 32)?,
                1
            );
            store::delete_local(tx, path, &s.schema, id, 40)?;
            let queued = customer_outbox(tx);
            let summary: Vec<(&str, bool, i64)> = queued
                .iter()
                .map(|(_, r)| (r.name.as_str(), r.deleted, r.updated_at_ms))
                .collect();
            assert_eq!(
                summary,
                [
                    ("Ada", false, 10),
                    ("Ada L.", false, 30),
                    ("B", false, 32),
                    ("Ada L.", true, 40)
                ]
            );
            assert_eq!(queued[3].1.numbers, ["5550001"]);
            Ok(())
        })
        .expect("transaction");
}

/// With the site's plan adopted (a German site), a customer's numbers are stored in
/// canonical form, and the lookup, the `number` filter, the duplicate check, HQ's
/// contacts and service records meet them from any written form.
#[test]
fn numbers_are_canonical_with_the_site_plan_and_found_from_any_form() {
    let (_d, mut store) = open();
    let de = crate::numbers::SitePlan::of_country(crate::tones::Country::De);
    store
        .transact("t", |tx, path| {
            crate::numbers::store::adopt(tx, path, &de, 1)?;
            let s = store::schema(tx, path)?;
            assert_eq!(s.schema.plan.as_ref(), Some(&de));
            let a = store::insert_local(
                tx,
                path,
                &s,
                &valid(&s, "Acme", &["030 1234567", "201"], &[]),
                "ada",
                2,
            )?;
            let row = store::get(tx, path, &s.schema, a)?.expect("row");
            assert_eq!(row.numbers, ["+49301234567", "201"]);
            for form in [
                "+49301234567",
                "030-1234567",
                "0049 30 1234567",
                "+49 (0)30 1234567",
            ] {
                assert_eq!(lookup_by_number(tx, form).map(|m| m.id), Some(a), "{form}");
            }
            assert_eq!(lookup_by_number(tx, "201").map(|m| m.id), Some(a));
            assert!(lookup_by_number(tx, "0301234568").is_none());
            assert!(lookup_by_number(tx, "030-CALL").is_none());
            // The same number in another form is taken.
            let err = store::insert_local(
                tx,
                path,
                &s,
                &valid(&s, "Copy", &["0049301234567"], &[]),
                "ada",
                3,
            )
            .expect_err("number taken");
            assert!(matches!(err, Error::CustomerConflict { .. }), "{err}");
            // ... and twice in one customer is refused.
            let twice = s.schema.check(&Draft {
                name: "Twice".into(),
                numbers: vec!["+4940123456".into(), "040 123456".into()],
                ..Draft::default()
            });
            assert_eq!(twice.expect_err("twice")[0].field, "numbers[1]");
            let pairs = vec![("number".to_owned(), "0049301234567".to_owned())];
            let (f, page) = store::parse_filter(tx, path, &s, &pairs)?;
            let (rows, _) = store::list(tx, path, &s.schema, &f, &Visibility::All, page)?;
            assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [a]);
            // HQ's contact in national form is stored canonically too.
            let contact = branchline_sync::wire::Contact {
                id: "c-9".into(),
                name: "HQ Person".into(),
                numbers: vec!["040 5555555".into()],
            };
            let (name, numbers) =
                store::check_hq(&contact, s.schema.plan.as_ref()).expect("valid contact");
            assert_eq!(numbers, ["+49405555555"]);
            store::upsert_hq(tx, path, "c-9", &name, &numbers, 3, 4)?;
            assert_eq!(
                lookup_by_number(tx, "004940 5555555").map(|m| m.name),
                Some("HQ Person".to_owned())
            );
            Ok(())
        })
        .expect("transaction");
}

/// Phone-type custom fields are stored in the canonical form too: a filter in another
/// form finds the customer, and adopting the plan rewrites values stored before it.
#[test]
fn phone_fields_are_canonical_and_filtered_in_any_form() {
    let (_d, mut store) = open();
    let de = crate::numbers::SitePlan::of_country(crate::tones::Country::De);
    store
        .transact("t", |tx, path| {
            store::add_field(tx, path, &def("mobile", "phone", false, None, &[]), 1)?;
            // Before any plan: cleaned only.
            let s = store::schema(tx, path)?;
            let early = store::insert_local(
                tx,
                path,
                &s,
                &valid(&s, "Early", &[], &[("mobile", "0170 1234567")]),
                "ada",
                2,
            )?;
            let row = store::get(tx, path, &s.schema, early)?.expect("row");
            assert_eq!(
                row.fields["mobile"],
                FieldValue::Phone("01701234567".into())
            );
            // The plan arrives: the stored value is rewritten.
            let adopted = crate::numbers::store::adopt(tx, path, &de, 3)?;
            assert_eq!(adopted.field_values, 1);
            let s = store::schema(tx, path)?;
            let row = store::get(tx, path, &s.schema, early)?.expect("row");
            assert_eq!(
                row.fields["mobile"],
                FieldValue::Phone("+491701234567".into())
            );
            let late = store::insert_local(
                tx,
                path,
                &s,
                &valid(&s, "Late", &[], &[("mobile", "0049 170 7654321")]),
                "ada",
                4,
            )?;
            let row = store::get(tx, path, &s.schema, late)?.expect("row");
            assert_eq!(
                row.fields["mobile"],
                FieldValue::Phone("+491707654321".into())
            );
            for (form, want) in [
                ("+49 170 1234567", early),
                ("01701234567", early),
                ("01707654321", late),
            ] {
                let pairs = vec![("field.mobile".to_owned(), form.to_owned())];
                let (f, page) = store::parse_filter(tx, path, &s, &pairs)?;
                let (rows, _) = store::list(tx, path, &s.schema, &f, &Visibility::All, page)?;
                assert_eq!(
                    rows.iter().map(|r| r.id).collect::<Vec<_>>(),
                    [want],
                    "{form}"
                );
            }
            // A bad number is refused naming the field, nothing written.
            let bad = s.schema.check(&Draft {
                name: "Bad".into(),
                fields: vec![("mobile".into(), text("call me"))],
                ..Draft::default()
            });
            assert_eq!(bad.expect_err("bad")[0].field, "fields.mobile");
            Ok(())
        })
        .expect("transaction");
}
