//! Local resources under hostile load, through the real binary: idle and slowloris connections
//! on the health listener, a process out of file descriptors, a webhook receiver that never
//! answers, and CSV files too big or too wide to hold in memory.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::faults::{signed_in_one_step, signed_in_one_step_reaching};
use crate::support::app::{Daemon, TestApp};
use crate::support::config::{Channel, Provider};
use crate::support::hostile::SlowWebhook;
use crate::support::smtp_sink::SmtpSink;
use crate::support::{fake_top, shipwatch};

const LIMIT: Duration = Duration::from_secs(60);

/// The daemon's header-read timeout ([`shipwatch::health::HEADER_READ_TIMEOUT`], 10 s), and the
/// most connections it holds ([`shipwatch::health::MAX_CONNECTIONS`]).
const HEADER_READ_TIMEOUT: Duration = shipwatch::health::HEADER_READ_TIMEOUT;
const MAX_CONNECTIONS: usize = shipwatch::health::MAX_CONNECTIONS;

/// A free loopback port for `[http] listen`.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How many descriptors a running process has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// Waits for `/healthz` to answer 200.
async fn until_healthy(client: &reqwest::Client, healthz: &str, daemon: &Daemon) {
    let deadline = Instant::now() + LIMIT;
    loop {
        match client.get(healthz).send().await {
            Ok(r) if r.status() == 200 => return,
            _ if Instant::now() > deadline => panic!("/healthz never healthy:\n{}", daemon.log()),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Opens a connection that sends nothing, or (`slow`) the start of a request and then one
/// header byte a second, never finishing it. Records when the daemon closed it.
async fn hostile_connection(port: u16, slow: bool, closed: Arc<Mutex<Vec<Instant>>>) {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return;
    };
    let (mut reader, mut writer) = stream.into_split();
    let trickle = async move {
        if !slow {
            return std::future::pending::<()>().await;
        }
        if writer
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .is_err()
        {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if writer.write_all(b"X").await.is_err() {
                return std::future::pending().await;
            }
        }
    };
    let mut buf = [0u8; 256];
    let eof = async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = trickle => {}
        _ = eof => {}
    }
    closed.lock().unwrap().push(Instant::now());
}

/// 150 idle and 150 slowloris connections at once: `/healthz` still answers at once, the daemon
/// holds no more than its cap of them, a parcel's webhook goes out meanwhile, and every one of
/// them is closed by the daemon within the header-read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slowloris_connections_are_closed_and_healthz_still_answers() {
    let port = free_port();
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .section(&format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"))
        .start()
        .await;
    let daemon = app.spawn_daemon();
    let healthz = format!("http://127.0.0.1:{port}/healthz");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    until_healthy(&client, &healthz, &daemon).await;
    let baseline = open_fds(daemon.pid());

    let closed: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let opened = Instant::now();
    let tasks: Vec<_> = (0..300)
        .map(|i| tokio::spawn(hostile_connection(port, i % 2 == 1, closed.clone())))
        .collect();
    // The daemon has taken the whole flood: all but the newest 64 are closed at once.
    app.wait_until(
        "the daemon closed the connections over its cap",
        LIMIT,
        || closed.lock().unwrap().len() >= 300 - MAX_CONNECTIONS,
    )
    .await;
    assert!(
        opened.elapsed() < HEADER_READ_TIMEOUT,
        "the flood took {:?} to open; the test needs it open before the timeout",
        opened.elapsed()
    );

    let answered = client.get(&healthz).send().await;
    let status = answered.map(|r| r.status().as_u16());
    assert_eq!(
        status.as_ref().ok(),
        Some(&200),
        "/healthz while 300 connections are open: {status:?}"
    );
    let held = open_fds(daemon.pid()).saturating_sub(baseline);
    assert!(
        held <= MAX_CONNECTIONS + 16,
        "the daemon holds {held} more descriptors than before the flood (cap {MAX_CONNECTIONS})"
    );

    // Deliveries go on: a parcel changes and its webhook is delivered during the flood.
    let tid = 8_700_000_000_000_000_001u64;
    app.top.script(
        tid,
        vec![fake_top::trace_response(tid, "物流公司已接单", &[])],
    );
    app.cli_ok(&["add", &tid.to_string(), "--tier", "high"]);
    app.wait_until("the webhook is delivered during the flood", LIMIT, || {
        app.receiver.deliveries().len() == 1
    })
    .await;

    app.wait_until(
        "the daemon closed every hostile connection",
        HEADER_READ_TIMEOUT + Duration::from_secs(20),
        || closed.lock().unwrap().len() == 300,
    )
    .await;
    let last = closed.lock().unwrap().iter().max().copied().unwrap();
    println!(
        "all 300 closed within {:?} of opening",
        last.duration_since(opened)
    );
    for task in tasks {
        task.abort();
    }
    assert_eq!(client.get(&healthz).send().await.unwrap().status(), 200);
}

/// The CPU time a process has used, user and system (`utime` and `stime` of `/proc/PID/stat`).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the daemon is running");
    // The command name, in parentheses, may hold spaces: the fields are counted after it, the
    // state (field 3) first, so that field n is at n - 3.
    let after = &stat[stat.rfind(')').expect("stat names the command") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// A daemon with nothing due sleeps between its rounds: once a parcel's webhook has gone out,
/// and nothing is due for an hour, it uses well under a tenth of a core. A loop that went round
/// again at once after a round that found nothing to do would take a whole core, however
/// little each round costs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_with_nothing_due_sleeps_between_its_rounds() {
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook())
        .tiers("1h", "1h", "1h")
        .start()
        .await;
    let tid = 8_700_000_000_000_000_002u64;
    app.top.script(
        tid,
        vec![fake_top::trace_response(tid, "物流公司已接单", &[])],
    );
    app.cli_ok(&["add", &tid.to_string(), "--tier", "high"]);
    let daemon = app.spawn_daemon();
    app.wait_until("the webhook is delivered", LIMIT, || {
        app.receiver.deliveries().len() == 1
    })
    .await;

    let (before, since) = (cpu_time(daemon.pid()), Instant::now());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_time(daemon.pid()) - before;
    let share = used.as_secs_f64() / since.elapsed().as_secs_f64();
    println!(
        "idle for {:?}: {used:?} of CPU ({share:.3} of a core)",
        since.elapsed()
    );
    assert!(
        share < 0.1,
        "the idle daemon used {used:?} of CPU in {:?}:\n{}",
        since.elapsed(),
        daemon.log()
    );
}

