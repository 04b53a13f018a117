//! `shipwatch import` on the CSV files shops really have: saved by Excel on Chinese Windows (GBK,
//! CRLF), exported by the Taobao and 1688 seller centres (Chinese headers, carrier names, extra
//! columns), or broken by hand (a quote never closed); and `--dry-run`, which writes nothing.

use serde_json::Value;

use crate::support::app::TestApp;
use crate::support::config::{Channel, Provider};

fn write_bytes(app: &TestApp, name: &str, bytes: &[u8]) -> String {
    let path = app.dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

fn gbk(text: &str) -> Vec<u8> {
    let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
    assert!(!unmappable, "the test's text is GBK");
    bytes.into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn by_order(app: &TestApp, order_id: &str) -> Value {
    app.shipments()
        .into_iter()
        .find(|s| s["order_id"] == order_id)
        .unwrap_or_else(|| panic!("order {order_id} was not imported"))
}

/// A file Excel saved on Chinese Windows: GBK, CRLF, Chinese headers and carrier names. It
/// imports with the names read right, and says once that it was read as GBK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gbk_file_from_excel_imports_with_its_chinese_read_right() {
    let app = TestApp::start().await;
    let file = write_bytes(
        &app,
        "excel.csv",
        &gbk("订单编号,收货人姓名,联系手机,物流单号,物流公司\r\n\
             5200000000000000001,张三,13812345678,ZT7000001,中通快递\r\n\
             5200000000000000002,李四,,SF1400002,顺丰速运\r\n"),
    );
    let out = app.cli(&["import", &file]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("imported 2 shipments"),
        "{out:?}"
    );
    assert!(err.contains("read as GBK"), "{err}");
    assert!(err.contains("\"收货人姓名\""), "the left-out column: {err}");
    assert_eq!(err.lines().count(), 2, "{err}");
    let first = by_order(&app, "5200000000000000001");
    assert_eq!(first["carrier"], "zhongtong");
    assert_eq!(first["tracking_no"], "ZT7000001");
    assert_eq!(first["phone"], "138****5678");
    assert_eq!(first["provider"], "taobao");
    assert_eq!(by_order(&app, "5200000000000000002")["carrier"], "shunfeng");
}

/// `--encoding utf-8` on GBK bytes: refused with the line of the first one, and the way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf8_asked_of_gbk_bytes_names_the_line_and_hints_gbk() {
    let app = TestApp::start().await;
    let file = write_bytes(
        &app,
        "gbk.csv",
        &gbk("order_id,carrier\n5300000000000000001,yuantong\n5300000000000000002,圆通速递\n"),
    );
    let out = app.cli(&["import", "--encoding", "utf-8", &file]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("line 3: not UTF-8"), "{err}");
    assert!(err.contains("--encoding gbk"), "{err}");
    assert!(app.shipments().is_empty());

    // Bytes that are neither: the line is named either way.
    let file = write_bytes(
        &app,
        "neither.csv",
        b"order_id\r\n5300000000000000003\r\n\xFF\xFF\r\n",
    );
    let out = app.cli(&["import", &file]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("line 3: not UTF-8 nor GBK"), "{err}");
    assert!(app.shipments().is_empty());
}

