//! What each rpc needs: its service and its action class. One table, checked by
//! a unit test against the descriptor set, so a new rpc cannot be served
//! without saying what it needs (an rpc missing here is refused to everyone).

use std::fmt;

/// What a call does, as grants name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Looks without changing anything or taking work: Get, Range, Tail,
    /// Subscribe, Stats, Describe.
    Read,
    /// Adds or changes data: Set, Enqueue, Append, Publish, Acquire.
    Write,
    /// Takes work and settles it: Consume, Dequeue, Ack, ReadGroup, Claim.
    Consume,
    /// Operator actions on a whole queue, stream or group: Purge, Redrive,
    /// Pause, SetRateLimit, Trim, DestroyGroup, DeleteConsumer.
    Admin,
}

impl Action {
    /// Every action class.
    pub const ALL: [Action; 4] = [Action::Read, Action::Write, Action::Consume, Action::Admin];

    /// The action a grant names, if it is one.
    pub fn parse(name: &str) -> Option<Action> {
        Self::ALL.into_iter().find(|action| action.as_str() == name)
    }

    /// The name grants and error messages use.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Consume => "consume",
            Action::Admin => "admin",
        }
    }
}

/// A service and an action on it: `queue:admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permission {
    /// The service's short name (`cache`, `lock`, `pubsub`, `queue`, `stream`).
    pub service: &'static str,
    /// The action class.
    pub action: Action,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.service, self.action.as_str())
    }
}

/// The short names of the services, as grants write them.
pub const SERVICES: [&str; 5] = ["cache", "lock", "pubsub", "queue", "stream"];

/// A service's gRPC name, its short name, and each rpc's action class.
type ServiceRpcs = (
    &'static str,
    &'static str,
    &'static [(&'static str, Action)],
);

/// Every service's rpcs.
const TABLE: [ServiceRpcs; 5] = [
    (
        "redwire.v1.Cache",
        "cache",
        &[
            ("Get", Action::Read),
            ("GetMany", Action::Read),
            ("GetTtl", Action::Read),
            ("HashGet", Action::Read),
            ("SetMembers", Action::Read),
            ("SetContains", Action::Read),
            ("SetLength", Action::Read),
            ("SortedSetRange", Action::Read),
            ("SortedSetRangeByScore", Action::Read),
            ("SortedSetRank", Action::Read),
            ("ListRange", Action::Read),
            ("ListLength", Action::Read),
            ("BloomContains", Action::Read),
            ("Set", Action::Write),
            ("Delete", Action::Write),
            ("SetMany", Action::Write),
            ("Increment", Action::Write),
            ("UpdateTtl", Action::Write),
            ("HashSet", Action::Write),
            ("HashDelete", Action::Write),
            ("HashIncrement", Action::Write),
            ("SetAdd", Action::Write),
            ("SetRemove", Action::Write),
            ("SortedSetPut", Action::Write),
            ("SortedSetRemove", Action::Write),
            ("ListPush", Action::Write),
            ("ListPop", Action::Write),
            ("ListMove", Action::Write),
            ("BloomAdd", Action::Write),
        ],
    ),
    (
        "redwire.v1.Lock",
        "lock",
        &[
            ("Describe", Action::Read),
            ("ListLocks", Action::Read),
            ("Acquire", Action::Write),
            ("Release", Action::Write),
            ("Extend", Action::Write),
            ("Hold", Action::Write),
        ],
    ),
    (
        "redwire.v1.PubSub",
        "pubsub",
        &[
            ("Subscribe", Action::Read),
            ("ListChannels", Action::Read),
            ("Publish", Action::Write),
        ],
    ),
    (
        "redwire.v1.Queue",
        "queue",
        &[
            ("GetJob", Action::Read),
            ("Stats", Action::Read),
            ("ListDead", Action::Read),
            ("ListQueues", Action::Read),
            ("ListJobs", Action::Read),
            ("GetHistory", Action::Read),
            ("Enqueue", Action::Write),
            ("EnqueueBatch", Action::Write),
            ("EnqueueStream", Action::Write),
            ("Consume", Action::Consume),
            ("Dequeue", Action::Consume),
            ("Ack", Action::Consume),
            ("Nack", Action::Consume),
            ("ExtendLease", Action::Consume),
            ("Redrive", Action::Admin),
            ("PurgeDead", Action::Admin),
            ("Purge", Action::Admin),
            ("Pause", Action::Admin),
            ("Resume", Action::Admin),
            ("SetRateLimit", Action::Admin),
            ("DeleteJob", Action::Admin),
        ],
    ),
    (
        "redwire.v1.Stream",
        "stream",
        &[
            ("Range", Action::Read),
            ("Tail", Action::Read),
            ("Pending", Action::Read),
            ("Info", Action::Read),
            ("ListStreams", Action::Read),
            ("Append", Action::Write),
            ("AppendBatch", Action::Write),
            ("AppendStream", Action::Write),
            ("CreateGroup", Action::Write),
            ("ReadGroup", Action::Consume),
            ("Ack", Action::Consume),
            ("Claim", Action::Consume),
            ("AutoClaim", Action::Consume),
            ("Trim", Action::Admin),
            ("DestroyGroup", Action::Admin),
            ("DeleteConsumer", Action::Admin),
        ],
    ),
];

/// What the call at `path` (`/redwire.v1.Queue/Purge`) needs; None for a path
/// that is not a Redwire rpc.
pub fn permission_of(path: &str) -> Option<Permission> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let (_, short, methods) = TABLE.iter().find(|(name, _, _)| *name == service)?;
    let (_, action) = methods.iter().find(|(name, _)| *name == method)?;
    Some(Permission {
        service: short,
        action: *action,
    })
}

/// Every Redwire rpc: its service's gRPC name and the method.
pub fn rpcs() -> impl Iterator<Item = (&'static str, &'static str)> {
    TABLE.iter().flat_map(|(service, _, methods)| {
        methods.iter().map(move |(method, _)| (*service, *method))
    })
}

/// True for the gRPC services anyone may call without a token: health (for
/// probes and load balancers) and reflection (it shows the schema, never data).
pub fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Every rpc of every Redwire service in the descriptor set has an entry,
    /// and every entry is a real rpc.
    #[test]
    fn the_table_covers_exactly_the_rpcs_of_the_descriptor_set() {
        let set = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut served = Vec::new();
        for file in &set.file {
            for service in &file.service {
                let full = format!("{}.{}", file.package(), service.name());
                for method in &service.method {
                    served.push(format!("/{full}/{}", method.name()));
                }
            }
        }
        assert!(served.len() > 60, "{served:?}");
        for path in &served {
            assert!(permission_of(path).is_some(), "{path} has no permission");
        }
        let listed: usize = TABLE.iter().map(|(_, _, methods)| methods.len()).sum();
        assert_eq!(
            listed,
            served.len(),
            "the table lists an rpc that is not served"
        );
    }

    #[test]
    fn paths_map_to_service_and_action() {
        let purge = permission_of("/redwire.v1.Queue/Purge").expect("purge");
        assert_eq!(purge.to_string(), "queue:admin");
        assert_eq!(permission_of("/redwire.v1.Queue/Nope"), None);
        assert_eq!(permission_of("garbage"), None);
        assert!(is_open("/grpc.health.v1.Health/Check"));
        assert!(!is_open("/redwire.v1.Cache/Get"));
    }
}
