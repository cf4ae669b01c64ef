//! `redwire.v1.Cache`: strings, hashes, sets, sorted sets, lists and Bloom filters.
//!
//! Each handler is a short ladder: validate the request (INVALID_ARGUMENT naming the
//! field) → map user keys through the key schema (`rw:c:<escaped name>`, or
//! `rw:<tenant>/c:...` in a tenant, checked against the grants' name patterns
//! by the call's `crate::auth::Scope`) → call [`CacheStore`] → build the reply.
//!
//! Scripts (loaded once, re-sent automatically after `SCRIPT FLUSH` or a restart):
//! `cas_set.lua` (IF_EQUAL writes), `increment.lua` (TTL on creation),
//! `bloom_add.lua` / `bloom_contains.lua` with their shared prelude `bloom.lua`
//! (Bloom filters on plain bitmaps).

mod store;

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

pub use store::{Bound, CacheStore, Condition, End, Expiry, Popped, SortedSetPut, Ttl, bloom_size};

use crate::auth::Scope;
use crate::deadline;
use crate::error::{Error, Result};
use crate::proto::cache_server::Cache;
use crate::proto::*;
use crate::redis::keys::{Space, user_key};
use crate::time::proto_duration;
use crate::validate::{self, Limits};

/// Default Bloom filter capacity when the request leaves it 0.
const DEFAULT_BLOOM_ITEMS: u64 = 100_000;
/// Default Bloom filter false-positive rate when the request leaves it 0.
const DEFAULT_BLOOM_RATE: f64 = 0.01;
/// Bits a Bloom filter may have: Redis strings top out at 512 MiB (2^32 bits),
/// less our 96-bit header.
const MAX_BLOOM_BITS: u64 = (1 << 32) - 96;

/// The Cache service.
#[derive(Debug, Clone)]
pub struct CacheService {
    store: CacheStore,
    limits: Limits,
    shutdown: CancellationToken,
}

impl CacheService {
    /// A Cache service over `store`; blocking calls end when `shutdown` fires.
    pub fn new(store: CacheStore, limits: Limits, shutdown: CancellationToken) -> Self {
        Self {
            store,
            limits,
            shutdown,
        }
    }

    /// Validates a user key, checks the call's grants cover it, and returns
    /// its Redis key in the call's tenant.
    fn key(&self, scope: &Scope, field: impl std::fmt::Display, name: &str) -> Result<String> {
        self.limits.key(&field, name)?;
        scope.allow(field, name)?;
        Ok(user_key(scope.tenant(), Space::Cache, name))
    }

    /// [`CacheService::key`] for a batch of user keys.
    fn keys(&self, scope: &Scope, field: &str, names: &[String]) -> Result<Vec<String>> {
        self.limits.keys(field, names)?;
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                scope.allow(format_args!("{field}[{i}]"), name)?;
                Ok(user_key(scope.tenant(), Space::Cache, name))
            })
            .collect()
    }

    /// Validates a batch of field names (of a hash).
    fn fields(&self, field: &str, names: &[String]) -> Result<()> {
        self.limits.keys(field, names)
    }
}

/// Maps a proto list end to a domain end, with the rpc's default for unset.
fn list_end(field: &str, value: i32, default: End) -> Result<End> {
    match ListEnd::try_from(value) {
        Ok(ListEnd::Unspecified) => Ok(default),
        Ok(ListEnd::Front) => Ok(End::Front),
        Ok(ListEnd::Back) => Ok(End::Back),
        Err(_) => Err(Error::invalid(field, format!("unknown list end {value}"))),
    }
}

fn scored(members: Vec<(Vec<u8>, f64)>) -> Vec<ScoredMember> {
    members
        .into_iter()
        .map(|(member, score)| ScoredMember { member, score })
        .collect()
}

fn score_bound(field: &str, bound: Option<&ScoreBound>) -> Result<Option<Bound>> {
    bound
        .map(|b| {
            validate::score(format_args!("{field}.score"), b.score)?;
            Ok(Bound {
                score: b.score,
                exclusive: b.exclusive,
            })
        })
        .transpose()
}

