//! The PostgreSQL backend, for hospitals that run several collectors behind a load
//! balancer. Batches of one workstation are serialised by a row lock on that
//! workstation (`SELECT … FOR UPDATE`), and entries are inserted with `ON CONFLICT DO
//! NOTHING`, so two collectors receiving the same batch store it once.

use std::collections::{BTreeSet, HashMap};

use r2d2_postgres::postgres::{self, Transaction};
use r2d2_postgres::PostgresConnectionManager;

use wardlock_core::audit::{AuditEntry, AuditKind, GENESIS_HASH};
use wardlock_core::clock::UtcMillis;
use wardlock_core::protocol::collector::Heartbeat;

use super::intake::{self, ChainFinding, ChainState, IntakeTx, Received};
use super::{
    finding_line, hash_of, ms, plan_enroll, policy_etag, EnrollAttempt, EnrollPlan, EnrollResult,
    EnrollSecret, Enrolled, NewEnrollSecret, ReenrollApproval,
};
use super::{
    AdminAction, CollectorStore, EventQuery, FailureCount, Finding, Hash, Ingest, PolicyPut, Role,
    StoreError, StoredEvent, UserRecord, Workstation,
};

const MIGRATIONS: &[&str] = &["
CREATE TABLE workstations (
    id                TEXT PRIMARY KEY,
    node_key          BYTEA NOT NULL UNIQUE,
    hostname          TEXT NOT NULL,
    grp               TEXT NOT NULL,
    agent_version     TEXT NOT NULL,
    enrolled_ms       BIGINT NOT NULL,
    last_seen_ms      BIGINT,
    contiguous_seq    BIGINT NOT NULL DEFAULT 0,
    contiguous_hash   BYTEA NOT NULL,
    max_seq           BIGINT NOT NULL DEFAULT 0,
    reported_last_seq BIGINT,
    transport_key     BYTEA NOT NULL
);
CREATE TABLE audit (
    id          BIGSERIAL PRIMARY KEY,
    workstation TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    time_ms     BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    usr         TEXT,
    os_account  TEXT,
    policy_hash TEXT,
    details     TEXT NOT NULL,
    prev_hash   BYTEA NOT NULL,
    hash        BYTEA NOT NULL,
    received_ms BIGINT NOT NULL,
    UNIQUE (workstation, seq)
);
CREATE INDEX audit_user ON audit (usr, workstation, seq);
CREATE INDEX audit_kind ON audit (kind, workstation, seq);
CREATE TABLE findings (
    workstation TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL,
    found_ms    BIGINT NOT NULL,
    PRIMARY KEY (workstation, seq, kind)
);
CREATE TABLE enroll_secrets (hash BYTEA PRIMARY KEY, label TEXT NOT NULL, created_ms BIGINT NOT NULL);
CREATE TABLE api_tokens (hash BYTEA PRIMARY KEY, role TEXT NOT NULL, label TEXT NOT NULL, created_ms BIGINT NOT NULL);
CREATE TABLE policies (grp TEXT PRIMARY KEY, serial BIGINT NOT NULL, envelope TEXT NOT NULL, etag TEXT NOT NULL, updated_ms BIGINT NOT NULL);
CREATE TABLE admin_log (id BIGSERIAL PRIMARY KEY, time_ms BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE users (
    id           TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    role         TEXT NOT NULL,
    disabled     BOOLEAN NOT NULL DEFAULT FALSE,
    pin_hash     TEXT,
    totp_sealed  BYTEA,
    updated_ms   BIGINT NOT NULL
);
", "
CREATE TABLE forward_state (name TEXT PRIMARY KEY, last_id BIGINT NOT NULL);
", "
ALTER TABLE enroll_secrets ADD COLUMN expires_ms BIGINT;
ALTER TABLE enroll_secrets ADD COLUMN max_uses BIGINT;
ALTER TABLE enroll_secrets ADD COLUMN uses BIGINT NOT NULL DEFAULT 0;
ALTER TABLE enroll_secrets ADD COLUMN revoked_ms BIGINT;
ALTER TABLE workstations ADD COLUMN revoked_ms BIGINT;
CREATE TABLE reenroll_approvals (
    workstation TEXT PRIMARY KEY,
    code        BYTEA NOT NULL,
    expires_ms  BIGINT NOT NULL,
    created_ms  BIGINT NOT NULL
);
ALTER TABLE users ADD COLUMN admin_grant TEXT;
ALTER TABLE users ADD COLUMN groups TEXT;
CREATE TABLE audit_conflicts (
    workstation TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    hash        BYTEA NOT NULL,
    record      TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (workstation, seq, hash)
);
", "
-- By user (or kind), then in arrival order, as the events query walks them; a batch
-- appends to each of its users' ranges instead of one place per user and workstation.
DROP INDEX audit_user;
DROP INDEX audit_kind;
CREATE INDEX audit_user ON audit (usr, id);
CREATE INDEX audit_kind ON audit (kind, id);
", "
-- A workstation's group is IT's decision: an enrollment secret enrolls into one group,
-- an administrator's approval may move a workstation to another.
ALTER TABLE enroll_secrets ADD COLUMN grp TEXT;
ALTER TABLE reenroll_approvals ADD COLUMN grp TEXT;
", "
-- The latest TOTP step each user used anywhere, for the other workstations to refuse.
CREATE TABLE totp_steps (usr TEXT PRIMARY KEY, step_ms BIGINT NOT NULL, noted_ms BIGINT NOT NULL);
CREATE INDEX totp_steps_noted ON totp_steps (noted_ms);
"];

/// An enrollment finding (seq 0) is appended to what is there, never overwritten: the
/// earlier refusals stay evidence. Capped at 1 MB a row (then the first ones are kept).
const APPEND_ENROLL_FINDING: &str =
    "INSERT INTO findings (workstation, seq, kind, detail, found_ms) VALUES ($1, 0, $2, $3, $4)
     ON CONFLICT (workstation, seq, kind) DO UPDATE SET detail = CASE WHEN length(findings.detail) < 1000000
         THEN findings.detail || chr(10) || excluded.detail ELSE findings.detail END";

type Pool = r2d2_postgres::r2d2::Pool<PostgresConnectionManager<tokio_postgres_rustls::MakeRustlsConnect>>;

pub struct PgStore {
    pool: Pool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("connections", &self.pool.state().connections).finish_non_exhaustive()
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        // postgres' own Display is just "db error"; the server's message says what failed.
        let text = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.severity(), db.message()),
            None => match std::error::Error::source(&e) {
                Some(source) => format!("{e}: {source}"),
                None => e.to_string(),
            },
        };
        StoreError::Postgres(text)
    }
}

