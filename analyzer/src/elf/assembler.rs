//! Test inputs written as x86-64 assembly: GNU `as` assembles the text and `ld` links it into an
//! ELF file, so a test reads like the code it is about and runs on a real file.
//!
//! Both tools come with binutils, the package of the linker `cargo` itself links with, so they
//! are present wherever the tests build. A label at the start of a line is a function (it gets
//! `.type NAME, @function`, as a compiler would emit it); an indented label marks a place inside
//! one, or data. [`Symbols`] names the addresses of the result after those labels, so
//! expectations can, and [`assert_text`] compares what a test prints with what it expects.

use std::path::Path;
use std::process::Command;

use object::read::elf::SectionHeader as _;

/// Assembles `source` (AT&T syntax) and links it with `ld` and `ld_args`.
pub(crate) fn link(source: &str, ld_args: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    link_in(dir.path(), "output", source, ld_args)
}

/// As [`link`], writing the linked file to `dir/name` (for `-L` and `DT_NEEDED` between files).
pub(crate) fn link_in(dir: &Path, name: &str, source: &str, ld_args: &[&str]) -> Vec<u8> {
    let (assembly, object, output) = (dir.join(format!("{name}.s")), dir.join(format!("{name}.o")), dir.join(name));
    std::fs::write(&assembly, with_function_types(source)).expect("writing the assembly");
    // A 32-bit file (`-m elf_i386`) needs a 32-bit object.
    let class = if ld_args.contains(&"elf_i386") { "--32" } else { "--64" };
    run(Command::new("as").arg(class).arg("-o").arg(&object).arg(&assembly));
    run(Command::new("ld").args(ld_args).arg("-o").arg(&output).arg(&object));
    std::fs::read(&output).expect("reading the linked file")
}

fn with_function_types(source: &str) -> String {
    let mut text = String::new();
    for line in source.lines() {
        let label = line.split_once(':').map(|(label, _)| label).filter(|label| {
            let mut chars = label.chars();
            chars.next().is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        if let Some(label) = label {
            text.push_str(&format!(".type {label}, @function\n"));
        }
        text.push_str(line);
        text.push('\n');
    }
    text
}

fn run(command: &mut Command) {
    let out = command.output().unwrap_or_else(|err| panic!("cannot run {command:?} (binutils): {err}"));
    assert!(out.status.success(), "{command:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// A linked file's symbols: its functions as (name, start, end) in address order, each running to
/// the next one or to the end of its section, and every named address.
pub(crate) struct Symbols {
    pub functions: Vec<(String, u64, u64)>,
    pub names: std::collections::BTreeMap<u64, String>,
    /// Allocated sections as (name, start, end).
    sections: Vec<(String, u64, u64)>,
}

impl Symbols {
    pub fn of(bytes: &[u8]) -> Symbols {
        let image = super::image::Image::parse(bytes).expect("a linked ELF file");
        let mut names = std::collections::BTreeMap::new();
        let mut starts = Vec::new();
        for symbol in image.symbols(false) {
            // `name@VERSION` aliases (from `.symver`) are not labels of the source.
            let label = !matches!(symbol.kind, object::elf::STT_SECTION | object::elf::STT_FILE)
                && !symbol.name.is_empty()
                && !symbol.name.contains('@');
            if !symbol.defined || !label {
                continue;
            }
            names.entry(symbol.value).or_insert_with(|| symbol.name.to_owned());
            if symbol.kind == object::elf::STT_FUNC {
                starts.push((symbol.value, symbol.name.to_owned()));
            }
        }
        starts.sort();
        let text_end = image.section_range(".text").map_or(0, |(_, end)| end);
        let functions = starts
            .iter()
            .enumerate()
            .map(|(i, (start, name))| (name.clone(), *start, starts.get(i + 1).map_or(text_end, |next| next.0)))
            .collect();
        let sections = image
            .sections
            .iter()
            .filter(|section| section.sh_flags(super::image::LE).contains(object::elf::SHF_ALLOC))
            .map(|section| {
                let name = image.sections.section_name(super::image::LE, section).unwrap_or_default();
                let start = section.sh_addr(super::image::LE);
                (String::from_utf8_lossy(name).into_owned(), start, start + section.sh_size(super::image::LE))
            })
            .collect();
        Symbols { functions, names, sections }
    }

    /// The symbol at `addr`, or the section holding it (linker-made data has no symbol).
    pub fn place(&self, addr: u64) -> String {
        if let Some(name) = self.names.get(&addr) {
            return name.clone();
        }
        let section = self.sections.iter().find(|(_, start, end)| (*start..*end).contains(&addr));
        section.map_or_else(|| format!("{addr:#x}"), |(name, ..)| name.clone())
    }

    pub fn function(&self, name: &str) -> (u64, u64) {
        let (_, start, end) = self.functions.iter().find(|(known, ..)| known == name).expect("a function of that name");
        (*start, *end)
    }

    /// `name`, or `name+offset` from the closest symbol before `addr`.
    pub fn label(&self, addr: u64) -> String {
        match self.names.range(..=addr).next_back() {
            Some((&at, name)) if at == addr => name.clone(),
            Some((&at, name)) => format!("{name}+{:#x}", addr - at),
            None => format!("{addr:#x}"),
        }
    }
}

/// Compares `actual` with `expect` line by line, ignoring indentation and blank lines, and shows
/// the actual text in full when they differ (to paste it once it is checked by hand).
pub(crate) fn assert_text(actual: &str, expect: &str) {
    let lines = |text: &str| -> Vec<String> {
        text.lines().map(str::trim).filter(|line| !line.is_empty()).map(str::to_owned).collect()
    };
    if lines(actual) != lines(expect) {
        panic!("expected:\n{}\n\nactual:\n{}\n", lines(expect).join("\n"), lines(actual).join("\n"));
    }
}
