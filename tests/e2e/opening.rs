//! How commands open the database: the commands that only read never create, migrate or write
//! it (and work on a file nobody may write), a missing database is refused instead of created
//! empty, one daemon runs per database however its path is spelled, a database made by an older
//! version is made private on the first write, and the demo keeps to a database of its own.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::app::{Engine, TestApp};
use crate::support::immutable::Immutable;
use crate::support::on_both_engines;
use crate::support::postgres::PgDatabase;

const LIMIT: Duration = Duration::from_secs(20);

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn beside(db: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", db.display()))
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `args` on the database at `db`, which must refuse them in one line, and returns that line.
fn refused_on(app: &TestApp, db: &str, args: &[&str]) -> String {
    let mut with_db = vec!["--db", db];
    with_db.extend(args);
    let out = app.cli(&with_db);
    assert!(!out.status.success(), "{args:?} succeeded");
    let error = stderr_of(&out);
    assert_eq!(error.lines().count(), 1, "{args:?}: {error}");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_database_is_refused_in_one_line_and_nothing_is_created() {
    let app = TestApp::start().await;
    let typo = app.dir.path().join("typo.db");
    let db = typo.to_str().unwrap();
    for args in [
        vec!["list"],
        vec!["show", "8400000000000000001"],
        vec!["stats"],
        vec!["outbox"],
        vec!["remove", "8400000000000000001"],
        vec!["retry", "1"],
        vec!["set-tier", "8400000000000000001", "high"],
        vec!["poll", "8400000000000000001"],
    ] {
        assert_eq!(
            refused_on(&app, db, &args),
            format!("error: no database at {db}; `shipwatch run` or `add` creates it\n"),
            "{args:?}"
        );
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let file = beside(&typo, suffix);
            assert!(!file.exists(), "{args:?} created {}", file.display());
        }
    }
    // Something is there that cannot be read: that is said (ELOOP, whatever the language of the
    // system's messages), not that nothing is there.
    let looped = app.dir.path().join("loop.db");
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    for args in [vec!["list"], vec!["remove", "8400000000000000001"]] {
        let error = refused_on(&app, looped.to_str().unwrap(), &args);
        assert!(
            error.contains("(os error 40)") && !error.contains("no database"),
            "{args:?}: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_commands_work_on_a_database_and_folder_nobody_may_write() {
    let app = TestApp::start().await;
    let folder = app.dir.path().join("data");
    std::fs::create_dir(&folder).unwrap();
    let db = folder.join("sw.db");
    let db_arg = db.to_str().unwrap();
    app.cli_ok(&[
        "--db",
        db_arg,
        "add",
        "8400000000000000002",
        "--tier",
        "high",
    ]);
    for suffix in ["-wal", "-shm"] {
        assert!(!beside(&db, suffix).exists(), "add leaves the file whole");
    }
    chmod(&db, 0o444);
    chmod(&folder, 0o555);
    let reads = [
        vec!["list"],
        vec!["show", "8400000000000000002"],
        vec!["stats"],
        vec!["outbox"],
    ];
    let check = |what: &str| {
        for args in &reads {
            let mut with_db = vec!["--db", db_arg];
            with_db.extend(args);
            let out = app.cli(&with_db);
            assert!(
                out.status.success(),
                "{args:?} on {what}: {}",
                stderr_of(&out)
            );
            assert_eq!(stderr_of(&out), "", "{args:?} on {what}");
            if args[0] == "list" || args[0] == "show" {
                let shown = String::from_utf8_lossy(&out.stdout);
                assert!(shown.contains("8400000000000000002"), "{shown}");
            }
        }
    };
    {
        // Both immutable: no -wal or -shm can be made beside the file.
        let Some(_immutable) = Immutable::try_set(&[db.clone(), folder.clone()]) else {
            println!("skipped: chattr +i is not available here, and root ignores chmod");
            chmod(&folder, 0o755);
            return;
        };
        check("an immutable file in an immutable folder, with no -wal or -shm");
        let out = app.cli(&["--db", db_arg, "add", "8400000000000000003"]);
        assert!(!out.status.success(), "a write command cannot write it");
    }
    {
        // Only the file: SQLite makes the -wal and -shm it needs in the folder.
        let _immutable = Immutable::set(std::slice::from_ref(&db));
        check("an immutable file in a writable folder");
    }
    chmod(&folder, 0o755);
    chmod(&db, 0o600);
    // Nothing was written: the one shipment is all there is, and a write command still works.
    app.cli_ok(&["--db", db_arg, "add", "8400000000000000004"]);
    let listed = app.cli_ok(&["--db", db_arg, "list"]);
    assert!(listed.contains("8400000000000000004"), "{listed}");
    assert!(!listed.contains("8400000000000000003"), "{listed}");
}

on_both_engines!(an_older_schema_is_upgraded_by_a_command_that_writes_and_never_by_one_that_reads);

/// A database made by an older version (migration 0019 undone: its row and its index) is refused
/// by the commands that only read, which migrate nothing, with a line that says what upgrades
/// it; and a command that changes rows (`retry`) does upgrade it, on PostgreSQL as on SQLite.
async fn an_older_schema_is_upgraded_by_a_command_that_writes_and_never_by_one_that_reads(
    engine: Engine,
) {
    let app = TestApp::start_on(engine).await;
    app.cli_ok(&["add", "8400000000000000005"]);
    // As a database made before migration 0019 (0009 on PostgreSQL), the dead index.
    let undone = match engine {
        Engine::Sqlite => 19,
        Engine::Postgres => 9,
    };
    app.sql(&format!(
        "DELETE FROM _sqlx_migrations WHERE version = {undone}; DROP INDEX notifications_dead"
    ))
    .await
    .unwrap();
    let applied = || app.sql_count("SELECT count(*) FROM _sqlx_migrations");
    let before = applied().await.unwrap();
    let older = format!("(schema {before} of {})", before + 1);
    let shown = match &app.pg {
        Some(pg) => pg.url.clone(),
        None => app.db.display().to_string(),
    };
    for args in [vec!["list"], vec!["stats"], vec!["outbox"]] {
        let out = app.cli(&args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = stderr_of(&out);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!(
                "error: database {shown} was made by an older shipwatch {older}"
            )) && stderr.contains("`shipwatch run` or any command that writes upgrades it"),
            "{stderr}"
        );
    }
    assert_eq!(
        applied().await,
        Ok(before),
        "a reading command migrates nothing"
    );

    let out = app.cli_ok(&["retry", "--dead"]);
    assert!(out.contains("requeued 0 notification(s)"), "{out}");
    assert_eq!(applied().await, Ok(before + 1), "retry upgrades it");
    let indexes = app
        .sql_count(match engine {
            Engine::Sqlite => {
                "SELECT count(*) FROM sqlite_schema WHERE name = 'notifications_dead'"
            }
            Engine::Postgres => {
                "SELECT count(*) FROM pg_indexes WHERE indexname = 'notifications_dead'"
            }
        })
        .await;
    assert_eq!(indexes, Ok(1));
    assert!(app.cli_ok(&["list"]).contains("8400000000000000005"));
}

/// On PostgreSQL a database without shipwatch's tables is a missing one to the commands that
/// change rows already there, as a missing file is on SQLite: refused in one line, and no table
/// is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_database_without_tables_is_refused_and_left_empty() {
    let app = TestApp::start().await;
    let empty = PgDatabase::create().await;
    for args in [
        vec!["list"],
        vec!["remove", "8400000000000000001"],
        vec!["retry", "1"],
        vec!["set-tier", "8400000000000000001", "high"],
    ] {
        let stderr = refused_on(&app, &empty.url, &args);
        assert!(
            stderr.starts_with("error: no database at postgres://")
                && stderr.ends_with("; `shipwatch run` or `add` creates it\n"),
            "{args:?}: {stderr}"
        );
    }
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&empty.url)
        .await
        .unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables, 0, "a table was created");
}

