//! Online backup and offline restore of a data directory.
//!
//! A backup first forces a player-state flush (so every state update acknowledged before it
//! started is in `player.db`), then copies every live shard with SQLite's online backup API
//! ([`shard::Shard::backup_to`]: a consistent snapshot per shard, taken while gateways keep
//! writing), copies the archived chat years as files (they are read-only), checks every copy's
//! integrity (a damaged shard fails the backup), and writes `manifest.json` last: files, sizes,
//! SHA-256, schema versions, time. A directory without a manifest is not a backup.
//!
//! A restore refuses while any gateway holds the data directory's lock, checks every file
//! against the manifest, copies the files into a staging directory inside the data directory,
//! checks each shard's integrity and schema version there, moves the directory's current shards
//! aside into `pre-restore-<ms>/` (nothing is deleted), and moves the staged files into place.
//! Run again after stopping half-way (its staging directory left behind), it finishes into the
//! same `pre-restore-<ms>/`, so the original shards stay together.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{Flush, OpsError, companion, flush, now_ms, open_shard, shard_files, utc_timestamp};
use crate::GatewayConfig;

/// The manifest's file name inside a backup directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest format this build writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;
/// Where archived chat years go inside a backup and inside a restored data directory.
pub const ARCHIVE_SUBDIR: &str = chat::DEFAULT_ARCHIVE_DIR_NAME;
/// The staging directory a restore fills inside the data directory.
pub(crate) const STAGING_DIR: &str = ".restore-staging";
/// Where a restore sets the data directory's shards aside, followed by the time in ms.
const PREVIOUS_DIR_PREFIX: &str = "pre-restore-";

/// What a backup holds; written as `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// When the backup started (milliseconds since the Unix epoch).
    pub started_at_ms: u64,
    /// The same, as UTC text.
    pub started_at: String,
    /// When it completed.
    pub completed_at_ms: u64,
    /// The data directory it was taken from.
    pub data_dir: PathBuf,
    /// What the player-state flush before the copy wrote; `None` when it was skipped.
    pub player_flush: Option<FlushRecord>,
    /// Why the flush was skipped, if it was.
    pub player_flush_skipped: Option<String>,
    /// Every file, shards first.
    pub files: Vec<ManifestFile>,
}

/// [`Flush`] as the manifest stores it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct FlushRecord {
    /// Rows written to `player.db`.
    pub rows_written: u64,
    /// Transactions.
    pub batches: u64,
}

/// One file of a backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Its path relative to the backup directory (`auth.db`, `chat-archive/chat-2024.db`).
    pub path: String,
    /// The owning domain.
    pub domain: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the content, lower-case hex.
    pub sha256: String,
    /// `user_version` of a live shard; `None` for an archived year.
    pub schema_version: Option<u32>,
}

/// Backs up the data directory into `to` (a new or empty directory), online.
///
/// `flush_first`: force a player-state flush before copying. It needs the store the gateways
/// share; without Redis configured, and with a gateway running on its embedded store, the flush
/// is impossible from outside and is skipped (noted in the manifest).
///
/// # Errors
/// A wrong data directory; `to` not a new or empty directory, or not writable;
/// [`OpsError::Redis`] when Redis is configured but the flush fails (pass `flush_first = false`
/// to back up anyway); a shard that cannot be copied, or whose copy fails its integrity check.
pub async fn backup(
    config: &GatewayConfig,
    to: &Path,
    flush_first: bool,
    timeout: Duration,
) -> Result<Manifest, OpsError> {
    let shards = shard_files(&config.data_dir)?;
    if std::fs::metadata(to).is_ok_and(|metadata| !metadata.is_dir()) {
        return Err(OpsError::Backup(format!(
            "{} exists and is not a directory; give --to a new or empty directory",
            to.display()
        )));
    }
    if std::fs::read_dir(to).map(|mut entries| entries.next().is_some()).unwrap_or(false) {
        return Err(OpsError::Backup(format!(
            "{} is not empty; give --to a new or empty directory",
            to.display()
        )));
    }
    std::fs::create_dir_all(to).map_err(|error| {
        OpsError::Backup(format!(
            "cannot create {}: {error}; give --to a directory gamectl can write",
            to.display()
        ))
    })?;
    let started_at_ms = now_ms();

    let (player_flush, player_flush_skipped) = if !flush_first {
        (None, Some("not asked for".to_owned()))
    } else if !config.data_dir.join("player.db").is_file() {
        (None, Some("no player.db".to_owned()))
    } else {
        match flush(config, timeout).await {
            Ok(Flush { rows_written, batches, .. }) => (Some(FlushRecord { rows_written, batches }), None),
            Err(OpsError::Redis(reason)) if config.redis_url.is_none() => (None, Some(reason)),
            // The copy itself migrates nothing: a newer gamectl still backs up an older release.
            Err(OpsError::OlderSchema(reason)) => (None, Some(reason)),
            Err(error) => return Err(error),
        }
    };

    let mut files = Vec::new();
    for shard_file in shards {
        let shard = open_shard(config, &shard_file.path).await?;
        let schema_version =
            shard.schema_version().await.map_err(|e| OpsError::Shard(shard_file.path.clone(), e))?;
        let dest = to.join(&shard_file.file);
        shard.backup_to(&dest).await.map_err(|e| OpsError::Shard(shard_file.path.clone(), e))?;
        check_copy(&dest, &shard_file.file).await?;
        let (bytes, sha256) = digest(&dest).await?;
        files.push(ManifestFile {
            path: shard_file.file,
            domain: shard_file.domain,
            bytes,
            sha256,
            schema_version: Some(schema_version),
        });
    }

    let archive_dir = config.chat_config().archive_dir(&config.data_dir);
    for name in db_files_in(&archive_dir)? {
        let dest_dir = to.join(ARCHIVE_SUBDIR);
        std::fs::create_dir_all(&dest_dir)?;
        let dest = dest_dir.join(&name);
        std::fs::copy(archive_dir.join(&name), &dest)?;
        check_copy(&dest, &format!("{ARCHIVE_SUBDIR}/{name}")).await?;
        let (bytes, sha256) = digest(&dest).await?;
        files.push(ManifestFile {
            path: format!("{ARCHIVE_SUBDIR}/{name}"),
            domain: "chat".into(),
            bytes,
            sha256,
            schema_version: None,
        });
    }

    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        started_at_ms,
        started_at: utc_timestamp(started_at_ms),
        completed_at_ms: now_ms(),
        data_dir: config.data_dir.clone(),
        player_flush,
        player_flush_skipped,
        files,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| OpsError::Backup(e.to_string()))?;
    let partial = to.join(format!("{MANIFEST_FILE}.partial"));
    std::fs::write(&partial, json)?;
    std::fs::rename(&partial, to.join(MANIFEST_FILE))?;
    tracing::info!(to = %to.display(), files = manifest.files.len(), "backup complete");
    Ok(manifest)
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// Files restored.
    pub files: Vec<String>,
    /// Where the data directory's previous shards were moved, if it had any.
    pub previous: Option<PathBuf>,
}

