//! The DolphinScheduler plug-in against a FAKE of DolphinScheduler's HTTP API
//! (`common::dolphin`: DolphinScheduler's Java server cannot be had on these machines), for 3.2
//! and 3.3 each: register (active, inactive), suspend / resume, new schedules and
//! configurations, unregister (twice), reconciliation of what changed behind dyngate's back,
//! listing a catalog's workflows, a wrong token, DolphinScheduler down or failing half-way
//! (nothing left behind), and the HTTP task run as a worker runs it, its request read by
//! dyngate's own refresh-body parser. No PostgreSQL needed.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::dolphin::{FakeDolphin, Fire, Version, both};
use dyngate::core::rules::{Freshness, Unit};
use dyngate::http_client::Endpoint;
use dyngate::scheduler::dolphinscheduler::{self as ds, Config, DolphinScheduler, WorkflowHandle};
use dyngate::scheduler::{Handle, Plugin, PluginError, Repair, Target};
use serde_json::{Value, json};

const TOKEN: &str = "ds-t0ken-secret";
const CATALOG: &str = "5b1c8d8e-0000-4000-8000-00000000000a";
const START: &str = "2026-11-24T10:00:00+00:00";

/// A table to schedule (owns what a [`Target`] borrows).
struct Table {
    catalog: String,
    table: String,
    id: i64,
    freshness: Freshness,
    time_zone: String,
    conf: BTreeMap<String, String>,
}

impl Table {
    fn new(table: &str, id: i64) -> Table {
        Table {
            catalog: CATALOG.into(),
            table: table.into(),
            id,
            freshness: Freshness { n: 5, unit: Unit::Minute },
            time_zone: "Europe/Berlin".into(),
            conf: BTreeMap::new(),
        }
    }

    fn t(&self) -> Target<'_> {
        Target {
            catalog: &self.catalog,
            database: "shop",
            table_id: self.id,
            schema: "public",
            table: &self.table,
            freshness: self.freshness,
            time_zone: &self.time_zone,
            start: START,
            configuration: &self.conf,
        }
    }
}

fn plugin(fake: &FakeDolphin, token: &str, refresh_url: &str) -> DolphinScheduler {
    let ep = Endpoint::parse("DolphinScheduler", &fake.url(), Duration::from_secs(5)).unwrap();
    DolphinScheduler::new(Config::new(ep, token, fake.version, refresh_url))
}

async fn setup(v: Version) -> (FakeDolphin, DolphinScheduler) {
    let fake = FakeDolphin::start(v, TOKEN).await;
    let p = plugin(&fake, TOKEN, "http://127.0.0.1:9/v3/dynamic-tables/refresh");
    (fake, p)
}

fn wh(h: &Handle) -> WorkflowHandle {
    h.parse("test").unwrap()
}

fn failed(r: Result<impl std::fmt::Debug, PluginError>) -> String {
    match r {
        Err(PluginError::Failed(m)) => m,
        other => panic!("expected Failed, got {other:?}"),
    }
}

both!(
    register,
    suspend_resume,
    reschedule,
    unregister,
    reconcile,
    list,
    wrong_token,
    down_or_failing,
    half_way,
    leftovers,
    fire,
);