/// A Taobao seller-centre export (已卖出的宝贝 → 批量导出), as its columns come: Chinese
/// headers, Excel-safe quoting of numbers, carrier names, and many columns shipwatch has no use
/// for, and a phone the export masks. With two providers, the export's rows go where
/// `--provider` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taobao_export_imports_with_carrier_codes_and_its_other_columns_left_out() {
    let app = TestApp::builder()
        .provider(Provider::top())
        .provider(Provider::simulator())
        .channel(Channel::webhook())
        .start()
        .await;
    let export = "\u{feff}订单编号,买家会员名,买家支付宝账号,订单状态,收货人姓名,收货地址,运送方式,联系电话,联系手机,物流单号,物流公司,订单备注\r\n\
        =\"5400000000000000001\",tb_buyer1,a@b.example,卖家已发货,张三,\"浙江省 杭州市, 西湖区\",快递,,'13812345678,ZT0001,中通快递,\r\n\
        =\"5400000000000000002\",tb_buyer2,,卖家已发货,李四,上海市,快递,021-1234567,'13912345678,YT0002,圆通速递,\"两行\r\n的备注\"\r\n\
        =\"5400000000000000003\",tb_buyer3,,卖家已发货,王五,北京市,快递,,138****0003,1190000000003,EMS,\r\n\
        =\"5400000000000000004\",tb_buyer4,,卖家已发货,赵六,广州市,快递,,,JT0004,极兔速递,\r\n";
    let file = write_bytes(&app, "ExportOrderList.csv", export.as_bytes());

    let out = app.cli(&["import", &file]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("which provider?"), "{}", stderr(&out));

    let out = app.cli(&["import", "--provider", "taobao", &file]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.lines().count(),
        2,
        "the left-out columns once, and the masked phone: {err}"
    );
    assert!(
        err.contains("1 masked contacts (like 138****5678) read as empty"),
        "a phone the export hides is no phone, not a refused file: {err}"
    );
    for name in ["买家会员名", "收货地址", "联系电话", "订单备注"] {
        assert!(err.contains(&format!("\"{name}\"")), "{name}: {err}");
    }
    assert!(!err.contains("订单编号"), "{err}");
    for (order, carrier, tracking, phone) in [
        (
            "5400000000000000001",
            "zhongtong",
            "ZT0001",
            Value::from("138****5678"),
        ),
        (
            "5400000000000000002",
            "yuantong",
            "YT0002",
            Value::from("139****5678"),
        ),
        ("5400000000000000003", "ems", "1190000000003", Value::Null),
        ("5400000000000000004", "jtexpress", "JT0004", Value::Null),
    ] {
        let shipment = by_order(&app, order);
        assert_eq!(shipment["carrier"], carrier, "{order}");
        assert_eq!(shipment["tracking_no"], tracking, "{order}");
        assert_eq!(shipment["phone"], phone, "{order}");
        assert_eq!(shipment["provider"], "taobao", "{order}");
    }

    // A carrier with no known code is named on its own row, with what to write instead.
    let unknown = write_bytes(
        &app,
        "unknown.csv",
        "订单编号,物流单号,物流公司\n5400000000000000005,FG1,中通快递\n5400000000000000006,FG2,飞鸽快递\n"
            .as_bytes(),
    );
    let out = app.cli(&["import", "--provider", "taobao", &unknown]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("line 3, column carrier: unknown carrier \"飞鸽快递\""),
        "{err}"
    );
    assert!(err.contains("Kuaidi100 code"), "{err}");
    assert_eq!(
        app.shipments().len(),
        4,
        "nothing of that file was imported"
    );

    let out = app.cli(&["import", "--provider", "dhl", &unknown]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--provider: unknown provider \"dhl\""),
        "{}",
        stderr(&out)
    );
}

/// A quote opened and never closed swallows the rest of the file: the error names the line it
/// opened on, not some later field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclosed_quote_is_named_at_the_line_it_opens() {
    let app = TestApp::start().await;
    let file = write_bytes(
        &app,
        "quote.csv",
        b"order_id,tier\n5500000000000000001,high\n5500000000000000002,\"low\n5500000000000000003,normal\n5500000000000000004,low\n",
    );
    let out = app.cli(&["import", &file]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("line 3: a quoted field opened here is never closed"),
        "{err}"
    );
    assert!(!err.contains("unknown tier"), "{err}");
    assert!(app.shipments().is_empty());
}

/// With CRLF line endings, and after a quoted field that holds line breaks, a bad row is named
/// by the line a text editor shows it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_numbers_are_right_with_crlf_and_multiline_fields() {
    let app = TestApp::start().await;
    for (name, text, line) in [
        (
            "crlf.csv",
            "order_id,tier\r\n5600000000000000001,high\r\n5600000000000000002,urgent\r\n",
            "line 3, column tier",
        ),
        (
            "crlf-blank.csv",
            "order_id,tier\r\n\r\n5600000000000000001,high\r\n\r\n5600000000000000002,urgent\r\n",
            "line 5, column tier",
        ),
        (
            "multiline.csv",
            "order_id,carrier,tier\r\n5600000000000000001,\"yuan\r\ntong\r\n\",high\r\n5600000000000000002,yunda,urgent\r\n",
            "line 5, column tier",
        ),
        (
            "multiline-lf.csv",
            "order_id,carrier,tier\n5600000000000000001,\"a\nb\",high\n5600000000000000002,yunda,urgent\n",
            "line 4, column tier",
        ),
    ] {
        let file = write_bytes(&app, name, text.as_bytes());
        let out = app.cli(&["import", &file]);
        assert!(!out.status.success(), "{name}");
        let err = stderr(&out);
        assert!(err.contains(line), "{name}: {err}");
        assert!(err.contains("urgent"), "{name}: {err}");
    }
    assert!(app.shipments().is_empty());
}

