//! Holds the code to ARCHITECTURE.md: every top-level module of `src/` is in the code map, none
//! imports a module its row forbids, the top-level modules import one another without a cycle,
//! and only the error table builds a `tonic::Status`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A module's row of the code map: what it must not import.
type CodeMap = BTreeMap<String, BTreeSet<String>>;

/// The code map table of ARCHITECTURE.md: `| `module` | owns | must not import |`.
fn code_map() -> CodeMap {
    let text = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md")).unwrap();
    let section = text
        .split("## Code map")
        .nth(1)
        .expect("ARCHITECTURE.md has a code map")
        .split("\n## ")
        .next()
        .unwrap();
    section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let module = backticked(cells[1])
                .next()
                .expect("a module name")
                .to_owned();
            let forbidden = backticked(cells[3]).map(str::to_owned).collect();
            (module, forbidden)
        })
        .collect()
}

/// The `names` in backticks in a table cell.
fn backticked(cell: &str) -> impl Iterator<Item = &str> {
    cell.split('`').skip(1).step_by(2)
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// The top-level module a file of `src/` belongs to (`None` for the crate roots).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(stem) => Some(stem.to_owned()),
        None => Some(first.to_owned()),
    }
}

/// The code of a file without its comments (doc links name modules without importing them).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a file's code names through `crate::`: plain paths
/// (`crate::api::status`) and the top-level items of grouped uses (`use crate::{api, limits::X}`).
fn imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => {
                        found.insert(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 1 {
                    item.push(c);
                }
            }
            found.insert(first_segment(&item));
        } else {
            found.insert(first_segment(rest));
        }
    }
    found.remove("");
    found
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Which top-level modules each top-level module imports.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(ROOT).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src) {
        let Some(module) = top_module(&src, &file) else {
            continue;
        };
        let imported = imports(&code(&std::fs::read_to_string(&file).unwrap()));
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(imported.into_iter().filter(|other| *other != module));
    }
    graph
}

#[test]
fn every_top_level_module_is_in_the_code_map_and_every_row_is_a_module() {
    let map = code_map();
    let modules: BTreeSet<String> = module_graph().into_keys().collect();
    let mapped: BTreeSet<String> = map.keys().cloned().collect();
    assert_eq!(
        modules, mapped,
        "src/ and the code map of ARCHITECTURE.md name the same modules"
    );
}

#[test]
fn no_module_imports_what_the_code_map_forbids() {
    let map = code_map();
    let mut breaches = Vec::new();
    for (module, imported) in module_graph() {
        for other in imported.intersection(&map[&module]) {
            breaches.push(format!("{module} imports {other}"));
        }
    }
    assert!(
        breaches.is_empty(),
        "imports the code map forbids: {breaches:?}"
    );
}

#[test]
fn the_top_level_modules_import_one_another_without_a_cycle() {
    let graph = module_graph();
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Result<(), String> {
        if let Some(start) = path.iter().position(|m| m == module) {
            return Err(format!("{} -> {module}", path[start..].join(" -> ")));
        }
        if done.contains(module) {
            return Ok(());
        }
        path.push(module.to_owned());
        for next in graph.get(module).into_iter().flatten() {
            visit(next, graph, path, done)?;
        }
        path.pop();
        done.insert(module.to_owned());
        Ok(())
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Err(cycle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            panic!("an import cycle: {cycle}");
        }
    }
}

#[test]
fn only_the_error_table_builds_a_status() {
    let src = Path::new(ROOT).join("src");
    let table = src.join("api").join("status.rs");
    let constructors = [
        "Status::new(",
        "Status::with_",
        "Status::internal(",
        "Status::invalid_argument(",
        "Status::unavailable(",
        "Status::not_found(",
        "Status::aborted(",
        "Status::unknown(",
        "Status::permission_denied(",
        "Status::unauthenticated(",
        "Status::resource_exhausted(",
        "Status::failed_precondition(",
        "Status::deadline_exceeded(",
        "Status::cancelled(",
        "Status::unimplemented(",
        "Status::from_error(",
    ];
    let mut found = Vec::new();
    for file in rust_files(&src).into_iter().filter(|file| *file != table) {
        let code = code(&std::fs::read_to_string(&file).unwrap());
        for constructor in constructors.iter().filter(|c| code.contains(**c)) {
            found.push(format!("{}: {constructor}", file.display()));
        }
    }
    assert!(
        found.is_empty(),
        "statuses built outside api::status: {found:?}"
    );
}

#[test]
fn the_import_reader_sees_plain_and_grouped_paths() {
    let code = "use crate::{\n    api::{Method, status},\n    limits::Rate,\n};\nfn f() { crate::upstream::Operation::ALL; }";
    let found: Vec<String> = imports(code).into_iter().collect();
    assert_eq!(found, ["api", "limits", "upstream"]);
}

#[test]
fn the_charts_allowed_rpcs_are_the_methods_a_token_file_may_name() {
    use codepipeline_gateway::api::{Api, Method};
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(ROOT).join("helm/codepipeline-gateway/values.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let names = &schema["properties"]["auth"]["properties"]["clients"]["items"]["properties"]["allowedRpcs"]
        ["items"]["anyOf"][0]["enum"];
    let charted: BTreeSet<&str> = names
        .as_array()
        .expect("the allowedRpcs enum")
        .iter()
        .filter_map(|name| name.as_str())
        .collect();
    let served: BTreeSet<&str> = std::iter::once("*")
        .chain(
            Method::ALL
                .into_iter()
                .filter(|m| matches!(m.api(), Api::JobWorker | Api::EmulatorAdmin))
                .map(Method::name),
        )
        .collect();
    assert_eq!(charted, served);
}
