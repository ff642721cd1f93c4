//! A test of the library's shape: no top-level module imports one that imports it back.
//!
//! Reads the crate's own sources, maps every `crate::x` path in non-test code to an edge
//! "this module's folder uses `x`", and fails on any cycle, naming it. Test code (modules
//! behind `#[cfg(test)]`) may reach anywhere. A module's folder is its first path
//! component under `src/` (`verify/inspect.rs` is `verify`; `clock.rs` is `clock`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module -> the top-level modules its non-test code names.
fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    collect(src, &mut files);
    let test_only = test_only_files(&files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        let top = top_module(rel);
        // `bin/` is the binary, a client of the library (it may use anything public).
        if top == "bin" || top == "lib" || test_only.contains(&file) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("a source file");
        let code = without_test_modules(&text);
        let uses = graph.entry(top.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != top {
                uses.insert(name);
            }
        }
    }
    graph
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source dir") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn top_module(rel: &Path) -> String {
    let first = rel.components().next().expect("a path");
    let first = first.as_os_str().to_string_lossy();
    first.strip_suffix(".rs").unwrap_or(&first).to_string()
}

/// Files that are whole test modules: declared `#[cfg(test)] mod name;` by their parent.
fn test_only_files(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(file).expect("a source file");
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for pair in lines.windows(2) {
            let name = pair[1]
                .strip_prefix("mod ")
                .or_else(|| pair[1].strip_prefix("pub mod "))
                .or_else(|| pair[1].strip_prefix("pub(crate) mod "))
                .and_then(|r| r.strip_suffix(';'));
            if let (true, Some(name)) = (pair[0].starts_with("#[cfg(test)]"), name) {
                // `dir/mod.rs` and `dir.rs` both declare children inside `dir/`.
                let base = if file
                    .file_name()
                    .is_some_and(|n| n == "mod.rs" || n == "lib.rs")
                {
                    file.parent().expect("a dir").to_path_buf()
                } else {
                    file.with_extension("")
                };
                out.insert(base.join(format!("{name}.rs")));
                out.insert(base.join(name).join("mod.rs"));
            }
        }
    }
    out
}

/// The text with every inline `#[cfg(test)] mod ... { ... }` block removed.
fn without_test_modules(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let next_is_mod = lines
            .peek()
            .is_some_and(|l| l.trim_start().starts_with("mod ") && l.trim_end().ends_with('{'));
        if line.trim() == "#[cfg(test)]" && next_is_mod {
            // Skip to the closing brace at the same indentation as the `mod` line.
            let open = lines.next().expect("peeked");
            let indent = open.len() - open.trim_start().len();
            for l in lines.by_ref() {
                if l.len() - l.trim_start().len() == indent && l.trim() == "}" {
                    break;
                }
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Every cycle's modules (strongly connected components of more than one module).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reaches = |from: &str, to: &str| -> bool {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(m) = stack.pop() {
            if !seen.insert(m.clone()) {
                continue;
            }
            for next in graph.get(&m).into_iter().flatten() {
                if next == to {
                    return true;
                }
                stack.push(next.clone());
            }
        }
        false
    };
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut placed = BTreeSet::new();
    for m in graph.keys() {
        if placed.contains(m) {
            continue;
        }
        let component: Vec<String> = graph
            .keys()
            .filter(|o| *o == m || (reaches(m, o) && reaches(o, m)))
            .cloned()
            .collect();
        if component.len() > 1 {
            placed.extend(component.iter().cloned());
            out.push(component);
        }
    }
    out
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = import_graph(&src);
    assert!(graph.contains_key("verify") && graph.contains_key("sensor"));
    let found = cycles(&graph);
    let described: Vec<String> = found
        .iter()
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .flat_map(|m| {
                    graph[m]
                        .iter()
                        .filter(|t| c.contains(t))
                        .map(move |t| format!("{m} -> {t}"))
                })
                .collect();
            edges.join(", ")
        })
        .collect();
    assert!(found.is_empty(), "import cycles: {}", described.join("; "));
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    g.entry("d".into()).or_default().insert("a".into());
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
    let code = "use x;\n#[cfg(test)]\nmod tests {\n    use crate::y;\n}\nuse crate::z;\n";
    let kept = without_test_modules(code);
    assert!(
        !kept.contains("crate::y") && kept.contains("crate::z"),
        "{kept}"
    );
}