/// `--dry-run` reads, checks and looks up every row, says what an import would add, skip and
/// refuse, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reports_and_writes_nothing() {
    let app = TestApp::start().await;
    let first = write_bytes(&app, "first.csv", b"order_id\n5700000000000000001\n");
    // Before there is a database, nothing is tracked, and a dry run creates none.
    let out = app.cli_ok(&["import", "--dry-run", &first]);
    assert!(out.contains("1 to add, 0 to skip"), "{out}");
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{}{suffix}", app.db.display());
        assert!(
            !std::path::Path::new(&file).exists(),
            "a dry run wrote {file}"
        );
    }

    app.cli_ok(&["import", &first]);
    let outbox = app.outbox(None).len();

    let file = write_bytes(
        &app,
        "next.csv",
        b"order_id,tier\n5700000000000000001,high\n5700000000000000002,low\n5700000000000000003,urgent\n5700000000000000004,\n5700000000000000002,high\n",
    );
    let out = app.cli(&["import", "--dry-run", &file]);
    assert!(!out.status.success(), "the import would be refused");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("2 to add, 2 to skip (tracked already or repeated), 1 refused"),
        "{stdout}"
    );
    assert!(
        stdout.contains("line 2, column order_id: order 5700000000000000001 is already tracked"),
        "{stdout}"
    );
    assert!(stdout.contains("line 4, column tier"), "{stdout}");
    assert!(
        stdout.contains("line 6, column order_id: order 5700000000000000002 is already on line 3"),
        "{stdout}"
    );
    // Every reason is listed, so none is counted as more.
    assert!(!stdout.contains("more"), "{stdout}");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("import would refuse the file"), "{err}");
    assert_eq!(app.shipments().len(), 1, "nothing was written");
    assert_eq!(app.outbox(None).len(), outbox);

    let good = write_bytes(
        &app,
        "good.csv",
        b"order_id\n5700000000000000005\n5700000000000000006\n",
    );
    let out = app.cli_ok(&["import", "--dry-run", &good]);
    assert!(out.contains("2 to add, 0 to skip"), "{out}");
    assert_eq!(app.shipments().len(), 1, "nothing was written");
    let out = app.cli_ok(&["import", &good]);
    assert!(out.contains("imported 2 shipments"), "{out}");
}

/// A dry run over a file with many bad rows lists the first 20 and counts the rest; one over a
/// broken file counts what it read before the break and says the rest was not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_lists_twenty_reasons_and_stops_at_a_broken_file() {
    let app = TestApp::start().await;
    let mut text = "order_id,tier\n5800000000000000000,high\n".to_owned();
    for i in 1..=25 {
        text.push_str(&format!("58000000000000000{i:02},urgent\n"));
    }
    let many = write_bytes(&app, "many.csv", text.as_bytes());
    let out = app.cli(&["import", "--dry-run", &many]);
    assert!(!out.status.success(), "the import would be refused");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 to add, 0 to skip (tracked already or repeated), 25 refused"),
        "{stdout}"
    );
    let reasons: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("column tier"))
        .collect();
    assert_eq!(reasons.len(), 20, "{stdout}");
    assert!(reasons[0].contains("line 3, column tier"), "{stdout}");
    assert!(reasons[19].contains("line 22, column tier"), "{stdout}");
    assert!(stdout.contains("… and 5 more"), "{stdout}");

    let broken = write_bytes(
        &app,
        "broken.csv",
        b"order_id,tier\n5800000000000000101,high\n5800000000000000102,normal\n5800000000000000103,\"low\n5800000000000000104,low\n",
    );
    let out = app.cli(&["import", "--dry-run", &broken]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("2 to add, 0 to skip"), "{stdout}");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("line 4: a quoted field opened here is never closed")
            && err.contains("the rest of the file was not read"),
        "{err}"
    );
    assert!(!app.db.exists(), "a dry run created the database");
}
