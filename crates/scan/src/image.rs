//! Container images: a `docker save` archive or an OCI image layout in a
//! tar. Every layer is read, so a file that a later layer deletes (a
//! whiteout) is still found in the layer that added it; the image config
//! (with its `Env` and build history) and manifests are scanned as files.
//! Layers may be plain or gzip-compressed tars; anything else is skipped
//! and counted.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use crate::walk::{Stats, WalkOptions};
use crate::{Finding, Scanner};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{0} is not a tar archive (give the file `docker save IMAGE -o image.tar` writes)")]
    NotTar(String),
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

fn is_tar(head: &[u8]) -> bool {
    head.len() > 262 && &head[257..262] == b"ustar"
}

/// Scans an image archive.
pub fn scan_image(
    scanner: &Scanner,
    archive: &Path,
    options: &WalkOptions,
) -> Result<(Vec<Finding>, Stats), ImageError> {
    let label = archive.display().to_string();
    let io = |error| ImageError::Io {
        path: label.clone(),
        error,
    };
    let file = std::fs::File::open(archive).map_err(io)?;
    let mut reader = BufReader::with_capacity(1024 * 1024, file);
    let head = reader.fill_buf().map_err(io)?;
    if !is_tar(head) {
        return Err(ImageError::NotTar(label));
    }
    let mut outer = tar::Archive::new(reader);
    let mut findings = Vec::new();
    let mut stats = Stats::default();
    for entry in outer.entries().map_err(io)? {
        let entry = entry.map_err(io)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut entry = BufReader::with_capacity(256 * 1024, entry);
        let head = entry.fill_buf().map_err(io)?.to_vec();
        let location = format!("{label}:{name}");
        if head.starts_with(&GZIP_MAGIC) {
            let decoder = flate2::bufread::GzDecoder::new(entry);
            let mut layer = BufReader::with_capacity(256 * 1024, decoder);
            let inner_head = layer.fill_buf().map_err(io)?.to_vec();
            if is_tar(&inner_head) {
                scan_layer(
                    scanner,
                    layer,
                    &location,
                    options,
                    &mut findings,
                    &mut stats,
                );
            } else {
                stats.skipped_binary += 1;
            }
        } else if is_tar(&head) {
            scan_layer(
                scanner,
                entry,
                &location,
                options,
                &mut findings,
                &mut stats,
            );
        } else {
            // The image config, manifests, the index: JSON to scan as is.
            scan_file(
                scanner,
                entry,
                &location,
                options,
                &mut findings,
                &mut stats,
            );
        }
    }
    Ok((findings, stats))
}

fn scan_layer(
    scanner: &Scanner,
    layer: impl Read,
    location: &str,
    options: &WalkOptions,
    findings: &mut Vec<Finding>,
    stats: &mut Stats,
) {
    let mut archive = tar::Archive::new(layer);
    let Ok(entries) = archive.entries() else {
        stats.unreadable += 1;
        return;
    };
    for entry in entries {
        let Ok(entry) = entry else {
            stats.unreadable += 1;
            return;
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if options.allow_paths.is_match(&path) {
            continue;
        }
        scan_file(
            scanner,
            entry,
            &format!("{location}:/{}", path.trim_start_matches("./")),
            options,
            findings,
            stats,
        );
    }
}

fn scan_file(
    scanner: &Scanner,
    content: impl Read,
    location: &str,
    options: &WalkOptions,
    findings: &mut Vec<Finding>,
    stats: &mut Stats,
) {
    let mut data = Vec::new();
    let limit = options.max_file_bytes;
    if content
        .take(limit.saturating_add(1))
        .read_to_end(&mut data)
        .is_err()
    {
        stats.skip(location.to_owned(), crate::walk::SkipReason::Unreadable);
        return;
    }
    if data.len() as u64 > limit {
        stats.skip(location.to_owned(), crate::walk::SkipReason::TooLarge);
        return;
    }
    if !options.binary && Scanner::is_binary(&data) {
        stats.skip(location.to_owned(), crate::walk::SkipReason::Binary);
        return;
    }
    stats.files += 1;
    stats.bytes += data.len() as u64;
    findings.extend(scanner.findings(location, &data, options.preview));
}
