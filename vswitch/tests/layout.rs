//! The house rules of the source tree, checked on the tree itself (vswitch, vhost-backends,
//! nat, vlan): every module file opens with a doc comment; no file is over 800 lines
//! and no function over 150 (tests aside); no file imports one that imports it back (a
//! directory's `mod.rs` may re-export its children: that is its public face, not a use);
//! the switch core forbids `unsafe`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 800;
const MAX_FN_LINES: usize = 150;

/// A crate's module files: module path (`fabric::forward`) -> file.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            out.insert(parts, p);
        }
    }
    out
}

/// The file's text without its `#[cfg(test)]` part, `//` comments and attributes.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level `use` statements (for a `mod.rs`, `lib.rs` or `main.rs`, without its `pub use`
/// re-exports), flattened into paths.
fn use_paths(code: &str, is_root: bool) -> Vec<String> {
    let mut out = Vec::new();
    for stmt in code.split(';') {
        let s = stmt.trim();
        let body = if let Some(b) = s.strip_prefix("use ") {
            b
        } else if !is_root && s.starts_with("pub") && s.contains(" use ") {
            s.split_once(" use ").map(|x| x.1).unwrap_or("")
        } else {
            continue;
        };
        let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        match body.split_once("::{") {
            Some((pre, items)) => {
                let items = items.strip_suffix('}').unwrap_or(items);
                let mut depth = 0;
                let mut cur = String::new();
                for ch in items.chars().chain(std::iter::once(',')) {
                    match ch {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            let item = cur.split("::{").next().unwrap_or("").to_string();
                            out.push(if item == "self" {
                                pre.to_string()
                            } else {
                                format!("{pre}::{item}")
                            });
                            cur.clear();
                            continue;
                        }
                        _ => {}
                    }
                    cur.push(ch);
                }
            }
            None => out.push(body),
        }
    }
    out
}

/// The module a `use` path names (the longest module prefix), if it is in this crate.
fn resolve(
    cur: &[String],
    path: &str,
    mods: &BTreeMap<Vec<String>, PathBuf>,
) -> Option<Vec<String>> {
    let mut parts: Vec<&str> = path.split("::").collect();
    let mut base: Vec<String> = match parts.first()? {
        &"crate" => {
            parts.remove(0);
            vec![]
        }
        &"super" => {
            let mut b = cur.to_vec();
            while parts.first() == Some(&"super") {
                parts.remove(0);
                b.pop();
            }
            b
        }
        &"self" => {
            parts.remove(0);
            cur.to_vec()
        }
        first => {
            let mut child = cur.to_vec();
            child.push(first.to_string());
            if !mods.contains_key(&child) {
                return None;
            }
            cur.to_vec()
        }
    };
    let mut best = None;
    if mods.contains_key(&base) {
        best = Some(base.clone());
    }
    for p in parts {
        base.push(p.to_string());
        if mods.contains_key(&base) {
            best = Some(base.clone());
        }
    }
    best
}

fn crate_srcs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    ["vswitch", "vhost-backends", "nat", "vlan"]
        .iter()
        .map(|c| root.join(c).join("src"))
        .collect()
}

#[test]
fn no_file_imports_one_that_imports_it_back() {
    let mut cycles = Vec::new();
    for src in crate_srcs() {
        let mods = modules(&src);
        let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for (m, file) in &mods {
            let is_root = file
                .file_name()
                .is_some_and(|n| n == "mod.rs" || n == "lib.rs" || n == "main.rs");
            let text = code(&std::fs::read_to_string(file).unwrap());
            for p in use_paths(&text, is_root) {
                if let Some(t) = resolve(m, &p, &mods).filter(|t| t != m) {
                    edges.entry(m.clone()).or_default().insert(t);
                }
            }
        }
        for (a, targets) in &edges {
            for b in targets {
                if a < b && edges.get(b).is_some_and(|t| t.contains(a)) {
                    cycles.push(format!(
                        "{}: {} <-> {}",
                        src.display(),
                        a.join("::"),
                        b.join("::")
                    ));
                }
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn files_and_functions_stay_small_and_say_what_they_own() {
    let mut problems = Vec::new();
    for src in crate_srcs() {
        for file in modules(&src).values() {
            let text = std::fs::read_to_string(file).unwrap();
            let name = file.display();
            if !text.starts_with("//!") {
                problems.push(format!("{name}: no module doc comment"));
            }
            let body = text.split("#[cfg(test)]").next().unwrap_or("");
            let lines: Vec<&str> = body.lines().collect();
            if lines.len() > MAX_FILE_LINES {
                problems.push(format!("{name}: {} lines of code", lines.len()));
            }
            for (i, l) in lines.iter().enumerate() {
                let t = l.trim_start();
                let is_fn = [
                    "fn ",
                    "pub fn ",
                    "pub(super) fn ",
                    "pub(crate) fn ",
                    "async fn ",
                ]
                .iter()
                .any(|p| t.starts_with(p));
                let one_line = t.ends_with('}') && t.matches('{').count() == t.matches('}').count();
                if !is_fn || t.ends_with(';') || one_line {
                    continue;
                }
                // The function ends at the first line back at its own indentation that closes it.
                let indent = l.len() - t.len();
                let end = lines[i + 1..]
                    .iter()
                    .position(|m| {
                        m.len() > indent
                            && m[indent..].starts_with('}')
                            && m[..indent].trim().is_empty()
                    })
                    .map_or(0, |n| n + 2);
                if end > MAX_FN_LINES {
                    problems.push(format!("{name}:{}: a function of {end} lines", i + 1));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_switch_core_forbids_unsafe() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core/mod.rs");
    let text = std::fs::read_to_string(core).unwrap();
    assert!(text.contains("#![forbid(unsafe_code)]"));
}