async fn register(v: Version) {
    let (fake, p) = setup(v).await;
    let a = Table::new("orders_daily", 1);
    let h = wh(&p.register(&a.t(), true).await.unwrap());
    let st = fake.state();
    assert_eq!(st.projects.len(), 1);
    assert_eq!(st.projects[0].name, "dyngate");
    assert_eq!(h.project_code, st.projects[0].code);
    assert_eq!(h.version, v.name());
    let w = st.workflow(h.workflow_code).unwrap();
    assert!(w.online, "released");
    assert_eq!(w.name, h.workflow_name);
    assert!(w.name.starts_with("dyngate__shop__public__orders_daily__"), "{}", w.name);
    assert!(ds::owned_by(&w.description, CATALOG), "{}", w.description);
    assert!(w.description.contains("\"public\".\"orders_daily\""), "{}", w.description);
    assert_eq!(w.tasks.len(), 1);
    assert_eq!(w.tasks[0]["code"], json!(h.task_code));
    assert_eq!(w.tasks[0]["taskType"], "HTTP");
    let s = st.schedule_of(h.workflow_code).unwrap();
    assert_eq!(Some(s.id), h.schedule_id);
    assert!(s.online);
    assert_eq!(s.crontab, "0 0/5 * * * ? *");
    assert_eq!(s.timezone_id, "Europe/Berlin");
    assert_eq!(s.start_time, "2026-11-23 22:00:00", "twelve hours early, UTC wall clock");
    assert_eq!(s.end_time, ds::END_TIME);
    assert_eq!(s.tenant_code, "default");

    // The task, as the version's HTTP task reads it.
    let params = w.task_params();
    let body: Value = match v {
        Version::V3_2 => {
            let body: serde_json::Map<String, Value> = params["httpParams"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["httpParametersType"] == "BODY")
                .map(|p| (p["prop"].as_str().unwrap().to_string(), p["value"].clone()))
                .collect();
            assert_eq!(params["httpMethod"], "POST");
            Value::Object(body)
        }
        Version::V3_3 => {
            assert_eq!(params["httpRequestMethod"], "POST");
            serde_json::from_str(params["httpRequestBody"].as_str().unwrap()).unwrap()
        }
    };
    assert_eq!(body["tables"], "\"public\".\"orders_daily\"");
    assert_eq!(body["scheduleTime"], "${system.datetime}");
    let conf: Value = serde_json::from_str(body["configuration"].as_str().unwrap()).unwrap();
    assert_eq!(conf["scheduler.run_id"], "${system.workflow.instance.id}");
    assert_eq!(conf["dolphinscheduler.workflow"], json!(h.workflow_name));
    assert_eq!(conf["dolphinscheduler.time_zone"], "Europe/Berlin");

    // Inactive: released, but the schedule stays offline.
    let b = Table::new("orders_hourly", 2);
    let hb = wh(&p.register(&b.t(), false).await.unwrap());
    let st = fake.state();
    assert_eq!(st.projects.len(), 1, "the project is found, not created again");
    assert!(st.workflow(hb.workflow_code).unwrap().online);
    assert!(!st.schedule_of(hb.workflow_code).unwrap().online);
    assert_ne!(hb.workflow_code, h.workflow_code);

    // Every write went as form parameters with the token header (the fake reads nothing else).
    assert!(
        st.requests
            .iter()
            .all(|r| !r.target.contains(TOKEN) && r.params.iter().all(|(_, v)| !v.contains(TOKEN)))
    );
    assert!(
        p.summary(&Handle::of(&h))
            .starts_with("DolphinScheduler workflow dyngate__shop__public__orders_daily__")
    );
    assert_eq!(p.key(&Handle::of(&h)), h.workflow_code.to_string());

    // A table name DolphinScheduler would take for its placeholders is refused up front.
    let odd = Table::new("t${system.datetime}", 3);
    assert!(matches!(p.register(&odd.t(), true).await, Err(PluginError::Unschedulable(_))));
    assert_eq!(fake.state().workflows.len(), 2);
}

async fn suspend_resume(v: Version) {
    let (fake, p) = setup(v).await;
    let a = Table::new("t", 1);
    let h = p.register(&a.t(), false).await.unwrap();
    let code = wh(&h).workflow_code;
    let online = || fake.state().schedule_of(code).unwrap().online;
    p.set_active(&h, true).await.unwrap();
    assert!(online());
    p.set_active(&h, true).await.unwrap();
    assert!(online(), "already online is fine");
    p.set_active(&h, false).await.unwrap();
    assert!(!online());
    p.set_active(&h, false).await.unwrap();
    assert!(!online());
    assert!(fake.state().workflow(code).unwrap().online, "the workflow stays released");
}

