//! The operator CLI (`redwire queue ...`, `stream`, `pubsub`, `lock`, `cache`)
//! against a real server: each command's table and `--json` output, and the
//! exit codes scripts rely on (3 not found, 4 not allowed, 5 unavailable).

mod support;

use std::time::Duration;

use redwire::proto::*;
use serde_json::Value;
use support::auth::AuthFile;
use support::{TestContext, eventually, free_port};

/// What one run of the CLI gave.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The output as JSON, after checking the run succeeded.
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", self.stdout))
    }
}

/// `redwire <args> --server <ctx>` (plus `extra`).
async fn cli(server: &str, args: &[&str], extra: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_redwire"))
        .args(args)
        .args(["--server", server])
        .args(extra)
        .env_remove("REDWIRE_TOKEN")
        .output()
        .await
        .expect("run the cli");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn server(ctx: &TestContext) -> String {
    format!("http://{}", ctx.addr)
}

async fn enqueue(ctx: &TestContext, queue: &str, id: &str, max_attempts: u32) {
    ctx.queue()
        .enqueue(EnqueueRequest {
            queue: queue.into(),
            job: Some(JobSpec {
                job_id: id.into(),
                payload: format!("payload of {id}").into_bytes(),
                max_attempts: Some(max_attempts),
                ..Default::default()
            }),
        })
        .await
        .expect("enqueue");
}

/// Leases the next job of `queue` and fails it with `error`.
async fn fail_next(ctx: &TestContext, queue: &str, error: &str) {
    let jobs = ctx
        .queue()
        .dequeue(DequeueRequest {
            queue: queue.into(),
            max_jobs: 1,
            wait: support::ms(5_000),
            ..Default::default()
        })
        .await
        .expect("dequeue")
        .into_inner()
        .jobs;
    let job = jobs.first().expect("a job");
    ctx.queue()
        .nack(NackRequest {
            queue: queue.into(),
            item: Some(NackItem {
                job_id: job.job_id.clone(),
                lease_token: job.lease_token.clone(),
                error: error.into(),
                permanent: true,
                retry_after: None,
            }),
        })
        .await
        .expect("nack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_commands_show_and_fix_a_queue() {
    let ctx = TestContext::standalone().await;
    let s = server(&ctx);
    enqueue(&ctx, "mail", "welcome-1", 3).await;
    enqueue(&ctx, "mail", "broken-1", 1).await;
    enqueue(&ctx, "mail", "broken-2", 1).await;
    fail_next(&ctx, "mail", "ignored: the first is welcome-1").await;
    fail_next(&ctx, "mail", "smtp 550 no such user").await;
    fail_next(&ctx, "mail", "smtp 550 no such user").await;
    // welcome-1 was nacked permanently too: three dead jobs in all.

    let ls = cli(&s, &["queue", "ls"], &["--json"]).await.json();
    assert_eq!(ls[0]["queue"], "mail");
    assert_eq!(ls[0]["dead"], 3);
    let table = cli(&s, &["queue", "ls"], &[]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.starts_with("QUEUE"), "{}", table.stdout);
    assert!(
        table.stdout.lines().any(|l| l.starts_with("mail ")),
        "{}",
        table.stdout
    );

    let stats = cli(&s, &["queue", "stats", "mail"], &["--json"])
        .await
        .json();
    assert_eq!(
        (stats["dead"].as_i64(), stats["waiting"].as_i64()),
        (Some(3), Some(0))
    );

    let dead = cli(
        &s,
        &["queue", "jobs", "mail", "--state", "dead", "--limit", "2"],
        &["--json"],
    )
    .await
    .json();
    assert_eq!(dead["total"], 3);
    assert_eq!(dead["jobs"].as_array().map(Vec::len), Some(2));
    let token = dead["next_page_token"].as_str().expect("token").to_owned();
    assert!(!token.is_empty(), "a second page");
    let rest = cli(
        &s,
        &[
            "queue",
            "jobs",
            "mail",
            "--state",
            "dead",
            "--page-token",
            &token,
        ],
        &["--json"],
    )
    .await
    .json();
    assert_eq!(rest["jobs"].as_array().map(Vec::len), Some(1));

    let job = cli(&s, &["queue", "job", "mail", "broken-2"], &["--json"])
        .await
        .json();
    assert_eq!(job["state"], "dead");
    assert_eq!(job["payload"], "payload of broken-2");
    assert_eq!(job["errors"][0], "smtp 550 no such user");
    let shown = cli(&s, &["queue", "job", "mail", "broken-2"], &[]).await;
    assert!(
        shown.stdout.contains("smtp 550 no such user"),
        "{}",
        shown.stdout
    );
    let missing = cli(&s, &["queue", "job", "mail", "nope"], &[]).await;
    assert_eq!(missing.code, 3, "not found: {}", missing.stderr);

    let one = cli(
        &s,
        &["queue", "redrive", "mail", "--job", "broken-1"],
        &["--json"],
    )
    .await
    .json();
    assert_eq!(one["redriven"], 1);
    let all = cli(&s, &["queue", "redrive", "mail", "--all"], &["--json"])
        .await
        .json();
    assert_eq!(all["redriven"], 2);
    let usage = cli(&s, &["queue", "redrive", "mail"], &[]).await;
    assert_eq!(usage.code, 2, "--job or --all is required");

    let deleted = cli(&s, &["queue", "delete", "mail", "broken-1"], &["--json"])
        .await
        .json();
    assert_eq!(deleted["state"], "waiting");
    assert_eq!(cli(&s, &["queue", "pause", "mail"], &[]).await.code, 0);
    let paused = cli(&s, &["queue", "stats", "mail"], &["--json"])
        .await
        .json();
    assert_eq!(paused["paused"], true);
    assert_eq!(cli(&s, &["queue", "resume", "mail"], &[]).await.code, 0);
    let waiting = cli(&s, &["queue", "jobs", "mail"], &["--json"])
        .await
        .json();
    let ids: Vec<&str> = waiting["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|job| job["job_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");

    let history = cli(&s, &["queue", "history", "mail"], &["--json"])
        .await
        .json();
    let minutes = history.as_array().expect("minutes");
    assert_eq!(minutes.len(), 60);
    let enqueued: u64 = minutes.iter().filter_map(|m| m["enqueued"].as_u64()).sum();
    assert_eq!(enqueued, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_pubsub_lock_and_cache_commands() {
    let ctx = TestContext::standalone().await;
    let s = server(&ctx);
    for n in ["1", "2"] {
        ctx.stream()
            .append(AppendRequest {
                stream: "orders".into(),
                fields: [("n".to_owned(), n.as_bytes().to_vec())].into(),
                ..Default::default()
            })
            .await
            .expect("append");
    }
    let streams = cli(&s, &["stream", "ls"], &["--json"]).await.json();
    assert_eq!(streams, serde_json::json!(["orders"]));
    let info = cli(&s, &["stream", "info", "orders"], &["--json"])
        .await
        .json();
    assert_eq!(info["length"], 2);
    let tail = cli(
        &s,
        &["stream", "tail", "orders", "--from", "0", "--count", "2"],
        &["--json"],
    )
    .await;
    assert_eq!(tail.code, 0, "{}", tail.stderr);
    let entries: Vec<Value> = tail
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["fields"]["n"], "2");

    // A subscriber started by the CLI gets what the CLI publishes.
    let subscriber = tokio::spawn({
        let s = s.clone();
        async move {
            cli(
                &s,
                &["pubsub", "subscribe", "alerts", "--count", "1"],
                &["--json"],
            )
            .await
        }
    });
    eventually(Duration::from_secs(20), "the subscriber to receive", || {
        let s = s.clone();
        async move {
            let published = cli(
                &s,
                &["pubsub", "publish", "alerts", "disk full"],
                &["--json"],
            )
            .await
            .json();
            (published["receivers"].as_i64() == Some(1)).then_some(())
        }
    })
    .await;
    let received = subscriber.await.expect("subscriber");
    let message: Value =
        serde_json::from_str(received.stdout.lines().next().expect("a line")).expect("json");
    assert_eq!(message["payload"], "disk full");

    // `pubsub ls` lists what subscribers listen to, with their count.
    let _listening = ctx
        .pubsub()
        .subscribe(SubscribeRequest {
            channels: vec!["news".into()],
            ..Default::default()
        })
        .await
        .expect("subscribe");
    let channels = cli(&s, &["pubsub", "ls"], &["--json"]).await.json();
    let news: Vec<&Value> = channels
        .as_array()
        .expect("a list")
        .iter()
        .filter(|c| c["name"] == "news")
        .collect();
    assert_eq!(
        news,
        [&serde_json::json!({"name": "news", "kind": "channel", "subscribers": 1, "dropped": 0})]
    );
    let table = cli(&s, &["pubsub", "ls"], &[]).await;
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("news") && l.contains("channel")),
        "{}",
        table.stdout
    );

    let lock = cli(&s, &["lock", "describe", "invoice-7"], &["--json"])
        .await
        .json();
    assert_eq!(lock["held"], false);
    // `lock ls` lists a held lock with its fencing token.
    let granted = ctx
        .lock()
        .acquire(AcquireRequest {
            resource: "invoice-7".into(),
            ttl: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("acquire")
        .into_inner();
    let held = eventually(Duration::from_secs(10), "the lock to be listed", || {
        let s = s.clone();
        async move {
            let locks = cli(&s, &["lock", "ls"], &["--json"]).await.json();
            let locks = locks.as_array().expect("a list").clone();
            (!locks.is_empty()).then_some(locks)
        }
    })
    .await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["resource"], "invoice-7");
    assert_eq!(held[0]["fencing_token"], granted.fencing_token);
    let table = cli(&s, &["lock", "ls"], &[]).await;
    assert!(
        table.stdout.lines().any(|l| l.starts_with("invoice-7")),
        "{}",
        table.stdout
    );

    assert_eq!(
        cli(
            &s,
            &["cache", "set", "greeting", "hello", "--ttl", "1m"],
            &[]
        )
        .await
        .code,
        0
    );
    let got = cli(&s, &["cache", "get", "greeting"], &[]).await;
    assert_eq!((got.code, got.stdout.trim()), (0, "hello"));
    let json = cli(&s, &["cache", "get", "greeting"], &["--json"])
        .await
        .json();
    assert_eq!(json["value"], "hello");
    let missing = cli(&s, &["cache", "get", "nothing-here"], &[]).await;
    assert_eq!(missing.code, 3, "{}", missing.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_say_not_allowed_and_unavailable() {
    let auth = AuthFile::new(&[("reader", "{ services = [\"queue\"], actions = [\"read\"] }")]);
    let path = auth.path().display().to_string();
    let ctx = TestContext::standalone_with(&["--auth-file", &path]).await;
    let s = server(&ctx);
    let token = auth.token("reader");
    let read = cli(&s, &["queue", "ls"], &["--token", token, "--json"]).await;
    assert_eq!(read.code, 0, "{}", read.stderr);
    let pause = cli(&s, &["queue", "pause", "mail"], &["--token", token]).await;
    assert_eq!(
        pause.code, 4,
        "a read grant may not pause: {}",
        pause.stderr
    );
    assert!(
        pause.stderr.contains("PERMISSION_DENIED"),
        "{}",
        pause.stderr
    );
    let anonymous = cli(&s, &["queue", "ls"], &[]).await;
    assert_eq!(anonymous.code, 4, "{}", anonymous.stderr);

    let nobody = format!("http://127.0.0.1:{}", free_port());
    let down = cli(&nobody, &["queue", "ls"], &["--timeout", "2s"]).await;
    assert_eq!(down.code, 5, "unavailable: {}", down.stderr);
}
