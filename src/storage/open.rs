//! How a process gets at the database file: for writing (created if missing, migrated, made
//! private), for changing rows that must already be there (never created), for reading only
//! (never created, migrated or written), and the lock that keeps one daemon per database.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::postgres::{Pg, Schema};
use super::{Db, Engine, Lite, Location, LockError, Result, StorageError, Synchronous};

/// The migrations this binary brings; a database that lacks some is older than the binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The PostgreSQL schema (issue 17), beside SQLite's: the same tables, columns, keys, indexes and
/// rules (`migrations/postgres/`, which `sqlx::migrate!` does not read as part of `./migrations`:
/// it takes the files of a folder, not its subfolders). `Pg::connect` applies it; the tests check
/// that the two schemas agree.
pub static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How many of `migrator`'s migrations are among the versions `applied`, and how many it has.
pub(super) fn schema_of(migrator: &sqlx::migrate::Migrator, applied: &[i64]) -> (usize, usize) {
    let wanted: Vec<i64> = migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| m.version)
        .collect();
    let have = wanted.iter().filter(|v| applied.contains(v)).count();
    (have, wanted.len())
}

/// How large a statement journal may grow in memory before SQLite moves it to a temporary file:
/// never (a negative size), it stays in memory.
///
/// A statement inside a transaction that changes several rows and may fail part-way (a `NOT
/// NULL`, a foreign key, a trigger's `RAISE(ABORT)`) gets a statement journal: the pages it
/// changes, as they were, so that it can be undone alone. Every batch the writer runs is such a
/// statement. SQLite's default keeps only 64 KiB of it in memory (`SQLITE_STMTJRNL_SPILL`,
/// https://www.sqlite.org/c3ref/c_config_covering_index_scan.html) and spills the rest to a
/// temporary file that it creates, writes and deletes for that one statement: a profile of the
/// polls benchmark put opening and writing those files at about 4% of the daemon's CPU, and a
/// threshold of 128 KiB less a byte 12% more CPU a poll than one of 4 MiB, which no round
/// outgrew (115 → 129 µs, interleaved pairs).
///
/// No positive threshold above 128 KiB can work. The journal is held in memory as one chunk of
/// the threshold's size, and a spill writes that chunk in one call; SQLite's unix VFS writes at
/// most `0x1ffff` bytes a call (`seekAndWriteFd` in the bundled `sqlite3.c` masks the count with
/// it). A threshold of 4 MiB was masked to a write of nothing, which SQLite reports as "database
/// or disk is full": every statement whose journal outgrew it failed (a prune of a busy month, a
/// migration rebuilding an index of a million shipments).
///
/// What a journal holds is the pages one statement changes, until the statement ends. The
/// writer's statements change a round's rows, the sweeps a batch's, and `prune` clears digests
/// a slice of rows at a time; a one-off statement (a migration, `retry --dead`) holds at most
/// the pages it changes.
const STATEMENT_JOURNAL_IN_MEMORY: std::ffi::c_int = -1;

/// Sets [`STATEMENT_JOURNAL_IN_MEMORY`] for the process, once, before the first connection.
///
/// `sqlite3_config` works only before SQLite initialises (at the first connection); later it
/// returns `SQLITE_MISUSE` and changes nothing, which costs only speed (tests that connect to
/// SQLite by other ways first).
fn keep_statement_journals_in_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `SQLITE_CONFIG_STMTJRNL_SPILL` takes one `int`, as passed. SQLite asks that no
        // other thread use it while `sqlite3_config` runs: both ways this crate opens a SQLite
        // file call this first (a second caller waits on the `Once`), and once SQLite has
        // initialised it refuses the call without touching its state.
        let rc = unsafe {
            libsqlite3_sys::sqlite3_config(
                libsqlite3_sys::SQLITE_CONFIG_STMTJRNL_SPILL,
                STATEMENT_JOURNAL_IN_MEMORY,
            )
        };
        if rc != libsqlite3_sys::SQLITE_OK {
            tracing::debug!(
                code = rc,
                "SQLite was already initialised: statement journals keep its default spill size"
            );
        }
    });
}