async fn reschedule(v: Version) {
    let (fake, p) = setup(v).await;
    let mut a = Table::new("t", 1);
    let h = p.register(&a.t(), true).await.unwrap();
    let code = wh(&h).workflow_code;
    a.freshness = Freshness { n: 2, unit: Unit::Hour };
    let h2 = p.reschedule(&h, &a.t()).await.unwrap();
    assert_eq!(h2, h);
    let st = fake.state();
    let s = st.schedule_of(code).unwrap();
    assert_eq!(
        (s.crontab.as_str(), s.timezone_id.as_str(), s.online),
        ("0 0 0/2 * * ? *", "Europe/Berlin", true)
    );
    assert_eq!(st.workflow(code).unwrap().version, 1, "the task did not change");

    // Another zone: the schedule's, and the task's (it tells the endpoint the zone of
    // scheduleTime). The workflow goes offline for the update, taking the schedule with it, and
    // both come back.
    a.time_zone = "UTC".into();
    assert_eq!(p.reschedule(&h, &a.t()).await.unwrap(), h);
    let st = fake.state();
    let s = st.schedule_of(code).unwrap();
    assert_eq!(
        (s.crontab.as_str(), s.timezone_id.as_str(), s.online),
        ("0 0 0/2 * * ? *", "UTC", true)
    );
    let w = st.workflow(code).unwrap();
    assert_eq!((w.version, w.online), (2, true));

    // A new configuration changes the task only.
    a.conf.insert("note".into(), "v2".into());
    p.reschedule(&h, &a.t()).await.unwrap();
    let st = fake.state();
    let w = st.workflow(code).unwrap();
    assert!(w.online);
    assert_eq!(w.version, 3);
    assert!(
        w.task_params().to_string().contains(r#"\\\"note\\\":\\\"v2\\\""#),
        "{}",
        w.task_params()
    );
    assert!(st.schedule_of(code).unwrap().online);

    // An inactive one stays inactive.
    let mut b = Table::new("u", 2);
    let hb = p.register(&b.t(), false).await.unwrap();
    b.freshness = Freshness { n: 1, unit: Unit::Day };
    b.conf.insert("k".into(), "v".into());
    p.reschedule(&hb, &b.t()).await.unwrap();
    let st = fake.state();
    let s = st.schedule_of(wh(&hb).workflow_code).unwrap();
    assert_eq!((s.crontab.as_str(), s.online), ("0 0 0 * * ? *", false));

    // Gone: reported (reconciliation recreates it).
    fake.tamper(|s| s.schedules.retain(|s| s.workflow_code != code));
    assert!(failed(p.reschedule(&h, &a.t()).await).contains("is gone"));
}

async fn unregister(v: Version) {
    let (fake, p) = setup(v).await;
    let a = Table::new("t", 1);
    let b = Table::new("u", 2);
    let ha = p.register(&a.t(), true).await.unwrap();
    let hb = p.register(&b.t(), false).await.unwrap();
    p.unregister(&ha).await.unwrap();
    let st = fake.state();
    assert_eq!(st.workflows.len(), 1);
    assert_eq!(st.schedules.len(), 1);
    assert!(st.workflow(wh(&hb).workflow_code).is_some());
    p.unregister(&ha).await.unwrap();
    p.unregister(&hb).await.unwrap();
    p.unregister(&hb).await.unwrap();
    let st = fake.state();
    assert!(st.workflows.is_empty() && st.schedules.is_empty());
    assert_eq!(st.projects.len(), 1, "the project stays");

    // A handle without a schedule id still removes the schedule.
    let hc = wh(&p.register(&a.t(), true).await.unwrap());
    let no_id = Handle::of(&WorkflowHandle { schedule_id: None, ..hc });
    p.unregister(&no_id).await.unwrap();
    assert!(fake.state().schedules.is_empty() && fake.state().workflows.is_empty());
}

async fn reconcile(v: Version) {
    let (fake, p) = setup(v).await;
    let mut a = Table::new("t", 1);
    let h = p.register(&a.t(), true).await.unwrap();
    let code = wh(&h).workflow_code;
    assert_eq!(p.reconcile(&h, &a.t(), true).await.unwrap(), Repair::InPlace(vec![]));

    // Put offline behind dyngate's back.
    fake.tamper(|s| s.schedules.iter_mut().for_each(|s| s.online = false));
    assert_eq!(
        p.reconcile(&h, &a.t(), true).await.unwrap(),
        Repair::InPlace(vec!["schedule put online".into()])
    );
    assert!(fake.state().schedule_of(code).unwrap().online);
    // Suspended in the catalog: put offline.
    assert_eq!(
        p.reconcile(&h, &a.t(), false).await.unwrap(),
        Repair::InPlace(vec!["schedule put offline".into()])
    );
    p.set_active(&h, true).await.unwrap();

    // The workflow taken OFFLINE (its schedule with it).
    fake.tamper(|s| {
        s.workflows.iter_mut().for_each(|w| w.online = false);
        s.schedules.iter_mut().for_each(|s| s.online = false);
    });
    let r = p.reconcile(&h, &a.t(), true).await.unwrap();
    assert_eq!(
        r,
        Repair::InPlace(vec!["workflow released ONLINE".into(), "schedule put online".into()])
    );
    let st = fake.state();
    assert!(st.workflow(code).unwrap().online && st.schedule_of(code).unwrap().online);

    // Another cron or zone.
    a.freshness = Freshness { n: 30, unit: Unit::Second };
    let Repair::InPlace(notes) = p.reconcile(&h, &a.t(), true).await.unwrap() else {
        panic!()
    };
    assert_eq!(notes, ["schedule 0 0/5 * * * ? * Europe/Berlin -> 0/30 * * * * ? * Europe/Berlin"]);
    let s = fake.state().schedule_of(code).unwrap().clone();
    assert_eq!((s.crontab.as_str(), s.online), ("0/30 * * * * ? *", true));

    // The schedule deleted: created again, with a new id the catalog must keep; the workflow is
    // the same, so the handle is Updated (a Recreated one would be removed again should the
    // catalog fail to record it).
    fake.tamper(|s| s.schedules.clear());
    let Repair::Updated { handle: h2, fixes } = p.reconcile(&h, &a.t(), true).await.unwrap() else {
        panic!()
    };
    assert!(fixes.iter().any(|f| f.contains("created again")), "{fixes:?}");
    let w2 = wh(&h2);
    assert_eq!(w2.workflow_code, code);
    let s2 = fake.state().schedule_of(code).unwrap().clone();
    assert_eq!(w2.schedule_id, Some(s2.id));
    assert_ne!(Some(s2.id), wh(&h).schedule_id);
    assert!(s2.online);
    assert_eq!(p.reconcile(&h2, &a.t(), true).await.unwrap(), Repair::InPlace(vec![]));

    // The workflow deleted (and its schedule): registered anew.
    fake.tamper(|s| {
        s.workflows.clear();
        s.schedules.clear();
    });
    let Repair::Recreated(h3) = p.reconcile(&h2, &a.t(), false).await.unwrap() else {
        panic!()
    };
    let w3 = wh(&h3);
    assert_ne!(w3.workflow_code, code);
    let st = fake.state();
    assert!(st.workflow(w3.workflow_code).unwrap().online);
    assert!(!st.schedule_of(w3.workflow_code).unwrap().online, "inactive as asked");

    // The task changed behind dyngate's back: put back.
    fake.tamper(|s| s.workflows[0].tasks[0]["taskParams"]["url"] = json!("http://elsewhere/"));
    let r = p.reconcile(&h3, &a.t(), false).await.unwrap();
    assert_eq!(r, Repair::InPlace(vec!["task updated".into()]));
    assert_eq!(
        fake.state().workflows[0].task_params()["url"],
        "http://127.0.0.1:9/v3/dynamic-tables/refresh"
    );
}

async fn list(v: Version) {
    let (fake, p) = setup(v).await;
    assert!(p.list(CATALOG).await.unwrap().is_empty(), "no project yet");
    let a = Table::new("a", 1);
    let b = Table::new("b", 2);
    let mut other = Table::new("a", 1);
    other.catalog = "another-catalog".into();
    let ha = p.register(&a.t(), true).await.unwrap();
    let hb = p.register(&b.t(), false).await.unwrap();
    let ho = p.register(&other.t(), true).await.unwrap();
    assert_ne!(wh(&ha).workflow_name, wh(&ho).workflow_name, "same table in another catalog");
    // A workflow made by hand in the same project.
    fake.tamper(|s| {
        let mut w = s.workflows[0].clone();
        w.code = 1;
        w.name = "by hand".into();
        w.description = "nothing to do with dyngate".into();
        s.workflows.push(w);
    });
    let mut mine = p.list(CATALOG).await.unwrap();
    mine.sort_by_key(|h| wh(h).workflow_code);
    let mut want = vec![ha.clone(), hb.clone()];
    want.sort_by_key(|h| wh(h).workflow_code);
    assert_eq!(mine, want, "the same handles register returned");
    assert_eq!(p.list("another-catalog").await.unwrap(), vec![ho]);
    assert!(p.list("5b1c8d8e").await.unwrap().is_empty(), "a prefix is another catalog");
    let keys: Vec<String> = mine.iter().map(|h| p.key(h)).collect();
    assert!(keys.contains(&p.key(&ha)) && keys.contains(&p.key(&hb)));
}

async fn wrong_token(v: Version) {
    let fake = FakeDolphin::start(v, TOKEN).await;
    let p = plugin(&fake, "not-the-token", "http://127.0.0.1:9/r");
    let a = Table::new("t", 1);
    let m = failed(p.register(&a.t(), true).await);
    assert!(m.starts_with("DolphinScheduler: "), "{m}");
    assert!(m.contains("401") && m.contains("access token"), "{m}");
    assert!(!m.contains("not-the-token") && !m.contains(TOKEN), "{m}");
    assert!(fake.state().projects.is_empty());
    let m = failed(p.list(CATALOG).await);
    assert!(m.contains("401"), "{m}");
}

async fn down_or_failing(v: Version) {
    let (fake, p) = setup(v).await;
    let a = Table::new("t", 1);
    fake.down().await;
    let m = failed(p.register(&a.t(), true).await);
    assert!(m.contains("unreachable"), "{m}");
    assert!(!m.contains(TOKEN));
    fake.up().await;
    let st = fake.state();
    assert!(st.projects.is_empty() && st.workflows.is_empty() && st.schedules.is_empty());

    fake.fail_all(true);
    let m = failed(p.register(&a.t(), true).await);
    assert!(m.contains("HTTP 500"), "{m}");
    fake.fail_all(false);

    // Down after registering: suspending and dropping fail and say why; once it is back they
    // work.
    let h = p.register(&a.t(), true).await.unwrap();
    fake.down().await;
    assert!(failed(p.set_active(&h, false).await).contains("unreachable"));
    assert!(failed(p.unregister(&h).await).contains("unreachable"));
    fake.up().await;
    p.unregister(&h).await.unwrap();
    assert!(fake.state().workflows.is_empty());
}

async fn half_way(v: Version) {
    let (fake, p) = setup(v).await;
    let a = Table::new("t", 1);
    // The schedule's creation fails: the released workflow is taken offline and deleted.
    fake.fail("POST", "/schedules", 200, Some(10076));
    let m = failed(p.register(&a.t(), true).await);
    assert!(m.contains("creating the schedule") && m.contains("code 10076"), "{m}");
    let st = fake.state();
    assert!(st.workflows.is_empty() && st.schedules.is_empty(), "{:?}", st.workflows);
    fake.clear_failures();

    // Putting it online fails: schedule and workflow removed.
    fake.fail("POST", "/online", 500, None);
    let m = failed(p.register(&a.t(), true).await);
    assert!(m.contains("online") && m.contains("HTTP 500"), "{m}");
    let st = fake.state();
    assert!(st.workflows.is_empty() && st.schedules.is_empty());
    fake.clear_failures();

    // Releasing fails.
    fake.fail("POST", "/release", 200, Some(50020));
    let m = failed(p.register(&a.t(), false).await);
    assert!(m.contains("ONLINE") && m.contains("50020"), "{m}");
    fake.clear_failures();
    assert!(fake.state().workflows.is_empty());

    p.register(&a.t(), true).await.unwrap();
    assert_eq!(fake.state().workflows.len(), 1);
}

async fn leftovers(v: Version) {
    let (fake, p) = setup(v).await;
    let a = Table::new("t", 1);
    // A workflow of this table left behind (say the catalog change that followed failed).
    let old = wh(&p.register(&a.t(), true).await.unwrap());
    let new = wh(&p.register(&a.t(), true).await.unwrap());
    assert_eq!(new.workflow_name, old.workflow_name);
    assert_ne!(new.workflow_code, old.workflow_code);
    let st = fake.state();
    assert_eq!(st.workflows.len(), 1);
    assert_eq!(st.schedules.len(), 1);
    assert!(st.schedule_of(new.workflow_code).unwrap().online);

    // A workflow of that name that is not this catalog's is left alone.
    fake.tamper(|s| s.workflows[0].description = "someone else's".into());
    // A conflict of this one table's, not an outage: reconciliation goes on with the others.
    let Err(PluginError::Conflict(m)) = p.register(&a.t(), true).await else {
        panic!("expected a conflict")
    };
    assert!(m.contains("does not own"), "{m}");
    assert_eq!(fake.state().workflows.len(), 1);
}

/// The calls a stand-in endpoint received: `Authorization` header and body.
type Calls = Arc<Mutex<Vec<(Option<String>, String)>>>;

/// A stand-in for dyngate's refresh endpoint: records each call's headers and body and answers
/// with the status set.
async fn recorder() -> (String, Calls, Arc<AtomicU16>) {
    let calls: Calls = Arc::default();
    let status = Arc::new(AtomicU16::new(200));
    let (seen, answer) = (calls.clone(), status.clone());
    let app = axum::Router::new().route(
        "/v3/dynamic-tables/refresh",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (seen, answer) = (seen.clone(), answer.clone());
            async move {
                let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_string());
                seen.lock().unwrap().push((auth, body));
                let status = axum::http::StatusCode::from_u16(answer.load(Ordering::SeqCst)).unwrap();
                (status, axum::Json(json!({"jobId": "dyngate-test", "clusterInfo": {}})))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v3/dynamic-tables/refresh"), calls, status)
}

async fn fire(v: Version) {
    let fake = FakeDolphin::start(v, TOKEN).await;
    let (url, calls, status) = recorder().await;
    let ep = Endpoint::parse("DolphinScheduler", &fake.url(), Duration::from_secs(5)).unwrap();
    let mut cfg = Config::new(ep, TOKEN, v, &url);
    cfg.refresh_token = Some("refresh-t0k".into());
    let p = DolphinScheduler::new(cfg);
    let mut a = Table::new("Orders \"EU\"", 1);
    a.time_zone = "UTC".into();
    a.conf.insert("spark.sql.shuffle.partitions".into(), "8".into());
    let h = wh(&p.register(&a.t(), true).await.unwrap());
    let id = h.schedule_id.unwrap();

    let fired = fake.fire(Fire::Schedule(id), "2024-01-02 00:05:00").await.unwrap();
    assert_eq!(fired.status, 200);
    assert!(fired.success, "{fired:?}");
    assert_eq!(fired.authorization.as_deref(), Some("Bearer refresh-t0k"));
    let (auth, body) = calls.lock().unwrap().last().cloned().unwrap();
    assert_eq!(auth.as_deref(), Some("Bearer refresh-t0k"));
    assert_eq!(body, fired.sent_body);
    // Flat: string values only (what the 3.3 task can send at all).
    let v_body: serde_json::Map<String, Value> = serde_json::from_str(&body).unwrap();
    assert!(v_body.values().all(Value::is_string), "{body}");
    // dyngate's endpoint reads exactly that.
    let req = dyngate::http::api::parse_refresh_body(body.as_bytes()).unwrap();
    assert_eq!(req.tables.len(), 1);
    assert_eq!(req.tables[0].schema.as_deref(), Some("public"));
    assert_eq!(req.tables[0].name, "Orders \"EU\"");
    assert_eq!(
        req.schedule_time,
        dyngate::core::time::ScheduleTime::Local(1_704_153_900),
        "2024-01-02 00:05:00, in the table's zone"
    );
    assert_eq!(req.scheduler_run_id, Some(fired.instance_id.to_string()));
    assert!(!req.wait);
    let conf: Value = serde_json::from_str(v_body["configuration"].as_str().unwrap()).unwrap();
    assert_eq!(conf["spark.sql.shuffle.partitions"], "8");
    assert_eq!(conf["dolphinscheduler.workflow"], json!(h.workflow_name));

    // Each run its own instance id.
    let again = fake.fire(Fire::Workflow(h.workflow_code), "2024-01-02 00:10:00").await.unwrap();
    assert_ne!(again.instance_id, fired.instance_id);

    // Only 200 counts: a 202 would be a failed task.
    status.store(202, Ordering::SeqCst);
    let f = fake.fire(Fire::Schedule(id), "2024-01-02 00:15:00").await.unwrap();
    assert_eq!((f.status, f.success), (202, false));
    status.store(200, Ordering::SeqCst);

    // A suspended table's schedule does not fire.
    p.set_active(&Handle::of(&h), false).await.unwrap();
    assert!(fake.fire(Fire::Schedule(id), "2024-01-02 00:20:00").await.is_err());
}

/// The other version's paths answer 404.
#[tokio::test]
async fn other_versions_paths() {
    let fake = FakeDolphin::start(Version::V3_2, TOKEN).await;
    let ep = Endpoint::parse("DolphinScheduler", &fake.url(), Duration::from_secs(5)).unwrap();
    let p = DolphinScheduler::new(Config::new(ep, TOKEN, Version::V3_3, "http://127.0.0.1:9/r"));
    let m = failed(p.register(&Table::new("t", 1).t(), true).await);
    assert!(m.contains("creating workflow") && m.contains("HTTP 404"), "{m}");
    assert!(fake.state().workflows.is_empty());
}

/// 3.3's task cannot send a nested body: the fake refuses to run one, as the worker fails it.
#[tokio::test]
async fn nested_bodies_fail_on_3_3() {
    let fake = FakeDolphin::start(Version::V3_3, TOKEN).await;
    let (url, calls, _) = recorder().await;
    let p = plugin(&fake, TOKEN, &url);
    let h = wh(&p.register(&Table::new("t", 1).t(), true).await.unwrap());
    fake.tamper(|s| {
        let p = &mut s.workflows[0].tasks[0]["taskParams"];
        let nested = r#"{"tables":["t"],"scheduleTime":"${system.datetime}"}"#;
        p["httpBody"] = json!(nested);
        p["httpRequestBody"] = json!(nested);
    });
    let e = fake.fire(Fire::Workflow(h.workflow_code), "2024-01-02 00:00:00").await.unwrap_err();
    assert!(e.contains("json to map"), "{e}");
    assert!(calls.lock().unwrap().is_empty());
}
