//! How Cache data sits in Redis: the key schema, scripts after a flush.

use super::*;

/// User keys land under rw:c: with hash-tag braces escaped, as the key schema says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn user_keys_are_stored_under_the_schema_with_braces_escaped() {
    let mut ctx = TestContext::standalone().await;
    set(&ctx, "user:{42}", b"v").await;
    let mut conn = ctx.redis().connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).expect("keys");
    assert_eq!(keys, vec!["rw:c:user:%7B42%7D".to_owned()]);
}

/// Cache calls that run scripts keep working after SCRIPT FLUSH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
pub(crate) async fn scripts_survive_script_flush() {
    let mut ctx = TestContext::standalone().await;
    let cas = |expected: &[u8], value: &[u8]| SetRequest {
        key: "sf:k".into(),
        value: value.to_vec(),
        condition: SetCondition::IfEqual as i32,
        expected: expected.to_vec(),
        ..Default::default()
    };
    set(&ctx, "sf:k", b"a").await;
    assert!(
        ctx.cache()
            .set(cas(b"a", b"b"))
            .await
            .expect("cas")
            .into_inner()
            .written
    );
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut ctx.redis().connection())
        .expect("flush");
    assert!(
        ctx.cache()
            .set(cas(b"b", b"c"))
            .await
            .expect("cas after SCRIPT FLUSH")
            .into_inner()
            .written
    );
    assert_eq!(get(&ctx, "sf:k").await.as_deref(), Some(&b"c"[..]));
}