impl From<r2d2_postgres::r2d2::Error> for StoreError {
    fn from(e: r2d2_postgres::r2d2::Error) -> Self {
        StoreError::Postgres(format!("no database connection: {e}"))
    }
}

/// Records an administrator's action in the admin log, inside the caller's transaction.
fn log_in(tx: &mut postgres::Transaction<'_>, log: Option<&AdminAction>) -> Result<(), StoreError> {
    if let Some(a) = log {
        tx.execute(
            "INSERT INTO admin_log (time_ms, actor, action, detail) VALUES ($1, $2, $3, $4)",
            &[&ms(a.time), &a.actor, &a.action, &a.detail],
        )?;
    }
    Ok(())
}

impl PgStore {
    /// Runs `change` and, when it changed a row, records the administrator's `log` entry
    /// in the same transaction: an action and its entry are written together or not at all.
    fn logged(
        &self,
        log: Option<&AdminAction>,
        change: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<u64, postgres::Error>,
    ) -> Result<u64, StoreError> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction()?;
        let changed = change(&mut tx)?;
        if changed > 0 {
            log_in(&mut tx, log)?;
        }
        tx.commit()?;
        Ok(changed)
    }

    /// Connects (`postgres://user@host:port/db`) and brings the schema up to date. Several
    /// collectors starting together migrate once: the migration holds an advisory lock.
    ///
    /// TLS is asked for libpq's way, in the URL: `sslmode=require`, `verify-ca` or
    /// `verify-full` with `sslrootcert=PATH` (the CA that signed the server's
    /// certificate). Every one of them verifies the certificate and the host name (rustls
    /// does nothing less); `disable`, `prefer` or no `sslmode` speak plain TCP, as before.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let open_err = |why: String| StoreError::Open { path: redact(url), why };
        let (url_rest, tls) = split_tls(url).map_err(open_err)?;
        let mut config: postgres::Config =
            url_rest.parse().map_err(|e: postgres::Error| open_err(e.to_string()))?;
        let roots = match &tls {
            Some(root_cert) => {
                config.ssl_mode(postgres::config::SslMode::Require);
                root_store(root_cert).map_err(open_err)?
            }
            None => {
                config.ssl_mode(postgres::config::SslMode::Disable);
                rustls::RootCertStore::empty()
            }
        };
        let client = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let connector = tokio_postgres_rustls::MakeRustlsConnect::new(client);
        // One connection first, for its own error: the pool would only say it timed out.
        let first = config.connect(connector.clone()).map_err(|e| {
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                why.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            open_err(why)
        })?;
        drop(first);
        let manager = PostgresConnectionManager::new(config, connector);
        let pool = r2d2_postgres::r2d2::Pool::builder()
            .max_size(8)
            .connection_timeout(std::time::Duration::from_secs(10))
            .build(manager)
            .map_err(|e| StoreError::Open { path: redact(url), why: e.to_string() })?;
        let store = PgStore { pool };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction()?;
        // One migrator at a time when several collectors start together ("WDLK").
        tx.execute("SELECT pg_advisory_xact_lock(1464093771)", &[])?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
        let applied: i32 = tx.query_opt("SELECT version FROM schema_version", &[])?.map_or(0, |r| r.get(0));
        if applied as usize > MIGRATIONS.len() {
            return Err(StoreError::Conflict(format!(
                "the database was written by a newer collector (schema {applied}); upgrade this one"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
            tx.batch_execute(sql)?;
            tx.execute("DELETE FROM schema_version", &[])?;
            tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&(i as i32 + 1)])?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// The URL without its password, for messages.
/// Takes libpq's `sslmode` and `sslrootcert` out of the URL (the driver knows only
/// `disable`, `prefer` and `require`, and no root certificate): the rest of the URL, and
/// the CA file when TLS is wanted.
fn split_tls(url: &str) -> Result<(String, Option<std::path::PathBuf>), String> {
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_owned(), None)) };
    let (mut wanted, mut root_cert, mut kept) = (false, None, Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", "require" | "verify-ca" | "verify-full")) => wanted = true,
            Some(("sslmode", "disable" | "allow" | "prefer")) => wanted = false,
            Some(("sslmode", other)) => {
                return Err(format!(
                "sslmode={other} is not understood; use disable, prefer, require, verify-ca or verify-full"
            ))
            }
            Some(("sslrootcert", path)) => root_cert = Some(std::path::PathBuf::from(path)),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    match (wanted, root_cert) {
        (true, Some(root_cert)) => Ok((rest, Some(root_cert))),
        (true, None) => Err("TLS to the database needs sslrootcert=PATH in the URL: the CA file (PEM) that signed the server's certificate".into()),
        (false, _) => Ok((rest, None)),
    }
}

