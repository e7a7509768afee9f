//! Leadership balance: a member that leads more than its share of the
//! groups hands one over to the voter that leads the fewest, so the write
//! load spreads over the tier (DESIGN.md section 9). Elections alone pile
//! leaderships up: the first member to time out after a restart wins every
//! group it campaigns in.
//!
//! [`pick`] is pure (the decision from the groups as this node sees them);
//! [`run`] asks it now and then and starts the transfer.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use super::Core;
use crate::tier::replica::{Change, ReplicaReport};

/// How often a member looks at the balance. Slow on purpose: a transfer
/// costs the group a short pause, and the balance moves only with
/// elections and membership changes.
pub const BALANCE_INTERVAL: Duration = Duration::from_secs(10);

/// The group member `node_id` should hand over, and to whom: when it leads
/// more than `ceil(groups / voters)` and a voter leads fewer than that.
/// Only voters count; groups with no known leader are left alone.
pub fn pick(node_id: u32, groups: &[ReplicaReport]) -> Option<(u32, u32)> {
    let voters = groups.first()?.voters.clone();
    if voters.len() < 2 || !voters.contains(&u64::from(node_id)) {
        return None;
    }
    let share = groups.len().div_ceil(voters.len());
    let mut led: BTreeMap<u64, Vec<u32>> = voters.iter().map(|&voter| (voter, Vec::new())).collect();
    for group in groups {
        if let Some(list) = led.get_mut(&group.status.leader) {
            list.push(group.group);
        }
    }
    let mine = led.get(&u64::from(node_id))?;
    if mine.len() <= share {
        return None;
    }
    let (&to, fewest) =
        led.iter().filter(|(&voter, _)| voter != u64::from(node_id)).min_by_key(|(_, list)| list.len())?;
    if fewest.len() >= share {
        return None;
    }
    Some((*mine.last()?, to as u32))
}

/// Looks at the balance every [`BALANCE_INTERVAL`] until the node stops,
/// and hands one leadership over when [`pick`] says so.
pub async fn run(core: Rc<Core>) {
    loop {
        glommio::timer::sleep(BALANCE_INTERVAL).await;
        if core.closing.get() {
            return;
        }
        let Ok(reports) = core.reports().await else { return };
        let groups: Vec<ReplicaReport> = reports.into_iter().filter_map(|report| report.tier).collect();
        let Some((group, to)) = pick(core.config.node_id, &groups) else { continue };
        tracing::info!(group, to, "leadership balance: handing a group over");
        let outcome = core
            .run_on(group as usize, move |core| async move {
                match &core.tier {
                    Some(replica) => replica.change(Change::Transfer { node: to }).await,
                    None => Ok(()),
                }
            })
            .await;
        if let Ok(Err(error)) = outcome {
            tracing::debug!(group, to, %error, "leadership balance: the transfer did not happen");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::group::GroupStatus;

    fn group(group: u32, leader: u64) -> ReplicaReport {
        ReplicaReport {
            group,
            status: GroupStatus { leader, term: 2, commit: 5, applied: 5, role: raft::StateRole::Follower },
            counters: Default::default(),
            watermarks: Default::default(),
            leases: Default::default(),
            voters: vec![1, 2, 3],
            learners: vec![],
            removed: false,
            replica_lag: Default::default(),
        }
    }

    #[test]
    fn a_member_over_its_share_hands_one_group_to_the_least_loaded_voter() {
        // Node 1 leads 3 of 4 groups; the share is 2; node 3 leads none.
        let groups = [group(0, 1), group(1, 1), group(2, 2), group(3, 1)];
        assert_eq!(pick(1, &groups), Some((3, 3)));
        // The others have nothing to give.
        assert_eq!(pick(2, &groups), None);
        assert_eq!(pick(3, &groups), None);
    }

    #[test]
    fn a_balanced_tier_moves_nothing() {
        let groups = [group(0, 1), group(1, 2), group(2, 3), group(3, 1)];
        for node in 1..=3 {
            assert_eq!(pick(node, &groups), None, "node {node}");
        }
        // Two groups over three voters: one each at most, and nobody at 2.
        assert_eq!(pick(1, &[group(0, 1), group(1, 2)]), None);
        // Unknown leaders (an election) count for nobody.
        assert_eq!(pick(1, &[group(0, 0), group(1, 0)]), None);
    }

    #[test]
    fn a_member_leading_everything_gives_until_its_share() {
        let groups = [group(0, 2), group(1, 2)];
        assert_eq!(pick(2, &groups), Some((1, 1)));
        // A learner (not a voter) never leads and is never picked.
        let mut lonely = group(0, 1);
        lonely.voters = vec![1];
        assert_eq!(pick(1, &[lonely]), None);
    }
}
