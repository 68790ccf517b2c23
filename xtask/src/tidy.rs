//! Source hygiene, checked by `cargo test`: every Rust file says what it is for, and no test may
//! expect a panic (a should-panic test passes for the wrong panic too).

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
}
