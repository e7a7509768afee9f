//! Unsafe recovery (DESIGN.md section 9): when a quorum of the tier is lost
//! for good, `wormdb cluster recover --data-dir DIR` makes one stopped
//! survivor the only voter of every group it holds, and the tier's only
//! member. It then starts alone, and new members join it.
//!
//! Why it is unsafe, and what it loses. Raft commits an entry once a quorum
//! holds it, so the survivor may lack entries the lost members committed
//! (and acknowledged: a push is acknowledged once committed and applied on
//! the leader). The tier cannot bring them back; for pushed entries the
//! followers can. A follower's log is the archive's source, and its pusher
//! starts every session from the tier's watermark (read from the group
//! leader), so once the survivor leads, each follower shard pushes again
//! whatever suffix it lacks, and the watermark rule archives it exactly
//! once. Direct writes to the tier have no such second copy: those only
//! the lost members held are gone.
//!
//! What it keeps: the whole Raft log, and the hard state (term, vote,
//! commit). Entries after the commit index (a suffix the old leader sent
//! but never saw committed) stay; alone, the survivor commits them at its
//! first election. That is safe for the archive: applying is deterministic
//! and exactly once per (origin, seq), whoever commits. Membership changes
//! among them are not: applied on top of the survivor's new conf state,
//! one would bring a lost member back as a voter, and the group could
//! never reach a quorum again. So recovery fences them: every membership
//! change up to the log's last index is skipped when applied
//! ([`log::fence_record`]).
//!
//! How: for every group a `CONF_STATE` record (voters = this node, no
//! learners) at the end of its Raft log, where the last one read back wins
//! and the group starts from it, with or without a snapshot, and the
//! fence at the log's last index; then the
//! membership file lists only this node. Groups first, membership last, a
//! group already alone left as it is: after a crash halfway, running the
//! command again finishes the job.
//!
//! The node must be stopped: recovery holds the data directory's lock
//! ([`crate::runtime::lock`]) while it works, so it refuses beside a
//! running node, and a node refuses to start meanwhile. Every check comes
//! before the first write: a refusal changes nothing.
//!
//! [`plan_group`] decides from what a log holds (pure); [`recover`] reads,
//! checks and writes; a [`Report`] displays what was done and what may be
//! missing.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use raft::prelude::{ConfState, EntryType};

use super::log::{self, RaftLog, Recovered};
use super::{Members, MEMBERS_FILE, NODE_ID_FILE};
use crate::runtime::lock::{DataDirLock, LockError};

/// Why recovery refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data directory does not exist.
    #[error("{}: no such data directory", .0.display())]
    NoDirectory(PathBuf),
    /// The directory was never a tier member's.
    #[error("not a tier member: {} has no {MEMBERS_FILE}", dir.display())]
    NotMember {
        /// The data directory.
        dir: PathBuf,
    },
    /// A node (or another recovery) runs on the directory.
    #[error("node still running: {0}")]
    StillRunning(LockError),
    /// Which member the directory belongs to is unknown.
    #[error(
        "cannot tell which member {} belongs to: it has no {NODE_ID_FILE} (written by `wormdb serve`); pass --node-id N",
        dir.display()
    )]
    NoNodeId {
        /// The data directory.
        dir: PathBuf,
    },
    /// The node id is not a member.
    #[error("unknown node: {node_id} is not a member in {} (members: {members:?})", path.display())]
    UnknownNode {
        /// The node id asked for.
        node_id: u32,
        /// The membership file.
        path: PathBuf,
        /// The members it lists.
        members: Vec<u32>,
    },
    /// The node is not a voter of a group: it may lack entries the group
    /// committed, so it must not become their only copy.
    #[error(
        "group {group}: node {node_id} is not one of its voters (voters {voters:?}, learners {learners:?}): it may lack \
         committed entries; recover a surviving voter instead"
    )]
    NotVoter {
        /// The group.
        group: u32,
        /// This node.
        node_id: u32,
        /// The group's voters.
        voters: Vec<u64>,
        /// The group's learners.
        learners: Vec<u64>,
    },
    /// Reading or writing failed.
    #[error("{0}")]
    Io(String),
}

impl Error {
    /// Whether this is a refusal (found before anything was written, so
    /// nothing changed) rather than a failure while writing.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Error::Io(_))
    }
}