#[tonic::async_trait]
impl Cache for CacheService {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let key = self.key(&scope, "key", &req.key)?;
        let value = self.store.get(&key).await?;
        Ok(Response::new(GetResponse {
            found: value.is_some(),
            value: value.unwrap_or_default(),
        }))
    }

    async fn set(&self, request: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let key = self.key(&scope, "key", &req.key)?;
        self.limits.value("value", &req.value)?;
        let ttl = validate::ttl("ttl", req.ttl.as_ref())?;
        let expiry = match (ttl, req.keep_ttl) {
            (Some(_), true) => {
                return Err(Error::invalid("keep_ttl", "cannot be combined with ttl").into());
            }
            (Some(ttl), false) => Expiry::After(ttl),
            (None, true) => Expiry::Keep,
            (None, false) => Expiry::Never,
        };
        let condition = match SetCondition::try_from(req.condition) {
            Ok(SetCondition::Unspecified | SetCondition::Always) => Condition::Always,
            Ok(SetCondition::IfAbsent) => Condition::IfAbsent,
            Ok(SetCondition::IfPresent) => Condition::IfPresent,
            Ok(SetCondition::IfEqual) => {
                self.limits.value("expected", &req.expected)?;
                Condition::IfEqual(req.expected)
            }
            Err(_) => {
                return Err(Error::invalid(
                    "condition",
                    format!("unknown condition {}", req.condition),
                )
                .into());
            }
        };
        let written = self.store.set(&key, &req.value, &condition, expiry).await?;
        Ok(Response::new(SetResponse { written }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let scope = Scope::of(&request);
        let keys = self.keys(&scope, "keys", &request.get_ref().keys)?;
        let deleted = self.store.delete(&keys).await?;
        Ok(Response::new(DeleteResponse { deleted }))
    }

    async fn get_many(
        &self,
        request: Request<GetManyRequest>,
    ) -> Result<Response<GetManyResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let keys = self.keys(&scope, "keys", &req.keys)?;
        let values = self.store.get_many(&keys).await?;
        Ok(Response::new(GetManyResponse {
            values: req
                .keys
                .into_iter()
                .zip(values)
                .map(|(key, value)| KeyValue {
                    key,
                    found: value.is_some(),
                    value: value.unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn set_many(
        &self,
        request: Request<SetManyRequest>,
    ) -> Result<Response<SetManyResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        self.limits.batch("values", &req.values)?;
        let ttl = validate::ttl("ttl", req.ttl.as_ref())?;
        let entries = req
            .values
            .into_iter()
            .enumerate()
            .map(|(i, kv)| {
                let key = self.key(&scope, format_args!("values[{i}].key"), &kv.key)?;
                self.limits
                    .value(format_args!("values[{i}].value"), &kv.value)?;
                Ok((key, kv.value))
            })
            .collect::<Result<Vec<_>>>()?;
        self.store.set_many(&entries, ttl).await?;
        Ok(Response::new(SetManyResponse {
            written: i64::try_from(entries.len()).unwrap_or(i64::MAX),
        }))
    }

    async fn increment(
        &self,
        request: Request<IncrementRequest>,
    ) -> Result<Response<IncrementResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let key = self.key(&scope, "key", &req.key)?;
        let ttl = validate::ttl("ttl", req.ttl.as_ref())?;
        let (value, created) = self.store.increment(&key, req.delta, ttl).await?;
        Ok(Response::new(IncrementResponse { value, created }))
    }

    async fn get_ttl(
        &self,
        request: Request<GetTtlRequest>,
    ) -> Result<Response<GetTtlResponse>, Status> {
        let scope = Scope::of(&request);
        let key = self.key(&scope, "key", &request.get_ref().key)?;
        let reply = match self.store.ttl(&key).await? {
            Ttl::Missing => GetTtlResponse {
                exists: false,
                ttl: None,
            },
            Ttl::Persistent => GetTtlResponse {
                exists: true,
                ttl: None,
            },
            Ttl::Expires(d) => GetTtlResponse {
                exists: true,
                ttl: Some(proto_duration(d)),
            },
        };
        Ok(Response::new(reply))
    }

    async fn update_ttl(
        &self,
        request: Request<UpdateTtlRequest>,
    ) -> Result<Response<UpdateTtlResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let key = self.key(&scope, "key", &req.key)?;
        let ttl = match req.change {
            Some(update_ttl_request::Change::Ttl(ttl)) => Some(validate::required(
                "ttl",
                validate::ttl("ttl", Some(&ttl))?,
            )?),
            Some(update_ttl_request::Change::Persist(true)) => None,
            Some(update_ttl_request::Change::Persist(false)) | None => {
                return Err(Error::invalid("change", "set either ttl or persist: true").into());
            }
        };
        let updated = self.store.update_ttl(&key, ttl).await?;
        Ok(Response::new(UpdateTtlResponse { updated }))
    }

    async fn hash_set(
        &self,
        request: Request<HashSetRequest>,
    ) -> Result<Response<HashSetResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let key = self.key(&scope, "key", &req.key)?;
        self.limits.entries("fields", req.fields.len())?;
        for (name, value) in &req.fields {
            self.limits.key(format_args!("fields[{name:?}]"), name)?;
            self.limits.value(format_args!("fields[{name:?}]"), value)?;
        }
        let added = self.store.hash_set(&key, &req.fields).await?;
        Ok(Response::new(HashSetResponse { added }))
    }

    async fn hash_get(
        &self,
        request: Request<HashGetRequest>,
    ) -> Result<Response<HashGetResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let key = self.key(&scope, "key", &req.key)?;
        if !req.fields.is_empty() {
            self.fields("fields", &req.fields)?;
        }
        let fields: HashMap<String, Vec<u8>> = self.store.hash_get(&key, &req.fields).await?;
        Ok(Response::new(HashGetResponse { fields }))
    }

    async fn hash_delete(
        &self,
        request: Request<HashDeleteRequest>,
    ) -> Result<Response<HashDeleteResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let key = self.key(&scope, "key", &req.key)?;
        self.fields("fields", &req.fields)?;
        let deleted = self.store.hash_delete(&key, &req.fields).await?;
        Ok(Response::new(HashDeleteResponse { deleted }))
    }

    async fn hash_increment(
        &self,
        request: Request<HashIncrementRequest>,
    ) -> Result<Response<HashIncrementResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let key = self.key(&scope, "key", &req.key)?;
        self.limits.key("field", &req.field)?;
        let value = self
            .store
            .hash_increment(&key, &req.field, req.delta)
            .await?;
        Ok(Response::new(HashIncrementResponse { value }))
    }

    async fn set_add(
        &self,
        request: Request<SetAddRequest>,
    ) -> Result<Response<SetAddResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let key = self.key(&scope, "key", &req.key)?;
        self.limits.values("members", &req.members)?;
        let added = self.store.set_add(&key, &req.members).await?;
        let added_count = i64::try_from(added.iter().filter(|&&a| a).count()).unwrap_or(i64::MAX);
        Ok(Response::new(SetAddResponse { added, added_count }))
    }

    async fn set_remove(
        &self,
        request: Request<SetRemoveRequest>,
    ) -> Result<Response<SetRemoveResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let key = self.key(&scope, "key", &req.key)?;
        self.limits.values("members", &req.members)?;
        let removed = self.store.set_remove(&key, &req.members).await?;
        Ok(Response::new(SetRemoveResponse { removed }))
    }

    async fn set_members(
        &self,
        request: Request<SetMembersRequest>,
    ) -> Result<Response<SetMembersResponse>, Status> {
        let scope = Scope::of(&request);
        let key = self.key(&scope, "key", &request.get_ref().key)?;
        let members = self.store.set_members(&key).await?;
        Ok(Response::new(SetMembersResponse { members }))
    }

    async fn set_contains(
        &self,
        request: Request<SetContainsRequest>,
    ) -> Result<Response<SetContainsResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let key = self.key(&scope, "key", &req.key)?;
        self.limits.values("members", &req.members)?;
        let contains = self.store.set_contains(&key, &req.members).await?;
        Ok(Response::new(SetContainsResponse { contains }))
    }

    async fn set_length(
        &self,
        request: Request<SetLengthRequest>,
    ) -> Result<Response<SetLengthResponse>, Status> {
        let scope = Scope::of(&request);
        let key = self.key(&scope, "key", &request.get_ref().key)?;
        let length = self.store.set_length(&key).await?;
        Ok(Response::new(SetLengthResponse { length }))
    }

    async fn sorted_set_put(
        &self,
        request: Request<SortedSetPutRequest>,
    ) -> Result<Response<SortedSetPutResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let key = self.key(&scope, "key", &req.key)?;
        self.limits.batch("members", &req.members)?;
        let members = req
            .members
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                self.limits
                    .value(format_args!("members[{i}].member"), &m.member)?;
                validate::score(format_args!("members[{i}].score"), m.score)?;
                Ok((m.member, m.score))
            })
            .collect::<Result<Vec<_>>>()?;
        match self
            .store
            .sorted_set_put(&key, &members, req.increment)
            .await?
        {
            SortedSetPut::Written { added, scores } => {
                Ok(Response::new(SortedSetPutResponse { added, scores }))
            }
            SortedSetPut::NotANumber(i) => Err(Error::invalid(
                format!("members[{i}].score"),
                "adding it to the stored score gives NaN (inf plus -inf); nothing was written",
            )
            .into()),
        }
    }

    async fn sorted_set_range(
        &self,
        request: Request<SortedSetRangeRequest>,
    ) -> Result<Response<SortedSetRangeResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let key = self.key(&scope, "key", &req.key)?;
        let members = self
            .store
            .sorted_set_range(&key, req.start, req.stop, req.descending)
            .await?;
        Ok(Response::new(SortedSetRangeResponse {
            members: scored(members),
        }))
    }

    async fn sorted_set_range_by_score(
        &self,
        request: Request<SortedSetRangeByScoreRequest>,
    ) -> Result<Response<SortedSetRangeByScoreResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let key = self.key(&scope, "key", &req.key)?;
        let min = score_bound("min", req.min.as_ref())?;
        let max = score_bound("max", req.max.as_ref())?;
        if req.offset < 0 {
            return Err(Error::invalid("offset", "must not be negative").into());
        }
        if req.count < 0 {
            return Err(Error::invalid("count", "must not be negative").into());
        }
        let members = self
            .store
            .sorted_set_range_by_score(&key, min, max, req.descending, req.offset, req.count)
            .await?;
        Ok(Response::new(SortedSetRangeByScoreResponse {
            members: scored(members),
        }))
    }

    async fn sorted_set_rank(
        &self,
        request: Request<SortedSetRankRequest>,
    ) -> Result<Response<SortedSetRankResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let key = self.key(&scope, "key", &req.key)?;
        self.limits.value("member", &req.member)?;
        let reply = match self
            .store
            .sorted_set_rank(&key, &req.member, req.descending)
            .await?
        {
            Some((rank, score)) => SortedSetRankResponse {
                found: true,
                rank,
                score,
            },
            None => SortedSetRankResponse::default(),
        };
        Ok(Response::new(reply))
    }

    async fn sorted_set_remove(
        &self,
        request: Request<SortedSetRemoveRequest>,
    ) -> Result<Response<SortedSetRemoveResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let key = self.key(&scope, "key", &req.key)?;
        self.limits.values("members", &req.members)?;
        let removed = self.store.sorted_set_remove(&key, &req.members).await?;
        Ok(Response::new(SortedSetRemoveResponse { removed }))
    }

    async fn list_push(
        &self,
        request: Request<ListPushRequest>,
    ) -> Result<Response<ListPushResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let key = self.key(&scope, "key", &req.key)?;
        self.limits.values("values", &req.values)?;
        let end = list_end("end", req.end, End::Back)?;
        if req.max_length < 0 {
            return Err(Error::invalid("max_length", "must not be negative").into());
        }
        let length = self
            .store
            .list_push(&key, &req.values, end, req.only_if_exists, req.max_length)
            .await?;
        Ok(Response::new(ListPushResponse { length }))
    }

    async fn list_pop(
        &self,
        request: Request<ListPopRequest>,
    ) -> Result<Response<ListPopResponse>, Status> {
        let scope = Scope::of(&request);
        let deadline = deadline::remaining(request.metadata());
        let req = request.into_inner();
        let keys = self.keys(&scope, "keys", &req.keys)?;
        let end = list_end("end", req.end, End::Front)?;
        let count = self.limits.count("count", req.count, 1)?;
        let wait = validate::duration("wait", req.wait.as_ref())?.unwrap_or_default();
        let wait = deadline::redis_block(wait, deadline);
        let popped = if wait >= Duration::from_millis(1) {
            self.store
                .require_one_slot("keys", &keys.iter().collect::<Vec<_>>())?;
            tokio::select! {
                popped = self.store.list_pop_wait(&keys, end, count, wait) => popped?,
                () = self.shutdown.cancelled() => return Err(Error::ShuttingDown.into()),
            }
        } else {
            self.store.list_pop(&keys, end, count).await?
        };
        let reply = match popped {
            Some(Popped { key, values }) => {
                let index = keys.iter().position(|k| *k == key).ok_or_else(|| {
                    Error::Internal(format!(
                        "redis popped from {key:?}, which was not asked for"
                    ))
                })?;
                ListPopResponse {
                    found: true,
                    key: req.keys[index].clone(),
                    values,
                }
            }
            None => ListPopResponse::default(),
        };
        Ok(Response::new(reply))
    }

    async fn list_range(
        &self,
        request: Request<ListRangeRequest>,
    ) -> Result<Response<ListRangeResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let key = self.key(&scope, "key", &req.key)?;
        let values = self.store.list_range(&key, req.start, req.stop).await?;
        Ok(Response::new(ListRangeResponse { values }))
    }

    async fn list_length(
        &self,
        request: Request<ListLengthRequest>,
    ) -> Result<Response<ListLengthResponse>, Status> {
        let scope = Scope::of(&request);
        let key = self.key(&scope, "key", &request.get_ref().key)?;
        let length = self.store.list_length(&key).await?;
        Ok(Response::new(ListLengthResponse { length }))
    }

    async fn list_move(
        &self,
        request: Request<ListMoveRequest>,
    ) -> Result<Response<ListMoveResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let source = self.key(&scope, "source", &req.source)?;
        let destination = self.key(&scope, "destination", &req.destination)?;
        self.store
            .require_one_slot("destination", &[&source, &destination])?;
        let from = list_end("from", req.from, End::Front)?;
        let to = list_end("to", req.to, End::Back)?;
        let value = self
            .store
            .list_move(&source, &destination, from, to)
            .await?;
        Ok(Response::new(ListMoveResponse {
            moved: value.is_some(),
            value: value.unwrap_or_default(),
        }))
    }

    async fn bloom_add(
        &self,
        request: Request<BloomAddRequest>,
    ) -> Result<Response<BloomAddResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let key = self.key(&scope, "key", &req.key)?;
        self.limits.values("items", &req.items)?;
        let expected = if req.expected_items == 0 {
            DEFAULT_BLOOM_ITEMS
        } else {
            req.expected_items
        };
        let rate = if req.false_positive_rate == 0.0 {
            DEFAULT_BLOOM_RATE
        } else {
            req.false_positive_rate
        };
        if !(rate > 0.0 && rate <= 0.5) {
            return Err(Error::invalid("false_positive_rate", "must be in (0, 0.5]").into());
        }
        let (bits, hashes) = bloom_size(expected, rate);
        if bits > MAX_BLOOM_BITS {
            return Err(Error::invalid(
                "expected_items",
                format!("a filter for {expected} items at rate {rate} needs {bits} bits; the limit is {MAX_BLOOM_BITS}"),
            )
            .into());
        }
        let added = self.store.bloom_add(&key, &req.items, bits, hashes).await?;
        Ok(Response::new(BloomAddResponse { added }))
    }

    async fn bloom_contains(
        &self,
        request: Request<BloomContainsRequest>,
    ) -> Result<Response<BloomContainsResponse>, Status> {
        let scope = Scope::of(&request);
        let req = request.into_inner();
        let key = self.key(&scope, "key", &req.key)?;
        self.limits.values("items", &req.items)?;
        let contains = self.store.bloom_contains(&key, &req.items).await?;
        Ok(Response::new(BloomContainsResponse { contains }))
    }
}
