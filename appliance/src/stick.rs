//! What is on a mounted USB stick that the appliance may take in: lab reports for a new batch
//! and the manufacturer's signed recipe updates for QA.
//!
//! Sticks come from elsewhere, so the walk is bounded (two levels of folders, no hidden
//! entries, a capped list), a file is read only up to a size no lab report comes near, and a
//! file or folder is only ever used by the name this walk listed: a name from a client is
//! matched against the listing again, never joined onto the mount point, so `../` or a link
//! out of the stick cannot reach anything the walk would not show. Whether a file's contents
//! or an update is acceptable is judged elsewhere (the recipe rule, TUF).

use std::fs::Metadata;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// Lab reports are PharmCAT "outside call" files: tab-separated text, which is the one lab
/// format the appliance imports.
pub const LAB_EXTENSIONS: &[&str] = &["tsv"];

/// Folders below the stick's top that are searched: labs put reports in a folder of their own,
/// and a manufacturer's stick may hold a repository per product line.
pub const DEPTH: usize = 2;

/// The most lab files a list shows: the newest, which are the ones a pharmacist looks for.
pub const MAX_LISTED: usize = 100;

/// A larger file is not a lab report (an outside-call file has a short line per gene).
pub const MAX_LAB_FILE_BYTES: u64 = 1024 * 1024;

/// One lab report on the stick.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LabFile {
    /// Where it is, relative to the stick's top (`/` between folders): what a screen shows,
    /// and the name the record keeps with the values taken from the file.
    pub name: String,
    /// Last modified, Unix milliseconds, if the filesystem says.
    pub modified_ms: Option<i64>,
    pub size: u64,
    #[serde(skip)]
    path: PathBuf,
}

/// What a stick offers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Contents {
    /// Newest first, then by name.
    pub lab_files: Vec<LabFile>,
    /// Folders holding a signed recipe repository, by name; `""` is the stick's top folder.
    pub recipe_updates: Vec<String>,
}

/// Why something on the stick was not used. Messages are for the person at the screen.
#[derive(Debug, thiserror::Error)]
pub enum StickError {
    #[error("{0} is not a lab report on this stick (list the stick again: was it changed?)")]
    NoSuchLabFile(String),
    #[error("the stick holds no recipe update in {0:?} (list the stick again: was it changed?)")]
    NoSuchUpdate(String),
    #[error("cannot read {name} from the stick: {source}")]
    Read {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{name} is larger than {MAX_LAB_FILE_BYTES} bytes: a lab report is a small text file; \
         is it the right file?"
    )]
    TooLarge { name: String },
}

/// Everything under `top` the appliance could take in. A folder that cannot be read is
/// simply empty: a stick with nothing for us is not an error.
pub fn contents(top: &Path) -> Contents {
    Contents { lab_files: lab_files(top), recipe_updates: recipe_updates(top) }
}

/// The lab reports under `top`, newest first (files without a date last, then by name).
pub fn lab_files(top: &Path) -> Vec<LabFile> {
    let mut found = all_lab_files(top);
    found.sort_by(|a, b| b.modified_ms.cmp(&a.modified_ms).then_with(|| a.name.cmp(&b.name)));
    found.truncate(MAX_LISTED);
    found
}

/// Every lab file, also beyond the listing's cap: a file a person saw listed a moment ago must
/// still be found when newer ones have arrived since.
fn all_lab_files(top: &Path) -> Vec<LabFile> {
    let mut found = Vec::new();
    walk(top, "", 0, &mut |name, path, meta| {
        let lab = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| LAB_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)));
        if meta.is_file() && lab {
            let modified_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_millis()).ok());
            found.push(LabFile {
                name: name.to_owned(),
                modified_ms,
                size: meta.len(),
                path: path.to_owned(),
            });
        }
    });
    found
}

/// The folders under `top` that hold a signed recipe repository (`metadata` and `targets`
/// beside each other, as the manufacturer's `recipe publish` writes them), by name.
pub fn recipe_updates(top: &Path) -> Vec<String> {
    let mut found = Vec::new();
    if is_repository(top) {
        found.push(String::new());
    }
    walk(top, "", 0, &mut |name, path, meta| {
        if meta.is_dir() && is_repository(path) {
            found.push(name.to_owned());
        }
    });
    found.sort();
    found
}