/// What recovery found in one group and did to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupReport {
    /// The group.
    pub group: u32,
    /// Its Raft log (`None`: none, the replica never started; it will
    /// start with the members file's voters, this node alone).
    pub log: Option<LogReport>,
}

/// One group's Raft log as recovery found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogReport {
    /// Hard state: term, vote, commit index (kept as they are).
    pub term: u64,
    /// The vote of that term (0: none).
    pub vote: u64,
    /// The highest index known committed.
    pub commit: u64,
    /// The log's first index (after its snapshot or compaction point).
    pub first_index: u64,
    /// Its last index (the snapshot's when it holds no entry).
    pub last_index: u64,
    /// The applied index the log noted.
    pub applied: u64,
    /// The archive's state machine: the index its watermarks stand for,
    /// and how many origin watermarks it holds (`None`: none recorded; the
    /// replica rebuilds it from its shard).
    pub machine: Option<(u64, usize)>,
    /// The voters before.
    pub voters: Vec<u64>,
    /// The voters and learners removed.
    pub removed: Vec<u64>,
    /// Membership-change entries after the applied index, none applied
    /// yet: fenced, never applied.
    pub conf_changes_after_applied: usize,
    /// The fence: membership changes at or below it are never applied (0:
    /// none).
    pub fence: u64,
    /// Bytes of a torn last record, cut.
    pub torn_bytes: u64,
    /// Whether a record was appended (`false`: already this node alone).
    pub changed: bool,
}

/// What recovery did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The data directory.
    pub data_dir: PathBuf,
    /// This node.
    pub node_id: u32,
    /// Its gRPC address, as the membership names it.
    pub addr: SocketAddr,
    /// The members removed.
    pub removed_members: BTreeMap<u32, SocketAddr>,
    /// `--node-id` overrode a different id in [`NODE_ID_FILE`].
    pub overridden_node_id: Option<u32>,
    /// Every group found, in order.
    pub groups: Vec<GroupReport>,
}

/// The conf state recovery leaves every group with: this node the only
/// voter.
pub fn alone(node_id: u32) -> ConfState {
    ConfState::from((vec![u64::from(node_id)], Vec::new()))
}

/// Decides what to do with group `group`'s log as [`RaftLog::recover`]
/// read it back: refuses when `node_id` is not among its voters; else
/// says what it holds and whether a `CONF_STATE` record must make
/// `node_id` its only voter.
pub fn plan_group(group: u32, node_id: u32, recovered: &Recovered) -> Result<GroupReport, Error> {
    let Some(restored) = &recovered.restored else {
        return Ok(GroupReport { group, log: None });
    };
    let conf = &restored.conf_state;
    let me = u64::from(node_id);
    // A voter of the outgoing half of a joint configuration was in every
    // quorum until the change completes: it holds every committed entry.
    if !conf.voters.contains(&me) && !conf.voters_outgoing.contains(&me) {
        return Err(Error::NotVoter { group, node_id, voters: conf.voters.clone(), learners: conf.learners.clone() });
    }
    let mut removed: Vec<u64> = [&conf.voters, &conf.voters_outgoing, &conf.learners, &conf.learners_next]
        .into_iter()
        .flatten()
        .copied()
        .filter(|&id| id != me)
        .collect();
    removed.sort_unstable();
    removed.dedup();
    let first_index = restored.entries.first().map_or(restored.snapshot.0 + 1, |entry| entry.index);
    let last_index = restored.entries.last().map_or(restored.snapshot.0, |entry| entry.index);
    let conf_changes_after_applied = restored
        .entries
        .iter()
        .filter(|entry| entry.index > restored.applied)
        .filter(|entry| matches!(entry.get_entry_type(), EntryType::EntryConfChange | EntryType::EntryConfChangeV2))
        .count();
    // Alone already (an earlier recover, or a group of one) with nothing
    // unfenced to apply: nothing to write.
    let unfenced = restored
        .entries
        .iter()
        .filter(|entry| entry.index > restored.applied.max(recovered.conf_fence))
        .any(|entry| matches!(entry.get_entry_type(), EntryType::EntryConfChange | EntryType::EntryConfChangeV2));
    Ok(GroupReport {
        group,
        log: Some(LogReport {
            term: restored.hard_state.term,
            vote: restored.hard_state.vote,
            commit: restored.hard_state.commit,
            first_index,
            last_index,
            applied: restored.applied,
            machine: recovered.machine.as_ref().map(|machine| (machine.applied, machine.watermarks.len())),
            voters: conf.voters.clone(),
            changed: *conf != alone(node_id) || unfenced,
            removed,
            conf_changes_after_applied,
            fence: last_index,
            torn_bytes: recovered.torn_bytes,
        }),
    })
}