/// Reads and checks a backup: the manifest, and every file's size and checksum.
///
/// # Errors
/// [`OpsError::Backup`] naming the first problem.
pub async fn verify(from: &Path) -> Result<Manifest, OpsError> {
    let manifest_path = from.join(MANIFEST_FILE);
    let text = std::fs::read(&manifest_path).map_err(|error| {
        OpsError::Backup(format!("{}: {error}: not a complete backup", manifest_path.display()))
    })?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|error| OpsError::Backup(format!("{}: {error}", manifest_path.display())))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(OpsError::Backup(format!(
            "manifest format {} is not {MANIFEST_FORMAT}",
            manifest.format
        )));
    }
    for file in &manifest.files {
        if file.path.contains("..") || Path::new(&file.path).is_absolute() {
            return Err(OpsError::Backup(format!("manifest names an unsafe path {:?}", file.path)));
        }
        let path = from.join(&file.path);
        let (bytes, sha256) =
            digest(&path).await.map_err(|error| OpsError::Backup(format!("{}: {error}", path.display())))?;
        if bytes != file.bytes || sha256 != file.sha256 {
            return Err(OpsError::Backup(format!(
                "{}: checksum mismatch: altered or damaged",
                path.display()
            )));
        }
    }
    Ok(manifest)
}

/// Restores the backup in `from` into `config.data_dir` (created if missing).
///
/// # Errors
/// [`OpsError::GatewayRunning`]; [`OpsError::Backup`] for a backup that is incomplete, altered,
/// or holds a damaged shard (nothing in the data directory changed then).
pub async fn restore(config: &GatewayConfig, from: &Path) -> Result<RestoreReport, OpsError> {
    let data_dir = &config.data_dir;
    let manifest = verify(from).await?;
    std::fs::create_dir_all(data_dir)?;
    let _lock = super::lock_data_dir_exclusive(data_dir)?;

    let staging = data_dir.join(STAGING_DIR);
    // A staging directory is what a restore that stopped half-way leaves: this one finishes it,
    // setting aside into the same directory the shards it had not moved yet.
    let resuming = staging.exists();
    let resumed_into = if resuming { latest_previous(data_dir)? } else { None };
    if resuming {
        std::fs::remove_dir_all(&staging)?;
    }
    let staged = stage(config, from, &manifest, &staging).await;
    if let Err(error) = staged {
        let _ = std::fs::remove_dir_all(&staging);
        if resuming {
            // The directory is still half restored: gateways must keep refusing it.
            let _ = std::fs::create_dir_all(&staging);
        }
        return Err(error);
    }

    // Set the current shards aside; nothing is deleted.
    let resumed = resumed_into.is_some();
    let previous =
        resumed_into.unwrap_or_else(|| data_dir.join(format!("{PREVIOUS_DIR_PREFIX}{}", now_ms())));
    let swapped = swap_in(data_dir, &staging, &previous, &manifest).map_err(|error| {
        // The staging directory stays, and a gateway refuses to start beside it.
        OpsError::Backup(format!(
            "the restore stopped half-way ({error}): the shards that were in {} are in {}, the \
             backup's checked copy is in {}; run the restore again",
            data_dir.display(),
            previous.display(),
            staging.display()
        ))
    })?;
    std::fs::remove_dir_all(&staging)?;
    let files: Vec<String> = manifest.files.iter().map(|file| file.path.clone()).collect();
    tracing::info!(from = %from.display(), data_dir = %data_dir.display(), files = files.len(), "restore complete");
    Ok(RestoreReport { files, previous: (swapped.moved_aside || resumed).then_some(previous) })
}

