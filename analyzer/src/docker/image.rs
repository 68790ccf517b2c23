//! Making sure an image is present: inspecting it, and pulling it with a progress bar if not.

use std::collections::HashMap;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::ImageInspect;
use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "image {image} is not present and cannot be pulled: {reason}; pull it where a registry is reachable \
         (`docker pull {image}`) or build it (`cargo xtask images` builds stand-ins for nginx:latest and redis:latest)"
    )]
    NotPullable { image: String, reason: String },
    #[error("cannot inspect image {image}")]
    Inspect { image: String, source: BollardError },
}

/// The image's description, pulling it first when the daemon does not have it.
pub async fn ensure(docker: &Docker, image: &str) -> Result<ImageInspect, ImageError> {
    match docker.inspect_image(image).await {
        Ok(found) => return Ok(found),
        Err(err) if is_not_found(&err) => {}
        Err(source) => return Err(ImageError::Inspect { image: image.to_owned(), source }),
    }
    pull(docker, image).await?;
    docker.inspect_image(image).await.map_err(|source| ImageError::Inspect { image: image.to_owned(), source })
}

/// Whether the daemon has `image` locally (no pull is tried; an unreachable daemon means no).
pub async fn is_present(image: &str) -> bool {
    match super::connect().await {
        Ok(docker) => docker.inspect_image(image).await.is_ok(),
        Err(_) => false,
    }
}

pub fn is_not_found(err: &BollardError) -> bool {
    matches!(err, BollardError::DockerResponseServerError { status_code: 404, .. })
}

/// `docker pull`, one progress bar per layer on a terminal.
async fn pull(docker: &Docker, image: &str) -> Result<(), ImageError> {
    let not_pullable = |reason: String| ImageError::NotPullable { image: image.to_owned(), reason };
    let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let style =
        ProgressStyle::with_template("{prefix:12} {wide_bar} {bytes}/{total_bytes} {msg}").expect("valid template");
    let mut layers: HashMap<String, ProgressBar> = HashMap::new();
    let options = CreateImageOptions { from_image: Some(image.to_owned()), ..Default::default() };
    let mut stream = docker.create_image(Some(options), None, None);
    while let Some(item) = stream.next().await {
        let info = item.map_err(|err| not_pullable(one_line(&err)))?;
        if let Some(error) = info.error {
            return Err(not_pullable(error));
        }
        let (Some(id), Some(status)) = (info.id, info.status) else { continue };
        let bar = layers.entry(id.clone()).or_insert_with(|| {
            let bar = bars.add(ProgressBar::new(0).with_style(style.clone()).with_prefix(id));
            bar.set_message("waiting");
            bar
        });
        if let Some((Some(current), Some(total))) = info.progress_detail.map(|detail| (detail.current, detail.total)) {
            bar.set_length(total.max(0) as u64);
            bar.set_position(current.max(0) as u64);
        }
        bar.set_message(status);
    }
    for bar in layers.values() {
        bar.finish_and_clear();
    }
    Ok(())
}

/// A bollard error on one line (some carry the daemon's multi-line message).
pub fn one_line(err: &BollardError) -> String {
    err.to_string().lines().map(str::trim).collect::<Vec<_>>().join(" ")
}