/// Sets the soft limit on open files of a running process (`prlimit(2)`), keeping the hard one.
fn set_nofile(pid: u32, soft: u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscall on valid pointers; a null `new` only reads the current limits.
    let read = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(read, 0, "prlimit read: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    let set = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit set: {}", std::io::Error::last_os_error());
}

/// The lowest descriptor number a process does not use: with its open-file limit there, the
/// next socket it opens fails with EMFILE.
fn lowest_free_fd(pid: u32) -> u64 {
    let used: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|fd| !used.contains(fd)).unwrap()
}

/// The daemon runs out of file descriptors (its limit lowered while it runs, as a busy host or a
/// low `LimitNOFILE=` would): the webhook of a status change cannot even open its connection.
/// The attempt is postponed, not counted, however often it happens; with descriptors back the
/// webhook goes out on its first counted attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_meets_emfile_keeps_its_attempts() {
    let app = TestApp::start().await;
    let tid = 8_700_000_000_000_000_002u64;
    // Polls fail at first (a TOP system error), so the daemon holds a kept-alive connection to
    // the gateway and nothing to deliver yet.
    app.top.script(
        tid,
        vec![fake_top::error_response(
            15,
            "Remote service error",
            "isp.remote-service-error",
            "busy",
        )],
    );
    app.cli_ok(&["add", &tid.to_string(), "--tier", "high"]);
    let mut daemon = app.spawn_daemon();
    app.wait_until("the daemon has polled twice", LIMIT, || {
        app.top.polls_of(tid) >= 2
    })
    .await;

    let pid = daemon.pid();
    set_nofile(pid, lowest_free_fd(pid));
    // The next poll reuses the kept-alive connection and sees a change; its webhook needs a
    // new socket.
    app.top.script(
        tid,
        vec![fake_top::trace_response(tid, "物流公司已接单", &[])],
    );
    app.wait_until(
        "the webhook was tried and postponed four times: more than its 3 attempts",
        LIMIT,
        || {
            daemon
                .log()
                .lines()
                .filter(|l| l.contains("delivery postponed; the attempt is not counted"))
                .count()
                >= 4
        },
    )
    .await;
    let rows = app.outbox(None);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["state"], "pending", "{}", rows[0]);
    assert_eq!(rows[0]["attempts"], 0, "{}", rows[0]);
    let error = rows[0]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("too many open files"), "{error}");
    assert!(daemon.is_running(), "{}", daemon.log());

    set_nofile(pid, 4096);
    app.wait_until("the webhook is delivered", LIMIT, || {
        app.receiver.deliveries().len() == 1
    })
    .await;
    app.wait_until("the webhook is recorded sent", LIMIT, || {
        app.outbox(Some("sent")).len() == 1
    })
    .await;
    let sent = &app.outbox(Some("sent"))[0];
    assert_eq!(
        sent["attempts"], 1,
        "only the attempt that went out counts: {sent}"
    );
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

