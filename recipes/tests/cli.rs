//! The `recipe` binary end to end: new → lint → keys → publish → verify → rotate-root, and
//! lint's exit status and file:line:column output on a broken recipe, and its warning for a
//! recipe without a label.

use std::path::Path;
use std::process::{Command, Output};

fn recipe(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recipe"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("running recipe")
}

#[track_caller]
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = recipe(dir, args);
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "recipe {args:?} failed:\n{text}");
    text
}

#[test]
fn a_first_release_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let aza =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/azathioprine-oral-suspension.toml");
    std::fs::copy(&aza, d.join("aza.toml")).unwrap();

    ok(d, &["new", "eye-drops", "--out", "eye-drops.toml"]);
    let lint = ok(d, &["lint", "eye-drops.toml", "aza.toml"]);
    assert!(lint.contains("eye-drops.toml: ok — eye-drops revision 1, 5 phases"), "{lint}");
    assert!(
        lint.contains(
            "aza.toml: ok — azathioprine-oral-suspension revision 1, 8 phases, personalised"
        ),
        "{lint}"
    );
    ok(d, &["keys", "--out", "keys"]);
    for f in ["root.pk8", "targets.pk8", "snapshot.pk8", "timestamp.pk8", "root.json"] {
        assert!(d.join("keys").join(f).is_file(), "{f}");
    }
    let published =
        ok(d, &["publish", "--repo", "repo", "--keys", "keys", "eye-drops.toml", "aza.toml"]);
    assert!(published.contains("published eye-drops revision 1"), "{published}");
    assert!(
        published.contains("targets v1, snapshot v1, timestamp v1; 2 recipe(s)"),
        "{published}"
    );
    let verified = ok(d, &["verify", "--repo", "repo", "--root", "keys/root.json"]);
    assert!(verified.contains("ok       azathioprine-oral-suspension"), "{verified}");
    assert!(verified.contains("ok       eye-drops"), "{verified}");

    // The same revision again with other content is refused by the publisher.
    let text = std::fs::read_to_string(d.join("eye-drops.toml")).unwrap();
    std::fs::write(d.join("eye-drops.toml"), text.replace("duration_s = 300", "duration_s = 400"))
        .unwrap();
    let out = recipe(d, &["publish", "--repo", "repo", "--keys", "keys", "eye-drops.toml"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("revision 1 is not higher than the published revision 1")
    );

    // A unit of another model would refuse everything; verify says so and fails.
    let out = recipe(
        d,
        &["verify", "--repo", "repo", "--root", "keys/root.json", "--unit-model", "galen-cu9"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("REFUSED  eye-drops.toml"));

    std::fs::create_dir(d.join("new")).unwrap();
    ok(d, &["keys", "--out", "new"]);
    let rotated =
        ok(d, &["rotate-root", "--repo", "repo", "--keys", "keys", "--new-key", "new/root.pk8"]);
    assert!(rotated.contains("2.root.json"), "{rotated}");
    let verified = ok(d, &["verify", "--repo", "repo", "--root", "keys/root.json"]);
    assert!(verified.contains("root v2"), "{verified}");
}

#[test]
fn lint_reports_file_line_column_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["new", "broken", "--out", "broken.toml"]);
    let text = std::fs::read_to_string(d.join("broken.toml")).unwrap();
    std::fs::write(d.join("broken.toml"), text.replace("speed_rpm = 500", "speed_rpm = 5000"))
        .unwrap();
    let out = recipe(d, &["lint", "broken.toml"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("broken.toml:"), "{stdout}");
    assert!(
        stdout.contains(": error[unit-range]: speed_rpm: 5000 rpm is outside 0–3000 rpm"),
        "{stdout}"
    );
    let out = recipe(d, &["new", "Bad Id"]);
    assert!(!out.status.success());
}

#[test]
fn lint_warns_that_a_recipe_without_a_label_cannot_be_released() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["new", "no-label", "--out", "no-label.toml"]);
    let text = std::fs::read_to_string(d.join("no-label.toml")).unwrap();
    let clean = ok(d, &["lint", "no-label.toml"]);
    assert!(!clean.contains("warning"), "the skeleton has a [label]: {clean}");

    let start = text.find("\n[label]\n").expect("the skeleton has a [label] table");
    std::fs::write(d.join("no-label.toml"), &text[..start]).unwrap();
    // A warning, not an error: revisions signed before labels existed must still lint.
    let out = ok(d, &["lint", "no-label.toml"]);
    assert!(out.contains("no-label.toml: ok — no-label revision 1, 5 phases"), "{out}");
    assert!(
        out.contains(
            "no-label.toml:1:1: warning[label-missing]: no [label] table: batches of this recipe \
             cannot be released"
        ),
        "{out}"
    );
}
