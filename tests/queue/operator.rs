//! The operator rpcs: ListJobs by state with page tokens, DeleteJob, and the
//! per-minute history kept in Redis.

use super::*;

/// Every job of `state` in `queue`, page by page of `size`.
async fn list_all(ctx: &TestContext, queue: &str, state: JobState, size: u32) -> Vec<JobInfo> {
    let mut jobs = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = ctx
            .queue()
            .list_jobs(ListJobsRequest {
                queue: queue.into(),
                state: state as i32,
                page_size: size,
                page_token,
            })
            .await
            .expect("list jobs")
            .into_inner();
        jobs.extend(page.jobs);
        if page.next_page_token.is_empty() {
            return jobs;
        }
        page_token = page.next_page_token;
    }
}

fn ids(jobs: &[JobInfo]) -> Vec<&str> {
    jobs.iter().map(|job| job.job_id.as_str()).collect()
}

pub(crate) async fn list_jobs_pages_through_each_state(ctx: &TestContext) {
    let q = "operator-list";
    for i in 0..7 {
        let spec = JobSpec {
            job_id: format!("w{i}"),
            // Higher priority first: w6 and w5 lead the waiting order.
            priority: u32::from(i >= 5),
            ..job("x")
        };
        enqueue(ctx, q, spec).await;
    }
    enqueue(
        ctx,
        q,
        JobSpec {
            job_id: "later".into(),
            delay: ms(60_000),
            ..job("x")
        },
    )
    .await;
    let waiting = list_all(ctx, q, JobState::Waiting, 3).await;
    assert_eq!(ids(&waiting), ["w5", "w6", "w0", "w1", "w2", "w3", "w4"]);
    assert!(
        waiting
            .iter()
            .all(|job| job.state == JobState::Waiting as i32)
    );
    assert_eq!(
        ids(&list_all(ctx, q, JobState::Delayed, 100).await),
        ["later"]
    );

    let leased = dequeue(ctx, q, 2, 1_000, 30_000).await;
    let active = list_all(ctx, q, JobState::Active, 1).await;
    assert_eq!(active.len(), 2);
    assert!(
        active
            .iter()
            .all(|job| leased.iter().any(|d| d.job_id == job.job_id))
    );

    // A page token stays valid when the job it ends on leaves the state.
    let first = ctx
        .queue()
        .list_jobs(ListJobsRequest {
            queue: q.into(),
            state: JobState::Waiting as i32,
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(ids(&first.jobs), ["w0", "w1"]);
    assert_eq!(first.total, 5);
    let taken = dequeue(ctx, q, 2, 1_000, 30_000).await;
    assert_eq!(
        taken.iter().map(|d| d.job_id.as_str()).collect::<Vec<_>>(),
        ["w0", "w1"]
    );
    let rest = ctx
        .queue()
        .list_jobs(ListJobsRequest {
            queue: q.into(),
            state: JobState::Waiting as i32,
            page_size: 10,
            page_token: first.next_page_token,
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(ids(&rest.jobs), ["w2", "w3", "w4"]);

    let refused = ctx
        .queue()
        .list_jobs(ListJobsRequest {
            queue: q.into(),
            ..Default::default()
        })
        .await;
    assert_invalid("state", refused);
    let bad_token = ctx
        .queue()
        .list_jobs(ListJobsRequest {
            queue: q.into(),
            state: JobState::Dead as i32,
            page_token: "zz".into(),
            ..Default::default()
        })
        .await;
    assert_invalid("page_token", bad_token);
}

pub(crate) async fn delete_job_takes_out_one_job_no_consumer_holds(ctx: &TestContext) {
    let q = "operator-delete";
    let group = |id: &str| JobSpec {
        job_id: id.into(),
        group: "customer-1".into(),
        ..job(id)
    };
    enqueue(ctx, q, group("first")).await;
    enqueue(ctx, q, group("second")).await;
    enqueue(
        ctx,
        q,
        JobSpec {
            job_id: "held".into(),
            ..job("held")
        },
    )
    .await;
    let delete = |id: &str| DeleteJobRequest {
        queue: q.into(),
        job_id: id.into(),
    };
    // Deleting the group's current job hands the group to the next one.
    let deleted = ctx
        .queue()
        .delete_job(delete("first"))
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleted.state, JobState::Waiting as i32);
    let missing = ctx
        .queue()
        .delete_job(delete("first"))
        .await
        .expect_err("gone");
    assert_eq!(missing.code(), Code::NotFound);
    let leased = dequeue(ctx, q, 2, 1_000, 30_000).await;
    let mut leased_ids: Vec<&str> = leased.iter().map(|d| d.job_id.as_str()).collect();
    leased_ids.sort_unstable();
    assert_eq!(leased_ids, ["held", "second"]);
    let active = ctx
        .queue()
        .delete_job(delete("held"))
        .await
        .expect_err("leased");
    assert_eq!(active.code(), Code::FailedPrecondition);
    assert!(active.message().contains("leased"), "{active:?}");
    let still = ctx
        .queue()
        .get_job(GetJobRequest {
            queue: q.into(),
            job_id: "held".into(),
        })
        .await
        .expect("the leased job is untouched")
        .into_inner();
    assert_eq!(still.job.expect("job").state, JobState::Active as i32);
    assert_invalid("job_id", ctx.queue().delete_job(delete("")).await);
}

pub(crate) async fn history_counts_each_minute_in_redis(ctx: &TestContext) {
    let q = "operator-history";
    for _ in 0..3 {
        enqueue(ctx, q, job("x")).await;
    }
    let jobs = dequeue(ctx, q, 3, 1_000, 30_000).await;
    ack(ctx, q, &jobs[0], b"").await.expect("ack");
    let history = ctx
        .queue()
        .get_history(GetHistoryRequest { queue: q.into() })
        .await
        .expect("history")
        .into_inner()
        .minutes;
    assert_eq!(history.len(), 60);
    let starts: Vec<i64> = history
        .iter()
        .map(|m| m.start_time.as_ref().expect("start").seconds)
        .collect();
    assert!(
        starts.windows(2).all(|w| w[1] - w[0] == 60),
        "consecutive minutes"
    );
    let total = |f: fn(&MinuteCounts) -> u64| history.iter().map(f).sum::<u64>();
    // The calls may straddle a minute boundary: count over the hour.
    assert_eq!(total(|m| m.enqueued), 3);
    assert_eq!(total(|m| m.started), 3);
    assert_eq!(total(|m| m.completed), 1);
    assert_eq!(total(|m| m.dead_lettered), 0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let last = *starts.last().expect("minutes");
    assert!(
        now.abs_diff(u64::try_from(last).expect("positive")) < 120,
        "ends now"
    );
}
