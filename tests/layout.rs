//! The source tree's shape, checked from outside the code: the modules of `src/` import each
//! other without a circle, no import runs back up the flow that `src/lib.rs` declares, and no
//! file holds more than ~600 lines of non-test code. A contributor who adds an import against the
//! flow (say, `reply` reaching into `dispatch`) or lets one file grow into several rooms learns it
//! here, with the offending files named.
//!
//! Imports are read from the text of each file (`crate::…`, `super::…`, and paths through a
//! module's own children), leaving out test modules (`tests.rs` files and a trailing
//! `#[cfg(test)] mod tests`), which may use anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Most lines of non-test code (comments and docs included) one file of `src/` may hold.
const MAX_CODE_LINES: usize = 600;

/// One file of `src/` as a module: its path (`["dispatch", "queue"]`) and non-test text.
struct Module {
    file: PathBuf,
    path: Vec<String>,
    code: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text of `source` before its trailing test module, comments removed.
fn non_test_code(source: &str) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let end = (0..lines.len())
        .find(|&i| {
            lines[i].trim() == "#[cfg(test)]"
                && lines
                    .get(i + 1)
                    .is_some_and(|next| next.trim_start().starts_with("mod tests"))
        })
        .unwrap_or(lines.len());
    lines[..end].join("\n")
}

fn without_comments(code: &str) -> String {
    code.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every library module of `src/` (the binary's `main.rs` and test modules aside).
fn modules() -> Vec<Module> {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let mut path: Vec<String> = rel
            .with_extension("")
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        match path.last().map(String::as_str) {
            Some("main") if path.len() == 1 => continue,
            Some("tests") => continue,
            Some("mod") | Some("lib") => {
                path.pop();
            }
            _ => {}
        }
        let source = std::fs::read_to_string(&file).unwrap();
        out.push(Module {
            file: rel.to_path_buf(),
            path,
            code: non_test_code(&source),
        });
    }
    out
}

/// The first segments of every path in `text` that starts right after `prefix` (`crate::` or
/// `super::`), groups (`crate::{a, b::c}`) expanded one level.
fn paths_after(text: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        out.extend(expand(rest));
    }
    out
}

/// Paths at the start of `text`: `a::b::C` → [[a, b, C]]; `{a, b::c}` → [[a], [b, c]].
fn expand(text: &str) -> Vec<Vec<String>> {
    if let Some(inner) = text.strip_prefix('{') {
        let mut depth = 0;
        let end = inner
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => return true,
                    '}' => depth -= 1,
                    _ => {}
                }
                false
            })
            .map_or(inner.len(), |(i, _)| i);
        return inner[..end]
            .split(',')
            .map(|part| segments(part.trim()))
            .filter(|p| !p.is_empty())
            .collect();
    }
    vec![segments(text)]
}

fn segments(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        out.push(rest[..end].to_string());
        match rest[end..].strip_prefix("::") {
            Some(next) if !next.starts_with('{') => rest = next,
            _ => break,
        }
    }
    out
}

/// The longest known module that `path` (absolute, from the crate root) names.
fn resolve(known: &BTreeSet<Vec<String>>, path: &[String]) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| known.contains(p))
}

/// File-level import edges: module → the modules it imports from.
fn edges(modules: &[Module]) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let known: BTreeSet<Vec<String>> = modules.iter().map(|m| m.path.clone()).collect();
    let mut graph = BTreeMap::new();
    for m in modules {
        let code = without_comments(&m.code);
        let mut targets = BTreeSet::new();
        let mut add = |abs: Vec<String>| {
            if let Some(t) = resolve(&known, &abs) {
                if t != m.path {
                    targets.insert(t);
                }
            }
        };
        for p in paths_after(&code, "crate::") {
            add(p);
        }
        // `super::` from a folder's mod.rs names the folder's parent; from any other file, its
        // folder.
        let is_folder = m.file.ends_with("mod.rs") || m.file.ends_with("lib.rs");
        let parent: Vec<String> = if is_folder {
            m.path[..m.path.len().saturating_sub(1)].to_vec()
        } else {
            m.path[..m.path.len() - 1].to_vec()
        };
        for p in paths_after(&code, "super::") {
            add(parent.iter().cloned().chain(p).collect());
        }
        // Paths through the module's own children (`use queue::X`, `pub use model::{…}`).
        if is_folder {
            for child in known
                .iter()
                .filter(|k| k.len() == m.path.len() + 1 && k.starts_with(&m.path))
            {
                let name = child.last().unwrap();
                for prefix in [format!("use {name}::"), format!("self::{name}::")] {
                    if code.contains(&prefix) {
                        targets.insert(child.clone());
                    }
                }
            }
        }
        graph.insert(m.path.clone(), targets);
    }
    graph
}

