//! The shape of the code, held in place: imports flow one way. A top-level module of `src/`
//! that imports another (a `crate::x` path anywhere in its files) must not be imported back,
//! directly or through others. And the store speaks SQL in one place: no file outside
//! `src/storage/` runs a statement. And no file runs over 800 lines unless half of it is its tests.
//! And adding a row builds no HTTP client.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_owned());
    }
}

/// Each top-level module and the top-level modules its files name as `crate::x`.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if ["lib", "main", "build"].contains(&name.as_str()) {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&path, &mut files);
        modules.entry(name).or_default().extend(files);
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .into_iter()
        .map(|(name, files)| {
            let mut used = BTreeSet::new();
            for file in files {
                let text = std::fs::read_to_string(&file).unwrap();
                for (i, _) in text.match_indices("crate::") {
                    let rest = &text[i + "crate::".len()..];
                    let other: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if other != name && names.contains(&other) {
                        used.insert(other);
                    }
                }
            }
            (name, used)
        })
        .collect()
}

/// A loop of imports, if there is one.
fn find_loop(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_top_level_modules_import_one_another_in_a_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = imports(&src);
    assert!(graph.len() > 10, "read the modules of src/: {graph:?}");
    if let Some(cycle) = find_loop(&graph) {
        panic!(
            "these modules import one another in a loop: {}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_loop_finder_finds_a_loop() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(n, e)| (n.to_owned(), e.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(find_loop(&graph).unwrap(), ["a", "b", "c", "a"]);
    let mut acyclic = graph.clone();
    acyclic.get_mut("c").unwrap().clear();
    assert_eq!(find_loop(&acyclic), None);
}

/// What running SQL looks like in sqlx: building a statement, or running one on a pool, a
/// connection or a transaction. (A provider's `fetch` is not among them: only sqlx's own
/// `fetch_*` names are.)
const RUNS_SQL: &[&str] = &[
    "sqlx::query",
    "query_as",
    "query_scalar",
    "raw_sql",
    "sqlx::migrate!",
    ".execute(",
    ".fetch_one(",
    ".fetch_all(",
    ".fetch_optional(",
    ".begin_with(",
];

/// Each line of `text` whose code holds one of `patterns`, by number, with the one it holds.
/// Comments are left out: a doc comment may name `sqlx::migrate!` to say why a file exists.
fn lines_with(text: &str, patterns: &[&'static str]) -> Vec<(usize, &'static str)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let code = line.split("//").next().unwrap_or_default();
            patterns
                .iter()
                .find(|pattern| code.contains(*pattern))
                .map(|pattern| (i + 1, *pattern))
        })
        .collect()
}

/// Each line of `text` that runs SQL, by number, with what gave it away.
fn sql_lines(text: &str) -> Vec<(usize, &'static str)> {
    lines_with(text, RUNS_SQL)
}

#[test]
fn no_file_outside_the_store_runs_sql() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let storage = src.join("storage");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 20, "read the files of src/: {files:?}");
    let mut found = Vec::new();
    for file in files.iter().filter(|f| !f.starts_with(&storage)) {
        let text = std::fs::read_to_string(file).unwrap();
        for (line, pattern) in sql_lines(&text) {
            let shown = file.strip_prefix(&src).unwrap().display();
            found.push(format!("src/{shown}:{line} ({pattern})"));
        }
    }
    assert!(
        found.is_empty(),
        "SQL outside src/storage/ (give the store a named operation instead): {}",
        found.join(", ")
    );
}

#[test]
fn the_sql_finder_finds_sql_and_not_its_mention() {
    let code = r#"
//! Embedded with `sqlx::migrate!`, as the store says.
let rows = sqlx::query_as::<_, (i64,)>("SELECT 1").fetch_all(&pool).await?;
let trace = provider.adapter.fetch(&request).await?; // not .execute( on a pool
sqlx::query("DELETE FROM events")
    .execute(&mut *tx)
"#;
    let lines: Vec<usize> = sql_lines(code).into_iter().map(|(line, _)| line).collect();
    assert_eq!(lines, [3, 5, 6]);
}

/// What building an HTTP client or an upstream adapter looks like in code.
const BUILDS_HTTP: &[&str] = &[
    "reqwest",
    "upstream::client",
    "upstream::adapters",
    "Client::builder",
];

/// Issue 13: "intake/ add, import, row checks (no HTTP clients built to add a row)". A row is
/// checked by the rules of its provider's kind (`upstream::check`), which need no client.
#[test]
fn adding_a_row_builds_no_http_client() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("src/intake.rs"),
        root.join("src/cli/add.rs"),
        root.join("src/cli/import.rs"),
    ];
    rust_files(&root.join("src/intake"), &mut files);
    assert!(files.len() > 5, "read the files of intake: {files:?}");
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (line, pattern) in lines_with(&text, BUILDS_HTTP) {
            let shown = file.strip_prefix(root).unwrap().display();
            found.push(format!("{shown}:{line} ({pattern})"));
        }
    }
    assert!(
        found.is_empty(),
        "intake builds an HTTP client or an adapter (check a row with upstream::check): {}",
        found.join(", ")
    );
    let built = "let http = crate::upstream::client(&config.http)?; // to check a row\n";
    assert_eq!(lines_with(built, BUILDS_HTTP), [(1, "upstream::client")]);
}

/// Lines of a file past which it must be split, unless at least half of it is its tests: issue
/// 13's "no file in `src/` over about 800 lines except where half of it is tests".
const MAX_LINES: usize = 800;

/// A file's lines, and the lines of its tests (from its first `#[cfg(test)]` to the end).
fn sizes(text: &str) -> (usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let tests = lines
        .iter()
        .position(|line| line.trim() == "#[cfg(test)]")
        .map_or(0, |at| lines.len() - at);
    (lines.len(), tests)
}

#[test]
fn no_file_is_long_unless_half_of_it_is_tests() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let (lines, tests) = sizes(&std::fs::read_to_string(file).unwrap());
            (lines > MAX_LINES && tests * 2 < lines).then(|| {
                format!(
                    "{} ({lines} lines, {tests} of tests)",
                    file.strip_prefix(&src).unwrap().display()
                )
            })
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines with less than half of them tests: {}; split them along what they do",
        long.join(", ")
    );
}

#[test]
fn the_size_check_counts_the_tests_from_their_module_on() {
    let code = "fn a() {}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn t() {}\n}\n";
    assert_eq!(sizes(code), (7, 5));
    assert_eq!(sizes("fn a() {}\nfn b() {}\n"), (2, 0));
}
