//! Tests against the real PostgreSQL at `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Each test works in its own schema.

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::json;
use tokio_postgres::NoTls;

use super::*;

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A schema of its own for one test, and a plain client to look at it.
struct TestDb {
    schema: String,
    client: tokio_postgres::Client,
}

impl TestDb {
    async fn new() -> TestDb {
        let (client, connection) = tokio_postgres::connect(&database_url(), NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let schema = format!(
            "sluice_pg_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))
            .await
            .unwrap();
        TestDb { schema, client }
    }

    async fn drop(self) {
        self.client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .await
            .unwrap();
    }

    fn config(&self, table: &str, extra: Value) -> ConfigMap {
        let mut map: ConfigMap = serde_json::from_value(json!({
            "connection.url": database_url(),
            "table.name.format": format!("{}.{table}", self.schema),
        }))
        .unwrap();
        for (k, v) in extra.as_object().unwrap() {
            map.insert(k.clone(), v.clone());
        }
        map
    }

    async fn task(&self, table: &str, extra: Value) -> Box<dyn SinkTask> {
        let mut task = PostgresSinkPlugin
            .create_task(&self.config(table, extra))
            .unwrap();
        task.start(SinkTaskContext {
            connector: "pg".into(),
            task_id: 0,
            durable_offsets: true,
        })
        .await
        .unwrap();
        task
    }
}

fn rec(value: Value, offset: i64) -> Arc<Record> {
    let mut r = Record::new("purchases", value);
    r.partition = Some(0);
    r.offset = Some(offset);
    Arc::new(r)
}

fn keyed(key: Value, value: Option<Value>) -> Arc<Record> {
    Arc::new(Record {
        key: Some(Payload::Json(key)),
        value: value.map(Payload::Json),
        ..Record::new("t", Value::Null)
    })
}

const PURCHASES: &str = "(id serial PRIMARY KEY, event_id bigint NOT NULL, \
     name varchar(20) NOT NULL, qty int, price numeric(10,2), purchase_time timestamptz, \
     created_at timestamptz NOT NULL DEFAULT now())";

#[tokio::test(flavor = "multi_thread")]
async fn insert_converts_values_to_the_column_types() {
    let db = TestDb::new().await;
    db.client
        .batch_execute(&format!("CREATE TABLE {}.purchases {PURCHASES}", db.schema))
        .await
        .unwrap();
    let mut task = db.task("purchases", json!({})).await;
    let result = task
        .put(&[
            rec(
                json!({"event_id": 1, "name": "apple", "qty": 3, "price": 1.5,
                       "purchase_time": "2024-05-01T10:00:00Z", "ignored": "x"}),
                0,
            ),
            rec(
                json!({"event_id": "2", "name": "pear", "qty": "4", "price": "12345678.99",
                       "purchase_time": 1714557600123i64}),
                1,
            ),
            rec(
                json!({"event_id": 3.0, "name": "plum", "qty": null,
                       "purchase_time": "2024-05-01 12:00:00+02:00"}),
                2,
            ),
        ])
        .await
        .unwrap();
    assert!(result.failed.is_empty(), "{:?}", result.failed);
    task.flush().await.unwrap();
    let rows = db
        .client
        .query(
            &format!(
                "SELECT id, event_id, name, qty, price::text, \
                 to_char(purchase_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'), \
                 created_at IS NOT NULL FROM {}.purchases ORDER BY event_id",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap();
    type Purchase = (i32, i64, String, Option<i32>, Option<String>, String, bool);
    let got: Vec<Purchase> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                1,
                1,
                "apple".into(),
                Some(3),
                Some("1.50".into()),
                "2024-05-01 10:00:00.000".into(),
                true
            ),
            (
                2,
                2,
                "pear".into(),
                Some(4),
                Some("12345678.99".into()),
                "2024-05-01 10:00:00.123".into(),
                true
            ),
            (
                3,
                3,
                "plum".into(),
                None,
                None,
                "2024-05-01 10:00:00.000".into(),
                true
            ),
        ]
    );
    task.stop().await.unwrap();
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upsert_twice_updates_without_duplicates() {
    let db = TestDb::new().await;
    db.client
        .batch_execute(&format!(
            "CREATE TABLE {}.purchases {PURCHASES}; \
             CREATE UNIQUE INDEX ON {}.purchases (event_id)",
            db.schema, db.schema
        ))
        .await
        .unwrap();
    let cfg = json!({"insert.mode": "upsert", "pk.mode": "record_value", "pk.fields": "event_id"});
    let mut task = db.task("purchases", cfg).await;
    let batch = |price: f64| -> Vec<Arc<Record>> {
        (0..50)
            .map(|i| {
                rec(
                    json!({"event_id": i, "name": format!("n{i}"), "price": price}),
                    i,
                )
            })
            .collect()
    };
    let r = task.put(&batch(1.0)).await.unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let mut second = batch(2.0);
    // The same key twice in one batch: the later value wins.
    second.push(rec(
        json!({"event_id": 7, "name": "last", "price": 3.25}),
        99,
    ));
    let r = task.put(&second).await.unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let row = db
        .client
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT event_id), sum(price)::text, \
                 (SELECT name FROM {0}.purchases WHERE event_id = 7) FROM {0}.purchases",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap();
    let (n, distinct, sum, name): (i64, i64, String, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!((n, distinct), (50, 50));
    assert_eq!(sum, "101.25"); // 49 × 2.00 + 3.25
    assert_eq!(name, "last");
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_records_are_isolated_and_good_ones_land_once() {
    let db = TestDb::new().await;
    db.client
        .batch_execute(&format!(
            "CREATE TABLE {}.purchases {PURCHASES}; \
             CREATE UNIQUE INDEX purchases_event_uq ON {}.purchases (event_id)",
            db.schema, db.schema
        ))
        .await
        .unwrap();
    let mut task = db.task("purchases", json!({"batch.size": 4})).await;
    let mut batch: Vec<Arc<Record>> = (0..20)
        .map(|i| rec(json!({"event_id": i, "name": format!("n{i}"), "qty": i}), i))
        .collect();
    batch[3] = rec(json!({"event_id": 103, "name": "bad qty", "qty": "abc"}), 3);
    batch[8] = rec(json!({"event_id": 108, "name": null}), 8);
    batch[15] = rec(json!({"event_id": 1, "name": "duplicate"}), 15);
    batch[17] = rec(
        json!({"event_id": 117, "name": "too long for varchar 20"}),
        17,
    );
    let r = task.put(&batch).await.unwrap();
    let failed: Vec<usize> = r.failed.iter().map(|f| f.index).collect();
    assert_eq!(failed, vec![3, 8, 15, 17], "{:?}", r.failed);
    for f in &r.failed {
        assert_eq!(f.error.kind(), ErrorKind::Data, "{}", f.error);
    }
    let msg = |i: usize| r.failed[i].error.message().to_string();
    assert!(
        msg(0).contains("qty") && msg(0).contains("integer"),
        "{}",
        msg(0)
    );
    assert!(
        msg(1).contains("\"name\"") && msg(1).contains("23502"),
        "{}",
        msg(1)
    );
    assert!(
        msg(2).contains("purchases_event_uq") && msg(2).contains("23505"),
        "{}",
        msg(2)
    );
    assert!(msg(3).contains("22001"), "{}", msg(3));
    let rows = db
        .client
        .query(
            &format!(
                "SELECT event_id FROM {}.purchases ORDER BY event_id",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap();
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    let expected: Vec<i64> = (0..20).filter(|i| ![3, 8, 15, 17].contains(i)).collect();
    assert_eq!(ids, expected);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_pk_upsert_and_auto_create_and_evolve() {
    let db = TestDb::new().await;
    let cfg = json!({"insert.mode": "upsert", "pk.mode": "kafka",
                     "auto.create": true, "auto.evolve": true});
    let mut task = db.task("events", cfg).await;
    let first = vec![
        rec(
            json!({"a": 1, "b": "x", "c": 1.5, "d": true, "e": {"k": [1]}}),
            0,
        ),
        rec(json!({"a": 2, "b": null}), 1),
    ];
    assert!(task.put(&first).await.unwrap().failed.is_empty());
    // Redelivery of the same offsets plus a record with a new field.
    let mut second = first.clone();
    second.push(rec(json!({"a": 3, "f": "new"}), 2));
    let r = task.put(&second).await.unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let cols = db
        .client
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = 'events' ORDER BY ordinal_position",
            &[&db.schema],
        )
        .await
        .unwrap();
    let cols: Vec<(String, String)> = cols.iter().map(|r| (r.get(0), r.get(1))).collect();
    let expect = |n: &str, t: &str| (n.to_string(), t.to_string());
    assert_eq!(
        cols,
        vec![
            expect("__connect_topic", "text"),
            expect("__connect_partition", "bigint"),
            expect("__connect_offset", "bigint"),
            expect("a", "bigint"),
            expect("b", "text"),
            expect("c", "double precision"),
            expect("d", "boolean"),
            expect("e", "jsonb"),
            expect("f", "text"),
        ]
    );
    let row = db
        .client
        .query_one(
            &format!(
                "SELECT count(*), max(e::text), max(f) FROM {}.events",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap();
    let (n, e, f): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((n, e.as_str(), f.as_str()), (3, "{\"k\": [1]}", "new"));
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn record_key_update_and_delete() {
    let db = TestDb::new().await;
    db.client
        .batch_execute(&format!(
            "CREATE TABLE {}.t (id uuid PRIMARY KEY, doc jsonb, n int2, ok bool, d date)",
            db.schema
        ))
        .await
        .unwrap();
    let id1 = "5f0c2a52-0d0e-4c1f-9a59-3c1b0f7d6e01";
    let id2 = "5f0c2a52-0d0e-4c1f-9a59-3c1b0f7d6e02";
    let cfg = json!({"insert.mode": "upsert", "pk.mode": "record_key", "pk.fields": "id",
                     "delete.enabled": "true"});
    let mut task = db.task("t", cfg).await;
    let r = task
        .put(&[
            keyed(
                json!(id1),
                Some(json!({"doc": {"a": 1}, "n": 7, "ok": "yes", "d": "2024-02-29"})),
            ),
            keyed(json!(id2), Some(json!({"doc": [1, 2], "n": 70000}))),
            keyed(json!("not-a-uuid"), Some(json!({"n": 1}))),
            keyed(json!(id2), Some(json!({"doc": "s", "ok": false}))),
        ])
        .await
        .unwrap();
    let failed: Vec<usize> = r.failed.iter().map(|f| f.index).collect();
    assert_eq!(failed, vec![1, 2], "{:?}", r.failed);
    assert!(r.failed[0].error.message().contains("out of range"));
    assert!(r.failed[1].error.message().contains("uuid"));
    // A tombstone deletes by key.
    let r = task.put(&[keyed(json!(id1), None)]).await.unwrap();
    assert!(r.failed.is_empty());
    let rows = db
        .client
        .query(
            &format!("SELECT id::text, doc::text, ok FROM {}.t", db.schema),
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, Option<bool>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![(id2.to_string(), "\"s\"".to_string(), Some(false))]
    );

    // update mode: changes existing rows only.
    let cfg = json!({"insert.mode": "update", "pk.mode": "record_key", "pk.fields": "id"});
    let mut task = db.task("t", cfg).await;
    let r = task
        .put(&[
            keyed(json!(id2), Some(json!({"n": 5}))),
            keyed(json!(id1), Some(json!({"n": 6}))),
        ])
        .await
        .unwrap();
    assert!(r.failed.is_empty());
    let rows = db
        .client
        .query(&format!("SELECT id::text, n FROM {}.t", db.schema), &[])
        .await
        .unwrap();
    let got: Vec<(String, i16)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![(id2.to_string(), 5)]);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_database_is_retriable_and_hides_the_password() {
    let cfg: ConfigMap = serde_json::from_value(json!({
        "connection.url": "jdbc:postgresql://127.0.0.1:1/test?user=u&password=urlsecret",
        "connection.password": "s3cr3t-pw",
    }))
    .unwrap();
    let mut task = PostgresSinkPlugin.create_task(&cfg).unwrap();
    let err = task
        .put(&[Arc::new(Record::new("t", json!({"a": 1})))])
        .await
        .unwrap_err();
    assert!(err.is_retriable(), "{err}");
    assert!(!err.message().contains("s3cr3t-pw"), "{err}");
    assert!(!err.message().contains("urlsecret"), "{err}");
    let parsed = PostgresSinkConfig::parse(&cfg).unwrap();
    let debug = format!("{parsed:?}");
    assert!(
        !debug.contains("s3cr3t-pw") && !debug.contains("urlsecret"),
        "{debug}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retriable_failure_mid_batch_applies_nothing() {
    let db = TestDb::new().await;
    let s = &db.schema;
    db.client
        .batch_execute(&format!(
            "CREATE TABLE {s}.purchases {PURCHASES}; \
             CREATE FUNCTION {s}.fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF NEW.event_id = 13 THEN \
                 RAISE EXCEPTION 'simulated conflict' USING ERRCODE = '40001'; \
               END IF; RETURN NEW; END $$; \
             CREATE TRIGGER fail BEFORE INSERT ON {s}.purchases \
               FOR EACH ROW EXECUTE FUNCTION {s}.fail()"
        ))
        .await
        .unwrap();
    // Small statements, so earlier chunks were written before the failure.
    let mut task = db.task("purchases", json!({"batch.size": 5})).await;
    let batch: Vec<Arc<Record>> = (0..20)
        .map(|i| rec(json!({"event_id": i, "name": "n"}), i))
        .collect();
    let err = task.put(&batch).await.unwrap_err();
    assert!(err.is_retriable(), "{err}");
    assert!(err.message().contains("40001"), "{err}");
    async fn count(db: &TestDb) -> (i64, i64) {
        let sql = format!(
            "SELECT count(*), count(DISTINCT event_id) FROM {}.purchases",
            db.schema
        );
        let row = db.client.query_one(&sql, &[]).await.unwrap();
        (row.get(0), row.get(1))
    }
    assert_eq!(count(&db).await, (0, 0));
    // The cause goes away; the runtime puts the same batch again.
    db.client
        .batch_execute(&format!("DROP TRIGGER fail ON {s}.purchases"))
        .await
        .unwrap();
    let r = task.put(&batch).await.unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    assert_eq!(count(&db).await, (20, 20));
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn large_insert_uses_copy_and_still_isolates_bad_rows() {
    let db = TestDb::new().await;
    db.client
        .batch_execute(&format!(
            "CREATE TABLE {}.purchases {PURCHASES}; \
             CREATE TABLE {}.docs (id bigint, body text, meta jsonb, span interval)",
            db.schema, db.schema
        ))
        .await
        .unwrap();
    let mut task = db.task("purchases", json!({})).await;
    let mut batch: Vec<Arc<Record>> = (0..5000)
        .map(|i| rec(json!({"event_id": i, "name": "n", "price": "9.99"}), i))
        .collect();
    batch[2500] = rec(json!({"event_id": 2500, "name": null}), 2500);
    batch[4000] = rec(json!({"event_id": 4000, "name": "n", "price": 1e9}), 4000);
    let started = std::time::Instant::now();
    let r = task.put(&batch).await.unwrap();
    eprintln!("5000 rows with 2 bad ones: {:?}", started.elapsed());
    let failed: Vec<usize> = r.failed.iter().map(|f| f.index).collect();
    assert_eq!(failed, vec![2500, 4000], "{:?}", r.failed);
    assert!(
        r.failed[1].error.message().contains("22003"),
        "{:?}",
        r.failed
    );
    let row = db
        .client
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT event_id) FROM {}.purchases",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (4998, 4998));

    // Text COPY escaping: tabs, newlines, backslashes and \N-looking text survive. (The
    // interval column has no binary encoding here, so this table is written as text.)
    let mut task = db.task("docs", json!({})).await;
    let tricky = "a\tb\nc\\d\r\\N \u{e9}";
    let batch: Vec<Arc<Record>> = (0..100)
        .map(|i| {
            rec(
                json!({"id": i, "body": tricky, "meta": {"s": tricky}, "span": "1 day"}),
                i,
            )
        })
        .collect();
    assert!(task.put(&batch).await.unwrap().failed.is_empty());
    let rows = db
        .client
        .query(
            &format!("SELECT DISTINCT body, meta->>'s' FROM {}.docs", db.schema),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), tricky);
    assert_eq!(rows[0].get::<_, String>(1), tricky);
    db.drop().await;
}

/// The columns of `binary_values_mean_what_their_text_means`, with their types.
const TYPED: [(&str, &str); 15] = [
    ("n", "int"),
    ("num", "numeric"),
    ("num2", "numeric(10,2)"),
    ("f8", "float8"),
    ("f4", "real"),
    ("ts", "timestamp"),
    ("tz", "timestamptz"),
    ("d", "date"),
    ("u", "uuid"),
    ("jb", "jsonb"),
    ("j", "json"),
    ("b", "bool"),
    ("i2", "int2"),
    ("vc", "varchar(12)"),
    ("t", "text"),
];

#[tokio::test(flavor = "multi_thread")]
async fn binary_values_mean_what_their_text_means() {
    let db = TestDb::new().await;
    let s = &db.schema;
    let defs: Vec<String> = TYPED.iter().map(|(c, t)| format!("{c} {t}")).collect();
    db.client
        .batch_execute(&format!(
            "CREATE TABLE {s}.got ({}); CREATE TABLE {s}.want (LIKE {s}.got); \
             CREATE UNIQUE INDEX ON {s}.got (n)",
            defs.join(", ")
        ))
        .await
        .unwrap();
    // Every value has a binary form: a COPY of these is binary, an unnest binds typed arrays.
    let binary = [
        json!({"num": 1.5e-7, "num2": 237.56, "f8": 0.1, "f4": 0.1,
               "ts": "2024-05-01T10:00:00.123456+02:00", "tz": "2024-05-01T10:00:00.5Z",
               "d": "2024-05-01T23:30:00-05:00", "u": "AA53B400-A2B1-4DF4-B237-95AFCDD7FFC2",
               "jb": {"b": [1, 2.5, "x\u{e9}"], "a": null}, "j": {"z": 1, "a": [true]},
               "b": true, "i2": -32768, "vc": "h\u{e9}llo w\u{f6}rld", "t": "tab\there\n\\ \\N"}),
        json!({"num": "12.340", "num2": "12.345", "f8": "1e300", "f4": "3.4e38",
               "ts": "1999-12-31T23:59:59.999999", "tz": "2024-05-01 12:00:00+02",
               "d": "1999-12-31", "b": "off", "i2": "123", "t": ""}),
        json!({"num": 1e20, "num2": 0.005, "f8": -0.0, "f4": 1e-38, "ts": "2024-05-01",
               "tz": "0001-01-01T00:30:00+01:00", "d": "2000-01-01 00:00:00",
               "jb": "just a string", "j": [], "b": 0}),
        json!({"num": "-0.00", "num2": "-99999999.994", "f8": "-1.5E-300",
               "ts": "2000-01-01T00:00:00Z", "tz": "1970-01-01T00:00:00+14:00"}),
        json!({"num": "100.00000001", "num2": null, "f8": 1.7976931348623157e308,
               "ts": "2038-01-19 03:14:08.000001", "tz": "2262-04-11T23:47:16.854775Z"}),
    ];
    // These stay text: the session's time zone, sub-microsecond rounding, NaN, overflow.
    let text_only = [
        json!({"num": "NaN", "tz": "2024-05-01 10:00:00", "ts": "2024-05-01T10:00:00.1234565",
               "f8": "Infinity"}),
        json!({"num": "1e-1001", "tz": "2024-05-01", "f4": "-inf"}),
    ];
    // What PostgreSQL's own text input makes of each value: JSON scalars as their text.
    let text_of = |v: &Value| -> Option<String> {
        match v {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    };
    let casts: Vec<String> = TYPED
        .iter()
        .enumerate()
        .map(|(p, (_, t))| format!("${}::text::{t}", p + 1))
        .collect();
    let want_sql = format!("INSERT INTO {s}.want VALUES ({})", casts.join(", "));
    let want = |n: i64, v: &Value| {
        let texts: Vec<Option<String>> = TYPED
            .iter()
            .map(|(c, _)| {
                let value = v.get(*c).unwrap_or(&Value::Null);
                match *c {
                    "n" => Some(n.to_string()),
                    "j" | "jb" if !value.is_null() => Some(value.to_string()),
                    _ => text_of(value),
                }
            })
            .collect();
        let client = &db.client;
        let sql = want_sql.clone();
        async move {
            let params: Vec<&(dyn ToSql + Sync)> =
                texts.iter().map(|t| t as &(dyn ToSql + Sync)).collect();
            client.execute(&sql, &params).await.map(|_| ())
        }
    };
    // Every record has every column (null when not given): one shape, so runs of them
    // share a COPY or an unnest.
    let record = |n: i64, v: &Value| {
        let mut v = v.clone();
        for (c, _) in TYPED {
            if v.get(c).is_none() {
                v[c] = Value::Null;
            }
        }
        v["n"] = json!(n);
        rec(v, n)
    };

    // Insert, ≥ 64 rows: binary COPY, then text COPY (the text-only values in the run).
    let mut batch = Vec::new();
    let mut n = 0;
    for _ in 0..16 {
        for v in &binary {
            batch.push(record(n, v));
            want(n, v).await.unwrap();
            n += 1;
        }
    }
    let mut task = db.task("got", json!({})).await;
    assert!(task.put(&batch).await.unwrap().failed.is_empty());
    let mut batch = Vec::new();
    for _ in 0..14 {
        for v in binary.iter().chain(&text_only) {
            batch.push(record(n, v));
            want(n, v).await.unwrap();
            n += 1;
        }
    }
    assert!(task.put(&batch).await.unwrap().failed.is_empty());
    // Insert, a few rows: typed unnest; upsert: typed unnest, then with text columns.
    for v in binary.iter().chain(&text_only) {
        assert!(task.put(&[record(n, v)]).await.unwrap().failed.is_empty());
        want(n, v).await.unwrap();
        n += 1;
    }
    let upsert = json!({"insert.mode": "upsert", "pk.mode": "record_value", "pk.fields": "n"});
    let mut task = db.task("got", upsert).await;
    for vs in [&binary[..], &text_only[..]] {
        let batch: Vec<Arc<Record>> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| record(n + i as i64, v))
            .collect();
        assert!(task.put(&batch).await.unwrap().failed.is_empty());
        for v in vs {
            want(n, v).await.unwrap();
            n += 1;
        }
    }

    let rows = |table: &str| {
        let sql = format!("SELECT r::text FROM {s}.{table} r ORDER BY n");
        let client = &db.client;
        async move {
            let rows = client.query(&sql, &[]).await.unwrap();
            rows.iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        }
    };
    let (got, expected) = (rows("got").await, rows("want").await);
    assert_eq!(got.len() as i64, n);
    for (g, w) in got.iter().zip(&expected) {
        assert_eq!(g, w);
    }

    // Floats PostgreSQL refuses (overflow, underflow to zero) are refused as it would.
    let mut task = db.task("got", json!({})).await;
    let mut batch: Vec<Arc<Record>> = (0..70).map(|i| record(n + i, &binary[0])).collect();
    batch[10] = record(n + 10, &json!({"f8": "1e-400"}));
    batch[20] = record(n + 20, &json!({"f4": "1e39"}));
    let r = task.put(&batch).await.unwrap();
    let failed: Vec<usize> = r.failed.iter().map(|f| f.index).collect();
    assert_eq!(failed, vec![10, 20], "{:?}", r.failed);
    assert!(
        r.failed.iter().all(|f| f.error.message().contains("22003")),
        "{:?}",
        r.failed
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_insert_never_duplicates_redelivered_records() {
    let db = TestDb::new().await;
    db.client
        .batch_execute(&format!("CREATE TABLE {}.purchases {PURCHASES}", db.schema))
        .await
        .unwrap();
    let offsets_table = format!("{}.offsets", db.schema);
    let cfg = json!({"exactly.once": true, "exactly.once.table": offsets_table});
    let batch = |from: i64, to: i64| -> Vec<Arc<Record>> {
        (from..to)
            .map(|i| rec(json!({"event_id": i, "name": "n"}), i))
            .collect()
    };
    let mut task = db.task("purchases", cfg.clone()).await;
    assert!(task.put(&batch(0, 10)).await.unwrap().failed.is_empty());
    // Redelivery overlapping what was written.
    assert!(task.put(&batch(5, 15)).await.unwrap().failed.is_empty());
    drop(task);
    // A restarted task reads the stored offsets back.
    let mut task = db.task("purchases", cfg).await;
    assert!(task.put(&batch(0, 20)).await.unwrap().failed.is_empty());
    let row = db
        .client
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT event_id), \
                 (SELECT \"offset\" FROM {}.offsets) FROM {}.purchases",
                db.schema, db.schema
            ),
            &[],
        )
        .await
        .unwrap();
    let got: (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(got, (20, 20, 19));
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_table_without_auto_create_fails_the_batch() {
    let db = TestDb::new().await;
    let mut task = db.task("nope", json!({})).await;
    let err = task.put(&[rec(json!({"a": 1}), 0)]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Fatal, "{err}");
    assert!(err.message().contains("auto.create"), "{err}");
    db.drop().await;
}

fn map(v: Value) -> ConfigMap {
    serde_json::from_value(v).unwrap()
}

#[test]
fn validation_names_the_keys() {
    let keys = |v: Value| -> Vec<String> {
        PostgresSinkPlugin
            .validate(&map(v))
            .into_iter()
            .filter_map(|i| i.key)
            .collect()
    };
    assert_eq!(keys(json!({})), vec!["connection.url"]);
    assert_eq!(
        keys(json!({"connection.url": "postgres://h/db", "insert.mode": "upsert"})),
        vec!["pk.mode"]
    );
    assert_eq!(
        keys(
            json!({"connection.url": "postgres://h/db", "delete.enabled": "true",
                    "pk.mode": "record_value"})
        ),
        vec!["delete.enabled", "pk.fields"]
    );
    assert_eq!(
        keys(json!({"connection.url": "ftp://h", "batch.size": "0"})),
        vec!["batch.size"]
    );
    assert_eq!(
        keys(json!({"connection.url": "ftp://h"})),
        vec!["connection.url"]
    );
    assert_eq!(
        keys(json!({"connection.url": "postgres://h/db", "insert.mode": "merge"})),
        vec!["insert.mode"]
    );
    assert_eq!(
        keys(json!({"connection.url": "postgres://h/db", "connection.sslmode": "sometimes"})),
        vec!["connection.sslmode"]
    );
    assert_eq!(
        keys(json!({"connection.url": "postgres://h/db?sslmode=sometimes"})),
        vec!["connection.url"]
    );
    assert!(
        keys(json!({"connection.url": "jdbc:postgresql://h/db?ssl=true",
                    "connection.sslmode": "verify-full", "connection.sslrootcert": "/ca.pem"}))
        .is_empty()
    );
    let ok = PostgresSinkConfig::parse(&map(json!({
        "connection.url": "jdbc:postgresql://h:5432/db", "insert.mode": "UPSERT",
        "pk.mode": "record_value", "pk.fields": "a, b", "fields.include": "c",
        "fields.whitelist": "d", "batch.size": "10", "auto.create": "true"
    })))
    .unwrap();
    assert_eq!(ok.insert_mode, InsertMode::Upsert);
    assert_eq!(ok.pk_fields, vec!["a", "b"]);
    assert_eq!(ok.batch_size, 10);
    assert_eq!(ok.connection_pool_size, 2);
    assert_eq!(ok.table_name_format, "${topic}");
    assert_eq!(ok.whitelist().len(), 2);
}

#[test]
fn info_and_schema() {
    let info = PostgresSinkPlugin.info();
    assert_eq!(info.class, "PostgresSink");
    assert_eq!(info.kind, PluginKind::Sink);
    assert!(info.aliases.iter().any(|a| a == "JdbcSink"));
    assert!(
        info.aliases
            .iter()
            .any(|a| a == "io.confluent.connect.jdbc.JdbcSinkConnector")
    );
    let schema = PostgresSinkPlugin.config_schema();
    let props = &schema["properties"];
    for key in [
        "connection.url",
        "connection.password",
        "connection.sslmode",
        "connection.sslrootcert",
        "table.name.format",
        "insert.mode",
        "pk.mode",
        "pk.fields",
        "fields.whitelist",
        "fields.include",
        "delete.enabled",
        "auto.create",
        "auto.evolve",
        "max.retries",
        "retry.backoff.ms",
    ] {
        assert!(props[key]["description"].is_string(), "{key}: {schema:#}");
    }
    assert_eq!(props["batch.size"]["default"], json!(3000));
    assert_eq!(schema["required"], json!(["connection.url"]));
}

/// A value's text form for a column of `kind`, as text COPY and `text[]` send it.
fn convert(kind: TypeKind, value: &Value) -> Result<Option<String>, String> {
    cell::cell(kind, value).map(|c| c.text(kind).map(|t| t.into_owned()))
}

#[test]
fn values_convert_by_column_type() {
    let ok = |k: TypeKind, v: Value| convert(k, &v).unwrap();
    assert_eq!(ok(TypeKind::Int4, json!("42")), Some("42".into()));
    assert_eq!(ok(TypeKind::Int8, json!(7.0)), Some("7".into()));
    assert!(convert(TypeKind::Int2, &json!(40000)).is_err());
    assert!(convert(TypeKind::Int4, &json!(1.5)).is_err());
    assert!(convert(TypeKind::Int4, &json!(true)).is_err());
    assert_eq!(ok(TypeKind::Numeric, json!("1.25")), Some("1.25".into()));
    assert!(convert(TypeKind::Numeric, &json!("x")).is_err());
    assert_eq!(ok(TypeKind::Bool, json!("t")), Some("true".into()));
    assert_eq!(
        ok(TypeKind::Json, json!({"a": 1})),
        Some("{\"a\":1}".into())
    );
    assert_eq!(ok(TypeKind::Text, json!(5)), Some("5".into()));
    assert_eq!(ok(TypeKind::Text, Value::Null), None);
    assert_eq!(
        ok(TypeKind::Timestamptz, json!(0)),
        Some("1970-01-01T00:00:00Z".into())
    );
    assert_eq!(
        ok(TypeKind::Date, json!(86_400_000)),
        Some("1970-01-02".into())
    );
    assert!(convert(TypeKind::Timestamptz, &json!("yesterday-ish")).is_err());
    assert!(convert(TypeKind::Uuid, &json!("nope")).is_err());
    assert!(convert(TypeKind::Text, &json!("a\u{0}b")).is_err());
}

#[test]
fn table_names_take_the_topic_and_a_schema() {
    assert_eq!(table_for("${topic}", "orders"), (None, "orders".into()));
    assert_eq!(
        table_for("s.${topic}_v1", "orders"),
        (Some("s".into()), "orders_v1".into())
    );
}
