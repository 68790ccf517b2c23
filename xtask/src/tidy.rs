//! Source hygiene, checked by `cargo test`: every Rust file says what it is for, no test may
//! expect a panic (a should-panic test passes for the wrong panic too), and nothing tracked refers
//! to a path outside the repository (a clone must build, test and benchmark on its own).

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy();
            if path.is_dir() && name != "target" && !name.starts_with('.') {
                rust_files(&path, found);
            } else if name.ends_with(".rs") {
                found.push(path);
            }
        }
    }

    fn sources() -> Vec<(PathBuf, String)> {
        let root = crate::project_root();
        let mut files = Vec::new();
        for dir in ["analyzer/src", "tracer-common/src", "tracer-ebpf/src", "xtask/src", "tests", "fuzz/fuzz_targets"] {
            rust_files(&root.join(dir), &mut files);
        }
        files
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).unwrap();
                (path, text)
            })
            .collect()
    }

    #[test]
    fn every_module_has_a_doc_comment() {
        // Test modules declared from tests/tests.rs are documented at their `mod` line instead.
        let undocumented: Vec<String> = sources()
            .into_iter()
            .filter(|(path, text)| {
                let generated = text.starts_with("// @generated");
                let test_module =
                    path.parent().is_some_and(|dir| dir.ends_with("tests")) && !path.ends_with("tests.rs");
                !generated && !test_module && !text.trim_start().starts_with("//!")
            })
            .map(|(path, _)| path.display().to_string())
            .collect();
        assert!(undocumented.is_empty(), "files without a `//!` module doc: {undocumented:#?}");
    }

    #[test]
    fn no_should_panic_and_no_trailing_whitespace() {
        for (path, text) in sources() {
            assert!(!text.contains(&["#[should", "_panic"].concat()), "{}: use an explicit assertion", path.display());
            for (index, line) in text.lines().enumerate() {
                assert_eq!(line, line.trim_end(), "{}:{}: trailing whitespace", path.display(), index + 1);
            }
        }
    }

    /// The tracked files that are text, by path from the root.
    fn tracked_texts() -> Vec<(PathBuf, String)> {
        let root = crate::project_root();
        let out = std::process::Command::new("git").arg("-C").arg(&root).args(["ls-files", "-z"]).output().unwrap();
        assert!(out.status.success(), "git ls-files failed in {}: this check reads the tracked files", root.display());
        out.stdout
            .split(|&byte| byte == 0)
            .filter(|name| !name.is_empty())
            .filter_map(|name| {
                let path = PathBuf::from(String::from_utf8_lossy(name).into_owned());
                let text = String::from_utf8(std::fs::read(root.join(&path)).ok()?).ok()?;
                Some((path, text))
            })
            .collect()
    }

    /// How many levels the relative path at the start of `text` climbs above where it starts, read
    /// lexically up to the first character that cannot be part of a path.
    fn climbs(text: &str) -> usize {
        let end = text.find(|c: char| !(c.is_alphanumeric() || "._-+/".contains(c))).unwrap_or(text.len());
        let (mut level, mut lowest) = (0_i64, 0_i64);
        for part in text[..end].split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    level -= 1;
                    lowest = lowest.min(level);
                }
                _ => level += 1,
            }
        }
        lowest.unsigned_abs() as usize
    }

    /// The string literals a statement joins onto a path: `.join("…")` and `.join(format!("…"))`.
    fn joined_literals(statement: &str) -> impl Iterator<Item = &str> {
        statement.match_indices(".join(").filter_map(|(index, call)| {
            let argument = &statement[index + call.len()..];
            argument.strip_prefix("format!(").unwrap_or(argument).strip_prefix('"')
        })
    }

    /// Statements of a Rust file that join `CARGO_MANIFEST_DIR` or `project_root()`, or a variable
    /// bound to either, with a path that climbs out of the repository. Every manifest sits at most
    /// one level below the root (checked by the caller), so the manifest directory may climb once.
    fn rooted_climbs(text: &str) -> Vec<String> {
        // Variables bound to a directory of the repository, with its depth below the root.
        let mut bases: Vec<(String, usize)> = Vec::new();
        let mut found = Vec::new();
        for statement in text.split(';') {
            let depth = if statement.contains("CARGO_MANIFEST_DIR") {
                Some(1)
            } else if statement.contains("project_root()") {
                Some(0)
            } else {
                bases.iter().find(|(name, _)| statement.contains(&format!("{name}.join("))).map(|&(_, depth)| depth)
            };
            let bound = statement.split_once("let ").map(|(_, rest)| {
                let rest = rest.strip_prefix("mut ").unwrap_or(rest);
                rest[..rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len())].to_owned()
            });
            if let Some(name) = &bound {
                bases.retain(|(base, _)| base != name);
            }
            let Some(depth) = depth else { continue };
            let climb: usize = joined_literals(statement).map(climbs).sum();
            if climb > depth {
                found.push(format!("`{}` climbs {climb} levels from {depth} below the root", statement.trim()));
            } else if let Some(name) = bound {
                bases.push((name, depth - climb));
            }
        }
        found
    }

    /// The check itself, on code it must flag and code it must let pass. `MANIFEST` and `ROOT` stand
    /// for the real markers, which this file must not contain next to a climbing path.
    #[test]
    fn rooted_climbs_flags_paths_out_of_the_repository() {
        let manifest = ["env!(\"CARGO_", "MANIFEST_DIR\")"].concat();
        let root = ["project_", "root()"].concat();
        for (code, leaves) in [
            (r#"Path::new(MANIFEST).join("../tests/data/scap").join(format!("{name}.scap"));"#, false),
            (r#"Path::new(MANIFEST).join(format!("../../elsewhere/{name}.scap"));"#, true),
            (r#"let root = Path::new(MANIFEST).join(".."); root.join("fuzz/seeds");"#, false),
            (r#"let root = Path::new(MANIFEST).join(".."); files_in(&root.join("../elsewhere"));"#, true),
            (r#"let root = ROOT; let other = tempdir(); other.join("../x");"#, false),
            (r#"ROOT.join("target/bench/../../..");"#, true),
            (r#"symlink("../../../../etc/passwd", root.join("bin/climb"));"#, false),
        ] {
            let code = code.replace("MANIFEST", &manifest).replace("ROOT", &root);
            assert_eq!(!rooted_climbs(&code).is_empty(), leaves, "{code}");
        }
    }

    #[test]
    fn nothing_refers_outside_the_repository() {
        let files = tracked_texts();
        let deep: Vec<_> =
            files.iter().filter(|(path, _)| path.ends_with("Cargo.toml") && path.components().count() > 2).collect();
        assert!(deep.is_empty(), "manifests deeper than one level: let `rooted_climbs` know their depth: {deep:?}");
        // Spelled in two pieces so this file does not name it.
        let sibling = ["..", "/shared"].concat();
        let mut found = Vec::new();
        for (path, text) in &files {
            if text.contains(&sibling) {
                found.push(format!("{}: names `{sibling}`", path.display()));
            }
            let extension = path.extension().and_then(|extension| extension.to_str());
            if extension == Some("rs") {
                found.extend(rooted_climbs(text).into_iter().map(|what| format!("{}: {what}", path.display())));
            }
            // References resolved from the file's own directory.
            let prefixes: &[&str] = match extension {
                Some("rs") => &["#[path = \"", "include_str!(\"", "include_bytes!(\""],
                Some("toml") => &["path = \""],
                Some("md") => &["]("],
                _ => &[],
            };
            let depth = path.components().count() - 1;
            for prefix in prefixes {
                for (index, _) in text.match_indices(prefix) {
                    let reference = &text[index + prefix.len()..];
                    if climbs(reference) > depth {
                        let shown = reference.lines().next().unwrap_or_default();
                        found.push(format!("{}: `{prefix}{shown}` leaves the repository", path.display()));
                    }
                }
            }
        }
        assert!(found.is_empty(), "references outside the repository: {found:#?}");
    }
}
