//! Every query of the collector's store, written once for both backends over the narrow
//! SQL layer (`sql.rs`). What each backend does differently (connections, TLS, locking,
//! DDL, SQLite's intake writer) is in `sqlite.rs` and `pg.rs`; what a change means (who
//! may enroll, whether a policy replaces another, which audit kinds count as what) is in
//! pure functions (`plan_enroll`, `plan_policy_put`, `AuditKind`'s sets).

use std::path::Path;

use wardlock_core::audit::{AuditEntry, AuditKind, WorkstationState, GENESIS_HASH};
use wardlock_core::clock::UtcMillis;
use wardlock_core::protocol::collector::{Charts, Heartbeat, HourCount, WeekCount};

use super::intake::{self, Received, SqlIntake};
use super::pg::Postgres;
use super::sql::{self, args, Args, Row, Sql};
use super::sqlite::Sqlite;
use super::{
    finding_line, plan_enroll, plan_policy_put, policy_etag, AdminAction, CollectorStore, Conflict,
    ConflictKey, ConsoleAccount, ConsoleSessionRecord, EmergencyReview, EnrollAttempt, EnrollPlan,
    EnrollResult, EnrollSecret, Enrolled, EventQuery, FailureCount, FailureKey, Finding, FindingKey,
    FleetKey, FleetWorkstation, Hash, Ingest, NewEnrollSecret, PolicyDraft, PolicyPut, ReenrollApproval,
    Role, SecretKey, StoreError, StoredEvent, StoredPolicy, UserRecord, Workstation,
};

#[derive(Debug)]
enum Backend {
    Sqlite(Sqlite),
    Postgres(Postgres),
}

/// The collector's store on either backend.
#[derive(Debug)]
pub struct SqlStore {
    backend: Backend,
}

impl SqlStore {
    /// The embedded store: one SQLite file (made, owner-only, if missing).
    pub fn open_sqlite(path: &Path) -> Result<SqlStore, StoreError> {
        Ok(SqlStore { backend: Backend::Sqlite(Sqlite::open(path)?) })
    }

    /// A PostgreSQL database (`postgres://…`; see [`Postgres::open`] for TLS).
    pub fn open_postgres(url: &str) -> Result<SqlStore, StoreError> {
        Ok(SqlStore { backend: Backend::Postgres(Postgres::open(url)?) })
    }

    #[cfg(test)]
    pub(super) fn sqlite(&self) -> Option<&Sqlite> {
        match &self.backend {
            Backend::Sqlite(db) => Some(db),
            Backend::Postgres(_) => None,
        }
    }

    fn read<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError>) -> Result<T, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.read(f),
            Backend::Postgres(db) => db.read(f),
        }
    }

    /// One transaction: committed when `f` answers `Ok`, rolled back otherwise.
    fn write<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError>) -> Result<T, StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.write(f),
            Backend::Postgres(db) => db.write(f),
        }
    }

    /// Runs `change` and, when it changed a row, records the administrator's `log` entry
    /// in the same transaction: an action and its entry are written together or not at all.
    fn logged(
        &self,
        log: Option<&AdminAction>,
        change: impl FnOnce(&mut dyn Sql) -> Result<u64, StoreError>,
    ) -> Result<u64, StoreError> {
        self.write(|sql| {
            let changed = change(sql)?;
            if changed > 0 {
                log_in(sql, log)?;
            }
            Ok(changed)
        })
    }
}

/// Records an administrator's action in the admin log, inside the caller's transaction.
fn log_in(sql: &mut dyn Sql, log: Option<&AdminAction>) -> Result<(), StoreError> {
    if let Some(a) = log {
        sql.execute(
            "INSERT INTO admin_log (time_ms, actor, action, detail) VALUES ($1, $2, $3, $4)",
            args![a.time, &a.actor, &a.action, &a.detail],
        )?;
    }
    Ok(())
}

/// Records a finding (one already recorded is not recorded twice).
pub(super) fn flag(
    sql: &mut dyn Sql,
    workstation: &str,
    seq: u64,
    kind: &str,
    detail: &str,
    now: UtcMillis,
) -> Result<(), StoreError> {
    sql.execute(
        "INSERT INTO findings (workstation, seq, kind, detail, found_ms) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT DO NOTHING",
        args![workstation, sql::int(seq), kind, detail, now],
    )?;
    Ok(())
}

/// An enrollment finding (seq 0) is appended to what is there, never overwritten: the
/// earlier refusals stay evidence. Capped at 1 MB a row (then the first ones are kept).
fn append_enroll_finding(
    sql: &mut dyn Sql,
    workstation: &str,
    kind: &str,
    detail: &str,
    now: UtcMillis,
) -> Result<(), StoreError> {
    sql.execute(
        "INSERT INTO findings (workstation, seq, kind, detail, found_ms) VALUES ($1, 0, $2, $3, $4)
         ON CONFLICT (workstation, seq, kind) DO UPDATE SET detail = CASE WHEN length(findings.detail) < 1000000
             THEN findings.detail || $5 || excluded.detail ELSE findings.detail END",
        args![workstation, kind, finding_line(now, detail), now, "\n"],
    )?;
    Ok(())
}

fn policy_draft(r: &Row) -> Result<PolicyDraft, StoreError> {
    Ok(PolicyDraft {
        id: r.int(0)?,
        group: r.text(1)?,
        policy: r.text(2)?,
        author: r.text(3)?,
        created: r.time(4)?,
    })
}

pub(super) const ENTRY_COLUMNS: &str =
    "id, workstation, seq, time_ms, kind, usr, os_account, policy_hash, details, prev_hash, hash, received_ms";

pub(super) fn stored_event(r: &Row) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        id: r.int(0)?,
        entry: AuditEntry {
            workstation: r.text(1)?,
            seq: r.uint(2)?,
            time: r.time(3)?,
            // A kind this collector does not know was written by someone else: tampering.
            kind: AuditKind::parse(&r.text(4)?).unwrap_or(AuditKind::TamperDetected),
            user: r.opt_text(5)?,
            os_account: r.opt_text(6)?,
            policy_hash: r.opt_text(7)?,
            details: serde_json::from_str(&r.text(8)?).unwrap_or_default(),
            prev_hash: r.hash(9)?,
            hash: r.hash(10)?,
        },
        received: r.time(11)?,
    })
}

