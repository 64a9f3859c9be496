//! Intake of one audit batch, written once for every backend: store what is new, keep
//! what conflicts beside what is stored, follow the chain from the contiguous head and
//! flag what is wrong. A backend only answers the narrow questions of [`IntakeTx`]
//! inside one transaction that it opens before and commits after.

use std::collections::{BTreeSet, HashMap};

use wardlock_core::audit::{
    continue_chain, continue_checked_chain, AuditEntry, ChainError, WorkstationState,
};
use wardlock_core::clock::UtcMillis;
use wardlock_core::protocol::collector::{AuditAck, SeqRange};

use super::sql::{self, args, Args, Sql};
use super::{Hash, StoreError};

/// Where a workstation's chain stands at the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainState {
    /// Every seq up to here is stored and links.
    pub contiguous: u64,
    /// The hash of the entry at `contiguous` (the genesis hash at 0).
    pub contiguous_hash: Hash,
    /// The highest seq stored, beyond a gap or not.
    pub max_seq: u64,
}

/// A chain problem found in a batch: (seq, kind, what was seen).
pub type ChainFinding = (u64, &'static str, String);

/// An entry as received, with the work that needs no database done already: the
/// handlers prepare entries on many threads, the SQLite writer stores them on one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    entry: AuditEntry,
    details_json: String,
    intact: bool,
}

impl Received {
    pub fn new(entry: AuditEntry) -> Self {
        let details_json = serde_json::to_string(&entry.details).unwrap_or_default();
        let intact = entry.compute_hash() == entry.hash;
        Self { entry, details_json, intact }
    }

    pub fn entry(&self) -> &AuditEntry {
        &self.entry
    }

    /// The details as the `details` column holds them.
    pub fn details_json(&self) -> &str {
        &self.details_json
    }

    /// Whether the entry's hash is the hash of its content.
    pub fn intact(&self) -> bool {
        self.intact
    }
}

/// One workstation's rows inside one open transaction.
pub trait IntakeTx {
    /// The chain's state, locked against other batches of the workstation until commit.
    fn chain_state(&mut self) -> Result<ChainState, StoreError>;
    /// Inserts the entries whose seq is not stored yet (`entries` ascend by seq) and
    /// answers which seqs it inserted.
    fn insert_new(&mut self, entries: &[Received], now: UtcMillis) -> Result<BTreeSet<u64>, StoreError>;
    /// The stored hashes at these seqs.
    fn stored_hashes(&mut self, seqs: &[u64]) -> Result<HashMap<u64, Vec<u8>>, StoreError>;
    /// Keeps a received entry in full beside the other one stored under its seq.
    fn keep_conflict(&mut self, entry: &AuditEntry, now: UtcMillis) -> Result<(), StoreError>;
    /// Every stored entry after `seq`, ascending.
    fn entries_after(&mut self, seq: u64) -> Result<Vec<AuditEntry>, StoreError>;
    /// The lowest stored seq after `seq`.
    fn first_stored_after(&mut self, seq: u64) -> Result<Option<u64>, StoreError>;
    /// Records the new state and that the workstation was heard from.
    fn set_chain_state(&mut self, state: &ChainState, now: UtcMillis) -> Result<(), StoreError>;
    /// Records findings (a finding already recorded is not recorded twice).
    fn flag(&mut self, findings: &[ChainFinding], now: UtcMillis) -> Result<(), StoreError>;
    /// Records the state the entry at `seq` put the workstation in, unless a later seq's
    /// state is recorded already (batches may arrive out of order after a gap).
    fn note_state(&mut self, seq: u64, state: WorkstationState, at: UtcMillis) -> Result<(), StoreError>;
    /// Adds (hour, locks, unlocks) to the heat map's counts of the workstation's group.
    fn count_hours(&mut self, hours: &[(i64, u64, u64)]) -> Result<(), StoreError>;
}

/// What one audit batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingest {
    pub ack: AuditAck,
    pub stored: u64,
    pub duplicates: u64,
    pub findings: u64,
}