/// The lab report listed as `name` under `top`, up to [`MAX_LAB_FILE_BYTES`].
pub fn read_lab_file(top: &Path, name: &str) -> Result<Vec<u8>, StickError> {
    let file = all_lab_files(top)
        .into_iter()
        .find(|f| f.name == name)
        .ok_or_else(|| StickError::NoSuchLabFile(name.to_owned()))?;
    let read = |source| StickError::Read { name: file.name.clone(), source };
    let mut bytes = Vec::new();
    std::fs::File::open(&file.path)
        .map_err(read)?
        .take(MAX_LAB_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_LAB_FILE_BYTES {
        return Err(StickError::TooLarge { name: file.name });
    }
    Ok(bytes)
}

/// The folder of the recipe update listed as `name` under `top`.
pub fn recipe_update(top: &Path, name: &str) -> Result<PathBuf, StickError> {
    if !recipe_updates(top).iter().any(|n| n == name) {
        return Err(StickError::NoSuchUpdate(name.to_owned()));
    }
    Ok(if name.is_empty() { top.to_owned() } else { top.join(name) })
}

fn is_repository(dir: &Path) -> bool {
    dir.join("metadata").is_dir() && dir.join("targets").is_dir()
}

/// Calls `f` with every entry under `dir` (relative name, path, metadata), going into
/// folders up to [`DEPTH`] levels below the stick's top. Hidden entries are skipped: on a
/// stick written by a Mac every file has a `._` twin that is not the file. Links are followed
/// (FAT has none; a test folder may); the depth bounds any loop.
fn walk(dir: &Path, prefix: &str, depth: usize, f: &mut impl FnMut(&str, &Path, &Metadata)) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else { continue };
        if file_name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        let name =
            if prefix.is_empty() { file_name.to_owned() } else { format!("{prefix}/{file_name}") };
        f(&name, &path, &meta);
        if meta.is_dir() && depth < DEPTH {
            walk(&path, &name, depth + 1, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{File, FileTimes, create_dir_all, write};
    use std::time::{Duration, SystemTime};

    use super::*;

    /// Writes `name` under `root` with a modification time `age_s` seconds before a fixed day.
    fn file(root: &Path, name: &str, age_s: u64) {
        let path = root.join(name);
        create_dir_all(path.parent().unwrap()).unwrap();
        write(&path, "TPMT\t*1/*3A\tIntermediate Metabolizer\n").unwrap();
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_219_200 - age_s);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_times(FileTimes::new().set_modified(when))
            .unwrap();
    }

    #[test]
    fn lab_files_are_found_two_folders_deep_newest_first() {
        let stick = tempfile::tempdir().unwrap();
        let s = stick.path();
        file(s, "old.tsv", 3_600);
        file(s, "STICK/newest.TSV", 0);
        file(s, "STICK/lab/middle.tsv", 60);
        file(s, "STICK/lab/deeper/too-deep.tsv", 1);
        file(s, "STICK/._newest.tsv", 0);
        file(s, ".hidden/secret.tsv", 0);
        file(s, "STICK/report.json", 0);
        file(s, "STICK/notes.txt", 0);
        let listed = lab_files(s);
        let names: Vec<&str> = listed.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["STICK/newest.TSV", "STICK/lab/middle.tsv", "old.tsv"]);
        assert_eq!(listed[0].modified_ms, Some(1_795_219_200_000));
        assert_eq!(listed[0].size, "TPMT\t*1/*3A\tIntermediate Metabolizer\n".len() as u64);
        assert_eq!(
            read_lab_file(s, "STICK/newest.TSV").unwrap(),
            b"TPMT\t*1/*3A\tIntermediate Metabolizer\n"
        );
    }

    #[test]
    fn only_a_listed_name_is_read() {
        let stick = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        file(outside.path(), "elsewhere.tsv", 0);
        let s = stick.path();
        file(s, "lab/report.tsv", 0);
        file(s, "lab/a/b/too-deep.tsv", 0);
        file(s, "notes.txt", 0);
        let escape = format!("../{}/elsewhere.tsv", outside.path().display());
        for name in [
            "lab/../lab/report.tsv",
            "/lab/report.tsv",
            escape.as_str(),
            "lab/a/b/too-deep.tsv",
            "notes.txt",
            "missing.tsv",
        ] {
            let err = read_lab_file(s, name).unwrap_err();
            assert!(matches!(&err, StickError::NoSuchLabFile(n) if n == name), "{name}: {err}");
        }
        assert!(read_lab_file(s, "lab/report.tsv").is_ok());
    }

    #[test]
    fn no_stick_is_nothing_on_it() {
        assert_eq!(
            contents(Path::new("/nonexistent/galen-stick")),
            Contents { lab_files: vec![], recipe_updates: vec![] }
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(lab_files(empty.path()).is_empty());
        assert!(recipe_updates(empty.path()).is_empty());
    }

    #[test]
    fn a_file_too_large_for_a_lab_report_is_not_read() {
        let stick = tempfile::tempdir().unwrap();
        File::create(stick.path().join("huge.tsv"))
            .unwrap()
            .set_len(MAX_LAB_FILE_BYTES + 1)
            .unwrap();
        let err = read_lab_file(stick.path(), "huge.tsv").unwrap_err();
        assert!(matches!(err, StickError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn recipe_updates_are_folders_with_metadata_and_targets() {
        let stick = tempfile::tempdir().unwrap();
        let s = stick.path();
        for d in ["STICK/galen/metadata", "STICK/galen/targets", "STICK/half/metadata"] {
            create_dir_all(s.join(d)).unwrap();
        }
        assert_eq!(recipe_updates(s), ["STICK/galen"]);
        assert_eq!(recipe_update(s, "STICK/galen").unwrap(), s.join("STICK/galen"));
        for name in ["STICK/half", "", "STICK/galen/..", "../galen"] {
            assert!(
                matches!(recipe_update(s, name), Err(StickError::NoSuchUpdate(n)) if n == name),
                "{name:?}"
            );
        }
        for d in ["metadata", "targets"] {
            create_dir_all(s.join(d)).unwrap();
        }
        assert_eq!(recipe_updates(s), ["", "STICK/galen"], "the stick's top folder first");
        assert_eq!(recipe_update(s, "").unwrap(), s);
    }
}