/// How many rows sqlx's SQLite thread may hand over ahead of the task reading them, on the write
/// connection (sqlx's default is 50, `SqliteConnectOptions::row_buffer_size`).
///
/// A round of the writer reads its 64 shipments and gets back a row per event it added (ten
/// events a poll make 640): with room for 50, the SQLite thread stopped a dozen times a round
/// to wait for the reader, and each stop is two thread switches. In the polls benchmark this
/// took the daemon from about 1.75 to about 1.1 context switches a poll (`perf stat -e
/// context-switches`, three runs each). What waits is at most that many rows of one statement;
/// the read connections keep sqlx's default.
const WRITER_ROW_BUFFER: usize = 1024;

/// Permission bits for anyone but the owner.
const GROUP_OR_OTHERS: u32 = 0o077;

/// `PATH-wal`, `PATH-shm`: the files SQLite keeps beside a database in WAL mode.
pub(super) fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Creates the database file readable by its owner only (0600), whatever the umask: it holds
/// buyers' phone numbers and addresses. SQLite gives the `-wal` and `-shm` files it creates
/// beside it the same mode. An existing file is left as it is (see [`make_private`]).
fn create_private(path: &Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Takes group and others' permissions off the database and its `-wal` and `-shm`, as a file
/// made by a version that did not create it 0600, or copied in, may have them. Done before
/// SQLite opens it, so that the `-wal` and `-shm` it creates take the narrowed mode. A file that
/// cannot be narrowed (owned by another user) is warned about and used as it is.
fn make_private(path: &Path) {
    let mut narrowed = Vec::new();
    for file in [path.to_owned(), beside(path, "-wal"), beside(path, "-shm")] {
        let Ok(metadata) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & GROUP_OR_OTHERS == 0 {
            continue;
        }
        let private = mode & !GROUP_OR_OTHERS;
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(private)) {
            Ok(()) => narrowed.push(format!(
                "{} (was {mode:04o}, now {private:04o})",
                file.display()
            )),
            Err(e) => tracing::warn!(
                "cannot make {} private (mode {mode:04o}): {e}; it stays open to group or others",
                file.display()
            ),
        }
    }
    if !narrowed.is_empty() {
        tracing::warn!(
            "made the database files private (0600), as they hold buyers' phone numbers and emails: {}",
            narrowed.join(", ")
        );
    }
}

/// Fails with [`StorageError::Missing`] when there is nothing at `path` (nor its folder).
fn require_file(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Err(StorageError::Missing {
                path: path.display().to_string(),
            })
        }
        Err(e) => Err(StorageError::Open {
            path: path.display().to_string(),
            error: sqlx::Error::Io(e),
        }),
    }
}

impl Db {
    /// Opens (creating it if needed) and migrates the database, for the daemon and the commands
    /// that add shipments. On PostgreSQL the database must exist (its administrator creates it);
    /// its tables are created or brought up to date.
    pub async fn open(at: impl Into<Location>, synchronous: Synchronous) -> Result<Db> {
        match at.into() {
            Location::Sqlite(path) => Db::open_file(&path, synchronous).await,
            location @ Location::Postgres(_) => Db::open_postgres(&location, Schema::Migrate).await,
        }
    }

    async fn open_postgres(location: &Location, schema: Schema) -> Result<Db> {
        let Location::Postgres(url) = location else {
            unreachable!("only called with a PostgreSQL location")
        };
        let pg = Pg::connect(url, &location.to_string(), schema).await?;
        Ok(Db::from_engine(Engine::Postgres(pg)))
    }

