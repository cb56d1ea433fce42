//! The host's apt sources for the image's Debian release, handed to mmdebstrap.
//!
//! mmdebstrap with no mirror argument falls back to a built-in default address, not to the
//! host's configuration, so we pass it a deb822 file made from the host's own entries for the
//! release's suites (release, updates, security): the image comes from wherever this machine
//! installs its packages from, and no address is written in the repository. Other entries on
//! the host (backports, third-party repositories) are left out on purpose.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// One apt source, as deb822 fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    pub(crate) uris: Vec<String>,
    pub(crate) suites: Vec<String>,
    /// The `Signed-By` value as written (a path, or an inline key with its continuation lines).
    pub(crate) signed_by: Option<String>,
}

/// The host's sources for `release` and its `-updates`/`-security` suites, `main` only.
pub(crate) fn host_sources(release: &str) -> Result<Vec<Source>> {
    let mut sources = Vec::new();
    for path in source_files()? {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading apt sources {}", path.display()))?;
        let parsed = if path.extension().is_some_and(|e| e == "sources") {
            parse_deb822(&text)
        } else {
            parse_one_line(&text)
        };
        sources.extend(parsed.into_iter().filter_map(|s| keep_suites(s, release)));
    }
    if sources.is_empty() {
        bail!(
            "the host's apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d/) have no \
             `deb` entry for {release} with component main; the image is built from the same \
             sources this machine installs from, so add one there"
        );
    }
    Ok(sources)
}

/// True if any host source serves `suite` (e.g. `bookworm-backports`).
pub(crate) fn host_has_suite(suite: &str) -> Result<bool> {
    for path in source_files()? {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading apt sources {}", path.display()))?;
        let parsed = if path.extension().is_some_and(|e| e == "sources") {
            parse_deb822(&text)
        } else {
            parse_one_line(&text)
        };
        if parsed.iter().any(|s| s.suites.iter().any(|x| x == suite)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The host sources as one deb822 file (what mmdebstrap is given).
pub(crate) fn to_deb822(sources: &[Source]) -> String {
    let mut out = String::new();
    for s in sources {
        let _ =
            writeln!(out, "Types: deb\nURIs: {}\nSuites: {}", s.uris.join(" "), s.suites.join(" "));
        out.push_str("Components: main\n");
        if let Some(key) = &s.signed_by {
            let _ = writeln!(out, "Signed-By: {key}");
        }
        out.push('\n');
    }
    out
}

fn source_files() -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let list = Path::new("/etc/apt/sources.list");
    if list.exists() {
        files.push(list.to_path_buf());
    }
    let dir = Path::new("/etc/apt/sources.list.d");
    if dir.is_dir() {
        let mut more: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            // apt reads only these two extensions; `*.disabled` and the like are off.
            .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
            .collect();
        more.sort();
        files.extend(more);
    }
    Ok(files)
}

fn keep_suites(mut s: Source, release: &str) -> Option<Source> {
    let wanted = [release.to_owned(), format!("{release}-updates"), format!("{release}-security")];
    s.suites.retain(|x| wanted.contains(x));
    (!s.suites.is_empty()).then_some(s)
}

/// deb822 stanzas with `Types: deb` and component `main` (disabled ones skipped).
fn parse_deb822(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for stanza in stanzas(text) {
        let field = |name: &str| {
            stanza.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        };
        let words = |name: &str| -> Vec<String> {
            field(name)
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        if field("Enabled").is_some_and(|v| v.trim() == "no")
            || !words("Types").iter().any(|t| t == "deb")
            || !words("Components").iter().any(|c| c == "main")
        {
            continue;
        }
        out.push(Source {
            uris: words("URIs"),
            suites: words("Suites"),
            signed_by: field("Signed-By").map(|v| v.trim_end().to_owned()),
        });
    }
    out
}

/// Fields of each stanza; continuation lines (leading space) stay part of their field.
fn stanzas(text: &str) -> Vec<Vec<(String, String)>> {
    let mut all = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            if !current.is_empty() {
                all.push(std::mem::take(&mut current));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut() {
                value.push('\n');
                value.push_str(line);
            }
        } else if let Some((k, v)) = line.split_once(':') {
            current.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    if !current.is_empty() {
        all.push(current);
    }
    all
}

/// One-line entries: `deb [options] URI SUITE COMPONENT...`.
fn parse_one_line(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb ") else { continue };
        let mut rest = rest.trim_start();
        let mut signed_by = None;
        if let Some(opts) = rest.strip_prefix('[') {
            let Some((opts, after)) = opts.split_once(']') else { continue };
            for opt in opts.split_whitespace() {
                if let Some(v) = opt.strip_prefix("signed-by=") {
                    signed_by = Some(v.to_owned());
                }
            }
            rest = after.trim_start();
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        if words.len() < 3 || !words[2..].contains(&"main") {
            continue;
        }
        out.push(Source {
            uris: vec![words[0].to_owned()],
            suites: vec![words[1].to_owned()],
            signed_by,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "\
Types: deb
# a comment inside the stanza
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates bookworm-backports
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://mirror.invalid/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://other.invalid/apt
Suites: nodistro
Components: main
";

    #[test]
    fn deb822_keeps_the_release_suites_of_binary_entries() {
        let kept: Vec<Source> =
            parse_deb822(DEB822).into_iter().filter_map(|s| keep_suites(s, "bookworm")).collect();
        assert_eq!(
            kept,
            [Source {
                uris: vec!["http://mirror.invalid/debian".into()],
                suites: vec!["bookworm".into(), "bookworm-updates".into()],
                signed_by: Some("/usr/share/keyrings/debian-archive-keyring.gpg".into()),
            }]
        );
        assert_eq!(
            to_deb822(&kept),
            "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n\
             Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        );
    }

    #[test]
    fn one_line_entries_with_options() {
        let text = "deb [arch=amd64 signed-by=/k.gpg] http://m.invalid/debian bookworm main\n\
                    deb-src http://m.invalid/debian bookworm main\n\
                    deb http://m.invalid/debian-security bookworm-security main # security\n\
                    deb http://m.invalid/debian bookworm contrib\n";
        let kept: Vec<Source> =
            parse_one_line(text).into_iter().filter_map(|s| keep_suites(s, "bookworm")).collect();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].signed_by.as_deref(), Some("/k.gpg"));
        assert_eq!(kept[1].suites, ["bookworm-security"]);
    }

    #[test]
    fn inline_keys_keep_their_continuation_lines() {
        let text = "Types: deb\nURIs: http://m.invalid/d\nSuites: bookworm\nComponents: main\n\
                    Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n";
        let s = &parse_deb822(text)[0];
        assert_eq!(
            s.signed_by.as_deref(),
            Some("\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc")
        );
    }
}
