//! The PostgreSQL backend's connection code, for hospitals that run several collectors
//! behind a load balancer: a pool, TLS, migrations under an advisory lock, and how rows
//! are locked. Batches of one workstation are serialised by a row lock on that
//! workstation (`SELECT … FOR UPDATE`), and entries are inserted with `ON CONFLICT DO
//! NOTHING`, so two collectors receiving the same batch store it once.

use std::error::Error;

use bytes::BytesMut;
use r2d2_postgres::postgres::types::{IsNull, ToSql, Type};
use r2d2_postgres::postgres::{self, GenericClient};
use r2d2_postgres::PostgresConnectionManager;

use super::sql::{Row, Sql, Value};
use super::StoreError;

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgres/01.sql"),
    include_str!("migrations/postgres/02.sql"),
    include_str!("migrations/postgres/03.sql"),
    include_str!("migrations/postgres/04.sql"),
    include_str!("migrations/postgres/05.sql"),
    include_str!("migrations/postgres/06.sql"),
    include_str!("migrations/postgres/07.sql"),
    include_str!("migrations/postgres/08.sql"),
];

type Pool = r2d2_postgres::r2d2::Pool<PostgresConnectionManager<tokio_postgres_rustls::MakeRustlsConnect>>;

pub struct Postgres {
    pool: Pool,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("connections", &self.pool.state().connections)
            .finish_non_exhaustive()
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

impl Postgres {
    /// Connects (`postgres://user@host:port/db`) and brings the schema up to date. Several
    /// collectors starting together migrate once: the migration holds an advisory lock.
    ///
    /// TLS is asked for libpq's way, in the URL: `sslmode=require`, `verify-ca` or
    /// `verify-full` with `sslrootcert=PATH` (the CA that signed the server's
    /// certificate). Every one of them verifies the certificate and the host name (rustls
    /// does nothing less); `disable`, `prefer` or no `sslmode` speak plain TCP, as before.
    pub fn open(url: &str) -> Result<Postgres, StoreError> {
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
        let store = Postgres { pool };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction()?;
        // One migrator at a time when several collectors start together ("WDLK").
        tx.execute("SELECT pg_advisory_xact_lock(1464093771)", &[])?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
        let applied: i32 = match tx.query_opt("SELECT version FROM schema_version", &[])? {
            Some(row) => row.try_get(0)?,
            None => 0,
        };
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

    pub fn read<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError>) -> Result<T, StoreError> {
        f(&mut PgSql(&mut *self.pool.get()?))
    }

    /// One transaction (READ COMMITTED); what must not change under it is locked with
    /// [`Sql::for_update`] or [`Sql::serialise`].
    pub fn write<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction()?;
        let done = f(&mut PgSql(&mut tx))?;
        tx.commit()?;
        Ok(done)
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

/// A pooled connection or a transaction on one, as the SQL layer speaks to it.
struct PgSql<'a, C: GenericClient>(&'a mut C);

impl ToSql for Value<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        // Each inner `to_sql` writes its own wire format whatever `ty` says: check first.
        fn checked<T: ToSql>(
            v: &T,
            ty: &Type,
            out: &mut BytesMut,
        ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
            if !T::accepts(ty) {
                return Err(Box::new(postgres::types::WrongType::new::<T>(ty.clone())));
            }
            v.to_sql(ty, out)
        }
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(n) if *ty == Type::INT4 => checked(&i32::try_from(*n)?, ty, out),
            Value::Int(n) if *ty == Type::INT2 => checked(&i16::try_from(*n)?, ty, out),
            Value::Int(n) => checked(n, ty, out),
            Value::Bool(b) => checked(b, ty, out),
            Value::Text(s) => checked(&s.as_ref(), ty, out),
            Value::Blob(b) => checked(&b.as_ref(), ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn row_of(row: &postgres::Row) -> Result<Row, StoreError> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let value = match *ty {
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map(|n| Value::Int(n.into())),
            Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map(|n| Value::Int(n.into())),
            Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map(Value::Bool),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
                row.try_get::<_, Option<String>>(i)?.map(|s| Value::Text(s.into()))
            }
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(|b| Value::Blob(b.into())),
            _ => {
                return Err(StoreError::Statement(format!(
                    "column {} is of type {ty}, which no query of the collector reads",
                    column.name()
                )))
            }
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

impl<C: GenericClient> Sql for PgSql<'_, C> {
    fn execute(&mut self, sql: &str, args: &[Value<'_>]) -> Result<u64, StoreError> {
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|v| v as _).collect();
        Ok(self.0.execute(sql, &params)?)
    }

    fn query(&mut self, sql: &str, args: &[Value<'_>]) -> Result<Vec<Row>, StoreError> {
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|v| v as _).collect();
        self.0.query(sql, &params)?.iter().map(row_of).collect()
    }

    fn for_update(&self) -> &'static str {
        " FOR UPDATE"
    }

    fn serialise(&mut self, key: &str) -> Result<(), StoreError> {
        self.0.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&key])?;
        Ok(())
    }

    /// 12 placeholders a row, well under PostgreSQL's 65,535 a statement.
    fn rows_per_insert(&self) -> usize {
        200
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
