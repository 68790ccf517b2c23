//! A filesystem held in a tar archive (a flattened container export): an index of its members,
//! read on demand from the archive file. Nothing is ever extracted to the host.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};

use super::node::Node;

/// A member of the archive.
#[derive(Clone, Debug)]
enum Member {
    File {
        offset: u64,
        size: u64,
    },
    Dir,
    Symlink(String),
    /// A hard link to another member, by its canonical path.
    Hardlink(String),
    Other,
}

pub(crate) struct Archive {
    file: File,
    members: HashMap<String, Member>,
    /// Directory → names directly inside it.
    children: BTreeMap<String, Vec<String>>,
}

impl Archive {
    /// Indexes the tar archive in `file`.
    pub fn index(mut file: File) -> std::io::Result<Archive> {
        file.seek(SeekFrom::Start(0))?;
        let mut members = HashMap::new();
        {
            let mut archive = tar::Archive::new(&file);
            for entry in archive.entries()? {
                let entry = entry?;
                let path = canonical(&entry.path_bytes());
                let header = entry.header();
                let link = || entry.link_name_bytes().map(|name| String::from_utf8_lossy(&name).into_owned());
                let member = match header.entry_type() {
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        Member::File { offset: entry.raw_file_position(), size: entry.size() }
                    }
                    tar::EntryType::Directory => Member::Dir,
                    tar::EntryType::Symlink => Member::Symlink(link().unwrap_or_default()),
                    tar::EntryType::Link => Member::Hardlink(canonical(link().unwrap_or_default().as_bytes())),
                    _ => Member::Other,
                };
                members.insert(path, member);
            }
        }
        // Exports list parents before children, but not always every parent.
        let paths: Vec<String> = members.keys().cloned().collect();
        for path in &paths {
            let mut parent = parent(path);
            while let Some(dir) = parent {
                members.entry(dir.to_owned()).or_insert(Member::Dir);
                parent = self::parent(dir);
            }
        }
        members.insert("/".to_owned(), Member::Dir);
        let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for path in members.keys().filter(|path| path.as_str() != "/") {
            let dir = parent(path).unwrap_or("/");
            children.entry(dir.to_owned()).or_default().push(path[dir.len()..].trim_start_matches('/').to_owned());
        }
        Ok(Archive { file, members, children })
    }

    fn member(&self, path: &str) -> Option<&Member> {
        match self.members.get(path)? {
            Member::Hardlink(target) => self.members.get(target),
            member => Some(member),
        }
    }

    pub fn node(&self, path: &str) -> Node {
        match self.member(path) {
            None | Some(Member::Hardlink(_)) => Node::Missing,
            Some(Member::File { .. }) => Node::File,
            Some(Member::Dir) => Node::Dir,
            Some(Member::Symlink(target)) => Node::Symlink(target.clone()),
            Some(Member::Other) => Node::Other,
        }
    }

    pub fn read(&self, path: &str) -> std::io::Result<Vec<u8>> {
        let Some(&Member::File { offset, size }) = self.member(path) else {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "not a file in the archive"));
        };
        let mut bytes = vec![0; size as usize];
        let mut file = &self.file;
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(&mut bytes)?;
        Ok(bytes)
    }

    pub fn list(&self, dir: &str) -> Vec<String> {
        self.children.get(dir).cloned().unwrap_or_default()
    }
}

/// `./usr/lib/` and `usr/lib` both become `/usr/lib`.
fn canonical(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let parts: Vec<&str> = text.split('/').filter(|part| !part.is_empty() && *part != ".").collect();
    format!("/{}", parts.join("/"))
}

fn parent(path: &str) -> Option<&str> {
    let index = path.rfind('/')?;
    (path != "/").then(|| if index == 0 { "/" } else { &path[..index] })
}
