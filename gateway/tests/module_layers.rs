//! The gateway's layers, checked on its source text (ARCHITECTURE.md,
//! "Layers of the gateway"):
//!
//! - the remittance core (`src/remittance/`) names no transport: no
//!   `remit_proto`, `tonic`, `axum`, `http` or `hyper`, and none of the
//!   adapter modules `crate::node`, `crate::api`, `crate::webhook`,
//!   `crate::config`;
//! - no circle of imports between the top-level modules (test code aside);
//! - no source file outside tests is longer than [`FILE_LINES_MAX`].
//!
//! A plain text scan: comment lines are skipped, and a `#[cfg(test)]`
//! module (inline or in its own `*tests.rs` / `testkit.rs` file) counts as
//! test code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest source file allowed (test files aside).
const FILE_LINES_MAX: usize = 800;
/// Crates the remittance core must not name.
const CORE_FORBIDDEN_CRATES: &[&str] = &["remit_proto", "tonic", "axum", "http", "hyper"];
/// Gateway modules the remittance core must not import.
const CORE_FORBIDDEN_MODULES: &[&str] = &["node", "api", "webhook", "config"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).expect("source directory").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file that is test code as a whole.
fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with("tests.rs") || name == "testkit.rs"
}

/// Code lines with their 1-based numbers.
type Lines = Vec<(usize, String)>;

/// The code lines of `text` (comments dropped), split into non-test and
/// test lines.
fn code_lines(text: &str) -> (Lines, Lines) {
    let (mut code, mut tests) = (Vec::new(), Vec::new());
    let mut test_attr = false;
    let mut depth: Option<i64> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let line = match line.find(" //") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        if line.starts_with("//") || line.is_empty() {
            continue;
        }
        if let Some(d) = depth.as_mut() {
            *d += line.matches('{').count() as i64 - line.matches('}').count() as i64;
            tests.push((i + 1, line.to_owned()));
            if *d <= 0 {
                depth = None;
            }
            continue;
        }
        if line == "#[cfg(test)]" {
            test_attr = true;
            continue;
        }
        if test_attr && (line.starts_with("mod ") || line.contains(" mod ")) {
            test_attr = false;
            tests.push((i + 1, line.to_owned()));
            if line.ends_with('{') {
                depth = Some(1);
            }
            continue;
        }
        test_attr = false;
        code.push((i + 1, line.to_owned()));
    }
    (code, tests)
}

/// Whether `line` names `root::` as a path root (not `a::root::`).
fn names_root(line: &str, root: &str) -> bool {
    let needle = format!("{root}::");
    line.match_indices(&needle).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
    })
}

/// The top-level modules `line` refers to through `crate::` (also in a
/// group, `crate::{a, b::c}`).
fn crate_refs(line: &str) -> Vec<String> {
    let ident = |text: &str| -> String { text.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let mut refs = Vec::new();
    for (at, _) in line.match_indices("crate::") {
        if line[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &line[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start => {
                        refs.push(ident(&group[i..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            refs.push(ident(rest));
        }
    }
    refs.retain(|r| !r.is_empty());
    refs
}

/// The top-level module a file belongs to (`None` for lib.rs and binaries).
fn top_module(path: &Path) -> Option<String> {
    let relative = path.strip_prefix(src()).expect("under src");
    let first = relative.components().next()?.as_os_str().to_str()?.to_owned();
    if first == "lib.rs" || first == "bin" {
        return None;
    }
    Some(first.trim_end_matches(".rs").to_owned())
}

fn modules() -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.iter().filter_map(|p| top_module(p)).collect()
}

#[test]
fn the_remittance_core_names_no_transport_and_no_adapter() {
    let mut files = Vec::new();
    rust_files(&src().join("remittance"), &mut files);
    assert!(files.len() > 10, "the scan found the remittance files");
    let mut found = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("readable");
        let (code, tests) = code_lines(&text);
        for (number, line) in code.iter().chain(&tests) {
            let crates = CORE_FORBIDDEN_CRATES.iter().filter(|name| names_root(line, name));
            let refs = crate_refs(line);
            let modules = CORE_FORBIDDEN_MODULES.iter().filter(|name| refs.iter().any(|r| r == *name));
            for name in crates.chain(modules) {
                found.push(format!("{}:{number}: names {name}: {line}", path.display()));
            }
        }
    }
    assert!(found.is_empty(), "the remittance core reaches outside its layer:\n{}", found.join("\n"));
}

#[test]
fn no_top_level_modules_import_each_other_in_a_circle() {
    let modules = modules();
    for expected in ["api", "node", "remittance", "webhook", "payout", "config", "devnet"] {
        assert!(modules.contains(expected), "module {expected} found");
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    for path in files.iter().filter(|p| !is_test_file(p)) {
        let Some(from) = top_module(path) else { continue };
        let text = std::fs::read_to_string(path).expect("readable");
        let (code, _) = code_lines(&text);
        for (_, line) in code {
            for to in crate_refs(&line) {
                if to != from && modules.contains(&to) {
                    edges.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for module in &modules {
        if let Some(circle) = visit(module, &edges, &mut Vec::new(), &mut done) {
            panic!("modules import each other in a circle: {}\nedges: {edges:#?}", circle.join(" -> "));
        }
    }
    assert!(edges.get("node").is_some_and(|to| to.contains("remittance")), "the scan sees node -> remittance");
}

#[test]
fn no_source_file_outside_tests_is_longer_than_the_limit() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter(|p| !is_test_file(p))
        .filter_map(|path| {
            let lines = std::fs::read_to_string(path).expect("readable").lines().count();
            (lines > FILE_LINES_MAX).then(|| format!("{}: {lines} lines", path.display()))
        })
        .collect();
    assert!(long.is_empty(), "files above {FILE_LINES_MAX} lines:\n{}", long.join("\n"));
}

#[test]
fn the_scan_tells_code_from_comments_and_tests() {
    let text = "//! crate::node docs\nuse crate::api::x; // crate::webhook\n#[cfg(test)]\nmod tests {\n    use crate::config;\n}\nfn f() {}\n";
    let (code, tests) = code_lines(text);
    assert_eq!(code, vec![(2, "use crate::api::x;".to_owned()), (7, "fn f() {}".to_owned())]);
    assert_eq!(tests.len(), 3);
    assert!(names_root("use tonic::Status;", "tonic"));
    assert!(names_root("#[tonic::async_trait]", "tonic"));
    assert!(!names_root("use crate::payout::http::X;", "http"));
    assert!(!names_root("let url = \"http://x\";", "http"));
    assert_eq!(crate_refs("use crate::{api::auth, node::{a, b}, webhook};"), vec!["api", "node", "webhook"]);
    assert_eq!(crate_refs("x(crate::payout::http::Y, super::crate_like::z)"), vec!["payout"]);
}