const WORKSTATION_COLUMNS: &str =
    "id, hostname, grp, agent_version, enrolled_ms, last_seen_ms, contiguous_seq, reported_last_seq, transport_key";

fn workstation(r: &Row) -> Result<Workstation, StoreError> {
    Ok(Workstation {
        id: r.text(0)?,
        hostname: r.text(1)?,
        group: r.text(2)?,
        agent_version: r.text(3)?,
        enrolled: r.time(4)?,
        last_seen: r.opt_time(5)?,
        contiguous_seq: r.uint(6)?,
        reported_last_seq: r.opt_uint(7)?,
        transport_key: r.blob(8)?,
    })
}

const SECRET_COLUMNS: &str = "hash, label, created_ms, expires_ms, max_uses, uses, revoked_ms, grp";

fn enroll_secret(r: &Row) -> Result<EnrollSecret, StoreError> {
    Ok(EnrollSecret {
        hash: r.hash(0)?,
        label: r.text(1)?,
        created: r.time(2)?,
        expires: r.opt_time(3)?,
        max_uses: r.opt_uint(4)?,
        uses: r.uint(5)?,
        revoked: r.opt_time(6)?,
        group: r.opt_text(7)?,
    })
}

const USER_COLUMNS: &str =
    "id, display_name, role, disabled, pin_hash, totp_sealed, updated_ms, admin_grant, groups";

fn user(r: &Row) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: r.text(0)?,
        display_name: r.text(1)?,
        role: r.text(2)?,
        disabled: r.bool(3)?,
        pin_sealed: r.opt_text(4)?,
        totp_sealed: r.opt_blob(5)?,
        updated: r.time(6)?,
        admin_grant: r.opt_text(7)?,
        groups: super::groups_of(r.opt_text(8)?),
    })
}

fn finding(r: &Row) -> Result<Finding, StoreError> {
    Ok(Finding {
        workstation: r.text(0)?,
        seq: r.uint(1)?,
        kind: r.text(2)?,
        detail: r.text(3)?,
        found: r.time(4)?,
    })
}

fn all<T>(rows: Vec<Row>, read: impl Fn(&Row) -> Result<T, StoreError>) -> Result<Vec<T>, StoreError> {
    rows.iter().map(read).collect()
}