/// An entry dated this far after it was received is flagged (`time_ahead`): a clock or
/// a sender that dates entries in the future could otherwise keep them at the top of
/// every report asked by entry time.
pub const MAX_TIME_AHEAD: std::time::Duration = std::time::Duration::from_secs(600);

/// Takes in one batch. Never drops an entry: a seq received again with the same content
/// is a no-op (a lost acknowledgement); with another content (in an earlier batch or
/// earlier in this one) it is kept beside the stored one, flagged `rewritten` and named
/// in the acknowledgement's `conflicts`.
///
/// `entries` are left sorted by seq (stably, repeats kept): a backend may run the same
/// batch again after a failed transaction.
pub fn ingest(
    tx: &mut impl IntakeTx,
    entries: &mut [Received],
    now: UtcMillis,
) -> Result<Ingest, StoreError> {
    entries.sort_by_key(|r| r.entry.seq);
    let has_repeats = entries.windows(2).any(|w| w[0].entry.seq == w[1].entry.seq);
    // The first entry of each seq is the one offered for storing; later ones of the same
    // seq are compared with what is stored, like an entry sent again.
    let (firsts, in_batch_repeats): (Vec<Received>, Vec<Received>) = if has_repeats {
        let mut firsts: Vec<Received> = Vec::with_capacity(entries.len());
        let mut repeats = Vec::new();
        for r in entries.iter() {
            match firsts.last() {
                Some(last) if last.entry.seq == r.entry.seq => repeats.push(r.clone()),
                _ => firsts.push(r.clone()),
            }
        }
        (firsts, repeats)
    } else {
        (Vec::new(), Vec::new())
    };
    let unique: &[Received] = if has_repeats { &firsts } else { entries };
    let before = tx.chain_state()?;
    let inserted = tx.insert_new(unique, now)?;
    let (fresh, mut repeated): (Vec<&Received>, Vec<&Received>) =
        unique.iter().partition(|r| inserted.contains(&r.entry.seq));
    repeated.extend(in_batch_repeats.iter());
    let mut findings: Vec<ChainFinding> = Vec::new();
    if !repeated.is_empty() {
        let seqs: Vec<u64> = repeated.iter().map(|r| r.entry.seq).collect();
        let stored = tx.stored_hashes(&seqs)?;
        for e in repeated.iter().map(|r| &r.entry) {
            if let Some(finding) = stored.get(&e.seq).and_then(|s| rewritten(e.seq, s, &e.hash)) {
                tx.keep_conflict(e, now)?;
                findings.push(finding);
            }
        }
    }
    // Usually the fresh entries continue the chain; after a gap, what was stored beyond
    // it is read back.
    let from = (before.contiguous, before.contiguous_hash);
    let continuation = if before.max_seq <= before.contiguous {
        continue_checked_chain(from, fresh.iter().map(|r| (&r.entry, r.intact)))
    } else {
        continue_chain(from, &tx.entries_after(before.contiguous)?)
    };
    findings.extend(continuation.findings.iter().map(chain_finding));
    let (head, head_hash) = continuation.head;
    let after = ChainState {
        contiguous: head,
        contiguous_hash: head_hash,
        max_seq: fresh.last().map_or(before.max_seq, |r| r.entry.seq.max(before.max_seq)),
    };
    tx.set_chain_state(&after, now)?;
    tx.flag(&findings, now)?;
    if let Some((seq, state, at)) =
        fresh.iter().rev().find_map(|r| r.entry.kind.state_after().map(|s| (r.entry.seq, s, r.entry.time)))
    {
        tx.note_state(seq, state, at)?;
    }
    // Only what was stored now: an entry sent again is not counted twice.
    let hours = wardlock_core::charts::hour_counts(fresh.iter().map(|r| (r.entry.kind, r.entry.time)));
    if !hours.is_empty() {
        tx.count_hours(&hours)?;
    }
    // Dated in the future: flagged for compliance, not a chain problem for the sender.
    let ahead: Vec<ChainFinding> = fresh
        .iter()
        .map(|r| &r.entry)
        .filter(|e| e.time > now.saturating_add(MAX_TIME_AHEAD))
        .map(|e| {
            let by =
                std::time::Duration::from_millis((e.time.unix_millis() - now.unix_millis()).max(0) as u64);
            (
                e.seq,
                "time_ahead",
                format!(
                    "entry dated {} was received at {}, {} earlier",
                    e.time.to_rfc3339(),
                    now.to_rfc3339(),
                    humantime::format_duration(std::time::Duration::from_secs(by.as_secs()))
                ),
            )
        })
        .collect();
    tx.flag(&ahead, now)?;
    let next_stored = if after.max_seq > head { tx.first_stored_after(head)? } else { None };
    let stored = fresh.len() as u64;
    Ok(Ingest {
        ack: ack(head, next_stored, &findings),
        stored,
        duplicates: repeated.len() as u64,
        findings: findings.len() as u64,
    })
}