fn root_store(path: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    use rustls_pki_types::pem::PemObject;
    let file_err = |why: String| format!("sslrootcert {}: {why}", path.display());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|e| file_err(e.to_string()))? {
        roots.add(cert.map_err(|e| file_err(e.to_string()))?).map_err(|e| file_err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(file_err("no certificate in it".into()));
    }
    Ok(roots)
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn entry_from_row(r: &postgres::Row) -> (i64, AuditEntry, i64) {
    let kind: String = r.get(4);
    let details: String = r.get(8);
    (
        r.get(0),
        AuditEntry {
            workstation: r.get(1),
            seq: r.get::<_, i64>(2) as u64,
            time: UtcMillis::from_unix_millis(r.get(3)),
            kind: AuditKind::parse(&kind).unwrap_or(AuditKind::TamperDetected),
            user: r.get(5),
            os_account: r.get(6),
            policy_hash: r.get(7),
            details: serde_json::from_str(&details).unwrap_or_default(),
            prev_hash: hash_of(r.get(9)),
            hash: hash_of(r.get(10)),
        },
        r.get(11),
    )
}

const ENTRY_COLUMNS: &str =
    "id, workstation, seq, time_ms, kind, usr, os_account, policy_hash, details, prev_hash, hash, received_ms";

fn workstation_from_row(r: &postgres::Row) -> Workstation {
    Workstation {
        id: r.get(0),
        hostname: r.get(1),
        group: r.get(2),
        agent_version: r.get(3),
        enrolled: UtcMillis::from_unix_millis(r.get(4)),
        last_seen: r.get::<_, Option<i64>>(5).map(UtcMillis::from_unix_millis),
        contiguous_seq: r.get::<_, i64>(6) as u64,
        reported_last_seq: r.get::<_, Option<i64>>(7).map(|s| s as u64),
        transport_key: r.get(8),
    }
}

const SECRET_COLUMNS: &str = "hash, label, created_ms, expires_ms, max_uses, uses, revoked_ms, grp";

fn secret_from_row(r: &postgres::Row) -> EnrollSecret {
    EnrollSecret {
        hash: hash_of(r.get(0)),
        label: r.get(1),
        created: UtcMillis::from_unix_millis(r.get(2)),
        expires: r.get::<_, Option<i64>>(3).map(UtcMillis::from_unix_millis),
        max_uses: r.get::<_, Option<i64>>(4).map(|m| m as u64),
        uses: r.get::<_, i64>(5) as u64,
        revoked: r.get::<_, Option<i64>>(6).map(UtcMillis::from_unix_millis),
        group: r.get(7),
    }
}

const WORKSTATION_COLUMNS: &str =
    "id, hostname, grp, agent_version, enrolled_ms, last_seen_ms, contiguous_seq, reported_last_seq, transport_key";

fn user_from_row(r: &postgres::Row) -> UserRecord {
    UserRecord {
        id: r.get(0),
        display_name: r.get(1),
        role: r.get(2),
        disabled: r.get(3),
        pin_sealed: r.get(4),
        totp_sealed: r.get(5),
        updated: UtcMillis::from_unix_millis(r.get(6)),
        admin_grant: r.get(7),
        groups: super::groups_of(r.get(8)),
    }
}

const USER_COLUMNS: &str =
    "id, display_name, role, disabled, pin_hash, totp_sealed, updated_ms, admin_grant, groups";

fn flag(
    tx: &mut Transaction<'_>,
    ws: &str,
    seq: u64,
    kind: &str,
    detail: &str,
    now: UtcMillis,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO findings (workstation, seq, kind, detail, found_ms) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        &[&ws, &(seq as i64), &kind, &detail, &ms(now)],
    )?;
    Ok(())
}