/// A role the server does not let read shipwatch's tables is refused with the server's reason in
/// one line: told that the database has no tables, its operator would go and create them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_role_that_may_not_read_the_tables_is_told_why() {
    let app = TestApp::start().await;
    let pg = PgDatabase::create().await;
    app.cli_ok(&["--db", &pg.url, "add", "8400000000000000001"]);
    // Roles belong to the whole cluster, which the tests share: one name per database.
    let outsider = format!("{}_outsider", pg.name);
    let mut conn = pg.connect().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE ROLE {outsider} LOGIN")))
        .execute(&mut conn)
        .await
        .unwrap();
    let url = pg.url_as(&outsider);
    // The server's code and message, without the line of the server's C source that sqlx would
    // add (" at line 3655").
    let unreadable = ": (code: 42501) permission denied for table _sqlx_migrations\n";
    for args in [vec!["list"], vec!["remove", "8400000000000000001"]] {
        let stderr = refused_on(&app, &url, &args);
        assert!(
            stderr.starts_with("error: cannot open database ") && stderr.ends_with(unreadable),
            "{args:?}: {stderr}"
        );
    }
    // A command that writes would bring the tables up to date first, and may not: it may not
    // create tables in the schema (PostgreSQL 15 on) or read the migrations table (before).
    let stderr = refused_on(&app, &url, &["add", "8400000000000000002"]);
    assert!(
        stderr.contains(" up to date: while executing migrations: ")
            && (stderr.ends_with(": (code: 42501) permission denied for schema public\n")
                || stderr.ends_with(unreadable)),
        "{stderr}"
    );
    // Nothing was removed, nothing added.
    let listed = app.cli_ok(&["--db", &pg.url, "list"]);
    assert!(listed.contains("8400000000000000001"), "{listed}");
    assert!(!listed.contains("8400000000000000002"), "{listed}");
}