    async fn open_file(path: &Path, synchronous: Synchronous) -> Result<Db> {
        keep_statement_journals_in_memory();
        let shown = path.display().to_string();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.exists()
        {
            return Err(StorageError::Open {
                path: shown,
                error: sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "folder {} does not exist; create it or fix the path",
                        parent.display()
                    ),
                )),
            });
        }
        create_private(path).map_err(|source| StorageError::Open {
            path: shown.clone(),
            error: sqlx::Error::Io(source),
        })?;
        make_private(path);
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match synchronous {
                Synchronous::Normal => SqliteSynchronous::Normal,
                Synchronous::Full => SqliteSynchronous::Full,
            })
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let open_err = |source| StorageError::Open {
            path: shown.clone(),
            error: source,
        };
        let migrating = one_migrator_at_a_time(path).await.map_err(open_err)?;
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            // sqlx pings a connection before handing it out, by default: on SQLite a trip to the
            // connection's thread and back for every transaction, with nothing at the other end
            // that could have hung up. Taking it out took the notifications scenario from 2.9 to
            // 2.6 thread switches a delivery.
            .test_before_acquire(false)
            // A `COMMIT` that fails (a full disk, a file made read-only) may be rolled back by
            // SQLite while sqlx still counts the transaction open, and the rollback it then
            // queues fails too: such a connection would refuse every later `BEGIN`, and the
            // daemon would never recover from the outage. It is closed instead of handed out,
            // and the pool opens a fresh one.
            .before_acquire(|conn, _| {
                Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
            })
            .connect_with(options.clone().row_buffer_size(WRITER_ROW_BUFFER))
            .await
            .map_err(open_err)?;
        MIGRATOR
            .run(&write)
            .await
            .map_err(|source| StorageError::Migrate {
                path: shown.clone(),
                error: source,
            })?;
        drop(migrating);
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            // No ping before each read either (see the write pool above).
            .test_before_acquire(false)
            .connect_with(options.read_only(true))
            .await
            .map_err(open_err)?;
        Ok(Db::from_engine(Engine::Sqlite(Lite { write, read })))
    }

    /// [`Db::open`] for the commands that change rows already there (`remove`, `retry`,
    /// `set-tier`, `poll --apply`): a missing database is refused, not created empty; an older
    /// one is brought up to date. On PostgreSQL, a database without shipwatch's tables counts as
    /// missing.
    pub async fn open_existing(at: impl Into<Location>, synchronous: Synchronous) -> Result<Db> {
        match at.into() {
            Location::Sqlite(path) => {
                require_file(&path)?;
                Db::open_file(&path, synchronous).await
            }
            location @ Location::Postgres(_) => {
                Db::open_postgres(&location, Schema::MigrateExisting).await
            }
        }
    }

    /// Opens the database for reading only, for the commands that only look (`list`, `show`,
    /// `stats`, `outbox`, `poll` without `--apply`, `check-config`): nothing is created,
    /// migrated or written, so they work on a file and folder they may not write, beside a
    /// running daemon. A missing database is refused, and so is one older than the binary's
    /// migrations (this handle cannot upgrade it). Every write through it fails. When the
    /// folder is writable, SQLite may leave an empty `-wal` and the `-shm` it made beside the
    /// file (a reader cannot checkpoint); the file alone stays whole, and the next writer to
    /// close removes them.
    ///
    /// On PostgreSQL nothing is created or migrated either; what keeps the command from writing
    /// is that it calls no operation that writes.
    pub async fn open_read_only(at: impl Into<Location>) -> Result<Db> {
        let path = match at.into() {
            Location::Sqlite(path) => path,
            location @ Location::Postgres(_) => {
                return Db::open_postgres(&location, Schema::AsItIs).await;
            }
        };
        keep_statement_journals_in_memory();
        let path = path.as_path();
        require_file(path)?;
        let shown = path.display().to_string();
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let read = match Db::read_pool(options.clone(), &shown).await {
            Ok(pool) => pool,
            // A read-only connection to a WAL database needs its `-shm` to exist or the folder
            // to be writable, so that SQLite can create it ("Read-Only Databases",
            // https://www.sqlite.org/wal.html; "If the WAL and WAL-index files are missing, then
            // a process that lacks permission to create and initialize those files will not be
            // able to open the database, unless the database is designated as immutable",
            // https://www.sqlite.org/walformat.html). `immutable` is wrong while a daemon
            // writes, as it reads without locks and ignores the `-wal`; but every connection in
            // WAL mode keeps a `-wal` beside the file until the last one closes, so with neither
            // file present and the folder closed to us, nobody has the database open. (A writer
            // allowed into a folder this process is not, starting while it reads, could still
            // change pages under it: the read may then fail or show a mix; the file is never
            // written through this handle.)
            Err(StorageError::Open { .. })
                if !beside(path, "-wal").exists()
                    && !beside(path, "-shm").exists()
                    && !folder_is_writable(path) =>
            {
                Db::read_pool(options.clone().immutable(true), &shown).await?
            }
            Err(e) => return Err(e),
        };
        // Any write fails here, as it should: this handle has no other connection to write with.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(options);
        Ok(Db::from_engine(Engine::Sqlite(Lite { write, read })))
    }

    /// A pool of reading connections that has read the schema version: a database that lacks
    /// migrations this binary has is [`StorageError::Outdated`].
    async fn read_pool(options: SqliteConnectOptions, shown: &str) -> Result<sqlx::SqlitePool> {
        let open_err = |source| StorageError::Open {
            path: shown.to_owned(),
            error: source,
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        let applied = match applied_migrations(&pool).await {
            Ok(applied) => applied,
            Err(e) => {
                pool.close().await;
                return Err(open_err(e));
            }
        };
        let (have, want) = schema_of(&MIGRATOR, &applied);
        if have < want {
            pool.close().await;
            return Err(StorageError::Outdated {
                path: shown.to_owned(),
                have,
                want,
            });
        }
        Ok(pool)
    }

    /// Takes the lock that makes this process the only daemon on the database at `path`; it is
    /// held until the returned file is dropped, and a process that dies lets go of it. Admin
    /// commands do not take it.
    ///
    /// The lock is on `PATH.lock` beside the file `path` resolves to, every link and `..`
    /// followed, so that two spellings of one database are one lock. (Not an flock on the
    /// database itself: SQLite's own locks are POSIX locks, which a process loses on that file
    /// when it closes any descriptor of it, https://www.sqlite.org/howtocorrupt.html 2.2.) The
    /// holder writes its pid into it, for the refusal to name.
    pub fn lock_for_daemon(path: &Path) -> std::result::Result<std::fs::File, LockError> {
        use std::io::{Seek, Write};
        let database = std::fs::canonicalize(path).map_err(|error| LockError::Open {
            path: path.to_owned(),
            error,
        })?;
        let lock_path = beside(&database, ".lock");
        // 0600: another user who can open the lock file can hold its lock and keep the daemon
        // from starting. A lock file left by an older version is narrowed the same way.
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|error| LockError::Open {
                path: lock_path.clone(),
                error,
            })?;
        if let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(
                "cannot make {} private (0600): {e}; another user may hold its lock",
                lock_path.display()
            );
        }
        match file.try_lock() {
            Ok(()) => {
                let written = file
                    .set_len(0)
                    .and_then(|()| file.rewind())
                    .and_then(|()| writeln!(file, "{}", std::process::id()));
                if let Err(e) = written {
                    tracing::warn!(
                        "cannot write this daemon's pid into {}: {e}; a second daemon is still refused, without the pid",
                        lock_path.display()
                    );
                }
                Ok(file)
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held {
                pid: holder_pid(&lock_path),
                database,
            }),
            Err(std::fs::TryLockError::Error(error)) => Err(LockError::Lock {
                path: lock_path,
                error,
            }),
        }
    }
}