/// The acknowledgement: the contiguous head, the gap before the next stored seq (if any),
/// the first chain break and the seqs whose entry was kept beside another (never stored
/// as sent).
fn ack(head: u64, next_stored: Option<u64>, findings: &[ChainFinding]) -> AuditAck {
    let gaps = next_stored.map(|next| vec![SeqRange { first: head + 1, last: next - 1 }]).unwrap_or_default();
    AuditAck {
        highest_contiguous_seq: head,
        gaps,
        chain_break_at: findings.iter().map(|(seq, _, _)| *seq).min(),
        conflicts: findings
            .iter()
            .filter(|(_, kind, _)| *kind == "rewritten")
            .map(|(seq, _, _)| *seq)
            .collect(),
    }
}

/// Seqs one `IN` list names (well under SQLite's and PostgreSQL's placeholder limits).
const CHUNK: usize = 200;

/// Columns of an audit row as intake inserts it.
const INSERT_COLUMNS: usize = 11;

/// `INSERT INTO audit … VALUES (…), (…) ON CONFLICT DO NOTHING` for `rows` rows; with
/// more than one, `RETURNING` the seqs it inserted (one row's is its change count).
fn insert_statement(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let first = row * INSERT_COLUMNS + 1;
            let placeholders: Vec<String> =
                (first..first + INSERT_COLUMNS).map(|n| format!("${n}")).collect();
            format!("({})", placeholders.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO audit (workstation, seq, time_ms, kind, usr, os_account, policy_hash, details,
                            prev_hash, hash, received_ms)
         VALUES {} ON CONFLICT (workstation, seq) DO NOTHING{}",
        values.join(", "),
        if rows > 1 { " RETURNING seq" } else { "" }
    )
}

/// [`IntakeTx`] over either backend's open transaction.
pub(crate) struct SqlIntake<'a> {
    pub sql: &'a mut dyn Sql,
    pub workstation: &'a str,
}