/// The health listener runs out of file descriptors: a probe that connects meanwhile waits in
/// the backlog while the daemon says so once a second (not in a loop that would take a core),
/// and is answered once descriptors are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_that_meets_emfile_waits_and_is_answered_once_descriptors_are_back() {
    let port = free_port();
    let app = TestApp::builder()
        .provider(Provider::top())
        .section(&format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"))
        .start()
        .await;
    let daemon = app.spawn_daemon();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    until_healthy(
        &client,
        &format!("http://127.0.0.1:{port}/healthz"),
        &daemon,
    )
    .await;

    let pid = daemon.pid();
    set_nofile(pid, lowest_free_fd(pid));
    let out_since = Instant::now();
    // The kernel completes the handshake; the daemon cannot take the connection.
    let mut probe = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    const WARNING: &str = "cannot accept a connection; trying again in 1s";
    let warnings = || daemon.log().matches(WARNING).count();
    app.wait_until("the daemon says it cannot accept", LIMIT, || {
        warnings() >= 2
    })
    .await;
    let mut answer = Vec::new();
    let early = tokio::time::timeout(Duration::from_millis(500), probe.read_to_end(&mut answer));
    assert!(
        early.await.is_err(),
        "answered without a descriptor: {answer:?}"
    );

    set_nofile(pid, 4096);
    tokio::time::timeout(LIMIT, probe.read_to_end(&mut answer))
        .await
        .expect("the waiting probe is answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    assert!(answer.contains(r#""status""#), "{answer}");
    let (said, out_for) = (warnings(), out_since.elapsed().as_secs() as usize);
    assert!(
        said <= out_for + 2,
        "{said} warnings in {out_for} s out of descriptors:\n{}",
        daemon.log()
    );
    assert_eq!(
        client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// With one delivery slot, three parcels change at once: their webhooks go to a receiver that
/// never answers within the 10 s delivery timeout, and their emails still all go out at once,
/// long before a webhook attempt could give its slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_does_not_hold_back_email() {
    let stalled = SlowWebhook::start(Duration::from_secs(300)).await;
    let sink = SmtpSink::start().await;
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook_to(&stalled.url))
        .channel(Channel::email(&sink))
        .start()
        .await;
    app.edit_config(|text| {
        text.replace("[delivery]\n", "[delivery]\nconcurrency = 1\n")
            .replace(
                "timeout = \"2s\"\nlease = \"5s\"",
                "timeout = \"10s\"\nlease = \"30s\"",
            )
    });
    let tids = [
        8_700_000_000_000_000_011u64,
        8_700_000_000_000_000_012,
        8_700_000_000_000_000_013,
    ];
    for tid in tids {
        signed_in_one_step(&app, tid).await;
    }
    let _daemon = app.spawn_daemon();
    app.wait_until("a webhook attempt is under way", LIMIT, || {
        !stalled.requests().is_empty()
    })
    .await;
    let stalled_since = stalled.requests()[0].1;
    app.wait_until("every email is out", LIMIT, || {
        sink.messages().len() == tids.len()
    })
    .await;
    let waited = stalled_since.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "the emails took {waited:?} after the webhook stalled; a shared slot frees only after 10 s"
    );
    assert_eq!(
        stalled.requests().len(),
        1,
        "one webhook slot, held by the stalled attempt"
    );
}

/// Eight parcels signed at once, their webhooks and SMS to receivers that take 300 ms to answer:
/// the webhook goes out eight at once (`[delivery] concurrency`, 16), the SMS four at once, the
/// default for a buyer's phone, whose repeats after a crash reach the buyer twice; the SMS
/// section's own `concurrency` changes that after a restart. Every message still goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_goes_out_four_at_once_by_default_and_as_many_as_its_section_says() {
    let hook = SlowWebhook::start(Duration::from_millis(300)).await;
    let gateway = SlowWebhook::start(Duration::from_millis(300)).await;
    let app = TestApp::builder()
        .provider(Provider::top())
        .channel(Channel::webhook_to(&hook.url))
        .channel(Channel::http_sms(
            &gateway.url,
            r#"{{"to":"{phone}","text":"{text}"}}"#,
        ))
        .start()
        .await;
    let checked = app.cli_ok(&["check-config"]);
    assert!(checked.contains(", 4 at once"), "{checked}");

    let signed = |first: u64| {
        for tid in first..first + 8 {
            signed_in_one_step_reaching(&app, tid, &["--phone", "13800138000"]);
        }
    };
    let sms_sent = || {
        app.outbox(Some("sent"))
            .iter()
            .filter(|m| m["channel"] == "sms")
            .count()
    };
    signed(8_700_000_000_000_000_101);
    let mut daemon = app.spawn_daemon();
    app.wait_until("the eight SMS are sent", LIMIT, || sms_sent() == 8)
        .await;
    assert!(daemon.terminate().success(), "{}", daemon.log());
    assert_eq!(gateway.requests().len(), 8);
    assert_eq!(gateway.take_peak(), 4, "SMS held by the gateway at once");
    assert_eq!(hook.take_peak(), 8, "webhooks held by the receiver at once");

    app.edit_config(|text| text.replace("[channels.sms]\n", "[channels.sms]\nconcurrency = 2\n"));
    let checked = app.cli_ok(&["check-config"]);
    assert!(checked.contains(", 2 at once"), "{checked}");
    signed(8_700_000_000_000_000_201);
    let mut daemon = app.spawn_daemon();
    app.wait_until("the next eight SMS are sent", LIMIT, || sms_sent() == 16)
        .await;
    assert!(daemon.terminate().success(), "{}", daemon.log());
    assert_eq!(gateway.requests().len(), 16);
    assert_eq!(
        gateway.take_peak(),
        2,
        "SMS held at once with concurrency = 2"
    );
}