impl CollectorStore for SqlStore {
    fn add_enroll_secret(
        &self,
        secret: &Hash,
        new: &NewEnrollSecret,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<(), StoreError> {
        self.logged(log, |sql| {
            sql.execute(
                "INSERT INTO enroll_secrets (hash, label, created_ms, expires_ms, max_uses, grp)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                args![secret, &new.label, now, new.expires, new.max_uses.map(sql::int), &new.group],
            )
        })?;
        Ok(())
    }

    fn enroll_secrets(&self, after: Option<&SecretKey>, limit: u32) -> Result<Vec<EnrollSecret>, StoreError> {
        let mut args = Args::default();
        let mut statement = format!("SELECT {SECRET_COLUMNS} FROM enroll_secrets");
        if let Some((created, hash)) = after {
            statement.push_str(&format!(
                " WHERE (created_ms, hash) > ({}, {})",
                args.bind(*created),
                args.bind(hash)
            ));
        }
        statement.push_str(&format!(" ORDER BY created_ms, hash LIMIT {}", args.bind(i64::from(limit))));
        self.read(|sql| all(sql.query(&statement, &args.0)?, enroll_secret))
    }

    fn enroll_secret(&self, id: &str) -> Result<Option<EnrollSecret>, StoreError> {
        // The ID is the hash's first 6 bytes: a range of hashes, walked along the key.
        let Some(low) = hex::decode(id).ok().filter(|b| b.len() == 6) else { return Ok(None) };
        let mut high = low.clone();
        high.extend([0xff; 26]);
        let statement =
            format!("SELECT {SECRET_COLUMNS} FROM enroll_secrets WHERE hash >= $1 AND hash <= $2 ORDER BY hash LIMIT 2");
        let found = self.read(|sql| all(sql.query(&statement, args![&low, &high])?, enroll_secret))?;
        // Two secrets sharing 48 bits of a random hash: name neither rather than guess.
        Ok(if found.len() == 1 { found.into_iter().next() } else { None })
    }

    fn revoke_enroll_secret(
        &self,
        secret: &Hash,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<bool, StoreError> {
        let n = self.logged(log, |sql| {
            sql.execute(
                "UPDATE enroll_secrets SET revoked_ms = coalesce(revoked_ms, $2) WHERE hash = $1",
                args![secret, now],
            )
        })?;
        Ok(n > 0)
    }

    fn enroll(&self, attempt: &EnrollAttempt, now: UtcMillis) -> Result<EnrollResult, StoreError> {
        let ws = &attempt.workstation;
        self.write(|sql| {
            // Two enrollments of one ID at once: the second waits for the first's decision.
            sql.serialise(&format!("enroll:{}", ws.id))?;
            let statement = format!("SELECT {SECRET_COLUMNS} FROM enroll_secrets WHERE hash = $1");
            let secret = sql.query_opt(&statement, args![&attempt.secret])?.map(|r| enroll_secret(&r)).transpose()?;
            let approval = sql
                .query_opt("SELECT code, expires_ms, grp FROM reenroll_approvals WHERE workstation = $1", args![&ws.id])?
                .map(|r| -> Result<_, StoreError> {
                    Ok(ReenrollApproval { code: r.hash(0)?, expires: r.time(1)?, group: r.opt_text(2)? })
                })
                .transpose()?;
            let enrolled = sql
                .query_opt(
                    "SELECT node_key, revoked_ms, grp, transport_key FROM workstations WHERE id = $1",
                    args![&ws.id],
                )?
                .map(|r| -> Result<_, StoreError> {
                    Ok(Enrolled {
                        node_key: r.hash(0)?,
                        revoked: r.opt_int(1)?.is_some(),
                        group: r.text(2)?,
                        transport_key: r.blob(3)?,
                    })
                })
                .transpose()?;
            Ok(match plan_enroll(attempt, secret.as_ref(), approval.as_ref(), enrolled.as_ref(), now) {
                EnrollPlan::Unauthorized(why) => EnrollResult::Unauthorized(why),
                EnrollPlan::WrongGroup(why) => EnrollResult::WrongGroup(why),
                EnrollPlan::Conflict { message, finding } => {
                    append_enroll_finding(sql, &ws.id, "enroll_conflict", &finding, now)?;
                    EnrollResult::Conflict(message)
                }
                EnrollPlan::Enroll { use_secret, use_approval, group, finding } => {
                    if let Some((kind, detail)) = finding {
                        append_enroll_finding(sql, &ws.id, kind, &detail, now)?;
                    }
                    // Approved or proven: the node key is replaced and the log kept.
                    sql.execute(
                        "INSERT INTO workstations (id, node_key, hostname, grp, agent_version, enrolled_ms,
                                                   contiguous_hash, transport_key)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                         ON CONFLICT (id) DO UPDATE SET node_key = excluded.node_key, hostname = excluded.hostname,
                             grp = excluded.grp, agent_version = excluded.agent_version,
                             enrolled_ms = excluded.enrolled_ms, transport_key = excluded.transport_key,
                             revoked_ms = NULL",
                        args![
                            &ws.id,
                            &attempt.node_key,
                            &ws.hostname,
                            &group,
                            &ws.agent_version,
                            now,
                            &GENESIS_HASH,
                            &ws.transport_key
                        ],
                    )?;
                    if use_secret {
                        sql.execute(
                            "UPDATE enroll_secrets SET uses = uses + 1 WHERE hash = $1",
                            args![&attempt.secret],
                        )?;
                    }
                    if use_approval {
                        sql.execute("DELETE FROM reenroll_approvals WHERE workstation = $1", args![&ws.id])?;
                    }
                    EnrollResult::Enrolled
                }
            })
        })
    }

    fn approve_reenroll(
        &self,
        workstation: &str,
        code: &Hash,
        group: Option<&str>,
        expires: UtcMillis,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<(), StoreError> {
        self.logged(log, |sql| {
            sql.execute(
                "INSERT INTO reenroll_approvals (workstation, code, expires_ms, created_ms, grp) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (workstation) DO UPDATE SET code = excluded.code, expires_ms = excluded.expires_ms,
                     created_ms = excluded.created_ms, grp = excluded.grp",
                args![workstation, code, expires, now, group],
            )
        })?;
        Ok(())
    }

    fn revoke_workstation(
        &self,
        workstation: &str,
        dead_key: &Hash,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<bool, StoreError> {
        let n = self.logged(log, |sql| {
            sql.execute(
                "UPDATE workstations SET node_key = $2, revoked_ms = $3 WHERE id = $1",
                args![workstation, dead_key, now],
            )
        })?;
        Ok(n > 0)
    }

    fn workstation_by_key(&self, node_key: &Hash) -> Result<Option<Workstation>, StoreError> {
        let statement = format!("SELECT {WORKSTATION_COLUMNS} FROM workstations WHERE node_key = $1");
        self.read(|sql| sql.query_opt(&statement, args![node_key])?.map(|r| workstation(&r)).transpose())
    }

    fn workstations(
        &self,
        silent_before: Option<UtcMillis>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Workstation>, StoreError> {
        let mut args = Args::default();
        let mut statement = format!(
            "SELECT {WORKSTATION_COLUMNS} FROM workstations WHERE id > {}",
            args.bind(after.unwrap_or(""))
        );
        if let Some(before) = silent_before {
            statement.push_str(&format!(" AND coalesce(last_seen_ms, enrolled_ms) < {}", args.bind(before)));
        }
        statement.push_str(&format!(" ORDER BY id LIMIT {}", args.bind(i64::from(limit))));
        self.read(|sql| all(sql.query(&statement, &args.0)?, workstation))
    }

    fn fleet(
        &self,
        group: Option<&str>,
        silent_before: UtcMillis,
        after: Option<&FleetKey>,
        limit: u32,
    ) -> Result<Vec<(FleetKey, FleetWorkstation)>, StoreError> {
        let mut args = Args::default();
        let rank = format!(
            "CASE WHEN coalesce(w.last_seen_ms, w.enrolled_ms) < {} THEN 0
                  WHEN w.state = 'guard_lost' OR w.guard_connected = {} THEN 1
                  WHEN w.state = 'logged_off' THEN 2 WHEN w.state = 'warning' THEN 3
                  WHEN w.state = 'active' THEN 4 ELSE 5 END",
            args.bind(silent_before),
            args.bind(false)
        );
        let mut filter = String::from("w.revoked_ms IS NULL");
        if let Some(group) = group {
            filter.push_str(&format!(" AND w.grp = {}", args.bind(group)));
        }
        let (after_rank, after_id) = after.cloned().unwrap_or((-1, String::new()));
        let statement = format!(
            "SELECT page.*, (SELECT count(*) FROM findings f WHERE f.workstation = page.id) FROM (
                 SELECT * FROM (
                     SELECT {rank} AS rank, w.id, w.hostname, w.grp, w.state, w.state_ms, w.last_seen_ms, w.backlog,
                            w.guard_connected, w.agent_version, w.policy_serial, p.serial AS group_serial
                     FROM workstations w LEFT JOIN policies p ON p.grp = w.grp WHERE {filter}
                 ) ranked WHERE (rank, id) > ({}, {}) ORDER BY rank, id LIMIT {}
             ) page ORDER BY rank, id",
            args.bind(after_rank),
            args.bind(after_id),
            args.bind(i64::from(limit))
        );
        self.read(|sql| {
            all(sql.query(&statement, &args.0)?, |r| {
                let rank = r.int(0)?;
                let state = if rank == 0 {
                    Some(WorkstationState::Silent)
                } else {
                    r.opt_text(4)?.as_deref().and_then(WorkstationState::parse)
                };
                let ws = FleetWorkstation {
                    id: r.text(1)?,
                    hostname: r.text(2)?,
                    group: r.text(3)?,
                    state,
                    state_since: r.opt_time(5)?,
                    last_seen: r.opt_time(6)?,
                    backlog: r.opt_uint(7)?,
                    guard_connected: r.opt_bool(8)?,
                    agent_version: r.text(9)?,
                    policy_serial: r.opt_uint(10)?,
                    group_policy_serial: r.opt_uint(11)?,
                    findings: r.uint(12)?,
                };
                Ok(((rank, ws.id.clone()), ws))
            })
        })
    }

    fn workstation_count(&self) -> Result<u64, StoreError> {
        self.read(|sql| sql.query_one("SELECT count(*) FROM workstations", &[])?.uint(0))
    }

    fn workstation_groups(&self) -> Result<Vec<String>, StoreError> {
        self.read(|sql| {
            all(sql.query("SELECT DISTINCT grp FROM workstations ORDER BY grp", &[])?, |r| r.text(0))
        })
    }

    fn ingest(
        &self,
        workstation: &str,
        mut entries: Vec<Received>,
        now: UtcMillis,
    ) -> Result<Ingest, StoreError> {
        match &self.backend {
            // Group commit on the writer's own connection.
            Backend::Sqlite(db) => db.ingest(workstation, entries, now),
            Backend::Postgres(db) => {
                db.write(|sql| intake::ingest(&mut SqlIntake { sql, workstation }, &mut entries, now))
            }
        }
    }

    fn heartbeat(&self, workstation: &str, beat: &Heartbeat, now: UtcMillis) -> Result<(), StoreError> {
        self.write(|sql| {
            let statement =
                format!("SELECT contiguous_seq FROM workstations WHERE id = $1{}", sql.for_update());
            let contiguous = sql.query_one(&statement, args![workstation])?.uint(0)?;
            if beat.last_seq < contiguous {
                // The workstation holds fewer entries than we received from it: its log lost
                // its tail (a restored backup, a deleted file).
                let detail = format!(
                    "the workstation reports {} entries, the collector holds {contiguous}",
                    beat.last_seq
                );
                flag(sql, workstation, beat.last_seq + 1, "truncated", &detail, now)?;
            }
            sql.execute(
                "UPDATE workstations SET last_seen_ms = $2, reported_last_seq = $3, backlog = $4, policy_serial = $5,
                 guard_connected = $6 WHERE id = $1",
                args![
                    workstation,
                    now,
                    sql::int(beat.last_seq),
                    sql::int(beat.unsent),
                    beat.policy_serial.map(sql::int),
                    beat.guard_connected
                ],
            )?;
            Ok(())
        })
    }

    fn note_totp_steps(&self, steps: &[(String, UtcMillis)], now: UtcMillis) -> Result<(), StoreError> {
        self.write(|sql| {
            for (user, at) in steps {
                sql.execute(
                    "INSERT INTO totp_steps (usr, step_ms, noted_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (usr) DO UPDATE SET step_ms = excluded.step_ms, noted_ms = excluded.noted_ms
                     WHERE excluded.step_ms > totp_steps.step_ms",
                    args![user, *at, now],
                )?;
            }
            Ok(())
        })
    }

    fn recent_totp_steps(&self, since: UtcMillis) -> Result<Vec<(String, UtcMillis)>, StoreError> {
        self.read(|sql| {
            all(sql.query("SELECT usr, step_ms FROM totp_steps WHERE noted_ms >= $1", args![since])?, |r| {
                Ok((r.text(0)?, r.time(1)?))
            })
        })
    }

    fn put_policy(
        &self,
        group: &str,
        serial: u64,
        envelope: &str,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<PolicyPut, StoreError> {
        self.write(|sql| {
            sql.serialise(&format!("policy:{group}"))?;
            let current = sql.query_opt("SELECT serial FROM policies WHERE grp = $1", args![group])?;
            let current = current.map(|r| r.uint(0)).transpose()?;
            let put = plan_policy_put(current, serial);
            if put == PolicyPut::Stored {
                let stored_by = log.map(|a| a.actor.as_str()).unwrap_or_default();
                sql.execute(
                    "INSERT INTO policies (grp, serial, envelope, etag, updated_ms, stored_by) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (grp) DO UPDATE SET serial = excluded.serial, envelope = excluded.envelope,
                         etag = excluded.etag, updated_ms = excluded.updated_ms, stored_by = excluded.stored_by",
                    args![group, sql::int(serial), envelope, policy_etag(envelope), now, stored_by],
                )?;
                sql.execute(
                    "INSERT INTO policy_history (grp, serial, envelope, stored_by, stored_ms) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT DO NOTHING",
                    args![group, sql::int(serial), envelope, stored_by, now],
                )?;
                log_in(sql, log)?;
            }
            Ok(put)
        })
    }

    fn policies_in_force(&self) -> Result<Vec<StoredPolicy>, StoreError> {
        self.read(|sql| {
            all(
                sql.query(
                    "SELECT p.grp, p.serial, p.envelope, coalesce(p.stored_by, ''), p.updated_ms,
                            h.serial, h.envelope, h.stored_by, h.stored_ms
                     FROM policies p LEFT JOIN policy_history h ON h.grp = p.grp AND h.serial = (
                         SELECT max(serial) FROM policy_history WHERE grp = p.grp AND serial < p.serial)
                     ORDER BY p.grp",
                    &[],
                )?,
                |r| {
                    let previous = match r.opt_uint(5)? {
                        Some(serial) => Some((serial, r.text(6)?, r.text(7)?, r.time(8)?)),
                        None => None,
                    };
                    Ok(StoredPolicy {
                        group: r.text(0)?,
                        serial: r.uint(1)?,
                        envelope: r.text(2)?,
                        stored_by: r.text(3)?,
                        stored: r.time(4)?,
                        previous,
                    })
                },
            )
        })
    }

    fn add_policy_draft(
        &self,
        group: &str,
        policy: &str,
        author: &str,
        now: UtcMillis,
        log: &AdminAction,
    ) -> Result<i64, StoreError> {
        self.write(|sql| {
            let id = sql
                .query_one(
                    "INSERT INTO policy_drafts (grp, policy, author, created_ms) VALUES ($1, $2, $3, $4) RETURNING id",
                    args![group, policy, author, now],
                )?
                .int(0)?;
            log_in(sql, Some(&AdminAction { detail: format!("draft {id} for group {group}"), ..log.clone() }))?;
            Ok(id)
        })
    }

    fn policy_drafts(&self, before: Option<i64>, limit: u32) -> Result<Vec<PolicyDraft>, StoreError> {
        self.read(|sql| {
            all(
                sql.query(
                    "SELECT id, grp, policy, author, created_ms FROM policy_drafts WHERE id < $1 ORDER BY id DESC LIMIT $2",
                    args![before.unwrap_or(i64::MAX), i64::from(limit)],
                )?,
                policy_draft,
            )
        })
    }

    fn policy_draft(&self, id: i64) -> Result<Option<PolicyDraft>, StoreError> {
        self.read(|sql| {
            sql.query_opt(
                "SELECT id, grp, policy, author, created_ms FROM policy_drafts WHERE id = $1",
                args![id],
            )?
            .map(|r| policy_draft(&r))
            .transpose()
        })
    }

    fn policy(&self, group: &str) -> Result<Option<(String, String)>, StoreError> {
        self.read(|sql| {
            sql.query_opt("SELECT envelope, etag FROM policies WHERE grp = $1", args![group])?
                .map(|r| Ok((r.text(0)?, r.text(1)?)))
                .transpose()
        })
    }

    fn add_token(
        &self,
        token: &Hash,
        role: Role,
        label: &str,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<(), StoreError> {
        self.logged(log, |sql| {
            sql.execute(
                "INSERT INTO api_tokens (hash, role, label, created_ms) VALUES ($1, $2, $3, $4)",
                args![token, role.as_str(), label, now],
            )
        })?;
        Ok(())
    }

    fn token(&self, token: &Hash) -> Result<Option<(Role, String)>, StoreError> {
        let row = self
            .read(|sql| sql.query_opt("SELECT role, label FROM api_tokens WHERE hash = $1", args![token]))?;
        let Some(row) = row else { return Ok(None) };
        // A role this collector does not know grants nothing.
        Role::parse(&row.text(0)?).map(|role| row.text(1).map(|label| (role, label))).transpose()
    }

    fn events(&self, q: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        // Only the filters given, so the planner can use the index that fits (an `$1 IS
        // NULL OR` form would make SQLite scan everything).
        let mut args = Args::default();
        let mut statement =
            format!("SELECT {ENTRY_COLUMNS} FROM audit WHERE id > {}", args.bind(q.after.unwrap_or(0)));
        let filters = [
            ("workstation =", q.workstation.as_deref().map(sql::Value::from)),
            ("usr =", q.user.as_deref().map(sql::Value::from)),
            ("kind =", q.kind.as_deref().map(sql::Value::from)),
            ("time_ms >=", q.since.map(sql::Value::from)),
            ("time_ms <", q.until.map(sql::Value::from)),
            ("received_ms >=", q.received_since.map(sql::Value::from)),
            ("received_ms <", q.received_until.map(sql::Value::from)),
        ];
        for (clause, value) in filters {
            if let Some(value) = value {
                statement.push_str(&format!(" AND {clause} {}", args.bind(value)));
            }
        }
        if !q.kinds.is_empty() {
            let kinds: Vec<String> = q.kinds.iter().map(|k| args.bind(k.as_str())).collect();
            statement.push_str(&format!(" AND kind IN ({})", kinds.join(", ")));
        }
        if let Some(group) = q.group.as_deref() {
            statement.push_str(&format!(
                " AND workstation IN (SELECT id FROM workstations WHERE grp = {})",
                args.bind(group)
            ));
        }
        if let Some(failures) = q.failures {
            let kinds: Vec<String> =
                AuditKind::names(AuditKind::FAILURES).into_iter().map(|k| args.bind(k)).collect();
            let not = if failures { "" } else { "NOT " };
            statement.push_str(&format!(" AND kind {not}IN ({})", kinds.join(", ")));
        }
        statement.push_str(&format!(" ORDER BY id LIMIT {}", args.bind(i64::from(q.limit))));
        self.read(|sql| all(sql.query(&statement, &args.0)?, stored_event))
    }

    fn findings(&self, after: Option<&FindingKey>, limit: u32) -> Result<Vec<Finding>, StoreError> {
        let mut args = Args::default();
        let mut statement = "SELECT workstation, seq, kind, detail, found_ms FROM findings".to_owned();
        if let Some((found, workstation, seq, kind)) = after {
            statement.push_str(&format!(
                " WHERE (found_ms, workstation, seq, kind) > ({}, {}, {}, {})",
                args.bind(*found),
                args.bind(workstation),
                args.bind(sql::int(*seq)),
                args.bind(kind)
            ));
        }
        statement.push_str(&format!(
            " ORDER BY found_ms, workstation, seq, kind LIMIT {}",
            args.bind(i64::from(limit))
        ));
        self.read(|sql| all(sql.query(&statement, &args.0)?, finding))
    }

    fn conflicts(
        &self,
        workstation: Option<&str>,
        after: Option<&ConflictKey>,
        limit: u32,
    ) -> Result<Vec<Conflict>, StoreError> {
        let mut args = Args::default();
        let mut statement = format!(
            "SELECT c.workstation, c.seq, c.record, c.received_ms, {}
             FROM audit_conflicts c JOIN audit a ON a.workstation = c.workstation AND a.seq = c.seq WHERE 1 = 1",
            ENTRY_COLUMNS.split(", ").map(|c| format!("a.{c}")).collect::<Vec<_>>().join(", ")
        );
        if let Some(w) = workstation {
            statement.push_str(&format!(" AND c.workstation = {}", args.bind(w)));
        }
        if let Some((workstation, seq, received, hash)) = after {
            statement.push_str(&format!(
                " AND (c.workstation, c.seq, c.received_ms, c.hash) > ({}, {}, {}, {})",
                args.bind(workstation),
                args.bind(sql::int(*seq)),
                args.bind(*received),
                args.bind(hash)
            ));
        }
        statement.push_str(&format!(
            " ORDER BY c.workstation, c.seq, c.received_ms, c.hash LIMIT {}",
            args.bind(i64::from(limit))
        ));
        let rows = self.read(|sql| sql.query(&statement, &args.0))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let stored = stored_event(&Row(row.0[4..].to_vec()))?.entry;
            // A kept entry whose record no longer parses (the database edited by hand) is
            // shown as such, never left out of a page (the cursor would skip it): a
            // `tamper_detected` entry at that seq that claims nothing of what it was.
            let received = super::conflict_entry(&row.text(2)?).unwrap_or_else(|| AuditEntry {
                kind: AuditKind::TamperDetected,
                user: None,
                os_account: None,
                policy_hash: None,
                details: [("error".to_owned(), "the kept record does not parse".to_owned())].into(),
                prev_hash: [0; 32],
                hash: [0; 32],
                ..stored.clone()
            });
            out.push(Conflict {
                workstation: row.text(0)?,
                seq: row.uint(1)?,
                stored,
                received,
                received_at: row.time(3)?,
            });
        }
        Ok(out)
    }

    fn log_admin(&self, a: &AdminAction) -> Result<(), StoreError> {
        self.write(|sql| log_in(sql, Some(a)))
    }

    fn admin_log(&self, after: Option<i64>, limit: u32) -> Result<Vec<(i64, AdminAction)>, StoreError> {
        self.read(|sql| {
            all(
                sql.query(
                    "SELECT id, time_ms, actor, action, detail FROM admin_log WHERE id > $1 ORDER BY id LIMIT $2",
                    args![after.unwrap_or(0), i64::from(limit)],
                )?,
                |r| {
                    let action =
                        AdminAction { time: r.time(1)?, actor: r.text(2)?, action: r.text(3)?, detail: r.text(4)? };
                    Ok((r.int(0)?, action))
                },
            )
        })
    }

    fn emergency_reviews(
        &self,
        entries: &[(String, u64)],
    ) -> Result<Vec<(String, u64, EmergencyReview)>, StoreError> {
        // A page may hold 10,000 accesses: asked about a few hundred at a time, so that no
        // statement comes near a backend's limit on parameters or expression depth.
        const AT_ONCE: usize = 400;
        self.read(|sql| {
            let mut reviews = Vec::new();
            for chunk in entries.chunks(AT_ONCE) {
                let mut args = Args::default();
                let keys: Vec<String> = chunk
                    .iter()
                    .map(|(ws, seq)| format!("({}, {})", args.bind(ws.as_str()), args.bind(sql::int(*seq))))
                    .collect();
                let statement = format!(
                    "SELECT workstation, seq, reviewer, note, reviewed_ms FROM emergency_reviews WHERE (workstation, seq) IN ({})",
                    keys.join(", ")
                );
                reviews.extend(all(sql.query(&statement, &args.0)?, |r| {
                    Ok((
                        r.text(0)?,
                        r.uint(1)?,
                        EmergencyReview { reviewer: r.text(2)?, note: r.text(3)?, reviewed: r.time(4)? },
                    ))
                })?);
            }
            Ok(reviews)
        })
    }

    fn review_emergency(
        &self,
        workstation: &str,
        seq: u64,
        review: &EmergencyReview,
        log: &AdminAction,
    ) -> Result<Option<EmergencyReview>, StoreError> {
        self.write(|sql| {
            let entry = sql.query_opt(
                "SELECT kind FROM audit WHERE workstation = $1 AND seq = $2",
                args![workstation, sql::int(seq)],
            )?;
            if entry.map(|r| r.text(0)).transpose()?.as_deref() != Some(AuditKind::EmergencyAccess.as_str()) {
                return Err(StoreError::Conflict(format!("no break-glass access is stored at {workstation} #{seq}")));
            }
            let kept = sql.execute(
                "INSERT INTO emergency_reviews (workstation, seq, reviewer, note, reviewed_ms) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT DO NOTHING",
                args![workstation, sql::int(seq), &review.reviewer, &review.note, review.reviewed],
            )?;
            if kept == 0 {
                let r = sql.query_one(
                    "SELECT reviewer, note, reviewed_ms FROM emergency_reviews WHERE workstation = $1 AND seq = $2",
                    args![workstation, sql::int(seq)],
                )?;
                return Ok(Some(EmergencyReview { reviewer: r.text(0)?, note: r.text(1)?, reviewed: r.time(2)? }));
            }
            log_in(sql, Some(log))?;
            Ok(None)
        })
    }

    fn charts(&self, since: UtcMillis, until: UtcMillis, group: Option<&str>) -> Result<Charts, StoreError> {
        use wardlock_core::charts;
        let group = group.map(str::to_owned);
        // Each query walks the (kind, time) index for its kinds, joined to the workstation
        // only for its group.
        // The workstations are joined only for a group's charts.
        let from =
            if group.is_some() { "audit a JOIN workstations w ON w.id = a.workstation" } else { "audit a" };
        let scope = |args: &mut Args<'_>, kinds: &[AuditKind]| {
            let kinds: Vec<String> = kinds.iter().map(|k| args.bind(k.as_str())).collect();
            let mut clause = format!(
                "a.kind IN ({}) AND a.time_ms >= {} AND a.time_ms < {}",
                kinds.join(", "),
                args.bind(since),
                args.bind(until)
            );
            if let Some(group) = &group {
                clause.push_str(&format!(" AND w.grp = {}", args.bind(group.clone())));
            }
            clause
        };
        self.read(|sql| {
            // The heat map from the counts kept at intake.
            let mut args = Args::default();
            let mut statement = format!(
                "SELECT grp, hour_ms, locks, unlocks FROM chart_hours WHERE hour_ms >= {} AND hour_ms < {}",
                args.bind(since.unix_millis().div_euclid(3_600_000) * 3_600_000),
                args.bind(until)
            );
            if let Some(group) = &group {
                statement.push_str(&format!(" AND grp = {}", args.bind(group.clone())));
            }
            statement.push_str(" ORDER BY grp, hour_ms");
            let locks_per_hour = all(sql.query(&statement, &args.0)?, |r| {
                Ok(HourCount { group: r.text(0)?, hour: r.time(1)?, locks: r.uint(2)?, unlocks: r.uint(3)? })
            })?;

            let mut args = Args::default();
            let locked_only = args.bind(AuditKind::Locked.as_str());
            let filter = scope(&mut args, &[AuditKind::WarningShown, AuditKind::Locked]);
            // Details only of the locks: the guard's measure of their lateness.
            let statement = format!(
                "SELECT a.workstation, a.seq, a.kind, a.time_ms, CASE WHEN a.kind = {locked_only} THEN a.details END
                 FROM {} WHERE {filter} ORDER BY a.workstation, a.seq",
                from
            );
            let rows = sql.query(&statement, &args.0)?;
            let mut sequence = Vec::with_capacity(rows.len());
            let mut delays = Vec::new();
            #[derive(serde::Deserialize)]
            struct Measured {
                idle_secs: Option<String>,
                timeout_secs: Option<String>,
            }
            for r in &rows {
                let Some(kind) = AuditKind::parse(&r.text(2)?) else { continue };
                if let Some(details) = r.opt_text(4)? {
                    if let Ok(Measured { idle_secs: Some(idle), timeout_secs: Some(timeout) }) =
                        serde_json::from_str(&details)
                    {
                        if let (Ok(idle), Ok(timeout)) = (idle.parse(), timeout.parse()) {
                            delays.push((idle, timeout));
                        }
                    }
                }
                sequence.push((r.text(0)?, r.uint(1)?, kind, r.time(3)?));
            }

            let mut args = Args::default();
            let (day, monday) = (args.bind(7 * 24 * 3_600_000i64), args.bind(4 * 24 * 3_600_000i64));
            let filter = scope(&mut args, &[AuditKind::EmergencyAccess]);
            let statement = format!(
                "SELECT ((a.time_ms - {monday}) / {day}) * {day} + {monday} AS week, count(*)
                 FROM {} WHERE {filter}
                 GROUP BY 1 ORDER BY 1",
                from
            );
            let emergency_per_week =
                all(sql.query(&statement, &args.0)?, |r| Ok(WeekCount { week: r.time(0)?, count: r.uint(1)? }))?;
            Ok(Charts {
                since,
                until,
                locks_per_hour,
                lock_delay: charts::lock_delays(delays),
                unattended: charts::unattended(&sequence, 50),
                emergency_per_week,
            })
        })
    }

    fn last_event_id(&self) -> Result<i64, StoreError> {
        self.read(|sql| sql.query_one("SELECT coalesce(max(id), 0) FROM audit", &[])?.int(0))
    }

    fn entry_count(&self) -> Result<u64, StoreError> {
        self.read(|sql| sql.query_one("SELECT count(*) FROM audit", &[])?.uint(0))
    }

    fn failures_by_user(
        &self,
        since: UtcMillis,
        after: Option<&FailureKey>,
        limit: u32,
    ) -> Result<Vec<FailureCount>, StoreError> {
        let mut args = Args::default();
        let failed = AuditKind::names(AuditKind::FAILED);
        let locked_out = AuditKind::names(AuditKind::LOCKED_OUT);
        let mut statement = format!(
            "SELECT usr, workstation, failed, locked_out, last_ms FROM (
                 SELECT usr, workstation, SUM(CASE WHEN kind IN {} THEN 1 ELSE 0 END) AS failed,
                        SUM(CASE WHEN kind IN {} THEN 1 ELSE 0 END) AS locked_out, MAX(time_ms) AS last_ms
                 FROM audit WHERE usr IS NOT NULL AND kind IN {} AND time_ms >= {}
                 GROUP BY usr, workstation) counts",
            args.list(failed.iter().copied()),
            args.list(locked_out.iter().copied()),
            args.list(failed.iter().chain(&locked_out).copied()),
            args.bind(since),
        );
        if let Some((n, user, workstation)) = after {
            let n = args.bind(sql::int(*n));
            statement.push_str(&format!(
                " WHERE failed < {n} OR (failed = {n} AND (usr, workstation) > ({}, {}))",
                args.bind(user),
                args.bind(workstation)
            ));
        }
        statement.push_str(&format!(
            " ORDER BY failed DESC, usr, workstation LIMIT {}",
            args.bind(i64::from(limit))
        ));
        self.read(|sql| {
            all(sql.query(&statement, &args.0)?, |r| {
                Ok(FailureCount {
                    user: r.text(0)?,
                    workstation: r.text(1)?,
                    failed_attempts: r.uint(2)?,
                    lockouts: r.uint(3)?,
                    last: r.time(4)?,
                })
            })
        })
    }

    fn stale_users(
        &self,
        cutoff: UtcMillis,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(UserRecord, Option<UtcMillis>)>, StoreError> {
        let mut args = Args::default();
        let used = args.list(AuditKind::names(AuditKind::ACCOUNT_USED));
        let cutoff = args.bind(cutoff);
        let columns: Vec<String> = USER_COLUMNS.split(", ").map(|c| format!("u.{c}")).collect();
        // Along the audit's (usr, id) index, a user's entries only.
        let statement = format!(
            "SELECT {}, (SELECT MAX(a.time_ms) FROM audit a WHERE a.usr = u.id AND a.kind IN {used}) AS last_used
             FROM users u
             WHERE u.id > {} AND u.disabled = {} AND u.updated_ms < {cutoff}
               AND NOT EXISTS (SELECT 1 FROM audit a WHERE a.usr = u.id AND a.kind IN {used} AND a.time_ms >= {cutoff})
             ORDER BY u.id LIMIT {}",
            columns.join(", "),
            args.bind(after.unwrap_or("")),
            args.bind(false),
            args.bind(i64::from(limit))
        );
        self.read(|sql| all(sql.query(&statement, &args.0)?, |r| Ok((user(r)?, r.opt_time(9)?))))
    }

    fn forward_cursor(&self, name: &str) -> Result<i64, StoreError> {
        self.read(|sql| {
            sql.query_opt("SELECT last_id FROM forward_state WHERE name = $1", args![name])?
                .map_or(Ok(0), |r| r.int(0))
        })
    }

    fn set_forward_cursor(&self, name: &str, id: i64) -> Result<(), StoreError> {
        self.write(|sql| {
            sql.execute(
                "INSERT INTO forward_state (name, last_id) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET last_id = excluded.last_id",
                args![name, id],
            )?;
            Ok(())
        })
    }

    fn put_user(
        &self,
        u: &UserRecord,
        must_be_new: bool,
        log: Option<&AdminAction>,
    ) -> Result<bool, StoreError> {
        let on_conflict = if must_be_new {
            "DO NOTHING"
        } else {
            "DO UPDATE SET display_name = excluded.display_name, role = excluded.role,
                 disabled = excluded.disabled, pin_hash = excluded.pin_hash, totp_sealed = excluded.totp_sealed,
                 updated_ms = excluded.updated_ms, groups = excluded.groups"
        };
        let statement = format!(
            "INSERT INTO users (id, display_name, role, disabled, pin_hash, totp_sealed, updated_ms, groups)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) {on_conflict}"
        );
        let changed = self.logged(log, |sql| {
            sql.execute(
                &statement,
                args![
                    &u.id,
                    &u.display_name,
                    &u.role,
                    u.disabled,
                    u.pin_sealed.as_deref(),
                    u.totp_sealed.as_ref(),
                    u.updated,
                    super::groups_column(&u.groups)
                ],
            )
        })?;
        Ok(changed == 1)
    }

    fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let statement = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        self.read(|sql| sql.query_opt(&statement, args![id])?.map(|r| user(&r)).transpose())
    }

    fn set_admin_grant(
        &self,
        id: &str,
        grant: &str,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<bool, StoreError> {
        let n = self.logged(log, |sql| {
            sql.execute(
                "UPDATE users SET admin_grant = $2, updated_ms = $3 WHERE id = $1",
                args![id, grant, now],
            )
        })?;
        Ok(n > 0)
    }

    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let statement = format!("SELECT {USER_COLUMNS} FROM users ORDER BY id");
        self.read(|sql| all(sql.query(&statement, &[])?, user))
    }

    fn users_page(&self, after: Option<&str>, limit: u32) -> Result<Vec<UserRecord>, StoreError> {
        let statement = format!("SELECT {USER_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2");
        self.read(|sql| all(sql.query(&statement, args![after.unwrap_or(""), i64::from(limit)])?, user))
    }

    fn add_console_account(
        &self,
        a: &ConsoleAccount,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<bool, StoreError> {
        let added = self.logged(log, |sql| {
            sql.execute(
                "INSERT INTO console_accounts (name, role, password_sealed, totp_sealed, auth_state, disabled, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                args![&a.name, a.role.as_str(), &a.password_sealed, &a.totp_sealed, &a.auth_state, a.disabled, now],
            )
        })?;
        Ok(added > 0)
    }

    fn console_account(&self, name: &str) -> Result<Option<ConsoleAccount>, StoreError> {
        let row = self.read(|sql| {
            sql.query_opt(
                "SELECT name, role, password_sealed, totp_sealed, auth_state, disabled FROM console_accounts WHERE name = $1",
                args![name],
            )
        })?;
        let Some(r) = row else { return Ok(None) };
        // A role this collector does not know grants nothing.
        let Some(role) = Role::parse(&r.text(1)?) else { return Ok(None) };
        Ok(Some(ConsoleAccount {
            name: r.text(0)?,
            role,
            password_sealed: r.text(2)?,
            totp_sealed: r.blob(3)?,
            auth_state: r.text(4)?,
            disabled: r.bool(5)?,
        }))
    }

    fn reset_console_account(
        &self,
        a: &ConsoleAccount,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<bool, StoreError> {
        let changed = self.logged(log, |sql| {
            let changed = sql.execute(
                "UPDATE console_accounts SET password_sealed = $1, totp_sealed = $2, auth_state = $3 WHERE name = $4",
                args![&a.password_sealed, &a.totp_sealed, &a.auth_state, &a.name],
            )?;
            sql.execute(
                "UPDATE console_sessions SET signed_out_ms = $1 WHERE account = $2 AND signed_out_ms IS NULL",
                args![now, &a.name],
            )?;
            Ok(changed)
        })?;
        Ok(changed > 0)
    }

    fn disable_console_account(&self, name: &str, log: Option<&AdminAction>) -> Result<bool, StoreError> {
        let changed = self.logged(log, |sql| {
            sql.execute(
                "UPDATE console_accounts SET disabled = $1 WHERE name = $2 AND disabled = $3",
                args![true, name, false],
            )
        })?;
        Ok(changed > 0)
    }

    fn console_sign_in(
        &self,
        name: &str,
        seen: &str,
        auth_state: &str,
        session: Option<(&Hash, UtcMillis)>,
        log: &AdminAction,
    ) -> Result<bool, StoreError> {
        self.write(|sql| {
            let updated = sql.execute(
                "UPDATE console_accounts SET auth_state = $1 WHERE name = $2 AND auth_state = $3",
                args![auth_state, name, seen],
            )?;
            if updated == 0 {
                return Ok(false);
            }
            if let Some((hash, now)) = session {
                sql.execute(
                    "INSERT INTO console_sessions (hash, account, signed_in_ms, last_used_ms) VALUES ($1, $2, $3, $3)",
                    args![hash, name, now],
                )?;
            }
            log_in(sql, Some(log))?;
            Ok(true)
        })
    }

    fn console_session(&self, session: &Hash) -> Result<Option<ConsoleSessionRecord>, StoreError> {
        let row = self.read(|sql| {
            sql.query_opt(
                "SELECT s.account, a.role, a.disabled, s.signed_in_ms, s.last_used_ms, s.signed_out_ms
                 FROM console_sessions s JOIN console_accounts a ON a.name = s.account WHERE s.hash = $1",
                args![session],
            )
        })?;
        let Some(r) = row else { return Ok(None) };
        let Some(role) = Role::parse(&r.text(1)?) else { return Ok(None) };
        Ok(Some(ConsoleSessionRecord {
            account: r.text(0)?,
            role,
            account_disabled: r.bool(2)?,
            signed_in: r.time(3)?,
            last_used: r.time(4)?,
            signed_out: r.opt_time(5)?,
        }))
    }

    fn touch_console_session(&self, session: &Hash, now: UtcMillis) -> Result<(), StoreError> {
        self.write(|sql| {
            sql.execute(
                "UPDATE console_sessions SET last_used_ms = $1 WHERE hash = $2 AND last_used_ms < $1",
                args![now, session],
            )
        })?;
        Ok(())
    }

    fn sign_out_console_session(
        &self,
        session: &Hash,
        now: UtcMillis,
        log: &AdminAction,
    ) -> Result<bool, StoreError> {
        let ended = self.logged(Some(log), |sql| {
            sql.execute(
                "UPDATE console_sessions SET signed_out_ms = $1 WHERE hash = $2 AND signed_out_ms IS NULL",
                args![now, session],
            )
        })?;
        Ok(ended > 0)
    }
}
