//! The documentation holds: every relative link in the repository's Markdown reaches a file (and
//! a heading, when it names one), every command-line flag the pages name is one the binary has
//! (or another tool's, listed here), and the configuration page documents every flag there is.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use clap::CommandFactory;
use codepipeline_gateway::config::Cli;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Flags of other tools the pages show: cargo, docker, helm, and the bench harness.
const OTHER_TOOLS_FLAGS: &[&str] = &[
    "--all-targets",
    "--bin",
    "--build-arg",
    "--check",
    "--create-namespace",
    "--example",
    "--gateway",
    "--locked",
    "--no-default-features",
    "--only",
    "--release",
    "--set",
    "--set-json",
    "--smoke",
    "--test",
    "--workspace",
];

/// Every Markdown file of the repository outside build output and installed tools.
fn markdown_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap();
        if path.is_dir() {
            if !matches!(
                name,
                "target" | ".git" | ".tools" | "node_modules" | ".pytest_cache"
            ) {
                files.extend(markdown_files(&path));
            }
        } else if name.ends_with(".md") {
            files.push(path);
        }
    }
    files
}

/// The text outside fenced code blocks and inline code, where links are links.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Inline code spans out; link labels in backticks (`[`x`](y)`) keep their brackets.
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
            } else if !in_code {
                out.push(c);
            }
        }
        out.push('\n');
    }
    out
}

/// The targets of `[label](target)` links.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        found.push(after[..end].trim().to_owned());
        rest = &after[end..];
    }
    found
}

/// GitHub's anchor for a heading: lowercase, punctuation but `-` and `_` dropped, spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut found = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            found.insert(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

#[test]
fn every_relative_link_reaches_a_file_and_its_heading() {
    let mut broken = Vec::new();
    let files = markdown_files(Path::new(ROOT));
    assert!(files.len() > 20, "the pages were found: {}", files.len());
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for target in links(&prose(&text)) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let shown = format!("{}: {target}", file.strip_prefix(ROOT).unwrap().display());
            if !resolved.exists() {
                broken.push(format!("{shown} (no such file)"));
            } else if !fragment.is_empty() && resolved.extension().is_some_and(|e| e == "md") {
                let headings = anchors(&std::fs::read_to_string(&resolved).unwrap());
                if !headings.contains(fragment) {
                    broken.push(format!("{shown} (no such heading)"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}

/// Every long flag of the binary: its subcommands' (nested ones too) and the global ones.
fn binary_flags() -> BTreeSet<String> {
    fn collect(command: &clap::Command, flags: &mut BTreeSet<String>) {
        for arg in command.get_arguments() {
            if let Some(long) = arg.get_long() {
                flags.insert(format!("--{long}"));
            }
        }
        for sub in command.get_subcommands() {
            collect(sub, flags);
        }
    }
    let mut flags = BTreeSet::from(["--help".to_owned()]);
    collect(&Cli::command(), &mut flags);
    flags
}

/// The `--flags` a text names.
fn named_flags(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("--") {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '-') {
            continue;
        }
        let name: String = text[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        if name.starts_with(|c: char| c.is_ascii_lowercase()) {
            found.insert(format!("--{}", name.trim_end_matches('-')));
        }
    }
    found
}

#[test]
fn every_flag_the_pages_name_is_one_the_binary_has() {
    let known = binary_flags();
    assert!(known.contains("--feed-ack-deadline") && known.contains("--session-token"));
    let mut pages = vec![
        Path::new(ROOT).join("README.md"),
        Path::new(ROOT).join("ARCHITECTURE.md"),
    ];
    pages.extend(markdown_files(&Path::new(ROOT).join("docs")));
    let mut unknown = Vec::new();
    for page in pages {
        let text = std::fs::read_to_string(&page).unwrap();
        for flag in named_flags(&text) {
            if !known.contains(&flag) && !OTHER_TOOLS_FLAGS.contains(&flag.as_str()) {
                unknown.push(format!(
                    "{}: {flag}",
                    page.strip_prefix(ROOT).unwrap().display()
                ));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "flags the binary does not have: {unknown:?}"
    );
}

#[test]
fn the_configuration_page_has_a_row_for_every_flag() {
    let page = std::fs::read_to_string(Path::new(ROOT).join("docs/configuration.md")).unwrap();
    let rows: BTreeSet<String> = page
        .lines()
        .filter(|line| line.starts_with("| `--"))
        .flat_map(|line| named_flags(line.split('|').nth(1).unwrap()))
        .collect();
    let missing: Vec<String> = binary_flags()
        .into_iter()
        .filter(|flag| flag != "--help" && !rows.contains(flag))
        .collect();
    assert!(missing.is_empty(), "flags with no row: {missing:?}");
}

#[test]
fn the_checks_read_links_flags_and_headings_as_written() {
    let text = "See [the feed](job-feed.md#the-rules), `[not](a-link.md)`, and\n```sh\n[x](in-code.md)\n```\n";
    assert_eq!(links(&prose(text)), ["job-feed.md#the-rules"]);
    assert_eq!(
        anchor("The job feed: StreamJobs"),
        "the-job-feed-streamjobs"
    );
    assert_eq!(
        named_flags("`--feed-ack-deadline 10s`, x--y, `--set-json`, --"),
        BTreeSet::from(["--feed-ack-deadline".to_owned(), "--set-json".to_owned()])
    );
}