/// The groups' Raft log directories in `data_dir`: (group, directory), by
/// group.
fn group_dirs(data_dir: &Path) -> Result<Vec<(u32, PathBuf)>, Error> {
    let raft = data_dir.join("raft");
    let listing = std::fs::read_dir(&raft).map_err(|error| Error::Io(format!("{}: {error}", raft.display())))?;
    let mut groups: Vec<(u32, PathBuf)> = listing
        .filter_map(|item| item.ok())
        .filter(|item| item.path().is_dir())
        .filter_map(|item| {
            let group = item.file_name().to_str()?.strip_prefix("group-")?.parse().ok()?;
            Some((group, item.path()))
        })
        .collect();
    groups.sort_unstable();
    Ok(groups)
}

/// Makes the stopped node whose data directory is `data_dir` the only
/// voter of its groups and the only member of the tier. `node_id`: which
/// member the directory belongs to, if not the one [`NODE_ID_FILE`] says.
/// On `Err` with [`Error::is_refusal`], nothing was changed.
pub fn recover(data_dir: &Path, node_id: Option<u32>) -> Result<Report, Error> {
    if !data_dir.is_dir() {
        return Err(Error::NoDirectory(data_dir.to_path_buf()));
    }
    // Checked before the lock, whose file the lock would create.
    if !data_dir.join(MEMBERS_FILE).exists() {
        return Err(Error::NotMember { dir: data_dir.to_path_buf() });
    }
    let _lock = DataDirLock::acquire(data_dir).map_err(|error| match error {
        error @ LockError::Held { .. } => Error::StillRunning(error),
        error => Error::Io(error.to_string()),
    })?;
    let members =
        Members::read(data_dir).map_err(Error::Io)?.ok_or_else(|| Error::NotMember { dir: data_dir.to_path_buf() })?;
    let persisted_id = super::read_node_id(data_dir).map_err(Error::Io)?;
    let node_id = node_id.or(persisted_id).ok_or_else(|| Error::NoNodeId { dir: data_dir.to_path_buf() })?;
    let addr = members.addr(node_id).ok_or_else(|| Error::UnknownNode {
        node_id,
        path: data_dir.join(MEMBERS_FILE),
        members: members.addrs.keys().copied().collect(),
    })?;

    // Read and check every group before writing anything.
    let mut plans = Vec::new();
    for (group, dir) in group_dirs(data_dir)? {
        let (recovered, segments) =
            RaftLog::recover(&dir).map_err(|error| Error::Io(format!("group {group}: {error}")))?;
        plans.push((plan_group(group, node_id, &recovered)?, dir, segments));
    }

    // The group's own address book goes down to this node too (a replica
    // reads it from its log, ahead of the members file).
    let mut record = log::addrs_record(&BTreeMap::from([(node_id, addr)]));
    record.extend(log::conf_state_record(&alone(node_id)).map_err(|error| Error::Io(error.to_string()))?);
    for (report, dir, segments) in &plans {
        let Some(plan) = report.log.as_ref().filter(|log| log.changed) else {
            continue;
        };
        let failed = |error: super::Error| Error::Io(format!("group {}: {error}", report.group));
        let mut records = record.clone();
        records.extend(log::fence_record(plan.fence));
        log::append_offline(dir, segments, &records).map_err(failed)?;
        // Read back: the group must now start with this node alone.
        let (recovered, _) = RaftLog::recover(dir).map_err(failed)?;
        let fence = recovered.conf_fence;
        let conf = recovered.restored.map(|restored| restored.conf_state);
        let book = recovered.addrs.map(|addrs| addrs.into_keys().collect::<Vec<_>>());
        if conf != Some(alone(node_id)) || book != Some(vec![node_id]) || fence != plan.fence {
            return Err(Error::Io(format!(
                "group {}: the log reads back with conf state {conf:?}, members {book:?} and fence {fence}",
                report.group
            )));
        }
    }
    Members { addrs: BTreeMap::from([(node_id, addr)]) }.write(data_dir).map_err(Error::Io)?;
    if persisted_id != Some(node_id) {
        super::write_atomically(&data_dir.join(NODE_ID_FILE), &format!("{node_id}\n")).map_err(Error::Io)?;
    }
    Ok(Report {
        data_dir: data_dir.to_path_buf(),
        node_id,
        addr,
        removed_members: members.addrs.into_iter().filter(|&(id, _)| id != node_id).collect(),
        overridden_node_id: persisted_id.filter(|&persisted| persisted != node_id),
        groups: plans.into_iter().map(|(report, _, _)| report).collect(),
    })
}