/// One workstation's rows in an open transaction; `chain_state` takes the row lock that
/// serialises this workstation's batches across collectors.
struct PgIntake<'a, 't> {
    tx: &'a mut Transaction<'t>,
    workstation: &'a str,
}

impl IntakeTx for PgIntake<'_, '_> {
    fn chain_state(&mut self) -> Result<ChainState, StoreError> {
        let row = self.tx.query_one(
            "SELECT contiguous_seq, contiguous_hash, max_seq FROM workstations WHERE id = $1 FOR UPDATE",
            &[&self.workstation],
        )?;
        Ok(ChainState {
            contiguous: row.get::<_, i64>(0) as u64,
            contiguous_hash: hash_of(row.get(1)),
            max_seq: row.get::<_, i64>(2) as u64,
        })
    }

    /// One round trip for the whole batch: arrays in, the seqs actually inserted out.
    fn insert_new(&mut self, entries: &[Received], now: UtcMillis) -> Result<BTreeSet<u64>, StoreError> {
        let n = entries.len();
        let mut seqs = Vec::with_capacity(n);
        let mut times = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        let mut users = Vec::with_capacity(n);
        let mut accounts = Vec::with_capacity(n);
        let mut policy_hashes = Vec::with_capacity(n);
        let mut details = Vec::with_capacity(n);
        let mut prevs = Vec::with_capacity(n);
        let mut hashes = Vec::with_capacity(n);
        for received in entries {
            let e = received.entry();
            seqs.push(e.seq as i64);
            times.push(ms(e.time));
            kinds.push(e.kind.as_str());
            users.push(e.user.as_deref());
            accounts.push(e.os_account.as_deref());
            policy_hashes.push(e.policy_hash.as_deref());
            details.push(received.details_json());
            prevs.push(&e.prev_hash[..]);
            hashes.push(&e.hash[..]);
        }
        let inserted = self
            .tx
            .query(
                "INSERT INTO audit (workstation, seq, time_ms, kind, usr, os_account, policy_hash, details, prev_hash, hash, received_ms)
                 SELECT $1::TEXT, *, $11::BIGINT FROM UNNEST($2::BIGINT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[],
                                               $8::TEXT[], $9::BYTEA[], $10::BYTEA[])
                 ON CONFLICT (workstation, seq) DO NOTHING RETURNING seq",
                &[&self.workstation, &seqs, &times, &kinds, &users, &accounts, &policy_hashes, &details, &prevs, &hashes, &ms(now)],
            )?
            .iter()
            .map(|r| r.get::<_, i64>(0) as u64)
            .collect();
        Ok(inserted)
    }

    fn stored_hashes(&mut self, seqs: &[u64]) -> Result<HashMap<u64, Vec<u8>>, StoreError> {
        let seqs: Vec<i64> = seqs.iter().map(|&s| s as i64).collect();
        Ok(self
            .tx
            .query(
                "SELECT seq, hash FROM audit WHERE workstation = $1 AND seq = ANY($2)",
                &[&self.workstation, &seqs],
            )?
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
            .collect())
    }

    fn keep_conflict(&mut self, entry: &AuditEntry, now: UtcMillis) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO audit_conflicts (workstation, seq, hash, record, received_ms) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            &[&self.workstation, &(entry.seq as i64), &&entry.hash[..], &super::conflict_record(entry), &ms(now)],
        )?;
        Ok(())
    }

    fn entries_after(&mut self, seq: u64) -> Result<Vec<AuditEntry>, StoreError> {
        let sql =
            format!("SELECT {ENTRY_COLUMNS} FROM audit WHERE workstation = $1 AND seq > $2 ORDER BY seq");
        Ok(self
            .tx
            .query(&sql, &[&self.workstation, &(seq as i64)])?
            .iter()
            .map(|r| entry_from_row(r).1)
            .collect())
    }

    fn first_stored_after(&mut self, seq: u64) -> Result<Option<u64>, StoreError> {
        let next: Option<i64> = self
            .tx
            .query_one(
                "SELECT MIN(seq) FROM audit WHERE workstation = $1 AND seq > $2",
                &[&self.workstation, &(seq as i64)],
            )?
            .get(0);
        Ok(next.map(|n| n as u64))
    }

    fn set_chain_state(&mut self, state: &ChainState, now: UtcMillis) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE workstations SET contiguous_seq = $2, contiguous_hash = $3, max_seq = $4, last_seen_ms = $5 WHERE id = $1",
            &[
                &self.workstation,
                &(state.contiguous as i64),
                &&state.contiguous_hash[..],
                &(state.max_seq as i64),
                &ms(now),
            ],
        )?;
        Ok(())
    }

    fn flag(&mut self, findings: &[ChainFinding], now: UtcMillis) -> Result<(), StoreError> {
        for (seq, kind, detail) in findings {
            flag(self.tx, self.workstation, *seq, kind, detail, now)?;
        }
        Ok(())
    }
}

