//! `shipwatch list | head`: an admin command whose reader goes away ends at once and quietly,
//! as any Unix tool does, instead of panicking on the closed pipe or hanging on the way out.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::app::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_early_ends_list_quietly() {
    let app = TestApp::start().await;
    app.create_database();
    // Far more than a pipe holds, so that printing meets the closed pipe.
    app.sql(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) \
         INSERT INTO shipments (order_id, provider, tracking_no) \
         SELECT 9100000000000000000 + i, 'taobao', 'ZT' || i FROM n",
    )
    .await
    .unwrap();

    for stderr_too in [false, true] {
        let log = app.dir.path().join("list.err");
        let mut command = Command::new(env!("CARGO_BIN_EXE_shipwatch"));
        command
            .arg("--config")
            .arg(&app.config)
            .arg("list")
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if stderr_too {
            command.stderr(Stdio::piped());
        } else {
            command.stderr(std::fs::File::create(&log).unwrap());
        }
        let mut child = command.spawn().unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.starts_with("ORDER"), "{first}");
        // `head -1` has what it wanted: both ends it held are closed now.
        drop(child.stderr.take());

        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!(
                    "`shipwatch list` hung after its reader went away (stderr piped: {stderr_too})"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.code() != Some(101), "it panicked: {status:?}");
        if !stderr_too {
            let err = std::fs::read_to_string(&log).unwrap();
            assert!(!err.contains("panicked"), "{err}");
        }
    }
}
