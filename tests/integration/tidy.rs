//! Holds the code to ARCHITECTURE.md. Its code map lists the workspace's crates, what each must
//! not depend on, and for each crate its top-level modules and what each must not import. The
//! tests here read that map and the code: every crate and module is in the map, no crate depends
//! on what its row forbids, no module imports what its row forbids (through `crate::`, `super::`
//! or, in the gateway, the crates it re-exports), the modules of each crate import one another
//! without a cycle, and only the error tables build a `tonic::Status`. The rules are tested on
//! code written to break them, so a rule that cannot fail is caught too.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The files allowed to build a `tonic::Status`: the gateway's error table (the files of
/// `src/api/status/`) and the emulator admin service's.
const ERROR_TABLES: [&str; 5] = [
    "src/api/status/mod.rs",
    "src/api/status/artifact.rs",
    "src/api/status/refusal.rs",
    "src/api/status/upstream.rs",
    "crates/emulator/src/admin/status.rs",
];

/// In the gateway, the crates it re-exports, as the module names its code imports them by
/// (`pub use codepipeline_emulator as emulator`, `pub use codepipeline_job_port::{domain, upstream}`):
/// `None` means the next path segment is the module.
const GATEWAY_REEXPORTS: [(&str, Option<&str>); 2] = [
    ("codepipeline_emulator", Some("emulator")),
    ("codepipeline_job_port", None),
];

/// A module's row of a code map: what it must not import.
type CodeMap = BTreeMap<String, BTreeSet<String>>;
/// Which top-level modules each top-level module imports.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// One crate of the workspace, as the code map's crates table lists it.
#[derive(Debug)]
struct Crate {
    package: String,
    dir: PathBuf,
    must_not_depend_on: BTreeSet<String>,
}

impl Crate {
    fn src(&self) -> PathBuf {
        self.dir.join("src")
    }

    fn is_gateway(&self) -> bool {
        self.package == "codepipeline-gateway"
    }
}

fn code_map_section() -> String {
    let text = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md")).unwrap();
    text.split("\n## Code map")
        .nth(1)
        .expect("ARCHITECTURE.md has a code map")
        .split("\n## ")
        .next()
        .unwrap()
        .to_owned()
}

/// The cells of a table row: `| a | b | c |` -> `["a", "b", "c"]`.
fn cells(line: &str) -> Vec<&str> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(str::trim).collect()
}

/// The `names` in backticks in a table cell.
fn backticked(cell: &str) -> impl Iterator<Item = &str> {
    cell.split('`').skip(1).step_by(2)
}

/// The crates table (before the first `###`): `| `package` | `dir` | owns | must not depend on |`.
fn crates(section: &str) -> Vec<Crate> {
    let table = section.split("\n### ").next().unwrap();
    table
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells = cells(line);
            Crate {
                package: backticked(cells[0]).next().unwrap().to_owned(),
                dir: Path::new(ROOT).join(backticked(cells[1]).next().unwrap()),
                must_not_depend_on: backticked(cells[3]).map(str::to_owned).collect(),
            }
        })
        .collect()
}