/// How long a process waits for another to finish creating or upgrading the database: an
/// upgrade of a large database takes minutes, not hours.
const MIGRATION_WAIT: Duration = Duration::from_secs(600);

/// Keeps other shipwatch processes from creating or upgrading the database at `path` while this
/// one does, until the returned folder is dropped. Without it, the daemon starting while an
/// `add` ran (or two commands at once) on a new or older database both created its tables or
/// applied the same migration, and one of them failed ("table shipments already exists",
/// "duplicate column name", "database is locked"): sqlx takes no lock of its own to migrate a
/// SQLite database (its `lock` does nothing there; PostgreSQL's takes an advisory lock).
///
/// The lock is an flock on the database's folder, which every writer can open and which adds no
/// file; never on the database file itself (see [`Db::lock_for_daemon`]). Where the folder
/// cannot be opened or locked (a file system without flock), the process goes on without it,
/// as before.
async fn one_migrator_at_a_time(path: &Path) -> sqlx::Result<Option<std::fs::File>> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let dir = match std::fs::File::open(folder) {
        Ok(dir) => dir,
        Err(e) => {
            tracing::debug!(
                "cannot open {} to lock it: {e}; migrating without",
                folder.display()
            );
            return Ok(None);
        }
    };
    let started = tokio::time::Instant::now();
    let mut said = false;
    loop {
        match dir.try_lock() {
            Ok(()) => return Ok(Some(dir)),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => {
                tracing::debug!("cannot lock {}: {e}; migrating without", folder.display());
                return Ok(None);
            }
        }
        let waited = started.elapsed();
        if waited >= MIGRATION_WAIT {
            return Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "another process has been creating or upgrading it for {}; is an earlier upgrade still running?",
                    humantime::format_duration(MIGRATION_WAIT)
                ),
            )));
        }
        if !said && waited >= Duration::from_secs(1) {
            tracing::warn!(
                "waiting for another shipwatch process to finish creating or upgrading {}",
                path.display()
            );
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The versions of the migrations applied to the database; none when it has no migrations
/// table (an empty file).
async fn applied_migrations(pool: &sqlx::SqlitePool) -> sqlx::Result<Vec<i64>> {
    let has_table: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(pool)
    .await?;
    if !has_table {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await
}

/// True when this process may create files in the folder that holds `path`.
fn folder_is_writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let Ok(folder) = std::ffi::CString::new(folder.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `folder` is a NUL-terminated string that outlives the call; access(2) only reads
    // it. It answers for this process's ids and also sees a read-only mount or an immutable
    // folder, which root's permission checks otherwise pass.
    unsafe { libc::access(folder.as_ptr(), libc::W_OK) == 0 }
}

/// The pid the daemon holding the lock wrote into it. It writes it just after taking the lock,
/// so a reader that comes in between waits a moment for it.
fn holder_pid(lock_path: &Path) -> Option<u32> {
    for _ in 0..10 {
        if let Some(pid) = std::fs::read_to_string(lock_path)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            return Some(pid);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ShipmentFilter;

    /// Another process holding the folder (creating or upgrading the database): the open waits
    /// for it (up to `MIGRATION_WAIT`) and goes on once it lets go.
    #[tokio::test]
    async fn a_database_another_process_is_migrating_is_opened_once_it_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let folder = std::fs::File::open(dir.path()).unwrap();
        folder.lock().unwrap();
        let opening = tokio::spawn(async move { Db::open(&path, Synchronous::Normal).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!opening.is_finished(), "opened while the folder was held");
        folder.unlock().unwrap();
        let db = tokio::time::timeout(Duration::from_secs(30), opening)
            .await
            .expect("opened once the folder is let go")
            .unwrap()
            .unwrap();
        db.ping().await.unwrap();
    }

    #[test]
    fn only_group_and_others_lose_their_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("p.db");
        for (mode, after) in [
            (0o644, 0o600),
            (0o664, 0o600),
            (0o600, 0o600),
            (0o444, 0o400),
            (0o640, 0o600),
        ] {
            std::fs::write(&db, "").unwrap();
            std::fs::set_permissions(&db, std::fs::Permissions::from_mode(mode)).unwrap();
            make_private(&db);
            let now = std::fs::metadata(&db).unwrap().permissions().mode() & 0o7777;
            assert_eq!(now, after, "{mode:o}");
        }
    }

    /// A migration that runs without a transaction (`-- no-transaction`, so that SQLite keeps no
    /// statement journal of a large UPDATE in memory: 0021) is not undone when it is cut short:
    /// a kill after its statements and before its row in `_sqlx_migrations` leaves their work
    /// done, and the next open runs it again whole. That must work.
    #[tokio::test]
    async fn a_migration_without_a_transaction_cut_short_runs_again_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.db");
        let db = Db::open(&path, Synchronous::Normal).await.unwrap();
        let no_tx: Vec<String> = MIGRATOR
            .iter()
            .filter(|m| m.no_tx)
            .map(|m| m.version.to_string())
            .collect();
        assert!(!no_tx.is_empty());
        let forget = format!(
            "DELETE FROM _sqlx_migrations WHERE version IN ({})",
            no_tx.join(", ")
        );
        sqlx::query(sqlx::AssertSqlSafe(forget))
            .execute(&db.lite().write)
            .await
            .unwrap();
        db.close().await;
        let db = Db::open(&path, Synchronous::Normal).await.unwrap();
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(&db.lite().read)
            .await
            .unwrap();
        assert_eq!(applied as usize, MIGRATOR.iter().count());
        db.close().await;
    }

    /// A database made before the robot channels (migration 10) keeps every outbox row, every
    /// index and every constraint when it is migrated, and its outbox then takes the new channels.
    #[tokio::test]
    async fn an_outbox_from_before_the_robot_channels_migrates_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        let up_to = |last: i64| sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(
                MIGRATOR
                    .migrations
                    .iter()
                    .filter(|m| m.version <= last)
                    .cloned()
                    .collect(),
            ),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        up_to(9).run(&pool).await.unwrap();
        let refused = sqlx::query(
            "INSERT INTO shipments (order_id, provider) VALUES ('9', 't');
             INSERT INTO notifications (public_id, shipment_id, transition, channel,
                 previous_status, status, payload, next_attempt_at, created_at)
             VALUES ('msg_x', (SELECT id FROM shipments WHERE order_id = '9'), 1, 'dingtalk',
                 'pending', 'exception', '{}', 0, 0)",
        )
        .execute(&pool)
        .await;
        assert!(refused.is_err(), "the old schema took a dingtalk row");
        sqlx::query(
            "INSERT INTO shipments (order_id, provider) VALUES ('1', 't');
             INSERT INTO notifications (public_id, shipment_id, kind, transition, channel,
                 previous_status, status, payload, recipient, state, attempts, next_attempt_at,
                 lease_until, last_error, created_at, sent_at)
             VALUES ('msg_a', 1, 'status_changed', 1, 'sms', 'pending', 'picked_up', '{\"a\":1}',
                     '13812345678', 'dead', 3, 10, NULL, 'refused', 5, NULL),
                    ('msg_b', 1, 'stuck', 1, 'webhook', 'in_transit', 'in_transit', '{}',
                     NULL, 'pending', 1, 20, 30, NULL, 6, NULL),
                    ('msg_c', 1, 'status_changed', 2, 'email', 'picked_up', 'delivered', 'x',
                     'a@b.example', 'sent', 1, 40, NULL, NULL, 7, 8)",
        )
        .execute(&pool)
        .await
        .unwrap();
        type Row = (
            i64,
            String,
            String,
            i64,
            String,
            Option<String>,
            String,
            i64,
            i64,
        );
        let rows = || async {
            sqlx::query_as::<_, Row>(
                "SELECT id, public_id, kind, transition, channel, recipient, state, attempts,
                        next_attempt_at FROM notifications ORDER BY id",
            )
            .fetch_all(&pool)
            .await
            .unwrap()
        };
        let schema = || async {
            sqlx::query_as::<_, (String, Option<String>)>(
                "SELECT name, sql FROM sqlite_schema
                 WHERE tbl_name = 'notifications' AND type = 'index' ORDER BY name",
            )
            .fetch_all(&pool)
            .await
            .unwrap()
        };
        let (before, indexes_before) = (rows().await, schema().await);

        // Migration 10 alone: later ones change indexes on purpose (18 widens the done index).
        up_to(10).run(&pool).await.unwrap();

        assert_eq!(rows().await, before);
        assert_eq!(schema().await, indexes_before, "every index is made again");
        MIGRATOR.run(&pool).await.unwrap();
        assert_eq!(rows().await, before);
        let leftover: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'notifications_new'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(leftover, 0);
        for channel in ["dingtalk", "wecom", "feishu", "wechat"] {
            sqlx::query(
                "INSERT INTO notifications (public_id, shipment_id, transition, channel,
                     previous_status, status, payload, next_attempt_at, created_at)
                 VALUES (?1, 1, 3, ?2, 'delivered', 'exception', '{}', 0, 0)",
            )
            .bind(format!("msg_{channel}"))
            .bind(channel)
            .execute(&pool)
            .await
            .unwrap();
        }
        // The constraints are still there.
        for bad in [
            "INSERT INTO notifications (public_id, shipment_id, transition, channel,
                 previous_status, status, payload, next_attempt_at, created_at)
             VALUES ('msg_q', 1, 9, 'qq', 'a', 'b', '{}', 0, 0)",
            "INSERT INTO notifications (public_id, shipment_id, transition, channel,
                 previous_status, status, payload, next_attempt_at, created_at)
             VALUES ('msg_a', 1, 9, 'sms', 'a', 'b', '{}', 0, 0)",
            "INSERT INTO notifications (public_id, shipment_id, kind, transition, channel,
                 previous_status, status, payload, next_attempt_at, created_at)
             VALUES ('msg_d', 1, 'status_changed', 1, 'sms', 'a', 'b', '{}', 0, 0)",
            "INSERT INTO notifications (public_id, shipment_id, transition, channel,
                 previous_status, status, payload, state, next_attempt_at, created_at)
             VALUES ('msg_e', 1, 7, 'sms', 'a', 'b', '{}', 'lost', 0, 0)",
            "INSERT INTO notifications (public_id, shipment_id, transition, channel,
                 previous_status, status, payload, next_attempt_at, created_at)
             VALUES ('msg_f', 99, 1, 'sms', 'a', 'b', '{}', 0, 0)",
        ] {
            assert!(sqlx::query(bad).execute(&pool).await.is_err(), "{bad}");
        }
        // Deleting a shipment still takes its notifications along.
        sqlx::query("DELETE FROM shipments WHERE id = 1")
            .execute(&pool)
            .await
            .unwrap();
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(left, 0);
        pool.close().await;
    }

    #[tokio::test]
    async fn a_read_only_handle_creates_nothing_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro.db");
        assert!(matches!(
            Db::open_read_only(&path).await,
            Err(StorageError::Missing { .. })
        ));
        assert!(!path.exists());
        Db::open(&path, Synchronous::Normal)
            .await
            .unwrap()
            .close()
            .await;
        let db = Db::open_read_only(&path).await.unwrap();
        assert!(
            db.shipments_page(&ShipmentFilter::default())
                .await
                .unwrap()
                .rows
                .is_empty()
        );
        let write = sqlx::query("INSERT INTO shipments (order_id, provider) VALUES ('1', 't')")
            .execute(&db.lite().write)
            .await;
        assert!(write.is_err(), "a read-only handle wrote");
        db.close().await;
    }
}