/// The newest `pre-restore-<ms>` directory of `data_dir`, if any.
fn latest_previous(data_dir: &Path) -> std::io::Result<Option<PathBuf>> {
    let mut latest: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(ms) = name.strip_prefix(PREVIOUS_DIR_PREFIX).and_then(|ms| ms.parse::<u64>().ok()) else {
            continue;
        };
        if latest.as_ref().is_none_or(|(newest, _)| ms > *newest) {
            latest = Some((ms, entry.path()));
        }
    }
    Ok(latest.map(|(_, path)| path))
}

struct Swapped {
    /// Whether the data directory held shards, now in the previous-shards directory.
    moved_aside: bool,
}

/// Moves the shards in `data_dir` into `previous`, then the staged backup's files into
/// `data_dir`: renames within one file system, each of them atomic, though not all together.
/// A file whose name `previous` already holds is one a stopped restore moved in after setting
/// that original aside (all originals go first): it is replaced, never set aside over the original.
fn swap_in(
    data_dir: &Path,
    staging: &Path,
    previous: &Path,
    manifest: &Manifest,
) -> std::io::Result<Swapped> {
    let mut moved_aside = false;
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_shard = [".db", ".db-wal", ".db-shm"].iter().any(|suffix| name.ends_with(suffix));
        if (is_shard || name == ARCHIVE_SUBDIR) && !previous.join(&name).exists() {
            std::fs::create_dir_all(previous)?;
            std::fs::rename(entry.path(), previous.join(&name))?;
            moved_aside = true;
        }
    }
    for file in &manifest.files {
        let target = data_dir.join(&file.path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(staging.join(&file.path), &target)?;
    }
    Ok(Swapped { moved_aside })
}

/// Copies the backup's files into `staging` and checks every live shard there.
async fn stage(
    config: &GatewayConfig,
    from: &Path,
    manifest: &Manifest,
    staging: &Path,
) -> Result<(), OpsError> {
    for file in &manifest.files {
        let target = staging.join(&file.path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(from.join(&file.path), &target)?;
        let Some(expected_version) = file.schema_version else { continue };
        let shard = open_shard(config, &target).await.map_err(|e| OpsError::Backup(e.to_string()))?;
        let problems =
            shard.integrity_check().await.map_err(|e| OpsError::Backup(format!("{}: {e}", file.path)))?;
        if !problems.is_empty() {
            return Err(OpsError::Backup(format!(
                "{}: integrity check failed: {}",
                file.path,
                problems.join("; ")
            )));
        }
        let version =
            shard.schema_version().await.map_err(|e| OpsError::Backup(format!("{}: {e}", file.path)))?;
        if version != expected_version {
            return Err(OpsError::Backup(format!(
                "{}: schema version {version}, the manifest says {expected_version}",
                file.path
            )));
        }
        shard.checkpoint().await.map_err(|e| OpsError::Backup(format!("{}: {e}", file.path)))?;
        drop(shard);
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(companion(&target, suffix));
        }
    }
    Ok(())
}

/// Refuses a copy that fails `PRAGMA integrity_check`: the backup API and a file copy carry a
/// damaged page over as it is, and a backup that reports success over one would let a rotation
/// (`scripts/backup.sh`) drop the older, sound backups for it. The copy is opened `immutable`,
/// so checking it leaves no log file in the backup.
async fn check_copy(path: &Path, name: &str) -> Result<(), OpsError> {
    let path = path.to_path_buf();
    let problems = tokio::task::spawn_blocking(move || shard::file_integrity_problems(&path))
        .await
        .map_err(|e| OpsError::Io(std::io::Error::other(e.to_string())))?
        .unwrap_or_else(|error| vec![error.to_string()]);
    if problems.is_empty() {
        return Ok(());
    }
    Err(OpsError::Backup(format!(
        "{name} is damaged (its copy fails the integrity check: {}); this backup is incomplete and \
         must not replace an older one; run `gamectl integrity` and repair or restore {name} first",
        problems.join("; ")
    )))
}

/// Size and SHA-256 (hex) of a file, read on a blocking thread.
async fn digest(path: &Path) -> Result<(u64, String), OpsError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<(u64, String)> {
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0_u8; 64 * 1024];
        let mut bytes = 0_u64;
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            bytes += n as u64;
        }
        Ok((bytes, hex::encode(hasher.finalize())))
    })
    .await
    .map_err(|e| OpsError::Io(std::io::Error::other(e.to_string())))?
    .map_err(OpsError::Io)
}

/// The `*.db` file names in `dir`, sorted; none when `dir` does not exist.
fn db_files_in(dir: &Path) -> Result<Vec<String>, OpsError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error.into()),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".db") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}