/// Each crate's module table, under its `### `package`` heading:
/// `| `module` | owns | must not import |`.
fn code_maps(section: &str) -> BTreeMap<String, CodeMap> {
    section
        .split("\n### ")
        .skip(1)
        .map(|subsection| {
            let heading = subsection.lines().next().unwrap();
            let package = backticked(heading)
                .next()
                .expect("a crate heading")
                .to_owned();
            let map = subsection
                .lines()
                .filter(|line| line.starts_with("| `"))
                .map(|line| {
                    let cells = cells(line);
                    let module = backticked(cells[0]).next().unwrap().to_owned();
                    (module, backticked(cells[2]).map(str::to_owned).collect())
                })
                .collect();
            (package, map)
        })
        .collect()
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

/// The module path of a file of `src/` (`s3/xml.rs` -> `["s3", "xml"]`, `s3/mod.rs` ->
/// `["s3"]`); empty for the crate roots.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut path: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_str().unwrap().to_owned())
        .collect();
    if matches!(path.last().map(String::as_str), Some("mod")) {
        path.pop();
    }
    if matches!(path.as_slice(), [root] if root == "lib" || root == "main") {
        path.clear();
    }
    path
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

/// The first segments of a path, or of each item of a group: `api::X` -> `[api]`,
/// `{api::{A, B}, limits::C}` -> `[api, limits]`.
fn heads(rest: &str) -> Vec<String> {
    let Some(group) = rest.strip_prefix('{') else {
        return vec![first_segment(rest)];
    };
    let mut found = Vec::new();
    let mut depth = 1;
    let mut item = String::new();
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 1 => break,
            '}' => depth -= 1,
            ',' if depth == 1 => {
                found.push(first_segment(&item));
                item.clear();
                continue;
            }
            _ => {}
        }
        if depth == 1 {
            item.push(c);
        }
    }
    found.push(first_segment(&item));
    found
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Whether `code[at..]` starts a path of its own (not the tail of `a::super::`, `my_crate::`).
fn starts_a_path(code: &str, at: usize) -> bool {
    !code[..at]
        .chars()
        .next_back()
        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
}

/// The top-level modules a file's code names: through `crate::` (plain paths and grouped uses),
/// through `super::` chains that climb to the crate root from `module` (the file's module path;
/// an indented `use` is taken to sit in an inline module, one level deeper), and through the
/// `reexported` crates (lib name, module name or the next segment).
fn imports(code: &str, module: &[String], reexported: &[(&str, Option<&str>)]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        if starts_a_path(code, at) {
            found.extend(heads(&code[at + "crate::".len()..]));
        }
    }
    for (at, _) in code.match_indices("super::") {
        if !starts_a_path(code, at) {
            continue;
        }
        let mut rest = &code[at..];
        let mut climbs = 0;
        while let Some(after) = rest.strip_prefix("super::") {
            climbs += 1;
            rest = after;
        }
        let line_start = code[..at].rfind('\n').map_or(0, |i| i + 1);
        let line = &code[line_start..at];
        let inline = line.starts_with(char::is_whitespace) && line.trim_start() == "use ";
        let depth = module.len() + usize::from(inline);
        if climbs >= depth {
            found.extend(heads(rest));
        }
    }
    for (lib, module_name) in reexported {
        let prefix = format!("{lib}::");
        for (at, _) in code.match_indices(&prefix) {
            if !starts_a_path(code, at) {
                continue;
            }
            match module_name {
                Some(name) => {
                    found.insert((*name).to_owned());
                }
                None => found.extend(heads(&code[at + prefix.len()..])),
            }
        }
    }
    found.remove("");
    found.remove("self");
    found
}

/// The items a crate root re-exports from its own modules (`pub use engine::{Emulator, ..};`):
/// item -> module, so `crate::Emulator` counts as an import of `engine`.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut items = BTreeMap::new();
    for statement in code(lib).split(';') {
        let Some(path) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, rest)) = path.split_once("::") else {
            continue;
        };
        for item in heads(rest) {
            items.insert(item, module.to_owned());
        }
    }
    items
}

/// Which top-level modules each top-level module of `krate` imports.
fn module_graph(krate: &Crate) -> Graph {
    let src = krate.src();
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
    let reexports = root_reexports(&lib);
    let reexported: &[(&str, Option<&str>)] = if krate.is_gateway() {
        &GATEWAY_REEXPORTS
    } else {
        &[]
    };
    let mut graph = Graph::new();
    for file in rust_files(&src) {
        let path = module_path(&src, &file);
        let Some(module) = path.first().cloned() else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let edges = graph.entry(module.clone()).or_default();
        for imported in imports(&code(&text), &path, reexported) {
            let imported = reexports.get(&imported).cloned().unwrap_or(imported);
            if imported != module {
                edges.insert(imported);
            }
        }
    }
    graph
}