impl IntakeTx for SqlIntake<'_> {
    fn chain_state(&mut self) -> Result<ChainState, StoreError> {
        let sql = format!(
            "SELECT contiguous_seq, contiguous_hash, max_seq FROM workstations WHERE id = $1{}",
            self.sql.for_update()
        );
        let row = self.sql.query_opt(&sql, args![self.workstation])?.ok_or_else(|| {
            StoreError::Conflict(format!("workstation {:?} is not enrolled", self.workstation))
        })?;
        Ok(ChainState { contiguous: row.uint(0)?, contiguous_hash: row.hash(1)?, max_seq: row.uint(2)? })
    }

    /// As many rows a statement as the backend runs fastest; the seqs actually inserted
    /// back (`RETURNING`, or the change count of a one-row statement).
    fn insert_new(&mut self, entries: &[Received], now: UtcMillis) -> Result<BTreeSet<u64>, StoreError> {
        let mut inserted = BTreeSet::new();
        let rows_per_insert = self.sql.rows_per_insert().max(1);
        // The statement for a number of rows, built once per batch (every chunk but the
        // last has the same).
        let mut statement: Option<(usize, String)> = None;
        let mut args = Args::default();
        for chunk in entries.chunks(rows_per_insert) {
            if statement.as_ref().is_none_or(|(rows, _)| *rows != chunk.len()) {
                statement = Some((chunk.len(), insert_statement(chunk.len())));
            }
            let Some((_, sql)) = &statement else { continue };
            args.0.clear();
            for received in chunk {
                let e = received.entry();
                args.push(self.workstation);
                args.push(sql::int(e.seq));
                args.push(e.time);
                args.push(e.kind.as_str());
                args.push(e.user.as_deref());
                args.push(e.os_account.as_deref());
                args.push(e.policy_hash.as_deref());
                args.push(received.details_json());
                args.push(&e.prev_hash);
                args.push(&e.hash);
                args.push(now);
            }
            if let [one] = chunk {
                if self.sql.execute(sql, &args.0)? == 1 {
                    inserted.insert(one.entry().seq);
                }
            } else {
                for row in self.sql.query(sql, &args.0)? {
                    inserted.insert(row.uint(0)?);
                }
            }
        }
        Ok(inserted)
    }

    fn stored_hashes(&mut self, seqs: &[u64]) -> Result<HashMap<u64, Vec<u8>>, StoreError> {
        let mut hashes = HashMap::with_capacity(seqs.len());
        for chunk in seqs.chunks(CHUNK) {
            let mut args = Args::default();
            let statement = format!(
                "SELECT seq, hash FROM audit WHERE workstation = {} AND seq IN {}",
                args.bind(self.workstation),
                args.list(chunk.iter().map(|&s| sql::int(s)))
            );
            for row in self.sql.query(&statement, &args.0)? {
                hashes.insert(row.uint(0)?, row.blob(1)?);
            }
        }
        Ok(hashes)
    }

    fn keep_conflict(&mut self, entry: &AuditEntry, now: UtcMillis) -> Result<(), StoreError> {
        self.sql.execute(
            "INSERT INTO audit_conflicts (workstation, seq, hash, record, received_ms) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            args![self.workstation, sql::int(entry.seq), &entry.hash, super::conflict_record(entry), now],
        )?;
        Ok(())
    }

    fn entries_after(&mut self, seq: u64) -> Result<Vec<AuditEntry>, StoreError> {
        let statement = format!(
            "SELECT {} FROM audit WHERE workstation = $1 AND seq > $2 ORDER BY seq",
            super::queries::ENTRY_COLUMNS
        );
        self.sql
            .query(&statement, args![self.workstation, sql::int(seq)])?
            .iter()
            .map(|r| super::queries::stored_event(r).map(|e| e.entry))
            .collect()
    }

    fn first_stored_after(&mut self, seq: u64) -> Result<Option<u64>, StoreError> {
        self.sql
            .query_one(
                "SELECT MIN(seq) FROM audit WHERE workstation = $1 AND seq > $2",
                args![self.workstation, sql::int(seq)],
            )?
            .opt_uint(0)
    }

    fn set_chain_state(&mut self, state: &ChainState, now: UtcMillis) -> Result<(), StoreError> {
        self.sql.execute(
            "UPDATE workstations SET contiguous_seq = $2, contiguous_hash = $3, max_seq = $4, last_seen_ms = $5 WHERE id = $1",
            args![
                self.workstation,
                sql::int(state.contiguous),
                &state.contiguous_hash,
                sql::int(state.max_seq),
                now
            ],
        )?;
        Ok(())
    }

    fn note_state(&mut self, seq: u64, state: WorkstationState, at: UtcMillis) -> Result<(), StoreError> {
        self.sql.execute(
            "UPDATE workstations SET state = $2, state_seq = $3, state_ms = $4
             WHERE id = $1 AND (state_seq IS NULL OR state_seq < $3)",
            args![self.workstation, state.as_str(), sql::int(seq), at],
        )?;
        Ok(())
    }

    fn count_hours(&mut self, hours: &[(i64, u64, u64)]) -> Result<(), StoreError> {
        for (hour, locks, unlocks) in hours {
            self.sql.execute(
                "INSERT INTO chart_hours (grp, hour_ms, locks, unlocks) SELECT grp, $2, $3, $4 FROM workstations WHERE id = $1
                 ON CONFLICT (grp, hour_ms) DO UPDATE SET locks = chart_hours.locks + excluded.locks,
                     unlocks = chart_hours.unlocks + excluded.unlocks",
                args![self.workstation, *hour, sql::int(*locks), sql::int(*unlocks)],
            )?;
        }
        Ok(())
    }

    fn flag(&mut self, findings: &[ChainFinding], now: UtcMillis) -> Result<(), StoreError> {
        for (seq, kind, detail) in findings {
            super::queries::flag(self.sql, self.workstation, *seq, kind, detail, now)?;
        }
        Ok(())
    }
}