impl CollectorStore for PgStore {
    fn add_enroll_secret(
        &self,
        secret: &Hash,
        new: &NewEnrollSecret,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<(), StoreError> {
        self.logged(log, |tx| tx.execute(
            "INSERT INTO enroll_secrets (hash, label, created_ms, expires_ms, max_uses, grp) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&&secret[..], &new.label, &ms(now), &new.expires.map(ms), &new.max_uses.map(|m| m as i64), &new.group],
        ))?;
        Ok(())
    }

    fn enroll_secrets(&self) -> Result<Vec<EnrollSecret>, StoreError> {
        let sql = format!("SELECT {SECRET_COLUMNS} FROM enroll_secrets ORDER BY created_ms");
        Ok(self.pool.get()?.query(&sql, &[])?.iter().map(secret_from_row).collect())
    }

    fn revoke_enroll_secret(
        &self,
        secret: &Hash,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<bool, StoreError> {
        let n = self.logged(log, |tx| {
            tx.execute(
                "UPDATE enroll_secrets SET revoked_ms = coalesce(revoked_ms, $2) WHERE hash = $1",
                &[&&secret[..], &ms(now)],
            )
        })?;
        Ok(n > 0)
    }

    fn enroll(&self, attempt: &EnrollAttempt, now: UtcMillis) -> Result<EnrollResult, StoreError> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction()?;
        let ws = &attempt.workstation;
        // Two enrollments of one ID at once: the second waits for the first's decision.
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&ws.id])?;
        let secret = tx
            .query_opt(
                &format!("SELECT {SECRET_COLUMNS} FROM enroll_secrets WHERE hash = $1"),
                &[&&attempt.secret[..]],
            )?
            .as_ref()
            .map(secret_from_row);
        let approval = tx
            .query_opt(
                "SELECT code, expires_ms, grp FROM reenroll_approvals WHERE workstation = $1",
                &[&ws.id],
            )?
            .map(|r| ReenrollApproval {
                code: hash_of(r.get(0)),
                expires: UtcMillis::from_unix_millis(r.get(1)),
                group: r.get(2),
            });
        let enrolled = tx
            .query_opt(
                "SELECT node_key, revoked_ms, grp, transport_key FROM workstations WHERE id = $1",
                &[&ws.id],
            )?
            .map(|r| Enrolled {
                node_key: hash_of(r.get(0)),
                revoked: r.get::<_, Option<i64>>(1).is_some(),
                group: r.get(2),
                transport_key: r.get(3),
            });
        let result = match plan_enroll(attempt, secret.as_ref(), approval.as_ref(), enrolled.as_ref(), now) {
            EnrollPlan::Unauthorized(why) => return Ok(EnrollResult::Unauthorized(why)),
            EnrollPlan::WrongGroup(why) => return Ok(EnrollResult::WrongGroup(why)),
            EnrollPlan::Conflict { message, finding } => {
                tx.execute(
                    APPEND_ENROLL_FINDING,
                    &[&ws.id, &"enroll_conflict", &finding_line(now, &finding), &ms(now)],
                )?;
                EnrollResult::Conflict(message)
            }
            EnrollPlan::Enroll { use_secret, use_approval, group, finding } => {
                if let Some((kind, detail)) = finding {
                    tx.execute(
                        APPEND_ENROLL_FINDING,
                        &[&ws.id, &kind, &finding_line(now, &detail), &ms(now)],
                    )?;
                }
                // Approved or proven: the node key is replaced and the log kept.
                tx.execute(
                    "INSERT INTO workstations (id, node_key, hostname, grp, agent_version, enrolled_ms, contiguous_hash, transport_key)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (id) DO UPDATE SET node_key = excluded.node_key, hostname = excluded.hostname,
                         grp = excluded.grp, agent_version = excluded.agent_version, enrolled_ms = excluded.enrolled_ms,
                         transport_key = excluded.transport_key, revoked_ms = NULL",
                    &[&ws.id, &&attempt.node_key[..], &ws.hostname, &group, &ws.agent_version, &ms(now), &&GENESIS_HASH[..], &ws.transport_key],
                )?;
                if use_secret {
                    tx.execute(
                        "UPDATE enroll_secrets SET uses = uses + 1 WHERE hash = $1",
                        &[&&attempt.secret[..]],
                    )?;
                }
                if use_approval {
                    tx.execute("DELETE FROM reenroll_approvals WHERE workstation = $1", &[&ws.id])?;
                }
                EnrollResult::Enrolled
            }
        };
        tx.commit()?;
        Ok(result)
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
        self.logged(log, |tx| tx.execute(
            "INSERT INTO reenroll_approvals (workstation, code, expires_ms, created_ms, grp) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (workstation) DO UPDATE SET code = excluded.code, expires_ms = excluded.expires_ms,
                 created_ms = excluded.created_ms, grp = excluded.grp",
            &[&workstation, &&code[..], &ms(expires), &ms(now), &group],
        ))?;
        Ok(())
    }

    fn revoke_workstation(
        &self,
        workstation: &str,
        dead_key: &Hash,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<bool, StoreError> {
        let n = self.logged(log, |tx| {
            tx.execute(
                "UPDATE workstations SET node_key = $2, revoked_ms = $3 WHERE id = $1",
                &[&workstation, &&dead_key[..], &ms(now)],
            )
        })?;
        Ok(n > 0)
    }

    fn workstation_by_key(&self, node_key: &Hash) -> Result<Option<Workstation>, StoreError> {
        let sql = format!("SELECT {WORKSTATION_COLUMNS} FROM workstations WHERE node_key = $1");
        Ok(self.pool.get()?.query_opt(&sql, &[&&node_key[..]])?.as_ref().map(workstation_from_row))
    }

    fn workstations(&self) -> Result<Vec<Workstation>, StoreError> {
        let sql = format!("SELECT {WORKSTATION_COLUMNS} FROM workstations ORDER BY id");
        Ok(self.pool.get()?.query(&sql, &[])?.iter().map(workstation_from_row).collect())
    }

    fn ingest(
        &self,
        workstation: &str,
        mut entries: Vec<Received>,
        now: UtcMillis,
    ) -> Result<Ingest, StoreError> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction()?;
        let done = intake::ingest(&mut PgIntake { tx: &mut tx, workstation }, &mut entries, now)?;
        tx.commit()?;
        Ok(done)
    }

    fn note_totp_steps(&self, steps: &[(String, UtcMillis)], now: UtcMillis) -> Result<(), StoreError> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction()?;
        for (user, at) in steps {
            tx.execute(
                "INSERT INTO totp_steps (usr, step_ms, noted_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (usr) DO UPDATE SET step_ms = excluded.step_ms, noted_ms = excluded.noted_ms
                 WHERE excluded.step_ms > totp_steps.step_ms",
                &[user, &ms(*at), &ms(now)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn recent_totp_steps(&self, since: UtcMillis) -> Result<Vec<(String, UtcMillis)>, StoreError> {
        let rows = self
            .pool
            .get()?
            .query("SELECT usr, step_ms FROM totp_steps WHERE noted_ms >= $1", &[&ms(since)])?;
        Ok(rows.iter().map(|r| (r.get(0), UtcMillis::from_unix_millis(r.get(1)))).collect())
    }

    fn heartbeat(&self, workstation: &str, beat: &Heartbeat, now: UtcMillis) -> Result<(), StoreError> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction()?;
        let contiguous: i64 = tx
            .query_one("SELECT contiguous_seq FROM workstations WHERE id = $1 FOR UPDATE", &[&workstation])?
            .get(0);
        if (beat.last_seq as i64) < contiguous {
            let detail = format!(
                "the workstation reports {} entries, the collector holds {contiguous}",
                beat.last_seq
            );
            flag(&mut tx, workstation, beat.last_seq + 1, "truncated", &detail, now)?;
        }
        tx.execute(
            "UPDATE workstations SET last_seen_ms = $2, reported_last_seq = $3 WHERE id = $1",
            &[&workstation, &ms(now), &(beat.last_seq as i64)],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn put_policy(
        &self,
        group: &str,
        serial: u64,
        envelope: &str,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<PolicyPut, StoreError> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&group])?;
        let current: Option<i64> =
            tx.query_opt("SELECT serial FROM policies WHERE grp = $1", &[&group])?.map(|r| r.get(0));
        if let Some(current) = current.filter(|c| *c as u64 >= serial) {
            return Ok(PolicyPut::Stale { current: current as u64 });
        }
        let etag = policy_etag(envelope);
        tx.execute(
            "INSERT INTO policies (grp, serial, envelope, etag, updated_ms) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (grp) DO UPDATE SET serial = excluded.serial, envelope = excluded.envelope,
                 etag = excluded.etag, updated_ms = excluded.updated_ms",
            &[&group, &(serial as i64), &envelope, &etag, &ms(now)],
        )?;
        log_in(&mut tx, log)?;
        tx.commit()?;
        Ok(PolicyPut::Stored)
    }

    fn policy(&self, group: &str) -> Result<Option<(String, String)>, StoreError> {
        Ok(self
            .pool
            .get()?
            .query_opt("SELECT envelope, etag FROM policies WHERE grp = $1", &[&group])?
            .map(|r| (r.get(0), r.get(1))))
    }

    fn add_token(
        &self,
        token: &Hash,
        role: Role,
        label: &str,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<(), StoreError> {
        self.logged(log, |tx| {
            tx.execute(
                "INSERT INTO api_tokens (hash, role, label, created_ms) VALUES ($1, $2, $3, $4)",
                &[&&token[..], &role.as_str(), &label, &ms(now)],
            )
        })?;
        Ok(())
    }

    fn token(&self, token: &Hash) -> Result<Option<(Role, String)>, StoreError> {
        let row = self
            .pool
            .get()?
            .query_opt("SELECT role, label FROM api_tokens WHERE hash = $1", &[&&token[..]])?;
        Ok(row.and_then(|r| Role::parse(r.get::<_, &str>(0)).map(|role| (role, r.get(1)))))
    }

    fn events(&self, q: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        // Only the filters given, so the planner can use the index that fits.
        let after = q.after.unwrap_or(0);
        let (since, until, limit) = (q.since.map(ms), q.until.map(ms), i64::from(q.limit));
        let (received_since, received_until) = (q.received_since.map(ms), q.received_until.map(ms));
        let mut sql = format!("SELECT {ENTRY_COLUMNS} FROM audit WHERE id > $1");
        let mut args: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&after];
        let filters: [(&str, Option<&(dyn postgres::types::ToSql + Sync)>); 7] = [
            ("workstation =", q.workstation.as_ref().map(|v| v as _)),
            ("usr =", q.user.as_ref().map(|v| v as _)),
            ("kind =", q.kind.as_ref().map(|v| v as _)),
            ("time_ms >=", since.as_ref().map(|v| v as _)),
            ("time_ms <", until.as_ref().map(|v| v as _)),
            ("received_ms >=", received_since.as_ref().map(|v| v as _)),
            ("received_ms <", received_until.as_ref().map(|v| v as _)),
        ];
        for (clause, value) in filters {
            if let Some(value) = value {
                args.push(value);
                sql.push_str(&format!(" AND {clause} ${}", args.len()));
            }
        }
        args.push(&limit);
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", args.len()));
        let rows = self.pool.get()?.query(&sql, &args)?;
        Ok(rows
            .iter()
            .map(|r| {
                let (id, entry, received) = entry_from_row(r);
                StoredEvent { id, entry, received: UtcMillis::from_unix_millis(received) }
            })
            .collect())
    }

    fn conflicts(&self, workstation: Option<&str>) -> Result<Vec<super::Conflict>, StoreError> {
        let mut conn = self.pool.get()?;
        let rows = conn.query(
            "SELECT workstation, seq, record, received_ms FROM audit_conflicts
             WHERE $1::TEXT IS NULL OR workstation = $1 ORDER BY workstation, seq, received_ms",
            &[&workstation],
        )?;
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM audit WHERE workstation = $1 AND seq = $2");
        let mut out = Vec::new();
        for row in rows {
            let (ws, seq, record, received_ms): (String, i64, String, i64) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            let stored = entry_from_row(&conn.query_one(&sql, &[&ws, &seq])?).1;
            let Some(received) = super::conflict_entry(&record) else { continue };
            out.push(super::Conflict {
                workstation: ws,
                seq: seq as u64,
                stored,
                received,
                received_at: UtcMillis::from_unix_millis(received_ms),
            });
        }
        Ok(out)
    }

    fn findings(&self) -> Result<Vec<Finding>, StoreError> {
        let rows = self.pool.get()?.query(
            "SELECT workstation, seq, kind, detail, found_ms FROM findings ORDER BY found_ms, workstation, seq",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| Finding {
                workstation: r.get(0),
                seq: r.get::<_, i64>(1) as u64,
                kind: r.get(2),
                detail: r.get(3),
                found: UtcMillis::from_unix_millis(r.get(4)),
            })
            .collect())
    }

    fn log_admin(&self, a: &AdminAction) -> Result<(), StoreError> {
        self.pool.get()?.execute(
            "INSERT INTO admin_log (time_ms, actor, action, detail) VALUES ($1, $2, $3, $4)",
            &[&ms(a.time), &a.actor, &a.action, &a.detail],
        )?;
        Ok(())
    }

    fn admin_log(&self) -> Result<Vec<AdminAction>, StoreError> {
        let rows = self
            .pool
            .get()?
            .query("SELECT time_ms, actor, action, detail FROM admin_log ORDER BY id", &[])?;
        Ok(rows
            .iter()
            .map(|r| AdminAction {
                time: UtcMillis::from_unix_millis(r.get(0)),
                actor: r.get(1),
                action: r.get(2),
                detail: r.get(3),
            })
            .collect())
    }

    fn entry_count(&self) -> Result<u64, StoreError> {
        Ok(self.pool.get()?.query_one("SELECT count(*) FROM audit", &[])?.get::<_, i64>(0) as u64)
    }

    fn failures_by_user(&self, since: UtcMillis) -> Result<Vec<FailureCount>, StoreError> {
        let rows = self.pool.get()?.query(
            "SELECT usr, workstation, COUNT(*) FILTER (WHERE kind = 'unlock_failed'),
                    COUNT(*) FILTER (WHERE kind = 'user_locked_out'), MAX(time_ms)
             FROM audit WHERE usr IS NOT NULL AND kind IN ('unlock_failed', 'user_locked_out') AND time_ms >= $1
             GROUP BY usr, workstation ORDER BY 3 DESC, 1",
            &[&ms(since)],
        )?;
        Ok(rows
            .iter()
            .map(|r| FailureCount {
                user: r.get(0),
                workstation: r.get(1),
                failed_attempts: r.get::<_, i64>(2) as u64,
                lockouts: r.get::<_, i64>(3) as u64,
                last: UtcMillis::from_unix_millis(r.get(4)),
            })
            .collect())
    }

    fn last_unlocks(&self) -> Result<Vec<(String, UtcMillis)>, StoreError> {
        let used = AuditKind::names(AuditKind::ACCOUNT_USED);
        let rows = self.pool.get()?.query(
            "SELECT usr, MAX(time_ms) FROM audit WHERE usr IS NOT NULL AND kind = ANY($1) GROUP BY usr",
            &[&used],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), UtcMillis::from_unix_millis(r.get(1)))).collect())
    }

    fn forward_cursor(&self, name: &str) -> Result<i64, StoreError> {
        Ok(self
            .pool
            .get()?
            .query_opt("SELECT last_id FROM forward_state WHERE name = $1", &[&name])?
            .map_or(0, |r| r.get(0)))
    }

    fn set_forward_cursor(&self, name: &str, id: i64) -> Result<(), StoreError> {
        self.pool.get()?.execute(
            "INSERT INTO forward_state (name, last_id) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET last_id = excluded.last_id",
            &[&name, &id],
        )?;
        Ok(())
    }

    fn put_user(
        &self,
        u: &UserRecord,
        must_be_new: bool,
        log: Option<&AdminAction>,
    ) -> Result<bool, StoreError> {
        let sql = if must_be_new {
            "INSERT INTO users (id, display_name, role, disabled, pin_hash, totp_sealed, updated_ms, groups)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING"
        } else {
            "INSERT INTO users (id, display_name, role, disabled, pin_hash, totp_sealed, updated_ms, groups)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (id) DO UPDATE SET display_name = excluded.display_name, role = excluded.role,
                 disabled = excluded.disabled, pin_hash = excluded.pin_hash, totp_sealed = excluded.totp_sealed,
                 updated_ms = excluded.updated_ms, groups = excluded.groups"
        };
        let groups = super::groups_column(&u.groups);
        let changed = self.logged(log, |tx| {
            tx.execute(
                sql,
                &[
                    &u.id,
                    &u.display_name,
                    &u.role,
                    &u.disabled,
                    &u.pin_sealed,
                    &u.totp_sealed,
                    &ms(u.updated),
                    &groups,
                ],
            )
        })?;
        Ok(changed == 1)
    }

    fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        Ok(self.pool.get()?.query_opt(&sql, &[&id])?.as_ref().map(user_from_row))
    }

    fn set_admin_grant(
        &self,
        id: &str,
        grant: &str,
        now: UtcMillis,
        log: Option<&AdminAction>,
    ) -> Result<bool, StoreError> {
        let n = self.logged(log, |tx| {
            tx.execute(
                "UPDATE users SET admin_grant = $2, updated_ms = $3 WHERE id = $1",
                &[&id, &grant, &ms(now)],
            )
        })?;
        Ok(n > 0)
    }

    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY id");
        Ok(self.pool.get()?.query(&sql, &[])?.iter().map(user_from_row).collect())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_their_password_in_messages() {
        assert_eq!(super::redact("postgres://w:s3cret@db:5432/wl"), "postgres://w:***@db:5432/wl");
        assert_eq!(super::redact("postgres://db/wl"), "postgres://db/wl");
    }

    #[test]
    fn libpq_tls_options_are_taken_out_of_the_url_and_tls_needs_a_ca() {
        use std::path::PathBuf;
        let (rest, ca) = super::split_tls(
            "postgres://w@db/wl?sslmode=verify-full&connect_timeout=5&sslrootcert=/etc/ca.pem",
        )
        .unwrap();
        assert_eq!(
            (rest.as_str(), ca),
            ("postgres://w@db/wl?connect_timeout=5", Some(PathBuf::from("/etc/ca.pem")))
        );
        assert_eq!(super::split_tls("postgres://w@db/wl").unwrap(), ("postgres://w@db/wl".to_owned(), None));
        assert_eq!(
            super::split_tls("postgres://w@db/wl?sslmode=disable&sslrootcert=/ca.pem").unwrap(),
            ("postgres://w@db/wl".to_owned(), None)
        );
        assert!(super::split_tls("postgres://w@db/wl?sslmode=require").unwrap_err().contains("sslrootcert"));
        assert!(super::split_tls("postgres://w@db/wl?sslmode=sometimes")
            .unwrap_err()
            .contains("not understood"));
    }
}
