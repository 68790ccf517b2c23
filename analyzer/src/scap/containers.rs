//! Which container a thread belongs to, and what the capture says about each container.
//!
//! The key is the cgroup path (from process-list entries and clone/execve exits): the runtimes
//! name a container's cgroup after its 64-hex id, in the layouts falcosecurity/plugins'
//! container matchers know (podman, docker, cri-o, containerd through CRI, nerdctl). Only the
//! strict form is accepted — exactly 64 hex digits — so a host unit such as
//! `/system.slice/docker.service` is never mistaken for a container. Plain `ctr` containers
//! (arbitrary names), lxc, libvirt-lxc and bpm are not recognised and count as host.
//! Names and images come from the metadata events (`CONTAINER_E`, `CONTAINER_JSON_E`,
//! `CONTAINER_JSON_2_E`, `ASYNCEVENT_E` "container"); the last one seen for an id wins.

use serde::Deserialize;

/// (prefix, suffix) around a container id in a cgroup path: the id starts after the last
/// `prefix` and ends at the last `suffix` (or at the end when the suffix is empty).
const LAYOUTS: &[(&[u8], &[u8])] = &[
    (b"/libpod-", b".scope"),
    (b"/libpod-", b".scope/container"),
    (b"/libpod-", b""),
    (b"/libpod-payload-", b".scope"),
    (b"/libpod-payload-", b".scope/container"),
    (b"/libpod-payload-", b""),
    (b"/", b""),
    (b"/docker-", b".scope"),
    (b"/crio-", b""),
    (b"/cri-containerd-", b".scope"),
    (b"/crio-", b".scope"),
    (b":cri-containerd:", b""),
    (b"/nerdctl-", b".scope"),
];

/// The 64-hex container id named by a thread's cgroups (`subsys=path` items, NUL-separated),
/// trying each item in controller order; `None` for a host thread.
pub fn container_id(cgroups: &[u8]) -> Option<&[u8]> {
    for item in cgroups.split(|&byte| byte == 0) {
        let path = match item.iter().position(|&byte| byte == b'=') {
            Some(equals) => &item[equals + 1..],
            None => item,
        };
        if let Some(id) = LAYOUTS.iter().find_map(|&(prefix, suffix)| id_between(path, prefix, suffix)) {
            return Some(id);
        }
    }
    None
}

fn id_between<'a>(path: &'a [u8], prefix: &[u8], suffix: &[u8]) -> Option<&'a [u8]> {
    let start = rfind(path, prefix)? + prefix.len();
    let end = if suffix.is_empty() { path.len() } else { rfind(path, suffix)? };
    let id = path.get(start..end)?;
    (id.len() == 64 && id.iter().all(u8::is_ascii_hexdigit)).then_some(id)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    (0..=haystack.len().checked_sub(needle.len())?)
        .rev()
        .find(|&at| haystack[at] == first && haystack[at..].starts_with(needle))
}

/// What a metadata event says about one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerMeta {
    /// The short (12-character) id the metadata is keyed by.
    pub id: String,
    pub name: Option<String>,
    pub image: Option<String>,
}

#[derive(Deserialize)]
struct JsonDocument {
    container: JsonContainer,
}

#[derive(Deserialize)]
struct JsonContainer {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    image: Option<String>,
}

/// The container document of `CONTAINER_JSON_E`, `CONTAINER_JSON_2_E` and the container plugin's
/// async events: `{"container": {"id": …, "name": …, "image": …, …}}`, maybe NUL-terminated.
pub fn parse_json(json: &[u8]) -> Option<ContainerMeta> {
    let end = json.iter().position(|&byte| byte == 0).unwrap_or(json.len());
    let document: JsonDocument = serde_json::from_slice(&json[..end]).ok()?;
    let container = document.container;
    Some(meta(
        container.id.as_bytes(),
        container.name.as_deref().map(str::as_bytes),
        container.image.as_deref().map(str::as_bytes),
    ))
}

/// Metadata from separate fields (`CONTAINER_E`), normalised: 12-character id, empty and `<NA>`
/// values dropped.
pub fn meta(id: &[u8], name: Option<&[u8]>, image: Option<&[u8]>) -> ContainerMeta {
    let known = |value: Option<&[u8]>| {
        value
            .filter(|value| !value.is_empty() && *value != b"<NA>")
            .map(|value| String::from_utf8_lossy(value).into_owned())
    };
    ContainerMeta {
        id: String::from_utf8_lossy(&id[..id.len().min(12)]).into_owned(),
        name: known(name),
        image: known(image),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "697956520d891b5cb0e215093970c733549a3f745f52263c05b37f8a488994f3";

    #[test]
    fn runtime_layouts_give_the_id() {
        for path in [
            format!("cpuset=/docker/{ID}"),
            format!("cpu=/system.slice/docker-{ID}.scope"),
            format!("0::/kubepods/besteffort/pod1234/{ID}"),
            format!("memory=/machine.slice/libpod-{ID}.scope/container"),
            format!("cpu=/kubepods.slice/crio-{ID}.scope"),
            format!("cpu=/system.slice/containerd.service/kubepods-pod1.slice:cri-containerd:{ID}"),
        ] {
            assert_eq!(container_id(path.as_bytes()), Some(ID.as_bytes()), "{path}");
        }
    }

    #[test]
    fn host_paths_and_near_misses_are_no_container() {
        let short = &ID[..63];
        let not_hex = format!("{}g", &ID[..63]);
        for path in [
            "cpu=/init.scope\0memory=/init.scope".to_owned(),
            "cpuset=/system.slice/docker.service".to_owned(),
            format!("cpu=/docker/{short}"),
            format!("cpu=/docker/{not_hex}"),
            format!("cpu=/docker/{ID}0"),
            String::new(),
        ] {
            assert_eq!(container_id(path.as_bytes()), None, "{path}");
        }
    }

    #[test]
    fn a_later_controller_can_name_the_container() {
        let cgroups = format!("cpuset=/\0cpu=/docker/{ID}\0");
        assert_eq!(container_id(cgroups.as_bytes()), Some(ID.as_bytes()));
    }

    #[test]
    fn metadata_documents_are_read() {
        let json =
            br#"{"container":{"id":"697956520d89","type":0,"name":"hopeful_taussig","image":"nginx","Mounts":[]}}"#;
        let expected = ContainerMeta {
            id: "697956520d89".into(),
            name: Some("hopeful_taussig".into()),
            image: Some("nginx".into()),
        };
        assert_eq!(parse_json(json), Some(expected.clone()));
        assert_eq!(parse_json(&[&json[..], b"\0"].concat()), Some(expected));
        assert_eq!(parse_json(b"{\"container\": 3}"), None);
        let fields = meta(ID.as_bytes(), Some(b"web"), Some(b"<NA>"));
        assert_eq!(fields, ContainerMeta { id: "697956520d89".into(), name: Some("web".into()), image: None });
    }
}
