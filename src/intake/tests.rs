use super::*;

fn intake() -> Intake {
    let config = Config::parse(
        "[providers.taobao]\nkind = \"taobao\"\napp_key = \"1\"\napp_secret = \"s\"\nsession = \"s\"",
        None,
        Path::new("."),
    )
    .unwrap();
    Intake::new(Some(&config))
}

fn write(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

/// A row is held to the rules of its provider's kind, without an adapter built: a numeric
/// order id for TOP and 1688, a carrier and a tracking number for Kuaidi100, nothing for the
/// simulator.
#[test]
fn a_row_is_checked_by_the_rules_of_its_providers_kind() {
    let config = Config::parse(
        "[providers.tb]\nkind = \"taobao\"\napp_key = \"1\"\napp_secret = \"s\"\nsession = \"s\"\n\
         [providers.ali]\nkind = \"alibaba1688\"\napp_key = \"1\"\napp_secret = \"s\"\naccess_token = \"t\"\n\
         [providers.kd]\nkind = \"kuaidi100\"\ncustomer = \"C1\"\nkey = \"k\"\n\
         [providers.sim]\nkind = \"simulator\"\n",
        None,
        Path::new("."),
    )
    .unwrap();
    let intake = Intake::new(Some(&config));
    let refusal = |provider: &str, order_id: &str| {
        let row = Fields {
            order_id: order_id.into(),
            provider: Some(provider.into()),
            ..Fields::default()
        };
        intake.shipment(row).err().map(|e| e.to_string())
    };
    assert_eq!(refusal("tb", "123#2"), None);
    assert!(
        refusal("tb", "A-1")
            .unwrap()
            .contains("the taobao provider needs the numeric order id")
    );
    assert_eq!(refusal("ali", "123"), None);
    assert!(
        refusal("ali", "A-1")
            .unwrap()
            .contains("the alibaba1688 provider needs the numeric 1688 order id")
    );
    let kd = refusal("kd", "A-1").unwrap();
    assert!(
        kd.contains("the carrier code") && kd.contains("the tracking number"),
        "{kd}"
    );
    let tracked = Fields {
        order_id: "A-1".into(),
        provider: Some("kd".into()),
        carrier: Some("yuantong".into()),
        tracking_no: Some("YT1".into()),
        ..Fields::default()
    };
    assert!(intake.shipment(tracked).is_ok());
    assert_eq!(refusal("sim", "A-1"), None);
}

/// The provider a row names must be configured; a row that names none takes the only one,
/// and with several the error lists them. Without a config nothing can be checked.
#[test]
fn the_provider_is_the_one_named_or_the_only_one_and_mistakes_list_the_configured_ones() {
    let row = |provider: Option<&str>| Fields {
        order_id: "123".into(),
        provider: provider.map(str::to_owned),
        ..Fields::default()
    };
    let said = |intake: &Intake, provider: Option<&str>| match intake.shipment(row(provider)) {
        Ok(new) => new.provider,
        Err(e) => e.to_string(),
    };
    let one = intake();
    assert_eq!(said(&one, None), "taobao");
    assert_eq!(
        said(&one, Some("dhl")),
        "unknown provider \"dhl\": configured providers are taobao"
    );
    assert!(one.check_provider("taobao").is_ok());
    assert_eq!(
        one.check_provider("dhl").unwrap_err().to_string(),
        "unknown provider \"dhl\": configured providers are taobao"
    );

    let config = Config::parse(
        "[providers.tb]\nkind = \"taobao\"\napp_key = \"1\"\napp_secret = \"s\"\nsession = \"s\"\n\
         [providers.sim]\nkind = \"simulator\"\n",
        None,
        Path::new("."),
    )
    .unwrap();
    let two = Intake::new(Some(&config));
    assert_eq!(
        said(&two, None),
        "which provider? give one (configured: sim, tb)"
    );
    assert_eq!(said(&two, Some("sim")), "sim");

    let none = Intake::new(Some(&Config::parse("", None, Path::new(".")).unwrap()));
    assert_eq!(
        said(&none, Some("tb")),
        "unknown provider \"tb\": configured providers are none"
    );
    let unchecked = Intake::new(None);
    assert_eq!(said(&unchecked, Some("tb")), "tb");
    assert_eq!(said(&unchecked, None), "which provider? give one");
    assert!(unchecked.check_provider("anything").is_ok());
}

#[test]
fn a_good_file_reads_whole() {
    let file = write("order_id,tier,phone\n123,high,+86 138-1234-5678\n124,,\n");
    let rows = intake().read_csv(file.path()).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0, 2);
    assert_eq!(rows[0].1.provider, "taobao");
    assert_eq!(rows[0].1.tier, Tier::High);
    assert_eq!(rows[1].1.tier, Tier::Normal);
    assert_eq!(
        rows[0].1.phone.as_ref().map(Phone::as_str),
        Some("13812345678")
    );
    assert_eq!(rows[1].1.phone, None);
}

#[test]
fn a_bad_line_is_named_with_its_column() {
    let mut text = "order_id,provider,tier\n".to_owned();
    for i in 0..5 {
        text.push_str(&format!("10{i},taobao,high\n"));
    }
    text.push_str("106,taobao,urgent\n");
    let err = intake()
        .read_csv(write(&text).path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 7, column tier: unknown tier \"urgent\""),
        "{err}"
    );

    let err = intake()
        .read_csv(write("order_id,provider\nabc,taobao\n").path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2, column order_id"), "{err}");
    assert!(err.contains("numeric"), "{err}");

    let err = intake()
        .read_csv(write("order_id,provider\n1,dhl\n").path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 2, column provider: unknown provider \"dhl\""),
        "{err}"
    );

    let err = intake()
        .read_csv(write("order_id\n1\n2\n1\n").path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 4, column order_id: order 1 is already on line 2"),
        "{err}"
    );
}

