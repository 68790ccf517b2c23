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

    /// The tracked files, by path from the root.
    fn tracked_paths() -> Vec<PathBuf> {
        let root = crate::project_root();
        let out = std::process::Command::new("git").arg("-C").arg(&root).args(["ls-files", "-z"]).output().unwrap();
        assert!(out.status.success(), "git ls-files failed in {}: this check reads the tracked files", root.display());
        out.stdout
            .split(|&byte| byte == 0)
            .filter(|name| !name.is_empty())
            .map(|name| PathBuf::from(String::from_utf8_lossy(name).into_owned()))
            .collect()
    }

    /// The tracked files that are text, by path from the root.
    fn tracked_texts() -> Vec<(PathBuf, String)> {
        let root = crate::project_root();
        tracked_paths()
            .into_iter()
            .filter_map(|path| {
                let text = String::from_utf8(std::fs::read(root.join(&path)).ok()?).ok()?;
                Some((path, text))
            })
            .collect()
    }

    /// A merge tool's or `patch`'s leftovers (`.orig`, `.rej`) are not part of the project: tracked, they are stale
    /// copies of a document that readers (and searches) take for the real one.
    #[test]
    fn no_merge_or_patch_leftovers_are_tracked() {
        const LEFTOVERS: [&str; 2] = ["orig", "rej"];
        let leftovers: Vec<PathBuf> = tracked_paths()
            .into_iter()
            .filter(|path| path.extension().is_some_and(|end| LEFTOVERS.iter().any(|leftover| end == *leftover)))
            .collect();
        assert!(leftovers.is_empty(), "merge or patch leftovers are tracked: {leftovers:?}");
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

/// No cycle between files: each file's `use` declarations and `crate::`/`super::`/`self::` paths,
/// resolved through the crate's module tree (and through `pub use` re-exports) to the files that
/// define what they name, form a graph without cycles, crate by crate. A cycle means two files
/// share a type neither owns; it belongs in one of them, or in a third.
#[cfg(test)]
mod import_cycles {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// The crate roots; every other file is reached from one by its `mod` declarations.
    const CRATE_ROOTS: [&str; 6] = [
        "analyzer/src/lib.rs",
        "analyzer/src/main.rs",
        "tracer-common/src/lib.rs",
        "tracer-ebpf/src/main.rs",
        "xtask/src/main.rs",
        "tests/tests.rs",
    ];

    #[derive(Clone, Debug, PartialEq)]
    enum Token {
        Ident(String),
        Punct(char),
    }

    /// Identifiers and punctuation, without comments, strings, characters or lifetimes.
    fn tokens(text: &str) -> Vec<Token> {
        let chars: Vec<char> = text.chars().collect();
        let mut found = Vec::new();
        let mut at = 0;
        while at < chars.len() {
            let c = chars[at];
            let next = chars.get(at + 1).copied();
            if c == '/' && next == Some('/') {
                while at < chars.len() && chars[at] != '\n' {
                    at += 1;
                }
            } else if c == '/' && next == Some('*') {
                let mut depth = 0;
                while at < chars.len() {
                    if chars[at] == '/' && chars.get(at + 1) == Some(&'*') {
                        depth += 1;
                        at += 2;
                    } else if chars[at] == '*' && chars.get(at + 1) == Some(&'/') {
                        depth -= 1;
                        at += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        at += 1;
                    }
                }
            } else if c == 'r' && matches!(next, Some('"' | '#')) && raw_string_end(&chars, at).is_some() {
                at = raw_string_end(&chars, at).unwrap_or(chars.len());
            } else if c == 'b' && next == Some('"') {
                at = string_end(&chars, at + 1);
            } else if c == '"' {
                at = string_end(&chars, at);
            } else if c == '\'' {
                // A character literal ('x', '\n', '\u{..}') or a lifetime ('a), which is skipped too.
                if next == Some('\\') {
                    at += 3;
                    while at < chars.len() && chars[at] != '\'' {
                        at += 1;
                    }
                    at += 1;
                } else if chars.get(at + 2) == Some(&'\'') {
                    at += 3;
                } else {
                    at += 1;
                    while at < chars.len() && (chars[at].is_alphanumeric() || chars[at] == '_') {
                        at += 1;
                    }
                }
            } else if c.is_alphabetic() || c == '_' {
                let start = at;
                while at < chars.len() && (chars[at].is_alphanumeric() || chars[at] == '_') {
                    at += 1;
                }
                found.push(Token::Ident(chars[start..at].iter().collect()));
            } else if c.is_ascii_digit() {
                while at < chars.len() && (chars[at].is_alphanumeric() || chars[at] == '_') {
                    at += 1;
                }
            } else {
                if !c.is_whitespace() {
                    found.push(Token::Punct(c));
                }
                at += 1;
            }
        }
        found
    }

    /// Past the closing quote of the string opening at `at`.
    fn string_end(chars: &[char], at: usize) -> usize {
        let mut at = at + 1;
        while at < chars.len() && chars[at] != '"' {
            at += if chars[at] == '\\' { 2 } else { 1 };
        }
        at + 1
    }

    /// Past the end of the raw string `r#"…"#` opening at `at`, if one does.
    fn raw_string_end(chars: &[char], at: usize) -> Option<usize> {
        let hashes = chars[at + 1..].iter().take_while(|&&c| c == '#').count();
        if chars.get(at + 1 + hashes) != Some(&'"') {
            return None;
        }
        let mut end = at + 2 + hashes;
        while end < chars.len() {
            if chars[end] == '"' && chars[end + 1..].iter().take(hashes).filter(|&&c| c == '#').count() == hashes {
                return Some(end + 1 + hashes);
            }
            end += 1;
        }
        Some(chars.len())
    }

    fn is(token: Option<&Token>, punct: char) -> bool {
        token == Some(&Token::Punct(punct))
    }

    fn ident(token: Option<&Token>) -> Option<&str> {
        match token {
            Some(Token::Ident(name)) => Some(name),
            _ => None,
        }
    }

    /// One path a file names: the inline module it is written in (relative to the file's module),
    /// its segments (a trailing `*` for a glob), and, for `pub use`, the name it re-exports.
    #[derive(Debug)]
    struct Named {
        inline: Vec<String>,
        segments: Vec<String>,
        reexport: Option<String>,
    }

    /// Expands the use tree at `tokens[*at..]` into paths under `prefix`.
    fn use_tree(tokens: &[Token], at: &mut usize, prefix: &[String], paths: &mut Vec<(Vec<String>, String)>) {
        let mut path = prefix.to_vec();
        loop {
            match tokens.get(*at) {
                Some(Token::Ident(name)) => {
                    path.push(name.clone());
                    *at += 1;
                }
                Some(Token::Punct('*')) => {
                    *at += 1;
                    path.push("*".to_owned());
                    paths.push((path, "*".to_owned()));
                    return;
                }
                Some(Token::Punct('{')) => {
                    *at += 1;
                    while !is(tokens.get(*at), '}') && *at < tokens.len() {
                        use_tree(tokens, at, &path, paths);
                        if is(tokens.get(*at), ',') {
                            *at += 1;
                        }
                    }
                    *at += 1;
                    return;
                }
                _ => return,
            }
            if is(tokens.get(*at), ':') && is(tokens.get(*at + 1), ':') {
                *at += 2;
                continue;
            }
            if path.last().is_some_and(|last| last == "self") {
                path.pop();
            }
            let mut name = path.last().cloned().unwrap_or_default();
            if ident(tokens.get(*at)) == Some("as") {
                name = ident(tokens.get(*at + 1)).unwrap_or_default().to_owned();
                *at += 2;
            }
            paths.push((path, name));
            return;
        }
    }

    /// The `mod NAME;` declarations of a file and every path it names.
    fn scan(text: &str) -> (Vec<String>, Vec<Named>) {
        let tokens = tokens(text);
        let mut children = Vec::new();
        let mut named = Vec::new();
        // Inline modules (`mod tests { … }`) as (name, brace depth inside them).
        let mut inline: Vec<(String, usize)> = Vec::new();
        let mut depth = 0;
        let mut at = 0;
        while at < tokens.len() {
            match &tokens[at] {
                Token::Punct('{') => depth += 1,
                Token::Punct('}') => {
                    if inline.last().is_some_and(|(_, inside)| *inside == depth) {
                        inline.pop();
                    }
                    depth -= 1;
                }
                Token::Ident(word) if word == "mod" => {
                    if let Some(name) = ident(tokens.get(at + 1)) {
                        if is(tokens.get(at + 2), ';') {
                            children.push(name.to_owned());
                        } else if is(tokens.get(at + 2), '{') {
                            inline.push((name.to_owned(), depth + 1));
                        }
                    }
                }
                Token::Ident(word) if word == "use" => {
                    let public = at >= 1 && ident(tokens.get(at - 1)) == Some("pub")
                        || at >= 4 && ident(tokens.get(at - 4)) == Some("pub") && is(tokens.get(at - 1), ')');
                    let mut paths = Vec::new();
                    at += 1;
                    if is(tokens.get(at), ':') {
                        at += 2;
                    }
                    use_tree(&tokens, &mut at, &[], &mut paths);
                    let context: Vec<String> = inline.iter().map(|(name, _)| name.clone()).collect();
                    for (segments, name) in paths {
                        let reexport = (public && inline.is_empty() && name != "*").then_some(name);
                        named.push(Named { inline: context.clone(), segments, reexport });
                    }
                    continue;
                }
                Token::Ident(word)
                    if matches!(word.as_str(), "crate" | "super" | "self")
                        && is(tokens.get(at + 1), ':')
                        && is(tokens.get(at + 2), ':')
                        && !(at >= 1 && is(tokens.get(at - 1), ':')) =>
                {
                    let mut segments = vec![word.clone()];
                    let mut end = at + 1;
                    while is(tokens.get(end), ':') && is(tokens.get(end + 1), ':') {
                        match ident(tokens.get(end + 2)) {
                            Some(name) => segments.push(name.to_owned()),
                            None => break,
                        }
                        end += 3;
                    }
                    let context = inline.iter().map(|(name, _)| name.clone()).collect();
                    named.push(Named { inline: context, segments, reexport: None });
                    at = end;
                    continue;
                }
                _ => {}
            }
            at += 1;
        }
        (children, named)
    }

    /// The project's module files: module path → file, file → its module path and what it names.
    struct Crates {
        root: PathBuf,
        files: BTreeMap<(usize, Vec<String>), PathBuf>,
        modules: BTreeMap<PathBuf, (usize, Vec<String>, Vec<Named>)>,
    }

    impl Crates {
        fn load(root: &Path) -> Crates {
            let mut crates = Crates { root: root.to_path_buf(), files: BTreeMap::new(), modules: BTreeMap::new() };
            for (index, crate_root) in CRATE_ROOTS.iter().enumerate() {
                crates.add(index, Vec::new(), PathBuf::from(crate_root), true);
            }
            crates
        }

        /// Adds `file` (relative to the project root) and the files of its `mod` declarations, which
        /// sit beside it when it `owns_dir` (a crate root, a `mod.rs`), else in a directory named after it.
        fn add(&mut self, krate: usize, module: Vec<String>, file: PathBuf, owns_dir: bool) {
            let text = std::fs::read_to_string(self.root.join(&file))
                .unwrap_or_else(|err| panic!("{}: {err}", file.display()));
            let (children, named) = scan(&text);
            let dir = if owns_dir { file.parent().unwrap().to_path_buf() } else { file.with_extension("") };
            for child in children {
                let flat = dir.join(format!("{child}.rs"));
                let nested = dir.join(&child).join("mod.rs");
                let (path, owns) = if self.root.join(&flat).exists() { (flat, false) } else { (nested, true) };
                // Elsewhere only with `#[path]` (the fuzz entries the tests replay): left out.
                if !self.root.join(&path).exists() {
                    continue;
                }
                let mut inner = module.clone();
                inner.push(child);
                self.add(krate, inner, path, owns);
            }
            self.files.insert((krate, module.clone()), file.clone());
            self.modules.insert(file, (krate, module, named));
        }

        /// The file that holds `module` (an inline module lives in its enclosing file).
        fn file_of(&self, krate: usize, module: &[String]) -> Option<&PathBuf> {
            (0..=module.len()).rev().find_map(|len| self.files.get(&(krate, module[..len].to_vec())))
        }

        /// The file defining what `segments` names from inside `context`; `None` for another crate.
        fn resolve(&self, krate: usize, context: &[String], segments: &[String], hops: usize) -> Option<&PathBuf> {
            let (mut module, rest) = match segments.first().map(String::as_str)? {
                "crate" => (Vec::new(), &segments[1..]),
                "self" => (context.to_vec(), &segments[1..]),
                "super" => {
                    let supers = segments.iter().take_while(|segment| *segment == "super").count();
                    (context[..context.len().saturating_sub(supers)].to_vec(), &segments[supers..])
                }
                first => {
                    let mut child = context.to_vec();
                    child.push(first.to_owned());
                    self.files.get(&(krate, child))?;
                    (context.to_vec(), segments)
                }
            };
            let mut rest = rest.iter();
            let mut item = None;
            for segment in rest.by_ref() {
                module.push(segment.clone());
                if !self.files.contains_key(&(krate, module.clone())) {
                    item = module.pop();
                    break;
                }
            }
            let file = self.file_of(krate, &module)?;
            if let Some(item) = item.filter(|item| item != "*")
                && hops < 8
            {
                let (_, defining_module, named) = &self.modules[file];
                let reexport = named.iter().find(|named| named.reexport.as_deref() == Some(item.as_str()));
                if let Some(reexport) = reexport {
                    return self.resolve(krate, defining_module, &reexport.segments, hops + 1).or(Some(file));
                }
            }
            Some(file)
        }

        /// File → the files it names, each with one path that names it. A `pub use` is no edge of
        /// its own: a module that re-exports its children's items is their index, and what names
        /// an item through it depends on the child that defines it. Inline test modules are
        /// modules of their own that nothing imports, so they cannot close a cycle either.
        fn graph(&self) -> BTreeMap<&PathBuf, BTreeMap<&PathBuf, String>> {
            let mut graph: BTreeMap<&PathBuf, BTreeMap<&PathBuf, String>> = BTreeMap::new();
            for (file, (krate, module, named)) in &self.modules {
                let edges = graph.entry(file).or_default();
                let counted = named
                    .iter()
                    .filter(|path| path.reexport.is_none() && path.inline.first().is_none_or(|name| name != "tests"));
                for path in counted {
                    let mut context = module.clone();
                    context.extend(path.inline.iter().cloned());
                    if let Some(target) = self.resolve(*krate, &context, &path.segments, 0)
                        && target != file
                    {
                        edges.entry(target).or_insert_with(|| path.segments.join("::"));
                    }
                }
            }
            graph
        }
    }

    /// The sets of files that reach each other, each with the edges inside it.
    fn cycles(graph: &BTreeMap<&PathBuf, BTreeMap<&PathBuf, String>>) -> Vec<Vec<String>> {
        let reach = |from: &PathBuf| -> BTreeSet<&PathBuf> {
            let mut seen = BTreeSet::new();
            let mut work = vec![from];
            while let Some(file) = work.pop() {
                for next in graph.get(file).into_iter().flat_map(BTreeMap::keys) {
                    if seen.insert(*next) {
                        work.push(next);
                    }
                }
            }
            seen
        };
        let reached: BTreeMap<&PathBuf, BTreeSet<&PathBuf>> = graph.keys().map(|file| (*file, reach(file))).collect();
        let mut done = BTreeSet::new();
        let mut found = Vec::new();
        for (file, reaches) in &reached {
            if done.contains(file) || !reaches.contains(file) {
                continue;
            }
            let members: BTreeSet<&PathBuf> =
                reaches.iter().copied().filter(|other| reached[other].contains(file)).collect();
            done.extend(members.iter().copied());
            let edges = members
                .iter()
                .flat_map(|from| {
                    graph[from]
                        .iter()
                        .filter(|(to, _)| members.contains(*to))
                        .map(move |(to, path)| format!("{} → {} ({path})", from.display(), to.display()))
                })
                .collect();
            found.push(edges);
        }
        found
    }

    #[test]
    fn no_import_cycle_between_files() {
        let root = crate::project_root();
        let crates = Crates::load(&root);
        let found = cycles(&crates.graph());
        assert!(
            found.is_empty(),
            "files that import each other (move what they share into the file that owns it): {found:#?}"
        );
    }
}

/// Knowledge of particular servers stays in `analyzer/src/servers.rs`: no other analyzer code (its
/// unit tests aside) names a function of its table as a string literal.
#[cfg(test)]
mod server_table {
    #[test]
    fn servers_are_named_only_in_their_table() {
        let src = crate::project_root().join("analyzer/src");
        let table = std::fs::read_to_string(src.join("servers.rs")).unwrap();
        // The functions the table names: serving entries, their callers, spawn functions.
        let mut names: Vec<&str> = Vec::new();
        for key in ["serving_entry: \"", "function: \"", "serving_callers: &["] {
            for (_, rest) in table.match_indices(key).map(|(at, _)| table.split_at(at + key.len())) {
                let end = if key.ends_with('[') { rest.find(']') } else { rest.find('"') };
                let listed = &rest[..end.unwrap_or(0)];
                if key.ends_with('[') {
                    names.extend(listed.split('"').skip(1).step_by(2));
                } else {
                    names.push(listed);
                }
            }
        }
        assert!(names.contains(&"aeMain"), "the table's names were not found in servers.rs");
        let mut found = Vec::new();
        let mut dirs = vec![src.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.extension().is_none_or(|ext| ext != "rs") || path.ends_with("servers.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                for name in &names {
                    if code.contains(&format!("\"{name}\"")) {
                        found.push(format!("{}: \"{name}\"", path.strip_prefix(&src).unwrap().display()));
                    }
                }
            }
        }
        assert!(found.is_empty(), "server knowledge outside analyzer/src/servers.rs (read KNOWN_SERVERS): {found:#?}");
    }
}

/// `pipeline::write_outputs` is the one place profiles, the analysis and the report become files:
/// no other analyzer code (unit tests aside) writes them.
#[cfg(test)]
mod one_writer {
    #[test]
    fn outputs_are_written_only_by_the_pipeline() {
        let src = crate::project_root().join("analyzer/src");
        let writers = ["report::write(", ".write_all(dir", "analysis.write(dir"];
        let mut found = Vec::new();
        let mut dirs = vec![src.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.extension().is_none_or(|ext| ext != "rs") || path.ends_with("pipeline.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                for writer in writers.iter().filter(|writer| code.contains(*writer)) {
                    found.push(format!("{}: {writer}", path.strip_prefix(&src).unwrap().display()));
                }
            }
        }
        assert!(found.is_empty(), "outputs written outside pipeline::write_outputs: {found:#?}");
    }
}
