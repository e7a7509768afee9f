//! Calls to a tier member from outside the node's executors: the
//! `wormdb cluster` commands and `serve --join`, which run before any
//! executor does. Each call runs on an executor of its own.

use std::net::SocketAddr;
use std::time::Duration;

use super::transport::CONNECT_TIMEOUT;
use super::Members;
use crate::grpc::status::Status;
use crate::grpc::transport::Channel;
use crate::proto::{JoinRequest, JoinResponse};

/// Runs one unary call to the member at `to` on an executor of its own
/// (the CLI and `serve --join` call the tier before any executor runs).
pub fn call<Request, Response>(
    to: SocketAddr,
    path: &'static str,
    request: Request,
    timeout: Duration,
) -> Result<Response, Status>
where
    Request: prost::Message + Send + 'static,
    Response: prost::Message + Default + Send + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let channel = Channel::connect(to, timeout.min(CONNECT_TIMEOUT)).await?;
            channel.unary(path, &request, Some(timeout)).await
        })
        .map_err(|error| Status::internal(format!("cannot start an executor: {error}")))?
        .join()
        .map_err(|error| Status::internal(format!("the call failed: {error}")))?
}

/// How long joining may take: every group adds this node as a learner, one
/// after the other, each committed by the tier's quorum.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Asks the member at `seed` to add node `node_id` (whose gRPC address is
/// `addr`) to the tier, and persists what it answered: the members, and
/// that this node joined (so its groups start empty, whatever happens).
pub fn join(seed: SocketAddr, node_id: u32, addr: SocketAddr, data_dir: &std::path::Path) -> Result<Members, String> {
    if addr.ip().is_unspecified() {
        return Err(format!(
            "--join: the members reach this node at its --grpc-addr, and {addr} is no address they can dial: give \
             its own IP"
        ));
    }
    tracing::info!(node = node_id, %seed, %addr, "asking the tier to add this node");
    let request = JoinRequest { node_id, addr: addr.to_string() };
    let response: JoinResponse = call(seed, JOIN_PATH, request, JOIN_TIMEOUT)
        .map_err(|status| format!("--join {seed}: the tier refused or could not add this node: {}", status.message))?;
    let mut addrs = std::collections::BTreeMap::new();
    for member in response.members {
        let member_addr = member
            .addr
            .parse()
            .map_err(|_| format!("--join {seed}: a member address {:?} is malformed", member.addr))?;
        addrs.insert(member.node_id, member_addr);
    }
    addrs.insert(node_id, addr);
    let members = Members { addrs };
    super::write_atomically(&data_dir.join(super::JOINED_FILE), "joined\n")?;
    members.write(data_dir)?;
    super::write_atomically(&data_dir.join(super::NODE_ID_FILE), &format!("{node_id}\n"))?;
    tracing::info!(node = node_id, members = ?members.addrs, "joined the tier as a learner of every group");
    Ok(members)
}

/// `WormCluster.Join`.
pub const JOIN_PATH: &str = "/wormdb.v1.WormCluster/Join";
/// `WormCluster.Remove`.
pub const REMOVE_PATH: &str = "/wormdb.v1.WormCluster/Remove";
/// `WormCluster.TransferLeader`.
pub const TRANSFER_PATH: &str = "/wormdb.v1.WormCluster/TransferLeader";
/// `WormCluster.Status`.
pub const STATUS_PATH: &str = "/wormdb.v1.WormCluster/Status";