/// A CSV whose field (or header) is 100 KiB: refused with its line, in one short line that does
/// not echo the field, and nothing imported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_refuses_a_field_over_64_kib_by_its_line_without_echoing_it() {
    let app = TestApp::start().await;
    let huge = "Z".repeat(100 * 1024);
    for (name, text, line) in [
        (
            "field.csv",
            format!("order_id,carrier\n9100000000000000001,yuantong\n9100000000000000002,{huge}\n"),
            "line 3",
        ),
        ("header.csv", format!("order_id,{huge}\n1,a\n"), "line 1"),
    ] {
        let path = app.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = app.cli(&["import", path.to_str().unwrap()]);
        assert!(!out.status.success(), "{name} was imported");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.len() < 400,
            "{name}: {} bytes on stderr",
            stderr.len()
        );
        assert!(
            !stderr.contains("ZZZZ"),
            "{name}: the field echoed: {stderr}"
        );
        assert!(stderr.contains(line), "{name}: {stderr}");
        assert!(stderr.contains("longer than 64 KiB"), "{name}: {stderr}");
        assert!(app.shipments().is_empty(), "{name}: nothing is imported");
    }
}

/// The database finds a repeated order while the file streams in; the error still names the line
/// it was first on, and nothing is imported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_order_in_a_streamed_import_names_its_first_line() {
    let app = TestApp::start().await;
    let path = app.dir.path().join("twice.csv");
    std::fs::write(
        &path,
        "order_id\n9300000000000000001\n9300000000000000002\n9300000000000000001\n",
    )
    .unwrap();
    let out = app.cli(&["import", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 4, column order_id: order 9300000000000000001 is already on line 2"),
        "{stderr}"
    );
    assert!(app.shipments().is_empty(), "nothing is imported");
}

/// Waits for a child and returns its exit status and peak resident memory (`VmHWM` in
/// `/proc/PID/status`, read every 20 ms while it runs: it only grows). `wait4`'s `ru_maxrss`
/// would not do: it counts the memory of this test process, which the child started as.
fn wait_peak_kib(mut child: std::process::Child) -> (std::process::ExitStatus, u64) {
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_file)
            && let Some(kib) = status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kib);
        }
        if let Some(exit) = child.try_wait().expect("child status") {
            return (exit, peak);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A 50 MB CSV (about 410 000 orders) imports whole, and `shipwatch import` never holds more
/// than 100 MiB doing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_csv_imports_in_bounded_memory() {
    let app = TestApp::start().await;
    let path = app.dir.path().join("big.csv");
    let mut text = String::with_capacity(51 << 20);
    text.push_str("order_id,tier,tracking_no,carrier,email\n");
    let mut rows = 0u64;
    while text.len() < 50 << 20 {
        rows += 1;
        text.push_str(&format!(
            "{},normal,YT{:016},yuantong-express-logistics-company-limited-branch-{:06},buyer{rows}@shop.example\n",
            9_200_000_000_000_000_000u64 + rows,
            rows,
            rows % 1_000_000,
        ));
    }
    std::fs::write(&path, &text).unwrap();
    drop(text);

    let child = shipwatch()
        .arg("--config")
        .arg(&app.config)
        .args(["import", path.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (status, peak_kib) = tokio::task::spawn_blocking(move || wait_peak_kib(child))
        .await
        .unwrap();
    println!("import of {rows} rows: peak {peak_kib} KiB");
    assert!(status.success(), "import failed: {status:?}");
    assert!(
        peak_kib < 100 * 1024,
        "import held {peak_kib} KiB at its peak, over 100 MiB"
    );
    let url = format!("sqlite://{}", app.db.display());
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    let imported: i64 = sqlx::query_scalar("SELECT count(*) FROM shipments")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(imported as u64, rows, "every row is imported");
}