/// The daemon and an `add` starting at once on a new database both open it: one of them creates
/// its tables while the other waits. (Without the wait, about one start in two failed here, the
/// daemon's or the command's, with "table shipments already exists", "duplicate column name" or
/// "database is locked".) Six databases, to give the race its chances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_and_a_command_starting_at_once_on_a_new_database_both_open_it() {
    let mut apps = Vec::new();
    for _ in 0..6 {
        apps.push(TestApp::start().await);
    }
    let mut daemons = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        assert!(!app.db.exists());
        daemons.push(app.spawn_daemon());
        let tid = (8_500_000_000_000_000_000u64 + i as u64).to_string();
        let added = app.cli(&["add", &tid]);
        assert!(added.status.success(), "add: {}", stderr_of(&added));
    }
    for (app, daemon) in apps.iter().zip(&mut daemons) {
        app.wait_until("the daemon has started", LIMIT, || {
            daemon.log().contains("shipwatch started") || !daemon.is_running()
        })
        .await;
        assert!(daemon.is_running(), "{}", daemon.log());
        assert_eq!(app.shipments().len(), 1);
        assert!(daemon.terminate().success(), "{}", daemon.log());
    }
}

/// A command that finds another process creating or upgrading the database (here the test,
/// holding the database's folder as that process would) says that it waits, and adds its order
/// once the other is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_waits_for_an_upgrade_under_way_and_says_so() {
    let app = TestApp::start().await;
    let folder = std::fs::File::open(app.dir.path()).unwrap();
    folder.lock().unwrap();
    let said = app.dir.path().join("add.stderr");
    let spawned = std::time::Instant::now();
    let mut add = app
        .command(&["add", "8500000000000000100"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&said).unwrap())
        .spawn()
        .unwrap();
    let stderr = || std::fs::read_to_string(&said).unwrap_or_default();
    app.wait_until("the command says it waits", LIMIT, || {
        stderr().contains("waiting for another shipwatch process to finish creating or upgrading")
    })
    .await;
    // A wait shorter than a second (an upgrade of a small database) is not worth a line.
    assert!(spawned.elapsed() >= Duration::from_secs(1), "{}", stderr());
    assert!(add.try_wait().unwrap().is_none(), "{}", stderr());
    folder.unlock().unwrap();
    let deadline = std::time::Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = add.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "add never ends");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{}", stderr());
    assert_eq!(
        stderr().matches("waiting for another").count(),
        1,
        "{}",
        stderr()
    );
    assert_eq!(app.shipments().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_daemon_per_database_however_its_path_is_spelled() {
    let app = TestApp::start().await;
    let dir = app.dir.path();
    std::fs::create_dir(dir.join("data")).unwrap();
    let real = dir.join("data/sw.db");
    let original = std::fs::read_to_string(&app.config).unwrap();
    let on = |database: &Path| {
        let line = format!("database = \"{}\"", database.display());
        app.edit_config(|_| {
            original.replacen(&format!("database = \"{}\"", app.db.display()), &line, 1)
        });
    };
    on(&real);
    let mut first = app.spawn_daemon();
    app.wait_until("the first daemon has started", LIMIT, || {
        first.log().contains("shipwatch started")
    })
    .await;
    std::os::unix::fs::symlink("data/sw.db", dir.join("alias.db")).unwrap();
    let held = format!(
        "another shipwatch (pid {}) is running on {}; stop it first",
        first.pid(),
        std::fs::canonicalize(&real).unwrap().display()
    );
    for spelling in [dir.join("alias.db"), dir.join("data/../data/sw.db")] {
        on(&spelling);
        let mut other = app.spawn_daemon();
        let status = other
            .wait_exit(LIMIT)
            .await
            .unwrap_or_else(|| panic!("a daemon on {} is not refused", spelling.display()));
        assert!(!status.success());
        let log = other.log();
        assert!(log.contains(&held), "{}: {log}", spelling.display());
    }
    // A lock left by a daemon that died does not block the next one.
    first.kill9();
    on(&dir.join("alias.db"));
    let mut next = app.spawn_daemon();
    app.wait_until("a daemon starts after the first died", LIMIT, || {
        next.log().contains("shipwatch started")
    })
    .await;
    assert!(next.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_readable_by_others_is_made_private_on_the_first_write() {
    let app = TestApp::start().await;
    app.cli_ok(&["add", "8400000000000000006"]);
    let mut daemon = app.spawn_daemon();
    let (wal, shm) = (beside(&app.db, "-wal"), beside(&app.db, "-shm"));
    app.wait_until("the daemon has its -wal and -shm", LIMIT, || {
        daemon.log().contains("shipwatch started") && wal.exists() && shm.exists()
    })
    .await;
    // As an older version left them, or a copy made them.
    for path in [&app.db, &wal, &shm] {
        chmod(path, 0o644);
    }
    // A reading command leaves the modes alone.
    app.cli_ok(&["list"]);
    assert_eq!(mode(&app.db), 0o644);

    let out = app.cli(&["add", "8400000000000000007"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    for path in [&app.db, &wal, &shm] {
        assert_eq!(mode(path), 0o600, "{}", path.display());
    }
    let stderr = stderr_of(&out);
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("made the database files private"))
            .count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{} (was 0644, now 0600)", app.db.display())),
        "{stderr}"
    );

    let again = app.cli(&["add", "8400000000000000008"]);
    assert!(again.status.success());
    assert!(
        !stderr_of(&again).contains("private"),
        "{}",
        stderr_of(&again)
    );
    assert!(daemon.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_refuses_a_database_that_exists_and_leaves_it_alone() {
    let app = TestApp::start().await;
    app.cli_ok(&["add", "8400000000000000009"]);
    let before = std::fs::read(&app.db).unwrap();
    let db = app.db.to_str().unwrap();
    let out = app.cli(&["demo", "--db", db, "--duration", "5s"]);
    assert!(!out.status.success());
    assert_eq!(
        stderr_of(&out),
        format!(
            "error: {db} already exists; the demo seeds a database of its own: give --db a path that does not exist yet, or leave --db out for a temporary one\n"
        )
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("seeded"));
    assert_eq!(
        std::fs::read(&app.db).unwrap(),
        before,
        "the database is untouched"
    );
}