/// The finding for a chain error from `continue_chain`.
fn chain_finding(e: &ChainError) -> ChainFinding {
    let kind = match e {
        ChainError::Altered { .. } => "altered",
        ChainError::BrokenLink { .. } => "broken_link",
        ChainError::Missing { .. } => "missing",
    };
    (e.seq(), kind, e.to_string())
}

/// The finding for an entry received again under a stored seq with another content.
fn rewritten(seq: u64, stored_hash: &[u8], received_hash: &[u8]) -> Option<ChainFinding> {
    (stored_hash != received_hash).then(|| {
        (
            seq,
            "rewritten",
            format!("stored hash {} but received {}", hex::encode(stored_hash), hex::encode(received_hash)),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use wardlock_core::audit::{AuditDraft, AuditKind, GENESIS_HASH};

    use super::*;

    /// The narrow interface over plain maps: the algorithm without a database.
    #[derive(Default)]
    struct Memory {
        state: Option<ChainState>,
        rows: BTreeMap<u64, AuditEntry>,
        conflicts: Vec<AuditEntry>,
        findings: BTreeSet<(u64, &'static str)>,
        state_now: Option<(u64, WorkstationState)>,
        hours: Vec<(i64, u64, u64)>,
    }

    impl IntakeTx for Memory {
        fn chain_state(&mut self) -> Result<ChainState, StoreError> {
            Ok(*self.state.get_or_insert(ChainState {
                contiguous: 0,
                contiguous_hash: GENESIS_HASH,
                max_seq: 0,
            }))
        }
        fn insert_new(&mut self, entries: &[Received], _: UtcMillis) -> Result<BTreeSet<u64>, StoreError> {
            let mut inserted = BTreeSet::new();
            for e in entries.iter().map(Received::entry) {
                if let std::collections::btree_map::Entry::Vacant(slot) = self.rows.entry(e.seq) {
                    slot.insert(e.clone());
                    inserted.insert(e.seq);
                }
            }
            Ok(inserted)
        }
        fn stored_hashes(&mut self, seqs: &[u64]) -> Result<HashMap<u64, Vec<u8>>, StoreError> {
            Ok(seqs.iter().filter_map(|s| self.rows.get(s).map(|e| (*s, e.hash.to_vec()))).collect())
        }
        fn keep_conflict(&mut self, entry: &AuditEntry, _: UtcMillis) -> Result<(), StoreError> {
            self.conflicts.push(entry.clone());
            Ok(())
        }
        fn entries_after(&mut self, seq: u64) -> Result<Vec<AuditEntry>, StoreError> {
            Ok(self.rows.range(seq + 1..).map(|(_, e)| e.clone()).collect())
        }
        fn first_stored_after(&mut self, seq: u64) -> Result<Option<u64>, StoreError> {
            Ok(self.rows.range(seq + 1..).next().map(|(s, _)| *s))
        }
        fn set_chain_state(&mut self, state: &ChainState, _: UtcMillis) -> Result<(), StoreError> {
            self.state = Some(*state);
            Ok(())
        }
        fn flag(&mut self, findings: &[ChainFinding], _: UtcMillis) -> Result<(), StoreError> {
            self.findings.extend(findings.iter().map(|(seq, kind, _)| (*seq, *kind)));
            Ok(())
        }
        fn count_hours(&mut self, hours: &[(i64, u64, u64)]) -> Result<(), StoreError> {
            self.hours.extend_from_slice(hours);
            Ok(())
        }
        fn note_state(&mut self, seq: u64, state: WorkstationState, _: UtcMillis) -> Result<(), StoreError> {
            if self.state_now.is_none_or(|(at, _)| at < seq) {
                self.state_now = Some((seq, state));
            }
            Ok(())
        }
    }

    fn received(entries: &[AuditEntry]) -> Vec<Received> {
        entries.iter().cloned().map(Received::new).collect()
    }

    fn log(n: u64, user: &str) -> Vec<AuditEntry> {
        let mut log: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            let prev = log.last().map(|e| (e.seq, e.hash));
            let draft =
                AuditDraft::new(UtcMillis::from_unix_millis(1_000 + i as i64), AuditKind::Locked).user(user);
            log.push(AuditEntry::chain(draft, "ws-a", prev));
        }
        log
    }

    fn now() -> UtcMillis {
        UtcMillis::from_unix_millis(5_000)
    }

    #[test]
    fn the_state_is_the_latest_seqs_and_an_earlier_batch_arriving_late_does_not_undo_it() {
        let kinds =
            [AuditKind::WarningShown, AuditKind::Locked, AuditKind::UnlockFailed, AuditKind::UnlockSucceeded];
        let mut log: Vec<AuditEntry> = Vec::new();
        for (i, kind) in kinds.into_iter().enumerate() {
            let prev = log.last().map(|e| (e.seq, e.hash));
            log.push(AuditEntry::chain(
                AuditDraft::new(UtcMillis::from_unix_millis(1_000 + i as i64), kind),
                "ws-a",
                prev,
            ));
        }
        let mut tx = Memory::default();
        // The first three: locked (a failed unlock changes nothing).
        ingest(&mut tx, &mut received(&log[..1]), now()).expect("ingest");
        ingest(&mut tx, &mut received(&log[2..3]), now()).expect("ingest");
        assert_eq!(
            tx.state_now,
            Some((1, WorkstationState::Warning)),
            "the failed unlock at 3 changed nothing"
        );
        ingest(&mut tx, &mut received(&log[3..]), now()).expect("ingest");
        assert_eq!(tx.state_now, Some((4, WorkstationState::Active)));
        // The gap's entry (the lock at 2) arrives last: the unlock after it stands.
        ingest(&mut tx, &mut received(&log[1..2]), now()).expect("ingest");
        assert_eq!(tx.state_now, Some((4, WorkstationState::Active)));
    }

    #[test]
    fn a_batch_in_any_order_with_repeats_is_stored_once_and_acknowledged_to_its_end() {
        let mut tx = Memory::default();
        let mut batch = log(5, "n.nurse");
        batch.reverse();
        batch.push(batch[0].clone());
        let done = ingest(&mut tx, &mut received(&batch), now()).expect("ingest");
        assert_eq!((done.stored, done.duplicates, done.findings), (5, 1, 0), "the repeat is a duplicate");
        assert_eq!(
            done.ack,
            AuditAck { highest_contiguous_seq: 5, gaps: vec![], chain_break_at: None, conflicts: vec![] }
        );
        // Sent again after a lost acknowledgement: nothing new, nothing flagged.
        let locks = |tx: &Memory| tx.hours.iter().map(|(_, locks, _)| locks).sum::<u64>();
        assert_eq!(locks(&tx), 5, "each lock counted once for the heat map");
        let again = ingest(&mut tx, &mut received(&log(5, "n.nurse")), now()).expect("ingest");
        assert_eq!((again.stored, again.duplicates, again.findings), (0, 5, 0));
        assert_eq!(locks(&tx), 5, "entries sent again are not counted again");
        assert_eq!(again.ack.highest_contiguous_seq, 5);
        assert!(tx.conflicts.is_empty());
    }

    #[test]
    fn a_gap_is_acknowledged_as_a_gap_and_closes_when_its_entries_arrive() {
        let mut tx = Memory::default();
        let full = log(6, "n.nurse");
        let first =
            ingest(&mut tx, &mut received(&[full[0].clone(), full[4].clone(), full[5].clone()]), now())
                .expect("ingest");
        assert_eq!(first.ack.highest_contiguous_seq, 1);
        assert_eq!(first.ack.gaps, vec![SeqRange { first: 2, last: 4 }]);
        assert_eq!(first.findings, 0, "a gap is not yet a finding");
        let filled = ingest(&mut tx, &mut received(&full[1..4]), now()).expect("ingest");
        assert_eq!(filled.ack.highest_contiguous_seq, 6, "the entries stored beyond the gap are followed");
        assert!(filled.ack.gaps.is_empty());
    }

    #[test]
    fn another_entry_under_a_stored_seq_is_kept_beside_it_flagged_and_named_in_the_ack() {
        let mut tx = Memory::default();
        ingest(&mut tx, &mut received(&log(3, "n.nurse")), now()).expect("ingest");
        let forged = log(3, "someone.else");
        let done = ingest(&mut tx, &mut received(&forged), now()).expect("ingest");
        assert_eq!(done.ack.conflicts, vec![1, 2, 3]);
        assert_eq!(done.ack.chain_break_at, Some(1));
        assert_eq!(tx.conflicts, forged, "every received version is kept in full");
        assert_eq!(tx.rows[&2].user.as_deref(), Some("n.nurse"), "the stored version stays");
        assert!(tx.findings.contains(&(2, "rewritten")));
        assert_eq!(done.ack.highest_contiguous_seq, 3);
    }

    #[test]
    fn an_entry_that_does_not_link_is_stored_flagged_and_named_as_the_chain_break() {
        let mut tx = Memory::default();
        let mut batch = log(4, "n.nurse");
        batch[2].prev_hash = [9; 32];
        let done = ingest(&mut tx, &mut received(&batch), now()).expect("ingest");
        assert_eq!(done.stored, 4, "stored all the same: evidence is never dropped");
        // The head is about contiguity; the break is what tells the sender and compliance.
        assert_eq!(done.ack.highest_contiguous_seq, 4);
        assert_eq!(done.ack.chain_break_at, Some(3));
        assert!(tx.findings.iter().all(|(seq, _)| *seq == 3) && !tx.findings.is_empty(), "{:?}", tx.findings);
    }

    #[test]
    fn two_versions_of_a_seq_in_one_batch_are_both_kept_and_the_second_is_a_conflict() {
        let mut tx = Memory::default();
        let mut batch = log(3, "n.nurse");
        let other = log(3, "someone.else")[1].clone();
        batch.push(other.clone());
        let mut entries = received(&batch);
        let done = ingest(&mut tx, &mut entries, now()).expect("ingest");
        assert_eq!(done.stored, 3);
        assert_eq!(tx.conflicts, vec![other], "the second version is kept, not dropped");
        assert_eq!(done.ack.conflicts, vec![2]);
        assert!(tx.findings.contains(&(2, "rewritten")));
        assert_eq!(entries.len(), 4, "a backend that runs the batch again still has every entry");
    }

    #[test]
    fn an_entry_dated_in_the_future_is_flagged_but_is_no_chain_problem_for_its_sender() {
        let mut tx = Memory::default();
        let mut batch = log(2, "n.nurse");
        let prev = Some((batch[1].seq, batch[1].hash));
        let ahead = AuditDraft::new(now().saturating_add(MAX_TIME_AHEAD * 100), AuditKind::EmergencyAccess);
        batch.push(AuditEntry::chain(ahead, "ws-a", prev));
        let done = ingest(&mut tx, &mut received(&batch), now()).expect("ingest");
        assert_eq!((done.stored, done.ack.chain_break_at), (3, None));
        assert_eq!(tx.findings.iter().collect::<Vec<_>>(), [&(3, "time_ahead")]);
        // Within the allowance (a clock a little ahead): nothing.
        let mut tx = Memory::default();
        let mut batch = log(1, "n.nurse");
        let prev = Some((batch[0].seq, batch[0].hash));
        batch.push(AuditEntry::chain(
            AuditDraft::new(now().saturating_add(MAX_TIME_AHEAD), AuditKind::Locked),
            "ws-a",
            prev,
        ));
        ingest(&mut tx, &mut received(&batch), now()).expect("ingest");
        assert!(tx.findings.is_empty(), "{:?}", tx.findings);
    }
}
