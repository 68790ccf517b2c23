//! An image's files through the Docker API: create a container from it (never started), stream
//! its flattened filesystem (`GET /containers/{id}/export`) into a temporary archive, index it,
//! and remove the container whatever happens.

use std::io::Write as _;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptionsBuilder};
use futures_util::StreamExt as _;

use super::Rootfs;
use super::archive::Archive;

/// Why an image's files could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Docker(#[from] crate::docker::DockerError),
    #[error("image {image} is not available to the Docker daemon; pull or build it first (`docker pull {image}`)")]
    NoImage { image: String, source: bollard::errors::Error },
    #[error("cannot export the files of image {image}")]
    Export { image: String, source: bollard::errors::Error },
    #[error("cannot store the export of image {image} in a temporary file")]
    Temporary { image: String, source: std::io::Error },
}

/// The files of `image`, read through a temporary container export.
pub async fn export_image(image: &str) -> Result<Rootfs, ExportError> {
    let docker = crate::docker::connect().await?;
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        // Images without a command cannot be created otherwise; the container never runs.
        cmd: Some(vec!["seccomp-refine-export".to_owned()]),
        ..Default::default()
    };
    let created = docker
        .create_container(None::<CreateContainerOptions>, body)
        .await
        .map_err(|source| ExportError::NoImage { image: image.to_owned(), source })?;
    let result = stream_to_archive(&docker, &created.id, image).await;
    let remove = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
    // Best effort: a container left behind is visible in `docker ps -a`, named by the export.
    let _ = docker.remove_container(&created.id, Some(remove)).await;
    let archive = result?;
    Ok(Rootfs::archive(archive, format!("image {image}")))
}

async fn stream_to_archive(docker: &Docker, id: &str, image: &str) -> Result<Archive, ExportError> {
    let temporary = |source| ExportError::Temporary { image: image.to_owned(), source };
    // Unlinked at once: the archive lives only as long as the open file.
    let mut file = tempfile::tempfile().map_err(temporary)?;
    let mut stream = docker.export_container(id);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| ExportError::Export { image: image.to_owned(), source })?;
        file.write_all(&chunk).map_err(temporary)?;
    }
    Archive::index(file).map_err(temporary)
}
