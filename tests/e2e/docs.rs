//! The documentation, held in place: the README is a short door to one page per topic in
//! `docs/`, and every relative link between the pages (and to `deploy/`) leads somewhere: the
//! file exists and, for a `#fragment`, so does a heading with that anchor, by GitHub's rules.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// README.md, docs/*.md and deploy/*.md: the pages whose links are checked.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    for folder in ["docs", "deploy"] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(root().join(folder))
            .unwrap_or_else(|e| panic!("listing {folder}/: {e}"))
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
            .collect();
        found.sort();
        pages.extend(found);
    }
    pages
}

/// The lines of a page outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            lines.push(line);
        }
    }
    lines
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped except `-` and `_`, each space
/// a `-` (so `Taobao (`kind = "taobao"`)` is `taobao-kind--taobao`).
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a page's headings; a repeated one gets `-1`, `-2`… as on GitHub.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    for line in prose(text) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[hashes..]);
        let mut anchor = base.clone();
        let mut n = 0;
        while anchors.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        anchors.insert(anchor);
    }
    anchors
}

/// The text outside fenced blocks with inline code spans removed (a span may cross a line
/// break), so that a link written as an example inside backticks is not taken for one.
fn without_code(text: &str) -> String {
    let text = prose(text).join("\n");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let run = rest[start..].chars().take_while(|c| *c == '`').count();
        let after = &rest[start + run..];
        let fence = "`".repeat(run);
        match after.find(&fence) {
            Some(end) => rest = &after[end + run..],
            None => {
                out.push_str(&rest[start..start + run]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The targets of the page's `[text](target)` links that are not URLs with a scheme.
fn relative_links(text: &str) -> Vec<String> {
    let text = without_code(text);
    let mut links = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = &rest[..end];
        if target.is_empty() || target.contains(char::is_whitespace) {
            continue;
        }
        let scheme = target.split_once(':').is_some_and(|(scheme, _)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
        });
        if !scheme {
            links.push(target.to_string());
        }
    }
    links
}

/// Every way a page's relative links can be broken, as one line each.
fn broken_links(page: &Path) -> Vec<String> {
    let text = read(page);
    let name = page
        .strip_prefix(root())
        .unwrap_or(page)
        .display()
        .to_string();
    let mut broken = Vec::new();
    for link in relative_links(&text) {
        let (file, fragment) = match link.split_once('#') {
            Some((file, fragment)) => (file, Some(fragment)),
            None => (link.as_str(), None),
        };
        let target = if file.is_empty() {
            page.to_path_buf()
        } else {
            page.parent().unwrap_or(Path::new(".")).join(file)
        };
        if !target.exists() {
            broken.push(format!(
                "{name}: ({link}) names {file}, which does not exist"
            ));
            continue;
        }
        let Some(fragment) = fragment else { continue };
        if target.extension().is_some_and(|ext| ext == "md")
            && !anchors(&read(&target)).contains(fragment)
        {
            broken.push(format!(
                "{name}: ({link}) names #{fragment}, which no heading of {file} has",
                file = if file.is_empty() { &name } else { file }
            ));
        }
    }
    broken
}

#[test]
fn every_relative_link_in_the_docs_leads_to_a_file_and_a_heading() {
    let broken: Vec<String> = pages().iter().flat_map(|page| broken_links(page)).collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_is_a_short_door_to_one_page_per_topic() {
    let readme = read(&root().join("README.md"));
    let lines = readme.lines().count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines; the details belong in docs/"
    );
    let links = relative_links(&readme);
    for page in [
        "providers",
        "api",
        "notifications",
        "webhooks",
        "cli",
        "operations",
        "architecture",
        "reliability",
        "benchmarks",
    ] {
        let target = format!("docs/{page}.md");
        assert!(links.contains(&target), "README.md does not link {target}");
    }
    // `.ci/run` runs the README's test command; the README keeps showing it.
    assert!(
        readme.contains("```sh\ncargo test --locked\n```"),
        "README.md lost its test command"
    );
}

#[test]
fn only_the_readme_is_markdown_at_the_top_level() {
    let mut stray: Vec<String> = std::fs::read_dir(root())
        .expect("listing the top level")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.to_lowercase().ends_with(".md") && name != "README.md")
        .collect();
    stray.sort();
    assert!(stray.is_empty(), "move these into docs/: {stray:?}");
}

#[test]
fn anchors_and_links_are_read_as_github_reads_them() {
    assert_eq!(slug(" Taobao (`kind = \"taobao\"`)"), "taobao-kind--taobao");
    assert_eq!(slug("Health: `/healthz`"), "health-healthz");
    assert_eq!(
        slug("The `shipment.stuck` event"),
        "the-shipmentstuck-event"
    );
    assert_eq!(
        slug("SMS through Aliyun: `[channels.sms]` with `kind = \"aliyun\"`"),
        "sms-through-aliyun-channelssms-with-kind--aliyun"
    );
    let page = "# A\n\n## Twice\n\n```\n## Not a heading\n```\n\n## Twice\n";
    assert_eq!(
        anchors(page),
        BTreeSet::from(["a".into(), "twice".into(), "twice-1".into()])
    );
    let text = "See [one](docs/a.md#x), [web](https://example.com), `[code](not/a/link.md)`\n\
                and [two](#y).\n```\n[fenced](nor/this.md)\n```\n";
    assert_eq!(
        relative_links(text),
        vec!["docs/a.md#x".to_string(), "#y".to_string()]
    );
}
