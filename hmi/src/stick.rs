//! What is on the USB stick, for the screens to offer: lab reports for a new batch, and the
//! manufacturer's recipe updates for QA.
//!
//! Only names, dates and the bytes of the one file a person chose: what a file says, and
//! whether a recipe update is genuine, is for the appliance to judge. Sticks come from
//! elsewhere, so the walk is bounded (two levels of folders, no hidden entries, a capped
//! list) and a file is read only up to a size no lab report comes near.

use std::fs::Metadata;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Lab reports are PharmCAT "outside call" files: tab-separated text, which is the one lab
/// format the appliance imports (a PharmCAT JSON report would only be refused there).
pub const LAB_EXTENSIONS: &[&str] = &["tsv"];

/// Folders below the stick's folder that are searched: a udisks mount point holds the stick
/// under its label, and labs put reports in a folder of their own.
pub const DEPTH: usize = 2;

/// The most files a list shows: the newest, which are the ones a pharmacist looks for.
pub const MAX_LISTED: usize = 100;

/// A larger file is not a lab report (an outside-call file has a short line per gene); it is
/// refused here rather than sent over the bus.
pub const MAX_LAB_FILE_BYTES: u64 = 1024 * 1024;

/// One lab report found on the stick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabFile {
    /// Where it is, relative to the stick's folder (`/` between folders): what the screen
    /// shows, and the name the appliance records with the values it took from the file.
    pub name: String,
    pub path: PathBuf,
    pub modified: Option<SystemTime>,
}

/// Why a chosen lab file was not read.
#[derive(Debug, thiserror::Error)]
pub enum StickError {
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

/// The lab reports under `stick`, newest first (files without a date last, then by name).
/// No stick, or a folder that cannot be read, is simply no files.
pub fn lab_files(stick: &Path) -> Vec<LabFile> {
    let mut found = Vec::new();
    walk(stick, "", 0, &mut |name, path, meta| {
        let lab = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| LAB_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)));
        if meta.is_file() && lab {
            found.push(LabFile {
                name: name.to_owned(),
                path: path.to_owned(),
                modified: meta.modified().ok(),
            });
        }
    });
    found.sort_by(|a, b| b.modified.cmp(&a.modified).then_with(|| a.name.cmp(&b.name)));
    found.truncate(MAX_LISTED);
    found
}

/// The folders under `stick` that hold a signed recipe repository (`metadata` and `targets`
/// beside each other, as the manufacturer's `recipe publish` writes them), by name. The
/// stick's folder itself counts.
pub fn recipe_repositories(stick: &Path) -> Vec<(String, PathBuf)> {
    let is_repo = |dir: &Path| dir.join("metadata").is_dir() && dir.join("targets").is_dir();
    let mut found = Vec::new();
    if is_repo(stick) {
        found.push((String::new(), stick.to_owned()));
    }
    walk(stick, "", 0, &mut |name, path, meta| {
        if meta.is_dir() && is_repo(path) {
            found.push((name.to_owned(), path.to_owned()));
        }
    });
    found.sort();
    found
}

/// Reads a chosen lab file, up to [`MAX_LAB_FILE_BYTES`].
pub fn read_lab_file(file: &LabFile) -> Result<Vec<u8>, StickError> {
    let read = |source| StickError::Read { name: file.name.clone(), source };
    let mut bytes = Vec::new();
    std::fs::File::open(&file.path)
        .map_err(read)?
        .take(MAX_LAB_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_LAB_FILE_BYTES {
        return Err(StickError::TooLarge { name: file.name.clone() });
    }
    Ok(bytes)
}

/// Calls `f` with every entry under `dir` (relative name, path, metadata), going into
/// folders up to [`DEPTH`] levels below the stick's folder. Hidden entries are skipped: on a
/// stick written by a Mac every file has a `._` twin that is not the file. Links are followed
/// (a test may link a folder in); the depth bounds any loop.
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
    use std::time::Duration;

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
        let names: Vec<String> = lab_files(s).into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["STICK/newest.TSV", "STICK/lab/middle.tsv", "old.tsv"]);
        let first = &lab_files(s)[0];
        assert_eq!(first.path, s.join("STICK/newest.TSV"));
        assert_eq!(read_lab_file(first).unwrap(), b"TPMT\t*1/*3A\tIntermediate Metabolizer\n");
    }

    #[test]
    fn no_stick_is_no_files() {
        assert!(lab_files(Path::new("/nonexistent/galen-stick")).is_empty());
        let empty = tempfile::tempdir().unwrap();
        assert!(lab_files(empty.path()).is_empty());
        assert!(recipe_repositories(empty.path()).is_empty());
    }

    #[test]
    fn a_file_too_large_for_a_lab_report_is_not_read() {
        let stick = tempfile::tempdir().unwrap();
        let path = stick.path().join("huge.tsv");
        File::create(&path).unwrap().set_len(MAX_LAB_FILE_BYTES + 1).unwrap();
        let huge = LabFile { name: "huge.tsv".into(), path, modified: None };
        assert!(matches!(read_lab_file(&huge), Err(StickError::TooLarge { .. })));
        let gone = LabFile {
            name: "gone.tsv".into(),
            path: stick.path().join("gone.tsv"),
            modified: None,
        };
        let err = read_lab_file(&gone).unwrap_err().to_string();
        assert!(err.starts_with("cannot read gone.tsv from the stick:"), "{err}");
    }

    #[test]
    fn recipe_repositories_are_folders_with_metadata_and_targets() {
        let stick = tempfile::tempdir().unwrap();
        let s = stick.path();
        for d in ["STICK/galen/metadata", "STICK/galen/targets", "STICK/half/metadata"] {
            create_dir_all(s.join(d)).unwrap();
        }
        let found = recipe_repositories(s);
        assert_eq!(found, [("STICK/galen".to_owned(), s.join("STICK/galen"))]);
        for d in ["metadata", "targets"] {
            create_dir_all(s.join(d)).unwrap();
        }
        assert_eq!(recipe_repositories(s)[0], (String::new(), s.to_owned()), "the stick itself");
    }
}
