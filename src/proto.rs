//! Generated protobuf and gRPC code for `redwire.v1`, and the descriptor set that
//! server reflection serves.

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

tonic::include_proto!("redwire.v1");

/// Encoded `FileDescriptorSet` of every Redwire proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("redwire_descriptor");