#[test]
fn phones_and_emails_are_checked() {
    let err = intake()
        .read_csv(write("order_id,phone\n1,12345\n").path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2, column phone"), "{err}");
    let err = intake()
        .read_csv(write("order_id,email\n1,not-an-address\n").path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2, column email"), "{err}");
    for bad in ["o pen", "oia2Tju/EG", "微信"] {
        let err = intake()
            .read_csv(write(&format!("order_id,openid\n1,{bad}\n")).path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2, column openid"), "{err}");
        assert!(err.contains("is not a WeChat OpenID"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let long = "o".repeat(crate::domain::OpenId::MAX_CHARS + 1);
    let err = intake()
        .read_csv(write(&format!("order_id,openid\n1,{long}\n")).path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("column openid"), "{err}");
    let rows = intake()
        .read_csv(write("order_id,openid\n1,oia2TjuEGTNoeX76QEjQNrcURxG8\n2,\n").path())
        .unwrap();
    assert_eq!(
        rows[0].1.openid.as_ref().map(|o| o.as_str()),
        Some("oia2TjuEGTNoeX76QEjQNrcURxG8")
    );
    assert!(rows[1].1.openid.is_none());
}

#[test]
fn csv_fields_are_bounded_and_never_echoed() {
    let at_limit = "y".repeat(MAX_FIELD_BYTES);
    let over = "x".repeat(MAX_FIELD_BYTES + 1);
    // (file, Ok(rows) or Err(what the one-line error holds))
    let table: Vec<(String, Result<usize, &str>)> = vec![
        (format!("order_id,carrier\n1,{at_limit}\n"), Ok(1)),
        (
            format!("order_id,carrier\n1,{over}\n"),
            Err("line 2: a field is longer than 64 KiB"),
        ),
        (
            format!("order_id,carrier\n1,a\n2,\"{over}\"\n"),
            Err("line 3: a field is longer than 64 KiB"),
        ),
        (
            format!("order_id,{over}\n1,a\n"),
            Err("line 1: a field is longer than 64 KiB"),
        ),
        (
            "order_id,tier\n1,high,extra,more\n".to_owned(),
            Err("line 2: more fields than the header's 2"),
        ),
        (
            "order_id,tier\n1\n".to_owned(),
            Err("line 2: 1 fields where the header has 2"),
        ),
        (
            format!("{}\n", ["order_id"; MAX_COLUMNS + 1].join(",")),
            Err("the header has more than 128 columns"),
        ),
        ("\u{feff}order_id,tier\n1,high\n".to_owned(), Ok(1)),
        ("order_id,carrier\n1,\"a,\nb\"\n2,c\n".to_owned(), Ok(2)),
        ("order_id\n\n1\n\n2\n".to_owned(), Ok(2)),
        (String::new(), Err("the header has no order_id column")),
        // A first line of blanks is an empty header, not a column named "".
        (
            " \norder_id\n1\n".to_owned(),
            Err("the header has no order_id column"),
        ),
    ];
    for (text, want) in table {
        let got = intake().read_csv_from(text.as_bytes(), "f.csv");
        match (&got, want) {
            (Ok(rows), Ok(n)) => assert_eq!(rows.len(), n, "{:.80}", text),
            (Err(e), Err(part)) => {
                let e = e.to_string();
                assert!(e.contains(part), "{e:.300}");
                assert!(e.len() < 300 && !e.contains('\n'), "{e:.300}");
            }
            _ => panic!("{:.80}: {got:.300?}", text),
        }
    }
    let bad = b"order_id,carrier\n1,\xff\xfe\n";
    let err = intake()
        .read_csv_from(&bad[..], "f.csv")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2: not UTF-8"), "{err}");
}

#[test]
fn an_unknown_column_is_refused() {
    let err = intake()
        .read_csv(write("order_id,colour\n1,red\n").path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown column \"colour\""), "{err}");
    assert!(!err.contains('\n'));
}

/// A column named twice, or named once by its own name and once by an export's, is refused
/// with words that say which.
#[test]
fn a_column_given_twice_is_named_as_given() {
    let refusal = |text: &str| {
        intake()
            .read_csv_from(text.as_bytes(), "f.csv")
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        refusal("order_id,tier,order_id\n1,high,1\n"),
        "f.csv: column \"order_id\" appears twice in the header"
    );
    assert_eq!(
        refusal("订单编号,order_id\n1,1\n"),
        "f.csv: columns \"订单编号\" and \"order_id\" are both order_id; keep one of them"
    );
}

/// A file that is not UTF-8 is read as GBK (GB18030), as a seller centre writes its exports;
/// its carrier names become Kuaidi100 codes.
#[test]
fn a_file_that_is_not_utf8_is_read_as_gbk() {
    // 订单编号,物流公司 / 1,圆通, in GBK.
    let gbk =
        b"\xb6\xa9\xb5\xa5\xb1\xe0\xba\xc5,\xce\xef\xc1\xf7\xb9\xab\xcb\xbe\n1,\xd4\xb2\xcd\xa8\n";
    let rows = intake().read_csv_from(gbk, "f.csv").unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].1.carrier.as_deref(),
        Some("yuantong"),
        "圆通 is yuantong"
    );
}