fn ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for Report {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (node, dir) = (self.node_id, self.data_dir.display());
        writeln!(
            out,
            "node {node} ({}, data directory {dir}) is now the only member of the tier and the only voter of its {} \
             group(s).",
            self.addr,
            self.groups.len()
        )?;
        if let Some(persisted) = self.overridden_node_id {
            writeln!(out, "note: {NODE_ID_FILE} said node {persisted}; --node-id {node} was used, and written there.")?;
        }
        let removed: Vec<String> = self.removed_members.iter().map(|(id, addr)| format!("{id} ({addr})")).collect();
        match removed.is_empty() {
            true => writeln!(out, "members removed: none; {MEMBERS_FILE} lists {node}={}", self.addr)?,
            false => writeln!(
                out,
                "members removed: {}; {MEMBERS_FILE} now lists only {node}={}",
                removed.join(", "),
                self.addr
            )?,
        }
        for group in &self.groups {
            writeln!(out)?;
            let Some(log) = &group.log else {
                writeln!(
                    out,
                    "group {}: no Raft log (the replica never started): it starts with node {node} as its only voter",
                    group.group
                )?;
                continue;
            };
            if log.changed {
                let removed = if log.removed.is_empty() { "none".to_string() } else { ids(&log.removed) };
                writeln!(out, "group {}: voters [{}] -> [{node}] (removed: {removed})", group.group, ids(&log.voters))?;
            } else {
                writeln!(out, "group {}: already node {node} alone (an earlier recover): unchanged", group.group)?;
            }
            writeln!(
                out,
                "  log: last index {}, commit index {}, applied index {} (entries {}..={}); term {}, vote {}: kept",
                log.last_index, log.commit, log.applied, log.first_index, log.last_index, log.term, log.vote
            )?;
            match log.machine {
                Some((applied, watermarks)) => {
                    writeln!(out, "  machine: stands for entry {applied}, {watermarks} origin watermark(s)")?
                }
                None => writeln!(out, "  machine: none recorded (rebuilt from the shard's data at start)")?,
            }
            if log.last_index > log.commit {
                let count = log.last_index - log.commit;
                writeln!(
                    out,
                    "  uncommitted suffix kept: {count} {} ({}..={}) after the commit index; node {node} alone will \
                     commit {}",
                    if count == 1 { "entry" } else { "entries" },
                    log.commit + 1,
                    log.last_index,
                    if count == 1 { "it" } else { "them" },
                )?;
            }
            if log.conf_changes_after_applied > 0 {
                writeln!(
                    out,
                    "  fenced: {} membership change(s) in the log after the applied index will be skipped, never \
                     applied (they could bring a lost member back as a voter)",
                    log.conf_changes_after_applied
                )?;
            }
            if log.torn_bytes > 0 {
                writeln!(out, "  cut: {} bytes of a torn last record (never acknowledged)", log.torn_bytes)?;
            }
        }
        writeln!(out)?;
        writeln!(
            out,
            "What may be missing: entries the lost members committed without node {node} (acknowledged by the lost \
             quorum but never replicated here). Pushed entries are not lost: each follower shard reads node {node}'s \
             watermark when it reconnects and pushes again whatever suffix this survivor lacks, exactly once (keep \
             the followers' logs until they have drained). Direct writes to the tier (HTTP /v1/entries, \
             WormIngest.Write to a member) that only the lost members held are lost."
        )?;
        writeln!(
            out,
            "Next: start node {node} alone, as before (`wormdb serve --node-id {node} --data-dir {dir} ...`: its \
             --peers is ignored, the membership now lists only itself); each group elects it within about a second \
             and the followers drain to it. Then add members with `--join` (docs/cluster.md, \"Growing the tier\")."
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::group::{Restored, Work};
    use crate::tier::log::MachineState;
    use raft::prelude::{Entry, HardState};

    const ADDRS: [&str; 3] = ["127.0.0.1:50061", "127.0.0.1:50062", "127.0.0.1:50063"];

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).make().unwrap().run(future)
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: format!("entry {index}").into_bytes().into(), ..Entry::default() }
    }

    /// A member's data directory as `serve` leaves it: three members, this
    /// node's id, and one Raft log per group with `entries` entries of
    /// which `commit` are committed (the rest an uncommitted suffix).
    fn member_dir(node_id: u32, groups: u32, entries: u64, commit: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let peers = ADDRS.iter().enumerate().map(|(index, addr)| (index as u32 + 1, addr.parse().unwrap())).collect();
        Members::load_or_bootstrap(dir.path(), &peers, node_id).unwrap().unwrap();
        for group in 0..groups {
            let path = super::super::group_dir(dir.path(), group);
            run(async move {
                let conf = ConfState::from((vec![1, 2, 3], vec![]));
                let machine = MachineState { applied: 0, watermarks: BTreeMap::from([((9, group), 0)]) };
                let mut log =
                    RaftLog::open(&path, Vec::new(), (HardState::default(), conf, (0, 0)), machine, BTreeMap::new())
                        .await
                        .unwrap();
                let work = Work {
                    entries: (1..=entries).map(|index| entry(index, 2)).collect(),
                    hard_state: Some(HardState { term: 2, vote: 1, commit, ..HardState::default() }),
                    ..Work::default()
                };
                log.note_machine(commit, BTreeMap::from([((9, group), commit * 10), ((7, group), 3)]));
                log.note_applied(commit);
                log.persist(&work, || unreachable!()).await.unwrap();
            });
        }
        dir
    }

    /// Every file under `dir` and its bytes.
    fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut files = BTreeMap::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(path) = pending.pop() {
            if path.is_dir() {
                pending.extend(std::fs::read_dir(&path).unwrap().map(|item| item.unwrap().path()));
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
        files
    }

    fn restored(dir: &Path, group: u32) -> (Restored, Option<MachineState>) {
        let recovered = RaftLog::recover(&super::super::group_dir(dir, group)).unwrap().0;
        (recovered.restored.unwrap(), recovered.machine)
    }

    /// (index, term, data) of every entry; term, vote, commit; applied;
    /// snapshot.
    type Summary = (Vec<(u64, u64, Vec<u8>)>, (u64, u64, u64), u64, (u64, u64));

    fn summary(restored: &Restored) -> Summary {
        let entries = restored.entries.iter().map(|entry| (entry.index, entry.term, entry.data.to_vec())).collect();
        let hard_state = (restored.hard_state.term, restored.hard_state.vote, restored.hard_state.commit);
        (entries, hard_state, restored.applied, restored.snapshot)
    }

    #[test]
    fn the_survivor_becomes_the_only_voter_and_keeps_its_log() {
        let dir = member_dir(2, 2, 7, 5);
        let before: Vec<_> = (0..2).map(|group| restored(dir.path(), group)).collect();

        let report = recover(dir.path(), None).unwrap();
        assert_eq!(report.node_id, 2);
        assert_eq!(report.addr, ADDRS[1].parse().unwrap());
        assert_eq!(report.removed_members.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(report.overridden_node_id, None);
        for (group, (restored_before, machine_before)) in before.iter().enumerate() {
            let (after, machine) = restored(dir.path(), group as u32);
            assert_eq!(after.conf_state, alone(2), "group {group}");
            assert_eq!(summary(&after), summary(restored_before), "group {group}: log and hard state unchanged");
            assert_eq!(&machine, machine_before, "group {group}: machine unchanged");
            let log = report.groups[group].log.as_ref().unwrap();
            assert_eq!((log.last_index, log.commit, log.applied, log.term, log.vote), (7, 5, 5, 2, 1));
            assert_eq!((log.voters.clone(), log.removed.clone(), log.changed), (vec![1, 2, 3], vec![1, 3], true));
            assert_eq!(log.machine, Some((5, 2)));
        }
        let members = std::fs::read_to_string(dir.path().join(MEMBERS_FILE)).unwrap();
        assert_eq!(members, format!("2={}\n", ADDRS[1]));
        // The node starts from it with its persisted membership.
        let loaded = Members::load_or_bootstrap(dir.path(), &BTreeMap::new(), 2).unwrap().unwrap();
        assert_eq!(loaded.voters(), vec![2]);

        let text = report.to_string();
        for needle in [
            "node 2 (127.0.0.1:50062",
            "members removed: 1 (127.0.0.1:50061), 3 (127.0.0.1:50063)",
            "group 0: voters [1, 2, 3] -> [2] (removed: 1, 3)",
            "last index 7, commit index 5, applied index 5",
            "machine: stands for entry 5, 2 origin watermark(s)",
            "uncommitted suffix kept: 2 entries (6..=7)",
            "What may be missing",
            "exactly once",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }

        // Again: nothing left to do, nothing written.
        let files = tree(dir.path());
        let again = recover(dir.path(), None).unwrap();
        assert!(again.groups.iter().all(|group| !group.log.as_ref().unwrap().changed));
        assert!(again.removed_members.is_empty());
        assert!(again.to_string().contains("already node 2 alone"), "{again}");
        let files_again = tree(dir.path());
        assert_eq!(files.keys().collect::<Vec<_>>(), files_again.keys().collect::<Vec<_>>());
        for (path, bytes) in &files {
            if !path.ends_with("LOCK") {
                assert_eq!(bytes, &files_again[path], "{} changed", path.display());
            }
        }
    }

    #[test]
    fn a_reopened_log_goes_on_after_the_record() {
        let dir = member_dir(1, 1, 3, 3);
        recover(dir.path(), None).unwrap();
        let path = super::super::group_dir(dir.path(), 0);
        let (recovered, segments) = RaftLog::recover(&path).unwrap();
        let machine = recovered.machine.unwrap();
        let written = path.clone();
        run(async move {
            let start = (HardState::default(), alone(1), (0, 0));
            let mut log = RaftLog::open(&written, segments, start, machine, BTreeMap::new()).await.unwrap();
            let work = Work {
                entries: vec![entry(4, 3)],
                hard_state: Some(HardState { term: 3, vote: 1, commit: 4, ..HardState::default() }),
                ..Work::default()
            };
            log.persist(&work, || unreachable!()).await.unwrap();
        });
        let (after, _) = restored(dir.path(), 0);
        assert_eq!(after.conf_state, alone(1));
        assert_eq!(after.entries.iter().map(|entry| entry.index).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(after.hard_state.commit, 4);
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_record_lands_after_the_valid_records() {
        let dir = member_dir(3, 1, 4, 2);
        let path = super::super::group_dir(dir.path(), 0);
        let before = restored(dir.path(), 0).0;
        let (_, segments) = RaftLog::recover(&path).unwrap();
        let (id, _, valid) = *segments.last().unwrap();
        let segment = path.join(format!("log-{id:08}"));
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes.truncate(valid as usize);
        bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3]);
        std::fs::write(&segment, &bytes).unwrap();

        let report = recover(dir.path(), None).unwrap();
        assert_eq!(report.groups[0].log.as_ref().unwrap().torn_bytes, 7);
        let bytes = std::fs::read(&segment).unwrap();
        assert_eq!(bytes.len() % crate::limits::PAGE_BYTES, 0, "whole pages");
        let (recovered, _) = RaftLog::recover(&path).unwrap();
        assert_eq!(recovered.torn_bytes, 0);
        let after = recovered.restored.unwrap();
        assert_eq!(after.conf_state, alone(3));
        assert_eq!(summary(&after), summary(&before));
    }

    #[test]
    fn a_running_node_is_refused_and_nothing_changes() {
        let dir = member_dir(2, 2, 3, 3);
        let running = DataDirLock::acquire(dir.path()).unwrap();
        let files = tree(dir.path());
        let error = recover(dir.path(), None).unwrap_err();
        assert!(matches!(error, Error::StillRunning(_)) && error.is_refusal(), "{error}");
        assert!(error.to_string().contains("node still running"), "{error}");
        assert_eq!(tree(dir.path()), files);
        drop(running);
        recover(dir.path(), None).unwrap();
    }

    #[test]
    fn a_directory_that_is_no_member_is_refused_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("shard-000")).unwrap();
        let files = tree(dir.path());
        let error = recover(dir.path(), None).unwrap_err();
        assert!(matches!(error, Error::NotMember { .. }), "{error}");
        assert!(error.to_string().contains("not a tier member"), "{error}");
        assert_eq!(tree(dir.path()), files);
        assert!(!dir.path().join("LOCK").exists());
        let missing = dir.path().join("missing");
        assert!(matches!(recover(&missing, None), Err(Error::NoDirectory(_))));
    }

    #[test]
    fn the_node_id_comes_from_its_file_or_the_flag() {
        let dir = member_dir(2, 1, 3, 3);
        std::fs::remove_file(dir.path().join(NODE_ID_FILE)).unwrap();
        let files = tree(dir.path());
        let error = recover(dir.path(), None).unwrap_err();
        assert!(matches!(error, Error::NoNodeId { .. }) && error.to_string().contains("--node-id"), "{error}");
        let error = recover(dir.path(), Some(5)).unwrap_err();
        assert!(matches!(error, Error::UnknownNode { node_id: 5, .. }), "{error}");
        assert!(error.to_string().contains("unknown node"), "{error}");
        // Only the lock file may have appeared.
        let mut now = tree(dir.path());
        now.remove(&dir.path().join("LOCK"));
        assert_eq!(now, files);

        let report = recover(dir.path(), Some(2)).unwrap();
        assert_eq!(report.overridden_node_id, None);
        assert_eq!(crate::tier::read_node_id(dir.path()).unwrap(), Some(2), "written for the next time");
        assert_eq!(restored(dir.path(), 0).0.conf_state, alone(2));
    }

    #[test]
    fn membership_changes_not_applied_yet_are_fenced() {
        let dir = member_dir(1, 1, 4, 3);
        // A change in the uncommitted suffix (index 5) re-adding a lost node.
        let path = super::super::group_dir(dir.path(), 0);
        run(async move {
            let (recovered, segments) = RaftLog::recover(&path).unwrap();
            let restored = recovered.restored.unwrap();
            let checkpoint = (restored.hard_state.clone(), restored.conf_state.clone(), restored.snapshot);
            let machine = recovered.machine.unwrap();
            let mut log = RaftLog::open(&path, segments, checkpoint, machine, BTreeMap::new()).await.unwrap();
            let change = Entry { index: 5, term: 2, entry_type: EntryType::EntryConfChangeV2, ..Entry::default() };
            log.persist(&Work { entries: vec![change], ..Work::default() }, || unreachable!()).await.unwrap();
        });
        let report = recover(dir.path(), None).unwrap();
        let log = report.groups[0].log.as_ref().unwrap();
        assert_eq!((log.conf_changes_after_applied, log.fence, log.last_index), (1, 5, 5));
        let fence = RaftLog::recover(&super::super::group_dir(dir.path(), 0)).unwrap().0.conf_fence;
        assert_eq!(fence, 5);
        assert!(report.to_string().contains("fenced: 1 membership change(s)"), "{report}");
        // Again: already alone and fenced, nothing to write.
        let again = recover(dir.path(), None).unwrap();
        assert!(!again.groups[0].log.as_ref().unwrap().changed);
    }

    #[test]
    fn a_learner_is_refused() {
        let restored = Restored {
            conf_state: ConfState::from((vec![1, 2], vec![3])),
            entries: vec![entry(1, 1)],
            ..Restored::default()
        };
        let recovered = Recovered { restored: Some(restored), ..Recovered::default() };
        let error = plan_group(4, 3, &recovered).unwrap_err();
        assert!(matches!(error, Error::NotVoter { group: 4, node_id: 3, .. }), "{error}");
        let plan = plan_group(4, 2, &recovered).unwrap();
        let log = plan.log.unwrap();
        assert_eq!((log.removed, log.first_index, log.last_index, log.changed), (vec![1, 3], 1, 1, true));
        let none = Recovered::default();
        assert_eq!(plan_group(0, 2, &none).unwrap(), GroupReport { group: 0, log: None });
    }

    #[test]
    fn a_group_without_a_log_is_left_to_start_from_the_members() {
        let dir = member_dir(1, 1, 2, 2);
        std::fs::create_dir_all(super::super::group_dir(dir.path(), 1)).unwrap();
        let report = recover(dir.path(), None).unwrap();
        assert_eq!(report.groups.len(), 2);
        assert_eq!(report.groups[1], GroupReport { group: 1, log: None });
        assert!(report.to_string().contains("group 1: no Raft log"), "{report}");
    }
}