/// Every import a code map forbids, as `module imports other`.
fn breaches(map: &CodeMap, graph: &Graph) -> Vec<String> {
    let mut found = Vec::new();
    for (module, imported) in graph {
        let Some(forbidden) = map.get(module) else {
            continue;
        };
        for other in imported.intersection(forbidden) {
            found.push(format!("{module} imports {other}"));
        }
    }
    found
}

/// An import cycle among the graph's modules, as `a -> b -> a`, if there is one.
fn cycle(graph: &Graph) -> Option<String> {
    fn visit(
        module: &str,
        graph: &Graph,
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
            if graph.contains_key(next) {
                visit(next, graph, path, done)?;
            }
        }
        path.pop();
        done.insert(module.to_owned());
        Ok(())
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|module| visit(module, graph, &mut Vec::new(), &mut done).err())
}

/// The `Status::<constructor>(` calls in a file's code: any associated function of
/// `tonic::Status` (`new`, `with_error_details`, `internal`, `data_loss`, `ok`, `from_error`,
/// ...), but not `Status::from(refusal)` (the table's own `From` impls decide that status), nor
/// other types whose names end in `Status` (`JobStatus::InProgress`).
fn status_constructors(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in code.match_indices("Status::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[at + "Status::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let starts_lowercase = name.starts_with(|c: char| c.is_ascii_lowercase());
        if starts_lowercase && name != "from" && rest[name.len()..].starts_with('(') {
            found.push(format!("Status::{name}("));
        }
    }
    found
}

/// The fields of every metrics label set (a struct deriving `EncodeLabelSet`) whose type is a
/// string: label values come from closed sets (enums, or newtypes that keep their set bounded),
/// never from a string a caller could make up.
fn string_labels(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in code.match_indices("EncodeLabelSet)]") {
        let rest = &code[at..];
        let Some(start) = rest.find("struct ") else {
            continue;
        };
        let rest = &rest[start + "struct ".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let (Some(open), Some(close)) = (rest.find('{'), rest.find('}')) else {
            continue;
        };
        if close < open {
            continue;
        }
        for field in rest[open + 1..close].split(',') {
            let Some((field, ty)) = field.split_once(':') else {
                continue;
            };
            let ty: String = ty.split_whitespace().collect();
            let is_string = [
                "&'staticstr",
                "&str",
                "String",
                "Arc<str>",
                "Box<str>",
                "Cow<",
            ]
            .iter()
            .any(|string| ty.starts_with(string));
            if is_string {
                let field = field.split_whitespace().last().unwrap_or_default();
                found.push(format!("{name}.{field}: {ty}"));
            }
        }
    }
    found
}

/// The names of a crate's dependencies (normal and build), from its `Cargo.toml`.
fn dependencies(krate: &Crate) -> BTreeSet<String> {
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(krate.dir.join("Cargo.toml")).unwrap()).unwrap();
    ["dependencies", "build-dependencies"]
        .iter()
        .filter_map(|table| manifest.get(*table).and_then(toml::Value::as_table))
        .flat_map(|table| table.keys().cloned())
        .collect()
}