/// A circle in `graph`, if there is one, as the list of nodes along it.
fn find_cycle<N: Ord + Clone>(graph: &BTreeMap<N, BTreeSet<N>>) -> Option<Vec<N>> {
    fn visit<N: Ord + Clone>(
        n: &N,
        graph: &BTreeMap<N, BTreeSet<N>>,
        state: &mut BTreeMap<N, u8>,
        stack: &mut Vec<N>,
    ) -> Option<Vec<N>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let from = stack.iter().position(|s| s == n).unwrap_or(0);
                let mut cycle = stack[from..].to_vec();
                cycle.push(n.clone());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for next in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, graph, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

fn show(path: &[String]) -> String {
    if path.is_empty() {
        "crate".into()
    } else {
        path.join("::")
    }
}

#[test]
fn no_module_of_src_imports_in_a_circle() {
    let graph = edges(&modules());
    assert!(
        graph.values().map(BTreeSet::len).sum::<usize>() > 20,
        "the import reader found almost no imports: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        let shown: Vec<String> = cycle.iter().map(|p| show(p)).collect();
        panic!("import circle between files: {}", shown.join(" → "));
    }
    // The same, with each folder taken as one module.
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in &graph {
        let Some(f) = from.first() else { continue };
        let entry = top.entry(f.clone()).or_default();
        for t in tos.iter().filter_map(|t| t.first()).filter(|t| *t != f) {
            entry.insert(t.clone());
        }
    }
    if let Some(cycle) = find_cycle(&top) {
        panic!("import circle between modules: {}", cycle.join(" → "));
    }
}

/// `src/lib.rs` lists the modules from the top of the flow down; a module may import only those
/// listed after it.
#[test]
fn imports_follow_the_flow_declared_in_lib_rs() {
    let lib = std::fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    let order: Vec<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_string())
        .collect();
    assert!(order.len() > 10, "lib.rs declares {order:?}");
    let rank = |m: &str| order.iter().position(|o| o == m);
    let mut against = Vec::new();
    for (from, tos) in edges(&modules()) {
        let Some(f) = from.first() else { continue };
        let fr = rank(f).unwrap_or_else(|| panic!("{f} is not declared in lib.rs"));
        for to in tos {
            let Some(t) = to.first() else { continue };
            if t != f && rank(t).is_none_or(|tr| tr < fr) {
                against.push(format!("{} imports {}", show(&from), show(&to)));
            }
        }
    }
    assert!(
        against.is_empty(),
        "imports against the order of lib.rs ({}):\n{}",
        order.join(" > "),
        against.join("\n")
    );
}

#[test]
fn no_file_of_src_holds_more_than_600_lines_of_non_test_code() {
    let mut over = Vec::new();
    for m in modules() {
        let n = m.code.lines().count();
        if n > MAX_CODE_LINES {
            over.push(format!("{}: {n} lines", m.file.display()));
        }
    }
    assert!(over.is_empty(), "split these files:\n{}", over.join("\n"));
}

#[test]
fn the_import_reader_sees_what_rust_sees() {
    // The reader itself, on shapes the tree uses; a reader that misses imports would let
    // circles pass.
    let text = "use crate::net::guard::{BoxError, Resolver};\nuse crate::{go, stats::Stats};\nlet x = crate::mattermost::model::is_valid_id(id);\nuse super::build::X; notcrate::y";
    let mut found = paths_after(text, "crate::");
    found.sort();
    assert_eq!(
        found,
        vec![
            vec!["go".to_string()],
            vec!["mattermost".into(), "model".into(), "is_valid_id".into()],
            vec!["net".into(), "guard".into()],
            vec!["stats".into(), "Stats".into()],
        ]
    );
    assert_eq!(
        paths_after(text, "super::"),
        vec![vec!["build".to_string(), "X".into()]]
    );
    let mut g: BTreeMap<u8, BTreeSet<u8>> = BTreeMap::new();
    g.insert(1, [2].into());
    g.insert(2, [3].into());
    g.insert(3, BTreeSet::new());
    assert_eq!(find_cycle(&g), None);
    g.insert(3, [1].into());
    assert_eq!(find_cycle(&g), Some(vec![1, 2, 3, 1]));
}