#[test]
fn every_crate_of_the_workspace_is_in_the_code_map() {
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).unwrap())
            .unwrap();
    let mut packages: BTreeSet<String> = BTreeSet::from(["codepipeline-gateway".to_owned()]);
    for entry in std::fs::read_dir(Path::new(ROOT).join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let crate_manifest: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml")).unwrap()).unwrap();
        packages.insert(
            crate_manifest["package"]["name"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(
        manifest["workspace"]["members"].as_array().unwrap().len(),
        1,
        "the workspace is the root and crates/*"
    );
    let section = code_map_section();
    let mapped: BTreeSet<String> = crates(&section).into_iter().map(|c| c.package).collect();
    assert_eq!(packages, mapped, "the crates table names every crate");
    let with_modules: BTreeSet<String> = code_maps(&section).into_keys().collect();
    assert_eq!(packages, with_modules, "every crate has its module table");
}

#[test]
fn no_crate_depends_on_what_the_code_map_forbids() {
    for krate in crates(&code_map_section()) {
        let forbidden: Vec<String> = dependencies(&krate)
            .intersection(&krate.must_not_depend_on)
            .cloned()
            .collect();
        assert!(
            forbidden.is_empty(),
            "{} depends on {forbidden:?}",
            krate.package
        );
    }
}

#[test]
fn every_top_level_module_is_in_the_code_map_and_every_row_is_a_module() {
    let section = code_map_section();
    let maps = code_maps(&section);
    for krate in crates(&section) {
        let modules: BTreeSet<String> = module_graph(&krate).into_keys().collect();
        let mapped: BTreeSet<String> = maps[&krate.package].keys().cloned().collect();
        assert_eq!(
            modules, mapped,
            "{}: its src/ and its code map name the same modules",
            krate.package
        );
    }
}

#[test]
fn no_module_imports_what_the_code_map_forbids() {
    let section = code_map_section();
    let maps = code_maps(&section);
    for krate in crates(&section) {
        let found = breaches(&maps[&krate.package], &module_graph(&krate));
        assert!(
            found.is_empty(),
            "{}: imports the code map forbids: {found:?}",
            krate.package
        );
    }
}

#[test]
fn the_top_level_modules_of_each_crate_import_one_another_without_a_cycle() {
    for krate in crates(&code_map_section()) {
        if let Some(cycle) = cycle(&module_graph(&krate)) {
            panic!("{}: an import cycle: {cycle}", krate.package);
        }
    }
}

#[test]
fn only_the_error_tables_build_a_status() {
    let mut found = Vec::new();
    for krate in crates(&code_map_section()) {
        for file in rust_files(&krate.src()) {
            let relative = file
                .strip_prefix(ROOT)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            if ERROR_TABLES.contains(&relative.as_str()) {
                continue;
            }
            let code = code(&std::fs::read_to_string(&file).unwrap());
            for constructor in status_constructors(&code) {
                found.push(format!("{relative}: {constructor}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "statuses built outside the error tables: {found:?}"
    );
}

#[test]
fn every_metrics_label_is_keyed_by_a_closed_set_never_a_string() {
    let mut found = Vec::new();
    let mut label_sets = 0;
    for krate in crates(&code_map_section()) {
        for file in rust_files(&krate.src()) {
            let code = code(&std::fs::read_to_string(&file).unwrap());
            label_sets += code.matches("EncodeLabelSet)]").count();
            for label in string_labels(&code) {
                let relative = file.strip_prefix(ROOT).unwrap().display().to_string();
                found.push(format!("{relative}: {label}"));
            }
        }
    }
    assert!(
        label_sets > 10,
        "the rule found the label sets ({label_sets})"
    );
    assert!(found.is_empty(), "labels typed as strings: {found:?}");
}

// The rules themselves, on code written to break them.

#[test]
fn a_label_typed_as_a_string_is_found_and_a_closed_set_is_not() {
    let code = "#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]\npub struct UpstreamLabels {\n    pub operation: OperationLabel,\n    pub outcome: &'static str,\n    pub backend: String,\n    pub feed: Arc<str>,\n}";
    assert_eq!(
        string_labels(code),
        [
            "UpstreamLabels.outcome: &'staticstr",
            "UpstreamLabels.backend: String",
            "UpstreamLabels.feed: Arc<str>",
        ]
    );
    let typed =
        "#[derive(EncodeLabelSet)]\nstruct L {\n    result: ReloadResult,\n    feed: FeedLabel,\n}";
    assert!(string_labels(typed).is_empty());
}

fn module(path: &[&str]) -> Vec<String> {
    path.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn the_import_reader_sees_plain_grouped_super_and_reexported_paths() {
    let code = "use crate::{\n    api::{Method, status},\n    limits::Rate,\n};\nfn f() { crate::upstream::Operation::ALL; }";
    let found: Vec<String> = imports(code, &module(&["service"]), &[])
        .into_iter()
        .collect();
    assert_eq!(found, ["api", "limits", "upstream"]);

    // From `s3/xml.rs`, one `super::` is `s3` itself; two reach the crate root.
    let nested = "use super::error::S3Error;\nuse super::super::{engine::Emulator, faults};";
    let found: Vec<String> = imports(nested, &module(&["s3", "xml"]), &[])
        .into_iter()
        .collect();
    assert_eq!(found, ["engine", "faults"]);
    // From `engine.rs`, one `super::` is the root; inside its inline tests module it is not.
    let top = "use super::{random, store::Objects};\nmod tests {\n    use super::*;\n}";
    let found: Vec<String> = imports(top, &module(&["engine"]), &[])
        .into_iter()
        .collect();
    assert_eq!(found, ["random", "store"]);

    let reexported = "use codepipeline_emulator::faults::FaultPlan;\nuse codepipeline_job_port::{domain::JobId, upstream::Operation};\nuse my_codepipeline_emulator::X;";
    let found: Vec<String> = imports(reexported, &module(&["config"]), &GATEWAY_REEXPORTS)
        .into_iter()
        .collect();
    assert_eq!(found, ["domain", "emulator", "upstream"]);
}

#[test]
fn a_forbidden_import_is_a_breach_through_any_path() {
    let map = CodeMap::from([(
        "upstream".to_owned(),
        BTreeSet::from(["aws".to_owned(), "emulator".to_owned()]),
    )]);
    for code in [
        "use crate::aws::AwsUpstream;",
        "use crate::{domain::JobId, aws};",
        "fn f() { super::aws::x(); }",
        "use codepipeline_emulator::Emulator;",
    ] {
        let graph = Graph::from([(
            "upstream".to_owned(),
            imports(code, &module(&["upstream"]), &GATEWAY_REEXPORTS),
        )]);
        assert_eq!(breaches(&map, &graph).len(), 1, "{code}");
    }
    let clean = Graph::from([(
        "upstream".to_owned(),
        imports("use crate::domain::JobId;", &module(&["upstream"]), &[]),
    )]);
    assert!(breaches(&map, &clean).is_empty());
}

#[test]
fn an_import_cycle_is_found_and_a_chain_is_not_one() {
    let edge = |from: &str, to: &[&str]| {
        (
            from.to_owned(),
            to.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>(),
        )
    };
    let cyclic = Graph::from([edge("engine", &["store"]), edge("store", &["engine"])]);
    assert_eq!(cycle(&cyclic).as_deref(), Some("engine -> store -> engine"));
    let chain = Graph::from([
        edge("front", &["engine", "store"]),
        edge("engine", &["store", "domain"]),
        edge("store", &[]),
    ]);
    assert_eq!(cycle(&chain), None);
}

#[test]
fn every_status_constructor_is_found_and_nothing_else() {
    let code = "let a = Status::ok(\"\");\nlet b = tonic::Status::data_loss(m);\nlet c = Status::with_error_details(c, m, d);\nlet d = Status::already_exists(m);";
    assert_eq!(
        status_constructors(code),
        [
            "Status::ok(",
            "Status::data_loss(",
            "Status::with_error_details(",
            "Status::already_exists(",
        ]
    );
    assert_eq!(
        status_constructors("Status::from_error(e)"),
        ["Status::from_error("]
    );
    let innocent = "JobStatus::InProgress; ServingStatus::Serving; Status::from(refusal); fn f() -> Result<(), Status> {}";
    assert!(status_constructors(innocent).is_empty());
    assert!(status_constructors(&self::code("// Status::internal(\"x\")")).is_empty());
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
